//! A scripted broker, for carehare's own tests only.
//!
//! **Unstable, and not part of the public API**: this module exists for
//! carehare's own test suites (the core's, the client's, the fuzz targets,
//! the benchmarks and the live-broker suite) so that they share one
//! script of the server's side of AMQP. It is compiled only with the
//! `testing` feature and may change or go away in any release, without
//! notice.
//!
//! Two ways to use it:
//!
//! - [`Broker`] owns a [`Connection`] on simulated time: it feeds the
//!   server's frames, decodes what the client sent back and moves the
//!   clock, checking every step of the handshake on the way.
//! - The pieces work without owning the connection, for a test that keeps
//!   its `Connection` inside its own state or talks over a real socket:
//!   [`server_start`] and [`handshake_frames`] (the server's side of the
//!   handshake), [`method_bytes`] and [`content_bytes`] (any method or
//!   message, encoded), [`polite_reply`] (what a well-behaved server
//!   answers), [`ClientOutput`] (decodes what the client wrote),
//!   [`serve_handshake`] (the handshake over a blocking transport) and
//!   [`open_connection`] (a connection already open).
//!
//! Every function here panics when the client does not follow the script:
//! in a test, that panic is the failure report.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::connection::{Connection, ConnectionConfig};
use crate::event::{Event, Reply, Tuning};
use crate::frame::{Frame, PROTOCOL_HEADER, decode_frame, encode_content, encode_method};
use crate::method::{
    BasicConsumeOk, BasicQosOk, ChannelCloseOk, ChannelOpen, ChannelOpenOk, ConfirmSelectOk,
    ConnectionCloseOk, ConnectionOpenOk, ConnectionStart, ConnectionTune, Method, QueueDeclareOk,
};
use crate::properties::{BASIC_CLASS_ID, BasicProperties};
use crate::types::{AMQPValue, ChannelId, FieldTable, ShortStr};

// ---- The server's side, as values and bytes --------------------------------

/// The `connection.start` the scripted server sends: protocol 0-9, product
/// `RabbitMQ`, mechanisms `AMQPLAIN PLAIN EXTERNAL`, locale `en_US`.
pub fn server_start() -> ConnectionStart {
    let mut server_properties = FieldTable::default();
    server_properties.insert(
        "product".into(),
        AMQPValue::LongString(b"RabbitMQ".to_vec().into()),
    );
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties,
        mechanisms: "AMQPLAIN PLAIN EXTERNAL".into(),
        locales: "en_US".into(),
    }
}

/// The `connection.tune` [`Broker::handshake`] proposes, as RabbitMQ's
/// defaults do: channel_max 2047, frame_max 128 KiB, heartbeat 60 s.
pub fn server_tune() -> ConnectionTune {
    ConnectionTune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 60,
    }
}

/// One method frame on `channel`, encoded.
pub fn method_bytes(channel: ChannelId, method: impl Into<Method>) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_method(&mut out, channel, &method.into());
    out.to_vec()
}

/// A whole message on `channel`, encoded: the content method (e.g.
/// `basic.deliver`, `basic.return`, `basic.get-ok`), its content header and
/// as many body frames as `frame_max` needs (0: one frame).
pub fn content_bytes(
    channel: ChannelId,
    method: impl Into<Method>,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_method(&mut out, channel, &method.into());
    encode_content(
        &mut out,
        channel,
        BASIC_CLASS_ID,
        properties,
        body,
        frame_max,
    );
    out.to_vec()
}

/// What a well-behaved server answers to `method` from the client, for the
/// methods a script usually just lets through: `channel.open`,
/// `confirm.select`, `basic.qos`, `queue.declare` (a server-named queue is
/// `amq.gen-1`, no messages, no consumers), `basic.consume` (an empty tag
/// becomes `amq.ctag-1`), `channel.close` and `connection.close`. `None`
/// for any other method (e.g. a publish, whose ack a script decides).
pub fn polite_reply(method: &Method) -> Option<Method> {
    Some(match method {
        Method::ChannelOpen(_) => ChannelOpenOk::default().into(),
        Method::ConfirmSelect(_) => ConfirmSelectOk {}.into(),
        Method::BasicQos(_) => BasicQosOk {}.into(),
        Method::QueueDeclare(d) => QueueDeclareOk {
            queue: if d.queue.is_empty() {
                ShortStr::from_static("amq.gen-1")
            } else {
                d.queue.clone()
            },
            message_count: 0,
            consumer_count: 0,
        }
        .into(),
        Method::BasicConsume(c) => BasicConsumeOk {
            consumer_tag: if c.consumer_tag.is_empty() {
                ShortStr::from_static("amq.ctag-1")
            } else {
                c.consumer_tag.clone()
            },
        }
        .into(),
        Method::ChannelClose(_) => ChannelCloseOk {}.into(),
        Method::ConnectionClose(_) => ConnectionCloseOk {}.into(),
        _ => return None,
    })
}

/// The server's whole side of the handshake at once: [`server_start`],
/// `tune`, then `connection.open-ok`. A client processes them in order, so
/// they may all be fed before it answers.
pub fn handshake_frames(tune: ConnectionTune) -> Vec<u8> {
    let mut out = method_bytes(0, server_start());
    out.extend(method_bytes(0, tune));
    out.extend(method_bytes(0, ConnectionOpenOk::default()));
    out
}

/// A connection at `now` whose handshake is done, the server having
/// proposed [`server_tune`]. Nothing is left to poll: the handshake's
/// bytes and [`Event::Connected`] were taken.
pub fn open_connection(config: ConnectionConfig, now: Instant) -> Connection {
    open_connection_with(config, now, server_tune())
}

/// [`open_connection`] with the server proposing `tune`.
pub fn open_connection_with(
    config: ConnectionConfig,
    now: Instant,
    tune: ConnectionTune,
) -> Connection {
    let mut broker = Broker::new_at(config, now);
    broker.handshake_with(tune);
    broker.conn
}

/// Plays the server's side of the handshake over a blocking transport (a
/// `TcpStream` accepted from the client): reads the protocol header, sends
/// [`server_start`], reads `start-ok`, sends `tune`, reads `tune-ok` and
/// `open`, sends `open-ok`. `from_client` keeps what the client wrote
/// beyond that. Panics if the client strays from the script; IO errors are
/// returned.
pub fn serve_handshake(
    io: &mut (impl Read + Write),
    from_client: &mut ClientOutput,
    tune: ConnectionTune,
) -> io::Result<()> {
    while from_client.buf.len() < PROTOCOL_HEADER.len() {
        from_client.read_from(io)?;
    }
    from_client.expect_protocol_header();
    io.write_all(&method_bytes(0, server_start()))?;
    expect_method(from_client.read_method(io)?, "connection.start-ok");
    io.write_all(&method_bytes(0, tune))?;
    expect_method(from_client.read_method(io)?, "connection.tune-ok");
    expect_method(from_client.read_method(io)?, "connection.open");
    io.write_all(&method_bytes(0, ConnectionOpenOk::default()))?;
    Ok(())
}

fn expect_method((channel, method): (ChannelId, Method), name: &str) {
    assert!(
        channel == 0 && method.name() == name,
        "expected {name} on channel 0, got {method:?} on channel {channel}"
    );
}

// ---- What the client wrote ------------------------------------------------

/// What the client wrote, split into frames as it arrives.
#[derive(Debug, Default)]
pub struct ClientOutput {
    buf: BytesMut,
}

impl ClientOutput {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes the client wrote.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes everything `conn` has to transmit; returns how many bytes.
    pub fn drain(&mut self, conn: &mut Connection) -> usize {
        let mut out = Vec::new();
        let n = conn.poll_transmit(&mut out);
        self.extend(&out);
        n
    }

    /// Reads once from a blocking transport; returns how many bytes (0 at
    /// end of stream).
    pub fn read_from(&mut self, io: &mut impl Read) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk)?;
        self.extend(&chunk[..n]);
        Ok(n)
    }

    /// Takes the 8-byte protocol header the client starts with; panics if
    /// anything else is there.
    pub fn expect_protocol_header(&mut self) {
        let len = PROTOCOL_HEADER.len().min(self.buf.len());
        assert_eq!(
            &self.buf[..len],
            &PROTOCOL_HEADER[..],
            "the client speaks first, with the 0-9-1 header"
        );
        let _ = self.buf.split_to(len);
    }

    /// The next whole frame, or `None` until more bytes arrive. Panics on
    /// bytes that are not a valid frame, such as a protocol header not yet
    /// taken with [`expect_protocol_header`](Self::expect_protocol_header).
    pub fn next_frame(&mut self) -> Option<Frame> {
        match decode_frame(&mut self.buf, 0) {
            Ok(frame) => frame,
            Err(e) => panic!(
                "the client sent an invalid frame: {e}\nbytes: {:02x?}",
                &self.buf[..]
            ),
        }
    }

    /// Every whole frame received so far.
    pub fn frames(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| self.next_frame()).collect()
    }

    /// The next method frame and its channel, skipping any other frame
    /// (heartbeats, content); `None` until one is whole.
    pub fn next_method(&mut self) -> Option<(ChannelId, Method)> {
        loop {
            match self.next_frame()? {
                Frame::Method { channel, method } => return Some((channel, method)),
                _ => continue,
            }
        }
    }

    /// [`next_method`](Self::next_method), reading from a blocking
    /// transport until one is whole.
    pub fn read_method(&mut self, io: &mut impl Read) -> io::Result<(ChannelId, Method)> {
        loop {
            if let Some(method) = self.next_method() {
                return Ok(method);
            }
            if self.read_from(io)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Asserts that the next method is `connection.close` with `code`, and
    /// returns its text.
    pub fn expect_connection_close(&mut self, code: u16) -> String {
        match self.next_method() {
            Some((0, Method::ConnectionClose(c))) => {
                assert_eq!(c.reply_code, code, "close text: {}", c.reply_text);
                c.reply_text.to_string()
            }
            other => panic!("expected connection.close, got {other:?}"),
        }
    }

    /// The bytes of a frame not yet whole.
    pub fn partial(&self) -> &[u8] {
        &self.buf
    }
}

// ---- A broker that owns the connection --------------------------------------

/// A scripted broker: it owns a [`Connection`], feeds it the server's
/// frames, decodes what it sends back, and moves simulated time. No
/// sockets, no sleeping.
#[derive(Debug)]
pub struct Broker {
    /// The connection under test.
    pub conn: Connection,
    /// The simulated time, given to every input.
    pub now: Instant,
    from_client: ClientOutput,
}

impl Broker {
    /// A client that has sent its protocol header, checked.
    pub fn new(config: ConnectionConfig) -> Self {
        Self::new_at(config, Instant::now())
    }

    /// [`new`](Self::new), starting the clock at `now` (for runs that must
    /// be reproducible).
    pub fn new_at(config: ConnectionConfig, now: Instant) -> Self {
        let mut broker = Self {
            conn: Connection::new(config, now),
            now,
            from_client: ClientOutput::new(),
        };
        broker.from_client.drain(&mut broker.conn);
        broker.from_client.expect_protocol_header();
        broker
    }

    /// Frames the client has queued since the last call. Panics on a
    /// partial frame: the client queues whole frames only.
    pub fn sent(&mut self) -> Vec<Frame> {
        self.from_client.drain(&mut self.conn);
        let frames = self.from_client.frames();
        assert!(
            self.from_client.partial().is_empty(),
            "the client sent a partial frame: {:02x?}",
            self.from_client.partial()
        );
        frames
    }

    /// The methods the client sent, with their channels; panics on any
    /// other frame.
    pub fn sent_methods(&mut self) -> Vec<(ChannelId, Method)> {
        self.sent()
            .into_iter()
            .map(|f| match f {
                Frame::Method { channel, method } => (channel, method),
                other => panic!("expected only methods, got {other:?}"),
            })
            .collect()
    }

    /// The one method the client sent.
    pub fn expect_one(&mut self) -> (ChannelId, Method) {
        let mut m = self.sent_methods();
        assert_eq!(m.len(), 1, "expected exactly one method, got {m:?}");
        m.remove(0)
    }

    /// Feeds raw bytes, as if read from the socket.
    pub fn bytes(&mut self, data: &[u8]) {
        self.conn.handle_input(self.now, data);
    }

    /// Feeds one frame.
    pub fn frame(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        self.bytes(&out);
    }

    /// Feeds one method on `channel`.
    pub fn method(&mut self, channel: ChannelId, method: impl Into<Method>) {
        self.bytes(&method_bytes(channel, method));
    }

    /// Feeds a whole message on `channel` (see [`content_bytes`]), cut to
    /// the negotiated `frame_max`.
    pub fn content(
        &mut self,
        channel: ChannelId,
        method: impl Into<Method>,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        let frame_max = self.conn.tuning().map_or(0, |t| t.frame_max);
        self.bytes(&content_bytes(channel, method, properties, body, frame_max));
    }

    /// Every event queued so far.
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

    /// Sends [`server_start`].
    pub fn start(&mut self) {
        self.method(0, server_start());
    }

    /// Runs the whole handshake with the server proposing `tune`, checking
    /// every client frame, and returns what was negotiated.
    pub fn handshake_with(&mut self, tune: ConnectionTune) -> Tuning {
        self.start();
        let (ch, start_ok) = self.expect_one();
        assert_eq!(ch, 0);
        assert!(
            matches!(start_ok, Method::ConnectionStartOk(_)),
            "{start_ok:?}"
        );
        self.method(0, tune);
        let sent = self.sent_methods();
        assert!(
            matches!(
                sent.as_slice(),
                [
                    (0, Method::ConnectionTuneOk(_)),
                    (0, Method::ConnectionOpen(_))
                ]
            ),
            "expected tune-ok and open, got {sent:?}"
        );
        self.method(0, ConnectionOpenOk::default());
        match self.events().as_slice() {
            [Event::Connected(t)] => *t,
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    /// The handshake with [`server_tune`].
    pub fn handshake(&mut self) -> Tuning {
        self.handshake_with(server_tune())
    }

    /// Opens a channel and answers open-ok; returns its id.
    pub fn open_channel(&mut self) -> ChannelId {
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

    /// Asserts the client sent exactly one method, `connection.close` with
    /// `code`, and returns its text.
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
