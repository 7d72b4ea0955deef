//! Unloaded latency, every client side by side: R rounds, each running
//! every `latency-<client>` program once, in an order that rotates each
//! round. Prints a markdown table of the round-trip percentiles (medians
//! of the rounds) and their ratios to amqprs; writes the CDF of every
//! client's pooled round trips to `fig-latency-cdf.json`; appends each
//! run's percentiles to `target/latency-results.jsonl`.
//!
//! ```text
//! cargo run --release --bin latency -- [--rounds 3] [--round-trips 10000]
//!     [--warmup 500] [--size 12] [--peers carehare,amqprs,lapin]
//!     [--url URL] [--fig-dir target/bench]
//! ```
//!
//! The round trip is defined in `carehare_benches::latency`. A client name
//! ending in `-ct` or `-mt` runs that client's program on tokio's
//! current-thread or multi-threaded runtime instead of its default (e.g.
//! `lapin-ct` beside the current-thread carehare and amqprs).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use carehare_benches::e2e::{median, own_bin, thousands};
use carehare_benches::figure::{Figure, Kind, default_dir};
use carehare_benches::latency::{cdf, quantile};
use serde_json::Value;

/// The table's columns: a name and a quantile.
const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

struct Opts {
    rounds: usize,
    round_trips: usize,
    warmup: usize,
    size: usize,
    peers: Vec<String>,
    url: String,
    fig_dir: PathBuf,
}

fn parse() -> Opts {
    let mut o = Opts {
        rounds: 3,
        round_trips: 10_000,
        warmup: 500,
        size: 12,
        peers: ["carehare", "amqprs", "lapin"].map(String::from).to_vec(),
        url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        fig_dir: default_dir(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => o.rounds = v.parse().expect("--rounds"),
            "--round-trips" => o.round_trips = v.parse().expect("--round-trips"),
            "--warmup" => o.warmup = v.parse().expect("--warmup"),
            "--size" => o.size = v.parse().expect("--size"),
            "--peers" => o.peers = v.split(',').map(String::from).collect(),
            "--url" => o.url = v,
            "--fig-dir" => o.fig_dir = v.into(),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

/// One run of a client's program.
struct Run {
    runtime: String,
    /// Round trips in µs, sorted.
    sorted_us: Vec<f64>,
}

fn run(o: &Opts, peer: &str) -> Option<Run> {
    let (program, runtime) = match (peer.strip_suffix("-ct"), peer.strip_suffix("-mt")) {
        (Some(client), _) => (client, Some("current_thread")),
        (_, Some(client)) => (client, Some("multi_thread")),
        _ => (peer, None),
    };
    let mut command = Command::new(own_bin(&format!("latency-{program}")));
    if let Some(runtime) = runtime {
        command.env("PEER_RUNTIME", runtime);
    }
    let out = command
        .args(["--round-trips", &o.round_trips.to_string()])
        .args(["--warmup", &o.warmup.to_string()])
        .args(["--size", &o.size.to_string()])
        .args(["--url", &o.url])
        .output()
        .expect("spawn a latency program");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let (true, Some(line)) = (out.status.success(), line) else {
        eprintln!(
            "{peer} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    };
    let v: Value = serde_json::from_str(line).expect("a latency program printed bad JSON");
    let mut sorted_us: Vec<f64> = v["samples_ns"]
        .as_array()
        .expect("samples_ns")
        .iter()
        .map(|x| x.as_f64().expect("a number") / 1000.0)
        .collect();
    sorted_us.sort_by(f64::total_cmp);
    let runtime = v["runtime"].as_str().unwrap_or("?").to_string();
    // The raw samples stay out of the log: its percentiles are enough.
    let summary: serde_json::Map<String, Value> = PERCENTILES
        .iter()
        .map(|&(name, p)| (format!("{name}_us"), quantile(&sorted_us, p).into()))
        .collect();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("target/latency-results.jsonl")
        .expect("results log");
    let record = serde_json::json!({
        "tool": peer, "runtime": runtime, "round_trips": v["round_trips"],
        "warmup": v["warmup"], "size": v["size"], "latency": summary,
    });
    writeln!(log, "{record}").expect("results log");
    Some(Run { runtime, sorted_us })
}

fn main() {
    let o = parse();
    let mut results: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 0..o.rounds {
        for i in 0..o.peers.len() {
            let peer = o.peers[(i + round) % o.peers.len()].as_str();
            eprintln!("round {} / {}: {peer}", round + 1, o.rounds);
            if let Some(r) = run(&o, peer) {
                results.entry(peer).or_default().push(r);
            }
        }
    }
    // Per client, per percentile: the median of the rounds.
    let medians: BTreeMap<&str, Vec<f64>> = results
        .iter()
        .map(|(&peer, runs)| {
            let per = PERCENTILES
                .iter()
                .map(|&(_, p)| median(runs.iter().map(|r| quantile(&r.sorted_us, p)).collect()))
                .collect();
            (peer, per)
        })
        .collect();

    let names: Vec<&str> = PERCENTILES.iter().map(|(n, _)| *n).collect();
    println!(
        "| client | runtime | {} | runs |",
        cells(names.iter().map(|n| format!("{n} (µs)")))
    );
    println!("|---|---|{}---|", "---|".repeat(names.len()));
    for peer in &o.peers {
        let (Some(runs), Some(m)) = (results.get(peer.as_str()), medians.get(peer.as_str())) else {
            continue;
        };
        println!(
            "| {peer} | {} | {} | {} × {} |",
            runs[0].runtime.replace('_', "-"),
            cells(m.iter().map(|&x| micros(x))),
            runs.len(),
            thousands(o.round_trips as u64),
        );
    }
    if let Some(theirs) = medians.get("amqprs") {
        println!();
        println!(
            "| client | {} |",
            cells(names.iter().map(|n| format!("{n} ratio")))
        );
        println!("|---|{}", "---|".repeat(names.len()));
        for peer in o.peers.iter().filter(|p| *p != "amqprs") {
            let Some(ours) = medians.get(peer.as_str()) else {
                continue;
            };
            let ratios = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| format!("{:.2}×", a / b));
            println!("| {peer} vs amqprs | {} |", cells(ratios));
        }
    }
    println!();
    println!(
        "Medians of {} round{} of {} round trips each ({} warm-up round trips first), {} B bodies; ratios below 1 are faster than amqprs.",
        o.rounds,
        if o.rounds == 1 { "" } else { "s" },
        thousands(o.round_trips as u64),
        o.warmup,
        o.size
    );

    // Every round's round trips together: a tail percentile is then the
    // share of slow round trips over all rounds, where a round's own
    // tail says mostly whether that round caught one of the machine's
    // stalls (slow round trips come in runs).
    let pooled: BTreeMap<&str, Vec<f64>> = results
        .iter()
        .map(|(&peer, runs)| {
            let mut all: Vec<f64> = runs
                .iter()
                .flat_map(|r| r.sorted_us.iter().copied())
                .collect();
            all.sort_by(f64::total_cmp);
            (peer, all)
        })
        .collect();
    let pooled_quantiles = |peer: &str| -> Option<Vec<f64>> {
        let all = pooled.get(peer)?;
        Some(PERCENTILES.iter().map(|&(_, p)| quantile(all, p)).collect())
    };
    println!();
    println!(
        "| client (all rounds pooled) | {} |",
        cells(names.iter().map(|n| format!("{n} (µs)")))
    );
    println!("|---|{}", "---|".repeat(names.len()));
    for peer in &o.peers {
        if let Some(q) = pooled_quantiles(peer) {
            println!("| {peer} | {} |", cells(q.iter().map(|&x| micros(x))));
        }
    }
    if let Some(theirs) = pooled_quantiles("amqprs") {
        for peer in o.peers.iter().filter(|p| *p != "amqprs") {
            let Some(ours) = pooled_quantiles(peer) else {
                continue;
            };
            let ratios = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| format!("{:.2}×", a / b));
            println!("| {peer} ÷ amqprs | {} |", cells(ratios));
        }
    }

    let mut figure = Figure::new(
        Kind::Cdf,
        &format!("Unloaded round trip, publish to delivery ({} B)", o.size),
        "round trip (µs)",
        "fraction of round trips",
    );
    figure.log_x = true;
    for peer in &o.peers {
        let Some(all) = pooled.get(peer.as_str()) else {
            continue;
        };
        figure.push(peer, cdf(all));
    }
    if figure.series.is_empty() {
        eprintln!("no client ran: no figure");
        return;
    }
    let path = figure
        .write(&o.fig_dir, "latency-cdf")
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("wrote {}", path.display());
}

/// `85.3` under a millisecond, `12345` above: the tenth of a µs is noise there.
fn micros(x: f64) -> String {
    if x < 1000.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// Table cells: `a | b | c`.
fn cells(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(" | ")
}
