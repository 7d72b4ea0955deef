//! Waiters for pending operations (declares, binds, consume-ok, get,
//! channel close, update-secret), keyed by the core's operation id.
//!
//! Invariants:
//! - every id in `temporary` is also in `waiters` until it completes: a
//!   short-lived channel is closed exactly when its one operation succeeds;
//! - a waiter is removed exactly once, either completed with the core's
//!   result or failed with why the connection ended.

use carehare_core::types::{ChannelId, OpId};
use carehare_core::{Connection, Reply};
use futures_channel::oneshot;
use rustc_hash::FxHashMap;

use crate::error::Error;

/// The receiving half of an operation's reply.
pub(crate) type OpReceiver = oneshot::Receiver<Result<Reply, Error>>;

#[derive(Default)]
pub(crate) struct Ops {
    waiters: FxHashMap<OpId, oneshot::Sender<Result<Reply, Error>>>,
    /// Short-lived channels: the op whose success closes the channel.
    temporary: FxHashMap<OpId, ChannelId>,
}

impl Ops {
    /// Waits for `op`'s reply.
    pub(crate) fn wait(&mut self, op: OpId) -> OpReceiver {
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(op, tx);
        rx
    }

    /// Waits for `op`'s reply, then closes `channel` if it succeeded.
    pub(crate) fn wait_then_close(&mut self, op: OpId, channel: ChannelId) -> OpReceiver {
        self.temporary.insert(op, channel);
        self.wait(op)
    }

    /// The core finished `op`.
    pub(crate) fn complete(
        &mut self,
        conn: &mut Connection,
        op: OpId,
        channel: ChannelId,
        result: Result<Reply, Error>,
    ) {
        if let Some(ch) = self.temporary.remove(&op)
            && result.is_ok()
        {
            // The operation is done: close its channel (fire and forget).
            debug_assert_eq!(ch, channel);
            let _ = conn.close_channel(ch);
        }
        if let Some(tx) = self.waiters.remove(&op) {
            let _ = tx.send(result);
        }
    }

    /// The connection ended: every waiter fails with `why`.
    /// Waiters not yet answered, and temporary channels not yet closed.
    #[cfg(feature = "testing")]
    pub(crate) fn pending(&self) -> (usize, usize) {
        (self.waiters.len(), self.temporary.len())
    }

    pub(crate) fn fail_all(&mut self, why: &Error) {
        self.temporary.clear();
        for (_, tx) in self.waiters.drain() {
            let _ = tx.send(Err(why.clone()));
        }
    }
}
