//! Content headers and the 14 `basic` properties.

pub mod builder;

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::table::{decode_table, encode_table};
use crate::types::{FieldTable, ShortStr};
use crate::wire::{Dec, Enc};

/// The class id of `basic`, the only content class RabbitMQ uses.
pub const BASIC_CLASS_ID: u16 = 60;

/// The 14 properties of a `basic` message. `None` means "not sent".
/// With the `serde` feature it is `Serialize` and `Deserialize`.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BasicProperties {
    /// MIME type, e.g. `application/json`.
    pub content_type: Option<ShortStr>,
    /// MIME encoding, e.g. `gzip`.
    pub content_encoding: Option<ShortStr>,
    /// Application headers.
    pub headers: Option<FieldTable>,
    /// 1 transient, 2 persistent.
    pub delivery_mode: Option<u8>,
    /// 0 to 9 (or the queue's `x-max-priority`).
    pub priority: Option<u8>,
    /// Matches an RPC reply to its request.
    pub correlation_id: Option<ShortStr>,
    /// Where an RPC reply goes.
    pub reply_to: Option<ShortStr>,
    /// Per-message TTL in milliseconds, as a string.
    pub expiration: Option<ShortStr>,
    /// Application message id.
    pub message_id: Option<ShortStr>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Application message type (`type` in the spec).
    pub kind: Option<ShortStr>,
    /// The publishing user; RabbitMQ checks it against the login.
    pub user_id: Option<ShortStr>,
    /// Application id.
    pub app_id: Option<ShortStr>,
    /// Deprecated cluster id.
    pub cluster_id: Option<ShortStr>,
}

// Property flag bits, most significant first, as in the spec.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;
/// Bit 0 says "another flag word follows"; bit 1 is unused.
const KNOWN: u16 = !0b11;

/// A content header frame's payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentHeader {
    /// Class id (60, `basic`).
    pub class_id: u16,
    /// Total body size in bytes.
    pub body_size: u64,
    /// The message properties. Boxed: they are 376 bytes, and a frame, a
    /// message being assembled and a delivery all carry them; moving a
    /// pointer instead of copying them at each step saves more than the
    /// one allocation costs.
    pub properties: Box<BasicProperties>,
}

impl ContentHeader {
    /// Decodes a whole content-header payload.
    #[inline]
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let mut dec = Dec::new(payload);
        let class_id = dec.u16()?;
        if class_id != BASIC_CLASS_ID {
            return Err(DecodeError::UnknownContentClass(class_id));
        }
        let _weight = dec.u16()?;
        let body_size = dec.u64()?;
        let flags = dec.u16()?;
        if flags & !KNOWN != 0 {
            // Continuation words or the unused bit: no basic property lives there.
            return Err(DecodeError::UnknownPropertyFlags(flags));
        }
        // Inlined: called once per property on every delivery, where a
        // call returning a 40-byte result cost more than the test itself.
        #[inline(always)]
        fn opt(dec: &mut Dec, present: bool) -> Result<Option<ShortStr>, DecodeError> {
            if present {
                dec.short_str().map(Some)
            } else {
                Ok(None)
            }
        }
        // Every field into a local first, then one struct expression: the
        // 376-byte properties are built where the result goes, not moved.
        let content_type = opt(&mut dec, flags & CONTENT_TYPE != 0)?;
        let content_encoding = opt(&mut dec, flags & CONTENT_ENCODING != 0)?;
        let headers = if flags & HEADERS != 0 {
            Some(decode_table(&mut dec)?)
        } else {
            None
        };
        let delivery_mode = if flags & DELIVERY_MODE != 0 {
            Some(dec.u8()?)
        } else {
            None
        };
        let priority = if flags & PRIORITY != 0 {
            Some(dec.u8()?)
        } else {
            None
        };
        let correlation_id = opt(&mut dec, flags & CORRELATION_ID != 0)?;
        let reply_to = opt(&mut dec, flags & REPLY_TO != 0)?;
        let expiration = opt(&mut dec, flags & EXPIRATION != 0)?;
        let message_id = opt(&mut dec, flags & MESSAGE_ID != 0)?;
        let timestamp = if flags & TIMESTAMP != 0 {
            Some(dec.u64()?)
        } else {
            None
        };
        let kind = opt(&mut dec, flags & TYPE != 0)?;
        let user_id = opt(&mut dec, flags & USER_ID != 0)?;
        let app_id = opt(&mut dec, flags & APP_ID != 0)?;
        let cluster_id = opt(&mut dec, flags & CLUSTER_ID != 0)?;
        dec.finish()?;
        Ok(Self {
            class_id,
            body_size,
            properties: Box::new(BasicProperties {
                content_type,
                content_encoding,
                headers,
                delivery_mode,
                priority,
                correlation_id,
                reply_to,
                expiration,
                message_id,
                timestamp,
                kind,
                user_id,
                app_id,
                cluster_id,
            }),
        })
    }

    /// Appends the content-header payload.
    pub fn encode(&self, out: &mut BytesMut) {
        encode_header(self.class_id, self.body_size, &self.properties, out);
    }
}

pub(crate) fn encode_header(
    class_id: u16,
    body_size: u64,
    p: &BasicProperties,
    out: &mut BytesMut,
) {
    let flags = property_flags(p);
    // One write, which is all of a header without properties, the common
    // case.
    out.extend_from_slice(&header_fixed(class_id, body_size, flags));
    if flags == 0 {
        return;
    }
    encode_properties(p, out);
}

/// A content header's payload up to its properties: class, weight
/// (always 0), body size and property flags.
pub(crate) fn header_fixed(class_id: u16, body_size: u64, flags: u16) -> [u8; 14] {
    let mut fixed = [0u8; 14];
    fixed[..2].copy_from_slice(&class_id.to_be_bytes());
    fixed[4..12].copy_from_slice(&body_size.to_be_bytes());
    fixed[12..].copy_from_slice(&flags.to_be_bytes());
    fixed
}

/// The property flags of `p`: a bit for each property present.
pub(crate) fn property_flags(p: &BasicProperties) -> u16 {
    let mut flags = 0u16;
    let mut flag = |present: bool, bit: u16| {
        if present {
            flags |= bit;
        }
    };
    flag(p.content_type.is_some(), CONTENT_TYPE);
    flag(p.content_encoding.is_some(), CONTENT_ENCODING);
    flag(p.headers.is_some(), HEADERS);
    flag(p.delivery_mode.is_some(), DELIVERY_MODE);
    flag(p.priority.is_some(), PRIORITY);
    flag(p.correlation_id.is_some(), CORRELATION_ID);
    flag(p.reply_to.is_some(), REPLY_TO);
    flag(p.expiration.is_some(), EXPIRATION);
    flag(p.message_id.is_some(), MESSAGE_ID);
    flag(p.timestamp.is_some(), TIMESTAMP);
    flag(p.kind.is_some(), TYPE);
    flag(p.user_id.is_some(), USER_ID);
    flag(p.app_id.is_some(), APP_ID);
    flag(p.cluster_id.is_some(), CLUSTER_ID);
    flags
}

/// Appends the properties present in `p`, after their flags.
fn encode_properties(p: &BasicProperties, out: &mut BytesMut) {
    let mut enc = Enc::new(out);
    let s = |v: &Option<ShortStr>, enc: &mut Enc<'_>| {
        if let Some(v) = v {
            enc.short_str(v);
        }
    };
    s(&p.content_type, &mut enc);
    s(&p.content_encoding, &mut enc);
    if let Some(h) = &p.headers {
        encode_table(&mut enc, h);
    }
    if let Some(v) = p.delivery_mode {
        enc.u8(v);
    }
    if let Some(v) = p.priority {
        enc.u8(v);
    }
    s(&p.correlation_id, &mut enc);
    s(&p.reply_to, &mut enc);
    s(&p.expiration, &mut enc);
    s(&p.message_id, &mut enc);
    if let Some(v) = p.timestamp {
        enc.u64(v);
    }
    s(&p.kind, &mut enc);
    s(&p.user_id, &mut enc);
    s(&p.app_id, &mut enc);
    s(&p.cluster_id, &mut enc);
}

#[cfg(test)]
pub(crate) mod arb {
    use super::*;
    use crate::method::field_arb::{short_str, table};
    use proptest::option::of;
    use proptest::prelude::*;

    pub(crate) fn properties() -> BoxedStrategy<BasicProperties> {
        (
            (
                of(short_str()),
                of(short_str()),
                of(table()),
                of(any::<u8>()),
                of(any::<u8>()),
            ),
            (
                of(short_str()),
                of(short_str()),
                of(short_str()),
                of(short_str()),
            ),
            (
                of(any::<u64>()),
                of(short_str()),
                of(short_str()),
                of(short_str()),
                of(short_str()),
            ),
        )
            .prop_map(
                |((ct, ce, h, dm, pr), (ci, rt, ex, mi), (ts, k, u, a, cl))| BasicProperties {
                    content_type: ct,
                    content_encoding: ce,
                    headers: h,
                    delivery_mode: dm,
                    priority: pr,
                    correlation_id: ci,
                    reply_to: rt,
                    expiration: ex,
                    message_id: mi,
                    timestamp: ts,
                    kind: k,
                    user_id: u,
                    app_id: a,
                    cluster_id: cl,
                },
            )
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn headers_round_trip(properties in arb::properties(), body_size in any::<u64>()) {
            let header = ContentHeader { class_id: BASIC_CLASS_ID, body_size, properties: Box::new(properties) };
            let mut out = BytesMut::new();
            header.encode(&mut out);
            prop_assert_eq!(ContentHeader::decode(out.freeze()).expect("decodes"), header);
        }
    }

    #[test]
    fn all_fourteen_flags_in_spec_order() {
        let p = BasicProperties {
            content_type: Some(ShortStr::from_static("a")),
            delivery_mode: Some(2),
            cluster_id: Some(ShortStr::from_static("c")),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        encode_header(60, 5, &p, &mut out);
        assert_eq!(
            &out[..],
            &[
                0,
                60,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                5,
                0b1001_0000,
                0b0000_0100,
                1,
                b'a',
                2,
                1,
                b'c'
            ]
        );
    }

    #[test]
    fn continuation_flags_are_refused() {
        let payload = Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            ContentHeader::decode(payload),
            Err(DecodeError::UnknownPropertyFlags(1))
        );
    }

    #[test]
    fn other_classes_are_refused() {
        let payload = Bytes::from_static(&[0, 61, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            ContentHeader::decode(payload),
            Err(DecodeError::UnknownContentClass(61))
        );
    }
}
