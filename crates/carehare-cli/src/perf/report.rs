//! The final table, the `--json` object and the progress line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::args::PerfArgs;
use super::stats::{Counters, Usage};

/// One side's figures (publish or consume).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Side {
    /// Messages confirmed (publish) or consumed.
    pub messages: u64,
    /// Wall time of the side.
    pub seconds: f64,
    /// CPU time charged to it.
    pub cpu: Duration,
    /// The message count CPU is divided by.
    pub cpu_per: u64,
}

impl Side {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn cpu_us_per_msg(&self) -> f64 {
        if self.cpu_per > 0 {
            self.cpu.as_secs_f64() * 1e6 / self.cpu_per as f64
        } else {
            0.0
        }
    }

    fn json(&self) -> Value {
        json!({
            "messages": self.messages,
            "seconds": round(self.seconds, 6),
            "msg_per_s": round(self.rate(), 1),
            "cpu_s": round(self.cpu.as_secs_f64(), 6),
            "cpu_us_per_msg": round(self.cpu_us_per_msg(), 3),
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

/// A finished run.
pub(super) struct Report {
    /// Publishing.
    pub publish: Side,
    /// Consuming.
    pub consume: Side,
    /// `None` when not measured (sequential, or nothing consumed).
    pub latency: Option<Percentiles>,
    /// Peak memory.
    pub usage: Usage,
}

impl Report {
    /// The `--json` object; its schema is documented in the crate README.
    pub(super) fn json(&self, args: &PerfArgs) -> Value {
        let latency = self.latency.map_or(
            Value::Null,
            |l| json!({"p50": l.p50, "p95": l.p95, "p99": l.p99, "max": l.max}),
        );
        json!({
            "tool": "carehare",
            "config": args.config_json(),
            "publish": self.publish.json(),
            "consume": self.consume.json(),
            "latency_us": latency,
            "max_rss_kib": self.usage.max_rss_kib,
        })
    }

    /// The human-readable table.
    pub(super) fn table(&self, args: &PerfArgs) -> String {
        let mut out = format!("carehare perf: {}\n\n", args.summary());
        out += &format!(
            "{:<9}{:>12}{:>10}{:>12}{:>9}{:>13}\n",
            "", "messages", "seconds", "msg/s", "CPU s", "CPU µs/msg"
        );
        for (name, side) in [("publish", &self.publish), ("consume", &self.consume)] {
            out += &format!(
                "{:<9}{:>12}{:>10.3}{:>12}{:>9.3}{:>13.2}\n",
                name,
                thousands(side.messages),
                side.seconds,
                thousands(side.rate().round() as u64),
                side.cpu.as_secs_f64(),
                side.cpu_us_per_msg(),
            );
        }
        if !args.sequential {
            let per = if args.consumers > 0 {
                "consumed"
            } else {
                "published"
            };
            out += &format!("(CPU: the whole run's, for both rows, per message {per})\n");
        }
        out += "\n";
        match self.latency {
            Some(l) => {
                out += &format!(
                    "latency, publish to consume (µs): p50 {}  p95 {}  p99 {}  max {}\n",
                    thousands(l.p50),
                    thousands(l.p95),
                    thousands(l.p99),
                    thousands(l.max)
                );
            }
            None if args.sequential => {
                out += "latency: not measured in --sequential runs (messages wait for the whole publish phase)\n";
            }
            None => out += "latency: no stamped message consumed\n",
        }
        out += &format!("max RSS: {} KiB\n", thousands(self.usage.max_rss_kib));
        out
    }
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The live progress line on stderr, about once a second: a rewritten
/// line on a terminal, one line per second otherwise.
pub(super) async fn progress(counters: Arc<Counters>, label: &'static str) {
    let tty = std::io::stderr().is_terminal();
    let start = tokio::time::Instant::now();
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let totals = || {
        (
            Counters::get(&counters.sent),
            Counters::get(&counters.confirmed),
            Counters::get(&counters.consumed),
        )
    };
    // A second phase starts from the first one's totals.
    let mut last = totals();
    let mut last_at = start;
    loop {
        let now = ticks.tick().await;
        let seconds = now.duration_since(last_at).as_secs_f64().max(1e-3);
        last_at = now;
        let current = totals();
        let rate = |a: u64, b: u64| thousands(((a - b) as f64 / seconds).round() as u64);
        let latency = {
            let mut l = counters.latency();
            let text = if l.interval.is_empty() {
                String::new()
            } else {
                format!(
                    "  latency p50 {} µs p99 {} µs",
                    thousands(l.interval.value_at_quantile(0.5)),
                    thousands(l.interval.value_at_quantile(0.99))
                )
            };
            l.interval.reset();
            text
        };
        let line = format!(
            "[{label} {:>4.0}s] sent {}/s  confirmed {}/s  received {}/s  (total: {} confirmed, {} received){latency}",
            now.duration_since(start).as_secs_f64(),
            rate(current.0, last.0),
            rate(current.1, last.1),
            rate(current.2, last.2),
            thousands(current.1),
            thousands(current.2),
        );
        last = current;
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not end the run.
        let _ = if tty {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

/// Ends a terminal progress line, so what follows starts on its own line.
pub(super) fn end_progress() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn rates_and_cpu_per_message() {
        let side = Side {
            messages: 1000,
            seconds: 0.5,
            cpu: Duration::from_millis(5),
            cpu_per: 1000,
        };
        let j = side.json();
        assert_eq!(j["msg_per_s"], 2000.0);
        assert_eq!(j["cpu_us_per_msg"], 5.0);
        assert_eq!(Side::default().json()["msg_per_s"], 0.0);
    }
}
