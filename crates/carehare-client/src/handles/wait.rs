//! Awaiting an operation's reply.

use carehare_core::Reply;

use crate::error::Error;
use crate::state::{OpReceiver, Shared};

/// Awaits an operation's reply. Every waiter is answered, at the latest
/// when the connection ends; if its sender went unanswered anyway, the
/// state says why.
pub(super) async fn reply(shared: &Shared, rx: OpReceiver) -> Result<Reply, Error> {
    match rx.await {
        Ok(result) => result,
        Err(_) => Err(shared.lock().lost()),
    }
}

/// The error for a reply of the wrong kind. The core matches every reply
/// to its request by method, so this is a bug of ours, never the server's.
pub(super) fn unexpected<T>() -> Result<T, Error> {
    Err(Error::Internal("a reply does not match its request"))
}
