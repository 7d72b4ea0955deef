//! Many consumers on one connection, each on its own channel
//! (`acking_consumer`), all on one queue. The consumers open first, on the
//! empty queue; then a publisher in a process of its own (`publish-child`)
//! sends the messages, and the rate is the deliveries between the first
//! and the last. One queue, so that the broker's work stays the same (one
//! queue process, the same messages) and what changes with the consumer
//! count is the client's: channels, mailboxes, smaller batches per channel.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use carehare_benches::e2e::{cpu_time, max_rss_kib, runtime};
use futures::future::join_all;
use serde_json::json;
use tokio::sync::Notify;

use crate::child::{self, num, rate};
use crate::figure::{Lines, Series};
use crate::flags::Flags;
use crate::work;

/// What the consumer tasks share: the deliveries so far, when the first
/// came, and a signal at the last.
struct Progress {
    delivered: AtomicU64,
    first: OnceLock<Instant>,
    done: Notify,
}

/// One consumer count, in this process: prints one JSON line.
pub fn child(f: &Flags) -> Result<(), String> {
    let consumers: usize = f.get("consumers", 1)?;
    let messages: u64 = f.get("messages", 100_000)?;
    let prefetch: u16 = f.get("prefetch", 300)?;
    let ack_every: u64 = f.get("multi-ack-every", 30)?;
    let size: usize = f.get("size", 12)?;
    let url = f.text("url", crate::URL);
    f.done()?;
    runtime(true).block_on(async {
        let connection = work::connect(&url).await?;
        let queue = work::exclusive_queue(&connection).await?;
        let t0 = Instant::now();
        let opened = join_all((0..consumers).map(|_| connection.acking_consumer(&queue, prefetch)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("acking_consumer: {e}"))?;
        let open_s = t0.elapsed().as_secs_f64();
        let progress = Arc::new(Progress {
            delivered: AtomicU64::new(0),
            first: OnceLock::new(),
            done: Notify::new(),
        });
        let tasks: Vec<_> = opened
            .into_iter()
            .map(|consumer| {
                let progress = progress.clone();
                tokio::spawn(async move {
                    // Runs until the connection closes under it.
                    let mut mine = 0u64;
                    while let Ok((_, tag)) = consumer.next_delivery().await {
                        mine += 1;
                        if mine.is_multiple_of(ack_every) {
                            consumer.ack_multiple(tag);
                        }
                        let n = progress.delivered.fetch_add(1, Relaxed) + 1;
                        if n == 1 {
                            let _ = progress.first.set(Instant::now());
                        }
                        if n == messages {
                            progress.done.notify_one();
                        }
                    }
                    mine
                })
            })
            .collect();

        let cpu0 = cpu_time();
        let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
        let mut publisher = Command::new(exe)
            .args(["publish-child", "--queue", &queue, "--url", &url])
            .args([
                "--messages",
                &messages.to_string(),
                "--size",
                &size.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("publish-child: {e}"))?;
        progress.done.notified().await;
        let last = Instant::now();
        let cpu = (cpu_time() - cpu0).as_secs_f64();
        let first = progress.first.get().copied().unwrap_or(t0);
        let seconds = (last - first).as_secs_f64();
        let published = tokio::task::spawn_blocking(move || publisher.wait())
            .await
            .map_err(|e| format!("publish-child: {e}"))?
            .map_err(|e| format!("publish-child: {e}"))?;
        if !published.success() {
            return Err(format!("publish-child failed: {published}"));
        }
        connection
            .close()
            .await
            .map_err(|e| format!("close: {e}"))?;
        let each: Vec<u64> = join_all(tasks).await.into_iter().flatten().collect();
        let line = json!({
            "consumers": consumers,
            "messages": messages,
            "prefetch": prefetch,
            "open_s": open_s,
            "seconds": seconds,
            "msg_per_s": (messages - 1) as f64 / seconds,
            "cpu_us_per_msg": cpu * 1e6 / messages as f64,
            "min_per_consumer": each.iter().min(),
            "max_per_consumer": each.iter().max(),
            "max_rss_kib": max_rss_kib(),
        });
        println!("{line}");
        Ok(())
    })
}

/// The publisher of `consumers-child`, in a process of its own so that
/// the consumers' process measures only consuming: `--messages` of
/// `--size` B to `--queue`, confirm window 1000.
pub fn publish_child(f: &Flags) -> Result<(), String> {
    let queue = f.text("queue", "");
    let messages: u64 = f.get("messages", 100_000)?;
    let size: usize = f.get("size", 12)?;
    let url = f.text("url", crate::URL);
    f.done()?;
    runtime(true).block_on(async {
        let connection = work::connect(&url).await?;
        let body = Bytes::from(vec![b'x'; size]);
        work::publish(&connection, &queue, messages, &body, 1000).await?;
        connection.close().await.map_err(|e| format!("close: {e}"))
    })
}

/// Every consumer count, each in a child process (the median of
/// `--rounds` by msg/s): prints the table, writes `fig-consumers.json`.
pub fn main(f: &Flags) -> Result<(), String> {
    let counts: Vec<usize> = f.list("consumers", "1,10,100,1000")?;
    let rounds: usize = f.get("rounds", 1)?;
    let out = PathBuf::from(f.text("out", "target/bench"));
    let pass = f.passed(&["messages", "prefetch", "multi-ack-every", "size", "url"]);
    let messages: u64 = f.get("messages", 100_000)?;
    let prefetch: u16 = f.get("prefetch", 300)?;
    let ack_every: u64 = f.get("multi-ack-every", 30)?;
    let size: usize = f.get("size", 12)?;
    let _ = f.text("url", crate::URL);
    f.done()?;

    println!("### Consumers on one connection\n");
    println!(
        "{messages} messages of {size} B through one queue to N consumers (prefetch {prefetch} each, a multiple-ack every {ack_every} deliveries), published by another process once every consumer is open; median of {rounds} run(s).\n"
    );
    println!(
        "| consumers | delivered (msg/s) | CPU (µs/msg) | opening them all (ms) | deliveries per consumer (min–max) | max RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut points = Vec::new();
    for &c in &counts {
        let mut runs = Vec::new();
        for round in 1..=rounds {
            eprintln!("scale consumers: {c} consumers, round {round}");
            let mut args = vec![
                "consumers-child".to_string(),
                "--consumers".into(),
                c.to_string(),
            ];
            args.extend(pass.iter().cloned());
            runs.push(child::run(&args)?);
        }
        let v = child::median_by(runs, "msg_per_s").ok_or("no run")?;
        println!(
            "| {c} | {} | {:.2} | {:.0} | {}–{} | {:.1} |",
            rate(num(&v, "msg_per_s")),
            num(&v, "cpu_us_per_msg"),
            num(&v, "open_s") * 1000.0,
            v["min_per_consumer"],
            v["max_per_consumer"],
            num(&v, "max_rss_kib") / 1024.0,
        );
        points.push((c as f64, num(&v, "msg_per_s")));
    }
    println!();
    Lines {
        title: "Consumers on one connection, one queue",
        x_label: "consumers (one channel each)",
        y_label: "delivered msg/s",
        log_x: true,
        log_y: false,
        series: vec![Series {
            name: "carehare".into(),
            points,
        }],
    }
    .write(&out, "consumers")
}
