//! The driver: one future per connection that moves bytes between the
//! socket and the core, and runs the core's timers. Written once, over
//! `futures-io`, and spawned on whichever runtime the adapter provides.
//!
//! Each wakeup: read everything available and feed it to the core, route
//! the core's events to waiting handles, write everything the core queued
//! in one (vectored) write, and re-arm the timer. This is the contract at
//! the top of `carehare_core`. The one exception: while a no-ack
//! consumer's buffer is full, reading waits (TCP back-pressure) until the
//! consumer takes a message, which wakes the driver; the core is told, so
//! that its heartbeat monitor does not blame the server for the silence.
//!
//! Neither direction copies in the driver, but for short reads. Reads land
//! in a block of memory that is split off and handed to the core, so
//! delivered bodies are slices of it; the block is reused once every slice
//! of it is dropped. A short read (a heartbeat, an ack) is copied out
//! instead, so that a quiet connection doesn't walk through its block and
//! make all of it resident. Blocks grow with the reads (256 KiB under
//! load) and drop back to a 512 B one after a run of short reads: an idle
//! connection holds 512 B for reading, not the handshake's 2 KiB. Writes
//! take the core's queued pieces as `Bytes` (its write buffer, plus large
//! published bodies as the caller's own `Bytes`) and send them with one
//! `writev`.
//!
//! After each round the driver sets the socket's receive low-water mark to
//! the core's `read_low_water` (when the runtime gave it the socket's
//! `LowWater`): while publishes are held back it then sleeps until several
//! ack frames are there, not for each one, and the mark is back to 1 as
//! soon as nothing is held, or the hold's timer ended it.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};

use tracing::debug;

use crate::low_water::LowWater;
use crate::runtime::{BoxFuture, Runtime, Stream};
use crate::state::Shared;

/// Reads per wakeup before yielding, so one busy connection can't starve
/// other tasks on the same executor thread.
const READS_PER_POLL: usize = 16;
/// Reads go into blocks at most this large, split off as they fill.
const READ_BLOCK: usize = 256 * 1024;
/// The first block, large enough for the handshake's `connection.start`
/// in one or two reads; also the least a block grows to after load
/// returns.
const SMALL_BLOCK: usize = 2 * 1024;
/// A read is at most this large...
const READ_MAX: usize = 64 * 1024;
/// ...and at least this large; below it a fresh block is taken.
const READ_MIN: usize = 512;
/// The block after a quiet spell: what an idle connection holds for
/// reading. Exactly one read of the least size, so short reads keep
/// reusing it without taking a fresh block.
const IDLE_BLOCK: usize = READ_MIN;
/// Reads shorter than this are copied out of the block (see the top).
const COPY_BELOW: usize = 256;
/// After this many short reads in a row, a block larger than SMALL_BLOCK
/// is let go: taking a large one again under load costs more...
const SHRINK_AFTER: u32 = 16;
/// ...than taking a small one, which is let go sooner. The handshake ends
/// with two short reads (`tune`, `open-ok`), so an idle connection is down
/// to IDLE_BLOCK as soon as it opens.
const SHRINK_SMALL_AFTER: u32 = 2;
/// Pieces per `writev` at most (Linux allows 1024; this is plenty).
const MAX_IOV: usize = 64;

pub(crate) struct Driver {
    io: Box<dyn Stream>,
    shared: Arc<Shared>,
    runtime: Arc<dyn Runtime>,
    /// The free tail of the current read block: `filled` bytes of data
    /// (after a fresh block is taken, the partial frame moved over from the
    /// old one), then zeroed scratch that reads land in.
    read_buf: BytesMut,
    filled: usize,
    /// How much to offer the next read: grows after full reads, so that
    /// small reads don't zero a large buffer every time.
    read_size: usize,
    /// The size the current block was taken at.
    block: usize,
    /// Short reads in a row.
    short_reads: u32,
    /// Queued output, in order; the front may be partly written.
    out: VecDeque<Bytes>,
    timer: Option<(Instant, BoxFuture<'static, ()>)>,
    eof: bool,
    /// The socket's receive low-water mark, if the runtime gave it and the
    /// socket never refused a higher one, and the value last set (1, the
    /// kernel's default, before any).
    low_water: Option<LowWater>,
    low_water_set: usize,
}

impl Driver {
    pub(crate) fn new(io: Box<dyn Stream>, shared: Arc<Shared>, runtime: Arc<dyn Runtime>) -> Self {
        Self {
            io,
            shared,
            runtime,
            read_buf: BytesMut::with_capacity(SMALL_BLOCK),
            filled: 0,
            read_size: READ_MIN,
            block: SMALL_BLOCK,
            short_reads: 0,
            out: VecDeque::new(),
            timer: None,
            eof: false,
            low_water: None,
            low_water_set: 1,
        }
    }

    /// Sets the socket's receive low-water mark to what the core asks
    /// (see `low_water`).
    pub(crate) fn with_low_water(mut self, low_water: Option<LowWater>) -> Self {
        self.low_water = low_water;
        self
    }

    /// Moves the socket's low-water mark to `wanted` if it isn't there. A
    /// socket that refuses a higher mark is kept at 1 from then on; one
    /// that refuses to lower it would leave input unread, so that is an
    /// error that ends the connection.
    fn set_low_water(&mut self, wanted: usize) -> std::io::Result<()> {
        if wanted == self.low_water_set {
            return Ok(());
        }
        let Some(low_water) = &self.low_water else {
            return Ok(());
        };
        match low_water.set(wanted) {
            Ok(()) => self.low_water_set = wanted,
            Err(e) if wanted > self.low_water_set => {
                debug!(error = %e, "the socket's receive low-water mark can't be raised");
                // Back to 1 if an earlier mark is still set, then let it be.
                let lowered = self.set_low_water(1);
                self.low_water = None;
                return lowered;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Reads what is available. Returns true if it should be polled again
    /// soon (the read budget ran out).
    fn poll_read_all(&mut self, cx: &mut Context<'_>) -> bool {
        if self.eof {
            return false;
        }
        for _ in 0..READS_PER_POLL {
            // A no-ack consumer's buffer is full: leave the data in the
            // socket (TCP back-pressure) until it is read from, which wakes
            // this driver.
            if self.shared.lock().hold_input(self.runtime.now()) {
                return false;
            }
            // `read_buf[..filled]` is data the core hasn't seen (a partial
            // frame moved over from the old block); the rest of `read_buf`
            // is zeroed scratch, kept between reads so it is zeroed once.
            let filled = self.filled;
            if self.read_buf.capacity() - filled < READ_MIN {
                self.read_buf.truncate(filled);
                // Room for four reads of the current size, and never
                // smaller than the last block until a quiet spell (see
                // below): SMALL_BLOCK while reads are short, READ_BLOCK
                // under load.
                self.block = (self.read_size * 4).clamp(self.block, READ_BLOCK);
                // Reuses the block in place when no slice of it is alive.
                self.read_buf.reserve(self.block);
                // A partial frame left in the old block moves to the new
                // one, so what we read next joins it without a copy.
                self.shared.lock().relocate_input(&mut self.read_buf);
                self.filled = self.read_buf.len();
            }
            let start = self.filled;
            let want = self.read_size.min(self.read_buf.capacity() - start).max(1);
            if self.read_buf.len() < start + want {
                // futures-io reads into initialized memory.
                self.read_buf.resize(start + want, 0);
            }
            let read =
                Pin::new(&mut self.io).poll_read(cx, &mut self.read_buf[start..start + want]);
            match read {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    self.shared.lock().eof(self.runtime.now());
                    return false;
                }
                Poll::Ready(Ok(n)) => {
                    self.read_size = if n == want {
                        // Full, even if the block's end cut it short: grow.
                        (self.read_size * 2).min(READ_MAX)
                    } else {
                        (n * 2).clamp(READ_MIN, READ_MAX)
                    };
                    let data = if start == 0 && n < COPY_BELOW {
                        // The scratch stays where it is, for the next read.
                        self.short_reads = self.short_reads.saturating_add(1);
                        BytesMut::from(&self.read_buf[..n])
                    } else {
                        self.short_reads = 0;
                        self.filled = 0;
                        self.read_buf.split_to(start + n)
                    };
                    let now = self.runtime.now();
                    self.shared.lock().input(now, data);
                    let quiet = if self.block > SMALL_BLOCK {
                        SHRINK_AFTER
                    } else {
                        SHRINK_SMALL_AFTER
                    };
                    if self.short_reads >= quiet && self.block > IDLE_BLOCK {
                        // Quiet now: let the block go (once every slice of
                        // it is dropped) for an idle one. Short reads are
                        // copied out, so nothing unread is in it.
                        self.read_buf = BytesMut::with_capacity(IDLE_BLOCK);
                        self.block = IDLE_BLOCK;
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    self.eof = true;
                    self.shared.lock().transport_error(self.runtime.now(), e);
                    return false;
                }
                Poll::Pending => return false,
            }
        }
        true
    }

    /// Writes everything queued. Returns Ready(Err) if the socket failed.
    fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.out.is_empty() && self.shared.lock().poll_transmit(&mut self.out) == 0 {
                return Pin::new(&mut self.io).poll_flush(cx);
            }
            let written = if self.out.len() == 1 {
                Pin::new(&mut self.io).poll_write(cx, &self.out[0])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.out.iter()) {
                    *slot = IoSlice::new(chunk);
                    k += 1;
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k])
            };
            match written {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(mut n)) => {
                    while n > 0 {
                        let Some(front) = self.out.front_mut() else {
                            break;
                        };
                        if n >= front.len() {
                            n -= front.len();
                            self.out.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Fires the core's timer when due. Returns true if it fired.
    /// Also sets the socket's low-water mark, from the same look at the
    /// core: after the writes, where a hold starts or ends.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let (wanted, low_water) = {
            let inner = self.shared.lock();
            (inner.poll_timeout(), inner.read_low_water())
        };
        if let Err(e) = self.set_low_water(low_water) {
            self.eof = true;
            self.shared.lock().transport_error(self.runtime.now(), e);
            // The next poll finds the connection closed and ends.
            cx.waker().wake_by_ref();
            return false;
        }
        let Some(wanted) = wanted else {
            self.timer = None;
            return false;
        };
        // Re-arm when the deadline moved earlier. A later one is served by
        // waking early, which the core allows, unless the timer would fire
        // before half the way to it: then it is re-armed too, so that a
        // quiet connection whose heartbeats ride on its reads (see the
        // core's `heartbeat`) is never woken by the timer. Under load that
        // re-arms about twice per heartbeat interval, not per wakeup.
        let rearm = match &self.timer {
            None => true,
            Some((at, _)) if wanted < *at => true,
            Some((at, _)) if wanted > *at => {
                let now = self.runtime.now();
                at.saturating_duration_since(now) < wanted.saturating_duration_since(now) / 2
            }
            Some(_) => false,
        };
        if rearm {
            self.timer = Some((wanted, self.runtime.sleep_until(wanted)));
        }
        let Some((_, sleep)) = self.timer.as_mut() else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_ready() {
            self.timer = None;
            self.shared.lock().timeout(self.runtime.now());
            return true;
        }
        false
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.shared.register_driver(cx.waker());
        loop {
            let more_to_read = this.poll_read_all(cx);
            match this.poll_write_all(cx) {
                Poll::Ready(Err(e)) => {
                    this.shared.lock().transport_error(this.runtime.now(), e);
                    // Nothing more can be written; drop what is queued.
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => {
                    if this.shared.lock().is_closed() {
                        // Everything (e.g. our close-ok) is written: done.
                        let _ = Pin::new(&mut this.io).poll_close(cx);
                        return Poll::Ready(());
                    }
                }
                Poll::Pending => {
                    // The socket is full: what it took may let waiting
                    // publishers go on (see `Inner::unwritten`).
                    let unwritten = this.out.iter().map(Bytes::len).sum();
                    this.shared.lock().unwritten(unwritten);
                }
            }
            // After the write: holding publishes back (see the core's
            // `Coalescing`) sets a timer only `poll_transmit` knows of.
            if this.poll_timer(cx) {
                continue;
            }
            if more_to_read {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }
}

impl Drop for Driver {
    /// A driver dropped before the connection ended (its task was
    /// cancelled, or its runtime shut down) leaves every waiter without an
    /// answer: tell them why.
    fn drop(&mut self) {
        self.shared.lock().driver_stopped();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Waker};

    use carehare_core::testing;

    use super::{Driver, IDLE_BLOCK, READ_BLOCK, SHRINK_AFTER, SHRINK_SMALL_AFTER, SMALL_BLOCK};
    use crate::metrics::Meter;
    use crate::runtime::Runtime;
    use crate::sim::{FakeBroker, SimRuntime, duplex};
    use crate::state::Shared;

    fn heartbeats(n: usize) -> Vec<u8> {
        [8, 0, 0, 0, 0, 0, 0, 0xCE].repeat(n)
    }

    /// A connected driver over an in-memory socket, and the server's end.
    fn connected() -> (Driver, Arc<Shared>, FakeBroker) {
        let runtime = SimRuntime::new(Box::new(|_| Err(io::ErrorKind::ConnectionRefused.into())));
        let (client, server) = duplex();
        let broker = FakeBroker::accept(server, testing::server_tune());
        let conn = carehare_core::Connection::new(Default::default(), runtime.now());
        let (shared, _connected) = Shared::new(conn, Meter::new(None), tracing::Span::none());
        let driver = Driver::new(Box::new(client), shared.clone(), runtime);
        let mut driver = (driver, shared, broker);
        read(&mut driver, []);
        driver
    }

    /// Sends `pieces` one at a time, polling the driver after each until
    /// it has read all of it: one read per piece that fits a read.
    fn read(
        driver: &mut (Driver, Arc<Shared>, FakeBroker),
        pieces: impl IntoIterator<Item = Vec<u8>>,
    ) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut poll = |driver: &mut (Driver, Arc<Shared>, FakeBroker)| {
            while driver.2.unread_by_client() > 0 {
                assert!(Pin::new(&mut driver.0).poll(&mut cx).is_pending());
            }
        };
        poll(driver);
        for piece in pieces {
            driver.2.send(&piece);
            poll(driver);
        }
        assert!(!driver.1.lock().is_closed());
    }

    /// A connected driver whose low-water mark is on an open file, which
    /// is no socket: every set fails. Keep the file as long as the driver.
    #[cfg(unix)]
    fn refusing_low_water() -> ((Driver, Arc<Shared>, FakeBroker), std::fs::File) {
        let mut driver = connected();
        let file = std::fs::File::open("/dev/null").unwrap();
        driver.0.low_water = Some(crate::low_water::LowWater::of(&file));
        (driver, file)
    }

    #[cfg(unix)]
    #[test]
    fn a_socket_that_refuses_a_higher_mark_stays_at_one() {
        let (mut driver, _file) = refusing_low_water();
        assert!(driver.0.set_low_water(64).is_ok());
        assert!(driver.0.low_water.is_none());
        assert_eq!(driver.0.low_water_set, 1);
        assert!(driver.0.set_low_water(64).is_ok(), "not tried again");
    }

    #[cfg(unix)]
    #[test]
    fn a_socket_that_refuses_to_lower_its_mark_ends_the_connection() {
        let (mut driver, _file) = refusing_low_water();
        // As if a mark of 64 had been set while publishes were held.
        driver.0.low_water_set = 64;
        let mut cx = Context::from_waker(Waker::noop());
        // Nothing is held: the driver lowers the mark, which fails.
        let _ = Pin::new(&mut driver.0).poll(&mut cx);
        assert!(driver.1.lock().is_closed(), "unread input would wait");
        assert!(Pin::new(&mut driver.0).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_quiet_connection_reads_into_one_idle_block() {
        let mut driver = connected();
        // The handshake's block is let go once the connection opened.
        read(&mut driver, (0..SHRINK_SMALL_AFTER).map(|_| heartbeats(1)));
        assert_eq!(driver.0.block, IDLE_BLOCK);
        assert!(driver.0.read_buf.capacity() <= IDLE_BLOCK);
        let before = driver.0.read_buf.as_ptr();
        read(&mut driver, (0..5000).map(|_| heartbeats(1)));
        // Short reads are copied out: the scratch never moved.
        assert_eq!(driver.0.read_buf.as_ptr(), before);
        assert_eq!(driver.0.block, IDLE_BLOCK);
    }

    #[test]
    fn blocks_grow_under_load_and_shrink_when_it_is_quiet() {
        let mut driver = connected();
        read(&mut driver, [heartbeats(256 * 1024)]);
        assert_eq!(driver.0.block, READ_BLOCK);
        read(&mut driver, (1..SHRINK_AFTER).map(|_| heartbeats(1)));
        assert_eq!(driver.0.block, READ_BLOCK);
        read(&mut driver, [heartbeats(1)]);
        assert_eq!(driver.0.block, IDLE_BLOCK);
        read(&mut driver, [heartbeats(1)]);
        assert!(driver.0.read_buf.capacity() <= IDLE_BLOCK);
    }

    #[test]
    fn an_idle_block_grows_again_when_reads_are_long() {
        let mut driver = connected();
        read(&mut driver, (0..SHRINK_SMALL_AFTER).map(|_| heartbeats(1)));
        assert_eq!(driver.0.block, IDLE_BLOCK);
        // One read fills the idle block; the next takes a larger one.
        read(&mut driver, [heartbeats(IDLE_BLOCK / 8 * 3)]);
        assert!(driver.0.block >= SMALL_BLOCK);
        // It is larger than SMALL_BLOCK, so it is kept for a longer
        // quiet spell than the handshake's.
        read(&mut driver, (1..SHRINK_AFTER).map(|_| heartbeats(1)));
        assert!(driver.0.block > SMALL_BLOCK);
        read(&mut driver, [heartbeats(1)]);
        assert_eq!(driver.0.block, IDLE_BLOCK);
    }
}
