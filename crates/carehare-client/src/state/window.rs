//! A publisher's window: how many of its publishes may be unsettled.
//!
//! Invariants:
//! - `used` counts the live [`Permit`]s: one is made only by taking a slot
//!   below `max`, and its drop gives the slot back;
//! - `used <= max` at all times;
//! - each slot given back notifies one waiter, and a waiter dropped after
//!   its notification passes it on (`event_listener` does), so no slot
//!   ever sits free while somebody waits;
//! - `waiting` counts the waiters that are listening: one is counted only
//!   after its listener is registered, and uncounted when it stops
//!   waiting. A slot given back while it reads 0 notifies nobody, which
//!   spares the common case, a publish settled with nobody waiting, the
//!   notifier's lock.
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
    waiting: AtomicUsize,
}

impl Window {
    /// A window of `max` slots (at least 1).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            used: AtomicUsize::new(0),
            room: Event::new(),
            waiting: AtomicUsize::new(0),
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
        let mut used = self.used.load(Ordering::SeqCst);
        while used < self.max {
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
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
            // Listen, be counted, then look again: a slot freed before the
            // count saw no waiter and notified nobody, and this look sees
            // it; one freed after it notifies the listener. (Both sides'
            // operations are `SeqCst`, so one of the two always happens.)
            let listener = self.room.listen();
            let _counted = Waiting::count(&self.waiting);
            if self.try_take() {
                return Permit(self.clone());
            }
            listener.await;
        }
    }
}

/// One waiter counted in [`Window::waiting`] while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A slot in a publisher's window, given back when dropped (when its
/// publish is settled).
pub(crate) struct Permit(Arc<Window>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.room.notify(1);
        }
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
    fn waiters_are_counted_while_they_wait_and_only_then() {
        let window = Window::new(1);
        let held = take_now(window.acquire());
        assert_eq!(window.waiting.load(Ordering::SeqCst), 0, "nobody waits yet");
        let mut cancelled = Box::pin(window.acquire());
        let mut served = pin!(window.acquire());
        assert!(poll_once(cancelled.as_mut()).is_pending());
        assert!(poll_once(served.as_mut()).is_pending());
        assert_eq!(window.waiting.load(Ordering::SeqCst), 2);
        drop(cancelled);
        assert_eq!(
            window.waiting.load(Ordering::SeqCst),
            1,
            "a cancelled wait is uncounted"
        );
        // The slot given back must reach the one still counted.
        drop(held);
        let Poll::Ready(permit) = poll_once(served.as_mut()) else {
            panic!("the counted waiter is notified");
        };
        assert_eq!(
            window.waiting.load(Ordering::SeqCst),
            0,
            "a served wait is uncounted"
        );
        drop(permit);
        assert_eq!(window.in_flight(), 0);
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
