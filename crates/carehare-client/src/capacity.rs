//! Giving back the room a backlog took.
//!
//! An outage fills the queues of unsettled publishes up to the publisher's
//! window (10,000 entries is a common choice); once they drain, a deque
//! would keep that capacity for the connection's life, and the allocator
//! its pages. Each queue that can carry such a backlog calls
//! [`shrink_sparse`] after it drains, so memory after an outage returns to
//! what steady traffic needs.

use std::collections::VecDeque;

/// Capacity kept whatever the length: steady traffic never reallocates.
const KEEP: usize = 1024;

/// Shrinks `queue` to twice its length (at least [`KEEP`]) once it holds
/// less than a quarter of its capacity. Growing back to the old size takes
/// as many pushes as the shrink copied, so the copying stays amortised.
pub(crate) fn shrink_sparse<T>(queue: &mut VecDeque<T>) {
    let capacity = queue.capacity();
    if capacity > KEEP && queue.len() < capacity / 4 {
        queue.shrink_to((queue.len() * 2).max(KEEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_backlog_gives_its_room_back() {
        let mut q: VecDeque<u64> = (0..10_000).collect();
        assert!(q.capacity() >= 10_000);
        q.drain(..9_990);
        shrink_sparse(&mut q);
        assert!(q.capacity() < 2 * KEEP, "capacity {}", q.capacity());
        assert_eq!(
            q.iter().copied().collect::<Vec<_>>(),
            (9_990..10_000).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_busy_queue_keeps_its_room() {
        let mut q: VecDeque<u64> = (0..10_000).collect();
        let capacity = q.capacity();
        q.drain(..6_000);
        shrink_sparse(&mut q);
        assert_eq!(q.capacity(), capacity, "still a quarter full or more");
        let mut small: VecDeque<u64> = VecDeque::with_capacity(KEEP);
        shrink_sparse(&mut small);
        assert_eq!(
            small.capacity(),
            KEEP,
            "the first KEEP entries are never given back"
        );
    }
}
