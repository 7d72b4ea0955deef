//! A structured script of server frames and client commands into an open
//! connection.
//!
//! `connection_input` feeds raw bytes, so most of its inputs stop at the
//! first malformed frame. Here the input is an `arbitrary`-derived list of
//! steps: valid methods with fuzzer-chosen fields (every method a server
//! sends, and a few it never does), whole messages with off-by-one body
//! sizes and split bodies, stray headers and bodies, wrong channels,
//! truncated frames, bad frame-ends, heartbeats, raw bytes, time steps, and
//! the client's own commands (open and close channels, calls, publishes,
//! close), so that replies find something waiting for them. Each run starts
//! after carehare-core's scripted handshake, as `connection_input` does.
//!
//! Invariants (those of `connection_input`, plus op accounting):
//! - nothing panics;
//! - `Event::ConnectionClosed` comes at most once, and last; after it
//!   `is_closed()` holds, `poll_timeout()` is `None` and nothing more is
//!   transmitted;
//! - everything the client transmits is whole, valid frames;
//! - after `handle_timeout(now)` the next timer is later than `now`;
//! - every `OpId` a command returned completes exactly once, and all of them
//!   have completed by the time `ConnectionClosed` comes; no `Completed`
//!   names an op that was never returned.
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::BytesMut;
use carehare_core::frame::{Frame, encode_heartbeat, encode_method};
use carehare_core::method::*;
use carehare_core::properties::{BASIC_CLASS_ID, BasicProperties, ContentHeader};
use carehare_core::testing::Broker;
use carehare_core::types::{AMQPValue, FieldTable, OpId, ShortStr};
use carehare_core::{ConnectionConfig, Event};
use libfuzzer_sys::fuzz_target;

fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// A channel number: mostly the few the client opens, sometimes 0 or a
/// wild one.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Chan(u8);

impl Chan {
    fn id(self) -> u16 {
        match self.0 {
            0..=5 => u16::from(self.0),
            6..=0xF0 => 1,
            v => u16::from(v) * 257,
        }
    }
}

/// A short string: mostly one of a few names (so consumer tags and queue
/// names match what the client used), sometimes free text.
#[derive(Arbitrary, Debug)]
enum Str {
    Known(u8),
    Free(String),
}

const NAMES: [&str; 6] = ["", "c1", "c2", "q", "amq.ctag-1", "amq.gen-1"];

impl Str {
    fn get(&self) -> ShortStr {
        match self {
            Str::Known(i) => ShortStr::from_static(NAMES[usize::from(*i) % NAMES.len()]),
            Str::Free(s) => {
                let mut end = s.len().min(ShortStr::MAX_LEN);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                ShortStr::new(&s[..end]).unwrap_or_default()
            }
        }
    }
}

/// A field table of a few simple entries.
#[derive(Arbitrary, Debug)]
struct Table(Vec<(Str, i64)>);

impl Table {
    fn get(&self) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in self.0.iter().take(4) {
            t.insert(k.get().as_str().into(), AMQPValue::LongLongInt(*v));
        }
        t
    }
}

/// A method the server might send, with fuzzer-chosen fields.
#[derive(Arbitrary, Debug)]
enum ServerMethod {
    ConnectionClose(u16, Str, u16, u16),
    ConnectionCloseOk,
    ConnectionBlocked(Str),
    ConnectionUnblocked,
    ConnectionUpdateSecretOk,
    ConnectionStart,
    ConnectionTune(u16, u32, u16),
    ConnectionOpenOk,
    ConnectionSecure(Vec<u8>),
    ChannelOpenOk,
    ChannelFlow(bool),
    ChannelFlowOk(bool),
    ChannelClose(u16, Str, u16, u16),
    ChannelCloseOk,
    ExchangeDeclareOk,
    ExchangeDeleteOk,
    ExchangeBindOk,
    ExchangeUnbindOk,
    QueueDeclareOk(Str, u32, u32),
    QueueBindOk,
    QueueUnbindOk,
    QueuePurgeOk(u32),
    QueueDeleteOk(u32),
    BasicQosOk,
    BasicConsumeOk(Str),
    BasicCancel(Str, bool),
    BasicCancelOk(Str),
    BasicGetEmpty,
    BasicAck(u64, bool),
    BasicNack(u64, bool, bool),
    BasicRecoverOk,
    ConfirmSelectOk,
    TxSelectOk,
    TxCommitOk,
    TxRollbackOk,
    /// A client-only method, which a server never sends.
    QueueDeclare(Str, Table),
}

impl ServerMethod {
    fn get(&self) -> Method {
        use ServerMethod as S;
        match self {
            S::ConnectionClose(code, text, c, m) => ConnectionClose {
                reply_code: *code,
                reply_text: text.get(),
                class_id: *c,
                method_id: *m,
            }
            .into(),
            S::ConnectionCloseOk => ConnectionCloseOk {}.into(),
            S::ConnectionBlocked(r) => ConnectionBlocked { reason: r.get() }.into(),
            S::ConnectionUnblocked => ConnectionUnblocked {}.into(),
            S::ConnectionUpdateSecretOk => ConnectionUpdateSecretOk {}.into(),
            S::ConnectionStart => carehare_core::testing::server_start().into(),
            S::ConnectionTune(c, f, h) => ConnectionTune {
                channel_max: *c,
                frame_max: *f,
                heartbeat: *h,
            }
            .into(),
            S::ConnectionOpenOk => ConnectionOpenOk::default().into(),
            S::ConnectionSecure(c) => ConnectionSecure {
                challenge: c.clone().into(),
            }
            .into(),
            S::ChannelOpenOk => ChannelOpenOk::default().into(),
            S::ChannelFlow(a) => ChannelFlow { active: *a }.into(),
            S::ChannelFlowOk(a) => ChannelFlowOk { active: *a }.into(),
            S::ChannelClose(code, text, c, m) => ChannelClose {
                reply_code: *code,
                reply_text: text.get(),
                class_id: *c,
                method_id: *m,
            }
            .into(),
            S::ChannelCloseOk => ChannelCloseOk {}.into(),
            S::ExchangeDeclareOk => ExchangeDeclareOk {}.into(),
            S::ExchangeDeleteOk => ExchangeDeleteOk {}.into(),
            S::ExchangeBindOk => ExchangeBindOk {}.into(),
            S::ExchangeUnbindOk => ExchangeUnbindOk {}.into(),
            S::QueueDeclareOk(q, m, c) => QueueDeclareOk {
                queue: q.get(),
                message_count: *m,
                consumer_count: *c,
            }
            .into(),
            S::QueueBindOk => QueueBindOk {}.into(),
            S::QueueUnbindOk => QueueUnbindOk {}.into(),
            S::QueuePurgeOk(n) => QueuePurgeOk { message_count: *n }.into(),
            S::QueueDeleteOk(n) => QueueDeleteOk { message_count: *n }.into(),
            S::BasicQosOk => BasicQosOk {}.into(),
            S::BasicConsumeOk(t) => BasicConsumeOk {
                consumer_tag: t.get(),
            }
            .into(),
            S::BasicCancel(t, n) => BasicCancel {
                consumer_tag: t.get(),
                no_wait: *n,
            }
            .into(),
            S::BasicCancelOk(t) => BasicCancelOk {
                consumer_tag: t.get(),
            }
            .into(),
            S::BasicGetEmpty => BasicGetEmpty::default().into(),
            S::BasicAck(t, m) => BasicAck {
                delivery_tag: *t,
                multiple: *m,
            }
            .into(),
            S::BasicNack(t, m, r) => BasicNack {
                delivery_tag: *t,
                multiple: *m,
                requeue: *r,
            }
            .into(),
            S::BasicRecoverOk => BasicRecoverOk {}.into(),
            S::ConfirmSelectOk => ConfirmSelectOk {}.into(),
            S::TxSelectOk => TxSelectOk {}.into(),
            S::TxCommitOk => TxCommitOk {}.into(),
            S::TxRollbackOk => TxRollbackOk {}.into(),
            S::QueueDeclare(q, args) => QueueDeclare {
                queue: q.get(),
                arguments: args.get(),
                ..Default::default()
            }
            .into(),
        }
    }
}

/// A content-carrying method the server sends.
#[derive(Arbitrary, Debug)]
enum ContentMethod {
    Deliver(Str, u64, bool),
    Return(u16, Str),
    GetOk(u64, u32),
}

impl ContentMethod {
    fn get(&self) -> Method {
        match self {
            ContentMethod::Deliver(tag, dt, r) => BasicDeliver {
                consumer_tag: tag.get(),
                delivery_tag: *dt,
                redelivered: *r,
                exchange: ShortStr::from_static("x"),
                routing_key: ShortStr::from_static("q"),
            }
            .into(),
            ContentMethod::Return(code, text) => BasicReturn {
                reply_code: *code,
                reply_text: text.get(),
                ..Default::default()
            }
            .into(),
            ContentMethod::GetOk(dt, n) => BasicGetOk {
                delivery_tag: *dt,
                message_count: *n,
                ..Default::default()
            }
            .into(),
        }
    }
}

/// A few of the 14 properties.
#[derive(Arbitrary, Debug)]
struct Props {
    content_type: Option<Str>,
    headers: Option<Table>,
    delivery_mode: Option<u8>,
    timestamp: Option<u64>,
}

impl Props {
    fn get(&self) -> BasicProperties {
        BasicProperties {
            content_type: self.content_type.as_ref().map(Str::get),
            headers: self.headers.as_ref().map(Table::get),
            delivery_mode: self.delivery_mode,
            timestamp: self.timestamp,
            ..Default::default()
        }
    }
}

/// A command the client's user issues.
#[derive(Arbitrary, Debug)]
enum Command {
    OpenChannel,
    CloseChannel(Chan),
    Call(Chan, ClientCall),
    Ack(Chan, u64, bool),
    Publish(Chan, Vec<u8>),
    UpdateSecret,
    Close(u16),
}

/// A method the client calls and waits for.
#[derive(Arbitrary, Debug)]
enum ClientCall {
    QueueDeclare(Str),
    ExchangeDeclare(Str),
    QueueBind,
    QueuePurge,
    QueueDelete,
    Qos(u16),
    Consume(Str),
    Cancel(Str),
    Get,
    ConfirmSelect,
    Flow(bool),
    TxSelect,
    Recover,
}

impl ClientCall {
    fn get(&self) -> Method {
        match self {
            ClientCall::QueueDeclare(q) => QueueDeclare {
                queue: q.get(),
                ..Default::default()
            }
            .into(),
            ClientCall::ExchangeDeclare(x) => ExchangeDeclare {
                exchange: x.get(),
                kind: ShortStr::from_static("direct"),
                ..Default::default()
            }
            .into(),
            ClientCall::QueueBind => QueueBind::default().into(),
            ClientCall::QueuePurge => QueuePurge::default().into(),
            ClientCall::QueueDelete => QueueDelete::default().into(),
            ClientCall::Qos(n) => BasicQos {
                prefetch_count: *n,
                ..Default::default()
            }
            .into(),
            ClientCall::Consume(t) => BasicConsume {
                consumer_tag: t.get(),
                queue: ShortStr::from_static("q"),
                ..Default::default()
            }
            .into(),
            ClientCall::Cancel(t) => BasicCancel {
                consumer_tag: t.get(),
                no_wait: false,
            }
            .into(),
            ClientCall::Get => BasicGet::default().into(),
            ClientCall::ConfirmSelect => ConfirmSelect { no_wait: false }.into(),
            ClientCall::Flow(a) => ChannelFlow { active: *a }.into(),
            ClientCall::TxSelect => TxSelect {}.into(),
            ClientCall::Recover => BasicRecover { requeue: true }.into(),
        }
    }
}

/// One step of the script.
#[derive(Arbitrary, Debug)]
enum Step {
    /// A whole, valid method frame.
    Method(Chan, ServerMethod),
    /// A content method, its header and body, the header's size off by
    /// `size_delta` (-2..=2 after clamping), the body split in `split`
    /// frames.
    Message {
        channel: Chan,
        method: ContentMethod,
        props: Props,
        body: Vec<u8>,
        size_delta: i8,
        split: u8,
        /// The header on another channel than the method.
        header_channel: Option<Chan>,
    },
    /// A content header alone, any class and size.
    Header(Chan, u16, u64),
    /// A body frame alone.
    Body(Chan, Vec<u8>),
    Heartbeat(Chan),
    /// A valid method frame cut after `cut` bytes (the rest never comes,
    /// or comes as the next step's prefix).
    Truncated(Chan, ServerMethod, u8),
    /// A valid method frame whose frame-end octet is `end` instead.
    BadFrameEnd(Chan, ServerMethod, u8),
    /// A frame header with a wild type or size.
    Raw(Vec<u8>),
    /// The clock moves (index into `ADVANCE_MS`).
    Time(u8),
    Command(Command),
    Eof,
}

const ADVANCE_MS: [u64; 8] = [0, 1, 500, 1_000, 5_000, 30_000, 61_000, 200_000];

struct Harness {
    b: Broker,
    closed: bool,
    /// Ops returned and not yet completed.
    pending: BTreeSet<OpId>,
    /// Every op ever returned.
    issued: BTreeSet<OpId>,
}

impl Harness {
    fn new() -> Self {
        let mut b = Broker::new_at(ConnectionConfig::default(), t0());
        b.handshake();
        assert!(b.conn.is_open());
        Self {
            b,
            closed: false,
            pending: BTreeSet::new(),
            issued: BTreeSet::new(),
        }
    }

    fn issued(&mut self, op: OpId) {
        assert!(self.issued.insert(op), "op {op:?} returned twice");
        self.pending.insert(op);
    }

    fn drain(&mut self) {
        let frames = self.b.sent();
        if self.closed {
            assert!(frames.is_empty(), "transmitted after close: {frames:?}");
        }
        while let Some(event) = self.b.conn.poll_event() {
            assert!(!self.closed, "event after ConnectionClosed: {event:?}");
            match &event {
                Event::Completed { op, .. } => {
                    assert!(self.issued.contains(op), "unknown op completed: {event:?}");
                    assert!(self.pending.remove(op), "op completed twice: {event:?}");
                }
                Event::ConnectionClosed(_) => {
                    self.closed = true;
                    assert!(
                        self.pending.is_empty(),
                        "ops left pending at ConnectionClosed: {:?}",
                        self.pending
                    );
                }
                _ => {}
            }
        }
        if self.closed {
            let conn = &self.b.conn;
            assert!(conn.is_closed() && !conn.is_open());
            assert_eq!(conn.poll_timeout(), None, "a timer runs when closed");
        }
    }

    fn bytes(&mut self, data: &[u8]) {
        self.b.bytes(data);
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        let target = self.b.now + by;
        while let Some(t) = self.b.conn.poll_timeout() {
            if t > target {
                break;
            }
            self.b.now = t.max(self.b.now);
            self.b.conn.handle_timeout(self.b.now);
            self.drain();
            if let Some(next) = self.b.conn.poll_timeout() {
                assert!(next > self.b.now, "handle_timeout left a due timer");
            }
        }
        self.b.now = target;
        self.b.conn.handle_timeout(self.b.now);
        self.drain();
    }

    fn command(&mut self, c: &Command) {
        let conn = &mut self.b.conn;
        let op = match c {
            Command::OpenChannel => conn.open_channel().ok().map(|(_, op)| op),
            Command::CloseChannel(ch) => conn.close_channel(ch.id()).ok(),
            Command::Call(ch, call) => conn.call(ch.id(), call.get()).ok(),
            Command::Ack(ch, tag, multiple) => {
                let ack = BasicAck {
                    delivery_tag: *tag,
                    multiple: *multiple,
                };
                let _ = conn.send(ch.id(), ack.into());
                None
            }
            Command::Publish(ch, body) => {
                let publish = BasicPublish {
                    routing_key: ShortStr::from_static("q"),
                    ..Default::default()
                };
                let _ = conn.publish(ch.id(), &publish, &BasicProperties::default(), body);
                None
            }
            Command::UpdateSecret => conn.update_secret(b"s".to_vec().into(), "r").ok(),
            Command::Close(code) => {
                let _ = conn.close(self.b.now, *code, "bye");
                None
            }
        };
        if let Some(op) = op {
            self.issued(op);
        }
        self.drain();
    }

    fn step(&mut self, step: &Step) {
        let mut out = BytesMut::new();
        match step {
            Step::Method(ch, m) => encode_method(&mut out, ch.id(), &m.get()),
            Step::Message {
                channel,
                method,
                props,
                body,
                size_delta,
                split,
                header_channel,
            } => {
                let ch = channel.id();
                encode_method(&mut out, ch, &method.get());
                let delta = i64::from((*size_delta).clamp(-2, 2));
                let size = (body.len() as u64).saturating_add_signed(delta);
                let header = ContentHeader {
                    class_id: BASIC_CLASS_ID,
                    body_size: size,
                    properties: Box::new(props.get()),
                };
                let hch = header_channel.map_or(ch, Chan::id);
                Frame::Header {
                    channel: hch,
                    header,
                }
                .encode(&mut out);
                let pieces = usize::from(*split % 4) + 1;
                let piece = body.len().div_ceil(pieces).max(1);
                for chunk in body.chunks(piece) {
                    Frame::Body {
                        channel: ch,
                        payload: chunk.to_vec().into(),
                    }
                    .encode(&mut out);
                }
            }
            Step::Header(ch, class_id, size) => Frame::Header {
                channel: ch.id(),
                header: ContentHeader {
                    class_id: *class_id,
                    body_size: *size,
                    properties: Box::default(),
                },
            }
            .encode(&mut out),
            Step::Body(ch, data) => Frame::Body {
                channel: ch.id(),
                payload: data.clone().into(),
            }
            .encode(&mut out),
            Step::Heartbeat(ch) => {
                encode_heartbeat(&mut out);
                out[1..3].copy_from_slice(&ch.id().to_be_bytes());
            }
            Step::Truncated(ch, m, cut) => {
                encode_method(&mut out, ch.id(), &m.get());
                out.truncate(usize::from(*cut).min(out.len().saturating_sub(1)));
            }
            Step::BadFrameEnd(ch, m, end) => {
                encode_method(&mut out, ch.id(), &m.get());
                if let Some(last) = out.last_mut() {
                    *last = if *end == 0xCE { 0 } else { *end };
                }
            }
            Step::Raw(data) => out.extend_from_slice(data),
            Step::Time(i) => {
                let ms = ADVANCE_MS[usize::from(*i) % ADVANCE_MS.len()];
                self.advance(Duration::from_millis(ms));
                return;
            }
            Step::Command(c) => {
                self.command(c);
                return;
            }
            Step::Eof => {
                self.b.conn.handle_eof(self.b.now);
                self.drain();
                return;
            }
        }
        // Frames over the negotiated size are sent as they are: a fault
        // the core must handle too.
        self.bytes(&out);
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut h = Harness::new();
    for step in steps.iter().take(64) {
        h.step(step);
    }
    h.advance(Duration::from_secs(1));
    h.b.conn.handle_eof(h.b.now);
    h.drain();
    assert!(h.closed, "no ConnectionClosed after handle_eof");
    h.advance(Duration::from_secs(300));
    h.drain();
});
