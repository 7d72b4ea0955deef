//! Confirmed publishing's state: one confirm-mode channel per exchange,
//! the publishes awaiting their confirm on each, and the publishes held
//! while RabbitMQ blocks the connection. (Publishes without confirms go on
//! a channel of their own, kept apart in `unconfirmed`.)
//!
//! Invariants:
//! - `exchanges` and `publishers` agree: an exchange maps to a channel
//!   whose `PublishChannel` names that exchange; RPC channels are in
//!   `publishers` with no exchange;
//! - every publish channel in `publishers` is in confirm mode, so each
//!   publish on it gets a sequence number and exactly one settle (ack,
//!   nack, channel close or connection end); the unconfirmed channel is
//!   never among them;
//! - `held` is non-empty only while `holding` (RabbitMQ blocked us), and is
//!   sent in order, before anything newer, when it unblocks;
//! - a `Permit` lives exactly as long as its publish is unsettled;
//! - a channel that nacked `RETIRE_AFTER_NACKS` publishes in a row is
//!   retired: it leaves `exchanges` (the next publish opens a fresh
//!   channel) and is closed once its last publish is settled;
//! - `last_channel`, when set, is `exchanges[last.exchange]`: it is unset
//!   whenever `last.exchange` changes or an entry leaves `exchanges`.

use std::collections::VecDeque;

use bytes::Bytes;
use carehare_core::Connection;
use carehare_core::method::{BasicPublish, BasicReturn, ConfirmSelect};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{ChannelId, ShortStr};
use rustc_hash::FxHashMap;
use tracing::warn;

use super::channels::open_with;
use super::window::Permit;
use crate::capacity::shrink_sparse;
use crate::error::{Error, short};
use crate::message::Returned;
use crate::metrics::{Counter, Meter};
use crate::outcome::{self, OutcomeReceiver, OutcomeSender};

/// A message on its way out.
#[derive(Debug)]
pub(crate) struct Outgoing {
    exchange: ShortStr,
    routing_key: ShortStr,
    properties: BasicProperties,
    body: Bytes,
    mandatory: bool,
}

impl Outgoing {
    pub(crate) fn new(
        exchange: ShortStr,
        routing_key: ShortStr,
        properties: BasicProperties,
        body: Bytes,
        mandatory: bool,
    ) -> Self {
        Self {
            exchange,
            routing_key,
            properties,
            body,
            mandatory,
        }
    }
}

/// One publish awaiting its confirm.
struct PendingConfirm {
    tx: OutcomeSender,
    /// Kept for mandatory publishes only, to match a `basic.return`;
    /// boxed so the confirm map's entries stay small (they are moved as
    /// the map's nodes split and merge).
    outgoing: Option<Box<Outgoing>>,
    returned: Option<Box<Returned>>,
    /// The in-flight window slot, freed when this is settled.
    _permit: Option<Permit>,
}

impl PendingConfirm {
    fn new(tx: OutcomeSender, outgoing: Option<Box<Outgoing>>, permit: Option<Permit>) -> Self {
        Self {
            tx,
            outgoing,
            returned: None,
            _permit: permit,
        }
    }

    /// Settles with an ack (`true`) or a nack.
    fn settle(self, ack: bool) {
        let Self {
            tx,
            returned,
            _permit: permit,
            ..
        } = self;
        // The window slot is free before the caller can see the outcome
        // (it may run on another thread the moment the sender fires).
        drop(permit);
        let result = match (ack, returned) {
            (true, None) => Ok(()),
            (true, Some(returned)) => Err(Error::Returned(returned)),
            (false, _) => Err(Error::ServerSentNack),
        };
        let _ = tx.send(result);
    }

    fn fail(self, why: Error) {
        let Self {
            tx,
            _permit: permit,
            ..
        } = self;
        drop(permit);
        let _ = tx.send(Err(why));
    }

    /// Marks this publish as returned if `r` is its message.
    fn claim_return(
        &mut self,
        r: &BasicReturn,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> bool {
        let Some(o) = &self.outgoing else {
            return false;
        };
        if self.returned.is_some()
            || o.exchange != r.exchange
            || o.routing_key != r.routing_key
            || o.body != body
            || !same_but_reply_to(&o.properties, properties)
        {
            return false;
        }
        self.returned = Some(Box::new(Returned {
            reply_code: r.reply_code,
            reply_text: r.reply_text.to_string(),
            exchange: r.exchange.clone(),
            routing_key: r.routing_key.clone(),
            properties: properties.clone(),
            body: body.clone(),
        }));
        true
    }
}

/// Whether two property sets are equal apart from `reply_to`, which
/// RabbitMQ rewrites for direct reply-to (`amq.rabbitmq.reply-to` becomes
/// the caller's real reply address) before it returns a message.
fn same_but_reply_to(sent: &BasicProperties, returned: &BasicProperties) -> bool {
    let mut returned = returned.clone();
    returned.reply_to.clone_from(&sent.reply_to);
    *sent == returned
}

/// A publish waiting for RabbitMQ to unblock the connection.
struct Held {
    outgoing: Outgoing,
    tx: OutcomeSender,
    permit: Option<Permit>,
}

/// Nacks in a row after which a publish channel is replaced. RabbitMQ
/// 3.10 nacks every publish, for good, on a channel that first published
/// to a quorum queue while the queue had no leader (e.g. just after its
/// leader's node died); a fresh channel publishes fine once the queue has
/// elected a new leader. Other runs of nacks (a full queue with
/// `x-overflow=reject-publish`) only cost a channel open now and then.
const RETIRE_AFTER_NACKS: u32 = 64;

/// Publishes awaiting their confirm, in sequence order. The core numbers
/// a channel's publishes 1, 2, 3..., so they are appended in order and
/// confirms settle them mostly from the front: a deque, not a map (whose
/// inserts cost hundreds of instructions each on the publish path).
#[derive(Default)]
struct Pending {
    /// Sequence numbers strictly increase from front to back.
    entries: VecDeque<(u64, PendingConfirm)>,
}

impl Pending {
    /// Adds publish `seq`, which is later than every one held.
    fn insert(&mut self, seq: u64, confirm: PendingConfirm) {
        debug_assert!(self.entries.back().is_none_or(|(last, _)| *last < seq));
        self.entries.push_back((seq, confirm));
    }

    /// Takes publish `seq`, if held.
    fn remove(&mut self, seq: u64) -> Option<PendingConfirm> {
        // Almost always the front: RabbitMQ confirms in order.
        let at = match self.entries.front() {
            Some((first, _)) if *first == seq => 0,
            _ => self.entries.binary_search_by_key(&seq, |(s, _)| *s).ok()?,
        };
        self.entries.remove(at).map(|(_, c)| c)
    }

    /// Takes every publish up to and including `seq`.
    fn take_upto(&mut self, seq: u64) -> impl ExactSizeIterator<Item = PendingConfirm> + '_ {
        let n = self.entries.partition_point(|(s, _)| *s <= seq);
        self.entries.drain(..n).map(|(_, c)| c)
    }

    /// Gives back the room an outage's backlog took, once it drained.
    fn shrink(&mut self) {
        shrink_sparse(&mut self.entries);
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut PendingConfirm> {
        self.entries.iter_mut().map(|(_, c)| c)
    }

    fn into_values(self) -> impl Iterator<Item = PendingConfirm> {
        self.entries.into_iter().map(|(_, c)| c)
    }

    #[cfg(any(test, feature = "testing"))]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A publish channel: one per exchange, in confirm mode.
struct PublishChannel {
    /// The exchange this channel publishes to; `None` for an RPC channel,
    /// which publishes anywhere.
    exchange: Option<String>,
    /// Publishes awaiting their confirm, by sequence number.
    pending: Pending,
    /// Publishes nacked since the last ack.
    nacks_in_a_row: u32,
    /// Replaced: closed once `pending` is empty.
    retired: bool,
}

#[derive(Default)]
pub(crate) struct Confirms {
    exchanges: FxHashMap<String, ChannelId>,
    publishers: FxHashMap<ChannelId, PublishChannel>,
    /// RabbitMQ blocked publishing: new publishes are held.
    holding: bool,
    held: VecDeque<Held>,
    /// The last exchange and routing key published to, as `shortstr`s, in
    /// the method a publish that is neither mandatory nor held sends: most
    /// callers publish to a few routing keys, and this spares such a
    /// publish an allocation and the reference counting of four clones.
    last: BasicPublish,
    /// The channel of `last.exchange`, which spares the common publish a
    /// lookup in `exchanges`.
    last_channel: Option<ChannelId>,
}

impl Confirms {
    /// The `shortstr`s for an exchange and routing key, reusing the last
    /// ones made for the same strings.
    pub(crate) fn names(
        &mut self,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(ShortStr, ShortStr), Error> {
        self.set_names(exchange, routing_key)?;
        Ok((self.last.exchange.clone(), self.last.routing_key.clone()))
    }

    /// Makes `last` name `exchange` and `routing_key`.
    fn set_names(&mut self, exchange: &str, routing_key: &str) -> Result<(), Error> {
        if set_cached(&mut self.last.exchange, exchange)? {
            self.last_channel = None;
        }
        set_cached(&mut self.last.routing_key, routing_key)?;
        Ok(())
    }

    /// Whether publishes are held (RabbitMQ blocked the connection).
    pub(crate) fn is_holding(&self) -> bool {
        self.holding
    }

    /// Sends `outgoing` now, or holds it while blocked.
    pub(crate) fn enqueue(
        &mut self,
        conn: &mut Connection,
        outgoing: Outgoing,
        permit: Option<Permit>,
    ) -> OutcomeReceiver {
        let (tx, rx) = outcome::channel();
        if self.holding {
            self.held.push_back(Held {
                outgoing,
                tx,
                permit,
            });
        } else {
            self.send(conn, outgoing, tx, permit);
        }
        rx
    }

    /// The common case: frames straight into the write buffer, nothing
    /// kept but the confirm. Only when not holding and not mandatory. An
    /// error only for a name too long for a `shortstr`.
    pub(crate) fn publish_now(
        &mut self,
        conn: &mut Connection,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        body: &Bytes,
        permit: Option<Permit>,
    ) -> Result<OutcomeReceiver, Error> {
        debug_assert!(!self.holding);
        self.set_names(exchange, routing_key)?;
        debug_assert!(!self.last.mandatory);
        let (tx, rx) = outcome::channel();
        let queued = self.last_channel(conn).and_then(|ch| {
            let seq = conn.publish_bytes(ch, &self.last, properties, body)?;
            Ok((ch, seq))
        });
        self.track(queued, tx, None, permit);
        Ok(rx)
    }

    fn send(
        &mut self,
        conn: &mut Connection,
        outgoing: Outgoing,
        tx: OutcomeSender,
        permit: Option<Permit>,
    ) {
        let queued = self.queue(
            conn,
            &outgoing.exchange,
            &outgoing.routing_key,
            &outgoing.properties,
            &outgoing.body,
            outgoing.mandatory,
        );
        let keep = outgoing.mandatory.then(|| Box::new(outgoing));
        self.track(queued, tx, keep, permit);
    }

    /// Queues the frames of a publish; returns its channel and sequence
    /// number.
    fn queue(
        &mut self,
        conn: &mut Connection,
        exchange: &ShortStr,
        routing_key: &ShortStr,
        properties: &BasicProperties,
        body: &Bytes,
        mandatory: bool,
    ) -> Result<(ChannelId, Option<u64>), Error> {
        let publish = BasicPublish {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            mandatory,
            ..Default::default()
        };
        let ch = self.channel_for(conn, exchange.as_str())?;
        let seq = conn.publish_bytes(ch, &publish, properties, body)?;
        Ok((ch, seq))
    }

    /// Registers a queued publish's confirm (or fails it).
    fn track(
        &mut self,
        queued: Result<(ChannelId, Option<u64>), Error>,
        tx: OutcomeSender,
        // Boxed by the caller: most publishes pass `None`, and an unboxed
        // `Option` of 450 bytes was copied on every call all the same.
        outgoing: Option<Box<Outgoing>>,
        permit: Option<Permit>,
    ) {
        match queued {
            Ok((ch, Some(seq))) => match self.publishers.get_mut(&ch) {
                Some(p) => {
                    p.pending
                        .insert(seq, PendingConfirm::new(tx, outgoing, permit));
                }
                None => {
                    let _ = tx.send(Err(Error::Internal("a publish channel has no state")));
                }
            },
            Ok((_, None)) => {
                let _ = tx.send(Err(Error::Internal(
                    "a publish channel is not in confirm mode",
                )));
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    }

    /// [`channel_for`](Self::channel_for) `last.exchange`.
    fn last_channel(&mut self, conn: &mut Connection) -> Result<ChannelId, Error> {
        if let Some(ch) = self.last_channel {
            return Ok(ch);
        }
        let exchange = self.last.exchange.clone();
        let ch = self.channel_for(conn, exchange.as_str())?;
        self.last_channel = Some(ch);
        Ok(ch)
    }

    /// The channel that publishes to `exchange`, opened (pipelined with
    /// `confirm.select`, no round trip) if there is none yet.
    fn channel_for(&mut self, conn: &mut Connection, exchange: &str) -> Result<ChannelId, Error> {
        if let Some(ch) = self.exchanges.get(exchange) {
            return Ok(*ch);
        }
        let select = ConfirmSelect { no_wait: false };
        // The publish path wakes the driver afterwards, on success or error.
        let (ch, _select) = open_with(conn, [select.into()])?;
        self.exchanges.insert(exchange.to_string(), ch);
        self.publishers.insert(
            ch,
            PublishChannel {
                exchange: Some(exchange.to_string()),
                pending: Pending::default(),
                nacks_in_a_row: 0,
                retired: false,
            },
        );
        Ok(ch)
    }

    /// An RPC channel (in confirm mode, publishing anywhere) from now on.
    pub(crate) fn add_rpc_channel(&mut self, channel: ChannelId) {
        self.publishers.insert(
            channel,
            PublishChannel {
                exchange: None,
                pending: Pending::default(),
                nacks_in_a_row: 0,
                retired: false,
            },
        );
    }

    /// Tracks a mandatory publish already queued on RPC `channel` as `seq`.
    pub(crate) fn track_rpc(
        &mut self,
        channel: ChannelId,
        seq: u64,
        outgoing: Outgoing,
    ) -> OutcomeReceiver {
        let (tx, rx) = outcome::channel();
        self.track(Ok((channel, Some(seq))), tx, Some(Box::new(outgoing)), None);
        rx
    }

    /// Forgets RPC `channel`; its unsettled publishes' callers are gone.
    pub(crate) fn remove_rpc_channel(&mut self, channel: ChannelId) {
        self.publishers.remove(&channel);
    }

    /// Settles one confirm, or all up to `tag` when `multiple`; returns how
    /// many were waiting.
    pub(crate) fn settle(
        &mut self,
        conn: &mut Connection,
        channel: ChannelId,
        tag: u64,
        multiple: bool,
        ack: bool,
        meter: &Meter,
    ) {
        let Some(p) = self.publishers.get_mut(&channel) else {
            return;
        };
        // Counted before any sender fires: a caller whose publish resolved
        // must already see it in the counters (it may run on another
        // thread the moment it is woken).
        let counter = if ack {
            Counter::Confirmed
        } else {
            Counter::PublishNacked
        };
        let settled: u32 = if multiple {
            let taken = p.pending.take_upto(tag);
            let n = u32::try_from(taken.len()).unwrap_or(u32::MAX);
            meter.add(counter, u64::from(n));
            for c in taken {
                c.settle(ack);
            }
            n
        } else if let Some(c) = p.pending.remove(tag) {
            meter.add(counter, 1);
            c.settle(ack);
            1
        } else {
            0
        };
        p.pending.shrink();
        if ack {
            p.nacks_in_a_row = 0;
        } else {
            p.nacks_in_a_row = p.nacks_in_a_row.saturating_add(settled);
        }
        if !p.retired
            && p.nacks_in_a_row >= RETIRE_AFTER_NACKS
            && let Some(exchange) = &p.exchange
        {
            warn!(
                channel,
                nacks = p.nacks_in_a_row,
                "publish channel nacks everything; publishing on a fresh one"
            );
            p.retired = true;
            forget_channel(
                &mut self.exchanges,
                &mut self.last_channel,
                exchange,
                channel,
            );
        }
        if p.retired && p.pending.is_empty() {
            self.publishers.remove(&channel);
            let _ = conn.close_channel(channel);
        }
    }

    /// A `basic.return` on `channel`: marks the matching mandatory publish.
    pub(crate) fn returned(
        &mut self,
        channel: ChannelId,
        r: &BasicReturn,
        properties: &BasicProperties,
        body: &Bytes,
    ) {
        let claimed = self.publishers.get_mut(&channel).is_some_and(|p| {
            p.pending
                .iter_mut()
                .any(|c| c.claim_return(r, properties, body))
        });
        if !claimed {
            warn!(
                channel,
                code = r.reply_code,
                "basic.return matches no pending mandatory publish"
            );
        }
    }

    /// RabbitMQ closed `channel`: its publishes fail with `why`, and the
    /// next publish to its exchange opens a fresh channel.
    pub(crate) fn channel_closed(&mut self, channel: ChannelId, why: &Error) {
        if let Some(p) = self.publishers.remove(&channel) {
            // A retired channel's exchange may be on a fresh channel now.
            if let Some(exchange) = &p.exchange {
                forget_channel(
                    &mut self.exchanges,
                    &mut self.last_channel,
                    exchange,
                    channel,
                );
            }
            for c in p.pending.into_values() {
                c.fail(why.clone());
            }
        }
    }

    /// RabbitMQ blocked publishing.
    pub(crate) fn hold(&mut self) {
        self.holding = true;
    }

    /// RabbitMQ unblocked publishing: sends what was held, in order.
    pub(crate) fn release(&mut self, conn: &mut Connection) {
        self.holding = false;
        while let Some(h) = self.held.pop_front() {
            self.send(conn, h.outgoing, h.tx, h.permit);
        }
        shrink_sparse(&mut self.held);
    }

    /// Publishes awaiting their confirm, and publishes held.
    #[cfg(feature = "testing")]
    pub(crate) fn pending(&self) -> usize {
        self.publishers
            .values()
            .map(|p| p.pending.len())
            .sum::<usize>()
            + self.held.len()
    }

    /// The connection ended: every unsettled and held publish fails.
    pub(crate) fn fail_all(&mut self, why: &Error) {
        self.exchanges.clear();
        self.last_channel = None;
        for (_, p) in self.publishers.drain() {
            for c in p.pending.into_values() {
                c.fail(why.clone());
            }
        }
        for h in self.held.drain(..) {
            let _ = h.tx.send(Err(why.clone()));
        }
    }

    /// The channel publishing to `exchange`, if one is open.
    #[cfg(test)]
    pub(crate) fn channel_of(&self, exchange: &str) -> Option<ChannelId> {
        self.exchanges.get(exchange).copied()
    }

    /// Unsettled publishes on `channel`.
    #[cfg(test)]
    pub(crate) fn unsettled(&self, channel: ChannelId) -> usize {
        self.publishers.get(&channel).map_or(0, |p| p.pending.len())
    }

    /// Publishes held while blocked.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }
}

/// `exchange` no longer publishes on `channel` (which was retired or
/// closed), so its next publish opens a fresh one. Takes `Confirms`'
/// fields, not `self`, because a caller holds one of its channels.
fn forget_channel(
    exchanges: &mut FxHashMap<String, ChannelId>,
    last_channel: &mut Option<ChannelId>,
    exchange: &str,
    channel: ChannelId,
) {
    if exchanges.get(exchange) == Some(&channel) {
        exchanges.remove(exchange);
        *last_channel = None;
    }
}

/// Makes `slot` hold `s` as a `shortstr`, unless it already does; true
/// if it changed.
fn set_cached(slot: &mut ShortStr, s: &str) -> Result<bool, Error> {
    if slot.as_str() == s {
        return Ok(false);
    }
    *slot = short(s)?;
    Ok(true)
}
