//! A small TCP fault-injection proxy for the live-broker tests.
//!
//! [`Proxy`] listens on `127.0.0.1:0` and forwards every accepted connection
//! to an upstream address (normally the test broker). Tests point a client at
//! [`Proxy::addr`] and then break the path on purpose: stop forwarding
//! ([`Mode::BlackHole`]), slow it down ([`Mode::Delay`]), feed the broker
//! garbage ([`Proxy::inject_to_server`]) or close every connection, with
//! an orderly close ([`Proxy::cut`], FIN) or an abortive one
//! ([`Proxy::reset`], RST).
//!
//! It uses only `std` (threads and `std::net`), so it works under any async
//! runtime or none. Each connection gets two forwarding threads, one per
//! direction, each with a fixed 64 KiB buffer. Threads block in reads with a
//! 50 ms timeout and wait on a condition variable otherwise, so nothing spins,
//! and mode changes, cuts and shutdown are noticed promptly. Dropping the
//! [`Proxy`] closes everything and joins its threads.
//!
//! A read or write error on either side (outside [`Mode::BlackHole`])
//! closes the whole connection at once: under [`Mode::Delay`], chunks
//! still waiting out the delay in the other direction are dropped (a
//! server's last `connection.close`, say), which a real link with that
//! latency would still deliver.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::SockRef;

/// Size of each direction's forwarding buffer.
const BUF_SIZE: usize = 64 * 1024;
/// How long a forwarding thread blocks in a read before rechecking its state.
const READ_TICK: Duration = Duration::from_millis(50);
/// Bound on connecting to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on waiting for the threads when the proxy is dropped.
const DROP_DEADLINE: Duration = Duration::from_secs(2);
/// Bound on waiting for a reset connection's forwarding threads to let go
/// of its sockets (they notice within one [`READ_TICK`]).
const RESET_DEADLINE: Duration = Duration::from_millis(500);

/// What the proxy does with the bytes it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything as soon as it is read.
    Pass,
    /// Keep the sockets open but forward nothing in either direction: bytes
    /// read are discarded, and a close from either side (EOF or error) is
    /// held back until the mode changes, like a network partition.
    BlackHole,
    /// Forward each chunk once this long has passed since it was read. The
    /// forwarding thread waits before reading the next chunk, so this applies
    /// back-pressure rather than buffering.
    Delay(Duration),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One proxied connection.
struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    /// Serializes writes to `server` between the forwarding thread and
    /// [`Proxy::inject_to_server`], so chunks never interleave.
    server_write: Mutex<()>,
    /// Set when the proxy closes the connection on purpose.
    closed: AtomicBool,
    /// Forwarding threads still running.
    pumps: AtomicUsize,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// State shared by the handle, the listener thread and the forwarding
/// threads.
struct Shared {
    upstream: Vec<SocketAddr>,
    mode: Mutex<Mode>,
    /// Notified on mode changes, cuts and shutdown.
    changed: Condvar,
    stopping: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn notify(&self) {
        // Take the lock so a waiter between its check and its wait can't
        // miss the wake-up.
        let _guard = lock(&self.mode);
        self.changed.notify_all();
    }

    /// Waits while the mode is `BlackHole` (and the connection is alive).
    /// Returns false if the connection was closed or the proxy is stopping.
    fn wait_out_black_hole(&self, conn: &Conn) -> bool {
        let mut mode = lock(&self.mode);
        loop {
            if self.stopping() || conn.is_closed() {
                return false;
            }
            if *mode != Mode::BlackHole {
                return true;
            }
            mode = self
                .changed
                .wait_timeout(mode, READ_TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until a chunk read at `read_at` may be forwarded under the
    /// current mode. `Some(true)`: forward it; `Some(false)`: discard it;
    /// `None`: the connection was closed or the proxy is stopping.
    fn wait_to_forward(&self, conn: &Conn, read_at: Instant) -> Option<bool> {
        let mut mode = lock(&self.mode);
        loop {
            if self.stopping() || conn.is_closed() {
                return None;
            }
            let wait = match *mode {
                Mode::Pass => return Some(true),
                Mode::BlackHole => return Some(false),
                Mode::Delay(d) => {
                    let due = read_at + d;
                    let now = Instant::now();
                    if now >= due {
                        return Some(true);
                    }
                    due - now
                }
            };
            mode = self
                .changed
                .wait_timeout(mode, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Removes a connection from the table and closes it.
    fn forget(&self, id: u64) {
        let conn = lock(&self.conns).remove(&id);
        if let Some(conn) = conn {
            conn.close();
        }
    }

    /// Removes every connection from the table and closes it.
    fn close_all(&self) {
        let conns: Vec<_> = lock(&self.conns).drain().map(|(_, c)| c).collect();
        for conn in &conns {
            conn.close();
        }
        self.notify();
    }
}

/// Which way a forwarding thread copies.
#[derive(Clone, Copy, Debug)]
enum Dir {
    ToServer,
    ToClient,
}

/// Copies one direction of `conn` until EOF, an error or a close.
fn pump(shared: &Shared, conn: &Conn, dir: Dir) {
    let (src, dst) = match dir {
        Dir::ToServer => (&conn.client, &conn.server),
        Dir::ToClient => (&conn.server, &conn.client),
    };
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        if shared.stopping() || conn.is_closed() {
            return;
        }
        let n = match (&*src).read(&mut buf) {
            Ok(0) => {
                // Pass the half-close on, unless partitioned.
                if shared.wait_out_black_hole(conn) {
                    let _ = dst.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                if !(shared.stopping() || conn.is_closed()) {
                    eprintln!("proxy conn {} {dir:?}: read: {e}", conn.id);
                    if shared.wait_out_black_hole(conn) {
                        shared.forget(conn.id);
                    }
                }
                return;
            }
        };
        match shared.wait_to_forward(conn, Instant::now()) {
            None => return,
            Some(false) => continue,
            Some(true) => {}
        }
        let result = match dir {
            Dir::ToServer => {
                let _guard = lock(&conn.server_write);
                (&*dst).write_all(&buf[..n])
            }
            Dir::ToClient => (&*dst).write_all(&buf[..n]),
        };
        if let Err(e) = result {
            if !(shared.stopping() || conn.is_closed()) {
                eprintln!("proxy conn {} {dir:?}: write: {e}", conn.id);
                shared.forget(conn.id);
            }
            return;
        }
    }
}

/// Runs `pump`, then closes the connection if this was its last thread.
fn run_pump(shared: Arc<Shared>, conn: Arc<Conn>, dir: Dir) {
    pump(&shared, &conn, dir);
    if conn.pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.forget(conn.id);
    }
}

fn connect_upstream(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no upstream address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sets up one accepted connection and starts its forwarding threads.
fn serve(shared: &Arc<Shared>, client: TcpStream) -> io::Result<()> {
    let server = connect_upstream(&shared.upstream)?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(READ_TICK))?;
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let conn = Arc::new(Conn {
        id,
        client,
        server,
        server_write: Mutex::new(()),
        closed: AtomicBool::new(false),
        pumps: AtomicUsize::new(2),
    });
    {
        let mut conns = lock(&shared.conns);
        if shared.stopping() {
            conn.close();
            return Ok(());
        }
        conns.insert(id, conn.clone());
    }
    let mut threads = lock(&shared.threads);
    threads.retain(|t| !t.is_finished());
    for dir in [Dir::ToServer, Dir::ToClient] {
        let (s, c) = (shared.clone(), conn.clone());
        let spawned = thread::Builder::new()
            .name(format!("proxy-{id}-{dir:?}"))
            .spawn(move || run_pump(s, c, dir));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // The thread that did start sees the close and exits.
                shared.forget(id);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            return;
        }
        match accepted {
            Ok((client, _)) => {
                if let Err(e) = serve(shared, client) {
                    eprintln!("proxy: connection to upstream: {e}");
                }
            }
            Err(e) => {
                eprintln!("proxy: accept: {e}");
                // Don't spin on a persistent accept error (EMFILE, say).
                thread::sleep(READ_TICK);
            }
        }
    }
}

/// A TCP proxy from `127.0.0.1:PORT` to an upstream address, with faults on
/// demand. See the module documentation.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every accepted connection to
    /// `upstream` (e.g. `"127.0.0.1:5672"`), in [`Mode::Pass`].
    ///
    /// The upstream is resolved now and connected to once per accepted
    /// connection (whatever the mode); if that fails the client's connection
    /// is closed.
    pub fn start(upstream: &str) -> io::Result<Proxy> {
        let upstream: Vec<SocketAddr> = upstream.to_socket_addrs()?.collect();
        if upstream.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "upstream resolved to no address",
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let handle = thread::Builder::new()
            .name(format!("proxy-accept-{}", addr.port()))
            .spawn(move || accept_loop(&s, &listener))?;
        Ok(Proxy {
            shared,
            addr,
            listener: Some(handle),
        })
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The listening address, `"127.0.0.1:PORT"`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Switches the mode for all current and future connections. Takes effect
    /// immediately, including for chunks already waiting out a delay (they
    /// are sent at once under [`Mode::Pass`] and dropped under
    /// [`Mode::BlackHole`]).
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        self.shared.changed.notify_all();
    }

    /// Writes `bytes` to the upstream side of every live connection (so the
    /// broker sees garbage), whatever the mode. Never splits a forwarded
    /// chunk. May block while the upstream is not reading.
    pub fn inject_to_server(&self, bytes: &[u8]) {
        let conns: Vec<_> = lock(&self.shared.conns).values().cloned().collect();
        for conn in conns {
            let _guard = lock(&conn.server_write);
            if let Err(e) = (&conn.server).write_all(bytes) {
                eprintln!("proxy conn {}: inject: {e}", conn.id);
            }
        }
    }

    /// Closes every live connection both ways: both the client and the
    /// upstream see an orderly close (FIN). New connections are still
    /// accepted.
    pub fn cut(&self) {
        self.shared.close_all();
    }

    /// Closes every live connection abortively on the client side: the
    /// client gets an RST (its reads fail with `ConnectionReset`), as when a
    /// middlebox or a crashed peer drops the connection. The upstream side
    /// is shut down normally. New connections are still accepted.
    ///
    /// The RST is sent by closing the client socket with `SO_LINGER` 0.
    /// The socket closes when its forwarding threads let go of it, which
    /// they do within one read tick; `reset` waits for that (bounded), so
    /// the RST is on the wire when it returns. A forwarding thread stuck
    /// writing to a client that no longer reads can't notice: after half a
    /// second such a connection is shut down first (FIN), then reset when
    /// the thread lets go.
    pub fn reset(&self) {
        let conns: Vec<_> = lock(&self.shared.conns).drain().map(|(_, c)| c).collect();
        for conn in &conns {
            conn.closed.store(true, Ordering::SeqCst);
            if let Err(e) = SockRef::from(&conn.client).set_linger(Some(Duration::ZERO)) {
                eprintln!("proxy conn {}: SO_LINGER: {e}", conn.id);
            }
            let _ = conn.server.shutdown(Shutdown::Both);
        }
        self.shared.notify();
        let deadline = Instant::now() + RESET_DEADLINE;
        for conn in conns {
            while Arc::strong_count(&conn) > 1 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&conn) > 1 {
                let _ = conn.client.shutdown(Shutdown::Both);
            }
            // The last reference closes the client socket: RST.
        }
    }

    /// The number of live connections.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// The number of connections forwarded since the start, live or not:
    /// how many times a client connected (and the upstream accepted).
    pub fn served(&self) -> u64 {
        self.shared.next_id.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    /// Stops accepting, closes every connection and waits (bounded) for the
    /// threads to exit.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own. If that fails,
        // leave the thread be: it exits at its next accept.
        if let Some(listener) = self.listener.take()
            && TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
        {
            let _ = listener.join();
        }
        self.shared.close_all();
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        let deadline = Instant::now() + DROP_DEADLINE;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An echo server on `127.0.0.1:0` that also records every byte it gets.
    struct Echo {
        addr: String,
        received: Arc<Mutex<Vec<u8>>>,
    }

    fn echo_server() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let rec = rec.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                lock(&rec).extend_from_slice(&buf[..n]);
                                if stream.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Echo { addr, received }
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn client(proxy: &Proxy) -> TcpStream {
        let c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c
    }

    /// Writes `msg` and reads exactly `msg.len()` bytes back.
    fn round_trip(c: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        c.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).unwrap();
        got
    }

    fn is_timeout(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    }

    /// Asserts the proxy closed `c`: EOF or an error, not a timeout.
    fn assert_closed(c: &mut TcpStream) {
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes from a closed connection"),
            Err(e) => assert!(!is_timeout(&e), "still open: {e}"),
        }
    }

    #[test]
    fn pass_through_echoes() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        assert_eq!(proxy.addr(), format!("127.0.0.1:{}", proxy.port()));
        let mut c = client(&proxy);
        assert_eq!(round_trip(&mut c, b"hello"), b"hello");
        // Something bigger than one buffer.
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        assert_eq!(round_trip(&mut c, &big), big);
    }

    #[test]
    fn black_hole_stops_and_pass_resumes() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        assert_eq!(round_trip(&mut c, b"a"), b"a");

        proxy.set_mode(Mode::BlackHole);
        c.write_all(b"lost").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Ok(n) => panic!("black hole forwarded {n} bytes"),
            Err(e) => assert!(is_timeout(&e), "unexpected error: {e}"),
        }
        assert_eq!(proxy.connections(), 1);

        proxy.set_mode(Mode::Pass);
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        assert_eq!(round_trip(&mut c, b"back"), b"back");
        assert!(!lock(&echo.received).windows(4).any(|w| w == b"lost"));
    }

    #[test]
    fn black_hole_holds_close_until_pass() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        assert_eq!(round_trip(&mut c, b"a"), b"a");
        proxy.set_mode(Mode::BlackHole);
        drop(c);
        thread::sleep(Duration::from_millis(300));
        assert_eq!(proxy.connections(), 1, "close passed the black hole");
        proxy.set_mode(Mode::Pass);
        wait_until("the close to go through", || proxy.connections() == 0);
    }

    #[test]
    fn delay_slows_round_trip() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
        let t = Instant::now();
        assert_eq!(round_trip(&mut c, b"slow"), b"slow");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );

        proxy.set_mode(Mode::Pass);
        let t = Instant::now();
        assert_eq!(round_trip(&mut c, b"fast"), b"fast");
        // Delay(200ms) would have cost at least 400 ms (both directions).
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn delay_cut_short_by_pass() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        proxy.set_mode(Mode::Delay(Duration::from_secs(60)));
        let t = Instant::now();
        c.write_all(b"held").unwrap();
        thread::sleep(Duration::from_millis(100));
        proxy.set_mode(Mode::Pass);
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn inject_reaches_upstream() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        wait_until("the connection", || proxy.connections() == 1);
        proxy.inject_to_server(b"garbage");
        wait_until("the injected bytes", || {
            lock(&echo.received).as_slice() == b"garbage"
        });
        // The echo comes back to the client, as a broker's reply would.
        let mut got = [0u8; 7];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"garbage");
    }

    #[test]
    fn cut_closes_client() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        assert_eq!(round_trip(&mut c, b"a"), b"a");
        proxy.cut();
        assert_eq!(proxy.connections(), 0);
        assert_closed(&mut c);
        // Still accepting afterwards.
        let mut c2 = client(&proxy);
        assert_eq!(round_trip(&mut c2, b"b"), b"b");
    }

    #[test]
    fn reset_sends_rst_to_client() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        assert_eq!(round_trip(&mut c, b"a"), b"a");
        proxy.reset();
        assert_eq!(proxy.connections(), 0);
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            Ok(n) => panic!("expected an RST, read {n} bytes (0 is a FIN)"),
        }
        // Still accepting afterwards.
        let mut c2 = client(&proxy);
        assert_eq!(round_trip(&mut c2, b"b"), b"b");
    }

    #[test]
    fn reset_of_a_client_that_does_not_read_still_closes_it() {
        // The echo fills the client's receive buffer and then blocks the
        // proxy's writer: `reset` must not hang on it.
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut c = client(&proxy);
        c.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let chunk = vec![7u8; 64 * 1024];
        // Write until the path is full (nobody reads the echo).
        for _ in 0..256 {
            if c.write_all(&chunk).is_err() {
                break;
            }
        }
        let t = Instant::now();
        proxy.reset();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(proxy.connections(), 0);
        // Drain: what was buffered, then a close (RST or, if the writer was
        // stuck, FIN then RST).
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert!(!is_timeout(&e), "still open: {e}");
                    break;
                }
            }
        }
    }

    #[test]
    fn counts_connections() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        assert_eq!(proxy.connections(), 0);
        let mut a = client(&proxy);
        let mut b = client(&proxy);
        assert_eq!(round_trip(&mut a, b"a"), b"a");
        assert_eq!(round_trip(&mut b, b"b"), b"b");
        assert_eq!(proxy.connections(), 2);
        drop(a);
        wait_until("one connection", || proxy.connections() == 1);
        drop(b);
        wait_until("no connection", || proxy.connections() == 0);
        assert_eq!(proxy.served(), 2);
    }

    #[test]
    fn upstream_down_closes_client() {
        // A port nobody listens on: bind, note it, close.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let proxy = Proxy::start(&dead).unwrap();
        let mut c = client(&proxy);
        assert_closed(&mut c);
        assert_eq!(proxy.connections(), 0);
    }

    #[test]
    fn drop_is_prompt_and_closes_clients() {
        let echo = echo_server();
        let proxy = Proxy::start(&echo.addr).unwrap();
        let mut a = client(&proxy);
        let mut b = client(&proxy);
        assert_eq!(round_trip(&mut a, b"a"), b"a");
        // One chunk parked in a long delay.
        proxy.set_mode(Mode::Delay(Duration::from_secs(60)));
        b.write_all(b"parked").unwrap();
        thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        drop(proxy);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_closed(&mut a);
        assert_closed(&mut b);
    }
}
