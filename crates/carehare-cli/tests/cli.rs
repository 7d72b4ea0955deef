//! The `carehare` binary against the live test broker
//! (`test-server/start.sh`): vhost `carehare-test` as `carehare`, TLS on
//! 5671 with the test CA, EXTERNAL with the test client certificate.
//! Publish, get, declare/bind/purge/delete, refusals, rpc, TLS.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{URL, carehare, certs, ok, stderr, stdout, unique};
use serde_json::Value;

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
    let line = ok(&["get", &q, "--format", "json", "--ack"]);
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
    // --requeue (the default) leaves the message where it was.
    assert_eq!(ok(&["get", &q, "--requeue"]), "from stdin\n");
    let v: Value =
        serde_json::from_str(ok(&["get", &q, "--format", "json", "--ack"]).trim()).unwrap();
    assert_eq!(v["body"], "from stdin");
    assert_eq!(v["redelivered"], true);
    let v: Value =
        serde_json::from_str(ok(&["get", &q, "--format", "json", "--ack"]).trim()).unwrap();
    assert_eq!(v["body"], "/wAB");
    assert_eq!(v["body_encoding"], "base64");
    ok(&["delete", "queue", &q]);
}

/// `get` looks without consuming, as `rabbitmqadmin get` does: the
/// message goes back (and comes again flagged redelivered) unless --ack;
/// --reject drops it.
#[test]
fn get_peeks_unless_told_to_ack_or_reject() {
    let q = unique("peek");
    ok(&["declare", "queue", &q, "--auto-delete"]);
    ok(&["publish", "-k", &q, "look"]);
    let first: Value = serde_json::from_str(ok(&["get", &q, "--format", "json"]).trim()).unwrap();
    assert_eq!(first["body"], "look");
    assert_eq!(first["redelivered"], false);
    let second: Value = serde_json::from_str(ok(&["get", &q, "--format", "json"]).trim()).unwrap();
    assert_eq!(second["body"], "look");
    assert_eq!(second["redelivered"], true, "the same message, back again");
    let declared = ok(&["declare", "queue", &q, "--passive"]);
    assert!(declared.contains("messages=1"), "{declared}");
    assert_eq!(ok(&["get", &q, "--ack"]), "look\n");
    let empty = carehare(&["get", &q]);
    assert_eq!(empty.status.code(), Some(7), "{}", stderr(&empty));
    assert_eq!(stderr(&empty).trim(), "carehare: the queue is empty");
    // --reject drops it (no dead-letter exchange here).
    ok(&["publish", "-k", &q, "drop me"]);
    assert_eq!(ok(&["get", &q, "--reject"]), "drop me\n");
    let empty = carehare(&["get", &q]);
    assert_eq!(empty.status.code(), Some(7), "{}", stderr(&empty));
    // Ack and requeue contradict each other.
    let o = carehare(&["get", &q, "--ack", "--requeue"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    ok(&["delete", "queue", &q]);
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
