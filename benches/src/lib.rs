//! What the bench programs share. Here: the fixtures of the codec
//! benchmarks and the allocation count (the same messages encoded and
//! decoded by carehare-core and by amq-protocol, the codec lapin uses).
//! In the modules: the end-to-end and latency workloads, the amqprs
//! setup, and the figure files with their plotter.

pub mod amqprs_peer;
pub mod e2e;
pub mod figure;
pub mod lapin_peer;
pub mod latency;
pub mod plot;
pub mod raw;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, basic};
use bytes::Bytes;
use bytes::BytesMut;
use carehare_core::frame::{
    Frame, decode_frame, encode_content, encode_content_chunks, encode_method,
};
use carehare_core::method::{BasicDeliver, BasicPublish, Method};
use carehare_core::properties::{BASIC_CLASS_ID, BasicProperties};
use carehare_core::types::ShortStr;

/// RabbitMQ's default `frame_max`; a 128 KiB body takes two body frames.
pub const FRAME_MAX: u32 = 131_072;
/// The channel every frame is on.
pub const CHANNEL: u16 = 1;

fn carehare_props() -> BasicProperties {
    BasicProperties {
        content_type: Some(ShortStr::from_static("application/octet-stream")),
        delivery_mode: Some(2),
        ..Default::default()
    }
}

fn amq_props() -> basic::AMQPProperties {
    basic::AMQPProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_delivery_mode(2)
}

/// Appends one basic.deliver + content header + body frame(s), encoded by
/// carehare-core.
pub fn carehare_deliver(out: &mut BytesMut, delivery_tag: u64, body: &[u8]) {
    let m = Method::from(BasicDeliver {
        consumer_tag: ShortStr::from_static("amq.ctag-bench"),
        delivery_tag,
        redelivered: false,
        exchange: ShortStr::from_static("bench"),
        routing_key: ShortStr::from_static("bench.key"),
    });
    encode_method(out, CHANNEL, &m);
    encode_content(
        out,
        CHANNEL,
        BASIC_CLASS_ID,
        &carehare_props(),
        body,
        FRAME_MAX,
    );
}

/// `n` deliveries of `body`, as one byte stream.
pub fn deliver_stream(n: usize, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    for i in 0..n {
        carehare_deliver(&mut out, i as u64 + 1, body);
    }
    out
}

/// Appends basic.publish + header + body frame(s), encoded by carehare-core.
pub fn carehare_publish(out: &mut BytesMut, body: &[u8]) {
    let m = Method::from(BasicPublish {
        reserved_1: 0,
        exchange: ShortStr::from_static("bench"),
        routing_key: ShortStr::from_static("bench.key"),
        mandatory: false,
        immediate: false,
    });
    encode_method(out, CHANNEL, &m);
    encode_content(
        out,
        CHANNEL,
        BASIC_CLASS_ID,
        &carehare_props(),
        body,
        FRAME_MAX,
    );
}

/// [`carehare_publish`] the way the client's write path does it: bodies
/// of at least `ZERO_COPY_MIN` bytes are not copied but queued in `chunks`
/// as slices of `body` (the driver sends them with one vectored write).
pub fn carehare_publish_chunks(out: &mut BytesMut, chunks: &mut Vec<Bytes>, body: &Bytes) {
    let m = Method::from(BasicPublish {
        reserved_1: 0,
        exchange: ShortStr::from_static("bench"),
        routing_key: ShortStr::from_static("bench.key"),
        mandatory: false,
        immediate: false,
    });
    encode_method(out, CHANNEL, &m);
    encode_content_chunks(
        out,
        chunks,
        CHANNEL,
        BASIC_CLASS_ID,
        &carehare_props(),
        body,
        FRAME_MAX,
    );
}

fn amq_write(out: Vec<u8>, frame: &AMQPFrame) -> Vec<u8> {
    match gen_frame(frame)(WriteContext::from(out)) {
        Ok(ctx) => ctx.write,
        Err(e) => panic!("amq-protocol gen_frame failed: {e:?}"),
    }
}

/// Appends basic.publish + header + body frame(s), encoded by amq-protocol
/// the way lapin does it: frames built per publish (owned `ShortString`s,
/// body chunks copied into `Vec<u8>`), then serialised with `gen_frame`.
pub fn amq_publish(mut out: Vec<u8>, body: &[u8]) -> Vec<u8> {
    let method = AMQPFrame::Method(
        CHANNEL,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "bench".into(),
            routing_key: "bench.key".into(),
            mandatory: false,
            immediate: false,
        })),
    );
    out = amq_write(out, &method);
    let header = AMQPFrame::Header(
        CHANNEL,
        AMQPContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: body.len() as u64,
            properties: amq_props(),
        },
    );
    out = amq_write(out, &header);
    for chunk in body.chunks(FRAME_MAX as usize - 8) {
        out = amq_write(out, &AMQPFrame::Body(CHANNEL, chunk.to_vec()));
    }
    out
}

/// Decodes every frame in `buf` with carehare-core; returns body bytes seen.
pub fn carehare_decode_all(buf: &mut BytesMut) -> usize {
    let mut body = 0;
    while let Some(f) = decode_frame(buf, FRAME_MAX).expect("valid stream") {
        if let Frame::Body { payload, .. } = &f {
            body += payload.len();
        }
        std::hint::black_box(&f);
    }
    body
}

/// Decodes every frame in `input` with amq-protocol; returns body bytes seen.
pub fn amq_decode_all(mut input: &[u8]) -> usize {
    let mut body = 0;
    while !input.is_empty() {
        let (rest, f) = match parse_frame(input) {
            Ok(ok) => ok,
            Err(e) => panic!("amq-protocol parse_frame failed: {e:?}"),
        };
        if let AMQPFrame::Body(_, payload) = &f {
            body += payload.len();
        }
        std::hint::black_box(&f);
        input = rest;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_codecs_agree_on_the_bytes() {
        for len in [12, 1024, 128 * 1024] {
            let body = vec![0xAB; len];
            let mut ours = BytesMut::new();
            carehare_publish(&mut ours, &body);
            let theirs = amq_publish(Vec::new(), &body);
            assert_eq!(&ours[..], &theirs[..], "publish, {len} B");
            let mut out = BytesMut::new();
            let mut chunks = Vec::new();
            carehare_publish_chunks(&mut out, &mut chunks, &Bytes::from(body.clone()));
            let mut joined: Vec<u8> = chunks.concat();
            joined.extend_from_slice(&out);
            assert_eq!(&joined[..], &theirs[..], "publish (chunks), {len} B");

            let stream = deliver_stream(3, &body);
            assert_eq!(amq_decode_all(&stream), 3 * len);
            assert_eq!(carehare_decode_all(&mut stream.clone()), 3 * len);
        }
    }
}
