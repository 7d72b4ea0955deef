//! Helpers shared by the live tests: running the `carehare` binary
//! against the test broker (`test-server/start.sh`: vhost `carehare-test`
//! as `carehare`), `rabbitmqctl`, waiting for processes.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const URL: &str = "amqp://carehare:carehare-pw@127.0.0.1:5672/carehare-test";

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cli-test-{prefix}-{}-{nanos}", std::process::id())
}

pub fn carehare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_carehare"))
        .arg("--url")
        .arg(URL)
        .args(args)
        .env_remove("AMQP_URL")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let o = carehare(args);
    assert!(
        o.status.success(),
        "carehare {args:?} failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    stdout(&o)
}

pub fn certs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-server/certs")
}

/// Runs `rabbitmqctl ARGS` against the test broker (through
/// `test-server/env.sh`) and returns its output.
pub fn rabbitmqctl(args: &str) -> String {
    let script = format!(
        "source '{}/../../test-server/env.sh' && rabbitmqctl {args}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "rabbitmqctl {args}: {}", stderr(&out));
    stdout(&out)
}

/// Waits until `queue` has no unacked messages, so that what was printed
/// so far is settled.
pub fn wait_until_settled(queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = rabbitmqctl(
            "list_queues -p carehare-test name messages_unacknowledged --no-table-headers -q",
        );
        let unacked = list
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, n)| n.trim().to_string());
        if unacked.as_deref() == Some("0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} still has unacked messages: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for `child` to exit, for at most `limit` (then kills it and
/// fails: a hang is the failure), and collects its output.
pub fn exit_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}; stderr: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The pids of the broker's connections whose client properties name
/// `name`.
pub fn connection_pids(name: &str) -> Vec<String> {
    let list = rabbitmqctl("list_connections pid client_properties --no-table-headers -q");
    let needle = format!("\"{name}\"");
    list.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

pub fn perf_json(args: &[&str]) -> Value {
    let mut all = vec!["perf", "--json", "--quiet"];
    all.extend_from_slice(args);
    let out = ok(&all);
    serde_json::from_str(out.trim()).unwrap()
}

pub fn check_side(side: &Value, messages: u64) {
    assert_eq!(side["messages"], messages, "{side}");
    assert!(side["seconds"].as_f64().unwrap() > 0.0, "{side}");
    assert!(side["msg_per_s"].as_f64().unwrap() > 0.0, "{side}");
    assert!(side["cpu_s"].as_f64().unwrap() > 0.0, "{side}");
    assert!(side["cpu_us_per_msg"].as_f64().unwrap() > 0.0, "{side}");
}
