//! N queues, each with one producer and one consumer, over one connection
//! or over N (a producer, a consumer and a queue per connection). A fixed
//! total of messages is split across the queues, so runs compare; the
//! time runs from the first publish to the last ack.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use carehare_benches::e2e::{cpu_time, max_rss_kib, runtime};
use serde_json::json;

use crate::child::{self, num, rate};
use crate::clients::in_batches;
use crate::figure::{Lines, Series};
use crate::flags::Flags;
use crate::work;

/// One point (N queues over K connections), in this process: prints one
/// JSON line.
pub fn child(f: &Flags) -> Result<(), String> {
    let n: usize = f.get("queues", 1)?;
    let k: usize = f.get("connections", 1)?;
    let messages: u64 = f.get("messages", 100_000)?;
    let window: usize = f.get("confirm", 1000)?;
    let prefetch: u16 = f.get("prefetch", 300)?;
    let ack_every: u64 = f.get("multi-ack-every", 30)?;
    let size: usize = f.get("size", 12)?;
    let url = f.text("url", crate::URL);
    f.done()?;
    if n == 0 || k == 0 || k > n {
        return Err(format!(
            "{n} queues over {k} connections: need 1 ≤ connections ≤ queues"
        ));
    }
    runtime(true).block_on(async {
        let url = &url;
        let connections = in_batches(k, 16, |_| work::connect(url)).await?;
        // Queue i, its producer and its consumer live on connection i % k.
        let mut queues = Vec::with_capacity(n);
        let mut consumers = Vec::with_capacity(n);
        for i in 0..n {
            let c = &connections[i % k];
            let queue = work::exclusive_queue(c).await?;
            consumers.push(
                c.acking_consumer(&queue, prefetch)
                    .await
                    .map_err(|e| format!("acking_consumer: {e}"))?,
            );
            queues.push(queue);
        }
        let share =
            move |i: usize| messages / n as u64 + u64::from((i as u64) < messages % n as u64);
        let body = Bytes::from(vec![b'x'; size]);

        let (t0, cpu0) = (Instant::now(), cpu_time());
        let consuming: Vec<_> = consumers
            .into_iter()
            .enumerate()
            .map(|(i, consumer)| {
                tokio::spawn(async move { work::consume(&consumer, share(i), ack_every).await })
            })
            .collect();
        let producing: Vec<_> = queues
            .iter()
            .enumerate()
            .map(|(i, queue)| {
                let (c, queue, body) = (connections[i % k].clone(), queue.clone(), body.clone());
                tokio::spawn(
                    async move { work::publish(&c, &queue, share(i), &body, window).await },
                )
            })
            .collect();
        let mut last_ack = t0;
        for task in consuming {
            let at = task.await.map_err(|e| format!("consumer task: {e}"))??;
            last_ack = last_ack.max(at);
        }
        for task in producing {
            task.await.map_err(|e| format!("producer task: {e}"))??;
        }
        let cpu = (cpu_time() - cpu0).as_secs_f64();
        let seconds = (last_ack - t0).as_secs_f64();
        for c in &connections {
            c.close().await.map_err(|e| format!("close: {e}"))?;
        }
        let line = json!({
            "queues": n,
            "connections": k,
            "messages": messages,
            "seconds": seconds,
            "msg_per_s": messages as f64 / seconds,
            "cpu_us_per_msg": cpu * 1e6 / messages as f64,
            "max_rss_kib": max_rss_kib(),
        });
        println!("{line}");
        Ok(())
    })
}

/// Every N over one connection and over N, each in a child process (the
/// median of `--rounds` by msg/s): prints the table, writes
/// `fig-queues.json`.
pub fn main(f: &Flags) -> Result<(), String> {
    let counts: Vec<usize> = f.list("queues", "1,4,16,64")?;
    let rounds: usize = f.get("rounds", 1)?;
    let out = PathBuf::from(f.text("out", "target/bench"));
    let pass = f.passed(&[
        "messages",
        "confirm",
        "prefetch",
        "multi-ack-every",
        "size",
        "url",
    ]);
    let messages: u64 = f.get("messages", 100_000)?;
    let window: usize = f.get("confirm", 1000)?;
    let prefetch: u16 = f.get("prefetch", 300)?;
    let ack_every: u64 = f.get("multi-ack-every", 30)?;
    let size: usize = f.get("size", 12)?;
    let _ = f.text("url", crate::URL);
    f.done()?;

    println!(
        "{messages} messages of {size} B in all, split evenly across the queues; confirm window {window} per producer, prefetch {prefetch} per consumer, a multiple-ack every {ack_every} deliveries; median of {rounds} run(s).\n"
    );
    println!(
        "| queues (N) | connections | msg/s (first publish to last ack) | CPU (µs/msg) | max RSS (MiB) |"
    );
    println!("|---|---|---|---|---|");
    let (mut one, mut each) = (Vec::new(), Vec::new());
    for &n in &counts {
        // With one queue, one connection and N connections are the same run.
        let modes: &[usize] = if n == 1 { &[1] } else { &[1, n] };
        for &k in modes {
            let mut runs = Vec::new();
            for round in 1..=rounds {
                eprintln!("scale queues: {n} queues over {k} connection(s), round {round}");
                let mut args = vec![
                    "queues-child".to_string(),
                    "--queues".into(),
                    n.to_string(),
                    "--connections".into(),
                    k.to_string(),
                ];
                args.extend(pass.iter().cloned());
                runs.push(child::run(&args)?);
            }
            let v = child::median_by(runs, "msg_per_s").ok_or("no run")?;
            println!(
                "| {n} | {k} | {} | {:.2} | {:.1} |",
                rate(num(&v, "msg_per_s")),
                num(&v, "cpu_us_per_msg"),
                num(&v, "max_rss_kib") / 1024.0,
            );
            let point = (n as f64, num(&v, "msg_per_s"));
            if k == 1 {
                one.push(point);
            }
            if k == n {
                each.push(point);
            }
        }
    }
    println!();
    Lines {
        title: "Throughput against queues",
        x_label: "queues (N), a producer and a consumer each",
        y_label: "msg/s",
        log_x: true,
        log_y: false,
        series: vec![
            Series {
                name: "1 connection".into(),
                points: one,
            },
            Series {
                name: "N connections".into(),
                points: each,
            },
        ],
    }
    .write(&out, "queues")
}
