//! Arbitrary bytes through the frame splitter and the payload parsers.
//!
//! Invariants:
//! - `decode_raw` never panics, and every byte is accounted for: the frames
//!   it split off (payload + 8 bytes each) plus what is left in the buffer
//!   equal the input.
//! - A frame that parses re-encodes (`Frame::encode`) to exactly one frame
//!   that decodes to the same value, and encoding is then stable.
//! - A smaller `frame_max` only ever cuts the frame sequence short, with
//!   `FrameTooLarge`; otherwise both passes agree.
#![no_main]

use bytes::BytesMut;
use carehare_core::error::DecodeError;
use carehare_core::frame::{FRAME_OVERHEAD, Frame, RawFrame, decode_frame, decode_raw};
use libfuzzer_sys::fuzz_target;

/// Splits `data` into raw frames until the decoder wants more bytes or fails.
fn split(data: &[u8], frame_max: u32) -> (Vec<RawFrame>, Option<DecodeError>) {
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    let mut consumed = 0usize;
    let error = loop {
        let before = buf.len();
        match decode_raw(&mut buf, frame_max) {
            Ok(Some(raw)) => {
                assert!(
                    frame_max == 0 || raw.payload.len() + FRAME_OVERHEAD <= frame_max as usize,
                    "frame of {} bytes passed frame_max {frame_max}",
                    raw.payload.len() + FRAME_OVERHEAD
                );
                consumed += raw.payload.len() + FRAME_OVERHEAD;
                assert_eq!(
                    before - buf.len(),
                    raw.payload.len() + FRAME_OVERHEAD,
                    "a frame took a different number of bytes than its size"
                );
                frames.push(raw);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                break None;
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "an error consumed bytes");
                break Some(e);
            }
        }
    };
    assert_eq!(
        consumed + buf.len(),
        data.len(),
        "bytes lost or invented by the frame splitter"
    );
    (frames, error)
}

fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out
}

/// `parse`, then check that encode/decode is a fixed point.
fn round_trip(raw: RawFrame) {
    let Ok(first) = raw.parse() else {
        return;
    };
    let bytes1 = encode(&first);
    let mut buf = bytes1.clone();
    let second = match decode_frame(&mut buf, 0) {
        Ok(Some(f)) => f,
        other => panic!("re-encoded {first:?} does not decode: {other:?}\nbytes: {bytes1:02x?}"),
    };
    assert!(buf.is_empty(), "re-encoding produced more than one frame");
    if first != second {
        // Field tables may hold NaN floats, which are never equal to
        // themselves; their Debug form ("NaN") is. Bit-exactness is
        // checked on the bytes below.
        assert_eq!(
            format!("{first:?}"),
            format!("{second:?}"),
            "decode(encode(frame)) differs"
        );
    }
    let bytes2 = encode(&second);
    assert_eq!(bytes1, bytes2, "encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    let (big, big_err) = split(data, 131_072);
    let (small, small_err) = split(data, 4096);

    assert!(small.len() <= big.len());
    assert_eq!(
        big[..small.len()],
        small[..],
        "frame_max changed how frames are split"
    );
    match &small_err {
        Some(DecodeError::FrameTooLarge { max: 4096, .. }) => {}
        _ => {
            assert_eq!(big.len(), small.len(), "frame_max 4096 lost frames");
            assert_eq!(big_err, small_err);
        }
    }

    for raw in big {
        round_trip(raw);
    }
});
