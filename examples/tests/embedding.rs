//! The two programs that embed carehare-core, run against the live test
//! broker (`test-server/start.sh`): each must do its whole script and exit
//! 0, and fail with a typed message and exit 1 when the broker refuses it.

use std::process::{Command, Output};

/// The test broker, unless `AMQP_URL` says otherwise.
fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/".into())
}

fn run(bin: &str, url: &str) -> (Output, String, String) {
    let out = Command::new(bin)
        .env("AMQP_URL", url)
        .output()
        .expect("the example binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `url` with the password replaced by a wrong one.
fn wrong_password(url: &str) -> String {
    let rest = url.split_once('@').map_or(url, |(_, host)| host);
    format!("amqp://guest:not-the-password@{rest}")
}

#[test]
fn blocking_publishes_with_confirms_consumes_with_acks_and_closes() {
    let (out, stdout, stderr) = run(env!("CARGO_BIN_EXE_embed-blocking"), &url());
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("published 1000 messages"), "{stdout}");
    assert!(stdout.contains("consumed 1000 messages"), "{stdout}");
    // 1000 deliveries acked 25 at a time with `multiple`.
    assert!(
        stdout.contains("acked with 40 multiple acks (0 duplicates)"),
        "{stdout}"
    );
    assert!(stdout.ends_with("closed cleanly\n"), "{stdout}");
}

#[test]
fn mio_drives_eight_connections_through_nacks_and_heartbeats() {
    let (out, stdout, stderr) = run(env!("CARGO_BIN_EXE_embed-mio"), &url());
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let total = stdout
        .lines()
        .find_map(|l| l.strip_prefix("total: "))
        .unwrap_or_else(|| panic!("no total line in\n{stdout}"));
    let field = |name: &str| -> usize {
        total
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {total}"))
    };
    assert_eq!(field("ok"), 8, "{stdout}");
    assert_eq!(field("published"), 8 * 500, "{stdout}");
    assert_eq!(field("consumed"), 8 * 500, "{stdout}");
    // The first burst of 64 into a queue that holds 16 is nacked in part
    // on every connection: the re-publish path ran.
    assert!(field("nacked") >= 8 * 48, "{stdout}");
    assert_eq!(stdout.matches("closed cleanly").count(), 8, "{stdout}");
}

#[test]
fn both_fail_with_a_typed_error_and_exit_1_on_a_wrong_password() {
    for bin in [
        env!("CARGO_BIN_EXE_embed-blocking"),
        env!("CARGO_BIN_EXE_embed-mio"),
    ] {
        let (out, stdout, stderr) = run(bin, &wrong_password(&url()));
        assert_eq!(out.status.code(), Some(1), "{bin}: {stdout}{stderr}");
        assert!(
            stderr.contains("authentication failed: 403 ACCESS_REFUSED"),
            "{bin}: {stderr}"
        );
        assert!(!stderr.contains("not-the-password"), "{bin}: {stderr}");
    }
}

#[test]
fn both_refuse_a_bad_url_without_echoing_it() {
    for bin in [
        env!("CARGO_BIN_EXE_embed-blocking"),
        env!("CARGO_BIN_EXE_embed-mio"),
    ] {
        let (out, _, stderr) = run(bin, "http://guest:s3cret@127.0.0.1/");
        assert_eq!(out.status.code(), Some(1), "{bin}: {stderr}");
        assert!(stderr.contains("AMQP_URL: invalid URL"), "{bin}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{bin}: {stderr}");
    }
}

/// The metrics example exports exact counts for its workload (1000
/// published, confirmed, delivered and acked).
#[test]
fn the_metrics_example_exports_the_counts_of_its_workload() {
    let (out, stdout, stderr) = run(env!("CARGO_BIN_EXE_metrics-export"), &url());
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let total = |name: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("carehare_{name}_total "))?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in\n{stdout}"))
    };
    for name in ["published", "confirmed", "delivered", "acked"] {
        assert_eq!(total(name), 1000, "{stdout}");
    }
    for name in [
        "publish_nacked",
        "returned",
        "nacked",
        "rejected",
        "reconnects",
    ] {
        assert_eq!(total(name), 0, "{stdout}");
    }
    assert!(total("bytes_sent") > 1000 * 8, "{stdout}");
    assert!(total("bytes_received") > 1000 * 8, "{stdout}");
    assert!(
        stdout.contains("# TYPE carehare_published_total counter"),
        "{stdout}"
    );
}
