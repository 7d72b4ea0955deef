//! The end-to-end workload written as a new user writes it from the guide,
//! with nothing tuned: `connection.publisher(window)` and each
//! `Confirmation` pushed into a `FuturesUnordered`, drained when the window
//! is full; `acking_consumer(queue, prefetch)` read with `next_delivery`
//! and acked with `ack_multiple`. This is the figure a user gets, beside
//! `peer-carehare` and `carehare perf`.
//!
//! `PEER_RUNTIME=current_thread` (the default) or `multi_thread`. On the
//! multi-threaded runtime the work runs in a spawned task, as the guide
//! says ("On tokio's multi-threaded runtime"); `PEER_IN_MAIN=1` awaits it
//! in `block_on`'s own future instead, on the main thread, outside the
//! runtime's workers (`carehare-plain-mt-main`).

use carehare_benches::e2e::{
    PhaseTimer, Workload, block_on_in_task, consume_with_carehare, report, runtime,
    runtime_is_multi,
};
use carehare_tokio::QueueOptions;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

fn main() {
    let multi = runtime_is_multi(false);
    let in_main = std::env::var_os("PEER_IN_MAIN").is_some();
    let runtime = runtime(false);
    let w = Workload::from_args();
    match (multi, in_main) {
        (false, _) => runtime.block_on(run("carehare-plain", w)),
        (true, true) => runtime.block_on(run("carehare-plain-mt-main", w)),
        (true, false) => block_on_in_task(&runtime, run("carehare-plain-mt", w)),
    }
}

async fn run(tool: &'static str, w: Workload) {
    let body = bytes::Bytes::from(w.body());
    let connection = carehare_tokio::connect(&w.url).await.expect("connect");
    let queue = connection
        .queue_declare("", QueueOptions::exclusive())
        .await
        .expect("queue.declare")
        .queue;

    let timer = PhaseTimer::start();
    let publisher = connection.publisher(w.confirm);
    let mut pending = FuturesUnordered::new();
    for _ in 0..w.count {
        let confirmation = publisher
            .publish(body.clone(), "", &queue)
            .await
            .expect("publish");
        pending.push(confirmation);
        if pending.len() >= w.confirm {
            pending.next().await.expect("pending").expect("confirm");
        }
    }
    while let Some(result) = pending.next().await {
        result.expect("confirm");
    }
    let publish = timer.stop(w.count);

    let consume = consume_with_carehare(&connection, &queue, &w).await;
    connection.close().await.expect("close");
    report(tool, &w, publish, consume);
}
