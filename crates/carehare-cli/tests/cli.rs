//! The `carehare` binary against the live test broker
//! (`test-server/start.sh`): vhost `carehare-test` as `carehare`, TLS on
//! 5671 with the test CA, EXTERNAL with the test client certificate.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const URL: &str = "amqp://carehare:carehare-pw@127.0.0.1:5672/carehare-test";

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cli-test-{prefix}-{}-{nanos}", std::process::id())
}

fn carehare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_carehare"))
        .arg("--url")
        .arg(URL)
        .args(args)
        .env_remove("AMQP_URL")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success, returning stdout.
fn ok(args: &[&str]) -> String {
    let o = carehare(args);
    assert!(
        o.status.success(),
        "carehare {args:?} failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    stdout(&o)
}

fn certs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-server/certs")
}

#[test]
fn publish_then_get_round_trips_properties_and_headers() {
    let q = unique("roundtrip");
    ok(&["declare", "queue", &q, "--auto-delete"]);
    let out = ok(&[
        "publish",
        "-k",
        &q,
        "héllo",
        "--content-type",
        "text/plain",
        "--content-encoding",
        "identity",
        "--correlation-id",
        "c-1",
        "--reply-to",
        "replies",
        "--message-id",
        "m-1",
        "--persistent",
        "--priority",
        "3",
        "--expiration",
        "60000",
        "--type",
        "greeting",
        "--app-id",
        "tests",
        "--user-id",
        "carehare",
        "--timestamp",
        "1700000000",
        "-H",
        "plain=1",
        "-H",
        "n:int=-5",
        "-H",
        "yes:bool=true",
        "-H",
        "x:float=1.5",
    ]);
    assert_eq!(out.trim(), "acked");
    let line = ok(&["get", &q, "--format", "json"]);
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["body"], "héllo");
    assert_eq!(v["body_encoding"], "utf8");
    assert_eq!(v["routing_key"], q.as_str());
    assert_eq!(v["exchange"], "");
    assert_eq!(v["redelivered"], false);
    assert_eq!(v["message_count"], 0);
    let p = &v["properties"];
    assert_eq!(p["content_type"], "text/plain");
    assert_eq!(p["content_encoding"], "identity");
    assert_eq!(p["correlation_id"], "c-1");
    assert_eq!(p["reply_to"], "replies");
    assert_eq!(p["message_id"], "m-1");
    assert_eq!(p["delivery_mode"], 2);
    assert_eq!(p["priority"], 3);
    assert_eq!(p["expiration"], "60000");
    assert_eq!(p["type"], "greeting");
    assert_eq!(p["app_id"], "tests");
    assert_eq!(p["user_id"], "carehare");
    assert_eq!(p["timestamp"], 1_700_000_000u64);
    assert_eq!(
        p["headers"],
        serde_json::json!({"plain": "1", "n": -5, "yes": true, "x": 1.5})
    );
    // It was acked: the queue is now empty, which `get` reports as 7.
    let empty = carehare(&["get", &q]);
    assert_eq!(empty.status.code(), Some(7), "{}", stderr(&empty));
    ok(&["delete", "queue", &q]);
}

#[test]
fn bodies_from_stdin_and_files_and_requeue() {
    let q = unique("bodies");
    ok(&["declare", "queue", &q, "--auto-delete"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_carehare"))
        .args(["--url", URL, "publish", "-k", &q])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let file = std::env::temp_dir().join(format!("{q}.bin"));
    std::fs::write(&file, [0xff, 0x00, 0x01]).unwrap();
    ok(&["publish", "-k", &q, "--file", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    // --requeue leaves the message where it was.
    assert_eq!(ok(&["get", &q, "--requeue"]), "from stdin\n");
    let v: Value = serde_json::from_str(ok(&["get", &q, "--format", "json"]).trim()).unwrap();
    assert_eq!(v["body"], "from stdin");
    assert_eq!(v["redelivered"], true);
    let v: Value = serde_json::from_str(ok(&["get", &q, "--format", "json"]).trim()).unwrap();
    assert_eq!(v["body"], "/wAB");
    assert_eq!(v["body_encoding"], "base64");
    ok(&["delete", "queue", &q]);
}

#[test]
fn consume_count_prints_json_lines_and_acks() {
    let q = unique("consume");
    // Not auto-delete: the queue must outlive the first consumer.
    ok(&["declare", "queue", &q]);
    for i in 0..4 {
        ok(&[
            "publish",
            "-k",
            &q,
            &format!("m{i}"),
            "-H",
            &format!("i:int={i}"),
        ]);
    }
    let out = ok(&[
        "consume",
        &q,
        "--count",
        "3",
        "--format",
        "json",
        "--timeout",
        "10s",
    ]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["body"], format!("m{i}"));
        assert_eq!(v["properties"]["headers"]["i"], i);
        assert_eq!(v["routing_key"], q.as_str());
        assert!(v["consumer_tag"].as_str().unwrap().starts_with("amq.ctag-"));
        assert!(v["delivery_tag"].as_u64().unwrap() >= 1);
    }
    // The three were acked, the fourth is still there.
    let declared = ok(&["declare", "queue", &q, "--passive"]);
    assert!(declared.contains("messages=1"), "{declared}");
    // Asking for more than there is ends with the timeout code.
    let o = carehare(&["consume", &q, "--count", "2", "--timeout", "300ms"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert_eq!(stdout(&o), "m3\n");
    ok(&["delete", "queue", &q]);
}

/// Runs `rabbitmqctl ARGS` against the test broker (through
/// `test-server/env.sh`) and returns its output.
fn rabbitmqctl(args: &str) -> String {
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
fn wait_until_settled(queue: &str) {
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
fn exit_within(mut child: Child, limit: Duration) -> Output {
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

/// `consume` goes on after RabbitMQ closes its connection: `close` closes
/// it (given the connection's name) while two of four messages are
/// printed and acked; the other two are published while it reconnects.
fn consume_survives_its_connection_being_closed(close: impl FnOnce(&str)) {
    let q = unique("survives");
    let name = unique("survives-conn");
    ok(&["declare", "queue", &q]);
    ok(&["publish", "-k", &q, "m0"]);
    ok(&["publish", "-k", &q, "m1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_carehare"))
        .arg("--url")
        .arg(format!("{URL}?name={name}"))
        .args(["consume", &q, "--count", "4", "--timeout", "60s"])
        .env_remove("AMQP_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    for _ in 0..2 {
        assert_ne!(
            out.read_line(&mut printed).unwrap(),
            0,
            "consume ended early"
        );
    }
    assert_eq!(printed, "m0\nm1\n");
    wait_until_settled(&q);
    close(&name);
    ok(&["publish", "-k", &q, "m2"]);
    ok(&["publish", "-k", &q, "m3"]);
    out.read_to_string(&mut printed).unwrap();
    let o = exit_within(child, Duration::from_secs(90));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert_eq!(printed, "m0\nm1\nm2\nm3\n");
    let said = stderr(&o);
    assert!(said.contains("connection lost"), "{said}");
    assert!(said.contains("320 CONNECTION_FORCED"), "{said}");
    assert!(said.contains("reconnected to 127.0.0.1:5672"), "{said}");
    let declared = ok(&["declare", "queue", &q, "--passive"]);
    assert!(declared.contains("messages=0"), "{declared}");
    ok(&["delete", "queue", &q]);
}

#[test]
fn consume_survives_rabbitmq_closing_its_connection() {
    consume_survives_its_connection_being_closed(|name| {
        // RabbitMQ 3.10 has no `user_provided_name` info key: find the
        // name in the client properties.
        let list = rabbitmqctl("list_connections pid client_properties --no-table-headers -q");
        let needle = format!("\"{name}\"");
        let pid = list
            .lines()
            .find(|l| l.contains(&needle))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no connection named {name} in {list}"));
        rabbitmqctl(&format!("close_connection '{pid}' 'test: go away'"));
    });
}

/// The same through `rabbitmqctl close_all_connections`, as an operator
/// would do it. It closes every connection to the test vhost, other
/// tests' too, so it only runs when asked for, on its own:
/// `cargo test -p carehare-cli --test cli -- --ignored`.
#[test]
#[ignore = "closes every connection to the test vhost: run it on its own (-- --ignored)"]
fn consume_survives_close_all_connections() {
    consume_survives_its_connection_being_closed(|_| {
        // Without -p it would close only the connections to vhost `/`.
        rabbitmqctl("close_all_connections -p carehare-test 'test: everyone out'");
    });
}

/// Recovery never retries what can't work: a wrong password or a missing
/// vhost ends `consume` at once, with the connect code.
#[test]
fn consume_with_a_wrong_password_or_vhost_exits_3_at_once() {
    let cases = [
        (
            "amqp://carehare:wrong@127.0.0.1:5672/carehare-test",
            "ACCESS_REFUSED",
        ),
        (
            "amqp://carehare:carehare-pw@127.0.0.1:5672/no-such-vhost",
            "no-such-vhost",
        ),
    ];
    for (url, says) in cases {
        let child = Command::new(env!("CARGO_BIN_EXE_carehare"))
            .args(["--url", url, "consume", "q"])
            .env_remove("AMQP_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = exit_within(child, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(3), "{url}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{url}: {}", stderr(&o));
        assert_eq!(stdout(&o), "");
    }
}

#[test]
fn declare_bind_publish_purge_unbind_delete() {
    let q = unique("admin-q");
    let x = unique("admin-x");
    let x2 = unique("admin-x2");
    let out = ok(&[
        "declare",
        "queue",
        &q,
        "--durable",
        "--arg",
        "x-max-length=10",
    ]);
    assert_eq!(out.trim(), format!("queue {q} messages=0 consumers=0"));
    ok(&["declare", "exchange", &x, "--type", "topic"]);
    ok(&[
        "declare",
        "exchange",
        &x2,
        "--type",
        "fanout",
        "--auto-delete",
    ]);
    ok(&[
        "bind",
        "queue",
        &q,
        "--exchange",
        &x,
        "--routing-key",
        "a.*",
    ]);
    // x2 -> x: a message to the fanout x2 reaches x, then q by its key.
    ok(&["bind", "exchange", &x, "--exchange", &x2]);
    ok(&["publish", "-e", &x, "-k", "a.b", "one", "--mandatory"]);
    ok(&["publish", "-e", &x2, "-k", "a.c", "two", "--mandatory"]);
    let o = carehare(&["publish", "-e", &x, "-k", "b.a", "lost", "--mandatory"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    // A redeclare with other arguments is refused, and named.
    let o = carehare(&[
        "declare",
        "queue",
        &q,
        "--durable",
        "--arg",
        "x-max-length=11",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains("406 PRECONDITION_FAILED"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        ok(&["purge", &q]).trim(),
        format!("purged queue {q} messages=2")
    );
    ok(&["unbind", "exchange", &x, "--exchange", &x2]);
    ok(&[
        "unbind",
        "queue",
        &q,
        "--exchange",
        &x,
        "--routing-key",
        "a.*",
    ]);
    let o = carehare(&["publish", "-e", &x, "-k", "a.b", "unbound", "--mandatory"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    ok(&["delete", "exchange", &x2]);
    ok(&["delete", "exchange", &x, "--if-unused"]);
    assert_eq!(
        ok(&["delete", "queue", &q]).trim(),
        format!("deleted queue {q} messages=0")
    );
}

#[test]
fn broker_refusals_exit_4_with_the_error_text() {
    let missing = unique("missing");
    let o = carehare(&["declare", "queue", &missing, "--passive"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "carehare: RabbitMQ closed the channel: 404 NOT_FOUND - no queue '{missing}' in vhost 'carehare-test'"
        )
    );
    let q = unique("bind-missing");
    ok(&["declare", "queue", &q, "--auto-delete"]);
    let o = carehare(&["bind", "queue", &q, "--exchange", &missing]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains(&format!("404 NOT_FOUND - no exchange '{missing}'")),
        "{}",
        stderr(&o)
    );
    ok(&["delete", "queue", &q]);
}

#[test]
fn unroutable_mandatory_publish_exits_5() {
    let o = carehare(&["publish", "-k", &unique("nowhere"), "--mandatory", "x"]);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(
        stderr(&o).trim(),
        "carehare: RabbitMQ returned the message: 312 NO_ROUTE"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn usage_and_connect_errors_have_their_codes() {
    let o = carehare(&["publish", "-k", "q", "x", "-H", "novalue"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = carehare(&["perf", "--prefetch", "10", "--multi-ack-every", "20"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = carehare(&["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(env!("CARGO_BIN_EXE_carehare"))
        .args(["purge", "q"])
        .env(
            "AMQP_URL",
            "amqp://carehare:wrong@127.0.0.1:5672/carehare-test",
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("ACCESS_REFUSED"), "{}", stderr(&o));
    let help = ok(&["--help"]);
    assert!(help.contains("4  RabbitMQ refused the operation"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_gets_the_reply() {
    let q = unique("rpc");
    let server = carehare_tokio::connect(URL).await.unwrap();
    server
        .queue_declare(&q, carehare_tokio::QueueOptions::exclusive())
        .await
        .unwrap();
    let consumer = server.acking_consumer(&q, 10).await.unwrap();
    let responder = {
        let server = server.clone();
        tokio::spawn(async move {
            let request = consumer.next().await.unwrap();
            let reply_to = request.properties.reply_to.clone().unwrap();
            let properties = carehare_tokio::BasicProperties {
                correlation_id: request.properties.correlation_id.clone(),
                ..Default::default()
            };
            let mut body = b"pong: ".to_vec();
            body.extend_from_slice(&request.body);
            server
                .publish_with(body, "", &reply_to, &properties)
                .await
                .unwrap();
            consumer.ack(request.delivery_tag);
        })
    };
    let args = [
        "rpc",
        "call",
        "-k",
        &q,
        "ping",
        "--timeout",
        "10s",
        "--format",
        "json",
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let o = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        carehare(&args)
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["body"], "pong: ping");
    assert!(
        v["properties"]["correlation_id"]
            .as_str()
            .unwrap()
            .starts_with("carehare-")
    );
    responder.await.unwrap();
    // Nobody listening: the request is returned (5); a queue that takes it
    // but never answers times out (6).
    let o =
        tokio::task::spawn_blocking(|| carehare(&["rpc", "call", "-k", &unique("no-server"), "x"]))
            .await
            .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let silent = unique("silent");
    ok(&["declare", "queue", &silent, "--auto-delete"]);
    let s = silent.clone();
    let o = tokio::task::spawn_blocking(move || {
        carehare(&["rpc", "call", "-k", &s, "x", "--timeout", "300ms"])
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    ok(&["delete", "queue", &silent]);
    server.close().await.unwrap();
}

#[test]
fn tls_with_the_test_ca_and_external_auth() {
    let certs = certs();
    let ca = certs.join("ca.pem");
    let q = unique("tls");
    let run = |url: &str, extra: &[&str], args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_carehare"))
            .args(["--url", url, "--cacert", ca.to_str().unwrap()])
            .args(extra)
            .args(args)
            .env_remove("AMQP_URL")
            .output()
            .unwrap()
    };
    // Password login over TLS, with the server name given explicitly.
    let o = run(
        "amqps://carehare:carehare-pw@127.0.0.1:5671/carehare-test",
        &["--server-name", "localhost"],
        &["declare", "queue", &q, "--auto-delete"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // EXTERNAL: the client certificate is the login.
    let cert = certs.join("client.pem");
    let key = certs.join("client.key");
    let external = "amqps://localhost:5671/carehare-test?auth_mechanism=external";
    let cert_flags = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let o = run(external, &cert_flags, &["publish", "-k", &q, "over tls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(external, &cert_flags, &["get", &q]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "over tls\n");
    // Without the certificate EXTERNAL has no login: a connect error.
    let o = run(external, &[], &["get", &q]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // A server name the certificate does not carry fails verification.
    let o = run(
        "amqps://carehare:carehare-pw@127.0.0.1:5671/carehare-test",
        &["--server-name", "not-the-server.example"],
        &["get", &q],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    ok(&["delete", "queue", &q]);
}

fn perf_json(args: &[&str]) -> Value {
    let mut all = vec!["perf", "--json", "--quiet"];
    all.extend_from_slice(args);
    let out = ok(&all);
    serde_json::from_str(out.trim()).unwrap()
}

fn check_side(side: &Value, messages: u64) {
    assert_eq!(side["messages"], messages, "{side}");
    assert!(side["seconds"].as_f64().unwrap() > 0.0, "{side}");
    assert!(side["msg_per_s"].as_f64().unwrap() > 0.0, "{side}");
    assert!(side["cpu_s"].as_f64().unwrap() > 0.0, "{side}");
    assert!(side["cpu_us_per_msg"].as_f64().unwrap() > 0.0, "{side}");
}

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
            "tool"
        ]
    );
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
    assert!(
        out.contains("latency, publish to consume (µs): p50"),
        "{out}"
    );
}

/// The pids of the broker's connections whose client properties name
/// `name`.
fn connection_pids(name: &str) -> Vec<String> {
    let list = rabbitmqctl("list_connections pid client_properties --no-table-headers -q");
    let needle = format!("\"{name}\"");
    list.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `perf` runs on recovering connections: RabbitMQ closing both of them
/// mid-run costs no confirmed message, and the run still ends well.
#[test]
fn perf_carries_on_when_rabbitmq_closes_its_connections() {
    let name = unique("perf-recovers");
    let child = Command::new(env!("CARGO_BIN_EXE_carehare"))
        .arg("--url")
        .arg(format!("{URL}?name={name}"))
        .args([
            "perf",
            "--connections",
            "2",
            "--count",
            "8000",
            "--rate",
            "1000",
        ])
        .args(["--json", "--quiet"])
        .env_remove("AMQP_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids = loop {
        let pids = connection_pids(&name);
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "perf's connections: {pids:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Mid-publish: 8,000 messages at 1,000 msg/s take 8 s, and each
    // rabbitmqctl call about one.
    for pid in &pids {
        rabbitmqctl(&format!("close_connection '{pid}' 'test: go away'"));
    }
    let o = exit_within(child, Duration::from_secs(90));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["config"]["recovery"], true);
    assert_eq!(
        v["publish"]["messages"], 8000,
        "every publish confirmed: {v}"
    );
    assert!(
        v["consume"]["messages"].as_u64().unwrap() >= 8000,
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

#[test]
fn perf_sequential_on_a_stream() {
    // A durable stream, read from `first`, deleted at the end. RabbitMQ
    // delivers its chunks past the default prefetch of 300.
    let v = perf_json(&["--sequential", "--count", "5000", "--queue-type", "stream"]);
    check_side(&v["publish"], 5000);
    check_side(&v["consume"], 5000);
    assert_eq!(v["config"]["prefetch"], 300);
}

#[test]
fn nacked_publishes_exit_5() {
    let q = unique("full");
    ok(&[
        "declare",
        "queue",
        &q,
        "--arg",
        "x-max-length=1",
        "--arg",
        "x-overflow=reject-publish",
    ]);
    ok(&["publish", "-k", &q, "fits"]);
    let o = carehare(&["publish", "-k", &q, "does not fit"]);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(
        stderr(&o).trim(),
        "carehare: RabbitMQ refused the message (basic.nack)"
    );
    // perf reports, then says how many were refused.
    let o = carehare(&[
        "perf",
        "--queue",
        &q,
        "--consumers",
        "0",
        "--count",
        "10",
        "--quiet",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["publish"]["messages"], 0);
    assert!(
        stderr(&o).contains("10 publishes were nacked or returned"),
        "{}",
        stderr(&o)
    );
    ok(&["delete", "queue", &q]);
}
