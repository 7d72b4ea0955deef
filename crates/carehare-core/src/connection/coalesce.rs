//! Holding publishes back while RabbitMQ is still busy with earlier ones,
//! so that they leave in fewer, larger writes.
//!
//! A publisher with a deep confirm window keeps RabbitMQ's pipeline full.
//! Each confirm that comes back lets a few more publishes go, and written
//! at once they go out a few at a time: a write, and a wakeup of
//! RabbitMQ's reader, for every handful of messages. Every write costs
//! both sides a system call and a wakeup whatever its size, so while
//! RabbitMQ has plenty of this channel's publishes left to work through,
//! a few more can wait for the next ones without slowing anything down.
//!
//! The rule: [`poll_transmit`](crate::Connection::poll_transmit) holds the
//! queued bytes back while
//! - everything queued since the last hand-out is publishes on one channel
//!   (anything else queued, an ack, a heartbeat, a reply or a close, ends
//!   the hold at once, so only publishes ever wait);
//! - they come to fewer than `max_bytes` bytes;
//! - at least `min_unconfirmed` publishes already written on that channel
//!   wait for their confirms (RabbitMQ has that many to go through first);
//! - and for at most `max_delay` from the first time it held them.
//!
//! A hold ends as soon as one of these stops being true, which is checked
//! at every `poll_transmit`: each confirm that comes in, and each command,
//! can end it. A publisher with a window below `min_unconfirmed`, or one
//! that waits for each confirm, is never held. With the window full, how
//! long a message takes from publish to confirm stays the same: it waits
//! here instead of in RabbitMQ's queue, behind the same publishes.
//!
//! Invariants:
//! - `since` is set exactly while a hold is under way: from the first
//!   `poll_transmit` that held back bytes to the next one that hands them
//!   out. The hold ends at `since + max_delay` at the latest, which
//!   [`poll_timeout`](crate::Connection::poll_timeout) reports.

use std::time::{Duration, Instant};

use crate::types::ChannelId;

/// When [`Connection::poll_transmit`](crate::Connection::poll_transmit)
/// holds publishes back so that they leave in fewer, larger writes (see
/// [`ConnectionConfig::coalescing`](crate::ConnectionConfig::coalescing)).
///
/// Only publishes on a channel in confirm mode are ever held, and only
/// while at least `min_unconfirmed` of the channel's written publishes
/// wait for their confirms: anything else queued is written at once.
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
    /// per ten to twenty.
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
}

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
    /// `now`. `unconfirmed` gives a channel's publishes awaiting their
    /// confirm, written or still queued.
    pub(super) fn holds(
        &self,
        now: Instant,
        queued: Queued,
        len: usize,
        unconfirmed: impl FnOnce(ChannelId) -> u64,
    ) -> bool {
        let Some(c) = &self.config else {
            return false;
        };
        let Queued::Publishes { channel, count } = queued else {
            return false;
        };
        len < c.max_bytes
            && self.since.is_none_or(|since| now < since + c.max_delay)
            && unconfirmed(channel).saturating_sub(count) >= c.min_unconfirmed
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
        assert!(c.holds(now, q, 50, |_| 12));
        assert!(!c.holds(now, q, 50, |_| 11), "only 9 written");
        assert!(!c.holds(now, q, 100, |_| 12), "max_bytes reached");
        assert!(!c.holds(now, Queued::Nothing, 0, |_| 12));
        assert!(!c.holds(now, Queued::Other, 50, |_| 12));
        assert_eq!(q.and_publish(2), Queued::Other, "two channels");
        assert!(!Coalescer::new(None).holds(now, q, 50, |_| 1000));
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
        assert!(c.holds(now + Duration::from_micros(999), q, 50, |_| 100));
        assert!(!c.holds(now + Duration::from_millis(1), q, 50, |_| 100));
        c.released();
        assert_eq!(c.deadline(), None);
    }
}
