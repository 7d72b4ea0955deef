//! The in-memory side: per-channel buffers, waiting receivers, local group
//! membership, and local expiry (Python's `MultiQueue`).
//!
//! Memory is bounded by construction: every buffered message holds one of
//! `local_capacity` semaphore permits (taken by the reader before it pulls
//! a message from RabbitMQ), and a message sits at most once in each
//! channel's buffer, so no buffer holds more than `local_capacity`
//! messages. A message sent to a group with several local channels is
//! shared ([`Arc`]) and counts once; it is acked when the last channel
//! drops it (delivered or expired).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use carehare_tokio::{DeliveryTag, RecoveringConsumer};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;

/// One message from RabbitMQ, waiting in one or more channel buffers.
/// Dropping the last reference acks it and frees its permit.
pub(crate) struct Delivery {
    /// The message, without its recipient key (a msgpack map).
    pub(crate) body: Bytes,
    /// When it arrived, for local expiry.
    pub(crate) at: Instant,
    ack: Option<(Arc<RecoveringConsumer<String>>, DeliveryTag)>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Delivery {
    pub(crate) fn new(
        body: Bytes,
        ack: Option<(Arc<RecoveringConsumer<String>>, DeliveryTag)>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            body,
            at: Instant::now(),
            ack,
            _permit: permit,
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // A no-op for a message of a lost connection: RabbitMQ deleted
        // (exclusive queue) or requeued it already.
        if let Some((consumer, tag)) = self.ack.take() {
            consumer.ack(tag);
        }
    }
}

type Waiter = (u64, oneshot::Sender<Arc<Delivery>>);

#[derive(Default)]
struct ChannelQueue {
    messages: VecDeque<Arc<Delivery>>,
    /// Pending `receive`s, first come first served.
    waiters: VecDeque<Waiter>,
}

impl ChannelQueue {
    fn unused(&self) -> bool {
        self.messages.is_empty() && self.waiters.is_empty()
    }

    /// Hands buffered messages to waiting receivers.
    fn dispatch(&mut self) {
        while !self.messages.is_empty() {
            let Some((_, tx)) = self.waiters.pop_front() else {
                return;
            };
            if let Some(message) = self.messages.pop_front()
                && let Err(message) = tx.send(message)
            {
                // That receiver is gone: keep the message for the next.
                self.messages.push_front(message);
            }
        }
    }
}

/// Local state, behind the layer's mutex.
#[derive(Default)]
pub(crate) struct Local {
    channels: HashMap<String, ChannelQueue>,
    /// Group name to this layer's channels in it.
    groups: HashMap<String, HashSet<String>>,
    pub(crate) closed: bool,
    next_waiter: u64,
    last_expiry_warning: Option<Instant>,
    pub(crate) last_backpressure_warning: Option<Instant>,
}

impl Local {
    /// Queues `delivery` for each of `channels` (none: it is acked now).
    pub(crate) fn put(&mut self, channels: impl IntoIterator<Item = String>, delivery: Delivery) {
        if self.closed {
            return;
        }
        let delivery = Arc::new(delivery);
        for channel in channels {
            let queue = self.channels.entry(channel).or_default();
            queue.messages.push_back(delivery.clone());
            queue.dispatch();
        }
    }

    /// The local channels in `group`.
    pub(crate) fn members(&self, group: &str) -> Vec<String> {
        self.groups
            .get(group)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The groups with at least one local channel.
    pub(crate) fn groups(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Adds `channel` to `group`; true if the group was new here (0 → 1).
    pub(crate) fn group_add(&mut self, group: &str, channel: &str) -> bool {
        let members = self.groups.entry(group.to_string()).or_default();
        members.insert(channel.to_string()) && members.len() == 1
    }

    /// Removes `channel` from `group`; true if the group is now empty
    /// here (1 → 0).
    pub(crate) fn group_discard(&mut self, group: &str, channel: &str) -> bool {
        let Some(members) = self.groups.get_mut(group) else {
            return false;
        };
        if !members.remove(channel) {
            return false;
        }
        if members.is_empty() {
            self.groups.remove(group);
            return true;
        }
        false
    }

    /// A buffered message for `channel`, or a waiter registration.
    pub(crate) fn take_or_wait(
        &mut self,
        channel: &str,
    ) -> Result<Arc<Delivery>, (u64, oneshot::Receiver<Arc<Delivery>>)> {
        if let Some(queue) = self.channels.get_mut(channel)
            && let Some(message) = queue.messages.pop_front()
        {
            if queue.unused() {
                self.channels.remove(channel);
            }
            return Ok(message);
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        let (tx, rx) = oneshot::channel();
        self.channels
            .entry(channel.to_string())
            .or_default()
            .waiters
            .push_back((id, tx));
        Err((id, rx))
    }

    /// Forgets waiter `id`; a message it was handed but never took goes
    /// back to the front of the buffer.
    pub(crate) fn cancel_waiter(
        &mut self,
        channel: &str,
        id: u64,
        leftover: Option<Arc<Delivery>>,
    ) {
        let Some(queue) = self.channels.get_mut(channel) else {
            return;
        };
        queue.waiters.retain(|(w, _)| *w != id);
        if let Some(message) = leftover {
            queue.messages.push_front(message);
            queue.dispatch();
        }
        if queue.unused() {
            self.channels.remove(channel);
        }
    }

    /// Drops messages older than `expiry`; returns how many were dropped
    /// and when the next one expires.
    pub(crate) fn expire(&mut self, now: Instant, expiry: Duration) -> (Expired, Option<Instant>) {
        let mut expired = Expired::default();
        let mut next: Option<Instant> = None;
        self.channels.retain(|name, queue| {
            let mut dropped = 0;
            while let Some(front) = queue.messages.front() {
                // Too far in the future to represent: never expires.
                let Some(deadline) = front.at.checked_add(expiry) else {
                    break;
                };
                if deadline <= now {
                    queue.messages.pop_front();
                    dropped += 1;
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    break;
                }
            }
            if dropped > 0 {
                expired.by_channel.push((name.clone(), dropped));
            }
            !queue.unused()
        });
        (expired, next)
    }

    /// Whether to log an expiry warning now (at most one per `interval`).
    pub(crate) fn should_warn_expiry(&mut self, now: Instant, interval: Duration) -> bool {
        rate_limit(&mut self.last_expiry_warning, now, interval)
    }

    /// The three biggest buffers, for warnings: `name (count), ...`.
    pub(crate) fn biggest_queues(&self) -> String {
        let mut sizes: Vec<(&str, usize)> = self
            .channels
            .iter()
            .map(|(name, q)| (name.as_str(), q.messages.len()))
            .collect();
        sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
        sizes
            .iter()
            .take(3)
            .map(|(name, n)| format!("{name} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Ends every pending receive (their senders go) and drops every
    /// buffered message.
    pub(crate) fn close(&mut self) -> HashMap<String, ChannelQueueDrop> {
        self.closed = true;
        self.groups.clear();
        std::mem::take(&mut self.channels)
            .into_iter()
            .map(|(k, v)| (k, ChannelQueueDrop(v)))
            .collect()
    }
}

/// What one [`Local::expire`] dropped, by channel.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    by_channel: Vec<(String, usize)>,
}

impl Expired {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_channel.is_empty()
    }

    /// Messages dropped in all.
    pub(crate) fn count(&self) -> usize {
        self.by_channel.iter().map(|(_, n)| n).sum()
    }
}

/// The three channels that lost the most, for the warning:
/// `name (count), ...`, and how many others.
impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sizes: Vec<&(String, usize)> = self.by_channel.iter().collect();
        sizes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (i, (name, n)) in sizes.iter().take(3).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} ({n})")?;
        }
        if sizes.len() > 3 {
            write!(f, " and {} more", sizes.len() - 3)?;
        }
        Ok(())
    }
}

/// Buffers taken out by [`Local::close`], to be dropped outside the lock.
pub(crate) struct ChannelQueueDrop(#[allow(dead_code)] ChannelQueue);

/// True (and records `now`) if nothing was logged within `interval`.
pub(crate) fn rate_limit(last: &mut Option<Instant>, now: Instant, interval: Duration) -> bool {
    match last {
        Some(t) if now.saturating_duration_since(*t) < interval => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body: &'static [u8]) -> Delivery {
        Delivery::new(Bytes::from_static(body), None, None)
    }

    #[tokio::test]
    async fn buffers_then_waiters_fifo() {
        let mut local = Local::default();
        local.put(["q!a".to_string()], delivery(b"1"));
        let Ok(m) = local.take_or_wait("q!a") else {
            panic!("buffered")
        };
        assert_eq!(&m.body[..], b"1");
        let Err((id1, rx1)) = local.take_or_wait("q!a") else {
            panic!("waits")
        };
        let Err((_id2, rx2)) = local.take_or_wait("q!a") else {
            panic!("waits")
        };
        // The first receiver went away without cancelling: the message
        // goes to the second.
        drop(rx1);
        local.put(["q!a".to_string()], delivery(b"2"));
        assert_eq!(&rx2.await.expect("delivered").body[..], b"2");
        local.cancel_waiter("q!a", id1, None);
        assert!(local.channels.is_empty());
    }

    #[tokio::test]
    async fn cancelled_waiter_gives_message_back() {
        let mut local = Local::default();
        let Err((id, mut rx)) = local.take_or_wait("q!a") else {
            panic!("waits")
        };
        local.put(["q!a".to_string()], delivery(b"1"));
        let leftover = rx.try_recv().ok();
        assert!(leftover.is_some());
        local.cancel_waiter("q!a", id, leftover);
        assert!(local.take_or_wait("q!a").is_ok());
        assert!(local.channels.is_empty());
    }

    #[tokio::test]
    async fn groups_count_transitions() {
        let mut local = Local::default();
        assert!(local.group_add("g", "q!a"));
        assert!(!local.group_add("g", "q!b"));
        assert!(!local.group_add("g", "q!b"));
        assert!(!local.group_discard("g", "q!a"));
        assert!(!local.group_discard("g", "q!a"));
        assert!(local.group_discard("g", "q!b"));
        assert!(!local.group_discard("g", "q!b"));
        assert!(local.groups().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_drops_old_messages() {
        let mut local = Local::default();
        local.put(["q!a".to_string(), "q!b".to_string()], delivery(b"1"));
        tokio::time::advance(Duration::from_secs(2)).await;
        local.put(["q!a".to_string()], delivery(b"2"));
        let (expired, next) = local.expire(Instant::now(), Duration::from_secs(3));
        assert!(expired.is_empty());
        assert_eq!(expired.count(), 0);
        assert!(next.is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        let (expired, _) = local.expire(Instant::now(), Duration::from_secs(3));
        assert_eq!(expired.count(), 2);
        assert_eq!(local.biggest_queues(), "q!a (1)");
        // The warning names the channels that lost messages, even those
        // that are empty now.
        let said = expired.to_string();
        assert!(
            said == "q!a (1), q!b (1)" || said == "q!b (1), q!a (1)",
            "{said}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_expiry_warning_names_the_three_biggest_losers() {
        let mut local = Local::default();
        for (channel, n) in [("q!a", 1), ("q!b", 4), ("q!c", 2), ("q!d", 3), ("q!e", 1)] {
            for _ in 0..n {
                local.put([channel.to_string()], delivery(b"x"));
            }
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let (expired, next) = local.expire(Instant::now(), Duration::from_secs(3));
        assert_eq!(expired.count(), 11);
        assert_eq!(next, None);
        assert_eq!(expired.to_string(), "q!b (4), q!d (3), q!c (2) and 2 more");
        assert_eq!(local.biggest_queues(), "", "everything went");
    }
}
