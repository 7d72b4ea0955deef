//! The bytes on their way to the socket, and the publishers waiting for
//! them to drain: what bounds memory for publishes that nothing else
//! bounds (no confirm window holds them back).
//!
//! The backlog is what the core has queued (its `transmit_len`) plus what
//! the driver took from it and has not written yet (`in_driver`).
//!
//! Invariants:
//! - `in_driver` is what the driver last reported holding: exact when it
//!   takes bytes and when a write leaves some unwritten, so the backlog is
//!   never under-counted between two reports;
//! - every waker in `wakers` is woken when the backlog drops below
//!   [`HIGH_WATER`], when RabbitMQ unblocks the connection, and when the
//!   connection ends: what its owner waits for may have changed.

use std::task::Waker;

/// Bytes queued for the socket at which unconfirmed publishes wait.
pub(crate) const HIGH_WATER: usize = 4 * 1024 * 1024;

#[derive(Default)]
pub(crate) struct Backlog {
    /// Bytes the driver holds, taken from the core and not yet written.
    in_driver: usize,
    wakers: Vec<Waker>,
}

impl Backlog {
    /// Whether the backlog, with `queued` bytes in the core, is at or over
    /// the high-water mark.
    pub(crate) fn is_full(&self, queued: usize) -> bool {
        queued.saturating_add(self.in_driver) >= HIGH_WATER
    }

    /// Bytes queued for the socket in all, with `queued` in the core.
    #[cfg(test)]
    pub(crate) fn total(&self, queued: usize) -> usize {
        queued.saturating_add(self.in_driver)
    }

    /// Parks `waker` until the next wake-up.
    pub(crate) fn park(&mut self, waker: &Waker) {
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
    }

    /// The driver holds `bytes` unwritten, and the core `queued`: wakes
    /// the waiters if that is below the mark.
    pub(crate) fn driver_holds(&mut self, bytes: usize, queued: usize) {
        self.in_driver = bytes;
        if !self.wakers.is_empty() && !self.is_full(queued) {
            self.wake_all();
        }
    }

    /// Wakes every waiter (unblocked, or the connection ended).
    pub(crate) fn wake_all(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}
