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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use carehare_benches::raw::Raw;
use carehare_core::method::{ConnectionClose, Method};

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

/// An observer's error, said to be one.
fn observer(e: impl std::fmt::Display) -> String {
    format!("observer: {e}")
}

struct Observer {
    raw: Raw,
    heartbeat: Duration,
}

impl Observer {
    /// Connects and runs the handshake with `heartbeat`.
    fn open(url: &str, heartbeat: u16) -> Result<Self, String> {
        let mut raw = Raw::connect(url).map_err(observer)?;
        raw.sock
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(observer)?;
        raw.open(heartbeat).map_err(observer)?;
        Ok(Observer {
            raw,
            heartbeat: Duration::from_secs(u64::from(heartbeat)),
        })
    }

    /// Reads until stopped, recording the gaps between reads, and sends a
    /// heartbeat every half interval; then closes.
    fn watch(mut self, worst: &Worst, stop: &AtomicBool) -> Result<(), String> {
        let sock = &mut self.raw.sock;
        sock.set_read_timeout(Some(TICK)).map_err(observer)?;
        // Three half intervals: two of RabbitMQ's heartbeats in a row missing.
        let threshold = self.heartbeat.mul_f64(1.5);
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        // Only heartbeats come on an idle connection: read and dropped, so
        // nothing is left half decoded for the close below.
        let mut scratch = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match sock.read(&mut scratch) {
                Ok(0) => return Err("observer: RabbitMQ closed the connection".into()),
                Ok(_) => {
                    let now = Instant::now();
                    worst.record(now - last_read, threshold);
                    last_read = now;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(observer(e)),
            }
            if last_write.elapsed() >= self.heartbeat / 2 {
                sock.write_all(&HEARTBEAT_FRAME).map_err(observer)?;
                last_write = Instant::now();
            }
        }
        // Counts the time since the last read as a gap too: a silence that
        // was still going on when the run ended.
        worst.record(last_read.elapsed(), threshold);
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(observer)?;
        self.raw
            .send_on(
                0,
                ConnectionClose {
                    reply_code: 200,
                    ..Default::default()
                },
            )
            .map_err(observer)?;
        self.raw
            .expect(|m| matches!(m, Method::ConnectionCloseOk(_)), "close-ok")
            .map_err(observer)
    }
}
