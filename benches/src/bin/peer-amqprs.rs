//! The end-to-end workload on amqprs, written the way its docs do it: a
//! channel callback receives the publisher confirms (`publish_ack`, which
//! may be `multiple`), and a semaphore keeps at most `confirm` unconfirmed;
//! the consumer is `basic_consume_rx`, acked with `multiple`.

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
};
use carehare_benches::amqprs_peer::{Publishing, publishing};
use carehare_benches::e2e::{PhaseTimer, Workload, block_on_in_task, report, runtime};

fn main() {
    // `#[tokio::main]`'s multi-thread runtime, or `PEER_RUNTIME=current_thread`
    // to compare with a current-thread peer on the same runtime. The work is
    // awaited in `block_on`'s future, as amqprs's examples do in
    // `#[tokio::main]`; `PEER_SPAWN=1` runs it in a spawned task instead
    // (`amqprs-spawned`), as carehare's guide says to on this runtime.
    let w = Workload::from_args();
    let runtime = runtime(true);
    if std::env::var_os("PEER_SPAWN").is_some() {
        block_on_in_task(&runtime, run("amqprs-spawned", w));
    } else {
        runtime.block_on(run("amqprs", w));
    }
}

async fn run(tool: &'static str, w: Workload) {
    let body = w.body();
    let Publishing {
        connection: conn,
        channel: publisher,
        queue,
        window,
    } = publishing(&w.url, w.confirm).await;

    let timer = PhaseTimer::start();
    let args = BasicPublishArguments::new("", &queue);
    for _ in 0..w.count {
        window.acquire().await.expect("window").forget();
        publisher
            .basic_publish(BasicProperties::default(), body.clone(), args.clone())
            .await
            .expect("basic.publish");
    }
    // Every slot back means every publish is confirmed.
    window
        .acquire_many(w.confirm as u32)
        .await
        .expect("window")
        .forget();
    let publish = timer.stop(w.count);

    let consuming = conn.open_channel(None).await.expect("channel");
    consuming
        .basic_qos(BasicQosArguments::new(0, w.prefetch, false))
        .await
        .expect("basic.qos");
    let timer = PhaseTimer::start();
    let (_tag, mut rx) = consuming
        .basic_consume_rx(
            BasicConsumeArguments::new(&queue, "")
                .manual_ack(true)
                .finish(),
        )
        .await
        .expect("basic.consume");
    let mut seen = 0u64;
    while seen < w.count {
        let msg = rx.recv().await.expect("consumer ended");
        let deliver = msg.deliver.expect("deliver");
        assert_eq!(msg.content.map(|c| c.len()), Some(w.size));
        seen += 1;
        if seen.is_multiple_of(w.multi_ack_every) || seen == w.count {
            consuming
                .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), true))
                .await
                .expect("ack");
        }
    }
    let consume = timer.stop(seen);
    conn.close().await.expect("close");
    report(tool, &w, publish, consume);
}
