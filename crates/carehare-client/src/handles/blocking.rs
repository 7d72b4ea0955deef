//! Watching RabbitMQ's flow control of a connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::state::{Shared, Watch};

/// A change in RabbitMQ's flow control of this connection.
///
/// ```
/// use carehare_client::Blocking;
/// let change = Blocking::Blocked("low on memory".into());
/// assert_ne!(change, Blocking::Unblocked);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocking {
    /// RabbitMQ stopped reading publishes (`connection.blocked`), e.g.
    /// "low on memory".
    Blocked(String),
    /// Publishing resumed (`connection.unblocked`).
    Unblocked,
}

/// Blocked/unblocked changes; see
/// [`Connection::blocking_changes`](crate::Connection::blocking_changes).
/// Ends when the connection ends.
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) {
/// use futures_util::StreamExt;
/// let mut changes: carehare_client::BlockingChanges = connection.blocking_changes();
/// if let Some(change) = changes.next().await {
///     println!("{change:?}");
/// }
/// # }
/// ```
///
/// # Cancel safety
///
/// Cancel-safe: a change is taken only by the poll that returns it; a
/// cancelled `next()` leaves it (or a later one, changes being coalesced)
/// for the next.
pub struct BlockingChanges {
    shared: Arc<Shared>,
    seen: u64,
}

impl BlockingChanges {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let seen = shared.lock().blocking_version();
        Self { shared, seen }
    }
}

impl std::fmt::Debug for BlockingChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingChanges").finish_non_exhaustive()
    }
}

impl futures_core::Stream for BlockingChanges {
    type Item = Blocking;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Blocking>> {
        let mut inner = self.shared.lock();
        let ended = inner.outcome().is_some();
        match inner.watch_blocking(self.seen, cx.waker()) {
            Watch::Changed(version, reason) => {
                drop(inner);
                self.seen = version;
                if ended {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(match reason {
                    Some(reason) => Blocking::Blocked(reason),
                    None => Blocking::Unblocked,
                }))
            }
            Watch::Unchanged if ended => Poll::Ready(None),
            Watch::Unchanged => Poll::Pending,
        }
    }
}
