//! Tests on the local 3-node cluster (`test-server/cluster-start.sh`):
//! quorum queues, streams read from an offset, and publishing through the
//! loss of a quorum queue's leader on a recovering connection, with the
//! reconnect recipe (`carehare_examples::reconnect`).
//!
//! They stop nodes: run under `flock -o /tmp/carehare-cluster.lock` (as
//! `scripts/test` does); inside this binary they take turns ([`serial`]).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use carehare_examples::reconnect::{
    drain_ids, lock, numbered, publish_all, recovery_options, watch,
};
use carehare_tests::cluster::{
    DeleteQueue, NodeDown, leader_of, node_is_up, node_port, node_url, serial,
};
use carehare_tests::scenarios::unique;
use carehare_tokio::{
    AMQPValue, Address, ConnectOptions, Connection, ConsumerOptions, Error, FieldTable, Message,
    QueueOptions, RecoveryOptions, Runtime, UsageError,
};
use futures_util::FutureExt;

/// Runs a test body on tokio, failing it (rather than hanging) after 3 min.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(180), f)
                .await
                .expect("the test took over 3 minutes")
        })
}

/// Every node, in the order 1, 2, 3.
fn all_nodes() -> ConnectOptions {
    let mut options = ConnectOptions::from_urls((1..=3).map(node_url)).unwrap();
    options.address_timeout = Duration::from_secs(3);
    options
}

/// A test needs all three nodes: say so clearly if the cluster is not up.
fn require_cluster() {
    for n in 1..=3 {
        assert!(
            node_is_up(n),
            "cluster node {n} is not running: start the cluster with test-server/cluster-start.sh"
        );
    }
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn queue_of_type(kind: &str) -> QueueOptions {
    QueueOptions {
        durable: true,
        arguments: args(&[("x-queue-type", AMQPValue::LongString(kind.into()))]),
        ..Default::default()
    }
}

/// An integer header, whatever width RabbitMQ chose.
fn int_header(m: &Message, name: &str) -> Option<i64> {
    match m.properties.headers.as_ref()?.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortUInt(v) => Some((*v).into()),
        AMQPValue::ShortInt(v) => Some((*v).into()),
        AMQPValue::ShortUInt(v) => Some((*v).into()),
        AMQPValue::LongInt(v) => Some((*v).into()),
        AMQPValue::LongUInt(v) => Some((*v).into()),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

async fn next(rt: &Arc<dyn Runtime>, consumer: &carehare_tokio::AckingConsumer) -> Message {
    carehare_tests::scenarios::within(rt, Duration::from_secs(20), consumer.next())
        .await
        .unwrap()
}

/// Runs `body`, then deletes `queue` whether it passed or panicked.
async fn with_queue<F: std::future::Future<Output = ()>>(c: &Connection, queue: &str, body: F) {
    let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    let _ = c.queue_delete(queue, false, false).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Quorum queue: declared, published to with confirms, consumed; a nack
/// with requeue redelivers with `x-delivery-count` counting up (RabbitMQ
/// 3.10 sets it on redelivery), readable from `Message::properties.headers`.
#[test]
fn quorum_queue_confirms_consumes_and_counts_redeliveries() {
    let _serial = serial();
    require_cluster();
    block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());
        let c = carehare_tokio::connect_with(all_nodes()).await.unwrap();
        let q = unique("quorum");
        c.queue_declare(&q, queue_of_type("quorum")).await.unwrap();
        with_queue(&c, &q, async {
            // A quorum queue lives on all three nodes.
            assert!((1..=3).contains(&leader_of(&q, 1)));
            // One message first: a requeued message need not come back
            // before later ones on a quorum queue.
            c.publish("q0", "", &q).await.unwrap();
            let consumer = c
                .consumer(
                    &q,
                    ConsumerOptions {
                        prefetch_count: 1,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let first = next(&rt, &consumer).await;
            assert_eq!(first.body, Bytes::from("q0"));
            assert!(!first.redelivered);
            assert_eq!(
                int_header(&first, "x-delivery-count"),
                None,
                "{:?}",
                first.properties
            );
            let mut tag = first.delivery_tag;
            for count in 1..=2 {
                consumer.nack(tag, true);
                // Requeued at the head of the queue.
                let again = next(&rt, &consumer).await;
                assert_eq!(again.body, Bytes::from("q0"));
                assert!(again.redelivered);
                assert_eq!(
                    int_header(&again, "x-delivery-count"),
                    Some(count),
                    "{:?}",
                    again.properties
                );
                tag = again.delivery_tag;
            }
            consumer.ack(tag);
            for i in 1..5 {
                c.publish(format!("q{i}"), "", &q).await.unwrap();
            }
            for i in 1..5 {
                let m = next(&rt, &consumer).await;
                assert_eq!(m.body, Bytes::from(format!("q{i}")));
                consumer.ack(m.delivery_tag);
            }
            consumer.close().await;
        })
        .await;
        c.close().await.unwrap();
    });
}

/// A stream read from `x-stream-offset` = `first`, a number, and a
/// timestamp; every delivery carries its offset. Streams need a prefetch:
/// 0 is refused locally, before anything is sent.
#[test]
fn stream_is_read_from_first_a_number_and_a_timestamp() {
    let _serial = serial();
    require_cluster();
    block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());
        let c = carehare_tokio::connect_with(all_nodes()).await.unwrap();
        let s = unique("stream");
        c.queue_declare(&s, queue_of_type("stream")).await.unwrap();
        with_queue(&c, &s, async {
            for i in 0..10 {
                c.publish(format!("s{i}"), "", &s).await.unwrap();
            }
            // Chunks carry a millisecond timestamp, the offset spec a
            // seconds one: leave a clear second between the two halves.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let boundary = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            tokio::time::sleep(Duration::from_millis(1100)).await;
            for i in 10..20 {
                c.publish(format!("s{i}"), "", &s).await.unwrap();
            }

            let read_from = |offset: AMQPValue| {
                let c = c.clone();
                let rt = rt.clone();
                let s = s.clone();
                async move {
                    let options = ConsumerOptions {
                        prefetch_count: 50,
                        arguments: args(&[("x-stream-offset", offset)]),
                        ..Default::default()
                    };
                    let consumer = c.consumer(&s, options).await.unwrap();
                    let mut got = Vec::new();
                    // The stream has 20 messages: read to the end.
                    loop {
                        let m = next(&rt, &consumer).await;
                        let offset = int_header(&m, "x-stream-offset");
                        assert!(offset.is_some(), "{:?}", m.properties);
                        got.push((String::from_utf8(m.body.to_vec()).unwrap(), offset.unwrap()));
                        consumer.ack(m.delivery_tag);
                        if m.body == "s19" {
                            break;
                        }
                    }
                    consumer.close().await;
                    got
                }
            };
            let all = read_from(AMQPValue::LongString("first".into())).await;
            let bodies: Vec<&str> = all.iter().map(|(b, _)| b.as_str()).collect();
            let expected: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
            assert_eq!(bodies, expected);
            let offsets: Vec<i64> = all.iter().map(|(_, o)| *o).collect();
            assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");

            // From a number: that message's offset and on.
            let at = offsets[7];
            let from_seven = read_from(AMQPValue::LongLongInt(at)).await;
            assert_eq!(
                from_seven.first().map(|(b, o)| (b.as_str(), *o)),
                Some(("s7", at)),
                "{from_seven:?}"
            );
            assert_eq!(from_seven.len(), 13);

            // From a timestamp: the second half.
            let from_time = read_from(AMQPValue::Timestamp(boundary)).await;
            assert_eq!(
                from_time.first().map(|(b, _)| b.as_str()),
                Some("s10"),
                "{from_time:?}"
            );
            assert_eq!(from_time.len(), 10);

            // A stream consumer without a prefetch is refused here.
            let unlimited = ConsumerOptions {
                prefetch_count: 0,
                arguments: args(&[("x-stream-offset", AMQPValue::LongString("first".into()))]),
                ..Default::default()
            };
            match c.consumer(&s, unlimited).await {
                Err(Error::Usage(UsageError::InvalidArgument(what))) => {
                    assert!(what.contains("prefetch_count"), "{what}")
                }
                other => panic!("expected a local refusal, got {other:?}"),
            }
        })
        .await;
        c.close().await.unwrap();
    });
}

/// Publishes N messages with confirms to a quorum queue while the node that
/// leads it (and that the publisher is connected to) is stopped. The
/// publisher is the reconnect recipe: a recovering connection moves to
/// another node with backoff and publishes again what was not confirmed.
/// Every confirmed message must then be consumed: lost = 0. Also: with
/// that node down, a fresh connect skips it.
#[test]
fn publishing_survives_the_quorum_leader_stopping() {
    publishing_survives_the_quorum_leader_going("stop");
}

/// The same with the leader's node killed (SIGKILL): no `connection.close`,
/// the socket just ends.
#[test]
fn publishing_survives_the_quorum_leader_being_killed() {
    publishing_survives_the_quorum_leader_going("kill");
}

fn publishing_survives_the_quorum_leader_going(how: &'static str) {
    // At least this many; more if the node takes long to stop (the paced
    // batches go on until it is down).
    const N: u64 = 3_000;
    let _serial = serial();
    require_cluster();
    block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());
        let setup = carehare_tokio::connect_with(all_nodes()).await.unwrap();
        let q = unique("failover");
        // Deleted even if the test fails: a durable queue outlives it.
        let _cleanup = DeleteQueue(q.clone());
        setup
            .queue_declare(&q, queue_of_type("quorum"))
            .await
            .unwrap();
        let leader = leader_of(&q, 1);
        let others: Vec<u8> = (1..=3).filter(|&n| n != leader).collect();
        // The publisher starts on the leader's node, so stopping it is a
        // real failover for the client, not only for the queue.
        let mut options =
            ConnectOptions::from_urls([leader, others[0], others[1]].map(node_url)).unwrap();
        options.amqp.heartbeat = 5;
        options.address_timeout = Duration::from_secs(3);
        let recovery = recovery_options(Duration::from_secs(60));
        let connection = carehare_tokio::connect_recovering(options.clone(), recovery, |_| {
            Box::pin(async { Ok(()) })
        })
        .await
        .unwrap();
        let (report, follow) = watch(&connection).await.unwrap();
        tokio::spawn(follow);
        let publisher = connection.publisher(1000);

        let mut sent = 0;
        // The longest a batch waited for its confirms: the stall a
        // publisher sees across the failover.
        let mut longest_batch = Duration::ZERO;
        let mut publish = async |first: u64, n: u64| {
            let t = Instant::now();
            publish_all(&rt, &publisher, "", &q, numbered(first, n), &report)
                .await
                .unwrap();
            longest_batch = longest_batch.max(t.elapsed());
        };
        // A third before the stop, in batches of 50.
        while sent < N / 3 {
            publish(sent, 50).await;
            sent += 50;
        }
        let stop_started = Instant::now();
        let mut down = NodeDown::in_background(how, leader);
        // Small paced batches for as long as the node takes to stop, so the
        // loss hits publishes in flight. Not bounded by N: a fast publisher
        // would otherwise finish before the node is down, and meet no
        // failover at all.
        while !down.is_stopped() {
            publish(sent, 20).await;
            sent += 20;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        down.wait_stopped();
        let stop_took = stop_started.elapsed();
        let failovers_during_stop = lock(&report).failovers;
        // At least one batch after the stop, so the publisher meets it.
        loop {
            let n = N.saturating_sub(sent).clamp(20, 100);
            publish(sent, n).await;
            sent += n;
            if sent >= N {
                break;
            }
        }
        let total = sent;
        drop(publisher);
        connection.close().await.unwrap();
        let report = lock(&report).clone();

        let leader_address = Address::new("127.0.0.1", node_port(leader));
        assert_eq!(report.confirmed as u64, total, "{report:?}");
        assert!(
            report.failovers >= 1,
            "the leader's stop was not noticed: {report:?}"
        );
        assert_eq!(report.connected_to.first(), Some(&leader_address));
        assert_ne!(report.connected_to.last(), Some(&leader_address));

        // Connect with one node down: the client skips to the next.
        let reader =
            carehare_tokio::connect_recovering(options.clone(), RecoveryOptions::default(), |_| {
                Box::pin(async { Ok(()) })
            })
            .await
            .unwrap();
        let skipping = reader.connection().await.unwrap();
        assert_ne!(skipping.address(), &leader_address);
        assert!(
            others
                .iter()
                .any(|&n| skipping.address().port == node_port(n))
        );
        let new_leader = leader_of(&q, others[0]);
        assert_ne!(new_leader, leader);

        let queue = q.clone();
        let consumer = reader.consumer(
            move |_| queue.clone(),
            ConsumerOptions {
                prefetch_count: 500,
                ..Default::default()
            },
        );
        let drained = drain_ids(
            &rt,
            &consumer,
            total as usize,
            Duration::from_millis(500),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        consumer.close().await;
        let expected: BTreeSet<u64> = (0..total).collect();
        let lost = expected.difference(&drained.ids).count();
        eprintln!(
            "cluster failover ({how}): N={total} confirmed={} failovers={} nacks={} \
             outages={:?} longest_batch={longest_batch:?} (leader c{leader} {how} took {stop_took:?}, \
             failovers noticed during the stop: {failovers_during_stop}; nodes {:?}) \
             lost={lost} duplicates={} new leader c{new_leader}",
            report.confirmed,
            report.failovers,
            report.nacks,
            report.outages,
            report
                .connected_to
                .iter()
                .map(|a| a.port)
                .collect::<Vec<_>>(),
            drained.duplicates,
        );
        assert_eq!(lost, 0, "confirmed messages were lost");
        assert!(drained.ids.is_subset(&expected));
        skipping.queue_delete(&q, false, false).await.unwrap();
        reader.close().await.unwrap();
        drop(setup);
        // `down` starts the node again.
        drop(down);
    });
}
