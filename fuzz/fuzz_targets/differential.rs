//! Differential: carehare-core's decoders against `amq-protocol`'s parser
//! (the one lapin uses), on the same bytes.
//!
//! The first input byte picks what the rest is (modulo 4):
//! 0. a stream of frames: `frame::decode_frame` against
//!    `amq_protocol::frame::parse_frame`, frame after frame;
//! 1. a method-frame payload: `Method::decode` against `parse_class`;
//! 2. a content-header payload: `ContentHeader::decode` against
//!    `parse_content_header`;
//! 3. one length-prefixed field table: `table::decode_field_table` against
//!    `parse_field_table`.
//!
//! Invariants: both accept or both reject (for a stream, both also agree
//! on "more bytes needed"), and what both accept decodes to the same
//! values: every method argument (reserved arguments and `basic.qos`'s
//! `prefetch-size` excepted: amq-protocol does not keep them), every
//! property, every table entry (NaN compared by its `Debug` form). The
//! known, documented differences (see "Differences with amq-protocol" in
//! `docs/fuzzing.md`) are tolerated, each by the exact error carehare
//! gives for it and nothing wider: see [`known_difference`].
#![no_main]

use std::sync::OnceLock;

use amq_protocol::frame::{AMQPFrame, parse_frame};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{
    AMQPClass, basic, channel, confirm, connection, exchange, parse_class, queue, tx,
};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{LongString, ShortString};
use bytes::{Bytes, BytesMut};
use carehare_core::error::DecodeError;
use carehare_core::frame::{Frame, decode_frame};
use carehare_core::method::*;
use carehare_core::properties::{BasicProperties, ContentHeader};
use carehare_core::table::decode_field_table;
use carehare_core::types::{FieldTable, Secret, ShortStr};
use libfuzzer_sys::fuzz_target;
use nom::Parser;

fn ss(s: &ShortString) -> ShortStr {
    // amq-protocol read it from a one-octet length: at most 255 bytes.
    ShortStr::new(s.as_str()).expect("a decoded shortstr fits")
}

fn lb(s: &LongString) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn oss(s: &Option<ShortString>) -> Option<ShortStr> {
    s.as_ref().map(ss)
}

/// amq-protocol's method as carehare's, reserved arguments left at their
/// defaults; `None` for a class carehare does not know (`access`).
fn method_of(class: &AMQPClass) -> Option<Method> {
    Some(match class {
        AMQPClass::Connection(connection::AMQPMethod::Start(m)) => ConnectionStart {
            version_major: m.version_major,
            version_minor: m.version_minor,
            server_properties: m.server_properties.clone(),
            mechanisms: lb(&m.mechanisms),
            locales: lb(&m.locales),
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => ConnectionStartOk {
            client_properties: m.client_properties.clone(),
            mechanism: ss(&m.mechanism),
            response: Secret(lb(&m.response)),
            locale: ss(&m.locale),
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::Secure(m)) => ConnectionSecure {
            challenge: lb(&m.challenge),
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::SecureOk(m)) => ConnectionSecureOk {
            response: Secret(lb(&m.response)),
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::Tune(m)) => ConnectionTune {
            channel_max: m.channel_max,
            frame_max: m.frame_max,
            heartbeat: m.heartbeat,
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(m)) => ConnectionTuneOk {
            channel_max: m.channel_max,
            frame_max: m.frame_max,
            heartbeat: m.heartbeat,
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::Open(m)) => ConnectionOpen {
            virtual_host: ss(&m.virtual_host),
            ..Default::default()
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {
            ConnectionOpenOk::default().into()
        }
        AMQPClass::Connection(connection::AMQPMethod::Close(m)) => ConnectionClose {
            reply_code: m.reply_code,
            reply_text: ss(&m.reply_text),
            class_id: m.class_id,
            method_id: m.method_id,
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => ConnectionCloseOk {}.into(),
        AMQPClass::Connection(connection::AMQPMethod::Blocked(m)) => ConnectionBlocked {
            reason: ss(&m.reason),
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => {
            ConnectionUnblocked {}.into()
        }
        AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(m)) => ConnectionUpdateSecret {
            new_secret: Secret(lb(&m.new_secret)),
            reason: ss(&m.reason),
        }
        .into(),
        AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(_)) => {
            ConnectionUpdateSecretOk {}.into()
        }
        AMQPClass::Channel(channel::AMQPMethod::Open(_)) => ChannelOpen::default().into(),
        AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => ChannelOpenOk::default().into(),
        AMQPClass::Channel(channel::AMQPMethod::Flow(m)) => ChannelFlow { active: m.active }.into(),
        AMQPClass::Channel(channel::AMQPMethod::FlowOk(m)) => {
            ChannelFlowOk { active: m.active }.into()
        }
        AMQPClass::Channel(channel::AMQPMethod::Close(m)) => ChannelClose {
            reply_code: m.reply_code,
            reply_text: ss(&m.reply_text),
            class_id: m.class_id,
            method_id: m.method_id,
        }
        .into(),
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => ChannelCloseOk {}.into(),
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => ExchangeDeclare {
            exchange: ss(&m.exchange),
            kind: ss(&m.kind),
            passive: m.passive,
            durable: m.durable,
            auto_delete: m.auto_delete,
            internal: m.internal,
            no_wait: m.nowait,
            arguments: m.arguments.clone(),
            ..Default::default()
        }
        .into(),
        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)) => ExchangeDeclareOk {}.into(),
        AMQPClass::Exchange(exchange::AMQPMethod::Delete(m)) => ExchangeDelete {
            exchange: ss(&m.exchange),
            if_unused: m.if_unused,
            no_wait: m.nowait,
            ..Default::default()
        }
        .into(),
        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(_)) => ExchangeDeleteOk {}.into(),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => ExchangeBind {
            destination: ss(&m.destination),
            source: ss(&m.source),
            routing_key: ss(&m.routing_key),
            no_wait: m.nowait,
            arguments: m.arguments.clone(),
            ..Default::default()
        }
        .into(),
        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(_)) => ExchangeBindOk {}.into(),
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => ExchangeUnbind {
            destination: ss(&m.destination),
            source: ss(&m.source),
            routing_key: ss(&m.routing_key),
            no_wait: m.nowait,
            arguments: m.arguments.clone(),
            ..Default::default()
        }
        .into(),
        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(_)) => ExchangeUnbindOk {}.into(),
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => QueueDeclare {
            queue: ss(&m.queue),
            passive: m.passive,
            durable: m.durable,
            exclusive: m.exclusive,
            auto_delete: m.auto_delete,
            no_wait: m.nowait,
            arguments: m.arguments.clone(),
            ..Default::default()
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(m)) => QueueDeclareOk {
            queue: ss(&m.queue),
            message_count: m.message_count,
            consumer_count: m.consumer_count,
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => QueueBind {
            queue: ss(&m.queue),
            exchange: ss(&m.exchange),
            routing_key: ss(&m.routing_key),
            no_wait: m.nowait,
            arguments: m.arguments.clone(),
            ..Default::default()
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => QueueBindOk {}.into(),
        AMQPClass::Queue(queue::AMQPMethod::Purge(m)) => QueuePurge {
            queue: ss(&m.queue),
            no_wait: m.nowait,
            ..Default::default()
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(m)) => QueuePurgeOk {
            message_count: m.message_count,
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::Delete(m)) => QueueDelete {
            queue: ss(&m.queue),
            if_unused: m.if_unused,
            if_empty: m.if_empty,
            no_wait: m.nowait,
            ..Default::default()
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(m)) => QueueDeleteOk {
            message_count: m.message_count,
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => QueueUnbind {
            queue: ss(&m.queue),
            exchange: ss(&m.exchange),
            routing_key: ss(&m.routing_key),
            arguments: m.arguments.clone(),
            ..Default::default()
        }
        .into(),
        AMQPClass::Queue(queue::AMQPMethod::UnbindOk(_)) => QueueUnbindOk {}.into(),
        AMQPClass::Basic(basic::AMQPMethod::Qos(m)) => BasicQos {
            prefetch_count: m.prefetch_count,
            global: m.global,
            ..Default::default()
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => BasicQosOk {}.into(),
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => BasicConsume {
            queue: ss(&m.queue),
            consumer_tag: ss(&m.consumer_tag),
            no_local: m.no_local,
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            no_wait: m.nowait,
            arguments: m.arguments.clone(),
            ..Default::default()
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(m)) => BasicConsumeOk {
            consumer_tag: ss(&m.consumer_tag),
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::Cancel(m)) => BasicCancel {
            consumer_tag: ss(&m.consumer_tag),
            no_wait: m.nowait,
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::CancelOk(m)) => BasicCancelOk {
            consumer_tag: ss(&m.consumer_tag),
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::Publish(m)) => BasicPublish {
            exchange: ss(&m.exchange),
            routing_key: ss(&m.routing_key),
            mandatory: m.mandatory,
            immediate: m.immediate,
            ..Default::default()
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::Return(m)) => BasicReturn {
            reply_code: m.reply_code,
            reply_text: ss(&m.reply_text),
            exchange: ss(&m.exchange),
            routing_key: ss(&m.routing_key),
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::Deliver(m)) => BasicDeliver {
            consumer_tag: ss(&m.consumer_tag),
            delivery_tag: m.delivery_tag,
            redelivered: m.redelivered,
            exchange: ss(&m.exchange),
            routing_key: ss(&m.routing_key),
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::Get(m)) => BasicGet {
            queue: ss(&m.queue),
            no_ack: m.no_ack,
            ..Default::default()
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::GetOk(m)) => BasicGetOk {
            delivery_tag: m.delivery_tag,
            redelivered: m.redelivered,
            exchange: ss(&m.exchange),
            routing_key: ss(&m.routing_key),
            message_count: m.message_count,
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(_)) => BasicGetEmpty::default().into(),
        AMQPClass::Basic(basic::AMQPMethod::Ack(m)) => BasicAck {
            delivery_tag: m.delivery_tag,
            multiple: m.multiple,
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::Reject(m)) => BasicReject {
            delivery_tag: m.delivery_tag,
            requeue: m.requeue,
        }
        .into(),
        AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(m)) => {
            BasicRecoverAsync { requeue: m.requeue }.into()
        }
        AMQPClass::Basic(basic::AMQPMethod::Recover(m)) => {
            BasicRecover { requeue: m.requeue }.into()
        }
        AMQPClass::Basic(basic::AMQPMethod::RecoverOk(_)) => BasicRecoverOk {}.into(),
        AMQPClass::Basic(basic::AMQPMethod::Nack(m)) => BasicNack {
            delivery_tag: m.delivery_tag,
            multiple: m.multiple,
            requeue: m.requeue,
        }
        .into(),
        AMQPClass::Confirm(confirm::AMQPMethod::Select(m)) => {
            ConfirmSelect { no_wait: m.nowait }.into()
        }
        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => ConfirmSelectOk {}.into(),
        AMQPClass::Tx(tx::AMQPMethod::Select(_)) => TxSelect {}.into(),
        AMQPClass::Tx(tx::AMQPMethod::SelectOk(_)) => TxSelectOk {}.into(),
        AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => TxCommit {}.into(),
        AMQPClass::Tx(tx::AMQPMethod::CommitOk(_)) => TxCommitOk {}.into(),
        AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => TxRollback {}.into(),
        AMQPClass::Tx(tx::AMQPMethod::RollbackOk(_)) => TxRollbackOk {}.into(),
        AMQPClass::Access(_) => return None,
    })
}

/// Clears what amq-protocol does not keep, so the two compare equal.
fn clear_unkept(method: &mut Method) {
    match method {
        Method::ConnectionOpen(m) => {
            m.reserved_1 = Default::default();
            m.reserved_2 = Default::default();
        }
        Method::ConnectionOpenOk(m) => {
            m.reserved_1 = Default::default();
        }
        Method::ChannelOpen(m) => {
            m.reserved_1 = Default::default();
        }
        Method::ChannelOpenOk(m) => {
            m.reserved_1 = Default::default();
        }
        Method::ExchangeDeclare(m) => {
            m.reserved_1 = Default::default();
        }
        Method::ExchangeDelete(m) => {
            m.reserved_1 = Default::default();
        }
        Method::ExchangeBind(m) => {
            m.reserved_1 = Default::default();
        }
        Method::ExchangeUnbind(m) => {
            m.reserved_1 = Default::default();
        }
        Method::QueueDeclare(m) => {
            m.reserved_1 = Default::default();
        }
        Method::QueueBind(m) => {
            m.reserved_1 = Default::default();
        }
        Method::QueuePurge(m) => {
            m.reserved_1 = Default::default();
        }
        Method::QueueDelete(m) => {
            m.reserved_1 = Default::default();
        }
        Method::QueueUnbind(m) => {
            m.reserved_1 = Default::default();
        }
        Method::BasicQos(m) => {
            m.prefetch_size = Default::default();
        }
        Method::BasicConsume(m) => {
            m.reserved_1 = Default::default();
        }
        Method::BasicPublish(m) => {
            m.reserved_1 = Default::default();
        }
        Method::BasicGet(m) => {
            m.reserved_1 = Default::default();
        }
        Method::BasicGetEmpty(m) => {
            m.reserved_1 = Default::default();
        }
        _ => {}
    }
}

fn properties_of(p: &AMQPProperties) -> BasicProperties {
    BasicProperties {
        content_type: oss(p.content_type()),
        content_encoding: oss(p.content_encoding()),
        headers: p.headers().clone(),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: oss(p.correlation_id()),
        reply_to: oss(p.reply_to()),
        expiration: oss(p.expiration()),
        message_id: oss(p.message_id()),
        timestamp: *p.timestamp(),
        kind: oss(p.kind()),
        user_id: oss(p.user_id()),
        app_id: oss(p.app_id()),
        cluster_id: oss(p.cluster_id()),
    }
}

/// Equal, or equal but for NaN (tables may hold NaN floats, and NaN is not
/// equal to itself): then the `Debug` forms agree.
fn assert_same<T: PartialEq + std::fmt::Debug>(carehare: &T, amq: &T, input: &[u8]) {
    if carehare != amq {
        let (c, a) = (format!("{carehare:?}"), format!("{amq:?}"));
        assert!(
            c == a && c.contains("NaN"),
            "decoded values differ on {input:02x?}:\n carehare:     {c}\n amq-protocol: {a}"
        );
    }
}

/// Whether carehare's rejection `e` is one of the documented differences,
/// where amq-protocol accepts and carehare, following RabbitMQ, refuses.
/// With `CAREHARE_FUZZ_STRICT` set in the environment, none is tolerated
/// (to see them found again).
fn known_difference(e: &DecodeError) -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    if *STRICT.get_or_init(|| std::env::var_os("CAREHARE_FUZZ_STRICT").is_some()) {
        return false;
    }
    matches!(
        e,
        // 'U' and 'L': the spec's letters for short-int and
        // long-long-uint; RabbitMQ knows neither.
        DecodeError::UnknownFieldType(b'U' | b'L')
            // A table nested deeper than carehare's limit.
            | DecodeError::TooDeep(_)
            // A content header of another class than `basic`.
            | DecodeError::UnknownContentClass(_)
            // Property-flag bits 0 and 1 (continuation, unused).
            | DecodeError::UnknownPropertyFlags(_)
            // A heartbeat frame with a payload.
            | DecodeError::HeartbeatPayload(_)
            // The `access` class (30), gone from 0-9-1.
            | DecodeError::UnknownMethod { class_id: 30, .. }
            // A protocol header where a frame should be.
            | DecodeError::UnknownFrameType(b'A')
    )
}

/// Compares one decoded method.
fn same_method(carehare: &Method, amq: &AMQPClass, input: &[u8]) {
    let Some(amq) = method_of(amq) else {
        panic!(
            "amq-protocol decoded a class carehare knows nothing of, and carehare accepted it: {carehare:?}"
        );
    };
    let mut carehare = carehare.clone();
    clear_unkept(&mut carehare);
    assert_same(&carehare, &amq, input);
}

fn method_payload(input: &[u8]) {
    let carehare = Method::decode(Bytes::copy_from_slice(input));
    let amq = nom::combinator::all_consuming(parse_class).parse(input);
    match (carehare, amq) {
        (Ok(c), Ok((_, a))) => same_method(&c, &a, input),
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) if known_difference(&e) => {}
        (c, a) => panic!(
            "accept/reject differ on {input:02x?}:\n carehare:     {c:?}\n amq-protocol: {a:?}"
        ),
    }
}

fn content_header(input: &[u8]) {
    let carehare = ContentHeader::decode(Bytes::copy_from_slice(input));
    let amq = nom::combinator::all_consuming(amq_protocol::frame::parsing::parse_content_header)
        .parse(input);
    match (carehare, amq) {
        (Ok(c), Ok((_, a))) => {
            assert_eq!((c.class_id, c.body_size), (a.class_id, a.body_size));
            assert_same(&*c.properties, &properties_of(&a.properties), input);
        }
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) if known_difference(&e) => {}
        (c, a) => panic!(
            "accept/reject differ on {input:02x?}:\n carehare:     {c:?}\n amq-protocol: {a:?}"
        ),
    }
}

fn field_table(input: &[u8]) {
    let carehare = decode_field_table(Bytes::copy_from_slice(input));
    let amq = nom::combinator::all_consuming(parse_field_table).parse(input);
    match (carehare, amq) {
        (Ok(c), Ok((_, a))) => assert_same::<FieldTable>(&c, &a, input),
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) if known_difference(&e) => {}
        (c, a) => panic!(
            "accept/reject differ on {input:02x?}:\n carehare:     {c:?}\n amq-protocol: {a:?}"
        ),
    }
}

/// Frame after frame, until one side stops.
fn frames(input: &[u8]) {
    let mut buf = BytesMut::from(input);
    let mut rest = input;
    loop {
        // The limit is what is left of the input: a frame that does not
        // fit is one whose bytes have not all come, and carehare reserves
        // room up to `frame_max` for such a frame, so a limit of 0 (none)
        // would reserve gigabytes. `FrameTooLarge` here means "more bytes
        // needed"; the frame type is checked before the size.
        let frame_max = u32::try_from(buf.len()).unwrap_or(u32::MAX).max(8);
        let carehare = match decode_frame(&mut buf, frame_max) {
            Err(DecodeError::FrameTooLarge { .. }) => Ok(None),
            other => other,
        };
        let amq = parse_frame(rest);
        match (carehare, amq) {
            (Ok(Some(c)), Ok((r, a))) => {
                same_frame(&c, &a, input);
                // Both took the same number of bytes.
                assert_eq!(buf.len(), r.len(), "frame lengths differ on {input:02x?}");
                rest = r;
            }
            // Both want more bytes.
            (Ok(None), Err(nom::Err::Incomplete(_))) => return,
            // amq-protocol rejects a bad frame type from its first octet;
            // carehare reads the 7-octet frame header first. Completed to
            // 7 octets, carehare must reject it too.
            (Ok(None), Err(nom::Err::Error(_) | nom::Err::Failure(_))) if buf.len() < 7 => {
                let mut padded = buf.clone();
                padded.resize(7, 0);
                let late = decode_frame(&mut padded, 8);
                assert!(
                    matches!(late, Err(DecodeError::UnknownFrameType(_))),
                    "amq-protocol rejects the frame type of {input:02x?}, carehare then gives {late:?}"
                );
                return;
            }
            (Err(_), Err(nom::Err::Error(_) | nom::Err::Failure(_))) => return,
            (Err(e), Ok(_)) if known_difference(&e) => return,
            // The protocol header a server sends back when it refuses the
            // version: amq-protocol reads it as a frame, carehare (which
            // expects frames only once the server has answered) refuses it.
            (Err(e @ DecodeError::UnknownFrameType(b'A')), Err(_)) if known_difference(&e) => {
                return;
            }
            (c, a) => {
                panic!("frames differ on {input:02x?}:\n carehare:     {c:?}\n amq-protocol: {a:?}")
            }
        }
    }
}

fn same_frame(carehare: &Frame, amq: &AMQPFrame, input: &[u8]) {
    match (carehare, amq) {
        (Frame::Method { channel, method }, AMQPFrame::Method(ch, class)) => {
            assert_eq!(channel, ch);
            same_method(method, class, input);
        }
        (Frame::Header { channel, header }, AMQPFrame::Header(ch, h)) => {
            assert_eq!(channel, ch);
            assert_eq!(
                (header.class_id, header.body_size),
                (h.class_id, h.body_size)
            );
            assert_same(&*header.properties, &properties_of(&h.properties), input);
        }
        (Frame::Body { channel, payload }, AMQPFrame::Body(ch, body)) => {
            assert_eq!((channel, &payload[..]), (ch, &body[..]));
        }
        (Frame::Heartbeat { channel: 0 }, AMQPFrame::Heartbeat) => {}
        // amq-protocol names a heartbeat on another channel (which the
        // connection refuses) differently; the decoded value is the same.
        (Frame::Heartbeat { channel }, AMQPFrame::InvalidHeartbeat(ch)) => assert_eq!(channel, ch),
        (c, a) => {
            panic!("frames differ on {input:02x?}:\n carehare:     {c:?}\n amq-protocol: {a:?}")
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => frames(input),
        1 => method_payload(input),
        2 => content_header(input),
        _ => field_table(input),
    }
});
