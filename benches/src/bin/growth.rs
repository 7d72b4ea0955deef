//! How cost grows: runs `carehare perf` (the CLI, built
//! `--release`) over one axis at a time and prints a markdown table per
//! axis: throughput in and out, client CPU per message, and the client's
//! peak RSS. Runs are concurrent (publish and consume at once, so the
//! queue stays short and the broker's memory flat) unless noted.
//!
//! Each axis is also a figure, `fig-growth-<axis>.json` (throughput, or
//! the client's peak RSS for the message count, against the axis), and
//! its table is headed by the SVG the `plots` binary draws from it.
//!
//! ```text
//! cargo run --release --bin growth -- [--carehare-cli ../target/release/carehare] [--quick]
//!     [--fig-dir target/bench]
//! ```
//!
//! Every run appends its JSON line to `target/growth-results.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use carehare_benches::figure::{Figure, Kind, default_dir};
use serde_json::Value;

/// In-flight bytes, at most, for the big-body runs: the confirm window and
/// the prefetch shrink as bodies grow, so a 16 MiB run holds ~32 MiB.
const IN_FLIGHT_BYTES: usize = 32 << 20;

struct Run {
    label: String,
    /// Where the run sits on its axis.
    x: f64,
    args: Vec<String>,
}

/// What an axis' figure shows against it.
#[derive(Clone, Copy, PartialEq)]
enum Shows {
    /// msg/s published and consumed.
    Throughput,
    /// The client's peak RSS.
    Memory,
}

/// One axis: its runs, its table and its figure.
struct Axis {
    /// The figure is `fig-growth-<name>.json`, drawn as `bench-growth-<name>.svg`.
    name: &'static str,
    title: &'static str,
    /// The figure's title: shorter than the table's.
    chart: &'static str,
    x_label: &'static str,
    shows: Shows,
    log_y: bool,
    runs: Vec<Run>,
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

/// Runs an axis; prints its figure's image and its table; writes the
/// figure file.
fn measure(cli: &PathBuf, axis: Axis, fig_dir: &Path) {
    let title = axis.title;
    println!("### {title}\n");
    println!("![{title}](bench-growth-{}.svg)\n", axis.name);
    println!("| run | flags | publish (msg/s) | consume (msg/s) | CPU (µs/msg) | max RSS (MiB) |");
    println!("|---|---|---|---|---|---|");
    let (mut published, mut consumed, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for r in &axis.runs {
        eprintln!("growth: {title}: {}", r.label);
        let Some(v) = run(cli, r) else {
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
        let mib = v["max_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        println!(
            "| {} | `{}` | {} | {} | {:.2} | {mib:.1} |",
            r.label,
            r.args.join(" "),
            rate(f("publish", "msg_per_s")),
            rate(f("consume", "msg_per_s")),
            f("consume", "cpu_us_per_msg"),
        );
        published.push((r.x, f("publish", "msg_per_s")));
        consumed.push((r.x, f("consume", "msg_per_s")));
        rss.push((r.x, mib));
    }
    println!();

    let y_label = match axis.shows {
        Shows::Throughput => "msg/s",
        Shows::Memory => "client max RSS (MiB)",
    };
    let mut figure = Figure::new(Kind::Lines, axis.chart, axis.x_label, y_label);
    // Every axis steps geometrically.
    figure.log_x = true;
    figure.log_y = axis.log_y;
    match axis.shows {
        Shows::Throughput => {
            figure.push("publish", published);
            figure.push("consume", consumed);
        }
        Shows::Memory => figure.push("carehare perf", rss),
    }
    if figure.points().next().is_none() {
        eprintln!("growth: {title}: every run failed, no figure");
        return;
    }
    let name = format!("growth-{}", axis.name);
    figure
        .write(fig_dir, &name)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn main() {
    let mut cli = PathBuf::from("../target/release/carehare");
    let mut quick = false;
    let mut fig_dir = default_dir();
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--carehare-cli" => cli = argv.next().expect("--carehare-cli PATH").into(),
            "--quick" => quick = true,
            "--fig-dir" => fig_dir = argv.next().expect("--fig-dir DIR").into(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        cli.exists(),
        "{} not built: cargo build --release -p carehare-cli",
        cli.display()
    );
    let n = if quick { 20_000 } else { 100_000 };

    let windows = [1usize, 10, 100, 1000];
    let sizes: &[(usize, &str)] = &[
        (12, "12 B"),
        (1024, "1 KiB"),
        (16 << 10, "16 KiB"),
        (128 << 10, "128 KiB"),
        (1 << 20, "1 MiB"),
        (16 << 20, "16 MiB"),
    ];
    let counts: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let axes = [
        Axis {
            name: "window",
            title: "In-flight window (12 B, concurrent)",
            chart: "How throughput grows with the confirm window (12 B)",
            x_label: "confirm window (messages)",
            shows: Shows::Throughput,
            log_y: false,
            runs: windows
                .into_iter()
                .map(|w| {
                    // A window of 1 is a round trip per message: fewer of them.
                    let count = if w == 1 { n / 10 } else { n };
                    Run {
                        label: format!("window {w}"),
                        x: w as f64,
                        args: args(&format!("--count {count} --size 12 --confirm {w}")),
                    }
                })
                .collect(),
        },
        Axis {
            name: "body",
            title: "Body size (concurrent; window and prefetch shrink to keep about 32 MiB in flight)",
            chart: "Throughput against body size (about 32 MiB in flight)",
            x_label: "body size (bytes)",
            shows: Shows::Throughput,
            // From tens of thousands of msg/s down to tens.
            log_y: true,
            runs: sizes
                .iter()
                .map(|&(size, name)| {
                    let window = (IN_FLIGHT_BYTES / size).clamp(1, 1000);
                    let prefetch = (IN_FLIGHT_BYTES / size).clamp(1, 300);
                    let ack = prefetch.min(30);
                    // About 1 GiB through the broker at most per run.
                    let count = ((1usize << 30) / size).clamp(64, n);
                    Run {
                        label: name.to_string(),
                        x: size as f64,
                        args: args(&format!(
                            "--count {count} --size {size} --confirm {window} --prefetch {prefetch} --multi-ack-every {ack}"
                        )),
                    }
                })
                .collect(),
        },
        Axis {
            name: "consumers",
            title: "Consumers on one connection (12 B, one queue, concurrent)",
            chart: "Throughput against consumers on one connection (12 B)",
            x_label: "consumers",
            shows: Shows::Throughput,
            log_y: false,
            runs: [1usize, 10, 100]
                .into_iter()
                .map(|c| Run {
                    label: format!("{c} consumers"),
                    x: c as f64,
                    args: args(&format!("--count {n} --size 12 --consumers {c}")),
                })
                .collect(),
        },
        Axis {
            name: "connections",
            title: "Connections (12 B; a producer, a consumer and a queue per connection, concurrent)",
            chart: "Throughput against connections (12 B, a queue each)",
            x_label: "connections",
            shows: Shows::Throughput,
            log_y: false,
            runs: [1usize, 4, 16]
                .into_iter()
                .map(|c| Run {
                    label: format!("{c} connections"),
                    x: c as f64,
                    args: args(&format!(
                        "--count {n} --size 12 --connections {c} --producers {c} --consumers {c} --queues {c}"
                    )),
                })
                .collect(),
        },
        Axis {
            name: "memory",
            title: "Memory against message count (12 B, concurrent)",
            chart: "Client memory against messages moved (12 B)",
            x_label: "messages",
            shows: Shows::Memory,
            log_y: false,
            runs: counts
                .iter()
                .map(|&c| Run {
                    label: format!("{c} messages"),
                    x: c as f64,
                    args: args(&format!("--count {c} --size 12")),
                })
                .collect(),
        },
    ];
    for axis in axes {
        measure(&cli, axis, &fig_dir);
    }
}
