//! A channel's rules: what each frame the server sends on it means, given
//! where the channel is in its life, the replies it waits for and the
//! message it is assembling. The connection routes frames here and applies
//! the [`Outcome`]; it never looks inside a channel.
//!
//! Invariants:
//! - `pending` holds the commands waiting for a reply, in the order they
//!   were sent: replies on one channel come in that order, so a reply only
//!   ever completes the front one.
//! - While `Closing`, `pending` and `content` are empty (failed or dropped
//!   when our `channel.close` was queued) and no command is accepted; only
//!   `close` and `close-ok` still mean anything.
//! - `content` is set only from a content method to the last frame of its
//!   body; any other method in between breaks the protocol.
//! - `next_publish_seq` is set from the moment `confirm.select` is queued,
//!   since the broker counts publishes from when it reads it.
//! - `confirmed` is the highest sequence number an ack or nack settled
//!   (with or without `multiple`), so `unconfirmed` never counts more than
//!   wait; out-of-order confirms make it count fewer.
//! - `confirm_batch` is 0 until the first ack or nack of a publish, then at
//!   least the most publishes one such frame settled among the latest ones:
//!   each frame raises it to its own count, or lowers it by an eighth.
//! - `delivered` is the highest delivery tag the server sent (deliveries
//!   and `get-ok`s), and `settled` a tag through which every delivery is
//!   settled by an ack, nack or reject we queued: a `multiple` one moves it
//!   to its tag, a single one only when it settles the next tag. Settling
//!   out of order leaves it behind, so `delivered - settled` never counts
//!   fewer deliveries awaiting their ack than the server does.
//! - `prefetch` is the smallest nonzero `prefetch_count` we queued in a
//!   `basic.qos`, and `None` once it can't be known: a consumer started
//!   before any qos (the server's default applies), or a byte limit.
//! - [`Channels`] holds each allocated id once, within `1..=channel_max` of
//!   the allocation, and `hint` is never above the lowest free id.

mod assembly;

use std::collections::{VecDeque, vec_deque};

// Keys are channel ids we allocate: no need for SipHash's DoS resistance.
use rustc_hash::FxHashMap as HashMap;

use bytes::Bytes;
use tracing::{debug, warn};

use crate::error::{ChannelError, CloseReason, ProtocolViolation};
use crate::event::{ContentMethod, Event, Reply};
use crate::method::{self, BasicCancelOk, ChannelCloseOk, ChannelFlowOk, Method};
use crate::properties::BasicProperties;
use crate::types::{ChannelId, OpId};
use assembly::{Assembly, Progress};

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// `channel.open` sent.
    Opening,
    /// `open-ok` received.
    Open,
    /// We sent `channel.close`; everything but `close`/`close-ok` is dropped.
    Closing(OpId),
}

/// A command waiting for its reply.
#[derive(Debug)]
struct Pending {
    op: OpId,
    replies: &'static [(u16, u16)],
}

/// What the connection must do after a channel took a frame, in this
/// order: the [`Effects`], if any, then queue `event`.
///
/// Every frame returns one, so it is kept small: nearly all are an event
/// or nothing, and the rare rest is boxed (unboxed it was 416 bytes,
/// copied several times per frame).
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Outcome {
    /// What to tell the driver.
    pub(crate) event: Option<Event>,
    /// What else to do, first.
    pub(crate) effects: Option<Box<Effects>>,
}

/// The rare part of an [`Outcome`], done in this order: send `reply` on
/// the channel, free the id if `free`, complete each op of `failed` with
/// its error.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// The channel's answer: `close-ok`, `cancel-ok` or `flow-ok`.
    pub(crate) reply: Option<Method>,
    /// The channel is over; its id may be reused.
    pub(crate) free: bool,
    /// Commands that will never get their reply, and why.
    pub(crate) failed: Option<(Unanswered, ChannelError)>,
}

impl Outcome {
    fn event(event: Event) -> Self {
        Self {
            event: Some(event),
            effects: None,
        }
    }

    fn with(effects: Effects, event: Option<Event>) -> Self {
        Self {
            event,
            effects: Some(Box::new(effects)),
        }
    }
}

/// The ops a channel will never answer, in the order they must fail: our
/// `channel.close`, a `basic.get` whose message was arriving, then the
/// pending commands.
#[derive(Debug)]
pub(crate) struct Unanswered {
    first: [Option<OpId>; 2],
    pending: vec_deque::IntoIter<Pending>,
}

impl Iterator for Unanswered {
    type Item = OpId;

    fn next(&mut self) -> Option<OpId> {
        if let Some(op) = self.first.iter_mut().find_map(Option::take) {
            return Some(op);
        }
        self.pending.next().map(|p| p.op)
    }
}

#[derive(Debug)]
pub(crate) struct Channel {
    id: ChannelId,
    lifecycle: Lifecycle,
    pending: VecDeque<Pending>,
    content: Option<Assembly>,
    /// Next publish sequence number once `confirm.select` was sent.
    next_publish_seq: Option<u64>,
    /// The highest publish sequence number confirmed.
    confirmed: u64,
    /// How many publishes one ack or nack frame settles, at most, lately.
    confirm_batch: u64,
    /// The highest delivery tag received.
    delivered: u64,
    /// Every delivery through this tag is settled by what we queued.
    settled: u64,
    /// The tightest message limit our `basic.qos` set (see the invariants).
    prefetch: Prefetch,
}

/// What the channel knows of the server's limit on unacked deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefetch {
    /// No `basic.qos` or consumer yet.
    Unset,
    /// At most this many (the smallest nonzero count sent).
    Count(u16),
    /// Only counts of 0 (no limit) were sent, before any consumer.
    Unlimited,
    /// Not known: a consumer started before any `basic.qos`, or a limit in
    /// bytes.
    Unknown,
}

impl Channel {
    fn new(id: ChannelId) -> Self {
        Self {
            id,
            lifecycle: Lifecycle::Opening,
            pending: VecDeque::new(),
            content: None,
            next_publish_seq: None,
            confirmed: 0,
            confirm_batch: 0,
            delivered: 0,
            settled: 0,
            prefetch: Prefetch::Unset,
        }
    }

    /// Whether commands may be sent on it.
    pub(crate) fn accepts_commands(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Opening | Lifecycle::Open)
    }

    // ---- Commands the connection queued on this channel -------------------

    /// `method` was queued on this channel; `op`, when given, waits for its
    /// reply.
    pub(crate) fn on_sent(&mut self, method: &Method, op: Option<OpId>) {
        match method {
            // The broker counts publishes from the moment it reads
            // confirm.select, so the count starts when we send it.
            Method::ConfirmSelect(_) => {
                self.next_publish_seq.get_or_insert(1);
            }
            Method::BasicQos(m) => self.on_qos(m.prefetch_size, m.prefetch_count),
            Method::BasicConsume(_) if self.prefetch == Prefetch::Unset => {
                // The server's default prefetch, whatever it is, applies.
                self.prefetch = Prefetch::Unknown;
            }
            Method::BasicAck(m) => self.on_settle(m.delivery_tag, m.multiple),
            Method::BasicNack(m) => self.on_settle(m.delivery_tag, m.multiple),
            Method::BasicReject(m) => self.on_settle(m.delivery_tag, false),
            _ => {}
        }
        if let (Some(op), Some(replies)) = (op, method::reply_ids(method)) {
            self.pending.push_back(Pending { op, replies });
        }
    }

    /// Publishes queued in confirm mode whose confirm has not come (see the
    /// invariants).
    pub(crate) fn unconfirmed(&self) -> u64 {
        self.next_publish_seq.map_or(0, |next| {
            next.saturating_sub(1).saturating_sub(self.confirmed)
        })
    }

    /// How many publishes one ack or nack frame has settled at most,
    /// lately (see the invariants); 0 before the first.
    pub(crate) fn confirm_batch(&self) -> u64 {
        self.confirm_batch
    }

    /// An ack or nack of our publish `tag` came.
    fn on_confirm(&mut self, tag: u64, multiple: bool) {
        let count = if multiple {
            tag.saturating_sub(self.confirmed).max(1)
        } else {
            1
        };
        self.confirmed = self.confirmed.max(tag);
        self.confirm_batch = count.max(self.confirm_batch - self.confirm_batch / 8);
    }

    /// A `basic.qos` was queued. A count of 0 lifts the limit of its scope
    /// only, and a consumer keeps the per-consumer limit it started with,
    /// so the smallest count sent stays the bound.
    fn on_qos(&mut self, size: u32, count: u16) {
        self.prefetch = match (self.prefetch, size, count) {
            (Prefetch::Unknown, _, _) | (_, 1.., _) => Prefetch::Unknown,
            (Prefetch::Count(was), _, 1..) => Prefetch::Count(was.min(count)),
            (Prefetch::Count(was), _, 0) => Prefetch::Count(was),
            (_, _, 1..) => Prefetch::Count(count),
            (_, _, 0) => Prefetch::Unlimited,
        };
    }

    /// An ack, nack or reject of `tag` was queued.
    fn on_settle(&mut self, tag: u64, multiple: bool) {
        if multiple {
            // Tag 0 with `multiple` settles everything delivered.
            let upto = if tag == 0 { self.delivered } else { tag };
            self.settled = self.settled.max(upto);
        } else if tag == self.settled + 1 {
            self.settled = tag;
        }
    }

    /// How the channel's deliveries stand against the server's limit, for
    /// holding settlements back (see `connection::coalesce`): the tag
    /// through which everything is settled, the highest tag delivered, and
    /// the limit on unacked deliveries (`None` when not known; `Some(0)`
    /// for none).
    pub(crate) fn settling(&self) -> (u64, u64, Option<u16>) {
        let prefetch = match self.prefetch {
            Prefetch::Count(n) => Some(n),
            Prefetch::Unlimited => Some(0),
            Prefetch::Unset | Prefetch::Unknown => None,
        };
        (self.settled, self.delivered, prefetch)
    }

    /// A `basic.publish` was queued: its sequence number, in confirm mode.
    pub(crate) fn on_publish(&mut self) -> Option<u64> {
        self.next_publish_seq.as_mut().map(|seq| {
            let this = *seq;
            *seq += 1;
            this
        })
    }

    /// Our `channel.close` was queued, waited for by `op`: the pending
    /// commands are returned to be failed, and a message in progress is
    /// dropped.
    pub(crate) fn on_close_sent(&mut self, op: OpId) -> Unanswered {
        self.lifecycle = Lifecycle::Closing(op);
        self.content = None;
        Unanswered {
            first: [None, None],
            pending: std::mem::take(&mut self.pending).into_iter(),
        }
    }

    /// The connection is ending: every op still waiting on this channel.
    pub(crate) fn into_unanswered(self) -> Unanswered {
        let closing = match self.lifecycle {
            Lifecycle::Closing(op) => Some(op),
            _ => None,
        };
        Unanswered {
            first: [closing, self.content.and_then(|a| a.get_op())],
            pending: self.pending.into_iter(),
        }
    }

    // ---- Frames from the server ------------------------------------------

    /// A method frame on this channel.
    pub(crate) fn on_method(&mut self, method: Method) -> Result<Outcome, ProtocolViolation> {
        let channel = self.id;
        if let Lifecycle::Closing(op) = self.lifecycle {
            return Ok(match method {
                Method::ChannelCloseOk(m) => {
                    debug!(channel, "channel closed");
                    Outcome::with(
                        Effects {
                            free: true,
                            ..Effects::default()
                        },
                        Some(Event::Completed {
                            op,
                            channel,
                            result: Ok(Reply::Method(m.into())),
                        }),
                    )
                }
                // Both sides closed at once; our close-ok still comes.
                Method::ChannelClose(_) => Outcome::with(
                    Effects {
                        reply: Some(ChannelCloseOk {}.into()),
                        ..Effects::default()
                    },
                    None,
                ),
                _ => Outcome::default(),
            });
        }
        if self.content.is_some() {
            return Err(ProtocolViolation::UnexpectedFrame {
                channel,
                what: "method frame while content was expected",
            });
        }
        let ids = (method.class_id(), method.method_id());
        let front_matches = self
            .pending
            .front()
            .is_some_and(|p| p.replies.contains(&ids));
        let confirming = self.next_publish_seq.is_some();
        Ok(match method {
            Method::ChannelClose(close) => {
                let reason = CloseReason::new(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                // The refusal of a request is that request's answer (a
                // passive declare's 404 is how "no such queue" is said):
                // its caller gets it as an error, so only a close that
                // answers nothing is worth a warning.
                if self.pending.is_empty() {
                    warn!(channel, code = reason.code, text = %reason.text, "server closed a channel");
                } else {
                    debug!(channel, code = reason.code, text = %reason.text, "server refused a request and closed its channel");
                }
                let pending = std::mem::take(&mut self.pending);
                Outcome::with(
                    Effects {
                        reply: Some(ChannelCloseOk {}.into()),
                        free: true,
                        failed: Some((
                            Unanswered {
                                first: [None, None],
                                pending: pending.into_iter(),
                            },
                            ChannelError::ClosedByServer(reason.clone()),
                        )),
                    },
                    Some(Event::ChannelClosed { channel, reason }),
                )
            }
            Method::BasicDeliver(m) => {
                self.delivered = self.delivered.max(m.delivery_tag);
                self.content = Some(Assembly::new(ContentMethod::Deliver(m), None));
                Outcome::default()
            }
            Method::BasicReturn(m) => {
                self.content = Some(Assembly::new(ContentMethod::Return(m), None));
                Outcome::default()
            }
            Method::BasicGetOk(m) if front_matches => {
                let op = self.pending.pop_front().map(|p| p.op);
                self.delivered = self.delivered.max(m.delivery_tag);
                self.content = Some(Assembly::new(ContentMethod::GetOk(m), op));
                Outcome::default()
            }
            Method::BasicAck(m) if confirming => {
                self.on_confirm(m.delivery_tag, m.multiple);
                Outcome::event(Event::Ack {
                    channel,
                    delivery_tag: m.delivery_tag,
                    multiple: m.multiple,
                })
            }
            Method::BasicNack(m) if confirming => {
                self.on_confirm(m.delivery_tag, m.multiple);
                Outcome::event(Event::Nack {
                    channel,
                    delivery_tag: m.delivery_tag,
                    multiple: m.multiple,
                })
            }
            Method::BasicCancel(m) => Outcome::with(
                Effects {
                    reply: (!m.no_wait).then(|| {
                        BasicCancelOk {
                            consumer_tag: m.consumer_tag.clone(),
                        }
                        .into()
                    }),
                    ..Effects::default()
                },
                Some(Event::ConsumerCancelled {
                    channel,
                    consumer_tag: m.consumer_tag,
                }),
            ),
            Method::ChannelFlow(m) => Outcome::with(
                Effects {
                    reply: Some(ChannelFlowOk { active: m.active }.into()),
                    ..Effects::default()
                },
                Some(Event::Flow {
                    channel,
                    active: m.active,
                }),
            ),
            method if front_matches => {
                let Some(p) = self.pending.pop_front() else {
                    return Ok(Outcome::default());
                };
                if let Method::ChannelOpenOk(_) = method {
                    self.lifecycle = Lifecycle::Open;
                }
                Outcome::event(Event::Completed {
                    op: p.op,
                    channel,
                    result: Ok(Reply::Method(method)),
                })
            }
            other => {
                return Err(ProtocolViolation::UnexpectedMethod {
                    channel,
                    method: other.name(),
                });
            }
        })
    }

    /// A content header frame on this channel.
    pub(crate) fn on_header(
        &mut self,
        properties: Box<BasicProperties>,
        body_size: u64,
        max_body_size: u64,
    ) -> Result<Outcome, ProtocolViolation> {
        if let Lifecycle::Closing(_) = self.lifecycle {
            return Ok(Outcome::default());
        }
        let Some(content) = &mut self.content else {
            return Err(ProtocolViolation::UnexpectedFrame {
                channel: self.id,
                what: "content header without a content method",
            });
        };
        let progress = content.on_header(self.id, properties, body_size, max_body_size)?;
        Ok(self.after(progress))
    }

    /// A content body frame on this channel.
    pub(crate) fn on_body(&mut self, piece: Bytes) -> Result<Outcome, ProtocolViolation> {
        if let Lifecycle::Closing(_) = self.lifecycle {
            return Ok(Outcome::default());
        }
        let Some(content) = &mut self.content else {
            return Err(ProtocolViolation::UnexpectedFrame {
                channel: self.id,
                what: "content body without a content header",
            });
        };
        let progress = content.on_body(self.id, piece)?;
        Ok(self.after(progress))
    }

    /// Hands a complete message out: to the `basic.get` waiting for it, or
    /// as a delivery.
    fn after(&mut self, progress: Progress) -> Outcome {
        if progress == Progress::Incomplete {
            return Outcome::default();
        }
        let Some((get_op, delivery)) = self.content.take().and_then(Assembly::finish) else {
            return Outcome::default();
        };
        let channel = self.id;
        Outcome::event(match get_op {
            Some(op) => Event::Completed {
                op,
                channel,
                result: Ok(Reply::Message(delivery)),
            },
            None => Event::Delivery { channel, delivery },
        })
    }
}

/// Allocated channels, numbered 1..=channel_max.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    map: HashMap<ChannelId, Channel>,
    /// Where the search for a free id starts: the lowest id freed since the
    /// last allocation, so ids are reused low-first without a full scan.
    hint: ChannelId,
}

impl Channels {
    pub(crate) fn allocate(&mut self, channel_max: u16) -> Option<ChannelId> {
        if self.map.len() >= usize::from(channel_max) {
            return None;
        }
        let start = self.hint.max(1);
        let id = (start..=channel_max)
            .chain(1..start)
            .find(|id| !self.map.contains_key(id))?;
        self.map.insert(id, Channel::new(id));
        self.hint = id.saturating_add(1);
        Some(id)
    }

    pub(crate) fn free(&mut self, id: ChannelId) -> Option<Channel> {
        let channel = self.map.remove(&id);
        if channel.is_some() {
            self.hint = self.hint.min(id);
        }
        channel
    }

    pub(crate) fn get(&self, id: ChannelId) -> Option<&Channel> {
        self.map.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.map.get_mut(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (ChannelId, Channel)> + '_ {
        self.hint = 1;
        self.map.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_allocated_low_first_and_reused() {
        let mut c = Channels::default();
        assert_eq!(c.allocate(3), Some(1));
        assert_eq!(c.allocate(3), Some(2));
        assert_eq!(c.allocate(3), Some(3));
        assert_eq!(c.allocate(3), None);
        assert!(c.free(2).is_some());
        assert_eq!(c.allocate(3), Some(2));
        assert!(c.free(1).is_some());
        assert!(c.free(3).is_some());
        assert_eq!(c.allocate(3), Some(1));
        assert_eq!(c.allocate(3), Some(3));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn unanswered_ops_are_the_get_in_progress_then_the_pending_ones() {
        let mut ch = Channel::new(1);
        ch.on_sent(&method::BasicGet::default().into(), Some(OpId(1)));
        ch.on_sent(&method::BasicQos::default().into(), Some(OpId(2)));
        let outcome = ch.on_method(method::BasicGetOk::default().into());
        assert!(matches!(outcome, Ok(Outcome { event: None, .. })));
        assert_eq!(ch.into_unanswered().collect::<Vec<_>>(), [OpId(1), OpId(2)]);
    }

    #[test]
    fn a_closing_channel_leaves_only_its_close_unanswered() {
        let mut ch = Channel::new(1);
        ch.on_sent(&method::BasicQos::default().into(), Some(OpId(1)));
        assert_eq!(ch.on_close_sent(OpId(2)).collect::<Vec<_>>(), [OpId(1)]);
        assert!(!ch.accepts_commands());
        assert_eq!(ch.into_unanswered().collect::<Vec<_>>(), [OpId(2)]);
    }

    fn qos(count: u16, global: bool) -> Method {
        method::BasicQos {
            prefetch_size: 0,
            prefetch_count: count,
            global,
        }
        .into()
    }

    fn deliver(ch: &mut Channel, tag: u64) {
        let deliver = method::BasicDeliver {
            delivery_tag: tag,
            ..Default::default()
        };
        assert!(ch.on_method(deliver.into()).is_ok());
        // The content that must follow: an empty body.
        let header = ch.on_header(Box::default(), 0, u64::MAX);
        assert!(matches!(header, Ok(Outcome { event: Some(_), .. })));
    }

    fn ack(tag: u64, multiple: bool) -> Method {
        method::BasicAck {
            delivery_tag: tag,
            multiple,
        }
        .into()
    }

    #[test]
    fn the_prefetch_is_the_smallest_count_sent_and_unknown_past_the_servers_default() {
        let mut ch = Channel::new(1);
        assert_eq!(ch.settling().2, None, "nothing sent");
        ch.on_sent(&qos(0, false), None);
        assert_eq!(ch.settling().2, Some(0), "no limit");
        ch.on_sent(&qos(300, false), None);
        ch.on_sent(&method::BasicConsume::default().into(), None);
        ch.on_sent(&qos(500, true), None);
        ch.on_sent(&qos(0, false), None);
        assert_eq!(ch.settling().2, Some(300), "the earlier consumer keeps 300");
        ch.on_sent(&qos(20, true), None);
        assert_eq!(ch.settling().2, Some(20));
        let bytes = method::BasicQos {
            prefetch_size: 1000,
            prefetch_count: 0,
            global: false,
        };
        ch.on_sent(&bytes.into(), None);
        assert_eq!(ch.settling().2, None, "a limit in bytes");
        ch.on_sent(&qos(10, false), None);
        assert_eq!(ch.settling().2, None, "stays unknown");

        let mut ch = Channel::new(1);
        ch.on_sent(&method::BasicConsume::default().into(), None);
        ch.on_sent(&qos(10, false), None);
        assert_eq!(
            ch.settling().2,
            None,
            "consuming under the server's default"
        );
    }

    #[test]
    fn settled_moves_only_through_settlements_in_order() {
        let mut ch = Channel::new(1);
        for tag in 1..=10 {
            deliver(&mut ch, tag);
        }
        assert_eq!(ch.settling(), (0, 10, None));
        ch.on_sent(&ack(1, false), None);
        ch.on_sent(&ack(3, false), None);
        assert_eq!(ch.settling().0, 1, "3 skips 2");
        ch.on_sent(&ack(2, false), None);
        assert_eq!(ch.settling().0, 2, "3 was before, and is not counted");
        ch.on_sent(&ack(5, true), None);
        assert_eq!(ch.settling().0, 5);
        let reject = method::BasicReject {
            delivery_tag: 6,
            requeue: true,
        };
        ch.on_sent(&reject.into(), None);
        assert_eq!(ch.settling().0, 6);
        let nack = method::BasicNack {
            delivery_tag: 8,
            multiple: true,
            requeue: false,
        };
        ch.on_sent(&nack.into(), None);
        assert_eq!(ch.settling().0, 8);
        ch.on_sent(&ack(0, true), None);
        assert_eq!(ch.settling().0, 10, "tag 0 with multiple: all delivered");
        ch.on_sent(&ack(4, true), None);
        assert_eq!(ch.settling().0, 10, "never back");
    }
}
