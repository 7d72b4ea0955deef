//! What the connection has to say: bytes for the transport and events for
//! the driver, queued until the driver polls them.
//!
//! Invariants:
//! - Bytes leave in the order they were queued: every piece of `chunks`
//!   precedes `write_buf`.
//! - `chunks_len` is the sum of the lengths of `chunks`.
//! - A frame is queued whole or not at all: a frame refused for its size is
//!   cut off again before anything else is queued.
//! - Events leave in the order they were queued.
//! - `queued` says what was queued since the last hand-out: `Nothing`
//!   exactly when no byte is queued, `Publishes` when only whole publishes
//!   on one channel are, `Settles` when only acks, nacks and rejects on one
//!   channel are.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::error::{ChannelError, UsageError};
use crate::event::{Event, Reply};
use crate::frame::{self, PROTOCOL_HEADER, encode_heartbeat, encode_method};
use crate::method::{BasicPublish, Method};
use crate::properties::{BASIC_CLASS_ID, BasicProperties};
use crate::types::{ChannelId, OpId};

use super::coalesce::Queued;

/// A body to publish: borrowed (copied into the write buffer) or shared
/// (large pieces sent as slices of it).
pub(super) enum BodyRef<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes),
}

impl BodyRef<'_> {
    fn len(&self) -> usize {
        match self {
            BodyRef::Slice(b) => b.len(),
            BodyRef::Shared(b) => b.len(),
        }
    }
}

/// The write buffer's first size: room for the handshake.
const WRITE_START: usize = 1024;
/// The write buffer's size once the handshake is over, until the first
/// publish: all an idle connection (heartbeats) or a consumer's acks need,
/// and an idle connection holds it for as long as it lives.
const WRITE_IDLE: usize = 128;
/// The write buffer's size once the connection publishes. While the
/// transport still holds its queued bytes, more frames go to a fresh
/// buffer of at least the first one's size; this keeps those allocations
/// few under load.
const WRITE_BLOCK: usize = 4096;

/// An encoded `basic.publish` frame and what it says. A publisher sends the
/// same one for every message to the same place; writing the bytes again
/// costs a copy, encoding them a dozen small writes.
#[derive(Debug, Default)]
struct LastPublish {
    /// The frame: its header (7 bytes), class and method ids (4), the
    /// reserved field (2), the exchange and the routing key as `shortstr`s,
    /// the flags byte and the frame end. Empty until the first publish.
    frame: Vec<u8>,
    channel: ChannelId,
    reserved: u16,
    mandatory: bool,
    immediate: bool,
}

impl LastPublish {
    /// Where the exchange's length byte is in `frame`.
    const EXCHANGE_AT: usize = 13;

    /// Whether `frame` is how `publish` on `channel` encodes.
    fn matches(&self, channel: ChannelId, publish: &BasicPublish) -> bool {
        let exchange = publish.exchange.as_bytes();
        let key = publish.routing_key.as_bytes();
        let key_at = Self::EXCHANGE_AT + 1 + exchange.len();
        self.channel == channel
            && self.reserved == publish.reserved_1
            && self.mandatory == publish.mandatory
            && self.immediate == publish.immediate
            // Both lengths, and so the frame's layout, match...
            && self.frame.len() == key_at + 1 + key.len() + 2
            && self.frame.get(Self::EXCHANGE_AT).copied() == u8::try_from(exchange.len()).ok()
            // ...and both names.
            && self.frame.get(Self::EXCHANGE_AT + 1..key_at) == Some(exchange)
            && self.frame.get(key_at + 1..key_at + 1 + key.len()) == Some(key)
    }

    /// `frame` is how `publish` on `channel` encodes.
    fn keep(&mut self, channel: ChannelId, publish: &BasicPublish, frame: &[u8]) {
        self.frame.clear();
        self.frame.extend_from_slice(frame);
        self.channel = channel;
        self.reserved = publish.reserved_1;
        self.mandatory = publish.mandatory;
        self.immediate = publish.immediate;
    }
}

#[derive(Debug)]
pub(super) struct Outbox {
    /// Outgoing bytes that precede `write_buf`: sealed pieces of it and
    /// large bodies, not copied (see `publish`).
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`, so the queued total is known without a walk.
    chunks_len: usize,
    write_buf: BytesMut,
    /// Whether `write_buf` was taken at `WRITE_BLOCK` (on the first publish).
    publishing: bool,
    /// The last `basic.publish` frame queued, written again as it is while
    /// publishes keep to its channel, exchange and routing key.
    last_publish: LastPublish,
    queued: Queued,
    events: VecDeque<Event>,
}

impl Outbox {
    /// An outbox holding the protocol header, which the client sends first.
    pub(super) fn new() -> Self {
        let mut write_buf = BytesMut::with_capacity(WRITE_START);
        write_buf.extend_from_slice(&PROTOCOL_HEADER);
        Self {
            chunks: VecDeque::new(),
            chunks_len: 0,
            write_buf,
            publishing: false,
            last_publish: LastPublish::default(),
            queued: Queued::Other,
            events: VecDeque::new(),
        }
    }

    // ---- Bytes -------------------------------------------------------------

    /// Queues a method frame the core itself sends (answers, handshake,
    /// close): those are small and always fit.
    pub(super) fn method(&mut self, channel: ChannelId, method: &Method) {
        encode_method(&mut self.write_buf, channel, method);
        self.queued = Queued::Other;
    }

    /// Queues a method frame, refusing one larger than `frame_max` (e.g. a
    /// declare with huge arguments) instead of letting the server kill the
    /// connection for it.
    pub(super) fn command(
        &mut self,
        channel: ChannelId,
        method: &Method,
        frame_max: u32,
    ) -> Result<(), UsageError> {
        let mark = self.write_buf.len();
        encode_method(&mut self.write_buf, channel, method);
        let size = self.write_buf.len() - mark;
        if frame_max != 0 && size > frame_max as usize {
            self.write_buf.truncate(mark);
            return Err(UsageError::FrameTooLarge {
                size,
                max: frame_max,
            });
        }
        self.queued = Queued::Other;
        Ok(())
    }

    /// Queues an ack, nack or reject on `channel`, which had every delivery
    /// through `settled` settled before it. These are small and always fit.
    pub(super) fn settle(&mut self, channel: ChannelId, method: &Method, settled: u64) {
        encode_method(&mut self.write_buf, channel, method);
        self.queued = self.queued.and_settle(channel, settled);
    }

    /// Queues `basic.publish`, its content header and as many body frames
    /// as `frame_max` needs; refuses a method or header frame over
    /// `frame_max`, queueing nothing.
    pub(super) fn publish(
        &mut self,
        channel: ChannelId,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: BodyRef<'_>,
        frame_max: u32,
    ) -> Result<(), UsageError> {
        if !self.publishing {
            self.start_publishing();
        }
        let mark = self.write_buf.len();
        if self.last_publish.matches(channel, publish) {
            self.write_buf.extend_from_slice(&self.last_publish.frame);
        } else {
            frame::encode_basic_publish(&mut self.write_buf, channel, publish);
            self.last_publish
                .keep(channel, publish, &self.write_buf[mark..]);
        }
        let method_len = self.write_buf.len() - mark;
        if frame_max != 0 && method_len > frame_max as usize {
            self.write_buf.truncate(mark);
            return Err(UsageError::FrameTooLarge {
                size: method_len,
                max: frame_max,
            });
        }
        let plain = match &body {
            BodyRef::Slice(b) => b,
            BodyRef::Shared(b) => b.as_ref(),
        };
        if frame::encode_plain_content(
            &mut self.write_buf,
            channel,
            BASIC_CLASS_ID,
            properties,
            plain,
            frame_max,
        ) {
            self.queued = self.queued.and_publish(channel);
            return Ok(());
        }
        // The header frame alone must fit too (huge `headers` tables): check
        // it before any body piece is sealed into `chunks`.
        let header_start = self.write_buf.len();
        frame::encode_header_frame(
            &mut self.write_buf,
            channel,
            BASIC_CLASS_ID,
            properties,
            body.len() as u64,
        );
        let header_len = self.write_buf.len() - header_start;
        if frame_max != 0 && header_len > frame_max as usize {
            self.write_buf.truncate(mark);
            return Err(UsageError::FrameTooLarge {
                size: header_len,
                max: frame_max,
            });
        }
        match body {
            BodyRef::Slice(b) => frame::encode_body(&mut self.write_buf, channel, b, frame_max),
            BodyRef::Shared(b) => {
                let before = self.chunks.len();
                frame::encode_body_chunks(
                    &mut self.write_buf,
                    &mut self.chunks,
                    channel,
                    b,
                    frame_max,
                );
                self.chunks_len += self
                    .chunks
                    .iter()
                    .skip(before)
                    .map(Bytes::len)
                    .sum::<usize>();
            }
        }
        self.queued = self.queued.and_publish(channel);
        Ok(())
    }

    /// Moves the write buffer to one of `WRITE_BLOCK` bytes: a buffer
    /// keeps the size it was first taken at when it is reallocated, and a
    /// publisher wants the larger one.
    #[cold]
    fn start_publishing(&mut self) {
        let mut buf = BytesMut::with_capacity(WRITE_BLOCK.max(2 * self.write_buf.len()));
        buf.extend_from_slice(&self.write_buf);
        self.write_buf = buf;
        self.publishing = true;
    }

    /// The handshake is over: trade its buffer for a small one, unless
    /// bytes wait in it. (Nothing was published yet: publishing needs an
    /// open connection. A piece of the old buffer the transport still
    /// holds keeps it alive until written.)
    pub(super) fn handshake_done(&mut self) {
        if !self.has_transmit() {
            self.write_buf = BytesMut::with_capacity(WRITE_IDLE);
        }
    }

    /// The write buffer's capacity.
    #[cfg(test)]
    pub(super) fn write_capacity(&self) -> usize {
        self.write_buf.capacity()
    }

    /// Queues a heartbeat frame.
    pub(super) fn heartbeat(&mut self) {
        encode_heartbeat(&mut self.write_buf);
        self.queued = Queued::Other;
    }

    /// Appends every queued byte to `buf`, and returns how many.
    pub(super) fn transmit(&mut self, buf: &mut Vec<u8>) -> usize {
        let mut n = 0;
        for chunk in self.chunks.drain(..) {
            n += chunk.len();
            buf.extend_from_slice(&chunk);
        }
        self.chunks_len = 0;
        n += self.write_buf.len();
        if !self.write_buf.is_empty() {
            buf.extend_from_slice(&self.write_buf);
            self.write_buf.clear();
        }
        self.queued = Queued::Nothing;
        n
    }

    /// Moves every queued piece to the back of `chunks`, in order, and
    /// returns how many bytes they hold.
    pub(super) fn transmit_chunks(&mut self, chunks: &mut VecDeque<Bytes>) -> usize {
        let mut n = 0;
        for chunk in self.chunks.drain(..) {
            n += chunk.len();
            chunks.push_back(chunk);
        }
        self.chunks_len = 0;
        if !self.write_buf.is_empty() {
            n += self.write_buf.len();
            chunks.push_back(self.write_buf.split().freeze());
        }
        self.queued = Queued::Nothing;
        n
    }

    /// Whether bytes are queued.
    pub(super) fn has_transmit(&self) -> bool {
        !self.write_buf.is_empty() || !self.chunks.is_empty()
    }

    /// How many bytes are queued.
    pub(super) fn transmit_len(&self) -> usize {
        self.chunks_len + self.write_buf.len()
    }

    /// What is queued, as far as holding it back goes.
    pub(super) fn queued(&self) -> Queued {
        self.queued
    }

    // ---- Events ------------------------------------------------------------

    pub(super) fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Queues [`Event::Completed`] for `op`.
    pub(super) fn complete(
        &mut self,
        op: OpId,
        channel: ChannelId,
        result: Result<Reply, ChannelError>,
    ) {
        self.events.push_back(Event::Completed {
            op,
            channel,
            result,
        });
    }

    pub(super) fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::types::ShortStr;

    /// How `publish` encodes through the general path: the method through
    /// the general method encoder, then every header field one by one.
    fn reference(
        channel: ChannelId,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: &[u8],
        frame_max: u32,
    ) -> Vec<u8> {
        crate::testing::content_bytes(channel, publish.clone(), properties, body, frame_max)
    }

    fn queued(outbox: &mut Outbox) -> Vec<u8> {
        let mut out = Vec::new();
        outbox.transmit(&mut out);
        out
    }

    proptest! {
        /// Whatever a publish repeats of the one before (its channel, its
        /// names, names of the same lengths, its flags) or changes, the
        /// bytes are the general path's.
        #[test]
        fn publishes_encode_as_the_general_path_does(
            publishes in prop::collection::vec(
                (
                    1u16..3,
                    prop::sample::select(vec!["", "ab", "ba", "a"]),
                    prop::sample::select(vec!["", "c", "bc", "cb", "abc"]),
                    any::<bool>(),
                    any::<bool>(),
                    prop::option::of(0u8..2),
                    0usize..40,
                ),
                1..12,
            )
        ) {
            let mut outbox = Outbox::new();
            queued(&mut outbox);
            // Small enough that the longer bodies take two frames.
            let frame_max = 32;
            for (channel, exchange, key, mandatory, immediate, mode, len) in publishes {
                let publish = BasicPublish {
                    exchange: ShortStr::from_static(exchange),
                    routing_key: ShortStr::from_static(key),
                    mandatory,
                    immediate,
                    ..Default::default()
                };
                let properties = BasicProperties {
                    delivery_mode: mode,
                    ..Default::default()
                };
                let body = vec![7u8; len];
                outbox
                    .publish(channel, &publish, &properties, BodyRef::Slice(&body), 0)
                    .expect("no frame_max");
                prop_assert_eq!(queued(&mut outbox), reference(channel, &publish, &properties, &body, 0));
                outbox
                    .publish(channel, &publish, &properties, BodyRef::Slice(&body), frame_max)
                    .expect("fits");
                prop_assert_eq!(
                    queued(&mut outbox),
                    reference(channel, &publish, &properties, &body, frame_max)
                );
            }
        }
    }

    #[test]
    fn a_repeated_publish_too_large_for_frame_max_is_refused_each_time() {
        let mut outbox = Outbox::new();
        queued(&mut outbox);
        let publish = BasicPublish {
            routing_key: ShortStr::from_static("a-routing-key-longer-than-the-frame"),
            ..Default::default()
        };
        for _ in 0..2 {
            let refused = outbox.publish(
                1,
                &publish,
                &BasicProperties::default(),
                BodyRef::Slice(b"m"),
                32,
            );
            assert!(matches!(refused, Err(UsageError::FrameTooLarge { .. })));
            assert!(!outbox.has_transmit(), "nothing queued");
        }
    }
}
