//! The report (markdown) and the plot (SVG) from a soak's JSON.

use std::fmt::Write;

use carehare_benches::e2e::thousands;
use serde_json::Value;

pub fn from_file(
    json: Option<&str>,
    svg: Option<&str>,
    command: Option<&str>,
) -> Result<(), String> {
    let path = json.ok_or("--json FILE")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let soak: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    print!("{}", markdown(&soak, command));
    if let Some(svg_path) = svg {
        std::fs::write(svg_path, self::svg(&soak)).map_err(|e| format!("{svg_path}: {e}"))?;
    }
    Ok(())
}

fn mmss(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn secs(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |s| format!("{s:.2} s"))
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |m| {
        if m >= 1000.0 {
            format!("{:.2} s", m / 1e3)
        } else {
            format!("{m:.1} ms")
        }
    })
}

pub fn markdown(soak: &Value, command: Option<&str>) -> String {
    let t = &soak["totals"];
    let u = &soak["usage"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut s = String::new();
    if let Some(command) = command {
        let _ = writeln!(s, "Command: `{command}`\n");
    }
    let end_s = u["end"]["t_s"].as_f64().unwrap_or(0.0);
    let _ = writeln!(
        s,
        "{} of {} msg/s (persistent, 16-byte bodies, publisher confirms; a consumer acking each message), heartbeat {} s, {} faults, seed {}.\n",
        mmss(end_s),
        thousands(n(&soak["rate"])),
        n(&soak["heartbeat_s"]),
        soak["faults"].as_array().map_or(0, Vec::len),
        n(&soak["seed"]),
    );
    let _ = writeln!(s, "| Figure | Value | Target |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| Confirmed messages lost | **{}** of {} confirmed | 0 |",
        thousands(n(&t["lost"])),
        thousands(n(&t["confirmed"]))
    );
    let _ = writeln!(
        s,
        "| Duplicates (consumed more than once) | {} of {} deliveries{} | counted |",
        thousands(n(&t["duplicates"])),
        thousands(n(&t["delivered"]) + n(&t["drained"])),
        match n(&t["drained"]) {
            0 => String::new(),
            d => format!(", {} of them left in the queue and drained", thousands(d)),
        }
    );
    let _ = writeln!(
        s,
        "| Published, never confirmed | {} of {} | – |",
        thousands(n(&t["unconfirmed"])),
        thousands(n(&t["published"]))
    );
    let rss = |k: &str| u[k]["rss_kib"].as_u64();
    let at = |k: &str| mmss(u[k]["t_s"].as_f64().unwrap_or(0.0));
    let _ = writeln!(
        s,
        "| RSS: connected / {} / {} / end ({}) | {} / {} / {} / {} | – |",
        at("warm"),
        at("baseline"),
        at("end"),
        mib(rss("connected")),
        mib(rss("warm")),
        mib(rss("baseline")),
        mib(rss("end")),
    );
    let heap = |k: &str| u[k]["heap_kib"].as_u64();
    if heap("end").is_some() {
        let _ = writeln!(
            s,
            "| Heap in use (malloc): connected / {} / {} / end | {} / {} / {} / {} | – |",
            at("warm"),
            at("baseline"),
            mib(heap("connected")),
            mib(heap("warm")),
            mib(heap("baseline")),
            mib(heap("end")),
        );
    }
    if let (Some(b), Some(e)) = (rss("baseline"), rss("end")) {
        let _ = writeln!(
            s,
            "| RSS growth from {} to the end | {:+} KiB | ≤ 1,024 KiB |",
            at("baseline"),
            e as i64 - b as i64
        );
    }
    for (key, what) in [
        ("fds", "File descriptors"),
        ("threads", "Threads"),
        ("tasks", "Tokio tasks"),
    ] {
        let _ = writeln!(
            s,
            "| {what}: {} / end | {} / {} | equal |",
            at("warm"),
            u["warm"][key],
            u["end"][key]
        );
    }
    let _ = writeln!(s);

    let faults = soak["faults"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        s,
        "| Window | Messages | Faults in it | p50 latency | p99 latency | max |\n|---|---|---|---|---|---|"
    );
    for w in soak["latency"].as_array().into_iter().flatten() {
        let (from, to) = (
            w["from_s"].as_f64().unwrap_or(0.0),
            w["to_s"].as_f64().unwrap_or(0.0),
        );
        // Deliveries after the end, while the last confirms settle.
        if from >= end_s {
            continue;
        }
        let inside = faults
            .iter()
            .filter(|f| {
                let at = f["start_s"].as_f64().unwrap_or(-1.0);
                at >= from && at < to
            })
            .count();
        let _ = writeln!(
            s,
            "| {}–{} | {} | {} | {} | {} | {} |",
            mmss(from),
            mmss(to),
            thousands(n(&w["messages"])),
            inside,
            ms(&w["p50_ms"]),
            ms(&w["p99_ms"]),
            ms(&w["max_ms"]),
        );
    }
    let _ = writeln!(s);

    let _ = writeln!(
        s,
        "| # | At | Fault | Flowing again after | after the path was back | Downtime, publisher / consumer |\n|---|---|---|---|---|---|"
    );
    for (i, f) in faults.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} |{}",
            i + 1,
            mmss(f["start_s"].as_f64().unwrap_or(0.0)),
            f["kind"].as_str().unwrap_or("?"),
            secs(&f["recovery_s"]),
            secs(&f["after_healed_s"]),
            secs(&f["publisher_downtime_s"]),
            secs(&f["consumer_downtime_s"]),
            f["error"]
                .as_str()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default(),
        );
    }
    s
}

/// Msg/s (confirmed and consumed, 10 s averages) above, RSS below, a
/// line at each fault.
pub fn svg(soak: &Value) -> String {
    let samples: Vec<Vec<f64>> = soak["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            row.as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_f64().unwrap_or(0.0))
                .collect()
        })
        .filter(|r: &Vec<f64>| r.len() >= 6)
        .collect();
    let (w, h) = (760.0, 460.0);
    let (left, right, top) = (64.0, 20.0, 40.0);
    let panel = 150.0;
    let gap = 50.0;
    let end = samples.last().map_or(60.0, |r| r[0]).max(60.0);
    let x = |t: f64| left + (w - left - right) * t / end;
    // Rates over 10-second steps.
    const STEP: usize = 10;
    let mut rates = Vec::new();
    for pair in samples.windows(STEP + 1).step_by(STEP) {
        let (a, b) = (&pair[0], &pair[STEP]);
        let dt = (b[0] - a[0]).max(1e-9);
        rates.push(((a[0] + b[0]) / 2.0, (b[2] - a[2]) / dt, (b[3] - a[3]) / dt));
    }
    let rate_hi = rates
        .iter()
        .map(|r| r.1.max(r.2))
        .fold(1000.0, f64::max)
        .div_euclid(1000.0)
        * 1000.0
        + 1000.0;
    let rss: Vec<(f64, f64)> = samples.iter().map(|r| (r[0], r[5] / 1024.0)).collect();
    let heap: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|r| Some((r[0], r.get(9)? / 1024.0)))
        .collect();
    let memory = || rss.iter().chain(&heap).map(|r| r.1);
    let rss_hi = memory().fold(1.0, f64::max).ceil() + 1.0;
    let rss_lo = (memory().fold(f64::MAX, f64::min).floor() - 1.0).max(0.0);
    let y_rate = |v: f64| top + panel * (1.0 - v / rate_hi);
    let top2 = top + panel + gap;
    let y_rss = |v: f64| top2 + panel * (1.0 - (v - rss_lo) / (rss_hi - rss_lo).max(1e-9));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Soak: messages per second (10 s averages) and the client's memory; a line per fault</text>"#,
        w / 2.0
    );
    // Faults, behind the data.
    for f in soak["faults"].as_array().into_iter().flatten() {
        let at = f["start_s"].as_f64().unwrap_or(0.0);
        let kind = f["kind"].as_str().unwrap_or("");
        let color = fault_color(kind);
        for y0 in [top, top2] {
            let _ = writeln!(
                s,
                r#"<line x1="{xx:.1}" x2="{xx:.1}" y1="{y0}" y2="{}" stroke="{color}" stroke-width="1.5" opacity="0.7"/>"#,
                y0 + panel,
                xx = x(at)
            );
        }
    }
    // Axes and grid.
    for (y0, label) in [(top, "msg/s"), (top2, "MiB")] {
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{y0}" width="{}" height="{panel}" fill="none" stroke="#adb5bd"/><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{label}</text>"##,
            w - left - right,
            y0 + panel / 2.0,
            y0 + panel / 2.0
        );
    }
    for i in 0..=4 {
        let v = rate_hi * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e9ecef"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            w - right,
            left - 6.0,
            y_rate(v) + 4.0,
            yy = y_rate(v)
        );
        let v = rss_lo + (rss_hi - rss_lo) * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e9ecef"/><text x="{}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            w - right,
            left - 6.0,
            y_rss(v) + 4.0,
            yy = y_rss(v)
        );
    }
    let minutes = (end / 60.0).floor() as u64;
    let tick = [1, 2, 5, 10, 15, 30, 60]
        .into_iter()
        .find(|t| minutes / t <= 12)
        .unwrap_or(60);
    for m in (0..=minutes).step_by(tick as usize) {
        let xx = x(m as f64 * 60.0);
        for y0 in [top, top2] {
            let _ = writeln!(
                s,
                r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{m}</text>"#,
                y0 + panel + 16.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">minutes</text>"#,
        left + (w - left - right) / 2.0,
        top2 + panel + 32.0
    );
    let path = |pts: &mut dyn Iterator<Item = (f64, f64)>| {
        let mut d = String::new();
        for (i, (px, py)) in pts.enumerate() {
            let _ = write!(d, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
        }
        d
    };
    let confirmed = path(&mut rates.iter().map(|r| (x(r.0), y_rate(r.1))));
    let consumed = path(&mut rates.iter().map(|r| (x(r.0), y_rate(r.2))));
    let resident = path(&mut rss.iter().map(|r| (x(r.0), y_rss(r.1))));
    let in_use = path(&mut heap.iter().map(|r| (x(r.0), y_rss(r.1))));
    let _ = writeln!(
        s,
        r##"<path d="{confirmed}" fill="none" stroke="#d9480f" stroke-width="1.5"/>"##
    );
    let _ = writeln!(
        s,
        r##"<path d="{consumed}" fill="none" stroke="#1c7ed6" stroke-width="1.5" stroke-dasharray="4 2"/>"##
    );
    let _ = writeln!(
        s,
        r##"<path d="{resident}" fill="none" stroke="#2b8a3e" stroke-width="1.5"/>"##
    );
    let _ = writeln!(
        s,
        r##"<path d="{in_use}" fill="none" stroke="#5c940d" stroke-width="1.5" stroke-dasharray="4 2"/>"##
    );
    // Legend.
    let mut legend = vec![
        ("#d9480f", "confirmed/s"),
        ("#1c7ed6", "consumed/s"),
        ("#2b8a3e", "RSS"),
    ];
    if !heap.is_empty() {
        legend.push(("#5c940d", "heap in use"));
    }
    legend.extend([
        (fault_color("link"), "link cut"),
        (fault_color("black"), "black hole"),
        (fault_color("node"), "node restart"),
    ]);
    let ly = h - 10.0;
    for (i, (color, label)) in legend.iter().enumerate() {
        let lx = left + i as f64 * (w - left) / legend.len() as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{color}" stroke-width="3"/><text x="{}" y="{ly}">{label}</text>"#,
            lx + 18.0,
            ly - 4.0,
            ly - 4.0,
            lx + 24.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn fault_color(kind: &str) -> &'static str {
    if kind.starts_with("link") {
        "#f08c00"
    } else if kind.starts_with("black") {
        "#7048e8"
    } else {
        "#c92a2a"
    }
}
