//! Unloaded latency on amqprs (see `carehare_benches::latency`), written
//! the way its docs do it: a confirm-mode channel whose callback returns
//! the window's one slot on `publish_ack` (taking the slot again is
//! awaiting the confirm), and a consumer task reading `basic_consume_rx`
//! and acking each message with `basic_ack`. tokio's current-thread
//! runtime, as carehare's (`PEER_RUNTIME=multi_thread`: multi-threaded).

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
};
use carehare_benches::amqprs_peer::{Publishing, publishing};
use carehare_benches::e2e::{runtime, runtime_is_multi};
use carehare_benches::latency::{Args, Clock, report, round_trips};

fn main() {
    let args = Args::from_args();
    let samples = runtime(false).block_on(run(&args));
    report("amqprs", runtime_is_multi(false), &args, &samples);
}

async fn run(args: &Args) -> Vec<u64> {
    let clock = Clock::start();
    let Publishing {
        connection,
        channel,
        queue,
        window,
    } = publishing(&args.url, 1).await;
    let consuming = connection.open_channel(None).await.expect("channel");
    consuming
        .basic_qos(BasicQosArguments::new(0, args.prefetch, false))
        .await
        .expect("basic.qos");
    let (_tag, mut rx) = consuming
        .basic_consume_rx(
            BasicConsumeArguments::new(&queue, "")
                .manual_ack(true)
                .finish(),
        )
        .await
        .expect("basic.consume");
    let (delivered, mut round_trip) = tokio::sync::mpsc::unbounded_channel();
    let total = args.warmup + args.round_trips;
    let consumer = tokio::spawn(async move {
        for _ in 0..total {
            let message = rx.recv().await.expect("consumer ended");
            let body = message.content.expect("a body");
            let elapsed = clock.since(&body);
            let tag = message.deliver.expect("deliver").delivery_tag();
            consuming
                .basic_ack(BasicAckArguments::new(tag, false))
                .await
                .expect("ack");
            delivered.send(elapsed).expect("the publisher waits");
        }
        consuming
    });
    let publish = BasicPublishArguments::new("", &queue);
    // The closure publishes and yields the confirm, for `round_trips` to
    // await after the round trip.
    #[expect(clippy::async_yields_async, reason = "the confirm is awaited later")]
    let samples = round_trips(args, clock, &mut round_trip, async |body: Vec<u8>| {
        window.acquire().await.expect("window").forget();
        channel
            .basic_publish(BasicProperties::default(), body, publish.clone())
            .await
            .expect("basic.publish");
        // The confirm gives the slot back.
        async { drop(window.acquire().await.expect("window")) }
    })
    .await;
    // Each channel closed before the connection, as amqprs' examples do: a
    // dropped channel closes itself in the background, and the
    // connection's close can then fail with "channel closed".
    let consuming = consumer.await.expect("consumer task");
    consuming
        .close()
        .await
        .expect("close the consuming channel");
    channel.close().await.expect("close the publishing channel");
    connection.close().await.expect("close");
    samples
}
