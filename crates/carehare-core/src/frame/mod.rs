//! Frames: the 7-byte header, the payload, and the frame-end octet.
//!
//! Decoding reads the header first and checks the declared size against
//! `frame_max` before it waits for (or buffers) the payload, so a hostile
//! size can't make the caller allocate. Payloads are split off the input
//! buffer without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::Parser;
use nom::number::complete::{be_u8, be_u16, be_u32};

use crate::error::DecodeError;
use crate::method::Method;
use crate::properties::{
    BasicProperties, ContentHeader, encode_header, header_fixed, property_flags,
};
use crate::types::ChannelId;

/// Frame type octet of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Frame type octet of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Frame type octet of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Frame type octet of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Header (7) plus frame-end (1).
pub const FRAME_OVERHEAD: usize = 8;
/// The smallest `frame_max` a peer may negotiate, and the limit before `tune`.
pub const FRAME_MIN_SIZE: u32 = 4096;
/// What a client sends first.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// The four frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameType {
    /// A method.
    Method,
    /// A content header.
    Header,
    /// A piece of content body.
    Body,
    /// A heartbeat.
    Heartbeat,
}

impl FrameType {
    /// Parses the frame type octet.
    pub fn from_octet(octet: u8) -> Result<Self, DecodeError> {
        match octet {
            FRAME_METHOD => Ok(Self::Method),
            FRAME_HEADER => Ok(Self::Header),
            FRAME_BODY => Ok(Self::Body),
            FRAME_HEARTBEAT => Ok(Self::Heartbeat),
            other => Err(DecodeError::UnknownFrameType(other)),
        }
    }

    /// The frame type octet.
    pub fn octet(self) -> u8 {
        match self {
            Self::Method => FRAME_METHOD,
            Self::Header => FRAME_HEADER,
            Self::Body => FRAME_BODY,
            Self::Heartbeat => FRAME_HEARTBEAT,
        }
    }
}

/// A frame whose payload has not been interpreted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Frame type.
    pub kind: FrameType,
    /// Channel number.
    pub channel: ChannelId,
    /// The payload, a slice of the input buffer.
    pub payload: Bytes,
}

/// A decoded frame.
// Frames are short-lived; boxing the header would allocate once per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel number.
        channel: ChannelId,
        /// The method.
        method: Method,
    },
    /// A content header frame.
    Header {
        /// Channel number.
        channel: ChannelId,
        /// The header.
        header: ContentHeader,
    },
    /// A content body frame.
    Body {
        /// Channel number.
        channel: ChannelId,
        /// Body bytes, a slice of the input buffer.
        payload: Bytes,
    },
    /// A heartbeat (valid only on channel 0).
    Heartbeat {
        /// Channel number.
        channel: ChannelId,
    },
}

impl Frame {
    /// The channel number.
    pub fn channel(&self) -> ChannelId {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }

    /// Appends the encoded frame.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Method { channel, method } => encode_method(out, *channel, method),
            Frame::Header { channel, header } => {
                with_frame(out, FRAME_HEADER, *channel, |out| header.encode(out))
            }
            Frame::Body { channel, payload } => {
                with_frame(out, FRAME_BODY, *channel, |out| out.put_slice(payload))
            }
            Frame::Heartbeat { channel } => with_frame(out, FRAME_HEARTBEAT, *channel, |_| {}),
        }
    }
}

impl RawFrame {
    /// Interprets the payload.
    #[inline]
    pub fn parse(self) -> Result<Frame, DecodeError> {
        let channel = self.channel;
        // Each arm builds its result in one expression (`map`, not `?` then
        // a struct), which lets the compiler build the large header frame
        // in place instead of moving it.
        match self.kind {
            FrameType::Method => {
                Method::decode(self.payload).map(|method| Frame::Method { channel, method })
            }
            FrameType::Header => {
                ContentHeader::decode(self.payload).map(|header| Frame::Header { channel, header })
            }
            FrameType::Body => Ok(Frame::Body {
                channel,
                payload: self.payload,
            }),
            FrameType::Heartbeat => {
                if !self.payload.is_empty() {
                    return Err(DecodeError::HeartbeatPayload(self.payload.len() as u32));
                }
                Ok(Frame::Heartbeat { channel })
            }
        }
    }
}

#[inline]
fn parse_header(input: &[u8]) -> nom::IResult<&[u8], (u8, u16, u32), ()> {
    (be_u8, be_u16, be_u32).parse(input)
}

/// Splits one complete frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. `frame_max` of 0 means no
/// limit (never negotiated by RabbitMQ; callers should pass a real bound).
/// On error the buffer is left as it was; the stream is unusable anyway.
#[inline]
pub fn decode_raw(buf: &mut BytesMut, frame_max: u32) -> Result<Option<RawFrame>, DecodeError> {
    decode_raw_with(buf, frame_max, true)
}

/// [`decode_raw`]; `reserve` says whether to reserve room for the rest of
/// a partial frame. The connection doesn't: its input buffer may be a
/// slice of the driver's read block, and reserving would move the partial
/// frame to a new allocation, so the next read could no longer be joined
/// to it without a copy.
#[inline]
pub(crate) fn decode_raw_with(
    buf: &mut BytesMut,
    frame_max: u32,
    reserve: bool,
) -> Result<Option<RawFrame>, DecodeError> {
    let Ok((_, (kind, channel, size))) = parse_header(buf) else {
        return Ok(None);
    };
    let kind = FrameType::from_octet(kind)?;
    let total = u64::from(size) + FRAME_OVERHEAD as u64;
    if frame_max != 0 && total > u64::from(frame_max) {
        return Err(DecodeError::FrameTooLarge {
            size: total,
            max: frame_max,
        });
    }
    // Fits in usize: bounded by frame_max (u32) or, with no limit, by u32 + 8.
    let total = total as usize;
    if buf.len() < total {
        if reserve {
            // Reserving here is safe: `total` was checked against frame_max.
            buf.reserve(total - buf.len());
        }
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(DecodeError::BadFrameEnd(end));
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(7);
    frame.truncate(size as usize);
    Ok(Some(RawFrame {
        kind,
        channel,
        payload: frame,
    }))
}

/// [`decode_raw`] then [`RawFrame::parse`].
#[inline]
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    match decode_raw(buf, frame_max)? {
        Some(raw) => raw.parse().map(Some),
        None => Ok(None),
    }
}

#[inline]
fn with_frame(out: &mut BytesMut, kind: u8, channel: ChannelId, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let size = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Appends a method frame.
pub fn encode_method(out: &mut BytesMut, channel: ChannelId, method: &Method) {
    with_frame(out, FRAME_METHOD, channel, |out| method.encode(out));
}

/// Appends a heartbeat frame.
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Appends a content header frame and as many body frames as `frame_max`
/// requires (none for an empty body).
pub fn encode_content(
    out: &mut BytesMut,
    channel: ChannelId,
    class_id: u16,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) {
    encode_header_frame(out, channel, class_id, properties, body.len() as u64);
    encode_body(out, channel, body, frame_max);
}

/// Appends a `basic.publish` method frame.
pub(crate) fn encode_basic_publish(
    out: &mut BytesMut,
    channel: ChannelId,
    publish: &crate::method::BasicPublish,
) {
    with_frame(out, FRAME_METHOD, channel, |out| {
        publish.encode_payload(out)
    });
}

/// Appends a content header frame.
pub(crate) fn encode_header_frame(
    out: &mut BytesMut,
    channel: ChannelId,
    class_id: u16,
    properties: &BasicProperties,
    body_size: u64,
) {
    with_frame(out, FRAME_HEADER, channel, |out| {
        encode_header(class_id, body_size, properties, out)
    });
}

/// Appends the content header frame of a message without properties and
/// its one body frame (none for an empty body), in three writes where the
/// general path makes a dozen: the common publish. Returns false, having
/// appended nothing, when there are properties or the body needs more
/// than one frame or is large enough to be sent uncopied.
pub(crate) fn encode_plain_content(
    out: &mut BytesMut,
    channel: ChannelId,
    class_id: u16,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) -> bool {
    if body.len() > body_chunk(frame_max)
        || body.len() >= ZERO_COPY_MIN
        || property_flags(properties) != 0
    {
        return false;
    }
    // The header frame (7 bytes of frame header, 14 of payload, the frame
    // end) and the body frame's header.
    const HEADER_PAYLOAD: u8 = 14;
    let ch = channel.to_be_bytes();
    // Shorter than ZERO_COPY_MIN, so it fits a u32.
    let len = (body.len() as u32).to_be_bytes();
    let mut frames = [0u8; 29];
    frames[..7].copy_from_slice(&[FRAME_HEADER, ch[0], ch[1], 0, 0, 0, HEADER_PAYLOAD]);
    frames[7..21].copy_from_slice(&header_fixed(class_id, body.len() as u64, 0));
    frames[21] = FRAME_END;
    frames[22..].copy_from_slice(&[FRAME_BODY, ch[0], ch[1], len[0], len[1], len[2], len[3]]);
    if body.is_empty() {
        out.extend_from_slice(&frames[..22]);
        return true;
    }
    out.reserve(frames.len() + body.len() + 1);
    out.extend_from_slice(&frames);
    out.extend_from_slice(body);
    out.put_u8(FRAME_END);
    true
}

/// The largest body piece per frame.
fn body_chunk(frame_max: u32) -> usize {
    match frame_max {
        0 => usize::MAX,
        max => (max as usize).saturating_sub(FRAME_OVERHEAD).max(1),
    }
}

/// Appends the body frames of `body`, copying it.
pub(crate) fn encode_body(out: &mut BytesMut, channel: ChannelId, body: &[u8], frame_max: u32) {
    let chunk = body_chunk(frame_max);
    out.reserve(body.len() + (body.len() / chunk + 1) * FRAME_OVERHEAD);
    for piece in body.chunks(chunk) {
        with_frame(out, FRAME_BODY, channel, |out| out.put_slice(piece));
    }
}

/// Body pieces at least this long are not copied by
/// [`encode_content_chunks`]: they are queued as their own chunk, a slice of
/// the caller's `Bytes`, for a vectored write. Shorter pieces cost less to
/// copy than an extra `iovec`.
pub const ZERO_COPY_MIN: usize = 8 * 1024;

/// [`encode_content`] without copying large bodies. Small frames are
/// appended to `out`; a body piece of at least [`ZERO_COPY_MIN`] bytes
/// seals `out` (everything in it so far is pushed to `chunks`), then the
/// piece itself is pushed, sliced from `body`, and its frame-end octet
/// starts `out` again. The bytes to send are `chunks` in order, then `out`.
pub fn encode_content_chunks(
    out: &mut BytesMut,
    chunks: &mut impl Extend<Bytes>,
    channel: ChannelId,
    class_id: u16,
    properties: &BasicProperties,
    body: &Bytes,
    frame_max: u32,
) {
    encode_header_frame(out, channel, class_id, properties, body.len() as u64);
    encode_body_chunks(out, chunks, channel, body, frame_max);
}

/// The body frames of [`encode_content_chunks`].
pub(crate) fn encode_body_chunks(
    out: &mut BytesMut,
    chunks: &mut impl Extend<Bytes>,
    channel: ChannelId,
    body: &Bytes,
    frame_max: u32,
) {
    if body.len() < ZERO_COPY_MIN {
        return encode_body(out, channel, body, frame_max);
    }
    let chunk = body_chunk(frame_max);
    let mut at = 0;
    while at < body.len() {
        let end = body.len().min(at.saturating_add(chunk));
        let len = end - at;
        if len < ZERO_COPY_MIN {
            with_frame(out, FRAME_BODY, channel, |out| {
                out.put_slice(&body[at..end])
            });
        } else {
            out.put_u8(FRAME_BODY);
            out.put_u16(channel);
            // `len` fits: it is at most frame_max - 8, or the whole body
            // when frame_max is 0 (no limit), and AMQP sizes are u32.
            out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
            chunks.extend([out.split().freeze(), body.slice(at..end)]);
            out.put_u8(FRAME_END);
        }
        at = end;
    }
}

#[cfg(test)]
mod differences_tests;
#[cfg(test)]
mod tests;
