//! The quick-start demo, written once: publish N messages with confirms
//! (1,000 in flight), then consume them with acks, with a progress bar and
//! a throughput line. Each runtime's binary (`src/bin/demo-*.rs`) only
//! connects and hands the connection over, because all three adapters
//! return the same `carehare_client::Connection`.
//!
//! `AMQP_URL` overrides the broker (default: the local test broker).
//!
//! The crate also holds `blocking.rs` and `mio.rs`, two programs that embed
//! `carehare-core` without an async runtime (`docs/embedding.md`), and, under
//! `cfg(doctest)`, `docs/guide.md`, so `cargo test --doc` compiles the
//! guide's code.

#![deny(unreachable_pub)]

pub mod reconnect;

use std::io::Write;
use std::time::Instant;

use carehare_client::{Connection, Error, QueueOptions};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

const MESSAGES: usize = 100_000;
const BODY: usize = 1024;
const IN_FLIGHT: usize = 1000;
const PREFETCH: u16 = 300;

/// The broker to use: `AMQP_URL`, or the local test broker.
pub fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/".into())
}

fn bar(label: &str, done: usize, started: Instant) {
    let width = 40;
    let filled = done * width / MESSAGES;
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    eprint!(
        "\r{label} [{}{}] {done:>6}/{MESSAGES} {rate:>8.0} msg/s",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

/// Runs the demo on a connection made by `connect`, timing the connect.
pub async fn run<F>(runtime: &str, connect: F) -> Result<(), Error>
where
    F: std::future::Future<Output = Result<Connection, Error>>,
{
    let t0 = Instant::now();
    let connection = connect.await?;
    let t = connection.tuning();
    println!(
        "[{runtime}] connected in {:.1} ms: channel_max={} frame_max={} heartbeat={}s",
        t0.elapsed().as_secs_f64() * 1e3,
        t.channel_max,
        t.frame_max,
        t.heartbeat
    );
    let queue = connection
        .queue_declare("", QueueOptions::exclusive())
        .await?
        .queue;
    println!(
        "publishing {MESSAGES} messages of {BODY} B to {queue}, {IN_FLIGHT} unconfirmed at most\n"
    );

    let body = bytes::Bytes::from(vec![b'x'; BODY]);
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut confirmed = 0;
    for _ in 0..MESSAGES {
        if in_flight.len() >= IN_FLIGHT
            && let Some(result) = in_flight.next().await
        {
            result?;
            confirmed += 1;
            if confirmed % 2000 == 0 {
                bar("publish", confirmed, started);
            }
        }
        in_flight.push(connection.publish(body.clone(), "", &queue));
    }
    while let Some(result) = in_flight.next().await {
        result?;
        confirmed += 1;
    }
    bar("publish", confirmed, started);
    let publish_secs = started.elapsed().as_secs_f64();
    eprintln!();

    let consumer = connection.acking_consumer(&queue, PREFETCH).await?;
    let started = Instant::now();
    for received in 1..=MESSAGES {
        let (body, tag) = consumer.next_delivery().await?;
        assert_eq!(body.len(), BODY);
        consumer.ack(tag);
        if received % 2000 == 0 {
            bar("consume", received, started);
        }
    }
    let consume_secs = started.elapsed().as_secs_f64();
    eprintln!();
    consumer.close().await;
    connection.close().await?;
    println!(
        "\n[{runtime}] throughput: publish {:.0} msg/s (confirmed), consume {:.0} msg/s (acked); {MESSAGES} messages of {BODY} B",
        MESSAGES as f64 / publish_secs,
        MESSAGES as f64 / consume_secs
    );
    Ok(())
}

/// `docs/guide.md`, included here so that `cargo test --doc` compiles every
/// code block in it against this commit's API.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide.md")]
pub struct Guide;
