//! The workload on lapin, with its automatic recovery as its README and
//! `ConnectionProperties::enable_auto_recover` describe it: after a
//! recoverable error on a channel, `channel.wait_for_recovery(error)`,
//! then carry on. Publisher confirms are on. A publish whose confirm fails
//! (lapin fails every pending confirm when the connection goes) or is
//! nacked is published again after recovery, as an at-least-once
//! publisher on lapin has to: lapin itself does not.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::record::Recorder;
use crate::{PER_TICK, PREFETCH, Peer, TICK, WINDOW, body, parse_id};

/// After a recoverable error: wait for lapin to recover the channel. If it
/// says recovery is not possible for that error, pause briefly and let the
/// caller try again (the run's deadline decides whether it recovered).
async fn wait(channel: &Channel, error: lapin::Error, rec: &Recorder) {
    if let Err(e) = channel.wait_for_recovery(error).await {
        rec.refused_wait();
        rec.note(format!("wait_for_recovery refused: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn start(
    url: &str,
    queue: &str,
    quorum: bool,
    rec: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<Peer, String> {
    let e = |e: lapin::Error| e.to_string();
    let conn = Connection::connect(url, ConnectionProperties::default().enable_auto_recover())
        .await
        .map_err(e)?;
    let publishing = conn.create_channel().await.map_err(e)?;
    let mut arguments = FieldTable::default();
    if quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    publishing
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .map_err(e)?;
    publishing
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(e)?;
    let consuming = conn.create_channel().await.map_err(e)?;
    consuming
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(e)?;
    let mut consumer = consuming
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(e)?;

    let mut tasks = Vec::new();
    if std::env::var_os("RECOVERY_DEBUG").is_some() {
        let (c, p, k) = (conn.status().clone(), publishing.clone(), consuming.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                eprintln!(
                    "   lapin: connection {:?}, publishing {:?}, consuming {:?}",
                    c,
                    p.status(),
                    k.status()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    let r = rec.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            match consumer.next().await {
                Some(Ok(delivery)) => {
                    if let Some(id) = parse_id(&delivery.data) {
                        r.delivered(id);
                    }
                    // An ack for a delivery of a lost connection fails:
                    // RabbitMQ redelivers the message.
                    if delivery.ack(BasicAckOptions::default()).await.is_err() {
                        r.stale_ack();
                    }
                }
                Some(Err(error)) => wait(&consuming, error, &r).await,
                None => {
                    r.note("consumer ended".into());
                    return;
                }
            }
        }
    }));

    let queue = queue.to_string();
    let r = rec.clone();
    let channel = publishing.clone();
    tasks.push(tokio::spawn(async move {
        let window = Arc::new(Semaphore::new(WINDOW));
        let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<u64>();
        let send = |id: u64, again: bool| {
            let channel = channel.clone();
            let queue = queue.clone();
            let r = r.clone();
            let retry_tx = retry_tx.clone();
            let window = window.clone();
            async move {
                let Ok(permit) = window.acquire_owned().await else {
                    return;
                };
                r.published(id, again);
                let properties = BasicProperties::default().with_delivery_mode(2);
                loop {
                    let published = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &body(id),
                            properties.clone(),
                        )
                        .await;
                    match published {
                        Ok(confirm) => {
                            tokio::spawn(async move {
                                let _permit = permit;
                                match confirm.await {
                                    Ok(c) if c.is_ack() => r.confirmed(id),
                                    Ok(_) => {
                                        r.nack();
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                        let _ = retry_tx.send(id);
                                    }
                                    Err(error) => {
                                        r.confirm_error(&error.to_string());
                                        wait(&channel, error, &r).await;
                                        let _ = retry_tx.send(id);
                                    }
                                }
                            });
                            return;
                        }
                        Err(error) => {
                            r.publish_error(&error.to_string());
                            wait(&channel, error, &r).await;
                        }
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
        let _ = conn.close(200, "bye".into()).await;
    });
    Ok(Peer { tasks, close })
}
