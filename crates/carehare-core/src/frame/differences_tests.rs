//! Where carehare's decoders and `amq-protocol`'s parser (the one lapin
//! uses) disagree, carehare's side, pinned. Each test names the decision in
//! docs/fuzzing.md ("Differences with amq-protocol") and the input the
//! `differential` fuzz target found for it, kept in `fuzz/regressions/`.
//! In every case amq-protocol accepts and carehare refuses, as RabbitMQ's
//! own parser does.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::error::DecodeError;
use crate::method::Method;
use crate::properties::ContentHeader;
use crate::table::decode_field_table;

fn frame(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    decode_frame(&mut BytesMut::from(bytes), 0)
}

/// `differential-field-type-U`, `differential-field-type-L`: the 0-9-1
/// grammar's tags for short-int and long-long-int, which RabbitMQ writes
/// 's' and 'l' and does not parse.
#[test]
fn field_types_u_and_l_are_refused() {
    let table = |tag: u8, len: u8| {
        let mut t = vec![0, 0, 0, 3 + len, 1, b'k', tag];
        t.extend(std::iter::repeat_n(0, usize::from(len)));
        Bytes::from(t)
    };
    assert_eq!(
        decode_field_table(table(b'U', 2)),
        Err(DecodeError::UnknownFieldType(b'U'))
    );
    assert_eq!(
        decode_field_table(table(b'L', 8)),
        Err(DecodeError::UnknownFieldType(b'L'))
    );
    // RabbitMQ's letters for the same types decode.
    assert!(decode_field_table(table(b's', 2)).is_ok());
    assert!(decode_field_table(table(b'l', 8)).is_ok());
}

/// `differential-heartbeat-payload`: a heartbeat frame carries nothing.
#[test]
fn a_heartbeat_with_a_payload_is_refused() {
    assert_eq!(
        frame(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 1, 0, FRAME_END]),
        Err(DecodeError::HeartbeatPayload(1))
    );
    // A heartbeat on a channel other than 0 decodes (the connection
    // refuses it, with 503): amq-protocol calls it `InvalidHeartbeat`.
    assert_eq!(
        frame(&[FRAME_HEARTBEAT, 0, 1, 0, 0, 0, 0, FRAME_END]),
        Ok(Some(Frame::Heartbeat { channel: 1 }))
    );
}

/// `differential-protocol-header`: a protocol header is not a frame.
#[test]
fn a_protocol_header_is_not_a_frame() {
    assert_eq!(
        frame(b"AMQP\x00\x00\x09\x01"),
        Err(DecodeError::UnknownFrameType(b'A'))
    );
}

/// `differential-header-class`: only `basic` (60) has content.
#[test]
fn a_content_header_of_another_class_is_refused() {
    let mut payload = vec![0, 10, 0, 0];
    payload.extend([0; 8]);
    payload.extend([0, 0]);
    assert_eq!(
        ContentHeader::decode(Bytes::from(payload)),
        Err(DecodeError::UnknownContentClass(10))
    );
}

/// `differential-property-flags`: bit 0 (another flag word follows) and
/// bit 1 (unused) of the property flags name no `basic` property.
#[test]
fn property_flag_bits_0_and_1_are_refused() {
    for flags in [0x0001u16, 0x0002] {
        let mut payload = vec![0, 60, 0, 0];
        payload.extend([0; 8]);
        payload.extend(flags.to_be_bytes());
        // What a second flag word would be.
        payload.extend([0, 0]);
        assert_eq!(
            ContentHeader::decode(Bytes::from(payload)),
            Err(DecodeError::UnknownPropertyFlags(flags))
        );
    }
}

/// `differential-access-class`: the `access` class (30) is not in 0-9-1.
#[test]
fn the_access_class_is_unknown() {
    // access.request-ok, ticket 1
    assert_eq!(
        Method::decode(Bytes::from_static(&[0, 30, 0, 11, 0, 1])),
        Err(DecodeError::UnknownMethod {
            class_id: 30,
            method_id: 11
        })
    );
}
