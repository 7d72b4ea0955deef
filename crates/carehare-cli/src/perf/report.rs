//! The final table and the `--json` object.

use std::time::Duration;

use serde_json::{Value, json};

use super::args::PerfArgs;
use super::series::Sample;
use super::stats::Usage;
use super::units::{millis, thousands};

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
    /// Second by second.
    pub series: Vec<Sample>,
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
            "series": self.series.iter().map(Sample::json).collect::<Vec<_>>(),
        })
    }

    /// The human-readable table.
    pub(super) fn table(&self, args: &PerfArgs) -> String {
        let mut out = format!("carehare perf: {}\n", args.summary());
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
                    "latency, publish to consume: p50 {}  p95 {}  p99 {}  max {}\n",
                    millis(l.p50),
                    millis(l.p95),
                    millis(l.p99),
                    millis(l.max)
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

#[cfg(test)]
mod tests {
    use super::*;

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
