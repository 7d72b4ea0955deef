//! Arbitrary bytes as one length-prefixed field table.
//!
//! Invariant: decoding never panics, and when it succeeds, encoding is a
//! fixed point after one round: `encode(decode(x)) == encode(decode(encode(decode(x))))`.
//! Bytes are compared rather than values because a table may hold NaN.
#![no_main]

use bytes::{Bytes, BytesMut};
use carehare_core::table::{decode_field_table, encode_field_table};
use carehare_core::types::FieldTable;
use libfuzzer_sys::fuzz_target;

fn encode(table: &FieldTable) -> Bytes {
    let mut out = BytesMut::new();
    encode_field_table(table, &mut out);
    out.freeze()
}

fuzz_target!(|data: &[u8]| {
    let Ok(first) = decode_field_table(Bytes::copy_from_slice(data)) else {
        return;
    };
    let bytes1 = encode(&first);
    assert!(
        bytes1.len() <= data.len(),
        "re-encoding grew the table from {} to {} bytes",
        data.len(),
        bytes1.len()
    );
    let second = match decode_field_table(bytes1.clone()) {
        Ok(t) => t,
        Err(e) => panic!("re-encoded table does not decode: {e}\ntable: {first:?}"),
    };
    assert_eq!(
        second.inner().len(),
        first.inner().len(),
        "entries lost in the round trip"
    );
    let bytes2 = encode(&second);
    assert_eq!(bytes1, bytes2, "encoding is not stable");
});
