//! Runs every end-to-end peer side by side, in one run: R rounds, each
//! running every peer once per body size, in an order that rotates each
//! round so no peer always follows the same one. Prints a markdown table
//! (medians of the rounds) and ratios for carehare against amqprs and
//! lapin, and appends every raw JSON line to `target/e2e-results.jsonl`.
//! Writes the same medians as figures: `fig-throughput.json` (msg/s) and
//! `fig-cpu.json` (CPU µs per message), bars per body size and phase.
//!
//! ```text
//! cargo run --release --bin e2e -- [--rounds 3] [--count 100000]
//!     [--py-count 20000] [--sizes 12,1024] [--peers carehare,amqprs,lapin,carehare-py,aio-pika]
//!     [--carehare-cli PATH] [--python PATH] [--extra NAME=PATH ...]
//!     [--extra-cli NAME=PATH ...] [--fig-dir target/bench]
//! ```
//!
//! carehare is measured with `carehare perf --sequential ... --json` when
//! the CLI is built (`--carehare-cli`, default `../target/release/carehare`;
//! it runs on one thread by default), else with this crate's
//! `peer-carehare`. `carehare-mt` is `peer-carehare` on tokio's
//! multi-threaded runtime, as the lapin and amqprs peers run.
//! `carehare-plain` is `peer-plain`, the guide's calls as a new user
//! writes them, on tokio's current-thread runtime (`carehare-plain-mt`:
//! multi-threaded, the work in a spawned task as the guide says;
//! `carehare-plain-mt-main`: the same work awaited in `block_on`'s own
//! future, on the main thread); `amqprs-ct` is the amqprs peer on the
//! current-thread runtime, to compare like with like, and
//! `amqprs-spawned` the amqprs peer with its work in a spawned task.
//! `raw` (`peer-raw`) is the broker's ceiling: pre-encoded frames over a
//! blocking socket, no runtime; every client's rate is also given as a
//! share of its rate.
//! `carehare-recovering` is the CLI on recovering connections (its
//! default; the others run with `--no-recovery`), to price recovery.
//! `--extra`
//! adds a peer binary that takes the same flags (e.g. an older build of
//! `peer-carehare`, for before/after figures); `--extra-cli` another
//! build of the `carehare` CLI, run as `perf --sequential`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use carehare_benches::e2e::{median, own_bin};
use carehare_benches::figure::{Figure, default_dir};
use serde_json::Value;

struct Opts {
    rounds: usize,
    count: u64,
    py_count: u64,
    sizes: Vec<usize>,
    peers: Vec<String>,
    carehare_cli: PathBuf,
    python: PathBuf,
    url: String,
    /// Extra peers: name, binary, and whether it is a `carehare` CLI.
    extra: Vec<(String, PathBuf, bool)>,
    /// Where the figure files go.
    fig_dir: PathBuf,
}

fn parse() -> Opts {
    let mut o = Opts {
        rounds: 3,
        count: 100_000,
        py_count: 20_000,
        sizes: vec![12, 1024],
        peers: [
            "raw",
            "carehare",
            "carehare-recovering",
            "carehare-mt",
            "carehare-plain",
            "carehare-plain-mt",
            "carehare-plain-mt-main",
            "amqprs",
            "amqprs-ct",
            "amqprs-spawned",
            "lapin",
            "carehare-py",
            "aio-pika",
        ]
        .map(String::from)
        .to_vec(),
        carehare_cli: PathBuf::from("../target/release/carehare"),
        python: PathBuf::from("target/python/e2e/bin/python"),
        url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        extra: Vec::new(),
        fig_dir: default_dir(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => o.rounds = v.parse().expect("--rounds"),
            "--count" => o.count = v.parse().expect("--count"),
            "--py-count" => o.py_count = v.parse().expect("--py-count"),
            "--sizes" => o.sizes = v.split(',').map(|s| s.parse().expect("size")).collect(),
            "--peers" => o.peers = v.split(',').map(String::from).collect(),
            "--carehare-cli" => o.carehare_cli = v.into(),
            "--python" => o.python = v.into(),
            "--url" => o.url = v,
            "--fig-dir" => o.fig_dir = v.into(),
            "--extra" | "--extra-cli" => {
                let (name, path) = v.split_once('=').expect("--extra NAME=PATH");
                o.extra
                    .push((name.to_string(), path.into(), flag == "--extra-cli"));
                o.peers.push(name.to_string());
            }
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

/// The command line of one peer run.
fn command(o: &Opts, peer: &str, size: usize) -> Command {
    let count = if peer.ends_with("-py") || peer == "aio-pika" {
        o.py_count
    } else {
        o.count
    };
    let workload = [
        "--count".to_string(),
        count.to_string(),
        "--size".into(),
        size.to_string(),
        "--confirm".into(),
        "1000".into(),
        "--prefetch".into(),
        "300".into(),
        "--multi-ack-every".into(),
        "30".into(),
    ];
    let mut cmd;
    let cli = match peer {
        "carehare" | "carehare-recovering" if o.carehare_cli.exists() => {
            Some(o.carehare_cli.clone())
        }
        _ => o
            .extra
            .iter()
            .find(|(name, _, is_cli)| name == peer && *is_cli)
            .map(|(_, path, _)| path.clone()),
    };
    match peer {
        _ if cli.is_some() => {
            cmd = Command::new(cli.expect("checked"));
            cmd.arg("perf");
            // Plain connections, as the other clients (which don't
            // recover); `carehare-recovering` (and any CLI peer whose name
            // ends in `-recovering`) prices recovery.
            if !peer.ends_with("-recovering") {
                cmd.arg("--no-recovery");
            }
            cmd.arg("--sequential")
                .args(&workload)
                .arg("--json")
                .env("AMQP_URL", &o.url);
            return cmd;
        }
        "carehare" | "carehare-mt" => cmd = Command::new(own_bin("peer-carehare")),
        "carehare-recovering" => panic!("carehare-recovering needs the CLI (--carehare-cli)"),
        "amqprs" => cmd = Command::new(own_bin("peer-amqprs")),
        "amqprs-ct" => {
            cmd = Command::new(own_bin("peer-amqprs"));
            cmd.env("PEER_RUNTIME", "current_thread");
        }
        "amqprs-spawned" => {
            cmd = Command::new(own_bin("peer-amqprs"));
            cmd.env("PEER_SPAWN", "1");
        }
        "carehare-plain" => cmd = Command::new(own_bin("peer-plain")),
        "carehare-plain-mt" => {
            cmd = Command::new(own_bin("peer-plain"));
            cmd.env("PEER_RUNTIME", "multi_thread");
        }
        "carehare-plain-mt-main" => {
            cmd = Command::new(own_bin("peer-plain"));
            cmd.env("PEER_RUNTIME", "multi_thread")
                .env("PEER_IN_MAIN", "1");
        }
        "lapin" => cmd = Command::new(own_bin("peer-lapin")),
        "raw" => cmd = Command::new(own_bin("peer-raw")),
        "carehare-py" | "aio-pika" => {
            cmd = Command::new(&o.python);
            let script = if peer == "aio-pika" {
                "python/peer_aio_pika.py"
            } else {
                "python/peer_carehare.py"
            };
            cmd.arg(script);
        }
        other => match o.extra.iter().find(|(name, _, _)| name == other) {
            Some((_, path, _)) => cmd = Command::new(path),
            None => panic!("unknown peer {other}"),
        },
    }
    cmd.args(&workload).args(["--url", &o.url]);
    cmd
}

/// Runs one peer; returns its JSON line.
fn run(o: &Opts, peer: &str, size: usize) -> Option<Value> {
    let out = command(o, peer, size).output().expect("spawn a peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    match (out.status.success(), line) {
        (true, Some(line)) => {
            let v: Value = serde_json::from_str(line).expect("peer printed bad JSON");
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open("target/e2e-results.jsonl")
                .expect("results log");
            writeln!(log, "{line}").expect("results log");
            Some(v)
        }
        _ => {
            eprintln!(
                "{peer} ({size} B) failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
    }
}

/// Every body size, peer and its rounds, in table order (sizes up, peers
/// in the order they ran), leaving out a peer that did not run at a size.
fn rows<'a>(
    results: &'a BTreeMap<usize, BTreeMap<&str, Vec<Value>>>,
    peers: &'a [&str],
) -> impl Iterator<Item = (usize, &'a str, &'a [Value])> {
    results.iter().flat_map(move |(&size, by_peer)| {
        peers
            .iter()
            .filter_map(move |&peer| Some((size, peer, by_peer.get(peer)?.as_slice())))
    })
}

/// Median of one field over a peer's rounds.
fn med(runs: &[Value], phase: &str, field: &str) -> f64 {
    median(
        runs.iter()
            .filter_map(|r| r[phase][field].as_f64())
            .collect(),
    )
}

fn fmt_rate(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn fmt_us(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.2}")
    }
}

fn main() {
    let o = parse();
    if !Path::new(&o.python).exists() {
        eprintln!(
            "no Python venv at {}: skipping the Python peers",
            o.python.display()
        );
    }
    let peers: Vec<&str> = o
        .peers
        .iter()
        .map(String::as_str)
        .filter(|p| !(p.ends_with("-py") || *p == "aio-pika") || o.python.exists())
        .collect();
    let carehare_source = if o.carehare_cli.exists() {
        format!("`carehare perf` ({})", o.carehare_cli.display())
    } else {
        "benches' `peer-carehare` (the CLI is not built)".to_string()
    };
    eprintln!("carehare measured with {carehare_source}");

    // results[size][peer] = every round's JSON
    let mut results: BTreeMap<usize, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for round in 0..o.rounds {
        for &size in &o.sizes {
            for i in 0..peers.len() {
                let peer = peers[(i + round) % peers.len()];
                eprintln!("round {} / {}: {peer}, {size} B", round + 1, o.rounds);
                if let Some(v) = run(&o, peer, size) {
                    results
                        .entry(size)
                        .or_default()
                        .entry(peer)
                        .or_default()
                        .push(v);
                }
            }
        }
    }

    println!(
        "| body | client | publish (msg/s) | publish CPU (µs/msg) | consume (msg/s) | consume CPU (µs/msg) | max RSS (MiB) | runs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (size, peer, runs) in rows(&results, &peers) {
        let rss = median(
            runs.iter()
                .filter_map(|r| r["max_rss_kib"].as_f64())
                .collect(),
        ) / 1024.0;
        let n = runs
            .first()
            .and_then(|r| r["publish"]["messages"].as_u64())
            .unwrap_or(0);
        println!(
            "| {size} B | {peer} | {} | {} | {} | {} | {rss:.1} | {} × {}k |",
            fmt_rate(med(runs, "publish", "msg_per_s")),
            fmt_us(med(runs, "publish", "cpu_us_per_msg")),
            fmt_rate(med(runs, "consume", "msg_per_s")),
            fmt_us(med(runs, "consume", "cpu_us_per_msg")),
            runs.len(),
            n / 1000,
        );
    }
    println!();
    println!(
        "| body | clients | publish msg/s ratio | publish CPU/msg ratio | consume msg/s ratio | consume CPU/msg ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for (size, by_peer) in &results {
        for (mine, other) in [
            ("carehare", "amqprs"),
            ("carehare", "lapin"),
            ("carehare-recovering", "carehare"),
            ("carehare-recovering", "amqprs"),
            ("carehare-mt", "amqprs"),
            ("carehare-mt", "lapin"),
            ("carehare-plain", "amqprs-ct"),
            ("carehare-plain", "carehare"),
            ("carehare-plain-mt", "amqprs"),
            ("carehare-plain-mt", "amqprs-spawned"),
            ("carehare-plain-mt-main", "amqprs"),
            ("carehare-plain-mt", "carehare-plain-mt-main"),
        ] {
            let Some(ours) = by_peer.get(mine) else {
                continue;
            };
            let Some(theirs) = by_peer.get(other) else {
                continue;
            };
            let r = |phase: &str, field: &str| med(ours, phase, field) / med(theirs, phase, field);
            println!(
                "| {size} B | {mine} vs {other} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
                r("publish", "msg_per_s"),
                r("publish", "cpu_us_per_msg"),
                r("consume", "msg_per_s"),
                r("consume", "cpu_us_per_msg"),
            );
        }
    }
    // The broker's ceiling: each client's rate as a share of the raw
    // peer's (pre-encoded frames, no runtime) in the same rounds.
    if results.values().any(|by_peer| by_peer.contains_key("raw")) {
        println!();
        println!("| body | client | publish msg/s ÷ raw | consume msg/s ÷ raw |");
        println!("|---|---|---|---|");
        for (size, peer, ours) in rows(&results, &peers) {
            let Some(raw) = results[&size].get("raw") else {
                continue;
            };
            if peer == "raw" {
                continue;
            }
            let r = |phase: &str| med(ours, phase, "msg_per_s") / med(raw, phase, "msg_per_s");
            println!(
                "| {size} B | {peer} | {:.2}× | {:.2}× |",
                r("publish"),
                r("consume")
            );
        }
    }
    // Where each client's CPU goes: user space, the kernel, and how often
    // a thread went to sleep waiting for the broker (each sleep costs a
    // context switch and an `epoll_wait`, whatever the messages it ends).
    if results
        .values()
        .flat_map(|by_peer| by_peer.values().flatten())
        .any(|r| r["publish"]["sleeps_per_1k_msg"].is_number())
    {
        println!();
        println!(
            "| body | client | publish user (µs/msg) | publish kernel (µs/msg) | publish sleeps per 1k msg | consume user (µs/msg) | consume kernel (µs/msg) | consume sleeps per 1k msg |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (size, peer, runs) in rows(&results, &peers) {
            if !runs[0]["publish"]["sleeps_per_1k_msg"].is_number() {
                continue;
            }
            let f = |phase: &str, field: &str| fmt_us(med(runs, phase, field));
            let sleeps = |phase: &str| format!("{:.0}", med(runs, phase, "sleeps_per_1k_msg"));
            println!(
                "| {size} B | {peer} | {} | {} | {} | {} | {} | {} |",
                f("publish", "user_us_per_msg"),
                f("publish", "sys_us_per_msg"),
                sleeps("publish"),
                f("consume", "user_us_per_msg"),
                f("consume", "sys_us_per_msg"),
                sleeps("consume"),
            );
        }
    }
    println!();
    println!("carehare measured with {carehare_source}.");

    // The Python clients spend a hundred times the CPU of the Rust ones: a
    // log axis keeps both readable.
    for (name, title, field, unit, log_y) in [
        (
            "throughput",
            "End to end: throughput",
            "msg_per_s",
            "msg/s",
            false,
        ),
        (
            "cpu",
            "End to end: client CPU per message",
            "cpu_us_per_msg",
            "CPU (µs per message)",
            true,
        ),
    ] {
        let mut figure = phase_figure(&results, &peers, title, field, unit);
        figure.log_y = log_y;
        let path = figure
            .write(&o.fig_dir, name)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("wrote {}", path.display());
    }
}

/// Grouped bars of one field: a category per body size and phase, a
/// series per peer, each bar the median of the rounds.
fn phase_figure(
    results: &BTreeMap<usize, BTreeMap<&str, Vec<Value>>>,
    peers: &[&str],
    title: &str,
    field: &str,
    unit: &str,
) -> Figure {
    const PHASES: [&str; 2] = ["publish", "consume"];
    let categories = results
        .keys()
        .flat_map(|&size| PHASES.map(|phase| format!("{} {phase}", size_name(size))))
        .collect();
    let mut figure = Figure::bars(title, "body size and phase", unit, categories);
    for peer in peers {
        let points: Vec<(f64, f64)> = results
            .values()
            .enumerate()
            .flat_map(|(k, by_peer)| {
                PHASES.iter().enumerate().filter_map(move |(j, phase)| {
                    let runs = by_peer.get(peer)?;
                    Some(((2 * k + j) as f64, med(runs, phase, field)))
                })
            })
            .collect();
        if !points.is_empty() {
            figure.push(peer, points);
        }
    }
    figure
}

/// `12 B`, `1 KiB`, `1 MiB`.
fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s.is_multiple_of(1 << 20) => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s.is_multiple_of(1 << 10) => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
