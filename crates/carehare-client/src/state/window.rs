//! A publisher's window: how many of its publishes may be unsettled.
//!
//! Invariants:
//! - `used` counts the live [`Permit`]s: one is made only by taking a slot
//!   below `max`, and its drop gives the slot back;
//! - `used <= max` at all times;
//! - each slot given back notifies one waiter, and a waiter dropped after
//!   its notification passes it on (`event_listener` does), so no slot
//!   ever sits free while somebody waits.
//!
//! One counter serves as both the semaphore and the `in_flight` figure: a
//! publish takes and gives back one atomic, where a semaphore plus a
//! separate counter took three, each bouncing between the user's thread
//! and the driver's on a multi-threaded runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use event_listener::Event;

/// The shared window of a publisher and its clones.
pub(crate) struct Window {
    max: usize,
    used: AtomicUsize,
    room: Event,
}

impl Window {
    /// A window of `max` slots (at least 1).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            used: AtomicUsize::new(0),
            room: Event::new(),
        })
    }

    /// The window's size.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Slots taken now.
    pub(crate) fn in_flight(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        while used < self.max {
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
        false
    }

    /// Waits for a slot and takes it. Cancel-safe: a cancelled wait holds
    /// no slot.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            if self.try_take() {
                return Permit(self.clone());
            }
            // Listen, then look again: a slot freed in between notified
            // nobody.
            let listener = self.room.listen();
            if self.try_take() {
                return Permit(self.clone());
            }
            listener.await;
        }
    }
}

/// A slot in a publisher's window, given back when dropped (when its
/// publish is settled).
pub(crate) struct Permit(Arc<Window>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
        self.0.room.notify(1);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn the_window_bounds_the_permits_and_counts_them() {
        let window = Window::new(2);
        let a = take_now(window.acquire());
        let b = take_now(window.acquire());
        assert_eq!(window.in_flight(), 2);
        let mut third = pin!(window.acquire());
        assert!(poll_once(third.as_mut()).is_pending(), "the window is full");
        drop(a);
        assert_eq!(window.in_flight(), 1);
        let Poll::Ready(c) = poll_once(third.as_mut()) else {
            panic!("a freed slot is taken by the waiter");
        };
        assert_eq!(window.in_flight(), 2);
        drop((b, c));
        assert_eq!(window.in_flight(), 0);
    }

    #[test]
    fn a_cancelled_waiter_passes_its_slot_on() {
        let window = Window::new(1);
        let held = take_now(window.acquire());
        let mut first = Box::pin(window.acquire());
        let mut second = pin!(window.acquire());
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        drop(held);
        // The notified waiter goes away without taking the slot.
        drop(first);
        let Poll::Ready(_permit) = poll_once(second.as_mut()) else {
            panic!("the other waiter gets the slot");
        };
        assert_eq!(window.in_flight(), 1);
    }

    #[test]
    fn a_zero_window_still_has_one_slot() {
        let window = Window::new(0);
        assert_eq!(window.max(), 1);
        let _p = take_now(window.acquire());
        assert_eq!(window.in_flight(), 1);
    }

    fn take_now<F: std::future::Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        match poll_once(f.as_mut()) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("expected a free slot"),
        }
    }
}
