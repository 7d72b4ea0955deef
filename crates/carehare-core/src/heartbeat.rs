//! Heartbeat timers, driven entirely by the times the caller passes in.
//!
//! We declare the peer dead after `2 × interval` without reading anything.
//! We write a heartbeat when something is read and nothing was written for
//! `3/4 × interval` (it rides on a wakeup the read already caused), and at
//! the latest after `5/4 × interval` without writing (the timer). RabbitMQ
//! sends its own every `interval / 2`, so on a quiet connection ours goes
//! out with every second one of its: once per interval, and the timer
//! never fires. Sending once per interval, not with each of RabbitMQ's,
//! halves the heartbeats RabbitMQ has to read, which is what keeps a
//! broker with thousands of connections on a short heartbeat on time. The
//! timer's `5/4` only counts when the server has been silent for more than
//! `3/4` of an interval; RabbitMQ allows two to three intervals of silence,
//! and a server that sends nothing still hears from us well within the
//! spec's two. Heartbeats go on while a close waits for its `close-ok`: the
//! server's monitor runs until then.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    interval: Duration,
    last_read: Instant,
    last_write: Instant,
}

impl Heartbeat {
    /// `interval` of zero disables both timers.
    pub(crate) fn new(interval_secs: u16, now: Instant) -> Self {
        Self {
            interval: Duration::from_secs(u64::from(interval_secs)),
            last_read: now,
            last_write: now,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    pub(crate) fn on_read(&mut self, now: Instant) {
        self.last_read = self.last_read.max(now);
    }

    pub(crate) fn on_write(&mut self, now: Instant) {
        self.last_write = self.last_write.max(now);
    }

    pub(crate) fn dead_after(&self) -> Duration {
        self.interval * 2
    }

    pub(crate) fn send_deadline(&self) -> Option<Instant> {
        self.enabled()
            .then(|| self.last_write + self.interval * 5 / 4)
    }

    /// Whether a read at `now` should take a heartbeat along: nothing
    /// written for three quarters of an interval. With the server's
    /// heartbeats every half interval, that is every second one of them.
    pub(crate) fn send_with_read(&self, now: Instant) -> bool {
        self.enabled() && now >= self.last_write + self.interval * 3 / 4
    }

    pub(crate) fn dead_deadline(&self) -> Option<Instant> {
        self.enabled().then(|| self.last_read + self.dead_after())
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (self.send_deadline(), self.dead_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        }
    }

    pub(crate) fn is_dead(&self, now: Instant) -> bool {
        self.dead_deadline().is_some_and(|d| now >= d)
    }

    pub(crate) fn should_send(&self, now: Instant) -> bool {
        self.send_deadline().is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(10, t0);
        assert_eq!(hb.send_deadline(), Some(t0 + Duration::from_millis(12_500)));
        assert!(!hb.send_with_read(t0 + Duration::from_millis(7_499)));
        assert!(hb.send_with_read(t0 + Duration::from_millis(7_500)));
        assert_eq!(hb.dead_deadline(), Some(t0 + Duration::from_secs(20)));
        assert!(!hb.should_send(t0 + Duration::from_millis(12_499)));
        assert!(hb.should_send(t0 + Duration::from_millis(12_500)));
        hb.on_read(t0 + Duration::from_secs(15));
        assert!(!hb.is_dead(t0 + Duration::from_secs(34)));
        assert!(hb.is_dead(t0 + Duration::from_secs(35)));
        // Time passed in out of order never moves a timer back.
        hb.on_read(t0);
        assert!(!hb.is_dead(t0 + Duration::from_secs(34)));
    }

    #[test]
    fn zero_disables() {
        let hb = Heartbeat::new(0, Instant::now());
        assert_eq!(hb.next_deadline(), None);
        assert!(!hb.send_with_read(Instant::now() + Duration::from_secs(1_000_000)));
        assert!(!hb.is_dead(Instant::now() + Duration::from_secs(1_000_000)));
    }
}
