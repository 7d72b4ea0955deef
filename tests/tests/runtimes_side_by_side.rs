//! A smol connection and a tokio connection in one process, at the same
//! time, each driven by its own runtime.
//!
//! The smol side runs on a plain thread with no tokio runtime, so if
//! anything in its path (connect, timers, the driver) touched tokio, it
//! would panic and the round trip would time out. The tokio side runs
//! inside a multi-threaded tokio runtime. The two meet after declaring
//! their queues, so both connections are open and busy at once.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use bytes::Bytes;
use carehare_client::{Connection, QueueOptions, Runtime};
use carehare_tests::scenarios::{options, within};

const MESSAGES: u32 = 1000;
const LIMIT: Duration = Duration::from_secs(60);

/// Tells the other side this one is ready and waits (bounded) for it.
fn meet(ready: Sender<()>, other: Receiver<()>) {
    ready.send(()).unwrap();
    other
        .recv_timeout(Duration::from_secs(30))
        .expect("the other runtime's connection never got ready");
}

/// Declares an exclusive queue, meets the other side, then publishes
/// `MESSAGES` messages with confirms and consumes them in order.
async fn round_trip<M>(connection: Connection, label: &str, meet: M)
where
    M: Future<Output = ()>,
{
    let queue = connection
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    meet.await;
    let confirms: Vec<_> = (0..MESSAGES)
        .map(|i| connection.publish(format!("{label}-{i}"), "", &queue))
        .collect();
    for confirm in futures_util::future::join_all(confirms).await {
        confirm.unwrap();
    }
    let consumer = connection.acking_consumer(&queue, 100).await.unwrap();
    for i in 0..MESSAGES {
        let (body, tag) = consumer.next_delivery().await.unwrap();
        assert_eq!(body, Bytes::from(format!("{label}-{i}")));
        consumer.ack(tag);
    }
    consumer.close().await;
    connection.close().await.unwrap();
}

#[test]
fn smol_and_tokio_connections_run_side_by_side() {
    let (smol_ready, smol_ready_rx) = channel();
    let (tokio_ready, tokio_ready_rx) = channel();

    let smol_side = std::thread::spawn(move || {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "the smol side must have no tokio runtime to lean on"
        );
        smol::block_on(async {
            let rt: Arc<dyn Runtime> = Arc::new(carehare_smol::Smol);
            within(&rt, LIMIT, async {
                let connection = carehare_smol::connect_with(options()).await.unwrap();
                let meet = smol::unblock(move || meet(smol_ready, tokio_ready_rx));
                round_trip(connection, "smol", meet).await;
            })
            .await;
        });
    });

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());
            within(&rt, LIMIT, async {
                let connection = carehare_tokio::connect_with(options()).await.unwrap();
                let meet = async {
                    tokio::task::spawn_blocking(move || meet(tokio_ready, smol_ready_rx))
                        .await
                        .unwrap()
                };
                round_trip(connection, "tokio", meet).await;
            })
            .await;
        });

    smol_side.join().expect("the smol side failed");
}
