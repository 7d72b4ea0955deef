//! RabbitMQ's flow control of this connection (`connection.blocked` /
//! `unblocked`) as watchers see it.
//!
//! Invariants:
//! - `version` grows by one on every change (and once when the connection
//!   ends), so a watcher that remembers the version it saw never misses
//!   the latest state, and never buffers intermediate ones;
//! - every waker in `wakers` is woken at the next change.

use std::task::Waker;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

#[derive(Default)]
pub(crate) struct Blocking {
    /// Why RabbitMQ blocked publishing, while it does.
    reason: Option<String>,
    /// Since when publishing is blocked, until the time is taken.
    since: Option<Instant>,
    version: u64,
    wakers: Vec<Waker>,
}

/// What a watcher sees when it polls.
pub(crate) enum Watch {
    /// Nothing new since the version it saw.
    Unchanged,
    /// The state changed: the new version and the reason (`None`:
    /// unblocked).
    Changed(u64, Option<String>),
}

impl Blocking {
    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn block(&mut self, now: Instant, reason: String) {
        warn!(%reason, "RabbitMQ blocked publishing; publishes wait");
        self.reason = Some(reason);
        self.since.get_or_insert(now);
        self.changed();
    }

    pub(crate) fn unblock(&mut self) {
        debug!("RabbitMQ unblocked publishing");
        self.reason = None;
        self.changed();
    }

    /// How long publishing has been blocked, up to `now`; the clock
    /// restarts at the next block.
    pub(crate) fn take_blocked_time(&mut self, now: Instant) -> Duration {
        self.since
            .take()
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// Bumps the version and wakes every watcher.
    pub(crate) fn changed(&mut self) {
        self.version += 1;
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }

    /// A watcher's poll: what changed since `seen`, or park `waker`.
    pub(crate) fn watch(&mut self, seen: u64, waker: &Waker) -> Watch {
        if self.version != seen {
            return Watch::Changed(self.version, self.reason.clone());
        }
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
        Watch::Unchanged
    }
}
