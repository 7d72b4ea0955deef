//! Per-channel state: lifecycle, pending replies and message assembly.

use std::collections::VecDeque;

// Keys are channel ids we allocate: no need for SipHash's DoS resistance.
use rustc_hash::FxHashMap as HashMap;

use bytes::{Bytes, BytesMut};

use crate::event::{ContentMethod, Delivery};
use crate::properties::BasicProperties;
use crate::types::{ChannelId, OpId};

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// `channel.open` sent.
    Opening,
    /// `open-ok` received.
    Open,
    /// We sent `channel.close`; everything but `close`/`close-ok` is dropped.
    Closing(OpId),
}

/// A command waiting for its reply. Replies on one channel come in the
/// order the commands were sent.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) op: OpId,
    pub(crate) replies: &'static [(u16, u16)],
}

/// A message whose method has arrived and whose content is still coming.
#[derive(Debug)]
pub(crate) struct Assembly {
    pub(crate) method: ContentMethod,
    /// Set for `basic.get-ok`: the op its message completes.
    pub(crate) get_op: Option<OpId>,
    pub(crate) header: Option<(BasicProperties, u64)>,
    pub(crate) body: Body,
}

/// Body bytes so far. One frame's worth stays a zero-copy slice; only a body
/// split over several frames is copied into one buffer.
#[derive(Debug, Default)]
pub(crate) enum Body {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len() as u64,
            Body::Many(b) => b.len() as u64,
        }
    }

    pub(crate) fn push(&mut self, piece: Bytes) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::One(piece),
            Body::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + piece.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&piece);
                Body::Many(all)
            }
            Body::Many(mut all) => {
                all.extend_from_slice(&piece);
                Body::Many(all)
            }
        }
    }

    pub(crate) fn freeze(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(b) => b.freeze(),
        }
    }
}

impl Assembly {
    pub(crate) fn into_delivery(self, properties: BasicProperties) -> Delivery {
        Delivery {
            method: self.method,
            properties,
            body: self.body.freeze(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) lifecycle: Lifecycle,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) content: Option<Assembly>,
    /// Next publish sequence number once `confirm.select` was sent.
    pub(crate) next_publish_seq: Option<u64>,
}

impl Channel {
    fn new() -> Self {
        Self {
            lifecycle: Lifecycle::Opening,
            pending: VecDeque::new(),
            content: None,
            next_publish_seq: None,
        }
    }

    /// Whether commands may be sent on it.
    pub(crate) fn accepts_commands(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Opening | Lifecycle::Open)
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
        self.map.insert(id, Channel::new());
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

    pub(crate) fn get_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.map.get_mut(&id)
    }

    pub(crate) fn get(&self, id: ChannelId) -> Option<&Channel> {
        self.map.get(&id)
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
    fn body_pieces_join() {
        let mut b = Body::default();
        b.push(Bytes::from_static(b"ab"));
        assert!(matches!(b, Body::One(_)));
        b.push(Bytes::from_static(b"cd"));
        b.push(Bytes::from_static(b"e"));
        assert_eq!(b.len(), 5);
        assert_eq!(&b.freeze()[..], b"abcde");
    }
}
