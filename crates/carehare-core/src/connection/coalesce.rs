//! Holding publishes and acks back while RabbitMQ is still busy with
//! earlier ones, so that they leave in fewer, larger writes.
//!
//! A publisher with a deep confirm window keeps RabbitMQ's pipeline full.
//! Each confirm that comes back lets a few more publishes go, and written
//! at once they go out a few at a time: a write, and a wakeup of
//! RabbitMQ's reader, for every handful of messages. A consumer with a deep
//! prefetch is the same the other way: each batch of deliveries read lets
//! it ack a few. Every write costs both sides a system call and a wakeup
//! whatever its size, so while RabbitMQ has plenty left to work through,
//! a few more can wait for the next ones without slowing anything down.
//!
//! The rule: [`poll_transmit`](crate::Connection::poll_transmit) holds the
//! queued bytes back while
//! - everything queued since the last hand-out is publishes on one
//!   channel, or settlements (acks, nacks, rejects) on one channel
//!   (anything else queued, a heartbeat, a reply or a close, ends the hold
//!   at once, so only these two ever wait);
//! - they come to fewer than `max_bytes` bytes;
//! - for publishes: at least `min_unconfirmed` publishes already written on
//!   that channel wait for their confirms (RabbitMQ has that many to go
//!   through first);
//! - for settlements: the deliveries not yet settled by what was written
//!   are fewer than a quarter of the channel's prefetch, where the
//!   prefetch is known from our own `basic.qos` (a channel whose limit
//!   can't be known is never held). RabbitMQ stops delivering when the
//!   prefetch is used up, counting what is on its way to us too; with
//!   large messages that can be much of it, and holding acks until half
//!   the prefetch was unsettled made RabbitMQ pause and the consumer wake
//!   more often;
//! - and for at most `max_delay` from the first time it held them.
//!
//! A hold ends as soon as one of these stops being true, which is checked
//! at every `poll_transmit`: each confirm or delivery that comes in, and
//! each command, can end it. A publisher with a window below
//! `min_unconfirmed`, or one that waits for each confirm, is never held,
//! nor is a consumer with a prefetch of 1 or one that acks each message
//! before the next can come. With the window full, how long a message
//! takes from publish to confirm stays the same: it waits here instead of
//! in RabbitMQ's queue, behind the same publishes.
//!
//! While publishes are held, more input is not urgent either: RabbitMQ
//! owes the confirms of everything written, and until enough of them come
//! there is nothing to write. [`read_low_water`] says how many bytes can
//! pile up before they are worth a wakeup: the ack frames in which
//! RabbitMQ confirms half of the written publishes above
//! `min_unconfirmed`, at the most publishes one of its ack frames has
//! confirmed lately. A driver that sets its socket's receive low-water
//! mark to it (`SO_RCVLOWAT`) is woken once per many confirms instead of
//! for each frame. Should RabbitMQ confirm in larger frames than that, the
//! wakeup comes later but no later than the hold's end, when the mark is
//! back to 1; and it is 1 whenever nothing is held.
//!
//! A hold counts from the latest time an input gave the core (commands
//! take none): bytes queued long after the last input find their hold
//! over as it begins, and go at once. After a quiet spell nothing else is
//! likely to come within `max_delay` to join them, so that is no loss.
//!
//! [`read_low_water`]: crate::Connection::read_low_water
//!
//! Invariants:
//! - `since` is set exactly while a hold is under way: from the first
//!   `poll_transmit` that held back bytes to the next one that hands them
//!   out. The hold ends at `since + max_delay` at the latest, which
//!   [`poll_timeout`](crate::Connection::poll_timeout) reports.

use std::time::{Duration, Instant};

use crate::types::ChannelId;

/// When [`Connection::poll_transmit`](crate::Connection::poll_transmit)
/// holds publishes and acks back so that they leave in fewer, larger
/// writes (see
/// [`ConnectionConfig::coalescing`](crate::ConnectionConfig::coalescing)).
///
/// Only publishes on a channel in confirm mode are ever held, and only
/// while at least `min_unconfirmed` of the channel's written publishes
/// wait for their confirms; and acks, nacks and rejects, only while the
/// channel's deliveries that what was written leaves unsettled are fewer
/// than a quarter of the prefetch its `basic.qos` set. Anything else
/// queued is written at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coalescing {
    /// Hold only while at least this many publishes already written on the
    /// channel wait for their confirms.
    pub min_unconfirmed: u64,
    /// Write once this many bytes are queued.
    pub max_bytes: usize,
    /// Hold for at most this long.
    pub max_delay: Duration,
}

impl Default for Coalescing {
    /// Hold while 256 written publishes are unconfirmed, up to 64 KiB or
    /// 10 ms. A hold ends as soon as a confirm leaves fewer than 256
    /// unconfirmed, so RabbitMQ is never left without work by it; the
    /// delay only bounds a hold that no confirm ends (RabbitMQ waiting for
    /// a disk or for its quorum). Under a steady stream of small messages
    /// with a window of 1,000 this writes once per several hundred
    /// publishes, where writing what each confirm lets through wrote once
    /// per ten to twenty. A consumer's acks wait likewise until a quarter of
    /// its prefetch is unsettled.
    fn default() -> Self {
        Self {
            min_unconfirmed: 256,
            max_bytes: 64 * 1024,
            max_delay: Duration::from_millis(10),
        }
    }
}

/// What the write queue holds since it was last handed out, as far as
/// holding it back goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queued {
    Nothing,
    /// Only these publishes, all on one channel.
    Publishes {
        channel: ChannelId,
        count: u64,
    },
    /// Only acks, nacks and rejects, all on one channel, queued since
    /// every delivery through tag `settled` was settled by written bytes.
    Settles {
        channel: ChannelId,
        settled: u64,
    },
    /// Something that must not wait.
    Other,
}

impl Queued {
    /// The queue after one more publish on `channel`.
    pub(super) fn and_publish(self, channel: ChannelId) -> Self {
        match self {
            Queued::Nothing => Queued::Publishes { channel, count: 1 },
            Queued::Publishes { channel: c, count } if c == channel => Queued::Publishes {
                channel,
                count: count + 1,
            },
            _ => Queued::Other,
        }
    }

    /// The queue after one more settlement on `channel`, which had every
    /// delivery through `settled` settled before it.
    pub(super) fn and_settle(self, channel: ChannelId, settled: u64) -> Self {
        match self {
            Queued::Nothing => Queued::Settles { channel, settled },
            Queued::Settles { channel: c, .. } if c == channel => self,
            _ => Queued::Other,
        }
    }
}

/// A channel's state, as far as holding its queued bytes back goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ChannelView {
    /// Publishes awaiting their confirm, written or still queued.
    pub(super) unconfirmed: u64,
    /// The highest delivery tag received.
    pub(super) delivered: u64,
    /// The server's limit on unacked deliveries: `None` when not known,
    /// `Some(0)` for none.
    pub(super) prefetch: Option<u16>,
    /// The most publishes one ack or nack frame confirmed lately; 0 before
    /// the first.
    pub(super) confirm_batch: u64,
}

/// The bytes of one `basic.ack` or `basic.nack` frame: header 7, class
/// and method 4, tag 8, flags 1, end 1.
const ACK_FRAME_LEN: u64 = 21;
/// The highest read low-water mark: far below a socket's receive buffer,
/// which Linux grows (and clamps the receive window to) for a larger one.
pub(super) const MAX_READ_LOW_WATER: usize = 8 * 1024;

#[derive(Debug)]
pub(super) struct Coalescer {
    config: Option<Coalescing>,
    since: Option<Instant>,
}

impl Coalescer {
    pub(super) fn new(config: Option<Coalescing>) -> Self {
        Self {
            config,
            since: None,
        }
    }

    /// Whether bytes queued as `queued`, `len` in all, are held back at
    /// `now`; `channel` tells how a channel stands.
    pub(super) fn holds(
        &self,
        now: Instant,
        queued: Queued,
        len: usize,
        channel: impl FnOnce(ChannelId) -> ChannelView,
    ) -> bool {
        let Some(c) = &self.config else {
            return false;
        };
        if len >= c.max_bytes || self.since.is_some_and(|since| now >= since + c.max_delay) {
            return false;
        }
        match queued {
            Queued::Publishes { channel: id, count } => {
                channel(id).unconfirmed.saturating_sub(count) >= c.min_unconfirmed
            }
            Queued::Settles {
                channel: id,
                settled,
            } => {
                let view = channel(id);
                match view.prefetch {
                    None => false,
                    // No limit: RabbitMQ never waits for our acks.
                    Some(0) => true,
                    Some(limit) => view.delivered.saturating_sub(settled) < u64::from(limit / 4),
                }
            }
            Queued::Nothing | Queued::Other => false,
        }
    }

    /// How many bytes of input are worth a wakeup while the queue is held
    /// as `queued` (see the top): at least 1, and 1 unless publishes are
    /// held. A power of two, so that it changes seldom.
    pub(super) fn read_low_water(
        &self,
        queued: Queued,
        channel: impl FnOnce(ChannelId) -> ChannelView,
    ) -> usize {
        let (Some(c), Some(_), Queued::Publishes { channel: id, count }) =
            (&self.config, self.since, queued)
        else {
            return 1;
        };
        let view = channel(id);
        if view.confirm_batch == 0 {
            return 1;
        }
        let written = view.unconfirmed.saturating_sub(count);
        let frames = written.saturating_sub(c.min_unconfirmed) / 2 / view.confirm_batch;
        let bytes = usize::try_from(frames.saturating_mul(ACK_FRAME_LEN))
            .unwrap_or(MAX_READ_LOW_WATER)
            .clamp(1, MAX_READ_LOW_WATER);
        // The largest power of two not above it.
        1 << bytes.ilog2()
    }

    /// `poll_transmit` held the queue back at `now`.
    pub(super) fn held(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// `poll_transmit` handed the queue out (or had nothing).
    pub(super) fn released(&mut self) {
        self.since = None;
    }

    /// Whether a hold is under way.
    pub(super) fn holding(&self) -> bool {
        self.since.is_some()
    }

    /// When the hold under way ends at the latest.
    pub(super) fn deadline(&self) -> Option<Instant> {
        Some(self.since? + self.config?.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Coalescer {
        Coalescer::new(Some(Coalescing {
            min_unconfirmed: 10,
            max_bytes: 100,
            max_delay: Duration::from_millis(1),
        }))
    }

    fn unconfirmed(n: u64) -> impl FnOnce(ChannelId) -> ChannelView {
        move |_| ChannelView {
            unconfirmed: n,
            ..ChannelView::default()
        }
    }

    fn delivered(n: u64, prefetch: Option<u16>) -> impl FnOnce(ChannelId) -> ChannelView {
        move |_| ChannelView {
            delivered: n,
            prefetch,
            ..ChannelView::default()
        }
    }

    #[test]
    fn holds_only_publishes_on_one_channel_behind_enough_written_ones() {
        let now = Instant::now();
        let c = on();
        let q = Queued::Nothing.and_publish(1).and_publish(1);
        assert_eq!(
            q,
            Queued::Publishes {
                channel: 1,
                count: 2
            }
        );
        // 12 unconfirmed, of which 2 are the queued ones: 10 written.
        assert!(c.holds(now, q, 50, unconfirmed(12)));
        assert!(!c.holds(now, q, 50, unconfirmed(11)), "only 9 written");
        assert!(!c.holds(now, q, 100, unconfirmed(12)), "max_bytes reached");
        assert!(!c.holds(now, Queued::Nothing, 0, unconfirmed(12)));
        assert!(!c.holds(now, Queued::Other, 50, unconfirmed(12)));
        assert_eq!(q.and_publish(2), Queued::Other, "two channels");
        assert_eq!(q.and_settle(1, 0), Queued::Other, "a publish and an ack");
        assert!(!Coalescer::new(None).holds(now, q, 50, unconfirmed(1000)));
    }

    #[test]
    fn holds_settlements_while_under_a_quarter_of_the_prefetch_is_unsettled() {
        let now = Instant::now();
        let c = on();
        // Everything through tag 100 was settled by written bytes.
        let q = Queued::Nothing.and_settle(1, 100).and_settle(1, 130);
        assert_eq!(
            q,
            Queued::Settles {
                channel: 1,
                settled: 100
            },
            "counted from the first settlement queued"
        );
        assert!(c.holds(now, q, 50, delivered(249, Some(600))), "149 < 150");
        assert!(
            !c.holds(now, q, 50, delivered(250, Some(600))),
            "150 unsettled"
        );
        assert!(
            !c.holds(now, q, 100, delivered(101, Some(600))),
            "max_bytes"
        );
        assert!(
            !c.holds(now, q, 50, delivered(101, None)),
            "prefetch unknown"
        );
        assert!(!c.holds(now, q, 50, delivered(101, Some(7))), "prefetch 7");
        assert!(c.holds(now, q, 50, delivered(100_000, Some(0))), "no limit");
        assert_eq!(q.and_settle(2, 0), Queued::Other, "two channels");
        assert_eq!(q.and_publish(1), Queued::Other, "an ack and a publish");
        assert!(!Coalescer::new(None).holds(now, q, 50, delivered(101, Some(600))));
    }

    #[test]
    fn a_hold_ends_after_max_delay() {
        let now = Instant::now();
        let mut c = on();
        let q = Queued::Nothing.and_publish(1);
        assert_eq!(c.deadline(), None);
        c.held(now);
        c.held(now + Duration::from_micros(500)); // keeps the first time
        assert_eq!(c.deadline(), Some(now + Duration::from_millis(1)));
        assert!(c.holds(now + Duration::from_micros(999), q, 50, unconfirmed(100)));
        assert!(!c.holds(now + Duration::from_millis(1), q, 50, unconfirmed(100)));
        let acks = Queued::Nothing.and_settle(1, 0);
        assert!(c.holds(
            now + Duration::from_micros(999),
            acks,
            50,
            delivered(1, Some(0))
        ));
        assert!(!c.holds(
            now + Duration::from_millis(1),
            acks,
            50,
            delivered(1, Some(0))
        ));
        c.released();
        assert_eq!(c.deadline(), None);
    }
}
