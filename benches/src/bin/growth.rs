//! How cost grows: runs `carehare perf` (the CLI, built
//! `--release`) over one axis at a time and prints a markdown table per
//! axis: throughput in and out, client CPU per message, and the client's
//! peak RSS. Runs are concurrent (publish and consume at once, so the
//! queue stays short and the broker's memory flat) unless noted.
//!
//! ```text
//! cargo run --release --bin growth -- [--carehare-cli ../target/release/carehare] [--quick]
//! ```
//!
//! Every run appends its JSON line to `target/growth-results.jsonl`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// In-flight bytes, at most, for the big-body runs: the confirm window and
/// the prefetch shrink as bodies grow, so a 16 MiB run holds ~32 MiB.
const IN_FLIGHT_BYTES: usize = 32 << 20;

struct Run {
    label: String,
    args: Vec<String>,
}

fn run(cli: &PathBuf, r: &Run) -> Option<Value> {
    let out = Command::new(cli)
        .args(["perf", "--no-recovery"])
        .args(&r.args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run carehare perf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    match (out.status.success(), line) {
        (true, Some(line)) => {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open("target/growth-results.jsonl")
                .expect("results log");
            writeln!(log, "{line}").expect("results log");
            serde_json::from_str(line).ok()
        }
        _ => {
            eprintln!(
                "{} failed ({}): {}",
                r.label,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
    }
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn table(title: &str, cli: &PathBuf, runs: Vec<Run>) {
    println!("### {title}\n");
    println!("| run | flags | publish (msg/s) | consume (msg/s) | CPU (µs/msg) | max RSS (MiB) |");
    println!("|---|---|---|---|---|---|");
    for r in runs {
        eprintln!("growth: {title}: {}", r.label);
        let Some(v) = run(cli, &r) else {
            println!("| {} | `{}` | failed | | | |", r.label, r.args.join(" "));
            continue;
        };
        let f = |p: &str, k: &str| v[p][k].as_f64().unwrap_or(f64::NAN);
        let rate = |x: f64| {
            if x >= 10_000.0 {
                format!("{:.1}k", x / 1000.0)
            } else {
                format!("{x:.0}")
            }
        };
        println!(
            "| {} | `{}` | {} | {} | {:.2} | {:.1} |",
            r.label,
            r.args.join(" "),
            rate(f("publish", "msg_per_s")),
            rate(f("consume", "msg_per_s")),
            f("consume", "cpu_us_per_msg"),
            v["max_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0,
        );
    }
    println!();
}

fn main() {
    let mut cli = PathBuf::from("../target/release/carehare");
    let mut quick = false;
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--carehare-cli" => cli = argv.next().expect("--carehare-cli PATH").into(),
            "--quick" => quick = true,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        cli.exists(),
        "{} not built: cargo build --release -p carehare-cli",
        cli.display()
    );
    let n = if quick { 20_000 } else { 100_000 };

    table(
        "In-flight window (12 B, concurrent)",
        &cli,
        [1usize, 10, 100, 1000]
            .into_iter()
            .map(|w| {
                // A window of 1 is a round trip per message: fewer of them.
                let count = if w == 1 { n / 10 } else { n };
                Run {
                    label: format!("window {w}"),
                    args: args(&format!("--count {count} --size 12 --confirm {w}")),
                }
            })
            .collect(),
    );

    let sizes: &[(usize, &str)] = &[
        (12, "12 B"),
        (1024, "1 KiB"),
        (16 << 10, "16 KiB"),
        (128 << 10, "128 KiB"),
        (1 << 20, "1 MiB"),
        (16 << 20, "16 MiB"),
    ];
    table(
        "Body size (concurrent; window and prefetch shrink to keep about 32 MiB in flight)",
        &cli,
        sizes
            .iter()
            .map(|&(size, name)| {
                let window = (IN_FLIGHT_BYTES / size).clamp(1, 1000);
                let prefetch = (IN_FLIGHT_BYTES / size).clamp(1, 300);
                let ack = prefetch.min(30);
                // About 1 GiB through the broker at most per run.
                let count = ((1usize << 30) / size).clamp(64, n);
                Run {
                    label: name.to_string(),
                    args: args(&format!(
                        "--count {count} --size {size} --confirm {window} --prefetch {prefetch} --multi-ack-every {ack}"
                    )),
                }
            })
            .collect(),
    );

    table(
        "Consumers on one connection (12 B, one queue, concurrent)",
        &cli,
        [1usize, 10, 100]
            .into_iter()
            .map(|c| Run {
                label: format!("{c} consumers"),
                args: args(&format!("--count {n} --size 12 --consumers {c}")),
            })
            .collect(),
    );

    table(
        "Connections (12 B; a producer, a consumer and a queue per connection, concurrent)",
        &cli,
        [1usize, 4, 16]
            .into_iter()
            .map(|c| Run {
                label: format!("{c} connections"),
                args: args(&format!(
                    "--count {n} --size 12 --connections {c} --producers {c} --consumers {c} --queues {c}"
                )),
            })
            .collect(),
    );

    let counts: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    table(
        "Memory against message count (12 B, concurrent)",
        &cli,
        counts
            .iter()
            .map(|&c| Run {
                label: format!("{c} messages"),
                args: args(&format!("--count {c} --size 12")),
            })
            .collect(),
    );
}
