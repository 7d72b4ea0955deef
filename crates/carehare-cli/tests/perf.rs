//! `carehare perf` against the live test broker: sequential, concurrent,
//! quorum and stream runs, recovery, and PerfTest's flags.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    URL, carehare, check_side, connection_pids, exit_within, ok, perf_json, rabbitmqctl, stderr,
    stdout, unique,
};
use serde_json::Value;

#[test]
fn perf_sequential_json_is_sane() {
    let v = perf_json(&[
        "--no-recovery",
        "--sequential",
        "--count",
        "2000",
        "--size",
        "12",
        "--confirm",
        "100",
        "--prefetch",
        "50",
        "--multi-ack-every",
        "10",
    ]);
    assert_eq!(v["tool"], "carehare");
    assert_eq!(v["config"]["count"], 2000);
    assert_eq!(v["config"]["sequential"], true);
    assert_eq!(v["config"]["recovery"], false);
    assert_eq!(v["config"]["confirm"], 100);
    check_side(&v["publish"], 2000);
    check_side(&v["consume"], 2000);
    assert!(v["latency_us"].is_null());
    assert!(v["max_rss_kib"].as_u64().unwrap() > 0);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "config",
            "consume",
            "latency_us",
            "max_rss_kib",
            "publish",
            "series",
            "tool"
        ]
    );
    // The original config keys stay, newer ones are added beside them.
    for key in [
        "producers",
        "consumers",
        "size",
        "confirm",
        "prefetch",
        "multi_ack_every",
        "rate",
        "duration_s",
        "count",
        "queue_type",
        "queues",
        "connections",
        "queue",
        "sequential",
        "persistent",
        "recovery",
        "threads",
    ] {
        assert!(v["config"].get(key).is_some(), "config.{key}: {v}");
    }
    // A sequential run's series spans both phases, without latency.
    let series = v["series"].as_array().unwrap();
    let sum = |k: &str| series.iter().map(|s| s[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("sent"), sum("confirmed"), sum("received")),
        (2000, 2000, 2000)
    );
    assert!(series.iter().all(|s| s["latency_p50_ms"].is_null()));
}

#[test]
fn perf_concurrent_measures_latency() {
    // Two producers on their own connection, two consumers on another,
    // two queues, rate-limited, headers carry the stamp (4-byte bodies).
    let v = perf_json(&[
        "--count",
        "3000",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--queues",
        "2",
        "--connections",
        "2",
        "--size",
        "4",
        "--rate",
        "5000",
        "--threads",
        "2",
    ]);
    check_side(&v["publish"], 3000);
    check_side(&v["consume"], 3000);
    let l = &v["latency_us"];
    let (p50, p95, p99, max) = (
        l["p50"].as_u64().unwrap(),
        l["p95"].as_u64().unwrap(),
        l["p99"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{l}");
    // 3,000 messages at 2 × 5,000 msg/s take at least 0.3 s.
    assert!(v["publish"]["seconds"].as_f64().unwrap() >= 0.25, "{v}");
}

#[test]
fn perf_duration_run_on_a_quorum_queue_prints_the_table() {
    let out = ok(&[
        "perf",
        "--duration",
        "1s",
        "--queue-type",
        "quorum",
        "--size",
        "100",
        "--quiet",
    ]);
    assert!(out.contains("publish"), "{out}");
    assert!(out.contains("latency, publish to consume: p50 "), "{out}");
    assert!(out.contains(" ms  p95 "), "latency in ms: {out}");
    assert!(
        out.contains("confirms: on, window 1000 per producer"),
        "{out}"
    );
}

/// How many messages a two-connection run publishes: at 1,000 msg/s it
/// lasts 16 s, long enough for a loaded CI machine, where one
/// `rabbitmqctl` call can take a few seconds, to list the connections
/// and close them mid-run.
const RUN_COUNT: u64 = 16_000;

/// Closes the broker's connections `pids` all at once (one `rabbitmqctl`
/// call each, side by side: one after another they took long enough on a
/// loaded machine for the run to end between them), then checks that the
/// run was still going, so both closes hit a live connection.
fn close_mid_run(child: &mut std::process::Child, pids: &[String]) {
    std::thread::scope(|s| {
        for pid in pids {
            s.spawn(move || rabbitmqctl(&format!("close_connection '{pid}' 'test: go away'")));
        }
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before its connections were closed: raise RUN_COUNT"
    );
}

/// Starts `perf` with `extra` flags on two connections named `name`,
/// publishing `RUN_COUNT` messages at 1,000 msg/s, and waits until RabbitMQ
/// lists both connections (within 30 s of the start); returns the run,
/// their pids, and that deadline, for what the test waits for next.
fn two_connection_run(name: &str, extra: &[&str]) -> (std::process::Child, Vec<String>, Instant) {
    let child = Command::new(env!("CARGO_BIN_EXE_carehare"))
        .arg("--url")
        .arg(format!("{URL}?name={name}"))
        .arg("perf")
        .args(extra)
        .args(["--connections", "2", "--rate", "1000"])
        .args(["--count", &RUN_COUNT.to_string()])
        .args(["--json", "--quiet"])
        .env_remove("AMQP_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids = loop {
        let pids = connection_pids(name);
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "perf's connections: {pids:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    (child, pids, deadline)
}

/// `perf` runs on recovering connections: RabbitMQ closing both of them
/// mid-run costs no confirmed message, and the run still ends well.
#[test]
fn perf_carries_on_when_rabbitmq_closes_its_connections() {
    let name = unique("perf-recovers");
    let (mut child, pids, _) = two_connection_run(&name, &[]);
    close_mid_run(&mut child, &pids);
    let o = exit_within(child, Duration::from_secs(90));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["config"]["recovery"], true);
    assert_eq!(
        v["publish"]["messages"], RUN_COUNT,
        "every publish confirmed: {v}"
    );
    assert!(
        v["consume"]["messages"].as_u64().unwrap() >= RUN_COUNT,
        "every confirmed message consumed: {v}"
    );
    let said = stderr(&o);
    assert_eq!(said.matches("320 CONNECTION_FORCED").count(), 2, "{said}");
    assert_eq!(
        said.matches("reconnected to 127.0.0.1:5672").count(),
        2,
        "{said}"
    );
}

/// Without confirms (`-c 0`) too, a recovering run carries on when
/// RabbitMQ closes its connections: publishing goes on on the next
/// connection (messages in flight may be lost: nothing confirms them),
/// and the run ends well.
#[test]
fn perf_without_confirms_carries_on_when_rabbitmq_closes_its_connections() {
    let name = unique("perf-unconfirmed-recovers");
    let (mut child, pids, deadline) = two_connection_run(&name, &["-c", "0"]);
    // While it publishes, no channel of its connections is in confirm
    // mode: the publishing one counts publishes, and confirms none.
    let mut publishing = false;
    while !publishing {
        assert!(Instant::now() < deadline, "no channel publishes");
        let list = rabbitmqctl(
            "list_channels -p carehare-test connection confirm consumer_count --no-table-headers -q",
        );
        for line in list
            .lines()
            .filter(|l| pids.iter().any(|p| l.contains(p.as_str())))
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.get(1), Some(&"false"), "in confirm mode: {line}");
            publishing |= fields.get(2) == Some(&"0");
        }
    }
    close_mid_run(&mut child, &pids);
    let o = exit_within(child, Duration::from_secs(90));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["config"]["confirms"], false);
    assert_eq!(
        v["publish"]["messages"], RUN_COUNT,
        "every message sent: {v}"
    );
    // At 1,000 msg/s only the few in flight at each close can be lost.
    let consumed = v["consume"]["messages"].as_u64().unwrap();
    assert!(consumed >= RUN_COUNT - 1000, "most messages consumed: {v}");
    let said = stderr(&o);
    assert_eq!(said.matches("320 CONNECTION_FORCED").count(), 2, "{said}");
    assert_eq!(
        said.matches("reconnected to 127.0.0.1:5672").count(),
        2,
        "{said}"
    );
}

#[test]
fn perf_sequential_on_a_stream() {
    // A durable stream, read from `first`, deleted at the end. RabbitMQ
    // delivers its chunks past the default prefetch of 300.
    let v = perf_json(&["--sequential", "--count", "5000", "--queue-type", "stream"]);
    check_side(&v["publish"], 5000);
    check_side(&v["consume"], 5000);
    assert_eq!(v["config"]["prefetch"], 300);
}

/// Sums a counter over the series.
fn series_sum(v: &Value, key: &str) -> u64 {
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[key].as_u64().unwrap())
        .sum()
}

/// PerfTest's short flags do what they do there; the series goes to the
/// JSON and, as a CSV file, to -o; -C counts per producer.
#[test]
fn perf_speaks_perftest_flags() {
    let csv = std::env::temp_dir().join(format!("{}.csv", unique("perf-series")));
    let v = perf_json(&[
        "-x",
        "2",
        "-y",
        "2",
        "-s",
        "100",
        "-c",
        "50",
        "-q",
        "40",
        "-A",
        "20",
        "-r",
        "1000",
        "-C",
        "1500",
        "--queues",
        "2",
        "--connections",
        "2",
        "-f",
        "persistent",
        "-o",
        csv.to_str().unwrap(),
    ]);
    let c = &v["config"];
    assert_eq!(
        (c["producers"].as_u64(), c["consumers"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (c["size"].as_u64(), c["confirm"].as_u64()),
        (Some(100), Some(50))
    );
    assert_eq!(
        (c["prefetch"].as_u64(), c["multi_ack_every"].as_u64()),
        (Some(40), Some(20))
    );
    assert_eq!(
        (c["rate"].as_f64(), c["pmessages"].as_u64()),
        (Some(1000.0), Some(1500))
    );
    assert_eq!(
        (c["persistent"].as_bool(), c["confirms"].as_bool()),
        (Some(true), Some(true))
    );
    // -C is per producer: 2 × 1,500.
    check_side(&v["publish"], 3000);
    check_side(&v["consume"], 3000);
    // 1,500 per producer at 1,000 msg/s: a second and a half, so a full
    // second and a part-second. (At 1,500 msg/s the last publish came
    // just before the 1 s tick and the part-second after it was empty.)
    assert_eq!(series_sum(&v, "sent"), 3000, "{v}");
    assert_eq!(series_sum(&v, "confirmed"), 3000, "{v}");
    assert_eq!(series_sum(&v, "received"), 3000, "{v}");
    let series = v["series"].as_array().unwrap();
    assert!(series.len() >= 2, "{v}");
    assert_eq!(series[0]["second"].as_f64(), Some(1.0));
    assert!(series[0]["latency_p50_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        series[0]["latency_p99_ms"].as_f64() >= series[0]["latency_p50_ms"].as_f64(),
        "{v}"
    );
    // The CSV file holds the same rows.
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::remove_file(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("second,sent,confirmed,received,latency_p50_ms,latency_p99_ms")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), series.len(), "{text}");
    let sent: u64 = rows.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert_eq!(sent, 3000, "{text}");
    assert_eq!(rows[0][0], "1.000");
    assert!(rows[0][4].parse::<f64>().unwrap() > 0.0, "{text}");
    // A CSV file that can't be made ends the run before it starts.
    let o = carehare(&[
        "perf",
        "-C",
        "10",
        "--quiet",
        "-o",
        "/nonexistent-dir/x.csv",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("creating /nonexistent-dir/x.csv"),
        "{}",
        stderr(&o)
    );
}

/// -z takes PerfTest's whole seconds as well as durations; --time is its
/// long name.
#[test]
fn perf_time_in_plain_seconds() {
    let v = perf_json(&["-z", "1", "-r", "500"]);
    assert_eq!(v["config"]["duration_s"], 1.0);
    let seconds = v["publish"]["seconds"].as_f64().unwrap();
    assert!((0.9..5.0).contains(&seconds), "{v}");
    let sent = v["publish"]["messages"].as_u64().unwrap();
    assert!((400..=600).contains(&sent), "500 msg/s for a second: {v}");
    let v = perf_json(&["--time", "1s", "-r", "200", "-y", "0"]);
    assert_eq!(v["config"]["duration_s"], 1.0);
    assert_eq!(v["consume"]["messages"], 0);
    // -z with a count contradicts itself.
    let o = carehare(&["perf", "-z", "1", "-C", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// -e/-k: the exchange is declared (direct) if missing, the run's queue
/// bound with the key, and producers publish there; with -u the queue is
/// kept, still bound. -f mandatory publishes mandatory (all routed here).
#[test]
fn perf_publishes_through_an_exchange() {
    let x = unique("perf-x");
    let q = unique("perf-q");
    let v = perf_json(&[
        "-e",
        &x,
        "-k",
        "perf.key",
        "-u",
        &q,
        "-C",
        "500",
        "-f",
        "mandatory",
    ]);
    assert_eq!(v["config"]["exchange"], x.as_str());
    assert_eq!(v["config"]["routing_key"], "perf.key");
    assert_eq!(v["config"]["mandatory"], true);
    check_side(&v["publish"], 500);
    check_side(&v["consume"], 500);
    // The exchange is a direct one, kept; the queue too, still bound by the key.
    ok(&["declare", "exchange", &x, "--type", "direct", "--passive"]);
    ok(&[
        "publish",
        "-e",
        &x,
        "-k",
        "perf.key",
        "after",
        "--mandatory",
    ]);
    assert_eq!(ok(&["get", &q, "--ack"]), "after\n");
    // Without -k the queue is bound by its name; the transient queue is
    // deleted at the end, so nothing is bound afterwards.
    let v = perf_json(&["-e", &x, "-C", "200", "--queues", "2", "-x", "2", "-y", "2"]);
    check_side(&v["publish"], 400);
    check_side(&v["consume"], 400);
    let o = carehare(&["publish", "-e", &x, "-k", "perf.other", "x", "--mandatory"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    // -k without -e, or with the default exchange, is a usage error.
    for args in [&["perf", "-k", "k"][..], &["perf", "-e", "", "-k", "k"]] {
        let o = carehare(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    ok(&["unbind", "queue", &q, "--exchange", &x, "-k", "perf.key"]);
    ok(&["delete", "queue", &q]);
    ok(&["delete", "exchange", &x]);
}

/// -c 0 turns confirms off (PerfTest's default) and -a is autoack; the
/// report says what each means here.
#[test]
fn perf_without_confirms_and_with_autoack() {
    let v = perf_json(&["-c", "0", "-a", "-C", "3000"]);
    let c = &v["config"];
    assert_eq!(
        (c["confirm"].as_u64(), c["confirms"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(c["autoack"], true);
    assert_eq!(c["window"], 0, "no confirm window");
    assert_eq!(
        (c["prefetch"].as_u64(), c["multi_ack_every"].as_u64()),
        (Some(65_535), Some(32_768))
    );
    // The publish row counts messages sent.
    check_side(&v["publish"], 3000);
    check_side(&v["consume"], 3000);
    assert_eq!(series_sum(&v, "sent"), 3000);
    let out = ok(&["perf", "-c", "0", "-a", "-C", "100", "--quiet"]);
    assert!(out.contains("confirms: off (PerfTest's default)"), "{out}");
    assert!(out.contains("published without confirms"), "{out}");
    assert!(!out.contains("confirm mode"), "{out}");
    assert!(out.contains("autoack: on: consumers are no-ack"), "{out}");
    // Sequential, without confirms.
    let v = perf_json(&["-c", "0", "--sequential", "-C", "1000"]);
    check_side(&v["publish"], 1000);
    check_side(&v["consume"], 1000);
}

/// The progress line says latency in ms, and --quiet (no longer -q, which
/// is PerfTest's prefetch) silences it.
#[test]
fn perf_progress_line_in_ms() {
    let o = carehare(&["perf", "-z", "2", "-r", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(said.contains("[perf    1s] sent "), "{said}");
    assert!(
        said.contains("latency p50 ") && said.contains(" ms p99 "),
        "{said}"
    );
    assert!(!said.contains("µs"), "{said}");
    let o = carehare(&["perf", "-C", "100", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    // -q takes a number now.
    let o = carehare(&["perf", "-C", "100", "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// --help speaks PerfTest, and to users only.
#[test]
fn perf_help_maps_perftest_flags() {
    let help = ok(&["perf", "--help"]);
    for line in [
        "PerfTest's flags:",
        "-x, --producers N        -x, --producers N",
        "-C, --pmessages N        -C, --pmessages N   (per producer; --count N: in all)",
        "-o, --output-file FILE   -o, --csv FILE",
    ] {
        assert!(help.contains(line), "{line}: {help}");
    }
    assert!(
        !help.to_lowercase().contains("benchmark workload"),
        "{help}"
    );
    assert!(!help.to_lowercase().contains("issue"), "{help}");
}
