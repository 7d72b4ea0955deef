//! Helpers for the tests on the local 3-node cluster
//! (`test-server/cluster-start.sh`): node URLs, `rabbitmqctl` on a node,
//! stopping a node with a guard that always starts it again, and finding a
//! quorum queue's leader.
//!
//! Tests that stop nodes run under `flock -o /tmp/carehare-cluster.lock`
//! (`scripts/test` does that), and serialize inside their binary with
//! [`serial`].

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The vhost the cluster tests use.
pub const VHOST: &str = "carehare-test";

/// `amqp://carehare:carehare-pw@127.0.0.1:578N/carehare-test` for node N.
pub fn node_url(node: u8) -> String {
    format!("amqp://carehare:carehare-pw@127.0.0.1:578{node}/{VHOST}")
}

/// The AMQP port of node N.
pub fn node_port(node: u8) -> u16 {
    5780 + u16::from(node)
}

/// The node (1-3) listening on AMQP port `port`: the inverse of
/// [`node_port`].
///
/// # Panics
/// If `port` is not a cluster node's.
pub fn node_of_port(port: u16) -> u8 {
    (1..=3u8)
        .find(|&n| node_port(n) == port)
        .unwrap_or_else(|| panic!("{port} is not a cluster node's port"))
}

/// Starts the cluster (`cluster-start.sh`), or checks that it is up.
///
/// # Panics
/// If the script fails.
pub fn start_cluster() {
    let status = Command::new(format!("{}/cluster-start.sh", test_server()))
        .status()
        .unwrap();
    assert!(status.success(), "cluster-start.sh failed");
}

/// One test at a time in a binary: they stop nodes.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn test_server() -> String {
    format!("{}/../test-server", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `rabbitmqctl ARGS` (or another CLI tool, e.g. `rabbitmq-queues`) on
/// node N and returns its output.
///
/// # Panics
/// If the command fails.
pub fn ctl(node: u8, tool: &str, args: &str) -> String {
    let script = format!(
        "CLUSTER_NODE={node} source '{}/cluster-env.sh' && {tool} {args}",
        test_server()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args} on node {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `test-server/cluster-node.sh ACTION N`.
///
/// # Panics
/// If the script fails.
pub fn node(action: &str, node: u8) {
    let status = Command::new(format!("{}/cluster-node.sh", test_server()))
        .args([action, &node.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "cluster-node.sh {action} {node} failed");
}

/// Whether node N answers.
pub fn node_is_up(n: u8) -> bool {
    Command::new(format!("{}/cluster-node.sh", test_server()))
        .args(["status", &n.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The node (1-3) that leads quorum queue `queue`, asked of node `ask`.
///
/// # Panics
/// If the queue or its leader is not found.
pub fn leader_of(queue: &str, ask: u8) -> u8 {
    let out = ctl(
        ask,
        "rabbitmqctl",
        &format!("-q list_queues -p {VHOST} name leader --no-table-headers"),
    );
    for line in out.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(queue) {
            let leader = fields.next().unwrap_or_default();
            for n in 1..=3u8 {
                if leader == format!("carehare-c{n}@localhost") {
                    return n;
                }
            }
            panic!("queue {queue} has leader {leader:?}");
        }
    }
    panic!("queue {queue} not listed by node {ask}: {out}");
}

/// A node stopped for a test: the stop runs in a thread (so the test can
/// keep working while the node shuts down), and dropping the guard waits
/// for it and starts the node again, also when the test panics.
pub struct NodeDown {
    node: u8,
    stopping: Option<JoinHandle<()>>,
}

impl NodeDown {
    /// Starts stopping node N cleanly (`rabbitmqctl stop`) in the background.
    pub fn stop_in_background(n: u8) -> Self {
        Self::in_background("stop", n)
    }

    /// `cluster-node.sh ACTION N` in the background: `stop` (clean) or
    /// `kill` (SIGKILL, a crash).
    pub fn in_background(action: &'static str, n: u8) -> Self {
        let stopping = std::thread::spawn(move || node(action, n));
        Self {
            node: n,
            stopping: Some(stopping),
        }
    }

    /// Stops node N and returns once it is down.
    pub fn stop(n: u8) -> Self {
        Self::now("stop", n)
    }

    /// `cluster-node.sh ACTION N` (`stop` or `kill`), returning once it is
    /// done.
    pub fn now(action: &'static str, n: u8) -> Self {
        let mut down = Self::in_background(action, n);
        down.wait_stopped();
        down
    }

    /// Whether the stop has finished.
    pub fn is_stopped(&self) -> bool {
        self.stopping.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the stop to finish.
    ///
    /// # Panics
    /// If the stop failed.
    pub fn wait_stopped(&mut self) {
        if let Some(t) = self.stopping.take() {
            t.join().expect("cluster-node.sh stop");
        }
    }
}

impl Drop for NodeDown {
    fn drop(&mut self) {
        if let Some(t) = self.stopping.take() {
            let _ = t.join();
        }
        let started = std::thread::panicking();
        // Don't panic while panicking: report and leave the node to the next
        // cluster-start.sh.
        let ok = Command::new(format!("{}/cluster-node.sh", test_server()))
            .args(["start", &self.node.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !ok && !started {
            panic!("could not start node {} again", self.node);
        } else if !ok {
            eprintln!("could not start node {} again", self.node);
        }
    }
}

/// Deletes a queue when dropped (also when the test panics), through
/// `rabbitmqctl` on the first node that is up: durable queues on the
/// cluster outlive the test otherwise.
pub struct DeleteQueue(pub String);

impl Drop for DeleteQueue {
    fn drop(&mut self) {
        if let Some(n) = (1..=3).find(|&n| node_is_up(n)) {
            let script = format!(
                "CLUSTER_NODE={n} source '{}/cluster-env.sh' && rabbitmqctl -q delete_queue -p {VHOST} '{}'",
                test_server(),
                self.0
            );
            // Already deleted by the test is fine.
            let _ = Command::new("bash").arg("-c").arg(&script).output();
        }
    }
}
