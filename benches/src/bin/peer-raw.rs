//! The broker's ceiling: the end-to-end workload with as little client as
//! there can be. One blocking socket on one thread, no runtime. Each
//! message's frames (`basic.publish`, content header, body) are encoded
//! once and the same bytes are written for every publish, as many at a
//! time as the confirm window allows; incoming frames are not decoded,
//! only looked at far enough to count confirms and deliveries. Consuming
//! acks with a `basic.ack` (multiple) every `--multi-ack-every`
//! deliveries, as the other peers do. Every frame already read is taken
//! before the next write, so that one write answers one read, as a client
//! that batches its writes does. Whatever rate this reaches is what the
//! broker can take on this machine; the clients' rates are measured
//! against it.

use std::io::Write;

use bytes::BytesMut;
use carehare_benches::e2e::{PhaseTimer, Workload, report};
use carehare_benches::raw::{Raw, Seen};
use carehare_benches::{CHANNEL, FRAME_MAX};
use carehare_core::frame::{encode_content, encode_method};
use carehare_core::method::*;
use carehare_core::properties::{BASIC_CLASS_ID, BasicProperties};
use carehare_core::types::ShortStr;

fn main() {
    let w = Workload::from_args();
    let mut c = Raw::connect(&w.url).expect("connect");
    let queue = setup(&mut c);

    // Publish: the same pre-encoded frames, at most `confirm` unconfirmed.
    let mut one = BytesMut::new();
    let publish = BasicPublish {
        routing_key: short(&queue),
        ..Default::default()
    };
    encode_method(&mut one, CHANNEL, &publish.into());
    encode_content(
        &mut one,
        CHANNEL,
        BASIC_CLASS_ID,
        &BasicProperties::default(),
        &w.body(),
        FRAME_MAX,
    );
    let timer = PhaseTimer::start();
    let (mut sent, mut confirmed) = (0u64, 0u64);
    let mut batch = Vec::new();
    while confirmed < w.count {
        let room = (w.confirm as u64 - (sent - confirmed)).min(w.count - sent);
        if room > 0 {
            batch.clear();
            for _ in 0..room {
                batch.extend_from_slice(&one);
            }
            c.sock.write_all(&batch).expect("write");
            sent += room;
        }
        c.take_read(|frame| match frame {
            Seen::Ack { delivery_tag } => confirmed = confirmed.max(delivery_tag),
            other => panic!("unexpected while publishing: {other:?}"),
        })
        .expect("a frame");
    }
    let publish = timer.stop(w.count);

    // Consume: count deliveries, ack every `multi_ack_every`.
    c.send_on(
        CHANNEL,
        BasicQos {
            prefetch_count: w.prefetch,
            ..Default::default()
        },
    )
    .expect("write");
    assert!(matches!(
        c.next_method().expect("a method"),
        Method::BasicQosOk(_)
    ));
    let timer = PhaseTimer::start();
    c.send_on(
        CHANNEL,
        BasicConsume {
            queue: short(&queue),
            ..Default::default()
        },
    )
    .expect("write");
    let (mut delivered, mut acked) = (0u64, 0u64);
    let mut acks = BytesMut::new();
    while delivered < w.count {
        // The acks one read's frames call for go out in one write. Other
        // frames: the deliveries' headers and bodies, consume-ok.
        c.take_read(|frame| {
            if let Seen::Deliver { delivery_tag } = frame {
                delivered += 1;
                if delivered - acked >= w.multi_ack_every || delivered == w.count {
                    let ack = BasicAck {
                        delivery_tag,
                        multiple: true,
                    };
                    encode_method(&mut acks, CHANNEL, &ack.into());
                    acked = delivered;
                }
            }
        })
        .expect("a frame");
        if !acks.is_empty() {
            c.sock.write_all(&acks).expect("write");
            acks.clear();
        }
    }
    let consume = timer.stop(w.count);
    report("raw", &w, publish, consume);
}

/// The handshake, a channel in confirm mode, and a server-named exclusive
/// queue.
fn setup(c: &mut Raw) -> String {
    c.open(0).expect("handshake");
    c.send_on(CHANNEL, ChannelOpen::default()).expect("write");
    assert!(matches!(
        c.next_method().expect("a method"),
        Method::ChannelOpenOk(_)
    ));
    c.send_on(CHANNEL, ConfirmSelect { no_wait: false })
        .expect("write");
    assert!(matches!(
        c.next_method().expect("a method"),
        Method::ConfirmSelectOk(_)
    ));
    c.send_on(
        CHANNEL,
        QueueDeclare {
            exclusive: true,
            ..Default::default()
        },
    )
    .expect("write");
    let Method::QueueDeclareOk(ok) = c.next_method().expect("a method") else {
        panic!("declare-ok expected");
    };
    ok.queue.as_str().to_string()
}

fn short(s: &str) -> ShortStr {
    ShortStr::new(s).expect("a short string")
}
