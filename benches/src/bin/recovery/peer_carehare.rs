//! The workload on carehare: `connect_recovering` with the default
//! `RecoveryOptions`, a `RecoveringPublisher` and a `RecoveringConsumer`.
//! Nothing else: republishing what was unconfirmed is the publisher's
//! job (`Republish::Unconfirmed`, the default).

use std::sync::Arc;
use std::time::Duration;

use carehare_tokio::{
    AMQPValue, BasicProperties, BoxFuture, ConnectOptions, Connection, ConsumerOptions, Error,
    FieldTable, QueueOptions, RecoveryEvent, RecoveryOptions,
};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::record::Recorder;
use crate::{PER_TICK, PREFETCH, Peer, TICK, WINDOW, body, parse_id};

pub fn queue_options(quorum: bool) -> QueueOptions {
    let mut arguments = FieldTable::default();
    if quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    QueueOptions {
        durable: true,
        arguments,
        ..Default::default()
    }
}

pub async fn start(
    url: &str,
    queue: &str,
    quorum: bool,
    rec: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<Peer, String> {
    let options = ConnectOptions::from_url(url).map_err(|e| e.to_string())?;
    let name = queue.to_string();
    let rc = carehare_tokio::connect_recovering(
        options,
        RecoveryOptions::default(),
        move |c: Connection| -> BoxFuture<'static, Result<String, Error>> {
            let name = name.clone();
            Box::pin(async move {
                c.queue_declare(&name, queue_options(quorum)).await?;
                Ok(name)
            })
        },
    )
    .await
    .map_err(|e| e.to_string())?;

    let mut tasks = Vec::new();
    let mut events = rc.events();
    let r = rec.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                RecoveryEvent::Disconnected { cause } => r.note(format!("disconnected: {cause}")),
                RecoveryEvent::GaveUp { cause } => r.note(format!("gave up: {cause}")),
                RecoveryEvent::Recovered { downtime } => {
                    r.note(format!("recovered after {:.1} s", downtime.as_secs_f64()))
                }
                _ => {}
            }
        }
    }));

    let consumer = Arc::new(rc.consumer(
        |q: &String| q.clone(),
        ConsumerOptions {
            prefetch_count: PREFETCH,
            ..Default::default()
        },
    ));
    let c = consumer.clone();
    let r = rec.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            match c.next().await {
                Ok(m) => {
                    if let Some(id) = parse_id(&m.body) {
                        r.delivered(id);
                    }
                    if !c.ack(m.tag) {
                        r.stale_ack();
                    }
                }
                Err(e) => {
                    r.note(format!("consumer ended: {e}"));
                    return;
                }
            }
        }
    }));

    let publisher = rc.publisher(WINDOW);
    let properties = BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    };
    let queue = queue.to_string();
    let r = rec.clone();
    tasks.push(tokio::spawn(async move {
        let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<u64>();
        let send = |id: u64, again: bool| {
            let publisher = publisher.clone();
            let properties = properties.clone();
            let queue = queue.clone();
            let r = r.clone();
            let retry_tx = retry_tx.clone();
            async move {
                r.published(id, again);
                match publisher
                    .publish_with(body(id), "", &queue, &properties)
                    .await
                {
                    Ok(confirmation) => {
                        tokio::spawn(async move {
                            match confirmation.await {
                                Ok(()) => r.confirmed(id),
                                Err(e) => {
                                    if matches!(e, Error::ServerSentNack) {
                                        r.nack();
                                    } else {
                                        r.confirm_error(&e.to_string());
                                    }
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    let _ = retry_tx.send(id);
                                }
                            }
                        });
                    }
                    Err(e) => {
                        r.publish_error(&e.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = retry_tx.send(id);
                    }
                }
            }
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = 0u64;
        loop {
            tokio::select! {
                biased;
                Some(id) = retry_rx.recv() => send(id, true).await,
                _ = tick.tick() => {
                    if *stop.borrow() {
                        continue;
                    }
                    for _ in 0..PER_TICK {
                        send(next, false).await;
                        next += 1;
                    }
                }
            }
        }
    }));

    let close = Box::pin(async move {
        consumer.close().await;
        let _ = rc.close().await;
    });
    Ok(Peer { tasks, close })
}
