//! Records every byte the test broker sends during one scripted session
//! and writes them out as fuzz seeds.
//!
//! ```sh
//! test-server/start.sh
//! cargo run -p carehare-tests --bin capture-frames [OUT_DIR]   # default: fuzz/corpus-seed
//! ```
//!
//! The session (frame_max 4096, so big bodies span frames): handshake,
//! channel open, an exclusive server-named queue, `confirm.select`, three
//! publishes (all 14 properties with a headers table of every field type
//! RabbitMQ accepts; an empty body; a 200 KiB body), `basic.consume` and
//! the three deliveries, `basic.get` on the empty queue, a mandatory
//! publish nobody can route (`basic.return`), a passive declare of a
//! missing queue (RabbitMQ closes the channel with 404), and
//! `connection.close`.
//!
//! Files written (old `live-*` files in those directories are removed
//! first, so a re-capture leaves no stale ones):
//!
//! - `connection_input/live-session.bin`: a shape byte, then the server's
//!   stream minus the frames the fuzz target's own scripted handshake
//!   stands for (`connection.start`, `tune`, `open-ok`, and the
//!   `channel.open-ok` of channel 1). The replies to commands the target
//!   never sends make it close the connection early, so also
//!   `connection_input/live-deliveries.bin`: only the frames an open
//!   channel accepts unasked (the deliveries, the return and the server's
//!   `channel.close`), with the 200 KiB body cut to its first
//!   [`KEEP_BODY_FRAMES`] frames and its header's body size patched to match.
//! - `frame_decoder/live-<name>.bin`: the first frame of each kind (methods
//!   by name, `header`, `body`, `heartbeat` if one came) and the first
//!   full-size body frame (`body-full`).
//! - `content_header/live-<n>.bin`: each distinct content-header payload.
//! - `field_table/live-server-properties.bin` (from `connection.start`) and
//!   `field_table/live-headers.bin` (the delivered message's headers), as
//!   length-prefixed tables sliced from the server's bytes.

use std::collections::VecDeque;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use carehare_core::error::ChannelError;
use carehare_core::frame::{FRAME_OVERHEAD, FrameType, decode_raw};
use carehare_core::method::{
    BasicConsume, BasicGet, BasicPublish, ConfirmSelect, Method, QueueDeclare,
};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{AMQPValue, DecimalValue, FieldTable, ShortStr};
use carehare_core::{Connection, ConnectionConfig, ContentMethod, Event, Reply};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The test broker (`test-server/start.sh`).
const BROKER: &str = "127.0.0.1:5672";
/// Small enough that the big body spans many frames.
const FRAME_MAX: u32 = 4096;
/// The big message's body size.
const BIG_BODY: usize = 200 * 1024;
/// How many body frames of the big message `live-deliveries.bin` keeps.
const KEEP_BODY_FRAMES: usize = 2;
/// `connection_input`'s first byte: 3 chunks (bits 0-2 = 2), clock still.
const SHAPE: u8 = 0x02;
/// How long any one step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let out = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus-seed"),
        PathBuf::from,
    );
    if let Err(e) = run(&out) {
        eprintln!("capture-frames: {e}");
        std::process::exit(1);
    }
}

fn run(out: &Path) -> Result<()> {
    let received = capture()?;
    eprintln!("captured {} bytes from the server", received.len());
    write_seeds(out, &received)
}

// ---- the session ---------------------------------------------------------

/// The core over a blocking socket, keeping a copy of every byte read.
struct Session {
    conn: Connection,
    sock: TcpStream,
    /// Everything the server sent, in order.
    received: Vec<u8>,
    events: VecDeque<Event>,
}

impl Session {
    fn connect(config: ConnectionConfig) -> Result<Self> {
        let sock = TcpStream::connect(BROKER)
            .map_err(|e| format!("{BROKER}: {e} (start the broker: test-server/start.sh)"))?;
        sock.set_nodelay(true)?;
        Ok(Self {
            conn: Connection::new(config, Instant::now()),
            sock,
            received: Vec::new(),
            events: VecDeque::new(),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        while self.conn.poll_transmit(&mut out) > 0 {}
        if !out.is_empty() {
            self.sock.write_all(&out)?;
        }
        Ok(())
    }

    /// One read (up to 100 ms), fed to the core; then drain its outputs.
    fn pump(&mut self) -> io::Result<()> {
        self.flush()?;
        self.sock
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut buf = [0u8; 65536];
        match self.sock.read(&mut buf) {
            Ok(0) => self.conn.handle_eof(Instant::now()),
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                self.conn.handle_input(Instant::now(), &buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        self.conn.handle_timeout(Instant::now());
        self.flush()?;
        while let Some(event) = self.conn.poll_event() {
            self.events.push_back(event);
        }
        Ok(())
    }

    /// Takes the first event `pick` accepts, pumping until one comes.
    fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some((i, found)) = self
                .events
                .iter()
                .enumerate()
                .find_map(|(i, e)| pick(e).map(|found| (i, found)))
            {
                self.events.remove(i);
                return Ok(found);
            }
            if let Some(Event::ConnectionClosed(e)) = self
                .events
                .iter()
                .find(|e| matches!(e, Event::ConnectionClosed(_)))
            {
                return Err(format!("waiting for {what}: the connection closed: {e}").into());
            }
            if Instant::now() >= deadline {
                return Err(format!("waiting for {what}: timed out").into());
            }
            self.pump()?;
        }
    }

    /// `call`, then its completion.
    fn call(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
    ) -> Result<std::result::Result<Reply, ChannelError>> {
        let method = method.into();
        let name = method.name();
        let op = self.conn.call(channel, method)?;
        self.wait_for(name, |e| match e {
            Event::Completed {
                op: o, result: r, ..
            } if *o == op => Some(r.clone()),
            _ => None,
        })
    }
}

/// Every field type RabbitMQ's table parser accepts.
fn every_field_type() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString(b"x".to_vec().into()));
    nested.insert("n".into(), AMQPValue::LongInt(7));
    let entries = [
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-1600)),
        ("u16", AMQPValue::ShortUInt(60000)),
        ("i32", AMQPValue::LongInt(-320_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-6_400_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        (
            "string",
            AMQPValue::LongString("h\u{e9}llo".as_bytes().to_vec().into()),
        ),
        (
            "array",
            AMQPValue::FieldArray(
                vec![
                    AMQPValue::LongInt(1),
                    AMQPValue::LongString(b"two".to_vec().into()),
                    AMQPValue::Boolean(false),
                    AMQPValue::FieldArray(vec![AMQPValue::Void].into()),
                ]
                .into(),
            ),
        ),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(nested)),
        ("bytes", AMQPValue::ByteArray(vec![0, 1, 0xfe, 0xff].into())),
        ("void", AMQPValue::Void),
    ];
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(key.into(), value);
    }
    table
}

fn all_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(ShortStr::from_static("application/json")),
        content_encoding: Some(ShortStr::from_static("identity")),
        headers: Some(every_field_type()),
        delivery_mode: Some(2),
        priority: Some(5),
        correlation_id: Some(ShortStr::from_static("corr-1")),
        reply_to: Some(ShortStr::from_static("carehare.capture.replies")),
        expiration: Some(ShortStr::from_static("60000")),
        message_id: Some(ShortStr::from_static("msg-1")),
        timestamp: Some(1_700_000_000),
        kind: Some(ShortStr::from_static("capture")),
        // RabbitMQ refuses a user id other than the login's.
        user_id: Some(ShortStr::from_static("guest")),
        app_id: Some(ShortStr::from_static("carehare-capture-frames")),
        cluster_id: Some(ShortStr::from_static("cluster-1")),
    }
}

/// Runs the scripted session and returns what the server sent.
fn capture() -> Result<Vec<u8>> {
    let config = ConnectionConfig {
        frame_max: FRAME_MAX,
        connection_name: Some("carehare capture-frames".into()),
        ..Default::default()
    };
    let mut s = Session::connect(config)?;
    let tuning = s.wait_for("connection.open-ok", |e| match e {
        Event::Connected(t) => Some(*t),
        _ => None,
    })?;
    eprintln!("connected: {tuning:?}");

    let (ch, op) = s.conn.open_channel()?;
    s.wait_for("channel.open-ok", |e| match e {
        Event::Completed { op: o, .. } if *o == op => Some(()),
        _ => None,
    })?;

    let queue = match s.call(
        ch,
        QueueDeclare {
            exclusive: true,
            ..Default::default()
        },
    )? {
        Ok(Reply::Method(Method::QueueDeclareOk(ok))) => ok.queue,
        other => return Err(format!("queue.declare: {other:?}").into()),
    };
    s.call(ch, ConfirmSelect::default())??;

    let to_queue = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let big: Vec<u8> = (0..BIG_BODY).map(|i| (i % 251) as u8).collect();
    let messages: [(BasicProperties, &[u8]); 3] = [
        (all_properties(), b"{\"hello\":\"rabbit\"}"),
        (BasicProperties::default(), b""),
        (
            BasicProperties {
                content_type: Some(ShortStr::from_static("application/octet-stream")),
                ..Default::default()
            },
            &big,
        ),
    ];
    let mut last = 0;
    for (properties, body) in &messages {
        last = s
            .conn
            .publish(ch, &to_queue, properties, body)?
            .ok_or("no publish sequence number in confirm mode")?;
    }
    let mut confirmed = 0;
    while confirmed < last {
        confirmed = s
            .wait_for("basic.ack", |e| match e {
                Event::Ack { delivery_tag, .. } => Some(Ok(*delivery_tag)),
                Event::Nack { delivery_tag, .. } => Some(Err(*delivery_tag)),
                _ => None,
            })?
            .map_err(|tag| format!("publish {tag} was nacked"))?;
    }

    s.call(
        ch,
        BasicConsume {
            queue: queue.clone(),
            no_ack: true,
            ..Default::default()
        },
    )??;
    for (i, (properties, body)) in messages.iter().enumerate() {
        let delivery = s.wait_for("basic.deliver", |e| match e {
            Event::Delivery { delivery, .. }
                if matches!(delivery.method, ContentMethod::Deliver(_)) =>
            {
                Some(delivery.clone())
            }
            _ => None,
        })?;
        if delivery.body.as_ref() != *body || *delivery.properties != *properties {
            return Err(format!("delivery {i} differs from what was published").into());
        }
    }

    match s.call(
        ch,
        BasicGet {
            queue: queue.clone(),
            no_ack: true,
            ..Default::default()
        },
    )? {
        Ok(Reply::Method(Method::BasicGetEmpty(_))) => {}
        other => return Err(format!("basic.get: expected get-empty, got {other:?}").into()),
    }

    let nowhere = BasicPublish {
        routing_key: ShortStr::from_static("carehare.capture.nowhere"),
        mandatory: true,
        ..Default::default()
    };
    let seq = s
        .conn
        .publish(ch, &nowhere, &BasicProperties::default(), b"returned")?
        .ok_or("no publish sequence number in confirm mode")?;
    s.wait_for("basic.return", |e| match e {
        Event::Delivery { delivery, .. } if matches!(delivery.method, ContentMethod::Return(_)) => {
            Some(())
        }
        _ => None,
    })?;
    s.wait_for("basic.ack", |e| match e {
        Event::Ack { delivery_tag, .. } if *delivery_tag >= seq => Some(()),
        _ => None,
    })?;

    match s.call(
        ch,
        QueueDeclare {
            queue: ShortStr::from_static("carehare.capture.missing"),
            passive: true,
            ..Default::default()
        },
    )? {
        Err(ChannelError::ClosedByServer(reason)) if reason.code == 404 => {}
        other => return Err(format!("passive declare: expected a 404, got {other:?}").into()),
    }
    s.wait_for("channel.close", |e| match e {
        Event::ChannelClosed { channel, .. } if *channel == ch => Some(()),
        _ => None,
    })?;

    s.conn.close(Instant::now(), 200, "bye")?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !s
        .events
        .iter()
        .any(|e| matches!(e, Event::ConnectionClosed(_)))
    {
        if Instant::now() >= deadline {
            return Err("waiting for connection.close-ok: timed out".into());
        }
        s.pump()?;
    }
    Ok(s.received)
}

// ---- the seeds -----------------------------------------------------------

/// One frame of the captured stream.
struct Captured<'a> {
    kind: FrameType,
    /// The whole frame as sent, header and end octet included.
    bytes: &'a [u8],
    /// The payload alone.
    payload: &'a [u8],
    /// The method, for method frames that parse.
    method: Option<Method>,
}

impl Captured<'_> {
    /// A file-name-friendly name: `basic-deliver`, `header`, `body`...
    fn name(&self) -> String {
        match (&self.method, self.kind) {
            (Some(m), _) => m.name().replace('.', "-"),
            (None, FrameType::Method) => "method".into(),
            (None, FrameType::Header) => "header".into(),
            (None, FrameType::Body) => "body".into(),
            (None, FrameType::Heartbeat) => "heartbeat".into(),
            (None, other) => format!("type-{}", other.octet()),
        }
    }

    fn is_method(&self, pick: impl Fn(&Method) -> bool) -> bool {
        self.method.as_ref().is_some_and(pick)
    }
}

fn split_frames(stream: &[u8]) -> Result<Vec<Captured<'_>>> {
    let mut buf = BytesMut::from(stream);
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(raw) = decode_raw(&mut buf, 0)? {
        let len = raw.payload.len() + FRAME_OVERHEAD;
        let bytes = &stream[at..at + len];
        let method = match raw.kind {
            FrameType::Method => Some(Method::decode(raw.payload.clone())?),
            _ => None,
        };
        frames.push(Captured {
            kind: raw.kind,
            bytes,
            payload: &bytes[7..len - 1],
            method,
        });
        at += len;
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes after the last whole frame", buf.len()).into());
    }
    Ok(frames)
}

/// The length-prefixed table at `payload[at..]`.
fn table_at(payload: &[u8], at: usize) -> Result<&[u8]> {
    let len = payload
        .get(at..at + 4)
        .ok_or("truncated table length")?
        .iter()
        .fold(0usize, |n, b| n << 8 | usize::from(*b));
    Ok(payload.get(at..at + 4 + len).ok_or("truncated table")?)
}

/// The headers table of a content-header payload, if it has one.
fn headers_of(payload: &[u8]) -> Result<Option<&[u8]>> {
    // class, weight, body size, then one flag word (RabbitMQ never sends two).
    let flags = payload.get(12..14).ok_or("truncated content header")?;
    let flags = u16::from_be_bytes([flags[0], flags[1]]);
    if flags & (1 << 13) == 0 {
        return Ok(None);
    }
    let mut at = 14;
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(*payload.get(at).ok_or("truncated short string")?);
        }
    }
    table_at(payload, at).map(Some)
}

fn write_seeds(root: &Path, stream: &[u8]) -> Result<()> {
    let frames = split_frames(stream)?;
    let mut written = Vec::new();
    let mut write = |dir: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let path = root.join(dir).join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push((format!("{dir}/{name}"), bytes.len()));
        Ok(())
    };
    for dir in [
        "connection_input",
        "frame_decoder",
        "content_header",
        "field_table",
    ] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("live-"))
            {
                std::fs::remove_file(&path)?;
            }
        }
    }

    // connection_input: the stream after the handshake the target scripts.
    let mut session = vec![SHAPE];
    for f in &frames {
        let handshake = f.is_method(|m| {
            matches!(
                m,
                Method::ConnectionStart(_)
                    | Method::ConnectionTune(_)
                    | Method::ConnectionOpenOk(_)
                    | Method::ChannelOpenOk(_)
            )
        });
        if !handshake {
            session.extend_from_slice(f.bytes);
        }
    }
    write("connection_input", "live-session.bin", &session)?;

    // connection_input: only what an open channel takes unasked.
    let mut unasked = vec![SHAPE];
    let mut in_content = false;
    let mut bodies = 0;
    for (i, f) in frames.iter().enumerate() {
        match f.kind {
            FrameType::Method => {
                in_content =
                    f.is_method(|m| matches!(m, Method::BasicDeliver(_) | Method::BasicReturn(_)));
                if in_content || f.is_method(|m| matches!(m, Method::ChannelClose(_))) {
                    unasked.extend_from_slice(f.bytes);
                }
            }
            FrameType::Header if in_content => {
                bodies = 0;
                let mut header = f.bytes.to_vec();
                // body size: frame header (7), class and weight (4).
                let size = u64::from_be_bytes(header[11..19].try_into()?);
                if size > (KEEP_BODY_FRAMES * FRAME_MAX as usize) as u64 {
                    let kept: usize = frames[i + 1..]
                        .iter()
                        .take_while(|g| g.kind == FrameType::Body)
                        .take(KEEP_BODY_FRAMES)
                        .map(|g| g.payload.len())
                        .sum();
                    header[11..19].copy_from_slice(&(kept as u64).to_be_bytes());
                }
                unasked.extend_from_slice(&header);
            }
            FrameType::Body if in_content => {
                bodies += 1;
                if bodies <= KEEP_BODY_FRAMES {
                    unasked.extend_from_slice(f.bytes);
                }
            }
            _ => {}
        }
    }
    write("connection_input", "live-deliveries.bin", &unasked)?;

    // frame_decoder: the first frame of each kind, and one full body frame.
    let mut seen = Vec::new();
    for f in &frames {
        let name = f.name();
        if !seen.contains(&name) {
            write("frame_decoder", &format!("live-{name}.bin"), f.bytes)?;
            seen.push(name);
        }
    }
    if let Some(full) = frames
        .iter()
        .find(|f| f.kind == FrameType::Body && f.bytes.len() == FRAME_MAX as usize)
    {
        write("frame_decoder", "live-body-full.bin", full.bytes)?;
    }

    // content_header: every distinct header payload.
    let mut headers: Vec<&[u8]> = Vec::new();
    for f in frames.iter().filter(|f| f.kind == FrameType::Header) {
        if !headers.contains(&f.payload) {
            headers.push(f.payload);
            write(
                "content_header",
                &format!("live-{}.bin", headers.len()),
                f.payload,
            )?;
        }
    }

    // field_table: the server properties and the message headers.
    let start = frames
        .iter()
        .find(|f| f.is_method(|m| matches!(m, Method::ConnectionStart(_))))
        .ok_or("no connection.start")?;
    // class, method, version major and minor, then the table.
    write(
        "field_table",
        "live-server-properties.bin",
        table_at(start.payload, 6)?,
    )?;
    let table = headers
        .iter()
        .find_map(|h| headers_of(h).transpose())
        .transpose()?
        .ok_or("no delivered message had headers")?;
    write("field_table", "live-headers.bin", table)?;

    let total: usize = written.iter().map(|(_, n)| n).sum();
    for (name, len) in &written {
        println!("{len:>8}  {name}");
    }
    println!(
        "{total:>8}  total in {} files under {}",
        written.len(),
        root.canonicalize()?.display()
    );
    Ok(())
}
