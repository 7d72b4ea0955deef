//! Consumer mailboxes: the deliveries waiting for each consumer (and the
//! channels of `basic.get` messages, which wait for nothing but the end).
//!
//! Mailboxes are keyed by a registration token rather than by channel id:
//! after a server `channel.close` the core frees the id at once and a new
//! channel may take it, while the old handle still exists. The token keeps
//! the old handle from reading, acking or closing the new one.
//!
//! Invariants:
//! - `by_channel` maps each channel to its live registration only; a token
//!   whose channel was detached stays readable (buffered messages, then
//!   the end) until its handle removes it;
//! - a mailbox never holds more than `limit` messages: one more is a
//!   server fault, reported to the caller instead of stored;
//! - a mailbox with `pause_at` (a no-ack consumer, which RabbitMQ sends
//!   to without any prefetch limit) holding that many messages pauses the
//!   connection's reading: `input_paused` says so before each read, so it
//!   overshoots by at most one read's deliveries, which `limit` allows for;
//!   `resumed` is set when a taken message brings it back under;
//! - `paced` is the number of mailboxes in `boxes` with a `pause_at`;
//! - `end` is set once; the first reason wins;
//! - with `track` on (metrics are counted), `unsettled` holds, in
//!   increasing order, the delivery tags handed to the mailbox and not yet
//!   settled by the handle, so a `multiple` ack is counted in messages.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use carehare_core::method::Method;
use carehare_core::types::ChannelId;
use rustc_hash::FxHashMap;
use tracing::debug;

use crate::error::Error;
use crate::message::Message;
use crate::metrics::Counter;

/// A consumer's mailbox. Bounded: by the prefetch count (RabbitMQ never has
/// more unacked deliveries out), or for a stream consumer by a larger limit
/// (streams deliver whole chunks past the prefetch).
#[derive(Default)]
struct Mailbox {
    /// The most messages held: a longer queue here is a server fault.
    limit: u32,
    /// For a no-ack consumer: reading pauses while this many are held.
    pause_at: Option<u32>,
    messages: VecDeque<Message>,
    end: Option<Error>,
    waker: Option<Waker>,
    /// Delivered, unsettled tags (only when tracking).
    unsettled: VecDeque<u64>,
    /// The consumer's log span, once its handle sets it.
    span: Option<tracing::Span>,
}

impl Mailbox {
    fn finish(&mut self, why: Error) {
        if self.end.is_none() {
            self.end = Some(why);
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// A registration's token, handed to the handle that owns it.
pub(crate) type Token = u64;

pub(crate) struct Consumers {
    /// The live registration of each channel.
    by_channel: FxHashMap<ChannelId, Token>,
    boxes: FxHashMap<Token, (ChannelId, Mailbox)>,
    next: Token,
    /// A paused mailbox went back under its `pause_at`: reading may resume.
    resumed: bool,
    /// How many mailboxes have a `pause_at`: with none, reading never
    /// pauses, and `input_paused` looks at no mailbox.
    paced: usize,
    /// Whether settlements are counted (see the invariants).
    track: bool,
}

impl Consumers {
    /// No mailboxes; `track`: count settlements for metrics.
    pub(crate) fn new(track: bool) -> Self {
        Self {
            by_channel: FxHashMap::default(),
            boxes: FxHashMap::default(),
            next: 0,
            resumed: false,
            paced: 0,
            track,
        }
    }

    /// What settling with `method` (an ack, nack or reject from `token`'s
    /// handle) counts, in messages; `None` when not tracking or for any
    /// other method.
    pub(crate) fn settling(&mut self, token: Token, method: &Method) -> Option<(Counter, u64)> {
        if !self.track {
            return None;
        }
        let (counter, tag, multiple) = match method {
            Method::BasicAck(m) => (Counter::Acked, m.delivery_tag, m.multiple),
            Method::BasicNack(m) => (Counter::Nacked, m.delivery_tag, m.multiple),
            Method::BasicReject(m) => (Counter::Rejected, m.delivery_tag, false),
            _ => return None,
        };
        let mailbox = &mut self.boxes.get_mut(&token)?.1;
        if mailbox.limit == 0 {
            // A basic.get channel's one message, which never went through
            // the mailbox.
            return Some((counter, 1));
        }
        let unsettled = &mut mailbox.unsettled;
        let n = if multiple {
            // Tag 0 with `multiple` settles everything outstanding.
            let upto = if tag == 0 { u64::MAX } else { tag };
            let n = unsettled.partition_point(|&t| t <= upto);
            unsettled.drain(..n);
            n
        } else {
            match unsettled.binary_search(&tag) {
                Ok(i) => {
                    unsettled.remove(i);
                    1
                }
                Err(_) => 0,
            }
        };
        Some((counter, n as u64))
    }
    /// A new mailbox for `channel` holding at most `limit` messages (the
    /// consumer's prefetch; 0 for a channel that receives no deliveries),
    /// and for a no-ack consumer pausing reading at `pause_at` (see the
    /// invariants); returns its token.
    pub(crate) fn register(
        &mut self,
        channel: ChannelId,
        limit: u32,
        pause_at: Option<u32>,
    ) -> Token {
        self.next += 1;
        let token = self.next;
        self.by_channel.insert(channel, token);
        if pause_at.is_some() {
            self.paced += 1;
        }
        let mailbox = Mailbox {
            limit,
            pause_at,
            ..Mailbox::default()
        };
        self.boxes.insert(token, (channel, mailbox));
        token
    }

    /// Logs what happens to `token`'s mailbox under `span`.
    pub(crate) fn set_span(&mut self, token: Token, span: tracing::Span) {
        if let Some((_, mailbox)) = self.boxes.get_mut(&token) {
            mailbox.span = Some(span);
        }
    }

    /// The log span of the consumer on `channel` (none if there is none).
    pub(crate) fn span_of(&self, channel: ChannelId) -> tracing::Span {
        self.by_channel
            .get(&channel)
            .and_then(|token| self.boxes.get(token))
            .and_then(|(_, m)| m.span.clone())
            .unwrap_or_else(tracing::Span::none)
    }

    /// Queues a delivery for the consumer on `channel`. `Err(limit)` when
    /// its mailbox is full: the server sent more than the prefetch allows.
    /// A delivery for no consumer (one that just closed) is dropped:
    /// RabbitMQ requeues it when the channel closes.
    pub(crate) fn deliver(&mut self, channel: ChannelId, message: Message) -> Result<(), u32> {
        let Some(mailbox) = self
            .by_channel
            .get(&channel)
            .and_then(|token| self.boxes.get_mut(token))
            .map(|(_, m)| m)
        else {
            return Ok(());
        };
        if mailbox.messages.len() >= mailbox.limit as usize {
            return Err(mailbox.limit);
        }
        if self.track && mailbox.pause_at.is_none() {
            mailbox.unsettled.push_back(message.delivery_tag);
        }
        mailbox.messages.push_back(message);
        if let Some(w) = mailbox.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Unlinks `channel` (its id is being freed) and ends its mailbox with
    /// `why`, after the messages it holds.
    pub(crate) fn detach(&mut self, channel: ChannelId, why: Error) {
        if let Some(token) = self.by_channel.remove(&channel)
            && let Some((_, mailbox)) = self.boxes.get_mut(&token)
        {
            let span = mailbox.span.clone().unwrap_or_else(tracing::Span::none);
            span.in_scope(|| debug!(channel, error = %why, "consumer ended"));
            mailbox.finish(why);
        }
    }

    /// The next message for `token`, its end, or `Pending` (the waker is
    /// kept). A removed registration reads as closed.
    pub(crate) fn poll(
        &mut self,
        token: Token,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Message, Error>> {
        let Some((_, mailbox)) = self.boxes.get_mut(&token) else {
            return Poll::Ready(Err(Error::ConsumerClosed));
        };
        if let Some(m) = mailbox.messages.pop_front() {
            if mailbox
                .pause_at
                .is_some_and(|p| mailbox.messages.len() + 1 == p as usize)
            {
                self.resumed = true;
            }
            return Poll::Ready(Ok(m));
        }
        if let Some(e) = &mailbox.end {
            return Poll::Ready(Err(e.clone()));
        }
        mailbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether reading must pause: a no-ack consumer's mailbox is full.
    /// Its `end` does not count: an ended mailbox takes no deliveries.
    pub(crate) fn input_paused(&self) -> bool {
        self.paced > 0
            && self.boxes.values().any(|(_, m)| {
                m.end.is_none() && m.pause_at.is_some_and(|p| m.messages.len() >= p as usize)
            })
    }

    /// Whether a paused mailbox went back under its mark since the last
    /// call (the driver is then to be woken).
    pub(crate) fn take_resumed(&mut self) -> bool {
        std::mem::take(&mut self.resumed)
    }

    /// Whether a stream over `token` is over: nothing left to yield and no
    /// error left to report.
    pub(crate) fn stream_done(&self, token: Token) -> bool {
        self.boxes.get(&token).is_none_or(|(_, m)| {
            m.messages.is_empty() && matches!(m.end, Some(Error::ConsumerClosed))
        })
    }

    /// After a stream reported its error: it ends next time.
    pub(crate) fn error_reported(&mut self, token: Token) {
        if let Some((_, m)) = self.boxes.get_mut(&token) {
            m.end = Some(Error::ConsumerClosed);
        }
    }

    /// Whether `token` still owns a live channel: commands sent on it now
    /// reach our own channel, not one that reused its id.
    pub(crate) fn is_live(&self, token: Token) -> bool {
        self.boxes
            .get(&token)
            .is_some_and(|(ch, m)| m.end.is_none() && self.by_channel.get(ch) == Some(&token))
    }

    /// Removes `token`'s registration, ending its mailbox as closed.
    /// Returns its channel if it was still live (so the caller closes it).
    pub(crate) fn remove(&mut self, token: Token) -> Option<ChannelId> {
        let live = self.is_live(token);
        let (channel, mut mailbox) = self.boxes.remove(&token)?;
        if mailbox.pause_at.is_some() {
            self.paced -= 1;
        }
        if self.by_channel.get(&channel) == Some(&token) {
            self.by_channel.remove(&channel);
        }
        mailbox.end = Some(Error::ConsumerClosed);
        if let Some(w) = mailbox.waker.take() {
            w.wake();
        }
        live.then_some(channel)
    }

    /// The connection ended: every mailbox ends with `why`.
    /// Mailboxes not yet ended.
    #[cfg(feature = "testing")]
    pub(crate) fn open(&self) -> usize {
        self.boxes.values().filter(|(_, m)| m.end.is_none()).count()
    }

    pub(crate) fn fail_all(&mut self, why: &Error) {
        for (_, mailbox) in self.boxes.values_mut() {
            mailbox.finish(why.clone());
        }
    }

    /// Messages buffered for `token` (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn buffered(&self, token: Token) -> usize {
        self.boxes.get(&token).map_or(0, |(_, m)| m.messages.len())
    }
}
