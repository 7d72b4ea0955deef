//! `carehare perf`'s flags, checked before a run.

use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use crate::commands::admin::QueueType;
use crate::error::CliError;
use crate::fields;

/// Load test flags. Without --count or --duration it runs until Ctrl-C;
/// Ctrl-C always stops publishing, drains, and prints the report.
#[derive(Args, Debug, Clone)]
#[command(after_help = PERF_HELP)]
pub(crate) struct PerfArgs {
    /// Producers (each with its own publish window).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers (each on its own channel).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Body size in bytes. From 8 bytes up the body carries the publish
    /// time; below, a header does.
    #[arg(long, default_value_t = 12)]
    pub size: usize,
    /// Publish window: unconfirmed messages per producer at most.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub confirm: u64,
    /// Prefetch (unacked messages) per consumer [default: 300]. Stream
    /// consumers hold a whole chunk past it (RabbitMQ delivers streams a
    /// chunk at a time).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: Option<u16>,
    /// Ack with `multiple` every N deliveries (1: ack each one).
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..))]
    pub multi_ack_every: u16,
    /// Publish rate limit per producer, messages per second.
    #[arg(long, value_name = "MSG/S")]
    pub rate: Option<f64>,
    /// Publish for this long (e.g. 10s, 2m), then drain.
    #[arg(long, value_name = "DURATION", value_parser = fields::duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Publish this many messages in all (split over the producers);
    /// consume as many.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
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
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Publish all --count messages first, then consume them.
    #[arg(long, requires = "count")]
    pub sequential: bool,
    /// Publish persistent messages (delivery-mode 2).
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
    /// table.
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

const PERF_HELP: &str = "\
Output: msg/s in and out, latency from publish to consume (p50/p95/p99/max, not in \
--sequential runs), client CPU per message (getrusage, all threads) and peak RSS. \
In --sequential runs each phase has its own time and CPU; otherwise both rows show \
the whole run's CPU, divided by the messages consumed (published, without consumers).

The benchmark workload (on plain connections, as the clients it is compared with):
  carehare perf --no-recovery --sequential --count 100000 --size 12 --confirm 1000 --prefetch 300 --multi-ack-every 30";

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
        if self.multi_ack_every > self.prefetch() {
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
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(CliError::usage("--rate must be a positive number"));
        }
        if self.sequential && (self.producers == 0 || self.consumers == 0) {
            return Err(CliError::usage(
                "--sequential needs at least one producer and one consumer",
            ));
        }
        Ok(())
    }

    /// The prefetch in effect.
    pub(crate) fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or(300)
    }

    /// The flags, for the JSON report.
    pub(crate) fn config_json(&self) -> Value {
        json!({
            "producers": self.producers,
            "consumers": self.consumers,
            "size": self.size,
            "confirm": self.confirm,
            "prefetch": self.prefetch(),
            "multi_ack_every": self.multi_ack_every,
            "rate": self.rate,
            "duration_s": self.duration.map(|d| d.as_secs_f64()),
            "count": self.count,
            "queue_type": self.queue_type.name(),
            "queues": self.queues,
            "connections": self.connections,
            "queue": self.queue,
            "sequential": self.sequential,
            "persistent": self.persistent,
            "recovery": !self.no_recovery,
            "threads": self.threads,
        })
    }

    /// One line describing the run, for the table.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "{} producer(s), {} consumer(s), {} B bodies, confirm window {}, prefetch {}, multi-ack every {}, {} {} queue(s), {} connection(s)",
            self.producers,
            self.consumers,
            self.size,
            self.confirm,
            self.prefetch(),
            self.multi_ack_every,
            self.queues,
            self.queue_type.name(),
            self.connections,
        );
        if let Some(rate) = self.rate {
            s += &format!(", {rate} msg/s per producer");
        }
        if self.sequential {
            s += ", sequential";
        }
        if self.no_recovery {
            s += ", no recovery";
        }
        s
    }
}
