//! The end-to-end workload on carehare (tokio), through the public API:
//! `Connection::publisher(window)` for confirmed publishing, and an
//! `acking_consumer` acked with `ack_multiple`. The runner prefers
//! `carehare perf` (the CLI) when it is built; this peer measures the
//! library from this tree without it.

use std::collections::VecDeque;

use carehare_benches::e2e::{PhaseTimer, Workload, report};
use carehare_tokio::QueueOptions;

fn main() {
    // The default is tokio's multi-thread runtime, as `#[tokio::main]`;
    // `PEER_RUNTIME=current_thread` is for profiling.
    let mut runtime = match std::env::var("PEER_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    runtime.block_on(run(Workload::from_args()));
}

async fn run(w: Workload) {
    let body = bytes::Bytes::from(w.body());
    let conn = carehare_tokio::connect(&w.url).await.expect("connect");
    let queue = format!("carehare-bench-{}", std::process::id());
    conn.queue_declare(&queue, QueueOptions::exclusive())
        .await
        .expect("queue.declare");

    let timer = PhaseTimer::start();
    let publisher = conn.publisher(w.confirm);
    let mut confirmations = VecDeque::with_capacity(w.confirm + 1);
    for _ in 0..w.count {
        let confirmation = publisher
            .publish(body.clone(), "", &queue)
            .await
            .expect("publish");
        confirmations.push_back(confirmation);
        // The window is full again only once an earlier publish is settled,
        // so the oldest is (almost always) already resolved.
        if confirmations.len() > w.confirm {
            confirmations
                .pop_front()
                .expect("non-empty")
                .await
                .expect("confirm");
        }
    }
    for confirmation in confirmations {
        confirmation.await.expect("confirm");
    }
    let publish = timer.stop(w.count);

    let timer = PhaseTimer::start();
    let consumer = conn
        .acking_consumer(&queue, w.prefetch)
        .await
        .expect("consume");
    let mut seen = 0u64;
    while seen < w.count {
        let (body, tag) = consumer.next_delivery().await.expect("delivery");
        assert_eq!(body.len(), w.size);
        seen += 1;
        if seen.is_multiple_of(w.multi_ack_every) || seen == w.count {
            consumer.ack_multiple(tag);
        }
    }
    let consume = timer.stop(seen);
    consumer.close().await;
    conn.close().await.expect("close");
    report("carehare-rs", &w, publish, consume);
}
