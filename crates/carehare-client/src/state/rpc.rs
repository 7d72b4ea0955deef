//! Direct reply-to routes: on each RPC channel, the calls waiting for a
//! reply, keyed by correlation id.
//!
//! Invariants:
//! - a channel is here from the RPC client's open until its drop, its
//!   server close or the connection's end, whichever comes first;
//! - each waiter gets at most one reply or error; a reply for no waiter
//!   (its call gave up) is dropped.

use std::collections::HashMap;

use carehare_core::types::{ChannelId, ShortStr};
use futures_channel::oneshot;
use rustc_hash::FxHashMap;
use tracing::debug;

use crate::error::Error;
use crate::message::Message;

/// The receiving half of one call's reply.
pub(crate) type ReplyReceiver = oneshot::Receiver<Result<Message, Error>>;

#[derive(Default)]
pub(crate) struct RpcRoutes {
    channels: FxHashMap<ChannelId, HashMap<ShortStr, oneshot::Sender<Result<Message, Error>>>>,
}

impl RpcRoutes {
    /// Routes replies on `channel` from now on.
    pub(crate) fn open(&mut self, channel: ChannelId) {
        self.channels.insert(channel, HashMap::new());
    }

    /// Waits for the reply with `correlation_id` on `channel`; `None` if
    /// the channel is no longer routed.
    pub(crate) fn expect(
        &mut self,
        channel: ChannelId,
        correlation_id: ShortStr,
    ) -> Option<ReplyReceiver> {
        let waiters = self.channels.get_mut(&channel)?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(correlation_id, tx);
        Some(rx)
    }

    /// A call gave up (or failed to send): forget its waiter.
    pub(crate) fn forget(&mut self, channel: ChannelId, correlation_id: &ShortStr) {
        if let Some(waiters) = self.channels.get_mut(&channel) {
            waiters.remove(correlation_id);
        }
    }

    /// Hands `message` to its call if `channel` is an RPC channel;
    /// otherwise gives it back.
    pub(crate) fn route(&mut self, channel: ChannelId, message: Message) -> Option<Message> {
        let Some(waiters) = self.channels.get_mut(&channel) else {
            return Some(message);
        };
        let waiter = message
            .properties
            .correlation_id
            .as_ref()
            .and_then(|id| waiters.remove(id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(Ok(message));
            }
            // A reply after its call gave up: nobody wants it.
            None => debug!(channel, "direct reply-to: reply for no pending call"),
        }
        None
    }

    /// How many calls wait for a reply, on every channel.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.channels.values().map(HashMap::len).sum()
    }

    /// `channel` ended: its calls fail with `why`.
    pub(crate) fn close(&mut self, channel: ChannelId, why: &Error) {
        for (_, tx) in self.channels.remove(&channel).into_iter().flatten() {
            let _ = tx.send(Err(why.clone()));
        }
    }

    /// The connection ended: every call fails with `why`.
    /// Reply waiters not yet answered.
    #[cfg(feature = "testing")]
    pub(crate) fn pending(&self) -> usize {
        self.channels.values().map(HashMap::len).sum()
    }

    pub(crate) fn fail_all(&mut self, why: &Error) {
        for (_, waiters) in self.channels.drain() {
            for (_, tx) in waiters {
                let _ = tx.send(Err(why.clone()));
            }
        }
    }
}
