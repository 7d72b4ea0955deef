//! The driver: one future per connection that moves bytes between the
//! socket and the core, and runs the core's timers. Written once, over
//! `futures-io`, and spawned on whichever runtime the adapter provides.
//!
//! Each wakeup: read everything available and feed it to the core, route
//! the core's events to waiting handles, write everything the core queued
//! in one write, and re-arm the timer. This is the contract at the top of
//! `carehare_core`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_io::{AsyncRead, AsyncWrite};

use crate::runtime::{BoxFuture, Runtime, Stream};
use crate::shared::Shared;

/// Reads per wakeup before yielding, so one busy connection can't starve
/// other tasks on the same executor thread.
const READS_PER_POLL: usize = 16;

pub(crate) struct Driver {
    io: Box<dyn Stream>,
    shared: Arc<Shared>,
    runtime: Arc<dyn Runtime>,
    read_buf: Box<[u8]>,
    out: Vec<u8>,
    out_pos: usize,
    timer: Option<(Instant, BoxFuture<'static, ()>)>,
    eof: bool,
}

impl Driver {
    pub(crate) fn new(io: Box<dyn Stream>, shared: Arc<Shared>, runtime: Arc<dyn Runtime>) -> Self {
        Self {
            io,
            shared,
            runtime,
            read_buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            timer: None,
            eof: false,
        }
    }

    /// Reads what is available. Returns true if it should be polled again
    /// soon (the read budget ran out).
    fn poll_read_all(&mut self, cx: &mut Context<'_>) -> bool {
        if self.eof {
            return false;
        }
        for _ in 0..READS_PER_POLL {
            match Pin::new(&mut self.io).poll_read(cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    let mut inner = self.shared.lock();
                    inner.conn.handle_eof(Instant::now());
                    inner.route_events();
                    return false;
                }
                Poll::Ready(Ok(n)) => {
                    let mut inner = self.shared.lock();
                    inner.conn.handle_input(Instant::now(), &self.read_buf[..n]);
                    inner.route_events();
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    self.eof = true;
                    let mut inner = self.shared.lock();
                    inner.conn.handle_transport_error(Instant::now(), e);
                    inner.route_events();
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
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                if self.shared.lock().conn.poll_transmit(&mut self.out) == 0 {
                    return Pin::new(&mut self.io).poll_flush(cx);
                }
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Fires the core's timer when due. Returns true if it fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let wanted = self.shared.lock().conn.poll_timeout();
        let Some(wanted) = wanted else {
            self.timer = None;
            return false;
        };
        // Re-arm only when the deadline moved earlier; a later one is served
        // by waking early, which the core allows.
        if self.timer.as_ref().is_none_or(|(at, _)| wanted < *at) {
            self.timer = Some((wanted, self.runtime.sleep_until(wanted)));
        }
        let Some((_, sleep)) = self.timer.as_mut() else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_ready() {
            self.timer = None;
            let mut inner = self.shared.lock();
            inner.conn.handle_timeout(Instant::now());
            inner.route_events();
            return true;
        }
        false
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.shared.driver.register(cx.waker());
        loop {
            let more_to_read = this.poll_read_all(cx);
            let fired = this.poll_timer(cx);
            match this.poll_write_all(cx) {
                Poll::Ready(Err(e)) => {
                    let mut inner = this.shared.lock();
                    inner.conn.handle_transport_error(Instant::now(), e);
                    inner.route_events();
                    // Nothing more can be written; drop what is queued.
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => {
                    if this.shared.lock().conn.is_closed() {
                        // Everything (e.g. our close-ok) is written: done.
                        let _ = Pin::new(&mut this.io).poll_close(cx);
                        return Poll::Ready(());
                    }
                }
                Poll::Pending => {}
            }
            if fired {
                continue;
            }
            if more_to_read {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }
}
