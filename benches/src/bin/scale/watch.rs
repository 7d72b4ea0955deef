//! Two observers beside many idle connections, so that a lost connection
//! can be put down to the side that fell behind:
//!
//! - [`Lateness`]: how late a 100 ms timer on the client's own runtime
//!   wakes. A late timer means the runtime's threads were busy or got no
//!   core, and read RabbitMQ's heartbeats late themselves.
//! - [`BrokerGaps`]: a few raw connections on threads of their own, outside
//!   the runtime, with the same heartbeat, each recording the longest
//!   silence between two reads from RabbitMQ. RabbitMQ sends these idle
//!   connections a heartbeat every half interval; a long gap here means
//!   RabbitMQ sent late.
//!
//! Each keeps the worst figure since it was last taken, so a run can take
//! one for the opening and one for the idle time.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use carehare_benches::e2e::host_port;
use carehare_core::frame::{Frame, decode_frame, encode_method};
use carehare_core::method::{
    ConnectionClose, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, Method,
};
use carehare_core::types::{FieldTable, Secret, ShortStr};

const FRAME_MAX: u32 = 131_072;
const HEARTBEAT_FRAME: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, 0xCE];
const TICK: Duration = Duration::from_millis(100);

/// The worst of some durations since it was last taken, in microseconds;
/// and how many were over a threshold.
#[derive(Default)]
struct Worst {
    max_us: AtomicU64,
    over: AtomicU64,
}

impl Worst {
    fn record(&self, d: Duration, threshold: Duration) {
        self.max_us
            .fetch_max(d.as_micros() as u64, Ordering::Relaxed);
        if d > threshold {
            self.over.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (the longest in ms, how many over the threshold), and starts over.
    fn take(&self) -> (f64, u64) {
        (
            self.max_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
            self.over.swap(0, Ordering::Relaxed),
        )
    }
}

/// How late a 100 ms timer on the current tokio runtime wakes.
pub struct Lateness {
    worst: Arc<Worst>,
    stop: Arc<AtomicBool>,
}

impl Lateness {
    /// Starts the timer task on the current runtime.
    pub fn start() -> Self {
        let worst = Arc::new(Worst::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (worst.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(TICK).await;
                w.record(t.elapsed().saturating_sub(TICK), Duration::from_secs(1));
            }
        });
        Lateness { worst, stop }
    }

    /// A table cell: the worst lateness since the last call.
    pub fn take(&self) -> String {
        let (max_ms, over) = self.worst.take();
        format!("{max_ms:.0} ms at most; {over} times more than 1 s")
    }
}

impl Drop for Lateness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Raw observer connections with the same heartbeat, on threads of their
/// own.
pub struct BrokerGaps {
    worst: Arc<Worst>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), String>>>,
    heartbeat: u16,
    failed: Vec<String>,
}

impl BrokerGaps {
    /// Opens `n` observer connections to the broker at `url` (as guest,
    /// like the bench's other raw peer) with `heartbeat` seconds.
    pub fn start(url: &str, heartbeat: u16, n: usize) -> Self {
        let worst = Arc::new(Worst::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut failed = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            match Observer::open(url, heartbeat) {
                Ok(o) => {
                    let (w, s) = (worst.clone(), stop.clone());
                    threads.push(std::thread::spawn(move || o.watch(&w, &s)));
                }
                Err(e) => failed.push(e),
            }
        }
        BrokerGaps {
            worst,
            stop,
            threads,
            heartbeat,
            failed,
        }
    }

    /// A table cell: the longest silence from RabbitMQ since the last
    /// call, against the half interval it sends at.
    pub fn take(&self) -> String {
        let (max_ms, over) = self.worst.take();
        let mut cell = format!(
            "{max_ms:.0} ms at most on {} observer connections (RabbitMQ sends every {} ms); \
             {over} gaps longer than {} ms",
            self.threads.len(),
            u64::from(self.heartbeat) * 500,
            u64::from(self.heartbeat) * 1500
        );
        if !self.failed.is_empty() {
            cell.push_str(&format!("; failed to open: {}", self.failed.join("; ")));
        }
        cell
    }

    /// Closes the observers; an error if one of them lost its connection.
    pub fn stop(self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("an observer thread panicked".into()),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

struct Observer {
    sock: TcpStream,
    buf: BytesMut,
    heartbeat: Duration,
}

impl Observer {
    /// Connects and runs the handshake with `heartbeat`.
    fn open(url: &str, heartbeat: u16) -> Result<Self, String> {
        let (host, port) = host_port(url);
        let err = |e: std::io::Error| format!("observer: {e}");
        let mut sock = TcpStream::connect((host.as_str(), port)).map_err(err)?;
        sock.set_nodelay(true).map_err(err)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(err)?;
        sock.write_all(b"AMQP\x00\x00\x09\x01").map_err(err)?;
        let mut o = Observer {
            sock,
            buf: BytesMut::with_capacity(4096),
            heartbeat: Duration::from_secs(u64::from(heartbeat)),
        };
        o.expect(|m| matches!(m, Method::ConnectionStart(_)), "start")?;
        o.send(ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: ShortStr::from_static("PLAIN"),
            response: Secret(bytes::Bytes::from_static(b"\0guest\0guest")),
            locale: ShortStr::from_static("en_US"),
        })?;
        let Method::ConnectionTune(tune) = o.next_method()? else {
            return Err("observer: tune expected".into());
        };
        o.send(ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: FRAME_MAX,
            heartbeat,
        })?;
        o.send(ConnectionOpen {
            virtual_host: ShortStr::from_static("/"),
            ..Default::default()
        })?;
        o.expect(|m| matches!(m, Method::ConnectionOpenOk(_)), "open-ok")?;
        Ok(o)
    }

    /// Reads until stopped, recording the gaps between reads, and sends a
    /// heartbeat every half interval; then closes.
    fn watch(mut self, worst: &Worst, stop: &AtomicBool) -> Result<(), String> {
        let err = |e: std::io::Error| format!("observer: {e}");
        self.sock.set_read_timeout(Some(TICK)).map_err(err)?;
        // Three half intervals: two of RabbitMQ's heartbeats in a row missing.
        let threshold = self.heartbeat.mul_f64(1.5);
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        let mut scratch = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match self.sock.read(&mut scratch) {
                Ok(0) => return Err("observer: RabbitMQ closed the connection".into()),
                Ok(_) => {
                    let now = Instant::now();
                    worst.record(now - last_read, threshold);
                    last_read = now;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(err(e)),
            }
            if last_write.elapsed() >= self.heartbeat / 2 {
                self.sock.write_all(&HEARTBEAT_FRAME).map_err(err)?;
                last_write = Instant::now();
            }
        }
        // Counts the time since the last read as a gap too: a silence that
        // was still going on when the run ended.
        worst.record(last_read.elapsed(), threshold);
        self.sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        self.buf.clear();
        self.send(ConnectionClose {
            reply_code: 200,
            ..Default::default()
        })?;
        self.expect(|m| matches!(m, Method::ConnectionCloseOk(_)), "close-ok")
    }

    fn send(&mut self, method: impl Into<Method>) -> Result<(), String> {
        let mut out = BytesMut::new();
        encode_method(&mut out, 0, &method.into());
        self.sock
            .write_all(&out)
            .map_err(|e| format!("observer: {e}"))
    }

    fn expect(&mut self, want: impl Fn(&Method) -> bool, what: &str) -> Result<(), String> {
        let m = self.next_method()?;
        if want(&m) {
            Ok(())
        } else {
            Err(format!("observer: {what} expected, got {m:?}"))
        }
    }

    fn next_method(&mut self) -> Result<Method, String> {
        loop {
            match decode_frame(&mut self.buf, FRAME_MAX).map_err(|e| format!("observer: {e}"))? {
                Some(Frame::Method { method, .. }) => return Ok(method),
                Some(_) => continue,
                None => {}
            }
            let start = self.buf.len();
            self.buf.resize(start + 4096, 0);
            let n = self
                .sock
                .read(&mut self.buf[start..])
                .map_err(|e| format!("observer: {e}"))?;
            self.buf.truncate(start + n);
            if n == 0 {
                return Err("observer: RabbitMQ closed the connection".into());
            }
        }
    }
}
