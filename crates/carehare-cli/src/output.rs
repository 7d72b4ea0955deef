//! Printing messages: raw bodies, or JSON lines with envelope, properties
//! and headers.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use carehare_tokio::{AMQPValue, BasicProperties, FieldTable, Message};
use serde_json::{Map, Value, json};

use crate::error::CliError;

/// How messages are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// The body as is, followed by a newline.
    Raw,
    /// One JSON object per line: envelope, properties, headers and body
    /// (UTF-8 text when valid, else base64, see `body_encoding`).
    Json,
}

/// Writes one message to `out` in `format`, then flushes, so a pipe sees
/// each message as it arrives. `message_count` is `basic.get-ok`'s.
pub(crate) fn write_message(
    out: &mut impl Write,
    format: Format,
    message: &Message,
    message_count: Option<u32>,
) -> Result<(), CliError> {
    let result = match format {
        Format::Raw => out
            .write_all(&message.body)
            .and_then(|()| out.write_all(b"\n")),
        Format::Json => {
            let mut line = message_json(message);
            if let (Some(n), Value::Object(map)) = (message_count, &mut line) {
                map.insert("message_count".into(), n.into());
            }
            serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        }
    };
    result
        .and_then(|()| out.flush())
        .map_err(CliError::io("writing to stdout"))
}

/// The JSON object for one message.
pub(crate) fn message_json(message: &Message) -> Value {
    let (body, encoding) = bytes_json(&message.body);
    json!({
        "exchange": message.exchange.as_str(),
        "routing_key": message.routing_key.as_str(),
        "redelivered": message.redelivered,
        "delivery_tag": message.delivery_tag,
        "consumer_tag": message.consumer_tag.as_str(),
        "properties": properties_json(&message.properties),
        "body": body,
        "body_encoding": encoding,
    })
}

/// Text when the bytes are UTF-8, else base64; and which one it is.
fn bytes_json(bytes: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.into(), "utf8"),
        Err(_) => (BASE64.encode(bytes).into(), "base64"),
    }
}

/// The properties that are set, by their AMQP names (`type` for `kind`).
pub(crate) fn properties_json(p: &BasicProperties) -> Value {
    let mut map = Map::new();
    let strings = [
        ("content_type", &p.content_type),
        ("content_encoding", &p.content_encoding),
        ("correlation_id", &p.correlation_id),
        ("reply_to", &p.reply_to),
        ("expiration", &p.expiration),
        ("message_id", &p.message_id),
        ("type", &p.kind),
        ("user_id", &p.user_id),
        ("app_id", &p.app_id),
        ("cluster_id", &p.cluster_id),
    ];
    for (name, value) in strings {
        if let Some(v) = value {
            map.insert(name.into(), v.as_str().into());
        }
    }
    if let Some(v) = p.delivery_mode {
        map.insert("delivery_mode".into(), v.into());
    }
    if let Some(v) = p.priority {
        map.insert("priority".into(), v.into());
    }
    if let Some(v) = p.timestamp {
        map.insert("timestamp".into(), v.into());
    }
    if let Some(h) = &p.headers {
        map.insert("headers".into(), table_json(h));
    }
    Value::Object(map)
}

/// A field table as a JSON object.
pub(crate) fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_json(v)))
            .collect(),
    )
}

/// A field value as JSON: numbers, booleans and strings as themselves;
/// byte arrays and non-UTF-8 long strings as `{"base64": ...}`.
fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => (*b).into(),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::Float(f) => (*f).into(),
        AMQPValue::Double(f) => (*f).into(),
        AMQPValue::DecimalValue(d) => (f64::from(d.value) / 10f64.powi(i32::from(d.scale))).into(),
        AMQPValue::ShortString(s) => s.as_str().into(),
        AMQPValue::LongString(s) => match bytes_json(s.as_bytes()) {
            (text, "utf8") => text,
            (b64, _) => json!({ "base64": b64 }),
        },
        AMQPValue::ByteArray(b) => json!({ "base64": BASE64.encode(b.as_slice()) }),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carehare_tokio::carehare_core::types::{FieldArray, LongString, ShortStr};

    #[test]
    fn properties_and_typed_headers() {
        let mut headers = FieldTable::default();
        headers.insert("n".into(), AMQPValue::LongInt(-3));
        headers.insert(
            "s".into(),
            AMQPValue::LongString(LongString::from(b"hi".to_vec())),
        );
        headers.insert(
            "bin".into(),
            AMQPValue::LongString(LongString::from(vec![0xff, 0])),
        );
        headers.insert(
            "a".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
        );
        let p = BasicProperties {
            content_type: Some(ShortStr::from_static("text/plain")),
            kind: Some(ShortStr::from_static("greeting")),
            priority: Some(3),
            headers: Some(headers),
            ..Default::default()
        };
        assert_eq!(
            properties_json(&p),
            json!({
                "content_type": "text/plain",
                "type": "greeting",
                "priority": 3,
                "headers": {"n": -3, "s": "hi", "bin": {"base64": "/wA="}, "a": [true]},
            })
        );
    }

    #[test]
    fn bodies_are_text_or_base64() {
        assert_eq!(bytes_json(b"caf\xc3\xa9"), ("café".into(), "utf8"));
        assert_eq!(bytes_json(&[0xff]), ("/w==".into(), "base64"));
    }
}
