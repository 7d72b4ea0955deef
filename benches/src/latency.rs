//! The unloaded latency workload, shared by the `latency-*` programs (one
//! per client) and the `latency` runner.
//!
//! One message at a time. A round trip is the time from calling the
//! client's publish until the consumer task receives that message. The
//! consumer task then acks it and tells the publishing task, which awaits
//! the message's publisher confirm (outside the timed span: nothing of one
//! round trip is still on the wire when the next starts) and publishes the
//! next. The publish time travels in the body: its first 8 bytes are the
//! nanoseconds since the process's [`Clock`] started.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

/// The workload's flags.
#[derive(Debug, Clone)]
pub struct Args {
    /// AMQP URL of the broker.
    pub url: String,
    /// Round trips measured.
    pub round_trips: usize,
    /// Round trips before those, not measured.
    pub warmup: usize,
    /// Body size in bytes (at least 8: the stamp).
    pub size: usize,
    /// The consumer's prefetch. Only one message is ever in flight; more
    /// than 1 keeps the broker from holding the next delivery until it has
    /// processed the previous ack.
    pub prefetch: u16,
}

impl Args {
    /// Reads `--url --round-trips --warmup --size` (other flags are
    /// refused).
    pub fn from_args() -> Self {
        let mut a = Args {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            round_trips: 10_000,
            warmup: 500,
            size: 12,
            prefetch: 10,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .unwrap_or_else(|| panic!("{flag} needs a value"));
            let num = || -> usize { value.parse().unwrap_or_else(|_| panic!("bad {flag}")) };
            match flag.as_str() {
                "--url" => a.url = value.clone(),
                "--round-trips" => a.round_trips = num(),
                "--warmup" => a.warmup = num(),
                "--size" => a.size = num(),
                other => panic!("unknown flag {other}"),
            }
        }
        assert!(a.size >= 8, "--size must be at least 8 (the stamp)");
        a
    }
}

/// Stamps bodies with the time of their publish; reads the stamp back on
/// delivery.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Starts the clock.
    pub fn start() -> Self {
        Clock(Instant::now())
    }

    /// A body of `size` bytes stamped now: call it right before publishing.
    pub fn stamped(&self, size: usize) -> Vec<u8> {
        let mut body = vec![b'x'; size];
        let now = self.0.elapsed().as_nanos() as u64;
        body[..8].copy_from_slice(&now.to_le_bytes());
        body
    }

    /// The time since `body` was stamped.
    pub fn since(&self, body: &[u8]) -> Duration {
        let stamp: [u8; 8] = body[..8].try_into().expect("a stamped body");
        self.0.elapsed() - Duration::from_nanos(u64::from_le_bytes(stamp))
    }
}

/// Runs the round trips: `publish` publishes a stamped body and returns
/// its confirm to await; `delivered` gives each message's round trip from
/// the consumer task once it has acked it. Returns the measured round
/// trips in nanoseconds.
pub async fn round_trips<C: Future<Output = ()>>(
    args: &Args,
    clock: Clock,
    delivered: &mut UnboundedReceiver<Duration>,
    mut publish: impl AsyncFnMut(Vec<u8>) -> C,
) -> Vec<u64> {
    let mut samples = Vec::with_capacity(args.round_trips);
    for i in 0..args.warmup + args.round_trips {
        let confirm = publish(clock.stamped(args.size)).await;
        let round_trip = delivered.recv().await.expect("the consumer task ended");
        confirm.await;
        if i >= args.warmup {
            samples.push(round_trip.as_nanos() as u64);
        }
    }
    samples
}

/// Prints the program's one JSON line: the round trips in nanoseconds.
pub fn report(tool: &str, multi_thread: bool, args: &Args, samples_ns: &[u64]) {
    let runtime = if multi_thread {
        "multi_thread"
    } else {
        "current_thread"
    };
    let samples = serde_json::to_string(samples_ns).expect("numbers serialise");
    println!(
        r#"{{"tool":"{tool}","runtime":"{runtime}","round_trips":{},"warmup":{},"size":{},"samples_ns":{samples}}}"#,
        args.round_trips, args.warmup, args.size
    );
}

/// The `p` quantile (0 to 1) of `sorted`, by nearest rank: the smallest
/// sample with at least a fraction `p` of the samples at or below it.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// About 200 points of the empirical CDF of `sorted`: (sample, fraction at
/// or below it). 150 evenly spaced fractions up to 0.99, then 50 closing in
/// on the maximum geometrically (0.99, 0.999... up to one sample), so the
/// tail a log axis shows is drawn from its own samples.
pub fn cdf(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let mut fractions: Vec<f64> = (0..150).map(|i| 0.99 * i as f64 / 149.0).collect();
    let (from, to) = (0.01f64.log10(), (1.0 / n as f64).log10());
    if to < from {
        fractions.extend((1..50).map(|j| 1.0 - 10f64.powf(from + (to - from) * j as f64 / 49.0)));
    }
    fractions.push(1.0);
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(fractions.len());
    for f in fractions {
        // The fraction the chosen sample really stands for.
        let rank = ((f * n as f64).ceil() as usize).clamp(1, n);
        let point = (sorted[rank - 1], rank as f64 / n as f64);
        if points.last().is_none_or(|last| last.1 < point.1) {
            points.push(point);
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let xs: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 500.0);
        assert_eq!(quantile(&xs, 0.999), 999.0);
        assert_eq!(quantile(&xs, 1.0), 1000.0);
        assert_eq!(quantile(&xs, 0.0), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_cdf_runs_from_the_minimum_to_the_maximum() {
        let xs: Vec<f64> = (1..=30_000).map(f64::from).collect();
        let points = cdf(&xs);
        assert!((180..=200).contains(&points.len()), "{}", points.len());
        assert_eq!(points.first(), Some(&(1.0, 1.0 / 30_000.0)));
        assert_eq!(points.last(), Some(&(30_000.0, 1.0)));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
        );
        // The tail: a point at or past p99.9.
        assert!(points.iter().any(|&(_, f)| (0.999..1.0).contains(&f)));
        assert_eq!(cdf(&[5.0]), vec![(5.0, 1.0)]);
    }

    #[test]
    fn the_stamp_reads_back() {
        let clock = Clock::start();
        let body = clock.stamped(12);
        assert_eq!(body.len(), 12);
        assert_eq!(&body[8..], b"xxxx");
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.since(&body) >= Duration::from_millis(2));
    }
}
