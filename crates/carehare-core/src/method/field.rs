//! How each AMQP argument type is read and written.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::table::{decode_table, encode_table};
use crate::types::{FieldTable, Secret, ShortStr};
use crate::wire::{Dec, Enc};

/// One method argument type (`octet`, `short`, `bit`, `shortstr`, ...).
pub(crate) trait Field: Sized {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError>;
    fn encode(&self, enc: &mut Enc<'_>);
}

impl Field for u8 {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.u8()
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.u8(*self)
    }
}

impl Field for u16 {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.u16()
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.u16(*self)
    }
}

impl Field for u32 {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.u32()
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.u32(*self)
    }
}

impl Field for u64 {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.u64()
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.u64(*self)
    }
}

impl Field for bool {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.bit()
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.bit(*self)
    }
}

impl Field for ShortStr {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.short_str()
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.short_str(self)
    }
}

impl Field for Bytes {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.long_bytes()
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.long_bytes(self)
    }
}

impl Field for Secret {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        dec.long_bytes().map(Secret)
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        enc.long_bytes(&self.0)
    }
}

impl Field for FieldTable {
    fn decode(dec: &mut Dec) -> Result<Self, DecodeError> {
        decode_table(dec)
    }
    fn encode(&self, enc: &mut Enc<'_>) {
        encode_table(enc, self)
    }
}

#[cfg(test)]
pub(crate) mod arb {
    //! proptest strategies for every argument type.
    use super::*;
    use crate::types::{AMQPValue, DecimalValue, ShortString};
    use proptest::prelude::*;

    pub(crate) trait Arb: Sized {
        fn arb() -> BoxedStrategy<Self>;
    }

    macro_rules! arb_any {
        ($($t:ty),*) => {$(
            impl Arb for $t {
                fn arb() -> BoxedStrategy<Self> { any::<$t>().boxed() }
            }
        )*};
    }
    arb_any!(u8, u16, u32, u64, bool);

    pub(crate) fn short_str() -> BoxedStrategy<ShortStr> {
        // Multi-byte characters too, kept within 255 bytes.
        "\\PC{0,60}"
            .prop_map(|s| ShortStr::new(s).expect("at most 240 bytes"))
            .boxed()
    }

    impl Arb for ShortStr {
        fn arb() -> BoxedStrategy<Self> {
            short_str()
        }
    }

    impl Arb for Bytes {
        fn arb() -> BoxedStrategy<Self> {
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(Bytes::from)
                .boxed()
        }
    }

    impl Arb for Secret {
        fn arb() -> BoxedStrategy<Self> {
            Bytes::arb().prop_map(Secret).boxed()
        }
    }

    /// Every value type RabbitMQ knows, nested up to 3 levels. Floats are
    /// built from integers so `NaN != NaN` can't fail a round trip.
    pub(crate) fn value() -> BoxedStrategy<AMQPValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<u8>().prop_map(AMQPValue::ShortShortUInt),
            any::<i16>().prop_map(AMQPValue::ShortInt),
            any::<u16>().prop_map(AMQPValue::ShortUInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<u32>().prop_map(AMQPValue::LongUInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<i16>().prop_map(|v| AMQPValue::Float(f32::from(v) / 4.0)),
            any::<i32>().prop_map(|v| AMQPValue::Double(f64::from(v) / 8.0)),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|v| AMQPValue::LongString(v.into())),
            any::<u64>().prop_map(AMQPValue::Timestamp),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|v| AMQPValue::ByteArray(v.into())),
            Just(AMQPValue::Void),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| AMQPValue::FieldArray(v.into())),
                table_of(inner).prop_map(AMQPValue::FieldTable),
            ]
        })
        .boxed()
    }

    fn table_of(values: BoxedStrategy<AMQPValue>) -> BoxedStrategy<FieldTable> {
        proptest::collection::btree_map("\\PC{0,20}", values, 0..6)
            .prop_map(|m| {
                let mut t = FieldTable::default();
                for (k, v) in m {
                    t.insert(ShortString::try_new(k).expect("short key"), v);
                }
                t
            })
            .boxed()
    }

    pub(crate) fn table() -> BoxedStrategy<FieldTable> {
        table_of(value())
    }

    impl Arb for FieldTable {
        fn arb() -> BoxedStrategy<Self> {
            table()
        }
    }
}
