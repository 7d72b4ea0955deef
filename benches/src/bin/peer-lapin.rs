//! The end-to-end workload on lapin, written the way its examples do it:
//! tokio (lapin's default runtime), `confirm_select` and the
//! `PublisherConfirm` future of each `basic_publish`; the consumer as a
//! stream, acked through each delivery's `acker`.

use carehare_benches::e2e::{PhaseTimer, Workload, report};
use carehare_benches::lapin_peer::publishing;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;

#[tokio::main]
async fn main() {
    let w = Workload::from_args();
    let body = w.body();
    let (conn, publisher, queue) = publishing(&w.url).await;

    let timer = PhaseTimer::start();
    let mut in_flight: FuturesUnordered<lapin::PublisherConfirm> = FuturesUnordered::new();
    for _ in 0..w.count {
        if in_flight.len() >= w.confirm {
            let confirm = in_flight.next().await.expect("one in flight");
            assert!(confirm.expect("confirm").is_ack(), "nack");
        }
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
        in_flight.push(confirm);
    }
    while let Some(confirm) = in_flight.next().await {
        assert!(confirm.expect("confirm").is_ack(), "nack");
    }
    let publish = timer.stop(w.count);

    let consuming = conn.create_channel().await.expect("channel");
    consuming
        .basic_qos(w.prefetch, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let timer = PhaseTimer::start();
    let mut consumer = consuming
        .basic_consume(
            queue,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let mut seen = 0u64;
    while seen < w.count {
        let delivery = consumer
            .next()
            .await
            .expect("consumer ended")
            .expect("delivery");
        assert_eq!(delivery.data.len(), w.size);
        seen += 1;
        if seen.is_multiple_of(w.multi_ack_every) || seen == w.count {
            delivery
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    let consume = timer.stop(seen);
    conn.close(200, "bye".into()).await.expect("close");
    report("lapin", &w, publish, consume);
}
