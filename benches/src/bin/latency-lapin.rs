//! Unloaded latency on lapin (see `carehare_benches::latency`), written the
//! way its examples do it: on tokio's multi-threaded runtime
//! (`#[tokio::main]`, as lapin's README; lapin also runs its own I/O
//! thread), `confirm_select` and the `PublisherConfirm` of each
//! `basic_publish` (awaited after the round trip), and a consumer task
//! reading the consumer stream and acking each delivery through its
//! `acker`. `PEER_RUNTIME=current_thread` runs it on the current-thread
//! runtime instead.

use carehare_benches::e2e::{runtime, runtime_is_multi};
use carehare_benches::lapin_peer::publishing;
use carehare_benches::latency::{Args, Clock, report, round_trips};
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;

fn main() {
    let args = Args::from_args();
    let samples = runtime(true).block_on(run(&args));
    report("lapin", runtime_is_multi(true), &args, &samples);
}

async fn run(args: &Args) -> Vec<u64> {
    let clock = Clock::start();
    let (connection, publisher, queue) = publishing(&args.url).await;
    let consuming = connection.create_channel().await.expect("channel");
    consuming
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let mut consumer = consuming
        .basic_consume(
            queue.clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let (delivered, mut round_trip) = tokio::sync::mpsc::unbounded_channel();
    let total = args.warmup + args.round_trips;
    let consumer = tokio::spawn(async move {
        for _ in 0..total {
            let delivery = consumer
                .next()
                .await
                .expect("consumer ended")
                .expect("delivery");
            let elapsed = clock.since(&delivery.data);
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            delivered.send(elapsed).expect("the publisher waits");
        }
    });
    // The closure publishes and yields the confirm, for `round_trips` to
    // await after the round trip.
    #[expect(clippy::async_yields_async, reason = "the confirm is awaited later")]
    let samples = round_trips(args, clock, &mut round_trip, async |body: Vec<u8>| {
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.clone(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .expect("basic.publish");
        async { assert!(confirm.await.expect("confirm").is_ack(), "nack") }
    })
    .await;
    consumer.await.expect("consumer task");
    connection.close(200, "bye".into()).await.expect("close");
    samples
}
