//! Arbitrary bytes as a content-header payload.
//!
//! Invariant: decoding never panics, and when it succeeds, encoding is a
//! fixed point after one round (compared as bytes: headers may hold NaN).
#![no_main]

use bytes::{Bytes, BytesMut};
use carehare_core::properties::ContentHeader;
use libfuzzer_sys::fuzz_target;

fn encode(header: &ContentHeader) -> Bytes {
    let mut out = BytesMut::new();
    header.encode(&mut out);
    out.freeze()
}

fuzz_target!(|data: &[u8]| {
    let Ok(first) = ContentHeader::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let bytes1 = encode(&first);
    assert!(
        bytes1.len() <= data.len(),
        "re-encoding grew the header from {} to {} bytes",
        data.len(),
        bytes1.len()
    );
    let second = match ContentHeader::decode(bytes1.clone()) {
        Ok(h) => h,
        Err(e) => panic!("re-encoded header does not decode: {e}\nheader: {first:?}"),
    };
    assert_eq!(second.class_id, first.class_id);
    assert_eq!(second.body_size, first.body_size);
    let bytes2 = encode(&second);
    assert_eq!(bytes1, bytes2, "encoding is not stable");
});
