//! Arbitrary server bytes into an open connection with one open channel.
//!
//! Each run completes a valid handshake with carehare-core's scripted
//! broker (`carehare_core::testing`) and opens channel 1, then feeds the
//! input in a few chunks, moving simulated time between them and firing
//! timers as a driver would. The first input byte picks the shape: bits 0-2 the number of chunks (1 to 8), bits 5-7
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

use carehare_core::frame::Frame;
use carehare_core::testing::Broker;
use carehare_core::{ConnectionConfig, Event};
use libfuzzer_sys::fuzz_target;

/// One fixed starting time for every run, so runs are reproducible.
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Seconds the clock moves between chunks, picked by bits 5-7.
const ADVANCE_SECS: [u64; 8] = [0, 1, 2, 3, 5, 8, 31, 121];

/// carehare-core's scripted broker, with the checks of the invariants
/// above.
struct Harness {
    b: Broker,
    /// Whether `Event::ConnectionClosed` has been seen.
    closed: bool,
}

impl Harness {
    /// Handshake and one open channel, by the scripted broker, which
    /// panics if the core does not follow the script.
    fn new() -> Self {
        let mut b = Broker::new_at(ConnectionConfig::default(), t0());
        b.handshake();
        b.open_channel();
        assert!(b.conn.is_open());
        Self { b, closed: false }
    }

    /// Drains `poll_transmit` into frames; the broker checks they are
    /// whole and valid.
    fn sent(&mut self) -> Vec<Frame> {
        let frames = self.b.sent();
        if self.closed {
            assert!(
                frames.is_empty(),
                "transmitted after ConnectionClosed: {frames:?}"
            );
        }
        frames
    }

    /// Drains `poll_event`, checking the close invariants.
    fn events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.b.conn.poll_event() {
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
            let conn = &self.b.conn;
            assert!(conn.is_closed(), "ConnectionClosed but !is_closed()");
            assert!(!conn.is_open(), "ConnectionClosed but is_open()");
            assert_eq!(conn.poll_timeout(), None, "a timer runs when closed");
        }
        events
    }

    /// What a driver does after any input: drain both outputs.
    fn drain(&mut self) {
        self.sent();
        self.events();
    }

    fn input(&mut self, data: &[u8]) {
        self.b.bytes(data);
        self.drain();
    }

    /// Moves the clock forward, firing every timer that falls due on the
    /// way, draining after each, as a driver would.
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
                assert!(
                    next > self.b.now,
                    "handle_timeout({:?}) left a timer at {:?}: a driver would spin",
                    self.b.now - t0(),
                    next - t0()
                );
            }
        }
        self.b.now = target;
        self.b.conn.handle_timeout(self.b.now);
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

    for (i, chunk) in input.chunks(chunk_len).enumerate() {
        if i > 0 {
            h.advance(step);
        }
        h.input(chunk);
    }
    h.advance(step);
    // The transport ends: whatever state the input left, the connection is
    // over after this.
    h.b.conn.handle_eof(h.b.now);
    h.drain();
    assert!(h.closed, "no ConnectionClosed after handle_eof");
    assert!(h.b.conn.is_closed());
    // Later input and timers are ignored.
    h.input(input);
    h.advance(Duration::from_secs(300));
    h.drain();
});
