//! Field tables and arrays, with every value type RabbitMQ uses.
//!
//! Type tags follow RabbitMQ rather than the 0-9-1 text (see RabbitMQ's
//! "AMQP 0-9-1 errata"): `s` is a signed 16-bit int, `l` a signed 64-bit int,
//! `x` a byte array. The value types are amq-protocol-types', the user's
//! choice.

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, ShortString};
use crate::wire::{Dec, Enc};

/// Nesting deeper than this is refused rather than recursed into, so a
/// hostile table cannot overflow the stack.
pub const MAX_DEPTH: usize = 32;

pub(crate) fn decode_table(dec: &mut Dec) -> Result<FieldTable, DecodeError> {
    decode_table_at(dec, 0)
}

fn decode_table_at(dec: &mut Dec, depth: usize) -> Result<FieldTable, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    let mut inner = Dec::new(dec.long_bytes()?);
    let mut table = FieldTable::default();
    while inner.remaining() > 0 {
        let key = inner.short_str()?;
        let key = ShortString::try_new(key.as_str()).map_err(|_| DecodeError::Truncated)?;
        let value = decode_value(&mut inner, depth)?;
        table.insert(key, value);
    }
    Ok(table)
}

fn decode_array(dec: &mut Dec, depth: usize) -> Result<FieldArray, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    let mut inner = Dec::new(dec.long_bytes()?);
    // No capacity hint: the element count is untrusted.
    let mut array = FieldArray::default();
    while inner.remaining() > 0 {
        array.push(decode_value(&mut inner, depth)?);
    }
    Ok(array)
}

fn decode_value(dec: &mut Dec, depth: usize) -> Result<AMQPValue, DecodeError> {
    let tag = dec.u8()?;
    Ok(match tag {
        b't' => AMQPValue::Boolean(dec.u8()? != 0),
        b'b' => AMQPValue::ShortShortInt(dec.u8()? as i8),
        b'B' => AMQPValue::ShortShortUInt(dec.u8()?),
        b's' => AMQPValue::ShortInt(dec.u16()? as i16),
        b'u' => AMQPValue::ShortUInt(dec.u16()?),
        b'I' => AMQPValue::LongInt(dec.u32()? as i32),
        b'i' => AMQPValue::LongUInt(dec.u32()?),
        b'l' => AMQPValue::LongLongInt(dec.u64()? as i64),
        b'f' => AMQPValue::Float(f32::from_bits(dec.u32()?)),
        b'd' => AMQPValue::Double(f64::from_bits(dec.u64()?)),
        b'D' => {
            let scale = dec.u8()?;
            let value = dec.u32()?;
            AMQPValue::DecimalValue(DecimalValue { scale, value })
        }
        b'S' => AMQPValue::LongString(dec.long_bytes()?.to_vec().into()),
        b'A' => AMQPValue::FieldArray(decode_array(dec, depth + 1)?),
        b'T' => AMQPValue::Timestamp(dec.u64()?),
        b'F' => AMQPValue::FieldTable(decode_table_at(dec, depth + 1)?),
        b'x' => AMQPValue::ByteArray(dec.long_bytes()?.to_vec().into()),
        b'V' => AMQPValue::Void,
        other => return Err(DecodeError::UnknownFieldType(other)),
    })
}

pub(crate) fn encode_table(enc: &mut Enc<'_>, table: &FieldTable) {
    with_length_prefix(enc.out(), |out| encode_table_body(out, table));
}

/// The entries without the length prefix; AMQPLAIN's response uses this.
pub(crate) fn encode_table_body(out: &mut BytesMut, table: &FieldTable) {
    for (key, value) in table {
        // amq-protocol-types' ShortString guarantees <= 255 bytes.
        out.put_u8(key.as_str().len() as u8);
        out.put_slice(key.as_str().as_bytes());
        encode_value(out, value);
    }
}

fn with_length_prefix(out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = out.len();
    out.put_u32(0);
    body(out);
    // A table over 4 GiB can't be built from one frame; saturate, don't panic.
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_long_bytes(out: &mut BytesMut, bytes: &[u8]) {
    let mut enc = Enc::new(out);
    enc.long_bytes(bytes);
}

fn encode_value(out: &mut BytesMut, value: &AMQPValue) {
    match value {
        AMQPValue::Boolean(v) => {
            out.put_u8(b't');
            out.put_u8(u8::from(*v));
        }
        AMQPValue::ShortShortInt(v) => {
            out.put_u8(b'b');
            out.put_i8(*v);
        }
        AMQPValue::ShortShortUInt(v) => {
            out.put_u8(b'B');
            out.put_u8(*v);
        }
        AMQPValue::ShortInt(v) => {
            out.put_u8(b's');
            out.put_i16(*v);
        }
        AMQPValue::ShortUInt(v) => {
            out.put_u8(b'u');
            out.put_u16(*v);
        }
        AMQPValue::LongInt(v) => {
            out.put_u8(b'I');
            out.put_i32(*v);
        }
        AMQPValue::LongUInt(v) => {
            out.put_u8(b'i');
            out.put_u32(*v);
        }
        AMQPValue::LongLongInt(v) => {
            out.put_u8(b'l');
            out.put_i64(*v);
        }
        AMQPValue::Float(v) => {
            out.put_u8(b'f');
            out.put_f32(*v);
        }
        AMQPValue::Double(v) => {
            out.put_u8(b'd');
            out.put_f64(*v);
        }
        AMQPValue::DecimalValue(v) => {
            out.put_u8(b'D');
            out.put_u8(v.scale);
            out.put_u32(v.value);
        }
        // RabbitMQ has no short-string field type; send it as a long string.
        AMQPValue::ShortString(v) => {
            out.put_u8(b'S');
            put_long_bytes(out, v.as_str().as_bytes());
        }
        AMQPValue::LongString(v) => {
            out.put_u8(b'S');
            put_long_bytes(out, v.as_bytes());
        }
        AMQPValue::FieldArray(v) => {
            out.put_u8(b'A');
            with_length_prefix(out, |out| {
                for item in v.as_slice() {
                    encode_value(out, item);
                }
            });
        }
        AMQPValue::Timestamp(v) => {
            out.put_u8(b'T');
            out.put_u64(*v);
        }
        AMQPValue::FieldTable(v) => {
            out.put_u8(b'F');
            with_length_prefix(out, |out| encode_table_body(out, v));
        }
        AMQPValue::ByteArray(v) => {
            out.put_u8(b'x');
            put_long_bytes(out, v.as_slice());
        }
        AMQPValue::Void => out.put_u8(b'V'),
    }
}

/// Encodes a table on its own, length prefix included.
pub fn encode_field_table(table: &FieldTable, out: &mut BytesMut) {
    encode_table(&mut Enc::new(out), table);
}

/// Decodes one length-prefixed table; fails unless the input is exactly one
/// table. Exposed for fuzzing and for tools.
pub fn decode_field_table(input: bytes::Bytes) -> Result<FieldTable, DecodeError> {
    let mut dec = Dec::new(input);
    let table = decode_table(&mut dec)?;
    dec.finish()?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn nesting_is_bounded() {
        // An array nested 1,000 deep: each level is 'A' + length.
        let mut payload = Vec::new();
        let depth = 1000usize;
        for level in 0..depth {
            let remaining = (depth - level - 1) * 5;
            payload.push(b'A');
            payload.extend_from_slice(&(remaining as u32).to_be_bytes());
        }
        let mut table = Vec::new();
        table.push(1u8);
        table.push(b'k');
        table.extend_from_slice(&payload);
        let mut input = (table.len() as u32).to_be_bytes().to_vec();
        input.extend_from_slice(&table);
        assert_eq!(
            decode_field_table(Bytes::from(input)),
            Err(DecodeError::TooDeep(MAX_DEPTH))
        );
    }

    #[test]
    fn huge_declared_length_is_refused_without_allocating() {
        let input = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(decode_field_table(input), Err(DecodeError::Truncated));
    }

    #[test]
    fn unknown_tag_is_typed() {
        let input = Bytes::from_static(&[0, 0, 0, 3, 1, b'k', b'Z']);
        assert_eq!(
            decode_field_table(input),
            Err(DecodeError::UnknownFieldType(b'Z'))
        );
    }

    #[test]
    fn rabbitmq_tags() {
        let mut t = FieldTable::default();
        t.insert("s".into(), AMQPValue::ShortInt(-2));
        t.insert("l".into(), AMQPValue::LongLongInt(-3));
        t.insert("x".into(), AMQPValue::ByteArray(vec![1, 2].into()));
        let mut out = BytesMut::new();
        encode_field_table(&t, &mut out);
        let expected: &[u8] = &[
            0, 0, 0, 25, 1, b'l', b'l', 255, 255, 255, 255, 255, 255, 255, 253, 1, b's', b's', 255,
            254, 1, b'x', b'x', 0, 0, 0, 2, 1, 2,
        ];
        assert_eq!(&out[..], expected);
        assert_eq!(decode_field_table(out.freeze()).unwrap(), t);
    }
}
