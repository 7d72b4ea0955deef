//! Unloaded latency on carehare (see `carehare_benches::latency`), written
//! as a user writes it from the guide: `connection.publish` (confirmed;
//! its `Confirmation` awaited after the round trip), and a consumer task
//! reading an `acking_consumer` with `next_delivery` and acking each
//! message. tokio's current-thread runtime (`PEER_RUNTIME=multi_thread`:
//! multi-threaded).

use carehare_benches::e2e::{runtime, runtime_is_multi};
use carehare_benches::latency::{Args, Clock, report, round_trips};
use carehare_tokio::QueueOptions;

fn main() {
    let args = Args::from_args();
    let samples = runtime(false).block_on(run(&args));
    report("carehare", runtime_is_multi(false), &args, &samples);
}

async fn run(args: &Args) -> Vec<u64> {
    let clock = Clock::start();
    let connection = carehare_tokio::connect(&args.url).await.expect("connect");
    let queue = connection
        .queue_declare("", QueueOptions::exclusive())
        .await
        .expect("queue.declare")
        .queue;
    let consumer = connection
        .acking_consumer(&queue, args.prefetch)
        .await
        .expect("consume");
    let (delivered, mut round_trip) = tokio::sync::mpsc::unbounded_channel();
    let total = args.warmup + args.round_trips;
    let consuming = tokio::spawn(async move {
        for _ in 0..total {
            let (body, tag) = consumer.next_delivery().await.expect("delivery");
            let elapsed = clock.since(&body);
            consumer.ack(tag);
            delivered.send(elapsed).expect("the publisher waits");
        }
        consumer.close().await;
    });
    // The closure publishes and yields the confirm, for `round_trips` to
    // await after the round trip.
    #[expect(clippy::async_yields_async, reason = "the confirm is awaited later")]
    let samples = round_trips(args, clock, &mut round_trip, async |body: Vec<u8>| {
        let confirmation = connection.publish(body, "", &queue);
        async { confirmation.await.expect("confirm") }
    })
    .await;
    consuming.await.expect("consumer task");
    connection.close().await.expect("close");
    samples
}
