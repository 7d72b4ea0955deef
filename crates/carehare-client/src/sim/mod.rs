//! A runtime on simulated time, for the client's own tests and fuzz
//! targets (public as [`crate::testing`] with the `testing` feature): a
//! manual clock, an executor that advances the clock only when every task
//! is stalled, and in-memory sockets. Heartbeats, timeouts and backoff run faster than
//! real time and the same way every run.
//!
//! Invariants:
//! - the clock only moves forward, and only when no task can make progress;
//!   it then jumps straight to the earliest sleeper's deadline;
//! - a stall with no sleeper left is a deadlock: `block_on` panics instead
//!   of hanging;
//! - sleepers due at the same instant are woken in the order they started
//!   waiting, or in the reverse order after `wake_latest_first`: a test runs
//!   both to show that the outcome does not depend on which of two timers
//!   on one instant fires first.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use carehare_core::frame::Frame;
use carehare_core::method::*;
use carehare_core::properties::BasicProperties;
use carehare_core::testing;
use carehare_core::types::ShortStr;
use futures_io::{AsyncRead, AsyncWrite};

use crate::runtime::{BoxFuture, Runtime, Stream, TcpConnected};

mod log_capture;
pub use log_capture::Captured;

/// What a simulated connect to one address does.
pub type Connector = Box<dyn Fn(SocketAddr) -> io::Result<Box<dyn Stream>> + Send + Sync>;

/// A runtime on a manual clock. Connects go to `connector`; names resolve
/// through `names`.
pub struct SimRuntime {
    start: Instant,
    clock: Arc<Clock>,
    executor: Mutex<Arc<smol::Executor<'static>>>,
    connector: Connector,
    names: Vec<(String, Vec<SocketAddr>)>,
    /// Wake sleepers due at one instant latest first.
    latest_first: AtomicBool,
}

#[derive(Default)]
struct Clock {
    elapsed: Mutex<Duration>,
    /// Each waiting sleep: its deadline, its id, and its task's waker. A
    /// sleep dropped before its deadline takes its entries out, as a real
    /// runtime's timer does, so it wakes nobody.
    sleepers: Mutex<Vec<(Duration, u64, Waker)>>,
    next_id: AtomicU64,
    /// Sleepers woken so far.
    wakes: AtomicU64,
}

impl SimRuntime {
    /// A runtime whose connects go to `connector`, resolving no names.
    pub fn new(connector: Connector) -> Arc<Self> {
        Arc::new(Self::with_names(connector, Vec::new()))
    }

    /// A runtime whose connects go to `connector`, resolving each name
    /// of `names` to its addresses.
    pub fn with_names(connector: Connector, names: Vec<(String, Vec<SocketAddr>)>) -> Self {
        Self {
            start: Instant::now(),
            clock: Arc::default(),
            executor: Mutex::new(Arc::new(smol::Executor::new())),
            connector,
            names,
            latest_first: AtomicBool::new(false),
        }
    }

    /// From now on, sleepers due at the same instant are woken in the
    /// reverse of the order they started waiting in.
    pub fn wake_latest_first(&self) {
        self.latest_first.store(true, Ordering::Relaxed);
    }

    /// How many sleeps the clock has woken at their deadline so far (a
    /// timer that fires, whether or not its task had other work).
    pub fn timer_wakes(&self) -> u64 {
        self.clock.wakes.load(Ordering::Relaxed)
    }

    /// Simulated time since the runtime was made.
    pub fn elapsed(&self) -> Duration {
        *self.clock.elapsed.lock().unwrap()
    }

    /// Runs `future` and every task it spawns until it completes, moving
    /// the clock whenever all of them wait.
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let executor = self.executor.lock().unwrap().clone();
        let task = executor.spawn(future);
        loop {
            while executor.try_tick() {}
            if task.is_finished() {
                return smol::block_on(task);
            }
            self.advance();
        }
    }

    /// Drops every task still running, as a runtime that shuts down does.
    pub fn drop_tasks(&self) {
        let old = std::mem::replace(
            &mut *self.executor.lock().unwrap(),
            Arc::new(smol::Executor::new()),
        );
        drop(old);
    }

    /// Jumps to the earliest sleeper's deadline and wakes every sleeper due.
    fn advance(&self) {
        let mut sleepers = self.clock.sleepers.lock().unwrap();
        let next = sleepers
            .iter()
            .map(|(at, _, _)| *at)
            .min()
            .expect("deadlock: every task waits and no timer is set");
        *self.clock.elapsed.lock().unwrap() = next;
        let (mut due, later): (Vec<_>, Vec<_>) =
            sleepers.drain(..).partition(|(at, _, _)| *at <= next);
        *sleepers = later;
        drop(sleepers);
        if self.latest_first.load(Ordering::Relaxed) {
            due.reverse();
        }
        self.clock
            .wakes
            .fetch_add(due.len() as u64, Ordering::Relaxed);
        for (_, _, w) in due {
            w.wake();
        }
    }
}

impl Runtime for SimRuntime {
    fn resolve(&self, host: &str, _port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let found = self
            .names
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, addrs)| addrs.clone());
        Box::pin(async move { found.ok_or_else(|| io::ErrorKind::NotFound.into()) })
    }

    fn connect_tcp(&self, address: SocketAddr) -> BoxFuture<'static, io::Result<TcpConnected>> {
        let result = (self.connector)(address);
        Box::pin(async move {
            match result {
                // A "hanging" address: the connect never completes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::future::pending().await,
                other => other.map(|stream| (stream, None)),
            }
        })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let at = deadline.saturating_duration_since(self.start);
        Box::pin(Sleep {
            at,
            id: self.clock.next_id.fetch_add(1, Ordering::Relaxed),
            clock: self.clock.clone(),
        })
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        self.executor.lock().unwrap().spawn(future).detach();
    }

    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }
}

/// A sleep on the simulated clock.
struct Sleep {
    at: Duration,
    id: u64,
    clock: Arc<Clock>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if *self.clock.elapsed.lock().unwrap() >= self.at {
            return Poll::Ready(());
        }
        let mut sleepers = self.clock.sleepers.lock().unwrap();
        // One entry per sleep: a poll again only renews its waker.
        match sleepers.iter_mut().find(|(_, id, _)| *id == self.id) {
            Some(entry) => entry.2 = cx.waker().clone(),
            None => sleepers.push((self.at, self.id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Ok(mut sleepers) = self.clock.sleepers.lock() {
            sleepers.retain(|(_, id, _)| *id != self.id);
        }
    }
}

/// One direction of an in-memory socket.
#[derive(Default)]
struct Pipe {
    data: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
    /// At most this many bytes unread: writes wait beyond it (a full
    /// socket buffer). `None`: writes never wait.
    capacity: Option<usize>,
    writer: Option<Waker>,
}

/// One end of an in-memory socket pair.
pub struct End {
    rx: Arc<Mutex<Pipe>>,
    tx: Arc<Mutex<Pipe>>,
}

/// A connected pair of in-memory sockets.
pub fn duplex() -> (End, End) {
    duplex_bounded(None)
}

/// [`duplex`], where the first end's writes wait while `capacity` bytes
/// are unread, as a real socket's do when its buffers are full.
pub fn duplex_bounded(capacity: Option<usize>) -> (End, End) {
    let a: Arc<Mutex<Pipe>> = Arc::default();
    let b: Arc<Mutex<Pipe>> = Arc::new(Mutex::new(Pipe {
        capacity,
        ..Pipe::default()
    }));
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
        },
        End { rx: b, tx: a },
    )
}

impl Drop for End {
    fn drop(&mut self) {
        let mut tx = self.tx.lock().unwrap();
        tx.closed = true;
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.lock().unwrap();
        if rx.data.is_empty() {
            if rx.closed {
                return Poll::Ready(Ok(0));
            }
            rx.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(rx.data.len());
        for (slot, byte) in buf.iter_mut().zip(rx.data.drain(..n)) {
            *slot = byte;
        }
        if let Some(w) = rx.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut tx = self.tx.lock().unwrap();
        if tx.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = tx
            .capacity
            .map_or(buf.len(), |c| c.saturating_sub(tx.data.len()));
        if room == 0 && !buf.is_empty() {
            tx.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(room);
        tx.data.extend(&buf[..n]);
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut tx = self.tx.lock().unwrap();
        tx.closed = true;
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

/// The server's side of one simulated socket: it plays the handshake from
/// the core's test harness, then the test's script.
pub struct FakeBroker {
    io: End,
    from_client: testing::ClientOutput,
}

impl FakeBroker {
    /// Accepts `io` and sends the server's whole handshake (`tune`
    /// proposed) at once: the client answers each step in order.
    pub fn accept(io: End, tune: ConnectionTune) -> Self {
        let mut broker = Self {
            io,
            from_client: testing::ClientOutput::new(),
        };
        broker.send(&testing::handshake_frames(tune));
        broker
    }

    /// Accepts `io` without sending anything.
    pub fn silent(io: End) -> Self {
        Self {
            io,
            from_client: testing::ClientOutput::new(),
        }
    }

    /// Takes the client's protocol header.
    pub async fn expect_protocol_header(&mut self) {
        use futures_util::AsyncReadExt;
        let mut header = [0u8; 8];
        self.io.read_exact(&mut header).await.unwrap();
        self.from_client.extend(&header);
        self.from_client.expect_protocol_header();
    }

    /// Writes `bytes` to the client.
    pub fn send(&mut self, bytes: &[u8]) {
        // An in-memory write never waits.
        let mut tx = self.io.tx.lock().unwrap();
        tx.data.extend(bytes);
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
    }

    /// Reads until the client's next method (heartbeats and content are
    /// skipped); `None` when the client closed the socket.
    pub async fn next_method(&mut self) -> Option<(u16, Method)> {
        use futures_util::AsyncReadExt;
        loop {
            if let Some(method) = self.from_client.next_method() {
                return Some(method);
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.from_client.extend(&chunk[..n]);
        }
    }

    /// Reads until the next body frame (the content of the publish whose
    /// method was just read); `None` when the client closed the socket.
    pub async fn next_body(&mut self) -> Option<bytes::Bytes> {
        use futures_util::AsyncReadExt;
        loop {
            while let Some(frame) = self.from_client.next_frame() {
                if let Frame::Body { payload, .. } = frame {
                    return Some(payload);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.from_client.extend(&chunk[..n]);
        }
    }

    /// Reads the client's side of the handshake, checking each step.
    pub async fn expect_handshake(&mut self) {
        self.expect_protocol_header().await;
        for name in [
            "connection.start-ok",
            "connection.tune-ok",
            "connection.open",
        ] {
            let (channel, method) = self.next_method().await.unwrap();
            assert_eq!((channel, method.name()), (0, name), "{method:?}");
        }
    }

    /// Reads until the client closes the socket, counting its heartbeats.
    pub async fn count_heartbeats_until_eof(&mut self) -> usize {
        use futures_util::AsyncReadExt;
        let mut heartbeats = 0;
        loop {
            heartbeats += self.heartbeats_taken();
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return heartbeats,
                Ok(n) => self.from_client.extend(&chunk[..n]),
            }
        }
    }

    /// Takes what the client has written so far, without waiting, and
    /// counts the heartbeats in it (other frames are dropped).
    pub fn heartbeats_written(&mut self) -> usize {
        let written: Vec<u8> = {
            let mut rx = self.io.rx.lock().unwrap();
            if let Some(w) = rx.writer.take() {
                w.wake();
            }
            rx.data.drain(..).collect()
        };
        self.from_client.extend(&written);
        self.heartbeats_taken()
    }

    /// Bytes sent to the client that it has not read yet.
    pub fn unread_by_client(&self) -> usize {
        self.io.tx.lock().unwrap().data.len()
    }

    /// Takes every whole frame read from the client so far, counting the
    /// heartbeats.
    fn heartbeats_taken(&mut self) -> usize {
        let mut heartbeats = 0;
        while let Some(frame) = self.from_client.next_frame() {
            heartbeats += usize::from(matches!(frame, Frame::Heartbeat { .. }));
        }
        heartbeats
    }
}

/// A simulated runtime whose every connect reaches a new [`FakeBroker`]
/// running `script` (spawned on the same runtime), which starts by
/// sending the handshake with `tune` proposed.
pub fn with_broker<F, Fut>(tune: ConnectionTune, script: F) -> Arc<SimRuntime>
where
    F: Fn(FakeBroker) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_network(move |_, _, server| {
        let broker = FakeBroker::accept(server, tune.clone());
        Ok(Box::pin(script(broker)))
    })
}

/// A simulated runtime whose connects are decided by `accept`: given the
/// simulated time, how many connects came before, and the server's end of
/// a fresh socket, it refuses (`Err`) or returns the server's script,
/// which is spawned on the same runtime.
pub fn with_network<F>(accept: F) -> Arc<SimRuntime>
where
    F: Fn(Duration, u32, End) -> io::Result<BoxFuture<'static, ()>> + Send + Sync + 'static,
{
    let slot: Arc<Mutex<Option<std::sync::Weak<SimRuntime>>>> = Arc::default();
    let weak = slot.clone();
    let count = Mutex::new(0u32);
    let runtime = SimRuntime::new(Box::new(move |_address| {
        let Some(rt) = weak.lock().unwrap().as_ref().and_then(|w| w.upgrade()) else {
            return Err(io::ErrorKind::ConnectionRefused.into());
        };
        let n = {
            let mut count = count.lock().unwrap();
            *count += 1;
            *count - 1
        };
        let (client, server) = duplex();
        let script = accept(rt.elapsed(), n, server)?;
        rt.spawn(script);
        Ok(Box::new(client) as Box<dyn Stream>)
    }));
    *slot.lock().unwrap() = Some(Arc::downgrade(&runtime));
    runtime
}

// ---- A scripted broker for tests that need the whole conversation ----

/// A broker that refuses the login: `connection.close` with `code` right
/// after `start-ok`, as RabbitMQ does for bad credentials (403) or a
/// missing vhost (530).
pub(crate) fn refusing(io: End, code: u16, text: &'static str) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut b = FakeBroker::silent(io);
        b.send(&testing::method_bytes(0, testing::server_start()));
        b.expect_protocol_header().await;
        let _start_ok = b.next_method().await;
        let close = ConnectionClose {
            reply_code: code,
            reply_text: ShortStr::from_static(text),
            class_id: 0,
            method_id: 0,
        };
        b.send(&testing::method_bytes(0, close));
        while b.next_method().await.is_some() {}
    })
}

/// What every fake broker saw, by connection.
#[derive(Default)]
pub(crate) struct World {
    /// Bodies published on each connection, in order.
    pub(crate) published: Vec<Vec<String>>,
    /// Delivery tags acked on each connection.
    pub(crate) acked: Vec<Vec<u64>>,
    /// Queue names consumed on each connection.
    pub(crate) consumed: Vec<Vec<String>>,
    /// Simulated times of every connect attempt.
    pub(crate) attempts: Vec<Duration>,
}

/// How a fake broker behaves on one connection.
#[derive(Clone, Copy)]
pub(crate) struct Behaviour {
    /// Ack at most this many publishes.
    pub(crate) ack: usize,
    /// Drop the socket after this many publishes.
    pub(crate) drop_after_publishes: Option<usize>,
    /// Deliver one message ("a") when a consumer starts...
    pub(crate) deliver: bool,
    /// ...and drop the socket right after it.
    pub(crate) drop_after_deliver: bool,
    /// Close the connection with 541 on a publish of this body.
    pub(crate) poison: Option<&'static str>,
}

/// Answers everything and acks every publish.
pub(crate) const POLITE: Behaviour = Behaviour {
    ack: usize::MAX,
    drop_after_publishes: None,
    deliver: false,
    drop_after_deliver: false,
    poison: None,
};

/// Plays connection `n` after the handshake `b` sent: answers opens,
/// declares (naming server-named queues `amq.gen-N`), consumes, and
/// publishes as `behaviour` says, recording everything in `world`.
pub(crate) async fn serve(
    mut b: FakeBroker,
    n: usize,
    behaviour: Behaviour,
    world: Arc<Mutex<World>>,
) {
    b.expect_handshake().await;
    {
        let mut w = world.lock().unwrap();
        w.published.resize(n + 1, Vec::new());
        w.acked.resize(n + 1, Vec::new());
        w.consumed.resize(n + 1, Vec::new());
    }
    let mut publishes = 0;
    loop {
        let Some((channel, method)) = b.next_method().await else {
            return;
        };
        let reply: Option<Method> = match method {
            Method::QueueDeclare(d) => {
                let queue = if d.queue.is_empty() {
                    ShortStr::new(format!("amq.gen-{n}")).unwrap()
                } else {
                    d.queue
                };
                Some(
                    QueueDeclareOk {
                        queue,
                        message_count: 0,
                        consumer_count: 0,
                    }
                    .into(),
                )
            }
            Method::BasicConsume(c) => {
                world.lock().unwrap().consumed[n].push(c.queue.to_string());
                let ok = BasicConsumeOk {
                    consumer_tag: ShortStr::from_static("amq.ctag-1"),
                };
                b.send(&testing::method_bytes(channel, ok));
                if behaviour.deliver {
                    let deliver = BasicDeliver {
                        consumer_tag: ShortStr::from_static("amq.ctag-1"),
                        delivery_tag: 1,
                        redelivered: n > 0,
                        ..Default::default()
                    };
                    let props = BasicProperties::default();
                    b.send(&testing::content_bytes(
                        channel, deliver, &props, b"a", 131_072,
                    ));
                    if behaviour.drop_after_deliver {
                        return;
                    }
                }
                None
            }
            Method::BasicAck(a) => {
                world.lock().unwrap().acked[n].push(a.delivery_tag);
                None
            }
            Method::BasicPublish(_) => {
                publishes += 1;
                // The body follows the method: take it from the raw frames.
                let body = b.next_body().await.unwrap();
                let body = String::from_utf8(body.to_vec()).unwrap();
                let poisoned = behaviour.poison == Some(body.as_str());
                world.lock().unwrap().published[n].push(body);
                if poisoned {
                    let close = ConnectionClose {
                        reply_code: 541,
                        reply_text: ShortStr::from_static("INTERNAL_ERROR"),
                        class_id: 60,
                        method_id: 40,
                    };
                    b.send(&testing::method_bytes(0, close));
                    while b.next_method().await.is_some() {}
                    return;
                }
                if publishes <= behaviour.ack {
                    let ack = BasicAck {
                        delivery_tag: publishes as u64,
                        multiple: false,
                    };
                    b.send(&testing::method_bytes(channel, ack));
                }
                if behaviour.drop_after_publishes == Some(publishes) {
                    return;
                }
                None
            }
            Method::ConnectionClose(_) => {
                b.send(&testing::method_bytes(0, ConnectionCloseOk {}));
                return;
            }
            other => testing::polite_reply(&other),
        };
        if let Some(reply) = reply {
            b.send(&testing::method_bytes(channel, reply));
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unconfirmed_tests;
