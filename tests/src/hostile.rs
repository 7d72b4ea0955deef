//! The hostile server: a [`FakeServer`] that misbehaves on purpose, against
//! the real client over a real TCP socket. Each case must end in a typed
//! error (or the documented behaviour) within a time bound, with memory
//! bounded; it returns what happened and how long it took.
//!
//! `src/bin/hostile.rs` runs one case on one runtime in a process of its
//! own and reports the process's peak RSS; `tests/hostile.rs` runs every
//! case on every runtime that way and checks the figures (see
//! `docs/reliability.md`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use carehare_client::{
    ConnectOptions, Connection, ConnectionError, Error, QueueOptions, Runtime, connect_with_runtime,
};
use carehare_core::error::ProtocolViolation;
use carehare_core::frame::Frame;
use carehare_core::method::{
    BasicAck, BasicDeliver, ChannelClose, ConnectionBlocked, ConnectionTune, Method,
};
use carehare_core::properties::{BASIC_CLASS_ID, BasicProperties, ContentHeader};
use carehare_core::testing;
use carehare_core::types::{ChannelId, ShortStr};
use futures_util::future::join_all;

use crate::fake_server::{FakeServer, Peer};
use crate::scenarios::{options, sleep, within};

/// How a case ended.
#[derive(Debug)]
pub struct Outcome {
    /// The typed error (or the documented behaviour), as shown.
    pub what: String,
    /// From the first hostile act (or the connect, where the connect is
    /// the target) to the outcome.
    pub took: Duration,
}

/// One case's run in a process of its own, as the `hostile` binary prints
/// it (one line) and `tests/hostile.rs` reads it back.
#[derive(Debug)]
pub struct Report {
    /// The case.
    pub case: String,
    /// The runtime it ran on.
    pub runtime: String,
    /// How long it took to its outcome.
    pub took: Duration,
    /// The process's peak resident set size (`VmHWM`), in KiB: the client
    /// and the fake server together.
    pub peak_rss_kib: u64,
    /// What happened.
    pub what: String,
}

impl Report {
    /// The line the binary prints: tab-separated fields after a marker.
    pub fn line(&self) -> String {
        format!(
            "hostile\t{}\t{}\t{}\t{}\t{}",
            self.case,
            self.runtime,
            self.took.as_micros(),
            self.peak_rss_kib,
            self.what
        )
    }

    /// The report in `output` (a binary's stdout), if there is one.
    pub fn parse(output: &str) -> Option<Self> {
        let line = output.lines().find(|l| l.starts_with("hostile\t"))?;
        let mut f = line.splitn(6, '\t').skip(1);
        Some(Self {
            case: f.next()?.to_string(),
            runtime: f.next()?.to_string(),
            took: Duration::from_micros(f.next()?.parse().ok()?),
            peak_rss_kib: f.next()?.parse().ok()?,
            what: f.next()?.to_string(),
        })
    }
}

/// This process's peak resident set size so far, in KiB (`VmHWM` in
/// `/proc/self/status`, Linux).
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Every case, by name.
pub const CASES: [&str; 8] = [
    "unknown_channel_frames",
    "body_size_2_pow_63",
    "body_of_max_body_size",
    "body_one_byte_over_max_body_size",
    "channel_close_storm",
    "deliver_without_consume",
    "blocked_never_lifted",
    "handshake_without_tune",
];

/// Runs the case called `name`.
pub async fn run(name: &str, rt: Arc<dyn Runtime>) -> Outcome {
    match name {
        "unknown_channel_frames" => unknown_channel_frames(rt).await,
        "body_size_2_pow_63" => body_size_2_pow_63(rt).await,
        "body_of_max_body_size" => body_of_max_body_size(rt).await,
        "body_one_byte_over_max_body_size" => body_one_byte_over_max_body_size(rt).await,
        "channel_close_storm" => channel_close_storm(rt).await,
        "deliver_without_consume" => deliver_without_consume(rt).await,
        "blocked_never_lifted" => blocked_never_lifted(rt).await,
        "handshake_without_tune" => handshake_without_tune(rt).await,
        other => panic!("no hostile case {other:?}; the cases are {CASES:?}"),
    }
}

/// Bound on any one case's wait: nothing may hang.
const LIMIT: Duration = Duration::from_secs(60);
/// The `max_body_size` of the body cases, and their body: 128 MiB.
const MAX_BODY: u64 = 128 * 1024 * 1024;
/// The body cases' frame_max: bodies come in 4 KiB frames.
const SMALL_FRAMES: u32 = 4096;

fn tune(frame_max: u32) -> ConnectionTune {
    ConnectionTune {
        frame_max,
        ..testing::server_tune()
    }
}

/// Options for the fake server on `port`.
fn to(port: u16) -> ConnectOptions {
    let mut opts = options();
    opts.port = port;
    opts
}

async fn connect(rt: &Arc<dyn Runtime>, opts: ConnectOptions) -> Connection {
    within(rt, LIMIT, connect_with_runtime(rt.clone(), opts))
        .await
        .expect("the fake server's handshake")
}

/// The protocol violation a connection ended with.
fn violation(outcome: &ConnectionError) -> &ProtocolViolation {
    match outcome {
        ConnectionError::Protocol(v) => v,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

/// The violation a call failed with, the connection having ended for it.
fn failed_with_violation<T: std::fmt::Debug>(result: Result<T, Error>) -> ProtocolViolation {
    match result {
        Err(Error::ConnectionClosed(ConnectionError::Protocol(v))) => v,
        other => panic!("expected ConnectionClosed(Protocol(_)), got {other:?}"),
    }
}

// ---- Frames for channels that are not open ------------------------------------

/// 100,000 method frames for channels the client never opened. The first
/// ends the connection (504 CHANNEL_ERROR); the rest are read and dropped
/// while the client waits for `close-ok`, which comes after them.
pub async fn unknown_channel_frames(rt: Arc<dyn Runtime>) -> Outcome {
    const FRAMES: u32 = 100_000;
    let server = FakeServer::start(|peer| {
        peer.handshake(testing::server_tune());
        let mut batch = Vec::new();
        for i in 0..FRAMES {
            let channel = 1000 + (i % 1000) as ChannelId;
            let ack = BasicAck {
                delivery_tag: u64::from(i) + 1,
                multiple: false,
            };
            batch.extend(testing::method_bytes(channel, ack));
            if batch.len() >= 64 * 1024 && !peer.send(&std::mem::take(&mut batch)) {
                break;
            }
        }
        peer.send(&batch);
        peer.serve_until_close()
    });
    let c = connect(&rt, to(server.port())).await;
    let started = Instant::now();
    let outcome = within(&rt, LIMIT, c.closed()).await;
    let took = started.elapsed();
    let v = violation(&outcome);
    assert!(matches!(v, ProtocolViolation::UnknownChannel(_)), "{v:?}");
    assert_eq!(v.reply_code(), 504);
    let close = server.join(&rt, LIMIT).await;
    assert_eq!(close.reply_code, 504, "{close:?}");
    Outcome {
        what: format!("closed() = {outcome} (the client sent connection.close 504)"),
        took,
    }
}

// ---- Bodies -------------------------------------------------------------------

/// A `basic.deliver` and its content header announcing `body_size`, on
/// `channel`.
fn deliver_header(channel: ChannelId, body_size: u64) -> Vec<u8> {
    let deliver = BasicDeliver {
        consumer_tag: ShortStr::from_static("amq.ctag-1"),
        delivery_tag: 1,
        ..Default::default()
    };
    let mut out = BytesMut::from(&testing::method_bytes(channel, deliver)[..]);
    Frame::Header {
        channel,
        header: ContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size,
            properties: Box::default(),
        },
    }
    .encode(&mut out);
    out.to_vec()
}

/// The payload of body frame `i`: its index, then a fixed filler, so a
/// frame lost, repeated or out of order shows.
fn piece(i: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.put_u64(i);
    p.resize(len, 0xA5);
    p.truncate(len);
    p
}

/// Streams a body of `size` bytes on `channel` in frames of `frame_max`,
/// built as they go (the server holds one batch, never the body); stops
/// early if the client goes away.
fn stream_body(peer: &mut Peer, channel: ChannelId, size: u64, frame_max: u32) {
    // Frame header (7 bytes) and frame end (1 byte).
    let per_frame = u64::from(frame_max) - 8;
    let mut batch = BytesMut::new();
    let (mut sent, mut i) = (0u64, 0u64);
    while sent < size {
        let len = per_frame.min(size - sent);
        let payload = piece(i, len as usize).into();
        Frame::Body { channel, payload }.encode(&mut batch);
        sent += len;
        i += 1;
        if batch.len() >= 256 * 1024 && !peer.send(&batch.split()) {
            return;
        }
    }
    peer.send(&batch);
}

/// Checks a body [`stream_body`] sent.
fn check_body(body: &[u8], frame_max: u32) {
    let per_frame = frame_max as usize - 8;
    for (i, chunk) in body.chunks(per_frame).enumerate() {
        assert!(
            chunk == piece(i as u64, chunk.len()).as_slice(),
            "body frame {i} arrived wrong"
        );
    }
}

/// A consumer on the fake server, which answers the consume and returns
/// its channel to the script.
async fn consume(rt: &Arc<dyn Runtime>, c: &Connection) -> carehare_client::AckingConsumer {
    within(rt, LIMIT, c.acking_consumer("q", 10))
        .await
        .expect("the fake server answers the consume")
}

fn until_consume(peer: &mut Peer) -> ChannelId {
    peer.answer_until(|m| matches!(m, Method::BasicConsume(_)))
        .0
}

/// A content header announcing a body of 2^63 bytes: refused at the
/// header (nothing is allocated for it), 501 FRAME_ERROR.
pub async fn body_size_2_pow_63(rt: Arc<dyn Runtime>) -> Outcome {
    oversized_header(rt, 1 << 63, false).await
}

/// Options with `max_body_size` of [`MAX_BODY`], set here rather than
/// relied on as the default; the close waits for the server to finish
/// streaming.
fn body_options(port: u16) -> ConnectOptions {
    let mut opts = to(port);
    opts.amqp.max_body_size = MAX_BODY;
    opts.amqp.close_timeout = LIMIT;
    opts
}

/// A body of exactly `max_body_size` (128 MiB) in 4 KiB frames (32,833 of
/// them): delivered, whole and in order.
pub async fn body_of_max_body_size(rt: Arc<dyn Runtime>) -> Outcome {
    let server = FakeServer::start(|peer| {
        peer.handshake(tune(SMALL_FRAMES));
        let channel = until_consume(peer);
        peer.send(&deliver_header(channel, MAX_BODY));
        stream_body(peer, channel, MAX_BODY, SMALL_FRAMES);
        peer.serve_until_close()
    });
    let c = connect(&rt, body_options(server.port())).await;
    let consumer = consume(&rt, &c).await;
    let started = Instant::now();
    let m = within(&rt, LIMIT, consumer.next()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(m.body.len() as u64, MAX_BODY);
    check_body(&m.body, SMALL_FRAMES);
    drop(m);
    within(&rt, LIMIT, c.close()).await.unwrap();
    server.join(&rt, LIMIT).await;
    Outcome {
        what: format!("delivered intact ({MAX_BODY} bytes)"),
        took,
    }
}

/// A content header announcing `max_body_size` + 1 bytes, after which the
/// server streams the whole body anyway: refused at the header (501
/// FRAME_ERROR), and the body is read and dropped, never buffered.
pub async fn body_one_byte_over_max_body_size(rt: Arc<dyn Runtime>) -> Outcome {
    oversized_header(rt, MAX_BODY + 1, true).await
}

/// A delivery whose content header announces `size` bytes, more than
/// [`MAX_BODY`], and with `stream_anyway` a body of that size after it.
/// The waiting consumer fails with `BodyTooLarge` at once; the
/// connection ends with it once the server has sent everything and
/// answered the client's `connection.close` 501.
async fn oversized_header(rt: Arc<dyn Runtime>, size: u64, stream_anyway: bool) -> Outcome {
    let server = FakeServer::start(move |peer| {
        peer.handshake(tune(SMALL_FRAMES));
        let channel = until_consume(peer);
        peer.send(&deliver_header(channel, size));
        if stream_anyway {
            stream_body(peer, channel, size, SMALL_FRAMES);
        }
        peer.serve_until_close()
    });
    let c = connect(&rt, body_options(server.port())).await;
    let consumer = consume(&rt, &c).await;
    let started = Instant::now();
    let v = failed_with_violation(within(&rt, LIMIT, consumer.next()).await);
    let took = started.elapsed();
    assert!(
        matches!(v, ProtocolViolation::BodyTooLarge { size: s, max, .. } if s == size && max == MAX_BODY),
        "{v:?}"
    );
    // The client reads whatever comes while it waits for close-ok.
    let outcome = within(&rt, LIMIT, c.closed()).await;
    assert_eq!(violation(&outcome), &v);
    let close = server.join(&rt, LIMIT).await;
    assert_eq!(close.reply_code, 501, "{close:?}");
    Outcome {
        what: format!("next() = ConnectionClosed(Protocol(BodyTooLarge)): {v}"),
        took,
    }
}

// ---- Channel closes --------------------------------------------------------------

/// 500 concurrent `queue_declare`s, each refused with a server
/// `channel.close` 406; then 500 more, each answered, where the server
/// sends its own `channel.close` across each of the client's (both sides
/// closing at once). Each refused declare fails with
/// `ChannelClosedByServer` 406, each other succeeds, and the connection
/// stays usable.
pub async fn channel_close_storm(rt: Arc<dyn Runtime>) -> Outcome {
    const N: usize = 500;
    let server = FakeServer::start(|peer| {
        peer.handshake(testing::server_tune());
        let mut closes = 0usize;
        while let Some((channel, method)) = peer.next_method() {
            let refuse = |text| ChannelClose {
                reply_code: 406,
                reply_text: ShortStr::from_static(text),
                class_id: 50,
                method_id: 10,
            };
            let reply: Method = match method {
                Method::QueueDeclare(d) if d.queue.starts_with("refused") => {
                    refuse("PRECONDITION_FAILED - refused").into()
                }
                Method::ChannelClose(_) => {
                    closes += 1;
                    peer.send(&testing::method_bytes(
                        channel,
                        refuse("PRECONDITION_FAILED - crossing"),
                    ));
                    testing::polite_reply(&method).unwrap()
                }
                Method::ChannelCloseOk(_) => continue,
                Method::ConnectionClose(_) => {
                    peer.close_ok();
                    return closes;
                }
                other => testing::polite_reply(&other).expect("a method the storm answers"),
            };
            peer.send(&testing::method_bytes(channel, reply));
        }
        panic!("the client left without connection.close");
    });
    let c = connect(&rt, to(server.port())).await;
    let started = Instant::now();
    let names = |prefix: &str| {
        (0..N)
            .map(move |i| format!("{prefix}-{i}"))
            .collect::<Vec<_>>()
    };
    let (refused_names, ok_names) = (names("refused"), names("ok"));
    let refused = refused_names
        .iter()
        .map(|q| c.queue_declare(q, QueueOptions::default()));
    for r in within(&rt, LIMIT, join_all(refused)).await {
        match r {
            Err(Error::ChannelClosedByServer(reason)) => assert_eq!(reason.code, 406, "{reason}"),
            other => panic!("expected ChannelClosedByServer 406, got {other:?}"),
        }
    }
    let crossing = ok_names
        .iter()
        .map(|q| c.queue_declare(q, QueueOptions::default()));
    for r in within(&rt, LIMIT, join_all(crossing)).await {
        r.expect("a declare answered before the crossing closes");
    }
    let took = started.elapsed();
    within(
        &rt,
        LIMIT,
        c.queue_declare("after", QueueOptions::default()),
    )
    .await
    .expect("the connection is still usable");
    within(&rt, LIMIT, c.close()).await.unwrap();
    let closes = server.join(&rt, LIMIT).await;
    assert_eq!(closes, N + 1, "one crossing close per answered declare");
    Outcome {
        what: format!(
            "{N} declares: ChannelClosedByServer 406; {N} crossing closes: declares Ok; connection usable"
        ),
        took,
    }
}

// ---- Deliveries nobody asked for ------------------------------------------------

/// 100,000 `basic.deliver`s (1 KiB each) on the publishing channel, which
/// never consumed: each is dropped as a delivery for no consumer (the
/// documented behaviour), nothing accumulates, and the publish is then
/// confirmed.
pub async fn deliver_without_consume(rt: Arc<dyn Runtime>) -> Outcome {
    const DELIVERIES: u64 = 100_000;
    const BODY: [u8; 1024] = [0x5A; 1024];
    let server = FakeServer::start(|peer| {
        peer.handshake(testing::server_tune());
        let (channel, _) = peer.answer_until(|m| matches!(m, Method::BasicPublish(_)));
        let mut batch = Vec::new();
        for tag in 1..=DELIVERIES {
            let deliver = BasicDeliver {
                consumer_tag: ShortStr::from_static("nobody"),
                delivery_tag: tag,
                ..Default::default()
            };
            let props = BasicProperties::default();
            batch.extend(testing::content_bytes(channel, deliver, &props, &BODY, 0));
            if batch.len() >= 256 * 1024 && !peer.send(&std::mem::take(&mut batch)) {
                break;
            }
        }
        let ack = BasicAck {
            delivery_tag: 1,
            multiple: false,
        };
        batch.extend(testing::method_bytes(channel, ack));
        peer.send(&batch);
        peer.serve_until_close()
    });
    let c = connect(&rt, to(server.port())).await;
    let started = Instant::now();
    within(&rt, LIMIT, c.publish("hello", "", "q"))
        .await
        .expect("the publish is confirmed after the deliveries");
    let took = started.elapsed();
    within(&rt, LIMIT, c.close()).await.unwrap();
    let close = server.join(&rt, LIMIT).await;
    assert_eq!(close.reply_code, 200, "{close:?}");
    Outcome {
        what: format!(
            "{DELIVERIES} deliveries dropped (no consumer); the publish confirmed; connection usable"
        ),
        took,
    }
}

// ---- Blocked for good -------------------------------------------------------------

/// `connection.blocked` right after the handshake, never lifted, while a
/// publisher (window 5) publishes 20 messages and another publishes
/// without confirms. With `blocked_timeout` 500 ms the connection ends
/// with `BlockedTimeout`, and every wait fails with it.
pub async fn blocked_never_lifted(rt: Arc<dyn Runtime>) -> Outcome {
    const BLOCKED_TIMEOUT: Duration = Duration::from_millis(500);
    let server = FakeServer::start(|peer| {
        peer.handshake(testing::server_tune());
        let blocked = ConnectionBlocked {
            reason: ShortStr::from_static("low on memory"),
        };
        peer.send(&testing::method_bytes(0, blocked));
        // Answer channel opens, never a publish; the client leaves.
        let mut close = None;
        while let Some((channel, method)) = peer.next_method() {
            if let Method::ConnectionClose(c) = &method {
                close = Some(c.clone());
            } else if let Some(reply) = testing::polite_reply(&method) {
                peer.send(&testing::method_bytes(channel, reply));
            }
        }
        close
    });
    let mut opts = to(server.port());
    opts.amqp.blocked_timeout = Some(BLOCKED_TIMEOUT);
    let c = connect(&rt, opts).await;
    // Publish once the client knows it is blocked, so that nothing goes
    // out before.
    within(&rt, LIMIT, async {
        while c.blocked().is_none() {
            sleep(&rt, Duration::from_millis(1)).await;
        }
    })
    .await;
    let started = Instant::now();
    let publisher = c.publisher(5);
    let confirmed = (0..20).map(|i| {
        let publisher = publisher.clone();
        async move { publisher.publish(format!("{i}"), "", "q").await?.await }
    });
    let props = BasicProperties::default();
    let unconfirmed = c.publish_unconfirmed("x", "", "q", &props);
    let (confirmed, unconfirmed) = within(&rt, LIMIT, async {
        futures_util::join!(join_all(confirmed), unconfirmed)
    })
    .await;
    let took = started.elapsed();
    let expected = ConnectionError::BlockedTimeout(BLOCKED_TIMEOUT);
    for r in confirmed.into_iter().chain([unconfirmed]) {
        assert!(
            matches!(&r, Err(Error::ConnectionClosed(e)) if *e == expected),
            "{r:?}"
        );
    }
    assert_eq!(within(&rt, LIMIT, c.closed()).await, expected);
    let close = server.join(&rt, LIMIT).await;
    let close = close.expect("the client says why it leaves");
    assert_eq!(close.reply_code, 200, "{close:?}");
    Outcome {
        what: format!("every publish: ConnectionClosed(BlockedTimeout): {expected}"),
        took,
    }
}

// ---- A handshake that stops half-way ------------------------------------------

/// `connection.start`, then nothing: no `tune`, ever. With
/// `connection_timeout` 500 ms, `connect` fails with `ConnectTimeout`.
pub async fn handshake_without_tune(rt: Arc<dyn Runtime>) -> Outcome {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let server = FakeServer::start(|peer| {
        peer.expect_protocol_header();
        peer.send(&testing::method_bytes(0, testing::server_start()));
        let start_ok = peer.next_method();
        peer.drain_until_eof();
        start_ok.map(|(_, m)| m.name())
    });
    let mut opts = to(server.port());
    opts.connection_timeout = TIMEOUT;
    let started = Instant::now();
    let result = within(&rt, LIMIT, connect_with_runtime(rt.clone(), opts)).await;
    let took = started.elapsed();
    let shown = match result {
        Err(e @ Error::ConnectTimeout { timeout, .. }) if timeout == TIMEOUT => e.to_string(),
        other => panic!("expected ConnectTimeout, got {other:?}"),
    };
    assert_eq!(
        server.join(&rt, LIMIT).await,
        Some("connection.start-ok"),
        "the client answered start, then waited for tune"
    );
    Outcome {
        what: format!("connect = ConnectTimeout: {shown}"),
        took,
    }
}
