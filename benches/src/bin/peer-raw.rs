//! The broker's ceiling: the end-to-end workload with as little client as
//! there can be. One blocking socket on one thread, no runtime. Each
//! message's frames (`basic.publish`, content header, body) are encoded
//! once and the same bytes are written for every publish, as many at a
//! time as the confirm window allows; incoming frames are only decoded
//! far enough to count confirms and deliveries. Consuming acks with a
//! `basic.ack` (multiple) every `--multi-ack-every` deliveries, as the
//! other peers do. Whatever rate this reaches is what the broker can
//! take on this machine; the clients' rates are measured against it.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use carehare_benches::e2e::{PhaseTimer, Workload, host_port, report};
use carehare_core::frame::{Frame, decode_frame, encode_content, encode_method};
use carehare_core::method::*;
use carehare_core::properties::{BASIC_CLASS_ID, BasicProperties};
use carehare_core::types::{FieldTable, Secret, ShortStr};

const FRAME_MAX: u32 = 131_072;
const CHANNEL: u16 = 1;

fn main() {
    let w = Workload::from_args();
    let mut c = Raw::connect(&w.url);
    let queue = c.setup();

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
        match c.next_method() {
            Method::BasicAck(a) => confirmed = confirmed.max(a.delivery_tag),
            other => panic!("unexpected while publishing: {other:?}"),
        }
    }
    let publish = timer.stop(w.count);

    // Consume: count deliveries, ack every `multi_ack_every`.
    c.send(BasicQos {
        prefetch_count: w.prefetch,
        ..Default::default()
    });
    assert!(matches!(c.next_method(), Method::BasicQosOk(_)));
    let timer = PhaseTimer::start();
    c.send(BasicConsume {
        queue: short(&queue),
        ..Default::default()
    });
    let mut delivered = 0u64;
    let mut acked = 0u64;
    while delivered < w.count {
        // Other frames: the deliveries' headers and bodies, consume-ok.
        if let Frame::Method {
            method: Method::BasicDeliver(d),
            ..
        } = c.next_frame()
        {
            delivered += 1;
            if delivered - acked >= w.multi_ack_every || delivered == w.count {
                c.send(BasicAck {
                    delivery_tag: d.delivery_tag,
                    multiple: true,
                });
                acked = delivered;
            }
        }
    }
    let consume = timer.stop(w.count);
    report("raw", &w, publish, consume);
}

struct Raw {
    sock: TcpStream,
    buf: BytesMut,
}

impl Raw {
    fn connect(url: &str) -> Self {
        let (host, port) = host_port(url);
        let mut sock = TcpStream::connect((host.as_str(), port)).expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        sock.write_all(b"AMQP\x00\x00\x09\x01")
            .expect("protocol header");
        Raw {
            sock,
            buf: BytesMut::with_capacity(256 * 1024),
        }
    }

    /// The handshake as guest, a channel in confirm mode, and a
    /// server-named exclusive queue.
    fn setup(&mut self) -> String {
        assert!(matches!(self.next_method(), Method::ConnectionStart(_)));
        self.send_on(
            0,
            ConnectionStartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortStr::from_static("PLAIN"),
                response: Secret(bytes::Bytes::from_static(b"\0guest\0guest")),
                locale: ShortStr::from_static("en_US"),
            },
        );
        let Method::ConnectionTune(tune) = self.next_method() else {
            panic!("tune expected");
        };
        self.send_on(
            0,
            ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: FRAME_MAX,
                heartbeat: 0,
            },
        );
        self.send_on(
            0,
            ConnectionOpen {
                virtual_host: ShortStr::from_static("/"),
                ..Default::default()
            },
        );
        assert!(matches!(self.next_method(), Method::ConnectionOpenOk(_)));
        self.send(ChannelOpen::default());
        assert!(matches!(self.next_method(), Method::ChannelOpenOk(_)));
        self.send(ConfirmSelect { no_wait: false });
        assert!(matches!(self.next_method(), Method::ConfirmSelectOk(_)));
        self.send(QueueDeclare {
            exclusive: true,
            ..Default::default()
        });
        let Method::QueueDeclareOk(ok) = self.next_method() else {
            panic!("declare-ok expected");
        };
        ok.queue.as_str().to_string()
    }

    fn send(&mut self, method: impl Into<Method>) {
        self.send_on(CHANNEL, method);
    }

    fn send_on(&mut self, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method.into());
        self.sock.write_all(&out).expect("write");
    }

    fn next_frame(&mut self) -> Frame {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, FRAME_MAX).expect("a valid frame") {
                return frame;
            }
            self.buf.reserve(64 * 1024);
            let start = self.buf.len();
            self.buf.resize(start + 64 * 1024, 0);
            let n = self.sock.read(&mut self.buf[start..]).expect("read");
            assert!(n > 0, "the broker closed the connection");
            self.buf.truncate(start + n);
        }
    }

    fn next_method(&mut self) -> Method {
        loop {
            if let Frame::Method { method, .. } = self.next_frame() {
                return method;
            }
        }
    }
}

fn short(s: &str) -> ShortStr {
    ShortStr::new(s).expect("a short string")
}
