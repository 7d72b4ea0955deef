//! A scripted fake broker: it feeds the core server frames, decodes what the
//! core sends back, and moves simulated time. No sockets, no sleeping.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use carehare_core::frame::{Frame, PROTOCOL_HEADER, decode_frame, encode_method};
use carehare_core::method::*;
use carehare_core::types::{AMQPValue, FieldTable, ShortStr};
use carehare_core::{Connection, ConnectionConfig, Event, Reply, Tuning};

pub struct Broker {
    pub conn: Connection,
    pub now: Instant,
    from_client: BytesMut,
}

pub fn s(v: &'static str) -> ShortStr {
    ShortStr::from_static(v)
}

impl Broker {
    /// A client that has sent its protocol header, checked.
    pub fn new(config: ConnectionConfig) -> Self {
        let now = Instant::now();
        let mut b = Self {
            conn: Connection::new(config, now),
            now,
            from_client: BytesMut::new(),
        };
        let mut out = Vec::new();
        b.conn.poll_transmit(&mut out);
        assert_eq!(
            out, PROTOCOL_HEADER,
            "the client speaks first, with the 0-9-1 header"
        );
        b
    }

    /// Frames the client has queued since the last call.
    pub fn sent(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        self.conn.poll_transmit(&mut out);
        self.from_client.extend_from_slice(&out);
        let mut frames = Vec::new();
        while let Some(f) =
            decode_frame(&mut self.from_client, 0).expect("client sent a valid frame")
        {
            frames.push(f);
        }
        assert!(self.from_client.is_empty(), "client sent a partial frame");
        frames
    }

    /// The methods the client sent, with their channels.
    pub fn sent_methods(&mut self) -> Vec<(u16, Method)> {
        self.sent()
            .into_iter()
            .map(|f| match f {
                Frame::Method { channel, method } => (channel, method),
                other => panic!("expected only methods, got {other:?}"),
            })
            .collect()
    }

    pub fn expect_one(&mut self) -> (u16, Method) {
        let mut m = self.sent_methods();
        assert_eq!(m.len(), 1, "expected exactly one method, got {m:?}");
        m.remove(0)
    }

    pub fn bytes(&mut self, data: &[u8]) {
        self.conn.handle_input(self.now, data);
    }

    pub fn frame(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        self.bytes(&out);
    }

    pub fn method(&mut self, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method.into());
        self.bytes(&out);
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Moves simulated time forward, firing every timer that falls due on
    /// the way, as a driver would.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(t) = self.conn.poll_timeout() {
            if t > target {
                break;
            }
            self.now = t.max(self.now);
            self.conn.handle_timeout(self.now);
        }
        self.now = target;
        self.conn.handle_timeout(self.now);
    }

    pub fn start(&mut self) {
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString(b"RabbitMQ".to_vec().into()),
        );
        self.method(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: "AMQPLAIN PLAIN EXTERNAL".into(),
                locales: "en_US".into(),
            },
        );
    }

    /// Runs the whole handshake with the server proposing `tune`, checking
    /// every client frame, and returns what was negotiated.
    pub fn handshake_with(&mut self, tune: ConnectionTune) -> Tuning {
        self.start();
        let (ch, start_ok) = self.expect_one();
        assert_eq!(ch, 0);
        assert!(matches!(start_ok, Method::ConnectionStartOk(_)));
        self.method(0, tune);
        let sent = self.sent_methods();
        assert!(
            matches!(sent[0], (0, Method::ConnectionTuneOk(_))),
            "{sent:?}"
        );
        assert!(
            matches!(sent[1], (0, Method::ConnectionOpen(_))),
            "{sent:?}"
        );
        self.method(0, ConnectionOpenOk::default());
        match self.events().as_slice() {
            [Event::Connected(t)] => *t,
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    pub fn handshake(&mut self) -> Tuning {
        self.handshake_with(ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        })
    }

    /// Opens a channel and answers open-ok.
    pub fn open_channel(&mut self) -> u16 {
        let (id, op) = self.conn.open_channel().expect("open_channel");
        assert_eq!(self.expect_one(), (id, ChannelOpen::default().into()));
        self.method(id, ChannelOpenOk::default());
        match self.events().as_slice() {
            [
                Event::Completed {
                    op: o,
                    channel,
                    result: Ok(Reply::Method(Method::ChannelOpenOk(_))),
                },
            ] => {
                assert_eq!((*o, *channel), (op, id));
            }
            other => panic!("expected open-ok completion, got {other:?}"),
        }
        id
    }

    /// Asserts the client sent connection.close with `code` and returns its text.
    pub fn expect_connection_close(&mut self, code: u16) -> String {
        match self.expect_one() {
            (0, Method::ConnectionClose(c)) => {
                assert_eq!(c.reply_code, code, "close text: {}", c.reply_text);
                c.reply_text.to_string()
            }
            other => panic!("expected connection.close, got {other:?}"),
        }
    }
}
