//! The end-to-end workload on amqprs, written the way its docs do it: a
//! channel callback receives the publisher confirms (`publish_ack`, which
//! may be `multiple`), and a semaphore keeps at most `confirm` unconfirmed;
//! the consumer is `basic_consume_rx`, acked with `multiple`.

use std::sync::Arc;

use amqprs::callbacks::{ChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::error::Error as AmqprsError;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;

type Result<T> = std::result::Result<T, AmqprsError>;
use carehare_benches::e2e::{PhaseTimer, Workload, host_port, report, runtime};
use tokio::sync::Semaphore;

/// Releases one window slot per confirmed message.
struct Confirms {
    window: Arc<Semaphore>,
    settled: u64,
}

#[async_trait]
impl ChannelCallback for Confirms {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<()> {
        panic!("channel closed by the server: {close}");
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<()> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let tag = ack.delivery_tag();
        let n = if ack.mutiple() { tag - self.settled } else { 1 };
        self.settled = self.settled.max(tag);
        self.window.add_permits(n as usize);
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        panic!("nack {}", nack.delivery_tag());
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        panic!("returned");
    }
}

fn main() {
    // `#[tokio::main]`'s multi-thread runtime, or `PEER_RUNTIME=current_thread`
    // to compare with a current-thread peer on the same runtime.
    runtime(true).block_on(run(Workload::from_args()));
}

async fn run(w: Workload) {
    let body = w.body();
    let (host, port) = host_port(&w.url);
    let conn = Connection::open(&OpenConnectionArguments::new(&host, port, "guest", "guest"))
        .await
        .expect("connect");
    conn.register_callback(DefaultConnectionCallback)
        .await
        .expect("callback");
    let publisher = conn.open_channel(None).await.expect("channel");
    let window = Arc::new(Semaphore::new(w.confirm));
    publisher
        .register_callback(Confirms {
            window: window.clone(),
            settled: 0,
        })
        .await
        .expect("callback");
    let (queue, _, _) = publisher
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await
        .expect("queue.declare")
        .expect("declare-ok");
    publisher
        .confirm_select(ConfirmSelectArguments::default())
        .await
        .expect("confirm.select");

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
    report("amqprs", &w, publish, consume);
}
