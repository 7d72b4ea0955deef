//! Metrics hooks: a connection reports what it counts to a [`Metrics`]
//! given in [`ConnectOptions::metrics`](crate::ConnectOptions::metrics), so
//! an application meters every connection without wrapping each call.
//! [`Counters`] is a ready-made one (atomic totals), for reading directly
//! or for an exporter to scrape.
//!
//! Counts are of messages, not of frames: an `ack_multiple` that settles
//! 30 deliveries adds 30 to [`Counter::Acked`]. A connection without a hook
//! counts nothing, and pays one branch per event.
//!
//! An outcome is counted before the call that waits for it returns: once
//! a publish's confirmation resolves, [`Counter::Confirmed`] (or
//! [`Counter::PublishNacked`]) already includes it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a connection counts.
///
/// ```
/// use carehare_client::Counter;
/// assert_eq!(Counter::Published.name(), "published");
/// assert_eq!(Counter::ALL.len(), 13);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// Messages published (with or without confirms), counted when queued.
    Published,
    /// Publishes RabbitMQ confirmed (`basic.ack`).
    Confirmed,
    /// Publishes RabbitMQ refused (`basic.nack`).
    PublishNacked,
    /// Mandatory publishes RabbitMQ could not route (`basic.return`).
    Returned,
    /// Messages received: consumer deliveries and `basic.get` answers.
    Delivered,
    /// Deliveries acked.
    Acked,
    /// Deliveries nacked.
    Nacked,
    /// Deliveries rejected.
    Rejected,
    /// Bytes read from the socket (after TLS).
    BytesReceived,
    /// Reads that returned bytes: about how often the connection woke for
    /// input. While publishes are held back it sleeps through many
    /// confirms at a time (see `Coalescing` in `carehare-core`).
    Reads,
    /// Bytes written to the socket (before TLS).
    BytesSent,
    /// Connections a recovering connection made after losing one.
    Reconnects,
    /// Microseconds RabbitMQ kept publishing blocked
    /// (`connection.blocked`), added when it unblocks or the connection
    /// ends.
    BlockedMicros,
}

impl Counter {
    /// Every counter, in declaration order.
    pub const ALL: [Counter; 13] = [
        Counter::Published,
        Counter::Confirmed,
        Counter::PublishNacked,
        Counter::Returned,
        Counter::Delivered,
        Counter::Acked,
        Counter::Nacked,
        Counter::Rejected,
        Counter::BytesReceived,
        Counter::Reads,
        Counter::BytesSent,
        Counter::Reconnects,
        Counter::BlockedMicros,
    ];

    /// A snake_case name, for exporters.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Published => "published",
            Counter::Confirmed => "confirmed",
            Counter::PublishNacked => "publish_nacked",
            Counter::Returned => "returned",
            Counter::Delivered => "delivered",
            Counter::Acked => "acked",
            Counter::Nacked => "nacked",
            Counter::Rejected => "rejected",
            Counter::BytesReceived => "bytes_received",
            Counter::Reads => "reads",
            Counter::BytesSent => "bytes_sent",
            Counter::Reconnects => "reconnects",
            Counter::BlockedMicros => "blocked_micros",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Receives a connection's counts as they happen. Called with the
/// connection's state locked: keep it quick (an atomic add, a channel
/// send), and never call back into the connection.
///
/// ```
/// use std::sync::Arc;
/// use carehare_client::{ConnectOptions, Counter, Metrics};
///
/// /// Forwards to an application's own registry.
/// struct Forward;
/// impl Metrics for Forward {
///     fn add(&self, counter: Counter, n: u64) {
///         let _ = (counter.name(), n); // e.g. registry.counter(name).increment(n)
///     }
/// }
/// let options = ConnectOptions { metrics: Some(Arc::new(Forward)), ..Default::default() };
/// # drop(options);
/// ```
pub trait Metrics: Send + Sync + 'static {
    /// `counter` grew by `n`.
    fn add(&self, counter: Counter, n: u64);
}

impl fmt::Debug for dyn Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<metrics>")
    }
}

/// Atomic totals of every [`Counter`]: a [`Metrics`] to share between
/// connections (or give each its own) and read at any time.
///
/// ```
/// use std::sync::Arc;
/// use carehare_client::{ConnectOptions, Counter, Counters, Metrics};
/// let counters = Arc::new(Counters::default());
/// let options = ConnectOptions { metrics: Some(counters.clone()), ..Default::default() };
/// counters.add(Counter::Published, 2); // what a connection would do
/// assert_eq!(counters.get(Counter::Published), 2);
/// for (counter, n) in counters.snapshot() {
///     println!("carehare_{}_total {n}", counter.name());
/// }
/// # drop(options);
/// ```
#[derive(Default)]
pub struct Counters {
    totals: [AtomicU64; Counter::ALL.len()],
}

impl Counters {
    /// The total of `counter` so far.
    pub fn get(&self, counter: Counter) -> u64 {
        self.totals[counter.index()].load(Ordering::Relaxed)
    }

    /// Every counter with its total.
    pub fn snapshot(&self) -> Vec<(Counter, u64)> {
        Counter::ALL.iter().map(|&c| (c, self.get(c))).collect()
    }
}

impl Metrics for Counters {
    fn add(&self, counter: Counter, n: u64) {
        self.totals[counter.index()].fetch_add(n, Ordering::Relaxed);
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.snapshot().into_iter().map(|(c, n)| (c.name(), n)))
            .finish()
    }
}

/// A connection's hook, or none: what the state and the driver call.
#[derive(Clone, Default)]
pub(crate) struct Meter(Option<Arc<dyn Metrics>>);

impl Meter {
    pub(crate) fn new(hook: Option<Arc<dyn Metrics>>) -> Self {
        Self(hook)
    }

    /// Whether anything listens (so counting that costs work is skipped
    /// otherwise).
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    #[inline]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        if let Some(hook) = &self.0
            && n > 0
        {
            hook.add(counter, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_every_name_is_distinct() {
        let c = Counters::default();
        for (i, &counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), i);
            c.add(counter, i as u64 + 1);
        }
        for (i, (counter, n)) in c.snapshot().into_iter().enumerate() {
            assert_eq!((counter, n), (Counter::ALL[i], i as u64 + 1));
        }
        let names: std::collections::HashSet<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Counter::ALL.len());
        assert!(format!("{c:?}").contains("\"published\": 1"));

        let off = Meter::default();
        assert!(!off.is_on());
        off.add(Counter::Published, 1);
    }
}
