//! The table (markdown) and the plot (SVG) from the runs' JSON lines.

use std::fmt::Write;

use serde_json::Value;

const SCENARIOS: [(&str, &str); 4] = [
    ("restart", "broker restart"),
    ("cut", "link cut (RST)"),
    ("cut-fin", "link cut (FIN)"),
    ("cluster-kill", "cluster node kill"),
];
const CLIENTS: [&str; 2] = ["carehare", "lapin"];

fn of<'a>(runs: &'a [Value], scenario: &str, client: &str) -> Vec<&'a Value> {
    runs.iter()
        .filter(|r| r["scenario"] == scenario && r["client"] == client)
        .collect()
}

fn num(r: &Value, key: &str) -> Option<f64> {
    r[key].as_f64()
}

fn sum(rs: &[&Value], key: &str) -> u64 {
    rs.iter().filter_map(|r| r[key].as_u64()).sum()
}

/// The nearest-rank percentile `p` (0-100) of `v`.
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank - 1])
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or("–".into(), |ms| format!("{:.2} s", ms / 1e3))
}

fn recovered(r: &Value) -> bool {
    r["recovered"].as_bool() == Some(true)
}

/// Values of `key` over the recovered runs.
fn values(rs: &[&Value], key: &str) -> Vec<f64> {
    rs.iter()
        .filter(|r| recovered(r))
        .filter_map(|r| num(r, key))
        .collect()
}

fn p50_max(rs: &[&Value], key: &str) -> String {
    let v = values(rs, key);
    format!(
        "{} / {}",
        secs(percentile(&v, 50.0)),
        secs(percentile(&v, 100.0))
    )
}

pub fn markdown(runs: &[Value], command: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| Scenario | Client | Runs | Recovered | First confirm after reachable, p50 / max | After the port opened, p50 / max | Longest confirm gap, p50 / max | Confirmed lost | Duplicates | Confirms failed, republished |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, title) in SCENARIOS {
        for client in CLIENTS {
            let rs = of(runs, scenario, client);
            if rs.is_empty() {
                continue;
            }
            let ok = rs.iter().filter(|r| recovered(r)).count();
            let dups = sum(&rs, "duplicates") + sum(&rs, "leftover_duplicates");
            let _ = writeln!(
                s,
                "| {title} | {client} | {} | {ok}/{} | {} | {} | {} | **{}** | {} | {} |",
                rs.len(),
                rs.len(),
                p50_max(&rs, "ttr_ms"),
                p50_max(&rs, "ttr_from_open_ms"),
                p50_max(&rs, "longest_gap_ms"),
                sum(&rs, "lost"),
                dups,
                sum(&rs, "confirm_errors") + sum(&rs, "nacks"),
            );
        }
    }
    let _ = writeln!(s);
    for (scenario, title) in SCENARIOS {
        let p50 = |client, key| percentile(&values(&of(runs, scenario, client), key), 50.0);
        let ratio = |key| match (p50("lapin", key), p50("carehare", key)) {
            (Some(l), Some(c)) if c > 0.0 => Some((l / c, l, c)),
            _ => None,
        };
        let (Some(open), Some(gap)) = (ratio("ttr_from_open_ms"), ratio("longest_gap_ms")) else {
            continue;
        };
        let _ = writeln!(
            s,
            "- {title}, medians, lapin against carehare: first confirm after the port opened {:.1}× ({} against {}); longest confirm gap {:.1}× ({} against {}).",
            open.0,
            secs(Some(open.1)),
            secs(Some(open.2)),
            gap.0,
            secs(Some(gap.1)),
            secs(Some(gap.2)),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Every run:");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| Scenario | Client | Run | Node | Recovered | First confirm after reachable | After the port opened | First delivery after reachable | Longest confirm gap | Published | Confirmed | Lost | Duplicates | Confirms failed | Left in queue | Outage (fault → reachable) |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (scenario, title) in SCENARIOS {
        for client in CLIENTS {
            for r in of(runs, scenario, client) {
                let outage = match (num(r, "reachable_ms"), num(r, "fault_ms")) {
                    (Some(a), Some(b)) => Some(a - b),
                    _ => None,
                };
                let _ = writeln!(
                    s,
                    "| {title} | {client} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r["run"],
                    r["node"].as_u64().map_or("–".into(), |n| n.to_string()),
                    if recovered(r) { "yes" } else { "**no**" },
                    secs(num(r, "ttr_ms")),
                    secs(num(r, "ttr_from_open_ms")),
                    secs(num(r, "ttr_delivery_ms")),
                    secs(num(r, "longest_gap_ms").filter(|_| recovered(r))),
                    r["published"],
                    r["confirmed"],
                    r["lost"],
                    r["duplicates"].as_u64().unwrap_or(0)
                        + r["leftover_duplicates"].as_u64().unwrap_or(0),
                    r["confirm_errors"].as_u64().unwrap_or(0) + r["nacks"].as_u64().unwrap_or(0),
                    r["leftover"],
                    secs(outage),
                );
            }
        }
    }
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r["error"]
                .as_str()
                .map(|e| format!("{} {} run {}: {e}", r["client"], r["scenario"], r["run"]))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Runs that failed:");
        for e in errors {
            let _ = writeln!(s, "- {}", e.replace('"', ""));
        }
    }
    if let Some(command) = command {
        let _ = writeln!(s);
        let _ = writeln!(s, "Produced by `{command}`.");
    }
    s
}

/// Time from the broker's port accepting connections again to the first
/// confirm, one dot per run, a panel per scenario; the 1 s target dashed.
pub fn svg(runs: &[Value]) -> String {
    let (w, h) = (720.0, 360.0);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 60.0);
    const KEY: &str = "ttr_from_open_ms";
    let all: Vec<f64> = runs.iter().filter_map(|r| num(r, KEY)).collect();
    let hi = (all.iter().copied().fold(1000.0, f64::max) / 1000.0)
        .ceil()
        .max(1.0);
    let lo = (all.iter().copied().fold(0.0, f64::min) / 1000.0)
        .floor()
        .min(0.0);
    let plot_h = h - top - bottom;
    let y = |secs: f64| top + plot_h * (hi - secs) / (hi - lo);
    let panel_w = (w - left - right) / SCENARIOS.len() as f64;
    let color = |c: &str| {
        if c == "carehare" {
            "#d9480f"
        } else {
            "#1c7ed6"
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">First confirm after the broker's port opened again (s), one dot per run</text>"#,
        w / 2.0
    );
    // Y axis: a line and a label every second (or every few when tall).
    let step = ((hi - lo) / 10.0).ceil().max(1.0);
    let mut t = lo;
    while t <= hi + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e9ecef"/><text x="{}" y="{:.1}" text-anchor="end">{t}</text>"##,
            w - right,
            left - 6.0,
            y(t) + 4.0,
            yy = y(t),
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#2b8a3e" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="#2b8a3e">1 s</text>"##,
        w - right,
        w - right - 24.0,
        y(1.0) - 4.0,
        yy = y(1.0),
    );
    for (i, (scenario, title)) in SCENARIOS.iter().enumerate() {
        let x0 = left + panel_w * i as f64;
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" x2="{x0}" y1="{top}" y2="{}" stroke="#adb5bd"/><text x="{}" y="{}" text-anchor="middle">{title}</text>"##,
            h - bottom,
            x0 + panel_w / 2.0,
            h - bottom + 36.0,
        );
        for (j, client) in CLIENTS.iter().enumerate() {
            let cx = x0 + panel_w * (j as f64 + 1.0) / 3.0;
            let _ = writeln!(
                s,
                r#"<text x="{cx}" y="{}" text-anchor="middle" fill="{}">{client}</text>"#,
                h - bottom + 18.0,
                color(client)
            );
            for (k, r) in of(runs, scenario, client).iter().enumerate() {
                // Spread a column's dots a little so equal values show.
                let dx = (k as f64 - 2.0) * 4.0;
                match num(r, KEY).filter(|_| recovered(r)) {
                    Some(ms) => {
                        let _ = writeln!(
                            s,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}" fill-opacity="0.7"/>"#,
                            cx + dx,
                            y(ms / 1e3),
                            color(client)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{}">✕</text>"#,
                            cx + dx,
                            top + 12.0,
                            color(client)
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">✕ at the top: not recovered within the run's deadline. Generated by benches/recovery.sh.</text>"#,
        w / 2.0,
        h - 8.0
    );
    s.push_str("</svg>\n");
    s
}
