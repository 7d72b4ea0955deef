//! What the soak saw, kept in memory allocated (and touched) before it
//! starts: which sequence numbers were confirmed and which consumed (two
//! bitsets), running counters, and a latency histogram per window.
//!
//! Invariants: nothing here allocates after `Tracker::new`, so the
//! client's RSS measures the client, not the bookkeeping; a sequence
//! number at or past `capacity` is refused (the publisher stops).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Relative width of a latency bucket: 2 %.
const BUCKET_BASE: f64 = 1.02;
/// Buckets from 1 µs up to about 1,000 s.
const BUCKETS: usize = 1400;

/// `n` zeroed counters, every page of them written once: a zeroed
/// allocation is mapped lazily, and would otherwise grow the RSS as the
/// soak goes on.
fn touched(n: usize) -> Vec<AtomicU64> {
    let v: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    // A store, not `fetch_or(0)`: an idempotent read-modify-write is
    // compiled to a load, which maps the shared zero page and not one of
    // our own.
    for w in v.iter().step_by(4096 / 8) {
        w.store(0, Ordering::Relaxed);
    }
    v
}

/// A set of sequence numbers, safe to update from any task.
struct Bits(Vec<AtomicU64>);

impl Bits {
    fn new(capacity: u64) -> Self {
        let words = capacity.div_ceil(64) as usize;
        Self(touched(words))
    }

    /// Sets `seq`; true if it was set already.
    fn set(&self, seq: u64) -> bool {
        let bit = 1u64 << (seq % 64);
        match self.0.get((seq / 64) as usize) {
            Some(w) => w.fetch_or(bit, Ordering::Relaxed) & bit != 0,
            None => false,
        }
    }

    fn get(&self, seq: u64) -> bool {
        let bit = 1u64 << (seq % 64);
        self.0
            .get((seq / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
    }
}

/// A latency histogram with buckets 2 % wide.
pub struct Histogram(Vec<AtomicU64>);

impl Histogram {
    fn new() -> Self {
        Self(touched(BUCKETS))
    }

    fn record(&self, micros: u64) {
        let i = (micros.max(1) as f64).ln() / BUCKET_BASE.ln();
        let i = (i as usize).min(BUCKETS - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `p` quantile (0-1) in milliseconds: the upper edge of its bucket.
    pub fn quantile_ms(&self, p: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((p * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.0.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(BUCKET_BASE.powi(i as i32 + 1) / 1e3);
            }
        }
        None
    }
}

/// Counters, each only ever growing.
#[derive(Default)]
pub struct Counters {
    /// New sequence numbers handed to the publisher.
    pub published: AtomicU64,
    /// Sequence numbers published again by the soak itself, after their
    /// confirmation failed (the publisher republishes on its own first).
    pub republished: AtomicU64,
    pub confirmed: AtomicU64,
    /// Confirmations that ended in an error or a nack.
    pub confirm_failures: AtomicU64,
    /// `publish_with` calls that failed.
    pub publish_errors: AtomicU64,
    /// Deliveries, duplicates included.
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    /// Deliveries that were not a soak message.
    pub foreign: AtomicU64,
    /// Acks refused: the delivery came on a connection since lost.
    pub stale_acks: AtomicU64,
}

pub struct Tracker {
    t0: Instant,
    capacity: u64,
    window: Duration,
    confirmed: Bits,
    consumed: Bits,
    latency: Vec<Histogram>,
    pub counts: Counters,
    /// Microseconds since the start of the last confirm and the last
    /// delivery.
    last_confirm: AtomicU64,
    last_delivery: AtomicU64,
}

impl Tracker {
    /// Room for `capacity` sequence numbers and `windows` latency windows
    /// of `window` each.
    pub fn new(capacity: u64, window: Duration, windows: usize) -> Self {
        Self {
            t0: Instant::now(),
            capacity,
            window,
            confirmed: Bits::new(capacity),
            consumed: Bits::new(capacity),
            latency: (0..windows).map(|_| Histogram::new()).collect(),
            counts: Counters::default(),
            last_confirm: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    pub fn secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn confirmed(&self, seq: u64) {
        self.confirmed.set(seq);
        self.counts.confirmed.fetch_add(1, Ordering::Relaxed);
        self.last_confirm.store(self.now_us(), Ordering::Relaxed);
    }

    /// A delivery of `seq`, sent at `sent_us`.
    pub fn delivered(&self, seq: u64, sent_us: u64) {
        let now = self.now_us();
        self.counts.delivered.fetch_add(1, Ordering::Relaxed);
        if seq >= self.capacity {
            self.counts.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.consumed.set(seq) {
            self.counts.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        let window = (now / self.window.as_micros() as u64) as usize;
        if let Some(h) = self.latency.get(window) {
            h.record(now.saturating_sub(sent_us));
        }
        self.last_delivery.store(now, Ordering::Relaxed);
    }

    /// A message the final drain found still in the queue.
    pub fn drained(&self, seq: u64) {
        if seq < self.capacity && self.consumed.set(seq) {
            self.counts.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn last_confirm_us(&self) -> u64 {
        self.last_confirm.load(Ordering::Relaxed)
    }

    pub fn last_delivery_us(&self) -> u64 {
        self.last_delivery.load(Ordering::Relaxed)
    }

    /// Confirmed sequence numbers below `end` never consumed.
    pub fn lost(&self, end: u64) -> Vec<u64> {
        (0..end.min(self.capacity))
            .filter(|&s| self.confirmed.get(s) && !self.consumed.get(s))
            .collect()
    }

    /// Sequence numbers below `end` never confirmed.
    pub fn unconfirmed(&self, end: u64) -> u64 {
        (0..end.min(self.capacity))
            .filter(|&s| !self.confirmed.get(s))
            .count() as u64
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn latency_windows(&self) -> &[Histogram] {
        &self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_report_a_second_set() {
        let b = Bits::new(200);
        assert!(!b.set(130));
        assert!(b.set(130));
        assert!(b.get(130) && !b.get(129));
        assert!(!b.set(10_000), "out of range is ignored");
    }

    #[test]
    fn bits_are_resident_from_the_start() {
        let before = crate::sys::Usage::now().rss_kib;
        let bits = Bits::new(64 * 8 * 1024 * 1024);
        let after = crate::sys::Usage::now().rss_kib;
        assert!(after - before >= 60 * 1024, "{before} -> {after} KiB");
        drop(bits);
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(us * 1000);
        }
        let p99 = h.quantile_ms(0.99).unwrap_or(0.0);
        assert!((990.0..=990.0 * 1.03).contains(&p99), "{p99}");
    }
}
