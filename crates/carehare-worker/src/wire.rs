//! The wire format shared with Python's `amqp_worker`: every body is
//! UTF-8 JSON, gzip-compressed.
//!
//! - a request (to a [`QueueWorker`](crate::QueueWorker) or an
//!   [`RpcWorker`](crate::RpcWorker)) is `{"data": <payload>}`: the Python
//!   library calls the handler as `handler(**body)`, so the object must
//!   have exactly that one key;
//! - an RPC reply is `{"success": true, "data": <result>}` or
//!   `{"success": false, "error": {"type": .., "message": .., "args": [..],
//!   "trace": ..}}`.
//!
//! These helpers are public so that other producers and consumers (a
//! publisher written with plain carehare, a test) can speak the format.
//!
//! ```
//! use carehare_worker::wire;
//! let body = wire::encode_request(&"a test message")?;
//! let data: String = wire::decode_request(&body, wire::DEFAULT_MAX_MESSAGE_SIZE)?;
//! assert_eq!(data, "a test message");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{Read, Write};
use std::marker::PhantomData;

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{DecodeError, RpcError};

/// The largest decompressed body accepted by default: 32 MiB. A bigger one
/// (a "gzip bomb", say) is refused as malformed instead of being inflated
/// without bound.
///
/// ```
/// assert_eq!(carehare_worker::wire::DEFAULT_MAX_MESSAGE_SIZE, 32 * 1024 * 1024);
/// ```
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;

/// The `content-type` the Python library sets on what it publishes.
///
/// ```
/// assert_eq!(carehare_worker::wire::CONTENT_TYPE, "application/octet-stream");
/// ```
pub const CONTENT_TYPE: &str = "application/octet-stream";

/// A request envelope, as received: a JSON object whose only key is
/// `data` (Python calls `handler(**body)`, so an array, another key or a
/// missing `data` fail there too).
struct RequestIn<T> {
    data: T,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for RequestIn<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Envelope<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Envelope<T> {
            type Value = RequestIn<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an object {"data": ...}"#)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut data = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "data" {
                        return Err(de::Error::unknown_field(&key, &["data"]));
                    }
                    if data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    data = Some(map.next_value()?);
                }
                data.map(|data| RequestIn { data })
                    .ok_or_else(|| de::Error::missing_field("data"))
            }
        }

        deserializer.deserialize_map(Envelope(PhantomData))
    }
}

/// A request envelope, as sent.
#[derive(Serialize)]
struct RequestOut<'a, T: ?Sized> {
    data: &'a T,
}

/// A successful reply, as sent.
#[derive(Serialize)]
struct OkReplyOut<'a, T: ?Sized> {
    success: bool,
    data: &'a T,
}

/// An error reply, as sent.
#[derive(Serialize)]
struct ErrReplyOut<'a> {
    success: bool,
    error: &'a RpcError,
}

/// A reply, as received. `data` is read as a JSON value first so that a
/// `null` or missing `data` works for any `T` that accepts `null`.
#[derive(Deserialize)]
struct ReplyIn {
    success: bool,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    error: Option<RpcError>,
}

/// Gzip-compresses `json`.
///
/// ```
/// let body = carehare_worker::wire::gzip(br#"{"data": 1}"#);
/// assert_eq!(&body[..2], &[0x1f, 0x8b]);
/// ```
pub fn gzip(json: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(json.len() / 2 + 32),
        Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(json);
    encoder.finish().unwrap_or_default()
}

/// Decompresses a body (gzip, possibly multi-member as Python's
/// `gzip.decompress` accepts), refusing more than `max_size` bytes of
/// output.
///
/// ```
/// use carehare_worker::wire;
/// let body = wire::gzip(b"[1, 2, 3]");
/// assert_eq!(wire::gunzip(&body, 1024)?, b"[1, 2, 3]");
/// assert!(wire::gunzip(b"not gzip", 1024).is_err());
/// assert!(wire::gunzip(&body, 4).is_err());
/// # Ok::<(), carehare_worker::DecodeError>(())
/// ```
pub fn gunzip(body: &[u8], max_size: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_size));
    let limit = u64::try_from(max_size)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > max_size {
        return Err(DecodeError::TooLarge { limit: max_size });
    }
    Ok(out)
}

/// Parses decompressed JSON text into `T`, telling bad UTF-8, bad JSON and
/// a wrong shape apart.
fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(json).map_err(|e| DecodeError::Utf8(e.to_string()))?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::Shape(e.to_string()),
        _ => DecodeError::Json(e.to_string()),
    })
}

/// Reads the `{"data": ...}` envelope from decompressed JSON text.
pub(crate) fn parse_request<T: DeserializeOwned>(json: &[u8]) -> Result<T, DecodeError> {
    parse::<RequestIn<T>>(json).map(|r| r.data)
}

/// Encodes a request: `{"data": data}`, JSON, gzip.
///
/// ```
/// let body = carehare_worker::wire::encode_request(&serde_json::json!({"id": 7}))?;
/// let json = carehare_worker::wire::gunzip(&body, 1024)?;
/// assert_eq!(json, br#"{"data":{"id":7}}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// If `data` can't be serialized to JSON (e.g. a map with non-string keys).
pub fn encode_request<T: Serialize + ?Sized>(data: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&RequestOut { data }).map(|json| gzip(&json))
}

/// Decodes a request body into its `data`: gunzip (at most `max_size`
/// bytes), UTF-8, JSON, then the envelope, which must be an object with
/// exactly one key, `data`.
///
/// ```
/// use carehare_worker::{DecodeError, wire};
/// let body = wire::gzip(br#"{"data": [1, 2]}"#);
/// assert_eq!(wire::decode_request::<Vec<u32>>(&body, 1024)?, vec![1, 2]);
/// // The bare string of `amqp_worker`'s README is not an envelope:
/// let bare = wire::gzip(br#""a test message""#);
/// assert!(matches!(wire::decode_request::<String>(&bare, 1024), Err(DecodeError::Shape(_))));
/// # Ok::<(), DecodeError>(())
/// ```
///
/// # Errors
/// A [`DecodeError`] saying which layer is malformed.
pub fn decode_request<T: DeserializeOwned>(body: &[u8], max_size: usize) -> Result<T, DecodeError> {
    parse_request(&gunzip(body, max_size)?)
}

/// Encodes a successful RPC reply: `{"success": true, "data": data}`.
///
/// ```
/// use carehare_worker::wire;
/// let body = wire::encode_reply(&42)?;
/// assert_eq!(wire::decode_reply::<u32>(&body, 1024)?, Ok(42));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// If `data` can't be serialized to JSON.
pub fn encode_reply<T: Serialize + ?Sized>(data: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&OkReplyOut {
        success: true,
        data,
    })
    .map(|json| gzip(&json))
}

/// Encodes an error RPC reply: `{"success": false, "error": {...}}`.
///
/// ```
/// use carehare_worker::{RpcError, wire};
/// let body = wire::encode_error_reply(&RpcError::new("ValueError", "bad input"));
/// let reply = wire::decode_reply::<()>(&body, 1024)?;
/// assert_eq!(reply.unwrap_err().error_type, "ValueError");
/// # Ok::<(), carehare_worker::DecodeError>(())
/// ```
pub fn encode_error_reply(error: &RpcError) -> Vec<u8> {
    let json = serde_json::to_vec(&ErrReplyOut {
        success: false,
        error,
    })
    // An RpcError holds strings and JSON values only: it always serializes.
    .unwrap_or_else(|_| {
        br#"{"success":false,"error":{"type":"Error","message":"","args":[],"trace":""}}"#.to_vec()
    });
    gzip(&json)
}

/// Decodes an RPC reply: `Ok(data)` for a success, `Err(error)` for an
/// error reply.
///
/// ```
/// use carehare_worker::wire;
/// let body = wire::gzip(br#"{"success": true, "data": "data received a message"}"#);
/// assert_eq!(wire::decode_reply::<String>(&body, 1024)?, Ok("data received a message".into()));
/// # Ok::<(), carehare_worker::DecodeError>(())
/// ```
///
/// # Errors
/// A [`DecodeError`] when the body is not a reply in this format.
pub fn decode_reply<T: DeserializeOwned>(
    body: &[u8],
    max_size: usize,
) -> Result<Result<T, RpcError>, DecodeError> {
    let reply: ReplyIn = parse(&gunzip(body, max_size)?)?;
    if reply.success {
        T::deserialize(reply.data)
            .map(Ok)
            .map_err(|e| DecodeError::Shape(e.to_string()))
    } else {
        reply.error.map(Err).ok_or_else(|| {
            DecodeError::Shape("an error reply (success: false) without an `error` object".into())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn python_bodies_decode() {
        // gzip.compress(json.dumps({'data': {'a': [1, 'x']}}).encode('UTF8'))
        let body = gzip(br#"{"data": {"a": [1, "x"]}}"#);
        let v: serde_json::Value = decode_request(&body, 1024).unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, "x"]}));
    }

    #[test]
    fn every_malformed_layer_is_told_apart() {
        assert!(matches!(
            decode_request::<u8>(b"\x1f\x8bnope", 99),
            Err(DecodeError::Gzip(_))
        ));
        assert!(matches!(
            decode_request::<u8>(&gzip(b"\xff\xfe"), 99),
            Err(DecodeError::Utf8(_))
        ));
        assert!(matches!(
            decode_request::<u8>(&gzip(b"{not json"), 99),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode_request::<u8>(&gzip(br#"{"data": "x"}"#), 99),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode_request::<u8>(&gzip(br#"{"data": 1, "more": 2}"#), 99),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode_request::<u8>(&gzip(br#"[1]"#), 99),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode_request::<u8>(&gzip(br#"{}"#), 99),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode_request::<Option<u8>>(&gzip(br#"{}"#), 99),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode_request::<u8>(&gzip(br#"{"data": 1, "data": 1}"#), 99),
            Err(DecodeError::Shape(_))
        ));
        assert_eq!(
            decode_request::<Option<u8>>(&gzip(br#"{"data": null}"#), 99),
            Ok(None)
        );
        let big = gzip(&vec![b' '; 10_000]);
        assert!(matches!(
            decode_request::<u8>(&big, 100),
            Err(DecodeError::TooLarge { limit: 100 })
        ));
    }

    #[test]
    fn multi_member_gzip_is_read_whole() {
        let mut body = gzip(br#"{"data": "#);
        body.extend(gzip(br#""joined"}"#));
        assert_eq!(decode_request::<String>(&body, 99).unwrap(), "joined");
    }

    #[test]
    fn replies_round_trip() {
        let ok = encode_reply(&vec![1, 2]).unwrap();
        assert_eq!(
            gunzip(&ok, 99).unwrap(),
            br#"{"success":true,"data":[1,2]}"#
        );
        let err = RpcError::new("KeyError", "nope");
        let body = encode_error_reply(&err);
        assert_eq!(decode_reply::<()>(&body, 999).unwrap(), Err(err));
        // A Python error reply, trace and all.
        let python = gzip(
            br#"{"success": false, "error": {"type": "ValueError", "message": "ValueError('x', 2)", "args": ["x", 2], "trace": "Traceback..."}}"#,
        );
        let e = decode_reply::<()>(&python, 999).unwrap().unwrap_err();
        assert_eq!(e.args, vec![serde_json::json!("x"), serde_json::json!(2)]);
        assert_eq!(e.trace, "Traceback...");
        // `None` returned by a Python handler.
        let none = gzip(br#"{"success": true, "data": null}"#);
        assert_eq!(decode_reply::<Option<u8>>(&none, 99).unwrap(), Ok(None));
        assert!(matches!(
            decode_reply::<()>(&gzip(br#"{"success": false}"#), 99),
            Err(DecodeError::Shape(_))
        ));
    }
}
