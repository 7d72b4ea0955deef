//! The commands around the others: shell completions, the manual page, and
//! `list` through the management HTTP API of the live test broker
//! (127.0.0.1:15672).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{URL, carehare, ok, stderr, stdout, unique};
use serde_json::Value;

/// Runs `carehare ARGS` with no URL at all: these commands need none.
fn offline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_carehare"))
        .args(args)
        .env_remove("AMQP_URL")
        .output()
        .unwrap()
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _carehare"),
        ("zsh", "#compdef carehare"),
        ("fish", "complete -c carehare"),
    ] {
        let o = offline(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: {script}");
        // Subcommands, and a flag of one (fish writes `-l pmessages`).
        for word in [
            "perf",
            "consume",
            "publish",
            "list",
            "completions",
            "pmessages",
        ] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    // bash can load it.
    let script = stdout(&offline(&["completions", "bash"]));
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("{script}\ncomplete -p carehare"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("_carehare"), "{}", stdout(&o));
    assert_eq!(offline(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn man_prints_a_roff_page() {
    let o = offline(&["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    // roff: requests from the first line, the title, then sections.
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{}", &page[..200]);
    assert!(page.contains("\n.TH carehare 1"), "{page}");
    assert!(
        page.contains("\n.SH NAME\ncarehare \\- A RabbitMQ"),
        "{page}"
    );
    assert!(page.contains("\n.SH SUBCOMMANDS"), "{page}");
    assert!(page.contains("perf"), "{page}");
    // Every subcommand's own help, as it is.
    assert!(page.contains("\n.SH \"CAREHARE PERF\"\n.nf\n"), "{page}");
    // roff's own apostrophe and dashes.
    assert!(page.contains(r"PerfTest\*(Aqs flags:"), "{page}");
    assert!(page.contains(r"\-C, \-\-pmessages"), "{page}");
    assert!(page.contains("\n.SH \"CAREHARE DECLARE QUEUE\""), "{page}");
}

/// `list --json` until `found` says yes (the management API's statistics
/// lag by a few seconds).
fn list_until(what: &str, found: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let items: Value = serde_json::from_str(&ok(&["list", what, "--json"])).unwrap();
        if items.as_array().unwrap().iter().any(&found) {
            return items;
        }
        assert!(Instant::now() < deadline, "not listed: {items}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `list WHAT` (the table) until `whole` finds its row complete; a table
/// still incomplete after 30 s fails the test.
fn table_until(what: &str, whole: impl Fn(&str) -> Option<()>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let table = ok(&["list", what]);
        if whole(&table).is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "never whole: {table}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn list_queues_exchanges_and_connections() {
    let q = unique("list");
    ok(&["declare", "queue", &q, "--type", "quorum", "--durable"]);
    ok(&["publish", "-k", &q, "one"]);
    // The JSON is the API's objects, every field.
    let named = |v: &Value| v["name"] == q.as_str();
    list_until("queues", |v| named(v) && v["messages"] == 1);
    // The API fills a queue's statistics in separate steps (a quorum
    // queue's consumer count can come after its message counts), so the
    // table is read again until its row is whole.
    table_until("queues", |table| {
        let header = table.lines().next().unwrap();
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["name", "type", "messages", "ready", "unacked", "consumers"]
        );
        let row = table.lines().find(|l| l.starts_with(&q))?;
        let row = row.split_whitespace().collect::<Vec<_>>();
        (row == [q.as_str(), "quorum", "1", "1", "0", "0"]).then_some(())
    });
    ok(&["delete", "queue", &q]);

    let table = ok(&["list", "exchanges"]);
    assert!(table.starts_with("name "), "{table}");
    assert!(table.contains("\n(AMQP default) "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("amq.topic ") && l.contains(" topic "))
    );

    // A connection of our own, named, shows up with its name.
    let name = unique("list-conn");
    let mut child = Command::new(env!("CARGO_BIN_EXE_carehare"))
        .arg("--url")
        .arg(format!("{URL}?name={name}"))
        .args(["consume", "--exchange", "amq.fanout", "--timeout", "60s"])
        .env_remove("AMQP_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The management API lists a new connection before its stats (state,
    // channels) come: wait for those too.
    list_until("connections", |v| {
        v.pointer("/client_properties/connection_name") == Some(&Value::from(name.as_str()))
            && v.get("state") == Some(&Value::from("running"))
    });
    table_until("connections", |table| {
        let row = table.lines().find(|l| l.contains(&name))?;
        (row.contains(" carehare ") && row.contains(" running ")).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn list_failures_have_their_exit_codes() {
    let with_url = |url: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_carehare"))
            .args(["--url", url, "list", "queues"])
            .args(extra)
            .env_remove("AMQP_URL")
            .env_remove("CAREHARE_MANAGEMENT_URL")
            .output()
            .unwrap()
    };
    // Wrong password: the login is refused (3).
    let o = with_url("amqp://carehare:wrong@127.0.0.1/carehare-test", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("refused the login (401)"),
        "{}",
        stderr(&o)
    );
    // Nothing listening: unreachable (3).
    let o = carehare(&["list", "queues", "--management-url", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("could not reach the management API"),
        "{}",
        stderr(&o)
    );
    // No such vhost: 404 (4).
    let o = with_url("amqp://carehare:carehare-pw@127.0.0.1/no-such-vhost", &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    // The management URL's user and password win over the AMQP URL's.
    let o = with_url(
        "amqp://nobody:nothing@127.0.0.1/carehare-test",
        &[
            "--management-url",
            "http://carehare:carehare-pw@127.0.0.1:15672/",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // A bad management URL is a usage error.
    let o = carehare(&["list", "queues", "--management-url", "127.0.0.1:15672"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = carehare(&["list", "bindings"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
