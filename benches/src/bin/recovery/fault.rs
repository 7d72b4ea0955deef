//! The three faults, and a probe that notes when the broker's port
//! refuses connections and when it accepts them again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::Command;

use crate::proxy::Proxy;
use crate::record::Recorder;

/// How long the broker stays away.
pub const AWAY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The single node: `stop.sh`, 3 s, `start.sh`.
    Restart,
    /// Every connection through the proxy reset (RST), the proxy deaf for
    /// 3 s.
    Cut,
    /// The same, closing with a FIN instead.
    CutFin,
    /// The cluster node the client uses: SIGKILL, 3 s, started again.
    ClusterKill,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "restart" => Some(Self::Restart),
            "cut" => Some(Self::Cut),
            "cut-fin" => Some(Self::CutFin),
            "cluster-kill" => Some(Self::ClusterKill),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Cut => "cut",
            Self::CutFin => "cut-fin",
            Self::ClusterKill => "cluster-kill",
        }
    }
}

/// When the fault started and when the broker was reachable again, as the
/// scripts (or the proxy) say, in ms since the run started.
pub struct Timeline {
    pub fault: f64,
    pub reachable: f64,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

async fn script(args: &[&str]) -> Result<(), String> {
    let root = repo();
    let status = Command::new(root.join(args[0]))
        .args(&args[1..])
        .current_dir(&root)
        // The scripts talk on stdout; keep the bench's stdout clean.
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed: {status}", args.join(" ")))
    }
}

/// Runs the fault; the caller holds the right lock.
pub async fn inject(
    scenario: Scenario,
    node: u8,
    proxy: Option<&Proxy>,
    rec: &Recorder,
) -> Result<Timeline, String> {
    let node = node.to_string();
    let fault = rec.now();
    match scenario {
        Scenario::Restart => {
            script(&["test-server/stop.sh"]).await?;
            tokio::time::sleep(AWAY).await;
            script(&["test-server/start.sh"]).await?;
        }
        Scenario::Cut | Scenario::CutFin => {
            let proxy = proxy.ok_or("no proxy")?;
            proxy.sever(scenario == Scenario::Cut).await;
            tokio::time::sleep(AWAY).await;
            proxy.reopen().await.map_err(|e| format!("reopen: {e}"))?;
        }
        Scenario::ClusterKill => {
            let killed = script(&["test-server/cluster-node.sh", "kill", &node]).await;
            tokio::time::sleep(AWAY).await;
            // Started again even if the kill reported an error.
            script(&["test-server/cluster-node.sh", "start", &node]).await?;
            killed?;
        }
    }
    Ok(Timeline {
        fault,
        reachable: rec.now(),
    })
}

/// When `addr` first refused a TCP connection after the probe started,
/// and when it first accepted one after that (ms since the run started).
#[derive(Default, Clone, Copy)]
pub struct Port {
    pub closed: Option<f64>,
    pub open: Option<f64>,
}

/// Probes `addr` every 20 ms until it has been seen closed and open again.
pub async fn probe(addr: SocketAddr, rec: Arc<Recorder>) -> Port {
    let mut port = Port::default();
    loop {
        let t = rec.now();
        let up = matches!(
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await,
            Ok(Ok(_))
        );
        match (port.closed, up) {
            (None, false) => port.closed = Some(t),
            (Some(_), true) => {
                port.open = Some(t);
                return port;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
