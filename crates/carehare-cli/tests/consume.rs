//! `carehare consume` against the live test broker: JSON lines, counts,
//! timeouts, recovery after RabbitMQ closes its connection, refusals,
//! consuming from an exchange, and --exec.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    URL, carehare, exit_within, ok, rabbitmqctl, stderr, stdout, unique, wait_until_settled,
};
use serde_json::Value;

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
/// `cargo test -p carehare-cli --test consume -- --ignored`.
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

/// Reads `child`'s stderr on a thread, line by line, into a channel.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The name of the queue the next "consuming QUEUE, bound to..." line
/// announces.
fn announced_queue(lines: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("consume announced no queue");
        if let Some(rest) = line.strip_prefix("carehare: consuming ") {
            return rest.split(',').next().unwrap().to_string();
        }
    }
}

/// `consume --exchange X -k KEY...`: a server-named queue bound with each
/// key, announced on stderr; after RabbitMQ closes the connection, a new
/// queue, bound again, and consuming goes on; gone when it ends.
#[test]
fn consume_from_an_exchange_through_a_temporary_queue() {
    let x = unique("consume-x");
    let name = unique("consume-x-conn");
    ok(&["declare", "exchange", &x, "--type", "topic"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_carehare"))
        .arg("--url")
        .arg(format!("{URL}?name={name}"))
        .args([
            "consume",
            "--exchange",
            &x,
            "-k",
            "a.*",
            "--binding-key",
            "b.#",
        ])
        .args(["--count", "3", "--format", "json", "--timeout", "60s"])
        .env_remove("AMQP_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = stderr_lines(&mut child);
    let first = announced_queue(&said);
    assert!(first.starts_with("amq.gen-"), "{first}");
    // Bound before it is announced: routable at once (mandatory fails if not).
    ok(&["publish", "-e", &x, "-k", "a.1", "one", "--mandatory"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["body"], "one");
    wait_until_settled(&first);
    let pids = common::connection_pids(&name);
    assert_eq!(pids.len(), 1, "{pids:?}");
    rabbitmqctl(&format!("close_connection '{}' 'test: go away'", pids[0]));
    // The setup runs again on the new connection: a new queue, bound again.
    let second = announced_queue(&said);
    assert_ne!(first, second);
    let o = carehare(&["publish", "-e", &x, "-k", "c.1", "unbound", "--mandatory"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    ok(&["publish", "-e", &x, "-k", "b.x.y", "two", "--mandatory"]);
    ok(&["publish", "-e", &x, "-k", "a.2", "three", "--mandatory"]);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = exit_within(child, Duration::from_secs(60));
    assert!(o.status.success(), "{:?}", o.status);
    let lines: Vec<Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|v| {
            (
                v["body"].as_str().unwrap(),
                v["routing_key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("two", "b.x.y"), ("three", "a.2")]);
    assert!(lines.iter().all(|v| v["exchange"] == x.as_str()));
    // The temporary queue went with the connection.
    let o = carehare(&["publish", "-e", &x, "-k", "a.3", "late", "--mandatory"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    ok(&["delete", "exchange", &x]);
    // A missing exchange is RabbitMQ's refusal (404), at once.
    let o = carehare(&[
        "consume",
        "--exchange",
        &unique("no-such-x"),
        "--timeout",
        "10s",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("404 NOT_FOUND"), "{}", stderr(&o));
    // A queue and an exchange, or neither, is a usage error.
    assert_eq!(
        carehare(&["consume", "q", "--exchange", &x]).status.code(),
        Some(2)
    );
    assert_eq!(carehare(&["consume"]).status.code(), Some(2));
    assert_eq!(
        carehare(&["consume", "q", "-k", "k"]).status.code(),
        Some(2)
    );
}

/// `consume --exec CMD`: the body on CMD's stdin and the envelope in its
/// environment; exit 0 acks; a failure stops (message back, exit code 8),
/// requeues and goes on, or rejects and goes on, as --on-failure says.
#[test]
fn consume_exec_settles_by_the_commands_exit_status() {
    let q = unique("exec");
    ok(&["declare", "queue", &q]);
    ok(&["publish", "-k", &q, "alpha"]);
    ok(&["publish", "-k", &q, "beta", "--content-type", "text/plain"]);
    let out = ok(&[
        "consume",
        &q,
        "--count",
        "2",
        "--timeout",
        "30s",
        "--exec",
        r#"printf '%s|%s|%s|%s\n' "$(cat)" "$CAREHARE_ROUTING_KEY" "$CAREHARE_REDELIVERED" "$CAREHARE_PROPERTIES""#,
    ]);
    assert_eq!(
        out,
        format!("alpha|{q}|false|{{}}\nbeta|{q}|false|{{\"content_type\":\"text/plain\"}}\n")
    );
    let declared = ok(&["declare", "queue", &q, "--passive"]);
    assert!(declared.contains("messages=0"), "acked: {declared}");

    // stop (the default): the message goes back, exit code 8.
    ok(&["publish", "-k", &q, "poison"]);
    let o = carehare(&[
        "consume",
        &q,
        "--timeout",
        "30s",
        "--exec",
        "cat >/dev/null; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exited with status 3; the message went back to the queue"),
        "{}",
        stderr(&o)
    );
    let declared = ok(&["declare", "queue", &q, "--passive"]);
    assert!(declared.contains("messages=1"), "{declared}");

    // requeue: it comes again, flagged redelivered, and counts as settled.
    let o = carehare(&[
        "consume",
        &q,
        "--count",
        "3",
        "--timeout",
        "30s",
        "--on-failure",
        "requeue",
        "--exec",
        r#"echo "$(cat) $CAREHARE_REDELIVERED"; exit 1"#,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "poison true\npoison true\npoison true\n");
    assert_eq!(stderr(&o).matches("went back to the queue").count(), 3);
    let declared = ok(&["declare", "queue", &q, "--passive"]);
    assert!(declared.contains("messages=1"), "{declared}");

    // reject: dropped (this queue has no dead-letter exchange).
    let o = carehare(&[
        "consume",
        &q,
        "--count",
        "1",
        "--timeout",
        "30s",
        "--on-failure",
        "reject",
        "--exec",
        "kill -9 $$",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("was killed by signal 9; the message was rejected"),
        "{}",
        stderr(&o)
    );
    let declared = ok(&["declare", "queue", &q, "--passive"]);
    assert!(declared.contains("messages=0"), "{declared}");

    // --exec replaces printing, and settling flags.
    for clash in [&["--format", "json"][..], &["--requeue"], &["--reject"]] {
        let mut args = vec!["consume", q.as_str(), "--exec", "true"];
        args.extend_from_slice(clash);
        assert_eq!(carehare(&args).status.code(), Some(2), "{clash:?}");
    }
    ok(&["delete", "queue", &q]);
}
