//! One message being put together from its method, header and body frames.
//!
//! Invariants:
//! - the header is taken at most once, and only with a body size within the
//!   limit given (so no allocation is ever sized from an unchecked length);
//! - the body never grows past the size the header declared;
//! - the message is complete exactly when the body reaches that size, at
//!   once for an empty body.

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolViolation;
use crate::event::{ContentMethod, Delivery};
use crate::properties::BasicProperties;
use crate::types::{ChannelId, OpId};

/// A message whose method has arrived and whose content is still coming.
#[derive(Debug)]
pub(crate) struct Assembly {
    method: ContentMethod,
    /// Set for `basic.get-ok`: the op its message completes.
    get_op: Option<OpId>,
    header: Option<(Box<BasicProperties>, u64)>,
    body: Body,
}

/// Whether a message has all its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More body frames are due.
    Incomplete,
    /// The body reached its declared size.
    Complete,
}

impl Assembly {
    /// Starts a message; `get_op` is the `basic.get` it answers, if any.
    pub(crate) fn new(method: ContentMethod, get_op: Option<OpId>) -> Self {
        Self {
            method,
            get_op,
            header: None,
            body: Body::Empty,
        }
    }

    /// The `basic.get` this message answers, if any.
    pub(crate) fn get_op(&self) -> Option<OpId> {
        self.get_op
    }

    /// Takes the content header, refusing a second one and a body larger
    /// than `max_body_size`.
    pub(crate) fn on_header(
        &mut self,
        channel: ChannelId,
        properties: Box<BasicProperties>,
        body_size: u64,
        max_body_size: u64,
    ) -> Result<Progress, ProtocolViolation> {
        if self.header.is_some() {
            return Err(ProtocolViolation::UnexpectedFrame {
                channel,
                what: "content header without a content method",
            });
        }
        if body_size > max_body_size {
            return Err(ProtocolViolation::BodyTooLarge {
                channel,
                size: body_size,
                max: max_body_size,
            });
        }
        self.header = Some((properties, body_size));
        Ok(if body_size == 0 {
            Progress::Complete
        } else {
            Progress::Incomplete
        })
    }

    /// Takes one body frame, refusing it before the header or past the
    /// declared size.
    pub(crate) fn on_body(
        &mut self,
        channel: ChannelId,
        piece: Bytes,
    ) -> Result<Progress, ProtocolViolation> {
        let Some((_, declared)) = &self.header else {
            return Err(ProtocolViolation::UnexpectedFrame {
                channel,
                what: "content body without a content header",
            });
        };
        let declared = *declared;
        if self.body.len() + piece.len() as u64 > declared {
            return Err(ProtocolViolation::BodyOverrun { channel, declared });
        }
        self.body.push(piece);
        Ok(if self.body.len() == declared {
            Progress::Complete
        } else {
            Progress::Incomplete
        })
    }

    /// The whole message, and the `basic.get` it answers if any; `None`
    /// before the header came (never the case once [`Progress::Complete`]
    /// was returned).
    pub(crate) fn finish(self) -> Option<(Option<OpId>, Delivery)> {
        let (properties, _) = self.header?;
        let delivery = Delivery {
            method: self.method,
            properties,
            body: self.body.freeze(),
        };
        Some((self.get_op, delivery))
    }
}

/// Body bytes so far. One frame's worth stays a zero-copy slice; only a body
/// split over several frames is copied into one buffer.
#[derive(Debug, Default)]
enum Body {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len() as u64,
            Body::Many(b) => b.len() as u64,
        }
    }

    fn push(&mut self, piece: Bytes) {
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

    fn freeze(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(b) => b.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
