//! The faults, one at a time at random intervals, and how long the
//! traffic took to flow again after each.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::proxy::ProxyProcess;
use crate::track::Tracker;
use crate::workload::EventLog;

/// How long the node stays stopped in a restart.
const RESTART_AWAY: Duration = Duration::from_secs(5);
/// Bound on waiting for traffic to flow again after a fault.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(300);

/// A small xorshift64*: the schedule is replayable from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Every connection through the proxy closed with a FIN.
    Cut,
    /// The same with an RST.
    Reset,
    /// The proxy forwards nothing for this long; the heartbeat notices.
    BlackHole(Duration),
    /// The node stopped cleanly, and started again after `RESTART_AWAY`.
    Restart,
}

impl Kind {
    /// A link cut, a black hole or a restart, one chance in three each.
    pub fn pick(rng: &mut Rng, hole: (u64, u64)) -> Self {
        match rng.between(0, 5) {
            0 => Self::Cut,
            1 => Self::Reset,
            2 | 3 => Self::BlackHole(Duration::from_secs(rng.between(hole.0, hole.1))),
            _ => Self::Restart,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Cut => "link cut (FIN)".into(),
            Self::Reset => "link reset (RST)".into(),
            Self::BlackHole(d) => format!("black hole {} s", d.as_secs()),
            Self::Restart => "node restart".into(),
        }
    }
}

/// One fault, times in seconds since the soak started.
#[derive(Debug)]
pub struct Fault {
    pub kind: Kind,
    pub start_s: f64,
    /// When the path was back (the proxy forwarding, the node started).
    pub healed_s: f64,
    /// Confirms and deliveries both came again, after both connections
    /// recovered.
    pub flowing_s: Option<f64>,
    /// The library's downtime per connection (`Recovered { downtime }`).
    pub publisher_down_s: Option<f64>,
    pub consumer_down_s: Option<f64>,
    pub error: Option<String>,
}

impl Fault {
    pub fn json(&self) -> serde_json::Value {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        json!({
            "kind": self.kind.name(),
            "start_s": r(self.start_s),
            "healed_s": r(self.healed_s),
            "flowing_s": self.flowing_s.map(r),
            "recovery_s": self.flowing_s.map(|f| r(f - self.start_s)),
            "after_healed_s": self.flowing_s.map(|f| r(f - self.healed_s)),
            "publisher_downtime_s": self.publisher_down_s.map(r),
            "consumer_downtime_s": self.consumer_down_s.map(r),
            "error": self.error,
        })
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Runs `test-server/node.sh ARGS`; its log goes to stderr.
pub async fn node_script(args: &[&str]) -> Result<(), String> {
    let root = repo();
    let status = Command::new(root.join("test-server/node.sh"))
        .args(args)
        .current_dir(&root)
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("node.sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("node.sh {} failed: {status}", args.join(" ")))
    }
}

/// Injects one fault and waits for the traffic to flow again.
pub async fn inject(
    kind: Kind,
    node: &str,
    proxy: &mut ProxyProcess,
    track: &Arc<Tracker>,
    log: &EventLog,
) -> Fault {
    let start_s = track.secs();
    eprintln!("soak: {:>7.1} s  {}", start_s, kind.name());
    let done = match kind {
        Kind::Cut => proxy.command("cut").await,
        Kind::Reset => proxy.command("reset").await,
        Kind::BlackHole(d) => match proxy.command("hole").await {
            Ok(()) => {
                tokio::time::sleep(d).await;
                proxy.command("pass").await
            }
            Err(e) => Err(e),
        },
        Kind::Restart => {
            let stopped = node_script(&["stop", node]).await;
            tokio::time::sleep(RESTART_AWAY).await;
            // Started again whatever the stop said.
            let started = node_script(&["start", node]).await;
            stopped.and(started)
        }
    };
    let healed_s = track.secs();
    let mut fault = Fault {
        kind,
        start_s,
        healed_s,
        flowing_s: None,
        publisher_down_s: None,
        consumer_down_s: None,
        error: done.err(),
    };
    let deadline = tokio::time::Instant::now() + RECOVERY_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let events = log.since(start_s);
        let recovered = |c: &str| {
            events
                .iter()
                .find(|e| e.connection == c && e.kind == "recovered")
        };
        if let Some(e) = events.iter().find(|e| e.kind == "gave up") {
            fault.error = Some(format!("{} gave up: {}", e.connection, e.detail));
            break;
        }
        if let (Some(p), Some(c)) = (recovered("publisher"), recovered("consumer")) {
            fault.publisher_down_s = p.downtime_s;
            fault.consumer_down_s = c.downtime_s;
            let since = ((p.t_s.max(c.t_s).max(healed_s)) * 1e6) as u64;
            let (confirm, delivery) = (track.last_confirm_us(), track.last_delivery_us());
            if confirm > since && delivery > since {
                fault.flowing_s = Some(confirm.max(delivery) as f64 / 1e6);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match fault.flowing_s {
        Some(f) => eprintln!(
            "soak: {:>7.1} s  flowing again, {:.2} s after the fault",
            f,
            f - start_s
        ),
        None => eprintln!("soak: not flowing again: {:?}", fault.error),
    }
    fault
}
