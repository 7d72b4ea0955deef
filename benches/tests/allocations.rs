//! Counts heap allocations while carehare-core decodes small deliveries.
//!
//! This lives in `benches/` rather than `crates/carehare-core/tests/`: the
//! workspace sets `unsafe_code = "forbid"`, which an `#[allow]` cannot lift,
//! and a `GlobalAlloc` impl needs `unsafe impl`. Being its own test binary,
//! the counting allocator only affects this file. Run with
//! `cargo test --release --test allocations -- --nocapture --test-threads 1`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use carehare_benches::{CHANNEL, FRAME_MAX, carehare_decode_all, deliver_stream};
use carehare_core::frame::decode_frame;
use carehare_core::method::ConnectionTune;
use carehare_core::testing::Broker;
use carehare_core::{Connection, ConnectionConfig, Event};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
// The two tests count the same global; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 1000;
const BODY: &[u8] = b"hello world!"; // 12 B

fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCS.load(Ordering::SeqCst);
    let out = f();
    (out, ALLOCS.load(Ordering::SeqCst) - before)
}

/// `decode_frame` over a pre-built, pre-reserved buffer of N deliveries
/// (deliver + header + one 12-byte body frame each).
#[test]
fn decode_frame_allocations_per_small_message() {
    let _g = SERIAL.lock();
    let mut warm = deliver_stream(10, BODY);
    carehare_decode_all(&mut warm);

    let mut buf = deliver_stream(N + 1, BODY);
    buf.reserve(0);
    // Split the first message off outside the count: the first split_to of
    // a Vec-backed BytesMut promotes it to shared storage, one allocation
    // per buffer (not per message).
    for _ in 0..3 {
        decode_frame(&mut buf, FRAME_MAX)
            .expect("valid")
            .expect("a frame");
    }
    let (body, allocs) = count(|| carehare_decode_all(&mut buf));
    assert_eq!(body, N * BODY.len());
    let per = allocs as f64 / N as f64;
    println!("decode_frame: {allocs} allocations for {N} messages = {per:.3} per message");
    // One per message: the content header's properties are decoded into a
    // box, so that they travel as a pointer to the caller. Method, header
    // strings and body borrow the input buffer (ShortStr is a ByteString
    // slice, Body a Bytes slice).
    assert_eq!(allocs, N, "{allocs} allocations for {N} messages");
}

/// The whole path a driver takes: `Connection::handle_input` (copy into the
/// read buffer, decode, channel state machine, content assembly) and
/// `poll_event` for each `Event::Delivery`, after a scripted handshake.
#[test]
fn handle_input_allocations_per_small_message() {
    let _g = SERIAL.lock();
    let mut now = Instant::now();
    // carehare-core's scripted broker runs (and checks) the handshake.
    let mut broker = Broker::new_at(ConnectionConfig::default(), now);
    broker.handshake_with(ConnectionTune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 0,
    });
    assert_eq!(broker.open_channel(), CHANNEL);
    let mut conn = broker.conn;
    assert!(conn.is_open());

    // A driver reads in chunks; feed 64 KiB reads, as a socket would give.
    let stream = deliver_stream(N, BODY);
    let warm = deliver_stream(N, BODY);
    let mut run = |stream: &[u8], now: Instant, read: usize| -> usize {
        let mut got = 0;
        for chunk in stream.chunks(read) {
            conn.handle_input(now, chunk);
            while let Some(ev) = conn.poll_event() {
                if let Event::Delivery { delivery, .. } = &ev {
                    assert_eq!(&delivery.body[..], BODY);
                    got += 1;
                }
                drop(ev);
            }
        }
        got
    };
    // Warm-up pass: grows the read buffer and the event queue to size.
    assert_eq!(run(&warm, now, 64 * 1024), N);
    for read in [64 * 1024, 4 * 1024] {
        now += std::time::Duration::from_millis(1);
        let (got, allocs) = count(|| run(&stream, now, read));
        assert_eq!(got, N);
        let reads = stream.len().div_ceil(read);
        let per = allocs as f64 / N as f64;
        println!(
            "handle_input + poll_event, {read} B reads: {allocs} allocations for {N} messages \
             ({reads} reads) = {per:.3} per message"
        );
        // None: the connection no longer reserves room for a partial frame
        // (which moved it to a fresh allocation every read while earlier
        // bodies still shared the buffer); the buffer grows in place once
        // the deliveries of the previous read are dropped.
        // And one per message: the properties' box (see above).
        assert_eq!(allocs, N, "{allocs} allocations, {reads} reads");
    }

    // The driver's way (carehare-client): each read lands in the free tail
    // of a 256 KiB block, is split off and handed over with
    // `handle_input_bytes` (no copy; bodies are slices of the block). The
    // block is reused in place once nothing points into it; when a fresh
    // one is taken, `relocate_input` moves a partial frame over to it.
    const BLOCK: usize = 256 * 1024;
    let mut block = BytesMut::with_capacity(BLOCK);
    let mut run_blocks = |conn: &mut Connection, stream: &[u8], now: Instant, read: usize| {
        let mut got = 0;
        let mut rest = stream;
        while !rest.is_empty() {
            if block.capacity() - block.len() < 4096 {
                block.reserve(BLOCK);
                conn.relocate_input(&mut block);
            }
            // Stands for the socket read into the block's free tail (the
            // driver never offers a read more than the tail holds).
            let n = read.min(block.capacity() - block.len()).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            block.extend_from_slice(chunk);
            conn.handle_input_bytes(now, block.split());
            while let Some(ev) = conn.poll_event() {
                if let Event::Delivery { delivery, .. } = &ev {
                    assert_eq!(&delivery.body[..], BODY);
                    got += 1;
                }
            }
        }
        got
    };
    let warm = deliver_stream(N, BODY);
    for _ in 0..4 {
        assert_eq!(run_blocks(&mut conn, &warm, now, 64 * 1024), N);
    }
    for read in [64 * 1024, 4 * 1024] {
        now += std::time::Duration::from_millis(1);
        let rounds = 10;
        let (got, allocs) = count(|| {
            (0..rounds)
                .map(|_| run_blocks(&mut conn, &stream, now, read))
                .sum::<usize>()
        });
        assert_eq!(got, rounds * N);
        let blocks = (rounds * stream.len()).div_ceil(BLOCK);
        let per = allocs as f64 / got as f64;
        println!(
            "handle_input_bytes (reused 256 KiB blocks), {read} B reads: {allocs} allocations for {got} messages ({blocks} blocks filled) = {per:.4} per message"
        );
        // A block is reused in place when nothing points into it, which is
        // the case here (every delivery is dropped at once) but for the
        // partial frame `relocate_input` moves out: at most a new block
        // (the Vec and its shared header: two allocations) per block
        // filled.
        // Plus the properties' box of each message (see above).
        assert!(
            allocs <= got + 2 * blocks,
            "{allocs} allocations, {blocks} blocks"
        );
    }
}
