use super::*;
use crate::method::{BasicDeliver, ConnectionCloseOk, arbitrary_method};
use crate::properties::{BASIC_CLASS_ID, arb::properties};
use crate::types::ShortStr;
use proptest::prelude::*;

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), arbitrary_method())
            .prop_map(|(channel, method)| Frame::Method { channel, method }),
        (any::<u16>(), properties(), any::<u64>()).prop_map(|(channel, properties, body_size)| {
            Frame::Header {
                channel,
                header: ContentHeader {
                    class_id: BASIC_CLASS_ID,
                    body_size,
                    properties: Box::new(properties),
                },
            }
        }),
        (
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..2000)
        )
            .prop_map(|(channel, body)| Frame::Body {
                channel,
                payload: body.into()
            }),
        any::<u16>().prop_map(|channel| Frame::Heartbeat { channel }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn frames_round_trip_and_consume_exactly_their_bytes(
        frames in proptest::collection::vec(arb_frame(), 1..5),
        trailing in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let encoded_len = buf.len();
        // Fewer than 7 trailing bytes can never be a whole frame.
        buf.extend_from_slice(&trailing);
        let mut decoded = Vec::new();
        while let Some(f) = decode_frame(&mut buf, 0).expect("decodes") {
            decoded.push(f);
        }
        prop_assert_eq!(&decoded, &frames);
        prop_assert_eq!(&buf[..], &trailing[..]);
        prop_assert!(encoded_len > 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&input[..]);
        let before = buf.len();
        let mut consumed = 0;
        while let Ok(Some(raw)) = decode_raw(&mut buf, 4096) {
            consumed += raw.payload.len() + FRAME_OVERHEAD;
            let _ = raw.parse();
        }
        prop_assert_eq!(consumed + buf.len(), before);
    }

    #[test]
    fn bytes_arriving_one_at_a_time_give_the_same_frames(frames in proptest::collection::vec(arb_frame(), 1..3)) {
        let mut all = BytesMut::new();
        for f in &frames {
            f.encode(&mut all);
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = decode_frame(&mut buf, 0).expect("decodes") {
                decoded.push(f);
            }
        }
        prop_assert_eq!(decoded, frames);
    }
}

#[test]
fn size_is_checked_from_the_header_alone() {
    // Only the 7-byte header has arrived; it claims 1 GiB.
    let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0x40, 0, 0, 0][..]);
    assert_eq!(
        decode_raw(&mut buf, 131_072),
        Err(DecodeError::FrameTooLarge {
            size: 0x4000_0008,
            max: 131_072
        })
    );
    assert!(
        buf.capacity() < 1024,
        "nothing was reserved for the claimed size"
    );
}

#[test]
fn frame_exactly_at_frame_max_is_accepted() {
    let mut buf = BytesMut::new();
    Frame::Body {
        channel: 1,
        payload: vec![7u8; 4088].into(),
    }
    .encode(&mut buf);
    assert_eq!(buf.len(), 4096);
    assert!(decode_raw(&mut buf.clone(), 4096).unwrap().is_some());
    assert!(decode_raw(&mut buf, 4095).is_err());
}

#[test]
fn bad_frame_end_is_typed() {
    let mut buf = BytesMut::from(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0xAB][..]);
    assert_eq!(
        decode_raw(&mut buf, 4096),
        Err(DecodeError::BadFrameEnd(0xAB))
    );
}

#[test]
fn unknown_frame_type_is_typed() {
    let mut buf = BytesMut::from(&[4, 0, 0, 0, 0, 0, 0, FRAME_END][..]);
    assert_eq!(
        decode_raw(&mut buf, 4096),
        Err(DecodeError::UnknownFrameType(4))
    );
}

#[test]
fn heartbeat_with_payload_is_typed() {
    let mut buf = BytesMut::from(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 1, 9, FRAME_END][..]);
    assert_eq!(
        decode_frame(&mut buf, 4096),
        Err(DecodeError::HeartbeatPayload(1))
    );
}

#[test]
fn body_is_a_slice_of_the_input_buffer() {
    let mut buf = BytesMut::new();
    Frame::Body {
        channel: 1,
        payload: Bytes::from_static(b"hello"),
    }
    .encode(&mut buf);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Some(Frame::Body { payload, .. }) = decode_frame(&mut buf, 4096).unwrap() else {
        panic!("not a body frame");
    };
    let at = payload.as_ptr() as usize;
    assert!(
        at >= start && at + payload.len() <= end,
        "payload was copied"
    );
}

#[test]
fn content_is_split_at_frame_max() {
    let mut out = BytesMut::new();
    let body = vec![1u8; 10_000];
    encode_content(
        &mut out,
        3,
        BASIC_CLASS_ID,
        &BasicProperties::default(),
        &body,
        4096,
    );
    let mut sizes = Vec::new();
    let mut header_seen = false;
    while let Some(f) = decode_frame(&mut out, 4096).unwrap() {
        match f {
            Frame::Header { header, .. } => {
                header_seen = true;
                assert_eq!(header.body_size, 10_000);
            }
            Frame::Body { payload, .. } => sizes.push(payload.len()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(header_seen);
    assert_eq!(sizes, vec![4088, 4088, 1824]);
}

#[test]
fn empty_body_sends_no_body_frame() {
    let mut out = BytesMut::new();
    encode_content(
        &mut out,
        1,
        BASIC_CLASS_ID,
        &BasicProperties::default(),
        b"",
        4096,
    );
    assert!(matches!(
        decode_frame(&mut out, 4096).unwrap(),
        Some(Frame::Header { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn golden_frames() {
    let mut out = BytesMut::new();
    encode_method(&mut out, 0, &ConnectionCloseOk {}.into());
    assert_eq!(&out[..], &[1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, FRAME_END]);
    let deliver = Method::from(BasicDeliver {
        consumer_tag: ShortStr::from_static("c"),
        delivery_tag: 1,
        redelivered: false,
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("q"),
    });
    let mut out = BytesMut::new();
    encode_method(&mut out, 1, &deliver);
    assert_eq!(
        &out[..],
        &[
            1, 0, 1, 0, 0, 0, 18, 0, 60, 0, 60, 1, b'c', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, b'q',
            FRAME_END
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The chunked encoder gives the same bytes as the copying one, and
    /// pieces of at least ZERO_COPY_MIN are slices of the body, not copies.
    #[test]
    fn chunked_content_is_byte_identical(
        len in prop_oneof![0usize..100, 8000usize..9000, 20_000usize..70_000],
        frame_max in prop_oneof![Just(0u32), Just(4096u32), Just(10_000u32), Just(131_072u32)],
        prefix in 0usize..40,
    ) {
        let body = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        let props = BasicProperties::default();
        let mut copied = BytesMut::new();
        copied.put_slice(&vec![7u8; prefix]);
        encode_content(&mut copied, 5, BASIC_CLASS_ID, &props, &body, frame_max);

        let mut out = BytesMut::new();
        out.put_slice(&vec![7u8; prefix]);
        let mut chunks: Vec<Bytes> = Vec::new();
        encode_content_chunks(&mut out, &mut chunks, 5, BASIC_CLASS_ID, &props, &body, frame_max);
        let body_range = body.as_ptr_range();
        let mut joined = Vec::new();
        for c in &chunks {
            if c.len() >= ZERO_COPY_MIN {
                let r = c.as_ptr_range();
                prop_assert!(body_range.start <= r.start && r.end <= body_range.end, "piece was copied");
            }
            joined.extend_from_slice(c);
        }
        joined.extend_from_slice(&out);
        prop_assert_eq!(&joined[..], &copied[..]);
    }
}
