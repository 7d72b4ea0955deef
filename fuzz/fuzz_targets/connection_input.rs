//! Arbitrary server bytes into an open connection with one open channel.
//!
//! Each run completes a valid handshake (as `tests/common/mod.rs` does) and
//! opens channel 1, then feeds the input in a few chunks, moving simulated
//! time between them and firing timers as a driver would. The first input
//! byte picks the shape: bits 0-2 the number of chunks (1 to 8), bits 5-7
//! how far the clock moves between chunks (0 s to 121 s, so heartbeat
//! sending and the heartbeat monitor are reached too).
//!
//! Invariants:
//! - nothing panics;
//! - `Event::ConnectionClosed` comes at most once, and last: no event after
//!   it, `is_closed()` is true from then on, `poll_timeout()` is `None`, and
//!   nothing more is transmitted;
//! - after the handshake, everything the client transmits splits into whole,
//!   valid frames (`decode_frame(.., 0)`), with no partial frame left over
//!   once `poll_transmit` is drained;
//! - after `handle_timeout(now)`, the next timer is strictly later than
//!   `now` (otherwise a driver would spin).
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use carehare_core::frame::{Frame, PROTOCOL_HEADER, decode_frame, encode_method};
use carehare_core::method::{
    ChannelOpen, ChannelOpenOk, ConnectionOpenOk, ConnectionStart, ConnectionTune, Method,
};
use carehare_core::types::{AMQPValue, FieldTable};
use carehare_core::{Connection, ConnectionConfig, Event, Reply};
use libfuzzer_sys::fuzz_target;

/// One fixed starting time for every run, so runs are reproducible.
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Seconds the clock moves between chunks, picked by bits 5-7.
const ADVANCE_SECS: [u64; 8] = [0, 1, 2, 3, 5, 8, 31, 121];

struct Harness {
    conn: Connection,
    now: Instant,
    /// Client bytes not yet split into frames (only after the handshake).
    from_client: BytesMut,
    /// Whether `Event::ConnectionClosed` has been seen.
    closed: bool,
}

impl Harness {
    fn new() -> Self {
        let now = t0();
        let mut conn = Connection::new(ConnectionConfig::default(), now);
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert_eq!(out, PROTOCOL_HEADER);
        Self {
            conn,
            now,
            from_client: BytesMut::new(),
            closed: false,
        }
    }

    /// Drains `poll_transmit` into frames, checking they are whole and valid.
    fn sent(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while self.conn.poll_transmit(&mut out) > 0 {}
        if self.closed {
            assert!(
                out.is_empty(),
                "transmitted {} bytes after ConnectionClosed: {out:02x?}",
                out.len()
            );
        }
        self.from_client.extend_from_slice(&out);
        let mut frames = Vec::new();
        loop {
            match decode_frame(&mut self.from_client, 0) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => panic!(
                    "client sent an invalid frame: {e}\nbytes: {:02x?}",
                    &self.from_client[..]
                ),
            }
        }
        assert!(
            self.from_client.is_empty(),
            "client left a partial frame: {:02x?}",
            &self.from_client[..]
        );
        frames
    }

    /// Drains `poll_event`, checking the close invariants.
    fn events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.conn.poll_event() {
            assert!(
                !self.closed,
                "event after ConnectionClosed: {event:?} (earlier: {events:?})"
            );
            if matches!(event, Event::ConnectionClosed { .. }) {
                self.closed = true;
            }
            events.push(event);
        }
        if self.closed {
            assert!(self.conn.is_closed(), "ConnectionClosed but !is_closed()");
            assert!(!self.conn.is_open(), "ConnectionClosed but is_open()");
            assert_eq!(self.conn.poll_timeout(), None, "a timer runs when closed");
        }
        events
    }

    /// What a driver does after any input: drain both outputs.
    fn drain(&mut self) {
        self.sent();
        self.events();
    }

    fn method(&mut self, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method.into());
        self.conn.handle_input(self.now, &out);
    }

    fn expect_methods(&mut self) -> Vec<(u16, Method)> {
        self.sent()
            .into_iter()
            .map(|f| match f {
                Frame::Method { channel, method } => (channel, method),
                other => panic!("handshake: expected a method, got {other:?}"),
            })
            .collect()
    }

    /// Handshake and one open channel; panics (on every input) if the core
    /// does not follow the script.
    fn handshake(&mut self) {
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
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            },
        );
        match self.expect_methods().as_slice() {
            [(0, Method::ConnectionStartOk(_))] => {}
            other => panic!("handshake: expected start-ok, got {other:?}"),
        }
        self.method(
            0,
            ConnectionTune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            },
        );
        match self.expect_methods().as_slice() {
            [
                (0, Method::ConnectionTuneOk(_)),
                (0, Method::ConnectionOpen(_)),
            ] => {}
            other => panic!("handshake: expected tune-ok and open, got {other:?}"),
        }
        self.method(0, ConnectionOpenOk::default());
        match self.events().as_slice() {
            [Event::Connected(_)] => {}
            other => panic!("handshake: expected Connected, got {other:?}"),
        }

        let (id, op) = self.conn.open_channel().expect("open_channel");
        match self.expect_methods().as_slice() {
            [(ch, Method::ChannelOpen(ChannelOpen { .. }))] if *ch == id => {}
            other => panic!("handshake: expected channel.open, got {other:?}"),
        }
        self.method(id, ChannelOpenOk::default());
        match self.events().as_slice() {
            [
                Event::Completed {
                    op: o,
                    channel,
                    result: Ok(Reply::Method(Method::ChannelOpenOk(_))),
                },
            ] if (*o, *channel) == (op, id) => {}
            other => panic!("handshake: expected open-ok completion, got {other:?}"),
        }
        assert!(self.conn.is_open());
    }

    /// Moves the clock forward, firing every timer that falls due on the
    /// way, draining after each, as a driver would.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(t) = self.conn.poll_timeout() {
            if t > target {
                break;
            }
            self.now = t.max(self.now);
            self.conn.handle_timeout(self.now);
            self.drain();
            if let Some(next) = self.conn.poll_timeout() {
                assert!(
                    next > self.now,
                    "handle_timeout({:?}) left a timer at {:?}: a driver would spin",
                    self.now - t0(),
                    next - t0()
                );
            }
        }
        self.now = target;
        self.conn.handle_timeout(self.now);
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, input)) = data.split_first() else {
        return;
    };
    let chunks = 1 + usize::from(shape & 0x07);
    let step = Duration::from_secs(ADVANCE_SECS[usize::from(shape >> 5)]);
    let chunk_len = input.len().div_ceil(chunks).max(1);

    let mut h = Harness::new();
    h.handshake();

    for (i, chunk) in input.chunks(chunk_len).enumerate() {
        if i > 0 {
            h.advance(step);
        }
        h.conn.handle_input(h.now, chunk);
        h.drain();
    }
    h.advance(step);
    // The transport ends: whatever state the input left, the connection is
    // over after this.
    h.conn.handle_eof(h.now);
    h.drain();
    assert!(h.closed, "no ConnectionClosed after handle_eof");
    assert!(h.conn.is_closed());
    // Later input and timers are ignored.
    h.conn.handle_input(h.now, input);
    h.advance(Duration::from_secs(300));
    h.drain();
});
