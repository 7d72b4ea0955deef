//! What a perf run measures: counters, latency histograms, CPU and memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use nix::sys::resource::{UsageWho, getrusage};

/// Counters shared by every producer, consumer and the progress line.
pub(super) struct Counters {
    /// Publishes queued.
    pub sent: AtomicU64,
    /// Publishes acked by RabbitMQ.
    pub confirmed: AtomicU64,
    /// Publishes nacked or returned.
    pub refused: AtomicU64,
    /// Messages consumed (and acked, or about to be in the next multi-ack).
    pub consumed: AtomicU64,
    /// Producers stop at the next message.
    pub stop_producers: AtomicBool,
    /// A task's error, which ends the run.
    pub failure: Mutex<Option<carehare_tokio::Error>>,
    /// Publish-to-consume latency, when measured.
    pub latency: Mutex<Latency>,
}

impl Counters {
    /// All zero.
    pub(super) fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            stop_producers: AtomicBool::new(false),
            failure: Mutex::new(None),
            latency: Mutex::new(Latency::new()),
        }
    }

    /// Reads a counter.
    pub(super) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records a task's error and stops producing. The first one wins,
    /// except that a usage error ("the connection is closed", from a task
    /// that ran into a connection already closing) gives way to the
    /// error that says why.
    pub(super) fn fail(&self, error: carehare_tokio::Error) {
        let mut failure = lock(&self.failure);
        match &*failure {
            None | Some(carehare_tokio::Error::Usage(_)) => *failure = Some(error),
            Some(_) => {}
        }
        drop(failure);
        self.stop_producers.store(true, Ordering::Relaxed);
    }

    /// The recorded error, if any.
    pub(super) fn failure(&self) -> Option<carehare_tokio::Error> {
        lock(&self.failure).clone()
    }

    /// The latency histograms.
    pub(super) fn latency(&self) -> MutexGuard<'_, Latency> {
        lock(&self.latency)
    }
}

/// A poisoned lock only means another task panicked mid-update of plain
/// counters; the data is still usable for a report.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Latency in microseconds: over the whole run, and since the last
/// progress line.
pub(super) struct Latency {
    /// The whole run.
    pub total: Histogram<u64>,
    /// Since the last progress line.
    pub interval: Histogram<u64>,
}

/// One hour, in microseconds: anything slower is recorded as one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("1 µs..1 h at 3 significant figures")
}

impl Latency {
    fn new() -> Self {
        Self {
            total: histogram(),
            interval: histogram(),
        }
    }

    /// Records one latency.
    pub(super) fn record(&mut self, micros: u64) {
        let micros = micros.clamp(1, MAX_LATENCY_US);
        self.total.saturating_record(micros);
        self.interval.saturating_record(micros);
    }
}

/// Nanoseconds since the Unix epoch: the publish timestamp carried in each
/// message (wall clock, so a consumer in another process on the same host
/// can read it too).
pub(super) fn epoch_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The latency of a message stamped at `sent` (epoch nanoseconds), in
/// microseconds, or `None` for a stamp from the future or over an hour old
/// (not ours, or clocks apart).
pub(super) fn latency_micros(sent: u64, now: u64) -> Option<u64> {
    let nanos = now.checked_sub(sent)?;
    let micros = nanos / 1000;
    (micros <= MAX_LATENCY_US).then_some(micros)
}

/// CPU time (user + system, all threads) and peak memory of this process.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size in KiB (`VmHWM` on Linux, else
    /// `ru_maxrss`).
    pub max_rss_kib: u64,
}

impl Usage {
    /// `getrusage(RUSAGE_SELF)` now (zero if the call fails, which it
    /// cannot for RUSAGE_SELF).
    pub(super) fn now() -> Self {
        let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
            return Self::default();
        };
        let micros = |t: nix::sys::time::TimeVal| {
            let s = u64::try_from(t.tv_sec()).unwrap_or(0);
            let us = u64::try_from(t.tv_usec()).unwrap_or(0);
            Duration::from_micros(s * 1_000_000 + us)
        };
        Self {
            cpu: micros(u.user_time()) + micros(u.system_time()),
            max_rss_kib: peak_rss_kib().unwrap_or(u64::try_from(u.max_rss()).unwrap_or(0)),
        }
    }

    /// CPU used between `earlier` and `self`.
    pub(super) fn cpu_since(&self, earlier: &Usage) -> Duration {
        self.cpu.saturating_sub(earlier.cpu)
    }
}

/// This program's peak RSS, from Linux's `VmHWM`. Preferred to
/// `ru_maxrss`, which survives `execve`: started by `cargo run` or a
/// Python harness, `ru_maxrss` would report the parent's size when it
/// forked us, if that was larger.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_of_foreign_stamps_is_ignored() {
        assert_eq!(latency_micros(1_000, 3_500), Some(2));
        assert_eq!(latency_micros(5_000, 1_000), None);
        assert_eq!(latency_micros(0, u64::MAX), None);
    }

    #[test]
    fn usage_grows() {
        let a = Usage::now();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = Usage::now();
        assert!(b.cpu >= a.cpu);
        assert!(b.max_rss_kib > 0);
        assert!(peak_rss_kib().is_some_and(|k| k > 0));
    }

    #[test]
    fn latency_clamps() {
        let mut l = Latency::new();
        l.record(0);
        l.record(u64::MAX);
        assert_eq!(l.total.len(), 2);
        assert_eq!(l.total.min(), 1);
    }
}
