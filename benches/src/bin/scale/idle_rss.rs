//! What an idle connection costs each client: the process's RSS after the
//! runtime is up and before connecting, then after N connections have
//! been open and idle for a while; (after − before) / N. The counting
//! allocator adds the heap each connection holds, by block size.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use carehare_benches::e2e::runtime;
use serde_json::{Value, json};

use crate::alloc::{self, CLASSES, class_label};
use crate::child::{self, num};
use crate::clients::{self, Client, Target};
use crate::figure::{Lines, Series};
use crate::flags::Flags;
use crate::sys::{self, Usage};

/// One client, N connections, in this process: prints one JSON line.
pub fn child(f: &Flags) -> Result<(), String> {
    alloc::enable();
    let client: Client = f.text("client", "carehare").parse()?;
    let n: usize = f.get("connections", 1)?;
    let heartbeat: u16 = f.get("heartbeat", 10)?;
    let idle: f64 = f.get("idle", 12.0)?;
    let batch: usize = f.get("batch", 50)?;
    let warmup: usize = f.get("warmup", 1)?;
    let url = f.text("url", crate::URL);
    f.done()?;
    sys::raise_nofile(n as u64 + 100)?;
    let target = Target {
        url,
        heartbeat,
        prefix: format!("scale-rss-{}-", std::process::id()),
    };
    runtime(true).block_on(async {
        // What the first connection costs the process once (about a
        // hundred times what each further one adds) is not any one
        // connection's: with `--warmup`, that many connections are
        // opened, used for a moment and closed before the first reading.
        if warmup > 0 {
            // On a 1 s heartbeat and idle for 1.5 s, so that they run the
            // heartbeat paths (both ways) too: what those touch for the
            // first time (the stacks of the threads that run them, say) is
            // the process's, not a connection's.
            let warm = Target {
                prefix: format!("scale-rss-warmup-{}-", std::process::id()),
                heartbeat: 1,
                ..target.clone()
            };
            let idle = clients::open(client, &warm, warmup, batch).await?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            idle.close(batch).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let before = Usage::now();
        let live0 = alloc::reset_peak();
        let t0 = Instant::now();
        let idle_connections = clients::open(client, &target, n, batch).await?;
        let connect_s = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(idle)).await;
        let after = Usage::now();
        let peak = alloc::peak();
        let still_open = idle_connections.still_open();
        let closed = idle_connections.close(batch).await;
        let heap = after.heap.since(&before.heap);
        let classes: Vec<[i64; 3]> = (0..CLASSES)
            .filter(|&c| heap.blocks[c] != 0)
            .map(|c| [c as i64, heap.blocks[c], heap.bytes[c]])
            .collect();
        let line = json!({
            "client": client.name(),
            "connections": n,
            "heartbeat_s": heartbeat,
            "idle_s": idle,
            "warmup": warmup,
            "connect_s": connect_s,
            "rss_before_kib": before.rss_kib,
            "rss_after_kib": after.rss_kib,
            "rss_anon_before_kib": before.rss_anon_kib,
            "rss_anon_after_kib": after.rss_anon_kib,
            // The anonymous part: code pages touched for the first time
            // (heartbeat code, say, after the warm-up ran none) count in
            // VmRSS once, are shared with every process, and moved the
            // one-connection figure by up to 64 KiB with code layout alone.
            "rss_per_connection_kib": (after.rss_anon_kib as f64 - before.rss_anon_kib as f64) / n as f64,
            "vmrss_per_connection_kib": (after.rss_kib as f64 - before.rss_kib as f64) / n as f64,
            "heap_per_connection_bytes": heap.total_bytes() as f64 / n as f64,
            "heap_blocks_per_connection": heap.total_blocks() as f64 / n as f64,
            "heap_peak_per_connection_bytes": (peak - live0) as f64 / n as f64,
            "heap_classes": classes,
            "threads_before": before.threads,
            "threads_after": after.threads,
            "still_open": still_open,
            "closed_cleanly": closed,
        });
        println!("{line}");
        if still_open != n {
            return Err(format!(
                "{} of {n} connections still open after the idle time",
                still_open
            ));
        }
        Ok(())
    })
}

/// Connection counts below this are measured in `--processes` processes
/// at once (see `main`).
const FEW: usize = 100;

/// Every client at every connection count, each in a child process (or,
/// below `FEW` connections, in `--processes` of them, averaged): prints
/// the tables, writes `fig-idle-rss.json`.
pub fn main(f: &Flags) -> Result<(), String> {
    let counts: Vec<usize> = f.list("connections", "1,100,1000")?;
    let clients: Vec<Client> = f.list("clients", "carehare,amqprs,lapin")?;
    let out = PathBuf::from(f.text("out", "target/bench"));
    let pass = f.passed(&["heartbeat", "idle", "batch", "warmup", "url"]);
    let heartbeat: u16 = f.get("heartbeat", 10)?;
    let idle: f64 = f.get("idle", 12.0)?;
    let batch: usize = f.get("batch", 50)?;
    let warmup: usize = f.get("warmup", 1)?;
    let processes: usize = f.get("processes", 16)?;
    let _ = f.text("url", crate::URL);
    f.done()?;
    if processes == 0 {
        return Err("--processes must be at least 1".into());
    }

    let mut runs: Vec<(usize, Client, Value)> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for &n in &counts {
        for &client in &clients {
            // A client whose connections are large (lapin takes megabytes
            // each) is not run where the machine can't hold them: the
            // estimate is its largest run so far, scaled.
            let estimate_kib = runs
                .iter()
                .filter(|r| r.1 == client)
                .max_by_key(|r| r.0)
                .map(|r| num(&r.2, "rss_per_connection_kib") * n as f64);
            if let (Some(need), Some(free)) = (estimate_kib, sys::mem_available_kib())
                && need * 1.25 + 1024.0 * 1024.0 > free as f64
            {
                skipped.push(format!(
                    "{} × {n} skipped: it would need about {:.1} GiB, and {:.1} GiB are available",
                    client.name(),
                    need / (1024.0 * 1024.0),
                    free as f64 / (1024.0 * 1024.0)
                ));
                eprintln!(
                    "scale idle-rss: {}",
                    skipped.last().map_or("", String::as_str)
                );
                continue;
            }
            eprintln!("scale idle-rss: {} × {n}", client.name());
            let mut args = vec![
                "idle-rss-child".to_string(),
                "--client".into(),
                client.name().into(),
                "--connections".into(),
                n.to_string(),
            ];
            args.extend(pass.iter().cloned());
            // Below FEW connections, RSS grows by whole 4 KiB pages, and by
            // which freed pages the allocator happens to reuse: one process
            // gives 0 to 5 pages for the same connection. That many
            // processes at once (idle, so they don't disturb each other)
            // give the mean.
            let k = if n < FEW { processes } else { 1 };
            let one = std::thread::scope(|s| {
                let handles: Vec<_> = (0..k).map(|_| s.spawn(|| child::run(&args))).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("a child's thread panicked".into()))
                    })
                    .collect::<Result<Vec<Value>, String>>()
            })?;
            runs.push((n, client, mean_of(one)));
        }
    }
    let get = |n: usize, c: Client| runs.iter().find(|r| r.0 == n && r.1 == c).map(|r| &r.2);

    println!("### Idle connections: memory\n");
    println!(
        "Heartbeat {heartbeat} s, idle {idle} s after the last connection opened; connections opened {batch} at a time; tokio's multi-threaded runtime; below {FEW} connections, the mean of {processes} processes run at once (in brackets: the least and the most of them); {}.\n",
        if warmup == 0 {
            "measured from a process that had not connected yet (no warm-up)".to_string()
        } else {
            format!("measured after {warmup} warm-up connection(s) opened and closed")
        }
    );
    let ratio = clients.contains(&Client::Carehare) && clients.contains(&Client::Amqprs);
    print!("| connections |");
    for c in &clients {
        print!(" {} (KiB per connection) |", c.name());
    }
    println!("{}", if ratio { " carehare ÷ amqprs |" } else { "" });
    println!(
        "|---|{}{}",
        "---|".repeat(clients.len()),
        if ratio { "---|" } else { "" }
    );
    for &n in &counts {
        print!("| {n} |");
        for &c in &clients {
            match get(n, c) {
                Some(v) if num(v, "processes") > 1.0 => print!(
                    " {:.1} ({:.0}–{:.0}) |",
                    num(v, "rss_per_connection_kib"),
                    num(v, "rss_per_connection_kib_min"),
                    num(v, "rss_per_connection_kib_max")
                ),
                Some(v) => print!(" {:.1} |", num(v, "rss_per_connection_kib")),
                None => print!(" skipped |"),
            }
        }
        if ratio {
            let per = |c| get(n, c).map_or(f64::NAN, |v| num(v, "rss_per_connection_kib"));
            let r = per(Client::Carehare) / per(Client::Amqprs);
            if r.is_finite() {
                print!(" {r:.2}× |");
            } else {
                print!(" – |");
            }
        }
        println!();
    }
    println!();
    println!(
        "| connections | client | anonymous RSS before → after (MiB) | VmRSS per connection (KiB) | heap per connection (KiB) | heap peak per connection (KiB) | heap blocks per connection | threads before → after | connect time (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &counts {
        for &c in &clients {
            let Some(v) = get(n, c) else { continue };
            println!(
                "| {n} | {} | {:.1} → {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} → {:.0} | {:.2} |",
                c.name(),
                num(v, "rss_anon_before_kib") / 1024.0,
                num(v, "rss_anon_after_kib") / 1024.0,
                num(v, "vmrss_per_connection_kib"),
                num(v, "heap_per_connection_bytes") / 1024.0,
                num(v, "heap_peak_per_connection_bytes") / 1024.0,
                num(v, "heap_blocks_per_connection"),
                num(v, "threads_before"),
                num(v, "threads_after"),
                num(v, "connect_s"),
            );
        }
    }
    for line in &skipped {
        println!("- {line}");
    }
    println!();
    if let Some(&most) = counts.iter().max() {
        classes_table(most, &clients, &get);
    }

    let series = clients
        .iter()
        .map(|&c| Series {
            name: c.name().to_string(),
            points: counts
                .iter()
                .filter_map(|&n| get(n, c).map(|v| (n as f64, num(v, "rss_per_connection_kib"))))
                .collect(),
        })
        .collect();
    Lines {
        title: "Memory per idle connection",
        x_label: "connections in one process",
        // Log: lapin's MiB per connection would flatten the others' KiB.
        y_label: "anonymous RSS per connection (KiB, log scale)",
        log_x: true,
        log_y: true,
        series,
    }
    .write(&out, "idle-rss")
}

/// The heap blocks each idle connection holds at `n` connections, by size
/// class: blocks per connection and KiB per connection.
fn classes_table<'a>(
    n: usize,
    clients: &[Client],
    get: &dyn Fn(usize, Client) -> Option<&'a Value>,
) {
    let per_class = |c: Client| -> Vec<(f64, f64)> {
        let mut v = vec![(0.0, 0.0); CLASSES];
        if let Some(run) = get(n, c)
            && let Some(classes) = run["heap_classes"].as_array()
        {
            for row in classes {
                let f = |i: usize| row[i].as_f64().unwrap_or(0.0);
                if let Some(slot) = v.get_mut(f(0) as usize) {
                    *slot = (f(1) / n as f64, f(2) / n as f64 / 1024.0);
                }
            }
        }
        v
    };
    let all: Vec<Vec<(f64, f64)>> = clients.iter().map(|&c| per_class(c)).collect();
    println!(
        "Heap blocks held per idle connection at {n} connections, by block size: blocks (KiB).\n"
    );
    print!("| block size |");
    for c in clients {
        print!(" {} |", c.name());
    }
    println!();
    println!("|---|{}", "---|".repeat(clients.len()));
    for class in 0..CLASSES {
        // Classes under a tenth of a block per connection are the noise of
        // the runtime and the allocator's own bookkeeping.
        if all.iter().all(|v| v[class].0.abs() < 0.1) {
            continue;
        }
        print!("| {} |", class_label(class));
        for v in &all {
            let (blocks, kib) = v[class];
            print!(" {blocks:.2} ({kib:.1}) |");
        }
        println!();
    }
    println!();
}

/// One run's figures from several processes' runs of it: the mean of every
/// number (heap classes by class), the least and the most RSS per
/// connection, and how many processes.
fn mean_of(runs: Vec<Value>) -> Value {
    let k = runs.len().max(1) as f64;
    let Some(mut mean) = runs.first().cloned() else {
        return Value::Null;
    };
    if let Some(fields) = mean.as_object_mut() {
        for (key, value) in fields.iter_mut() {
            if value.is_number() {
                let sum: f64 = runs.iter().map(|r| num(r, key)).sum();
                *value = json!(sum / k);
            }
        }
        let mut classes = vec![[0.0f64; 2]; CLASSES];
        for row in runs
            .iter()
            .filter_map(|r| r["heap_classes"].as_array())
            .flatten()
        {
            let f = |i: usize| row[i].as_f64().unwrap_or(0.0);
            if let Some(slot) = classes.get_mut(f(0) as usize) {
                slot[0] += f(1) / k;
                slot[1] += f(2) / k;
            }
        }
        let classes: Vec<Value> = classes
            .iter()
            .enumerate()
            .filter(|(_, c)| c[0] != 0.0)
            .map(|(i, c)| json!([i, c[0], c[1]]))
            .collect();
        fields.insert("heap_classes".into(), json!(classes));
        let rss = runs.iter().map(|r| num(r, "rss_per_connection_kib"));
        fields.insert(
            "rss_per_connection_kib_min".into(),
            json!(rss.clone().fold(f64::INFINITY, f64::min)),
        );
        fields.insert(
            "rss_per_connection_kib_max".into(),
            json!(rss.fold(f64::NEG_INFINITY, f64::max)),
        );
        fields.insert("processes".into(), json!(runs.len()));
    }
    mean
}
