//! The end-to-end workload on carehare (tokio), through the public API:
//! `Connection::publisher(window)` for confirmed publishing, and an
//! `acking_consumer` acked with `ack_multiple`. The runner prefers
//! `carehare perf` (the CLI) when it is built; this peer measures the
//! library from this tree without it.

use std::collections::VecDeque;

use carehare_benches::e2e::{PhaseTimer, Workload, consume_with_carehare, report, runtime};
use carehare_tokio::QueueOptions;

fn main() {
    // The default is tokio's multi-thread runtime, as `#[tokio::main]`;
    // `PEER_RUNTIME=current_thread` is for profiling.
    runtime(true).block_on(run(Workload::from_args()));
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

    let consume = consume_with_carehare(&conn, &queue, &w).await;
    conn.close().await.expect("close");
    report("carehare-rs", &w, publish, consume);
}
