//! The carehare calls the throughput subcommands make, as the guide
//! writes them (the same as `peer-plain`): a `publisher(window)` with each
//! `Confirmation` in a `FuturesUnordered`, and acking consumers read with
//! `next_delivery` and acked with `ack_multiple`.

use std::time::Instant;

use bytes::Bytes;
use carehare_tokio::{AckingConsumer, Connection};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Publishes `count` copies of `body` to `queue` (default exchange) with
/// confirms, at most `window` unconfirmed; returns once all are confirmed.
pub async fn publish(
    connection: &Connection,
    queue: &str,
    count: u64,
    body: &Bytes,
    window: usize,
) -> Result<(), String> {
    let publisher = connection.publisher(window);
    let mut pending = FuturesUnordered::new();
    for _ in 0..count {
        let confirmation = publisher
            .publish(body.clone(), "", queue)
            .await
            .map_err(|e| format!("publish: {e}"))?;
        pending.push(confirmation);
        if pending.len() >= window
            && let Some(r) = pending.next().await
        {
            r.map_err(|e| format!("confirm: {e}"))?;
        }
    }
    while let Some(r) = pending.next().await {
        r.map_err(|e| format!("confirm: {e}"))?;
    }
    Ok(())
}

/// Reads `count` deliveries, acking with `multiple` every `ack_every` and
/// at the last; returns when the last was acked.
pub async fn consume(
    consumer: &AckingConsumer,
    count: u64,
    ack_every: u64,
) -> Result<Instant, String> {
    for seen in 1..=count {
        let (_, tag) = consumer
            .next_delivery()
            .await
            .map_err(|e| format!("delivery {seen} of {count}: {e}"))?;
        if seen.is_multiple_of(ack_every) || seen == count {
            consumer.ack_multiple(tag);
        }
    }
    Ok(Instant::now())
}

/// `carehare_tokio::connect`, the error as text.
pub async fn connect(url: &str) -> Result<Connection, String> {
    carehare_tokio::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))
}

/// An exclusive queue with a server-chosen name.
pub async fn exclusive_queue(connection: &Connection) -> Result<String, String> {
    Ok(connection
        .queue_declare("", carehare_tokio::QueueOptions::exclusive())
        .await
        .map_err(|e| format!("queue.declare: {e}"))?
        .queue
        .to_string())
}
