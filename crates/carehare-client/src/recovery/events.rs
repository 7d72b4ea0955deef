//! Recovery's lifecycle events, fanned out to every subscriber.
//!
//! Invariants:
//! - each subscriber holds at most `CAPACITY` events: when a slow
//!   subscriber's queue is full, its oldest event is dropped and counted,
//!   so a subscriber that never reads costs bounded memory;
//! - a subscriber whose stream was dropped is forgotten at the next event;
//! - until the first connection is up (when it is made in the background),
//!   `early` keeps the events so far (at most `CAPACITY`), and a new
//!   subscriber starts with them: a stream taken right after `connect`
//!   misses none of the first connect's events.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::address::Address;
use crate::error::Error;

/// Events a subscriber may hold before the oldest is dropped.
const CAPACITY: usize = 64;

/// A change in a [`RecoveringConnection`](crate::RecoveringConnection)'s
/// life.
///
/// ```
/// use carehare_client::RecoveryEvent;
/// # fn f(event: RecoveryEvent) {
/// match event {
///     RecoveryEvent::Connecting { address, attempt } => println!("attempt {attempt}: {address}"),
///     RecoveryEvent::GaveUp { cause } => eprintln!("gave up: {cause}"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// Attempt `attempt` (from 1) is about to try `address`, after its
    /// backoff. Each attempt tries every configured address in turn (see
    /// [`ConnectOptions`](crate::ConnectOptions)), so an attempt brings one
    /// such event per address it tries.
    Connecting {
        /// The address about to be tried.
        address: Address,
        /// Which attempt of this outage (or of the first connect, with
        /// [`RecoveryOptions::retry_first_connect`](crate::RecoveryOptions::retry_first_connect)).
        attempt: u32,
    },
    /// A new connection is up and `setup` succeeded on it.
    Connected {
        /// The address that answered.
        address: Address,
    },
    /// The connection was lost.
    Disconnected {
        /// Why.
        cause: Error,
    },
    /// Recovered: consumers and publishers carry on. Not sent after the
    /// first connection, which recovers nothing.
    Recovered {
        /// From the loss to the new connection's `setup` done.
        downtime: Duration,
    },
    /// Recovery stopped for good: every waiting call fails with `cause`.
    GaveUp {
        /// The error that is not worth retrying (see
        /// [`Error::is_transient`]).
        cause: Error,
    },
}

#[derive(Default)]
struct Queue {
    events: VecDeque<RecoveryEvent>,
    dropped: u64,
    closed: bool,
    waker: Option<Waker>,
}

/// Every live subscriber.
#[derive(Default)]
pub(super) struct Subscribers {
    queues: Vec<Weak<Mutex<Queue>>>,
    /// The events before the first connection, while it is being made in
    /// the background.
    early: Option<VecDeque<RecoveryEvent>>,
}

impl Subscribers {
    /// Subscribers for a connection whose first connect is still to come:
    /// they replay its events to late subscribers.
    pub(super) fn replaying() -> Self {
        Self {
            queues: Vec::new(),
            early: Some(VecDeque::new()),
        }
    }

    pub(super) fn subscribe(&mut self) -> RecoveryEvents {
        let events = self.early.clone().unwrap_or_default();
        let closed = events
            .iter()
            .any(|e| matches!(e, RecoveryEvent::GaveUp { .. }));
        let queue = Arc::new(Mutex::new(Queue {
            events,
            closed,
            ..Queue::default()
        }));
        self.queues.push(Arc::downgrade(&queue));
        RecoveryEvents { queue }
    }

    pub(super) fn send(&mut self, event: RecoveryEvent) {
        let last = matches!(event, RecoveryEvent::GaveUp { .. });
        if matches!(event, RecoveryEvent::Connected { .. }) {
            self.early = None;
        }
        if let Some(early) = &mut self.early {
            if early.len() == CAPACITY {
                early.pop_front();
            }
            early.push_back(event.clone());
        }
        self.queues.retain(|weak| {
            let Some(queue) = weak.upgrade() else {
                return false;
            };
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.events.len() == CAPACITY {
                q.events.pop_front();
                q.dropped += 1;
            }
            q.events.push_back(event.clone());
            q.closed |= last;
            if let Some(w) = q.waker.take() {
                w.wake();
            }
            true
        });
    }
}

impl Drop for Subscribers {
    /// The connection is gone: every stream ends after what it holds.
    fn drop(&mut self) {
        for queue in self.queues.iter().filter_map(Weak::upgrade) {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            q.closed = true;
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
    }
}

/// A stream of [`RecoveryEvent`]s; see
/// [`RecoveringConnection::events`](crate::RecoveringConnection::events).
/// It holds at most 64 unread events (older ones are dropped and counted
/// by [`dropped`](Self::dropped)), and ends after `GaveUp` or when the
/// connection is gone.
///
/// # Cancel safety
///
/// Cancel-safe: an event is taken only by the poll that returns it.
pub struct RecoveryEvents {
    queue: Arc<Mutex<Queue>>,
}

impl RecoveryEvents {
    /// How many events were dropped because this stream fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }
}

impl std::fmt::Debug for RecoveryEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryEvents").finish_non_exhaustive()
    }
}

impl futures_core::Stream for RecoveryEvents {
    type Item = RecoveryEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RecoveryEvent>> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(event) = q.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
