//! `carehare perf`'s flags, checked before a run. The short flags are
//! RabbitMQ PerfTest's, for the options the two share.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::commands::admin::QueueType;
use crate::error::CliError;
use crate::fields;

/// What a mode without a bound of its own (confirms off, autoack) may
/// hold per producer or consumer: it sets their window and prefetch.
const UNBOUNDED_MODE_BYTES: usize = 64 << 20;

/// Default prefetch per consumer.
const PREFETCH: u16 = 300;
/// Default multi-ack interval.
const MULTI_ACK_EVERY: u16 = 30;

/// PerfTest's `-f` publishing flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Flag {
    /// delivery-mode 2.
    Persistent,
    /// RabbitMQ returns what no queue takes (counted as refused: exit
    /// code 5).
    Mandatory,
}

/// Load test flags. Without --count, -C or --duration it runs until
/// Ctrl-C; Ctrl-C always stops publishing, drains, and prints the report.
#[derive(Args, Debug, Clone)]
#[command(after_help = PERF_HELP, after_long_help = PERF_LONG_HELP)]
pub(crate) struct PerfArgs {
    /// Producers (each with its own publish window).
    #[arg(long, short = 'x', value_name = "N", default_value_t = 1)]
    pub producers: usize,
    /// Consumers (each on its own channel).
    #[arg(long, short = 'y', value_name = "N", default_value_t = 1)]
    pub consumers: usize,
    /// Body size in bytes. From 8 bytes up the body carries the publish
    /// time; below, a header does.
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 12)]
    pub size: usize,
    /// Publisher confirms: at most N unconfirmed messages per producer.
    /// 0 turns confirms off, PerfTest's default: messages are published
    /// without confirms (no confirm mode), bounded only by the socket
    /// (with -f mandatory they still go out in confirm mode, unwaited).
    #[arg(long, short = 'c', value_name = "N", default_value_t = 1000)]
    pub confirm: u64,
    /// Prefetch (unacked messages) per consumer [default: 300; with
    /// --autoack, the messages a consumer holds before reading pauses:
    /// 65,535, less for large bodies]. Stream consumers hold a
    /// whole chunk past it (RabbitMQ delivers streams a chunk at a time).
    #[arg(long, short = 'q', visible_alias = "qos", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: Option<u16>,
    /// Ack with `multiple` every N deliveries (1: ack each one) [default:
    /// 30; with --autoack nothing is acked].
    #[arg(long, short = 'A', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub multi_ack_every: Option<u16>,
    /// Publish rate limit per producer, messages per second.
    #[arg(long, short = 'r', value_name = "MSG/S")]
    pub rate: Option<f64>,
    /// Publish for this long, then drain: seconds (`-z 10`, as PerfTest's
    /// --time) or with a unit (`10s`, `2m`).
    #[arg(long, short = 'z', visible_alias = "time", value_name = "DURATION", value_parser = fields::duration, conflicts_with_all = ["count", "pmessages"])]
    pub duration: Option<Duration>,
    /// Publish this many messages in all, split over the producers;
    /// consume as many.
    #[arg(long, value_name = "N", conflicts_with = "pmessages")]
    pub count: Option<u64>,
    /// Publish this many messages per producer, as PerfTest's -C: `-x 2
    /// -C 1000` publishes 2,000 in all (--count 2000 would too).
    #[arg(long, short = 'C', value_name = "N")]
    pub pmessages: Option<u64>,
    /// Type of the queues the run declares.
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
    /// Number of queues; producer i publishes to queue i mod N, consumer j
    /// consumes queue j mod N.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub queues: usize,
    /// Connections to spread producers and consumers over (round robin,
    /// producers first). RabbitMQ advises publishing and consuming on
    /// separate connections: on a shared one, a flood of publishes delays
    /// the consumers' acks, so `--connections 2` gives steadier figures.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: usize,
    /// Use this queue as it is (declared with --queue-type only if
    /// missing) and keep it, instead of a transient one per run.
    #[arg(long, short = 'u', value_name = "NAME")]
    pub queue: Option<String>,
    /// Publish to this exchange (declared as a direct exchange if missing,
    /// and kept), with the run's queues bound to it by --routing-key, or
    /// by their own names without it. Without it producers publish on the
    /// default exchange, straight to their queue.
    #[arg(long, short = 'e', value_name = "NAME")]
    pub exchange: Option<String>,
    /// Routing key to publish with, and to bind the queue with (needs
    /// --exchange; one queue).
    #[arg(long, short = 'k', value_name = "KEY", requires = "exchange")]
    pub routing_key: Option<String>,
    /// No-ack consumers, as PerfTest's -a: RabbitMQ settles each message as
    /// it sends it, and nothing is acked. RabbitMQ applies no prefetch to
    /// them, so each consumer's buffer is bounded instead: its connection
    /// stops reading while it holds the prefetch (65,535 by default, less
    /// for large bodies).
    #[arg(long, short = 'a')]
    pub autoack: bool,
    /// Publishing flag, repeatable as PerfTest's: `-f persistent -f
    /// mandatory`.
    #[arg(long = "flag", short = 'f', value_enum, value_name = "FLAG")]
    pub flags: Vec<Flag>,
    /// Publish all --count (or -C) messages first, then consume them.
    #[arg(long)]
    pub sequential: bool,
    /// Publish persistent messages (delivery-mode 2): `-f persistent`.
    #[arg(long)]
    pub persistent: bool,
    /// Run on plain connections: a lost connection ends the run. By
    /// default the run's connections recover (unconfirmed publishes go out
    /// again, consumers re-subscribe), which costs some CPU per message;
    /// use this to compare with clients that don't recover.
    #[arg(long)]
    pub no_recovery: bool,
    /// Runtime threads: 1 runs everything on one thread (the least CPU per
    /// message); more uses tokio's multi-threaded scheduler.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Print one JSON object (schema in the crate README) instead of the
    /// table; it holds the per-second series too.
    #[arg(long)]
    pub json: bool,
    /// Write the per-second series to FILE as CSV while the run goes, as
    /// PerfTest's -o: second, sent, confirmed, received, latency p50 and
    /// p99 in ms.
    #[arg(long, short = 'o', visible_alias = "output-file", value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

const PERF_HELP: &str = "\
Output: msg/s in and out, latency from publish to consume, client CPU per message and \
peak RSS; --json and --csv add a per-second series. --help has the details and the \
mapping from PerfTest's flags.";

const PERF_LONG_HELP: &str = "\
Output:
  msg/s in and out; latency from publish to consume in ms (p50/p95/p99/max; not in
  --sequential runs, where messages wait for the whole publish phase); client CPU per
  message (getrusage, all threads) and peak RSS. In --sequential runs each phase has its
  own time and CPU; otherwise both rows show the whole run's CPU, divided by the messages
  consumed (published, without consumers). The report says whether confirms were on.
  --json adds `series` and --csv FILE writes it: per second, the messages sent,
  confirmed and received in that second, and that second's latency p50/p99 in ms.

PerfTest's flags:
  PerfTest                 carehare perf
  -x, --producers N        -x, --producers N
  -y, --consumers N        -y, --consumers N
  -s, --size BYTES         -s, --size BYTES
  -c, --confirm N          -c, --confirm N     (default 1000; -c 0: off, PerfTest's
                                                default, see --confirm)
  -q, --qos N              -q, --qos, --prefetch N      (default 300)
  -A, --multi-ack-every N  -A, --multi-ack-every N      (default 30)
  -a, --autoack            -a, --autoack       (no-ack consumers)
  -r, --rate N             -r, --rate N        (per producer)
  -z, --time SECONDS       -z, --time, --duration D     (10, 10s, 2m)
  -C, --pmessages N        -C, --pmessages N   (per producer; --count N: in all)
  -u, --queue NAME         -u, --queue NAME
  -e, --exchange NAME      -e, --exchange NAME (declared direct if missing)
  -k, --routing-key KEY    -k, --routing-key KEY
  -f, --flag FLAG          -f, --flag persistent|mandatory (repeatable)
  -o, --output-file FILE   -o, --csv FILE
  -h, --uri URI            --url URL           (-h is --help here)
PerfTest's defaults differ: no confirms, prefetch unlimited, an ack per message, a
server-named queue bound to the exchange `direct`.

Examples:
  carehare perf -x 2 -y 2 -s 1000 -z 30
  carehare perf -c 0 -a -z 10              # no confirms, autoack (see above)
  carehare perf -e orders -k new -C 10000 -f persistent --csv run.csv
  carehare perf --no-recovery --sequential --count 100000 --confirm 1000 --prefetch 300";

impl PerfArgs {
    pub(super) fn validate(&self) -> Result<(), CliError> {
        if self.producers == 0 && self.consumers == 0 {
            return Err(CliError::usage("perf needs a producer or a consumer"));
        }
        if self.queues == 0 || self.connections == 0 {
            return Err(CliError::usage(
                "--queues and --connections must be at least 1",
            ));
        }
        if self.multi_ack_every() > self.prefetch() {
            return Err(CliError::usage(
                "--multi-ack-every must not exceed --prefetch (RabbitMQ would stop delivering before the ack is due)",
            ));
        }
        if self.consumers > 0 && self.consumers < self.queues {
            return Err(CliError::usage(
                "every queue needs a consumer: --consumers >= --queues",
            ));
        }
        if self.queue.is_some() && self.queues > 1 {
            return Err(CliError::usage(
                "--queue names one queue: it excludes --queues > 1",
            ));
        }
        if self.routing_key.is_some() && self.queues > 1 {
            return Err(CliError::usage(
                "--routing-key binds every queue with the same key, so each message would go to every queue: it excludes --queues > 1",
            ));
        }
        if self.exchange.as_deref() == Some("") && self.routing_key.is_some() {
            return Err(CliError::usage(
                "--routing-key needs a named --exchange (the default exchange routes by queue name)",
            ));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(CliError::usage("--rate must be a positive number"));
        }
        if self.pmessages.is_some() && self.producers == 0 {
            return Err(CliError::usage(
                "-C (--pmessages) counts messages per producer: it needs a producer",
            ));
        }
        if self.sequential {
            if self.total_count().is_none() {
                return Err(CliError::usage("--sequential needs --count or -C"));
            }
            if self.producers == 0 || self.consumers == 0 {
                return Err(CliError::usage(
                    "--sequential needs at least one producer and one consumer",
                ));
            }
        }
        Ok(())
    }

    /// Whether publishing waits for confirms (`--confirm` > 0).
    pub(crate) fn confirms(&self) -> bool {
        self.confirm > 0
    }

    /// Whether publishes go out without confirms (`-c 0`), on the
    /// client's unconfirmed path. Mandatory publishes need confirms to
    /// report returns: with `-f mandatory`, `-c 0` still publishes in
    /// confirm mode, without waiting.
    pub(crate) fn unconfirmed(&self) -> bool {
        !self.confirms() && !self.mandatory()
    }

    /// The publish window: `--confirm`; with confirms off and
    /// `-f mandatory` a bound on memory only; 0 (none) when publishing
    /// without confirms, which the client bounds by its socket backlog.
    pub(crate) fn window(&self) -> usize {
        if self.confirms() {
            usize::try_from(self.confirm).unwrap_or(usize::MAX)
        } else if self.unconfirmed() {
            0
        } else {
            (UNBOUNDED_MODE_BYTES / self.size.max(1)).clamp(1, 65_536)
        }
    }

    /// The prefetch in effect.
    pub(crate) fn prefetch(&self) -> u16 {
        match (self.prefetch, self.autoack) {
            (Some(p), _) => p,
            (None, false) => PREFETCH,
            (None, true) => {
                let fits = UNBOUNDED_MODE_BYTES / self.size.max(1);
                u16::try_from(fits.clamp(1, usize::from(u16::MAX))).unwrap_or(u16::MAX)
            }
        }
    }

    /// The multi-ack interval in effect.
    pub(crate) fn multi_ack_every(&self) -> u16 {
        match (self.multi_ack_every, self.autoack) {
            (Some(n), _) => n,
            (None, false) => MULTI_ACK_EVERY.min(self.prefetch()),
            (None, true) => self.prefetch().div_ceil(2),
        }
    }

    /// Persistent messages (`--persistent` or `-f persistent`).
    pub(crate) fn persistent(&self) -> bool {
        self.persistent || self.flags.contains(&Flag::Persistent)
    }

    /// Mandatory publishes (`-f mandatory`).
    pub(crate) fn mandatory(&self) -> bool {
        self.flags.contains(&Flag::Mandatory)
    }

    /// Messages to publish in all, if bounded.
    pub(crate) fn total_count(&self) -> Option<u64> {
        match (self.count, self.pmessages) {
            (Some(c), _) => Some(c),
            (None, Some(per)) => Some(per.saturating_mul(self.producers as u64)),
            (None, None) => None,
        }
    }

    /// Messages producer `i` publishes, if bounded.
    pub(crate) fn producer_count(&self, i: usize) -> Option<u64> {
        match (self.count, self.pmessages) {
            (Some(c), _) => {
                let n = self.producers.max(1) as u64;
                Some(c / n + u64::from((i as u64) < c % n))
            }
            (None, per) => per,
        }
    }

    /// The flags, for the JSON report: the original keys, then the newer
    /// ones (nothing renamed).
    pub(crate) fn config_json(&self) -> Value {
        json!({
            "producers": self.producers,
            "consumers": self.consumers,
            "size": self.size,
            "confirm": self.confirm,
            "prefetch": self.prefetch(),
            "multi_ack_every": self.multi_ack_every(),
            "rate": self.rate,
            "duration_s": self.duration.map(|d| d.as_secs_f64()),
            "count": self.count,
            "queue_type": self.queue_type.name(),
            "queues": self.queues,
            "connections": self.connections,
            "queue": self.queue,
            "sequential": self.sequential,
            "persistent": self.persistent(),
            "recovery": !self.no_recovery,
            "threads": self.threads,
            "confirms": self.confirms(),
            "window": self.window(),
            "pmessages": self.pmessages,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "mandatory": self.mandatory(),
            "autoack": self.autoack,
        })
    }

    /// Lines describing the run, for the table.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "{} producer(s), {} consumer(s), {} B bodies, prefetch {}, multi-ack every {}, {} {} queue(s), {} connection(s)",
            self.producers,
            self.consumers,
            self.size,
            self.prefetch(),
            self.multi_ack_every(),
            self.queues,
            self.queue_type.name(),
            self.connections,
        );
        if let Some(exchange) = &self.exchange {
            s += &format!(", exchange {exchange:?}");
            if let Some(key) = &self.routing_key {
                s += &format!(" key {key:?}");
            }
        }
        if let Some(rate) = self.rate {
            s += &format!(", {rate} msg/s per producer");
        }
        if self.persistent() {
            s += ", persistent";
        }
        if self.mandatory() {
            s += ", mandatory";
        }
        if self.sequential {
            s += ", sequential";
        }
        if self.no_recovery {
            s += ", no recovery";
        }
        s += "\n";
        s += &if self.confirms() {
            format!("confirms: on, window {} per producer\n", self.confirm)
        } else if self.unconfirmed() {
            "confirms: off (PerfTest's default): messages are published without confirms, and RabbitMQ says nothing of their fate; publishing waits only while the client's socket backlog is over 4 MiB or RabbitMQ blocks the connection. The publish row counts messages sent.\n".to_string()
        } else {
            format!(
                "confirms: off (PerfTest's default), but -f mandatory needs them to report returns: publishes still go out in confirm mode, without waiting for confirms; at most {} per producer are in flight, to bound memory. The publish row counts messages sent.\n",
                self.window()
            )
        };
        if self.autoack {
            s += &format!(
                "autoack: on: consumers are no-ack (RabbitMQ settles each message as it sends it; nothing is acked); a consumer's connection stops reading while it holds {} messages.\n",
                self.prefetch()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        perf: PerfArgs,
    }

    fn parse(args: &[&str]) -> PerfArgs {
        let mut all = vec!["perf"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().perf
    }

    #[test]
    fn perftest_short_flags() {
        let a = parse(&[
            "-x",
            "2",
            "-y",
            "3",
            "-s",
            "100",
            "-c",
            "50",
            "-q",
            "40",
            "-A",
            "20",
            "-r",
            "500",
            "-z",
            "10",
            "-u",
            "q",
            "-e",
            "x",
            "-k",
            "key",
            "-f",
            "persistent",
            "-f",
            "mandatory",
            "-o",
            "out.csv",
        ]);
        assert_eq!((a.producers, a.consumers, a.size), (2, 3, 100));
        assert_eq!((a.confirm, a.prefetch(), a.multi_ack_every()), (50, 40, 20));
        assert_eq!(a.rate, Some(500.0));
        assert_eq!(a.duration, Some(Duration::from_secs(10)));
        assert_eq!(a.queue.as_deref(), Some("q"));
        assert_eq!(a.exchange.as_deref(), Some("x"));
        assert_eq!(a.routing_key.as_deref(), Some("key"));
        assert!(a.persistent() && a.mandatory());
        assert_eq!(a.csv, Some(PathBuf::from("out.csv")));
        assert!(a.validate().is_ok());
        assert_eq!(parse(&["--qos", "7", "--time", "2m"]).prefetch(), 7);
    }

    #[test]
    fn pmessages_are_per_producer_and_count_is_in_all() {
        let a = parse(&["-x", "3", "-C", "10"]);
        assert_eq!(a.total_count(), Some(30));
        assert_eq!(a.producer_count(2), Some(10));
        let a = parse(&["-x", "3", "--count", "10"]);
        assert_eq!(a.total_count(), Some(10));
        let split: Vec<_> = (0..3).map(|i| a.producer_count(i)).collect();
        assert_eq!(split, [Some(4), Some(3), Some(3)]);
        assert!(Cli::try_parse_from(["perf", "-C", "1", "--count", "1"]).is_err());
        assert!(Cli::try_parse_from(["perf", "-C", "1", "-z", "1"]).is_err());
    }

    #[test]
    fn confirms_off_and_autoack_bound_memory() {
        let a = parse(&["-c", "0", "-a"]);
        assert!(!a.confirms());
        assert!(a.unconfirmed());
        assert_eq!(a.window(), 0, "no window: the client bounds the socket");
        assert_eq!((a.prefetch(), a.multi_ack_every()), (65_535, 32_768));
        let big = parse(&["-c", "0", "-a", "-s", "1048576"]);
        assert_eq!((big.prefetch(), big.multi_ack_every()), (64, 32));
        // Mandatory publishes keep confirm mode, within a memory window.
        let mandatory = parse(&["-c", "0", "-f", "mandatory", "-s", "1048576"]);
        assert!(!mandatory.unconfirmed());
        assert_eq!(mandatory.window(), 64);
        assert!(
            mandatory
                .summary()
                .contains("publishes still go out in confirm mode")
        );
        assert!(a.summary().contains("confirms: off (PerfTest's default)"));
        assert!(a.summary().contains("published without confirms"));
        assert!(!a.summary().contains("confirm mode"));
        assert!(parse(&[]).summary().contains("confirms: on, window 1000"));
    }

    #[test]
    fn contradictions_are_usage_errors() {
        for args in [
            &["--queues", "2", "-y", "2", "-e", "x", "-k", "k"][..],
            &["-e", "", "-k", "k"],
            &["--sequential"],
            &["-x", "0", "-C", "5"],
            &["-q", "10", "-A", "20"],
        ] {
            assert!(parse(args).validate().is_err(), "{args:?}");
        }
        assert!(
            Cli::try_parse_from(["perf", "-k", "k"]).is_err(),
            "-k needs -e"
        );
    }
}
