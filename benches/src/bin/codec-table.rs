//! Prints the codec benchmark's results (criterion's
//! `target/criterion/*/new/estimates.json`, as left by the last
//! `cargo bench --bench codec`) as a markdown table with ratios.

use std::path::Path;

use serde_json::Value;

fn estimate(dir: &Path) -> Option<(f64, f64)> {
    let read = |f: &str| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join("new").join(f)).ok()?).ok()
    };
    let est = read("estimates.json")?;
    let bench = read("benchmark.json")?;
    // Nanoseconds per iteration, and elements per iteration.
    let ns = est["mean"]["point_estimate"].as_f64()?;
    let elems = bench["throughput"]["Elements"].as_f64().unwrap_or(1.0);
    Some((ns, elems))
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else {
        format!("{:.0} K", per_s / 1e3)
    }
}

fn main() {
    let root = Path::new("target/criterion");
    println!("| case | carehare (msg/s) | amq-protocol (msg/s) | carehare / amq-protocol |");
    println!("|---|---|---|---|");
    for op in ["decode", "encode"] {
        for size in ["12B", "1KiB", "128KiB"] {
            let group = root.join(format!("{op}_{size}"));
            let (Some((ours, n)), Some((theirs, m))) = (
                estimate(&group.join("carehare")),
                estimate(&group.join("amq-protocol")),
            ) else {
                continue;
            };
            let ours = n * 1e9 / ours;
            let theirs = m * 1e9 / theirs;
            println!(
                "| {op}, {} body | {} | {} | {:.2}× |",
                size.replace("B", " B").replace("Ki B", " KiB"),
                rate(ours),
                rate(theirs),
                ours / theirs
            );
        }
    }
}
