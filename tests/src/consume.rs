//! Scenarios for the consuming surface (issue 5): consumer options,
//! settling (ack, ack multiple, nack, reject) and `basic.get`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carehare_client::carehare_core::types::ShortStr;
use carehare_client::{
    AMQPValue, AckingConsumer, BasicProperties, Connection, ConnectionError, ConsumerOptions,
    Error, FieldTable, QueueOptions, Runtime,
};
use futures_util::future::{Either, select};

use crate::scenarios::{args, connect, connect_named, ready, sleep, unique, within};

/// This module's scenarios, for [`scenarios!`](macro@crate::scenarios).
/// They expand inside a `consume` module, so `cargo test consume` selects
/// exactly this group (`consume::get_on_an_empty_queue_is_none`...).
#[macro_export]
macro_rules! consume_scenarios {
    ($block_on:path, $runtime:expr) => {
        #[allow(unused_imports)]
        mod consume {
            use super::*;
            $crate::scenarios!($block_on, $runtime;
            consume::a_chosen_consumer_tag_is_used,
            consume::an_exclusive_consumer_refuses_a_second_one_with_403,
            consume::the_high_priority_consumer_gets_messages_while_it_has_capacity,
            consume::a_prefetch_size_is_refused_with_a_typed_error,
            consume::a_stale_consumer_never_touches_the_channel_that_reuses_its_id,
            consume::a_stream_is_consumed_from_the_first_offset,
            consume::a_stream_chunk_past_the_prefetch_is_buffered,
            consume::the_envelope_and_all_properties_arrive,
            consume::ack_multiple_acks_everything_up_to_the_tag,
            consume::held_acks_reach_rabbitmq_before_a_close_and_on_their_own,
            consume::nack_with_requeue_redelivers,
            consume::nack_multiple_with_requeue_redelivers_everything_up_to_the_tag,
            consume::nack_and_reject_without_requeue_dead_letter,
            consume::reject_with_requeue_redelivers,
            consume::get_on_an_empty_queue_is_none,
            consume::get_returns_the_message_and_the_count_and_ack_removes_it,
            consume::a_dropped_unsettled_get_message_is_requeued,
            consume::get_nack_and_reject_settle_like_a_consumer,
            consume::next_and_next_delivery_lose_nothing_when_cancelled_by_a_timer,
            consume::a_no_ack_consumer_gets_everything_with_reading_paused_on_a_full_buffer,
            consume::an_acker_settles_from_a_spawned_task_and_nothing_after_the_end,
            );
        }
    };
}

const STEP: Duration = Duration::from_secs(10);

/// An exclusive queue with a server-chosen name.
async fn exclusive_queue(c: &Connection, arguments: FieldTable) -> String {
    let options = QueueOptions {
        exclusive: true,
        arguments,
        ..Default::default()
    };
    c.queue_declare("", options)
        .await
        .unwrap()
        .queue
        .to_string()
}

/// Checks, a few times over ~half a second, that `queue` has no ready
/// message: a requeue on channel close happens asynchronously.
async fn stays_empty(rt: &Arc<dyn Runtime>, c: &Connection, queue: &str) {
    for _ in 0..5 {
        sleep(rt, Duration::from_millis(100)).await;
        assert_eq!(ready(c, queue).await, 0, "{queue} should stay empty");
    }
}

/// RabbitMQ's count of `queue`'s delivered, unacked messages.
fn unacked(queue: &str) -> u32 {
    let list = crate::rabbitmqctl("list_queues name messages_unacknowledged --no-table-headers -q");
    list.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(name, _)| *name == queue)
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no queue {queue} in {list}"))
}

/// Whether `consumer` gets no message within `d`.
async fn nothing_within(rt: &Arc<dyn Runtime>, d: Duration, consumer: &AckingConsumer) -> bool {
    let next = std::pin::pin!(consumer.next());
    match select(next, rt.sleep_until(Instant::now() + d)).await {
        Either::Left((m, _)) => panic!("expected no message, got {m:?}"),
        Either::Right(_) => true,
    }
}

/// The string value of a `LongString` table entry.
fn long_string<'a>(table: &'a FieldTable, key: &str) -> Option<&'a [u8]> {
    match table.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

// ---- Cancel safety -------------------------------------------------------------

/// 2,000 messages are published, in fives with a pause of a millisecond
/// in between, while a consumer reads them with `next()`
/// and `next_delivery()` in turn, each read raced against a timer of 0.1 to
/// 1 ms that cancels it when it fires first: every message arrives once,
/// in order, and many reads were cancelled.
pub async fn next_and_next_delivery_lose_nothing_when_cancelled_by_a_timer(rt: Arc<dyn Runtime>) {
    const N: usize = 2000;
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let consumer = c.acking_consumer(&q, 50).await.unwrap();
    let publisher = c.publisher(100);
    let publish = async {
        let mut confirmations = Vec::with_capacity(N);
        for i in 0..N {
            confirmations.push(publisher.publish(i.to_string(), "", &q).await.unwrap());
            // Pauses, so that reads often wait, and their timers fire.
            if i % 5 == 4 {
                sleep(&rt, Duration::from_millis(1)).await;
            }
        }
        for confirmation in confirmations {
            confirmation.await.unwrap();
        }
    };
    let consume = async {
        let mut got: Vec<String> = Vec::with_capacity(N);
        let mut cancelled = 0usize;
        let mut turn = 0u64;
        while got.len() < N {
            // 0.1, 0.4, 0.7, 1.0 ms, and again.
            let wait = Duration::from_micros(100 + 300 * (turn % 4));
            let by_delivery = turn % 2 == 1;
            turn += 1;
            let read = async {
                if by_delivery {
                    consumer.next_delivery().await
                } else {
                    consumer.next().await.map(|m| (m.body, m.delivery_tag))
                }
            };
            let timer = rt.sleep_until(Instant::now() + wait);
            let outcome = match select(std::pin::pin!(read), timer).await {
                Either::Left((read, _)) => Some(read),
                Either::Right(_) => None,
            };
            match outcome {
                Some(Ok((body, tag))) => {
                    consumer.ack(tag);
                    got.push(String::from_utf8(body.to_vec()).unwrap());
                }
                Some(Err(e)) => panic!("read {turn}: {e}"),
                None => cancelled += 1,
            }
        }
        (got, cancelled)
    };
    let ((), (got, cancelled)) = within(
        &rt,
        Duration::from_secs(60),
        futures_util::future::join(publish, consume),
    )
    .await;
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    if got != expected {
        let first = got.iter().zip(&expected).position(|(a, b)| a != b);
        panic!("{} messages, first difference at {first:?}", got.len());
    }
    // About 400 in practice; the pauses alone make 400 waits.
    assert!(cancelled >= 100, "only {cancelled} reads were cancelled");
    // Nothing is left over: the next read finds nothing.
    let more = match select(
        Box::pin(consumer.next()),
        rt.sleep_until(Instant::now() + Duration::from_millis(200)),
    )
    .await
    {
        Either::Left((m, _)) => Some(m),
        Either::Right(_) => None,
    };
    assert!(more.is_none(), "a message too many: {more:?}");
    consumer.close().await;
    c.close().await.unwrap();
}

// ---- Consumer options ----------------------------------------------------------

/// `consumer_tag` is the tag RabbitMQ uses, and deliveries carry it.
pub async fn a_chosen_consumer_tag_is_used(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let tag = unique("my-tag");
    let options = ConsumerOptions {
        consumer_tag: tag.clone(),
        prefetch_count: 1,
        ..Default::default()
    };
    let consumer = c.consumer(&q, options).await.unwrap();
    assert_eq!(consumer.consumer_tag(), tag);
    c.publish("tagged", "", &q).await.unwrap();
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    assert_eq!(m.consumer_tag.as_str(), tag);
    consumer.ack(m.delivery_tag);
    // A server-chosen tag is RabbitMQ's `amq.ctag-...`.
    let other = c.acking_consumer(&q, 1).await.unwrap();
    assert!(other.consumer_tag().starts_with("amq.ctag-"), "{other:?}");
    // A tag over 255 bytes is refused before anything is sent.
    let too_long = ConsumerOptions {
        consumer_tag: "t".repeat(256),
        ..Default::default()
    };
    assert!(matches!(
        c.consumer(&q, too_long).await,
        Err(Error::Usage(_))
    ));
}

/// An exclusive consumer makes a second consumer fail with 403
/// ACCESS_REFUSED; the connection and the first consumer go on.
pub async fn an_exclusive_consumer_refuses_a_second_one_with_403(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let exclusive = ConsumerOptions {
        exclusive: true,
        prefetch_count: 1,
        ..Default::default()
    };
    let first = c.consumer(&q, exclusive).await.unwrap();
    match c.acking_consumer(&q, 1).await {
        Err(Error::ChannelClosedByServer(r)) => {
            assert_eq!(r.code, 403, "{r}");
            assert!(r.text.starts_with("ACCESS_REFUSED"), "{r}");
        }
        other => panic!("expected 403 ACCESS_REFUSED, got {other:?}"),
    }
    c.publish("still mine", "", &q)
        .await
        .expect("the connection is still usable");
    let m = within(&rt, STEP, first.next()).await.unwrap();
    assert_eq!(m.body, Bytes::from_static(b"still mine"));
    first.ack(m.delivery_tag);
}

/// With consumer priorities 10 and 0 and prefetch 1, the high-priority
/// consumer gets the messages while it has capacity; the other only gets
/// one while the first is full.
pub async fn the_high_priority_consumer_gets_messages_while_it_has_capacity(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let with_priority = |priority| ConsumerOptions {
        prefetch_count: 1,
        priority: Some(priority),
        ..Default::default()
    };
    let low = c.consumer(&q, with_priority(0)).await.unwrap();
    let high = c.consumer(&q, with_priority(10)).await.unwrap();

    c.publish("1", "", &q).await.unwrap();
    let m1 = within(&rt, STEP, high.next()).await.unwrap();
    assert_eq!(m1.body, Bytes::from_static(b"1"));
    assert!(nothing_within(&rt, Duration::from_millis(200), &low).await);

    // `high` is full (one unacked): the next one goes to `low`.
    c.publish("2", "", &q).await.unwrap();
    let m2 = within(&rt, STEP, low.next()).await.unwrap();
    assert_eq!(m2.body, Bytes::from_static(b"2"));

    // Once `high` has room again, it is preferred again.
    high.ack(m1.delivery_tag);
    low.ack(m2.delivery_tag);
    sleep(&rt, Duration::from_millis(200)).await; // let the acks land
    for i in 3..6 {
        c.publish(i.to_string(), "", &q).await.unwrap();
        let m = within(&rt, STEP, high.next()).await.unwrap();
        assert_eq!(m.body, Bytes::from(i.to_string()));
        high.ack(m.delivery_tag);
        sleep(&rt, Duration::from_millis(50)).await;
    }
    assert!(nothing_within(&rt, Duration::from_millis(200), &low).await);
}

/// After RabbitMQ closes a consumer's channel, its id is reused by the next
/// channel; the old consumer must neither read from nor ack on it.
pub async fn a_stale_consumer_never_touches_the_channel_that_reuses_its_id(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let qa = exclusive_queue(&c, FieldTable::default()).await;
    let qb = exclusive_queue(&c, FieldTable::default()).await;
    let a = c
        .consumer(
            &qa,
            ConsumerOptions {
                prefetch_count: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // An unknown delivery tag makes RabbitMQ close a's channel (406).
    a.ack(999);
    match a.next().await {
        Err(Error::ChannelClosedByServer(r)) => assert_eq!(r.code, 406, "{r}"),
        other => panic!("expected 406, got {other:?}"),
    }
    let b = c
        .consumer(
            &qb,
            ConsumerOptions {
                prefetch_count: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c.publish("for b", "", &qb).await.unwrap();
    let m = b.next().await.unwrap();
    assert_eq!(m.body, bytes::Bytes::from_static(b"for b"));
    // The stale handle acks "its" tag 1 and reads: neither reaches b's channel.
    a.ack(m.delivery_tag);
    assert!(a.next().await.is_err());
    drop(a);
    b.close().await;
    assert_eq!(
        ready(&c, &qb).await,
        1,
        "b's message was not acked by the stale handle, so it was requeued"
    );
}

/// RabbitMQ implements no byte window: a non-zero `prefetch_size` is
/// refused locally with a typed error, and the connection is untouched.
pub async fn a_prefetch_size_is_refused_with_a_typed_error(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let options = ConsumerOptions {
        prefetch_count: 10,
        prefetch_size: 64 * 1024,
        ..Default::default()
    };
    // RabbitMQ answers a non-zero prefetch_size with a connection-level
    // 540, so the client refuses it before sending anything.
    match c.consumer(&q, options).await {
        Err(Error::Usage(carehare_client::UsageError::Unsupported(what))) => {
            assert!(what.contains("prefetch_size"), "{what}");
        }
        other => panic!("expected a local Unsupported refusal, got {other:?}"),
    }
    // A prefetch of 0 ("unlimited") would leave the buffer unbounded.
    match c.acking_consumer(&q, 0).await {
        Err(Error::Usage(carehare_client::UsageError::InvalidArgument(what))) => {
            assert!(what.contains("prefetch_count"), "{what}");
        }
        other => panic!("expected a local InvalidArgument refusal, got {other:?}"),
    }
    c.consumer(
        &q,
        ConsumerOptions {
            prefetch_count: 10,
            ..Default::default()
        },
    )
    .await
    .expect("the connection is untouched");
}

/// A stream queue consumed from `x-stream-offset` = `first` (with a
/// prefetch, which streams require) shows the messages published before
/// the consumer started.
pub async fn a_stream_is_consumed_from_the_first_offset(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    on_a_stream(&c, "stream", async |name| {
        for i in 0..3 {
            c.publish(format!("s{i}"), "", name).await.unwrap();
        }
        let options = ConsumerOptions {
            prefetch_count: 10,
            arguments: args(&[("x-stream-offset", AMQPValue::LongString("first".into()))]),
            ..Default::default()
        };
        let consumer = c.consumer(name, options).await.unwrap();
        for i in 0..3 {
            let m = within(&rt, STEP, consumer.next()).await.unwrap();
            assert_eq!(m.body, Bytes::from(format!("s{i}")));
            // Each delivery says where in the stream it is.
            let headers = m.properties.headers.as_ref().unwrap();
            assert!(
                headers.contains_key("x-stream-offset"),
                "{:?}",
                m.properties
            );
            consumer.ack(m.delivery_tag);
        }
        consumer.close().await;
    })
    .await;
}

/// RabbitMQ delivers a stream's messages a whole chunk at a time, past the
/// consumer's prefetch. A stream consumer (one with `x-stream-offset`) that
/// is slow to take its messages must not have its connection closed for
/// that: it gets every message.
pub async fn a_stream_chunk_past_the_prefetch_is_buffered(rt: Arc<dyn Runtime>) {
    const N: usize = 2_000;
    let c = connect(&rt).await;
    on_a_stream(&c, "stream-chunk", async |name| {
        // A window of confirms lets the broker batch them into big chunks.
        let publisher = c.publisher(1_000);
        let mut confirmations = Vec::with_capacity(N);
        for i in 0..N {
            confirmations.push(publisher.publish(format!("m{i}"), "", name).await.unwrap());
        }
        for confirmation in confirmations {
            confirmation.await.unwrap();
        }
        let options = ConsumerOptions {
            prefetch_count: 10,
            arguments: args(&[("x-stream-offset", AMQPValue::LongString("first".into()))]),
            ..Default::default()
        };
        // A limit below the prefetch could never hold what RabbitMQ may send.
        let too_small = ConsumerOptions {
            max_buffered: Some(5),
            ..options.clone()
        };
        assert!(matches!(
            c.consumer(name, too_small).await,
            Err(Error::Usage(carehare_client::UsageError::InvalidArgument(
                _
            )))
        ));
        let consumer = c.consumer(name, options).await.unwrap();
        // Take nothing for a while: the first chunk arrives whole.
        sleep(&rt, Duration::from_millis(500)).await;
        for i in 0..N {
            let m = within(&rt, STEP, consumer.next()).await.unwrap();
            assert_eq!(m.body, Bytes::from(format!("m{i}")));
            consumer.ack(m.delivery_tag);
        }
        consumer.close().await;
    })
    .await;
}

/// Declares a durable stream queue named after `prefix`, runs `test` on its
/// name, and deletes the stream whether or not the test panicked: a stream
/// outlives its connection.
async fn on_a_stream(c: &Connection, prefix: &str, test: impl AsyncFnOnce(&str)) {
    let name = unique(prefix);
    let stream = QueueOptions {
        durable: true,
        arguments: args(&[("x-queue-type", AMQPValue::LongString("stream".into()))]),
        ..Default::default()
    };
    c.queue_declare(&name, stream).await.unwrap();
    let outcome =
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(test(&name))).await;
    crate::rabbitmqctl(&format!("delete_queue '{name}'"));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

// ---- The delivery --------------------------------------------------------------

/// The envelope (delivery tag, redelivered, exchange, routing key,
/// consumer tag) and all 14 properties arrive as published.
pub async fn the_envelope_and_all_properties_arrive(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let routing_key = unique("rk");
    c.queue_bind(&q, "amq.direct", &routing_key, FieldTable::default())
        .await
        .unwrap();
    let s = |v: &str| Some(ShortStr::new(v).unwrap());
    let properties = BasicProperties {
        content_type: s("application/json"),
        content_encoding: s("gzip"),
        headers: Some(args(&[
            ("x-trace", AMQPValue::LongString("abc".into())),
            ("attempt", AMQPValue::LongInt(3)),
            ("flag", AMQPValue::Boolean(true)),
        ])),
        delivery_mode: Some(2),
        priority: Some(7),
        correlation_id: s("corr-1"),
        reply_to: s("replies"),
        expiration: s("60000"),
        message_id: s("msg-1"),
        timestamp: Some(1_700_000_000),
        kind: s("order.created"),
        user_id: s("guest"), // must be the login user, or RabbitMQ refuses it
        app_id: s("carehare-tests"),
        cluster_id: s("cluster-1"),
    };
    c.publish_with("{}", "amq.direct", &routing_key, &properties)
        .await
        .unwrap();
    let tag = unique("envelope");
    let options = ConsumerOptions {
        consumer_tag: tag.clone(),
        prefetch_count: 1,
        ..Default::default()
    };
    let consumer = c.consumer(&q, options).await.unwrap();
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    assert_eq!(m.body, Bytes::from_static(b"{}"));
    assert_eq!(m.delivery_tag, 1);
    assert!(!m.redelivered);
    assert_eq!(m.exchange.as_str(), "amq.direct");
    assert_eq!(m.routing_key.as_str(), routing_key);
    assert_eq!(m.consumer_tag.as_str(), tag);
    assert_eq!(*m.properties, properties);
    consumer.ack(m.delivery_tag);
}

// ---- Settling ---------------------------------------------------------------------

/// `ack_multiple(tag)` acks every message up to `tag` and no further: after
/// the consumer closes, only the later ones come back.
pub async fn ack_multiple_acks_everything_up_to_the_tag(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    for i in 0..5 {
        c.publish(format!("m{i}"), "", &q).await.unwrap();
    }
    let consumer = c.acking_consumer(&q, 5).await.unwrap();
    let mut tags = Vec::new();
    for i in 0..5 {
        let m = within(&rt, STEP, consumer.next()).await.unwrap();
        assert_eq!(m.body, Bytes::from(format!("m{i}")));
        tags.push(m.delivery_tag);
    }
    consumer.ack_multiple(tags[2]); // m0, m1, m2
    consumer.close().await;

    let again = c.acking_consumer(&q, 5).await.unwrap();
    for i in 3..5 {
        let m = within(&rt, STEP, again.next()).await.unwrap();
        assert_eq!(
            m.body,
            Bytes::from(format!("m{i}")),
            "only m3 and m4 return"
        );
        assert!(m.redelivered);
        if i == 4 {
            again.ack_multiple(m.delivery_tag);
        }
    }
    assert!(nothing_within(&rt, Duration::from_millis(200), &again).await);
    again.close().await;
    stays_empty(&rt, &c, &q).await;
}

/// A deep prefetch's acks are held back a moment to leave together, and
/// none is lost to it. The consumer gets 50 messages with a prefetch of
/// 300 and acks them all: RabbitMQ counts 50 unacked until the ack is
/// written, under a quarter of the prefetch, so the ack is held. First the
/// connection is closed at once, which sends the held ack before the
/// close; then, with the connection left alone, the hold's bound sends it:
/// 200 ms later RabbitMQ counts nothing unacked, and a close it forces
/// requeues nothing. A lost ack would show as the 50 messages back in the
/// queue.
pub async fn held_acks_reach_rabbitmq_before_a_close_and_on_their_own(rt: Arc<dyn Runtime>) {
    let setup = connect(&rt).await;
    // Not exclusive: it must outlive the consuming connection.
    let q = unique("held-acks");
    setup
        .queue_declare(&q, QueueOptions::default())
        .await
        .unwrap();
    for forced in [false, true] {
        for i in 0..50 {
            setup.publish(format!("m{i}"), "", &q).await.unwrap();
        }
        let (c, name) = connect_named(&rt, "held-acks").await;
        let consumer = c.acking_consumer(&q, 300).await.unwrap();
        let mut last = 0;
        for _ in 0..50 {
            last = within(&rt, STEP, consumer.next())
                .await
                .unwrap()
                .delivery_tag;
        }
        consumer.ack_multiple(last);
        if forced {
            sleep(&rt, Duration::from_millis(200)).await;
            // RabbitMQ has the ack, before anything else could send it.
            assert_eq!(unacked(&q), 0, "the held ack reached RabbitMQ on its own");
            crate::close_connection_named(&name, "carehare test: after a held ack");
            let why = within(&rt, STEP, c.closed()).await;
            assert!(
                matches!(&why, ConnectionError::ClosedByServer(r) if r.code == 320),
                "{why:?}"
            );
        } else {
            c.close().await.unwrap();
        }
        stays_empty(&rt, &setup, &q).await;
    }
    setup.queue_delete(&q, false, false).await.unwrap();
    setup.close().await.unwrap();
}

/// A no-ack consumer (RabbitMQ's autoack): RabbitMQ sends it the whole
/// queue at once; the client reads only while its buffer has room, so a
/// slow reader holds at most its `max_buffered` plus one read's worth.
/// Every message arrives, in order; nothing is acked (settling calls send
/// nothing, so the channel stays up), and the queue is empty at the end
/// without a single ack.
pub async fn a_no_ack_consumer_gets_everything_with_reading_paused_on_a_full_buffer(
    rt: Arc<dyn Runtime>,
) {
    const N: usize = 5000;
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let publisher = c.publisher(1000);
    let mut confirms = Vec::with_capacity(N);
    for i in 0..N {
        confirms.push(publisher.publish(format!("m{i}"), "", &q).await.unwrap());
    }
    for confirm in confirms {
        confirm.await.unwrap();
    }
    // Publishing is over: while the consumer's buffer is full, the
    // connection reads nothing else.
    let options = ConsumerOptions {
        no_ack: true,
        prefetch_count: 50,
        ..Default::default()
    };
    let consumer = c.consumer(&q, options).await.unwrap();
    for i in 0..N {
        let m = within(&rt, STEP, consumer.next()).await.unwrap();
        assert_eq!(m.body, Bytes::from(format!("m{i}")));
        consumer.ack(m.delivery_tag); // sends nothing
        if i == 10 {
            // A slow reader: RabbitMQ has sent far more than 50 by now.
            sleep(&rt, Duration::from_millis(300)).await;
        }
    }
    assert!(nothing_within(&rt, Duration::from_millis(200), &consumer).await);
    consumer.close().await;
    // Nothing goes back to the queue on close (a requeue would come a
    // moment later): no-ack settled everything.
    stays_empty(&rt, &c, &q).await;
    c.close().await.unwrap();
}

/// An `Acker` is `Clone + Send`: moved into spawned tasks, it acks and
/// rejects for the consumer, which goes on reading. Once the consumer is
/// closed, an acker's calls send nothing (a stale tag would otherwise
/// close a channel that reused the id).
pub async fn an_acker_settles_from_a_spawned_task_and_nothing_after_the_end(rt: Arc<dyn Runtime>) {
    fn send_and_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    for i in 0..10 {
        c.publish(format!("m{i}"), "", &q).await.unwrap();
    }
    let consumer = c.acking_consumer(&q, 10).await.unwrap();
    let settled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..10 {
        let m = within(&rt, STEP, consumer.next()).await.unwrap();
        let acker = consumer.acker();
        send_and_sync(&acker);
        let done = settled.clone();
        rt.spawn(Box::pin(async move {
            // Even messages are acked, odd ones dead-lettered (dropped).
            if i % 2 == 0 {
                acker.ack(m.delivery_tag);
            } else {
                acker.reject(m.delivery_tag, false);
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    let deadline = Instant::now() + STEP;
    while settled.load(std::sync::atomic::Ordering::SeqCst) < 10 {
        assert!(
            Instant::now() < deadline,
            "the spawned tasks did not settle"
        );
        sleep(&rt, Duration::from_millis(10)).await;
    }
    let stale = consumer.acker();
    consumer.close().await;
    stale.ack(1); // the consumer is gone: nothing is sent
    // Everything was settled: nothing comes back to a new consumer, and
    // the connection (and a channel that may reuse the id) is fine.
    let again = c.acking_consumer(&q, 10).await.unwrap();
    stale.reject(2, true);
    assert!(nothing_within(&rt, Duration::from_millis(300), &again).await);
    again.close().await;
    stays_empty(&rt, &c, &q).await;
    c.close().await.unwrap();
}

/// `nack(tag, true)` puts the message back; it comes again with
/// `redelivered` set.
pub async fn nack_with_requeue_redelivers(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    c.publish("again", "", &q).await.unwrap();
    let consumer = c.acking_consumer(&q, 1).await.unwrap();
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    assert!(!m.redelivered);
    consumer.nack(m.delivery_tag, true);
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    assert_eq!(m.body, Bytes::from_static(b"again"));
    assert!(m.redelivered);
    consumer.ack(m.delivery_tag);
    consumer.close().await;
    stays_empty(&rt, &c, &q).await;
}

/// `nack_multiple(tag, true)` puts back every message up to `tag`.
pub async fn nack_multiple_with_requeue_redelivers_everything_up_to_the_tag(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    for i in 0..3 {
        c.publish(format!("m{i}"), "", &q).await.unwrap();
    }
    let consumer = c.acking_consumer(&q, 3).await.unwrap();
    let mut tags = Vec::new();
    for _ in 0..3 {
        tags.push(
            within(&rt, STEP, consumer.next())
                .await
                .unwrap()
                .delivery_tag,
        );
    }
    consumer.ack(tags[2]);
    consumer.nack_multiple(tags[1], true); // m0 and m1 (m2 is acked)
    for i in 0..2 {
        let m = within(&rt, STEP, consumer.next()).await.unwrap();
        assert_eq!(m.body, Bytes::from(format!("m{i}")));
        assert!(m.redelivered);
        consumer.ack(m.delivery_tag);
    }
    assert!(nothing_within(&rt, Duration::from_millis(200), &consumer).await);
}

/// `nack(tag, false)` and `reject(tag, false)` dead-letter the message (to
/// the queue named by `x-dead-letter-routing-key`), and the original queue
/// ends up empty.
pub async fn nack_and_reject_without_requeue_dead_letter(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let dead = exclusive_queue(&c, FieldTable::default()).await;
    let q = exclusive_queue(
        &c,
        args(&[
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(dead.as_str().into()),
            ),
        ]),
    )
    .await;
    c.publish("nacked", "", &q).await.unwrap();
    c.publish("rejected", "", &q).await.unwrap();
    let consumer = c.acking_consumer(&q, 2).await.unwrap();
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    assert_eq!(m.body, Bytes::from_static(b"nacked"));
    consumer.nack(m.delivery_tag, false);
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    assert_eq!(m.body, Bytes::from_static(b"rejected"));
    consumer.reject(m.delivery_tag, false);

    let dlx = c.acking_consumer(&dead, 2).await.unwrap();
    for body in ["nacked", "rejected"] {
        let m = within(&rt, STEP, dlx.next()).await.unwrap();
        assert_eq!(m.body, Bytes::from(body));
        let headers = m.properties.headers.as_ref().unwrap();
        let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
            panic!("no x-death header: {headers:?}");
        };
        let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
            panic!("x-death is empty: {deaths:?}");
        };
        assert_eq!(long_string(death, "reason"), Some(&b"rejected"[..]));
        assert_eq!(long_string(death, "queue"), Some(q.as_bytes()));
        dlx.ack(m.delivery_tag);
    }
    consumer.close().await;
    stays_empty(&rt, &c, &q).await;
}

/// `reject(tag, true)` puts the message back; it comes again with
/// `redelivered` set.
pub async fn reject_with_requeue_redelivers(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    c.publish("once more", "", &q).await.unwrap();
    let consumer = c.acking_consumer(&q, 1).await.unwrap();
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    consumer.reject(m.delivery_tag, true);
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    assert_eq!(m.body, Bytes::from_static(b"once more"));
    assert!(m.redelivered);
    consumer.ack(m.delivery_tag);
}

// ---- basic.get ----------------------------------------------------------------------

/// `get` on an empty queue is `None`; on a missing one, a 404 that leaves
/// the connection usable.
pub async fn get_on_an_empty_queue_is_none(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    assert!(c.get(&q).await.unwrap().is_none());
    assert!(c.get(&q).await.unwrap().is_none(), "and again");
    let err = c.get(&unique("no-such-queue")).await.unwrap_err();
    assert_eq!(err.reply_code(), Some(404), "{err}");
    assert!(c.get(&q).await.unwrap().is_none(), "still usable");
}

/// `get` returns the message, with its envelope and the count of messages
/// left; `ack` removes it for good.
pub async fn get_returns_the_message_and_the_count_and_ack_removes_it(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    let properties = BasicProperties {
        message_id: Some(ShortStr::from_static("first")),
        ..Default::default()
    };
    c.publish_with("one", "", &q, &properties).await.unwrap();
    c.publish("two", "", &q).await.unwrap();

    let one = c.get(&q).await.unwrap().expect("a message");
    assert_eq!(one.body, Bytes::from_static(b"one"));
    assert_eq!(one.message_count(), 1);
    assert!(!one.redelivered);
    assert_eq!(one.routing_key.as_str(), q);
    assert_eq!(one.exchange.as_str(), "");
    assert_eq!(*one.properties, properties);
    assert!(one.consumer_tag.is_empty());
    one.ack();

    let two = c.get(&q).await.unwrap().expect("a message");
    assert_eq!(two.message().body, Bytes::from_static(b"two"));
    assert_eq!(two.message_count(), 0);
    two.ack();

    // Had an ack been lost, closing its channel would requeue the message.
    for _ in 0..5 {
        assert!(c.get(&q).await.unwrap().is_none());
        sleep(&rt, Duration::from_millis(100)).await;
    }
}

/// Dropping a `GetMessage` unsettled closes its channel: the message is
/// available again, redelivered.
pub async fn a_dropped_unsettled_get_message_is_requeued(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = exclusive_queue(&c, FieldTable::default()).await;
    c.publish("boomerang", "", &q).await.unwrap();
    let got = c.get(&q).await.unwrap().expect("a message");
    assert!(!got.redelivered);
    drop(got);
    let again = within(&rt, STEP, async {
        loop {
            if let Some(m) = c.get(&q).await.unwrap() {
                break m;
            }
            sleep(&rt, Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(again.body, Bytes::from_static(b"boomerang"));
    assert!(again.redelivered);
    again.ack();
}

/// `GetMessage::nack` / `reject` requeue or dead-letter, like a consumer's.
pub async fn get_nack_and_reject_settle_like_a_consumer(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let dead = exclusive_queue(&c, FieldTable::default()).await;
    let q = exclusive_queue(
        &c,
        args(&[
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(dead.as_str().into()),
            ),
        ]),
    )
    .await;
    c.publish("m", "", &q).await.unwrap();
    // Requeued by nack, then by reject: redelivered each time.
    c.get(&q).await.unwrap().expect("a message").nack(true);
    let m = within(&rt, STEP, get_some(&rt, &c, &q)).await;
    assert!(m.redelivered);
    m.reject(true);
    let m = within(&rt, STEP, get_some(&rt, &c, &q)).await;
    assert!(m.redelivered);
    // Dead-lettered by nack without requeue...
    m.nack(false);
    let m = within(&rt, STEP, get_some(&rt, &c, &dead)).await;
    assert_eq!(m.body, Bytes::from_static(b"m"));
    m.ack();
    // ...and by reject without requeue.
    c.publish("n", "", &q).await.unwrap();
    c.get(&q).await.unwrap().expect("a message").reject(false);
    let m = within(&rt, STEP, get_some(&rt, &c, &dead)).await;
    assert_eq!(m.body, Bytes::from_static(b"n"));
    m.ack();
    stays_empty(&rt, &c, &q).await;
}

/// Polls `get` until a message comes.
async fn get_some(
    rt: &Arc<dyn Runtime>,
    c: &Connection,
    queue: &str,
) -> carehare_client::GetMessage {
    loop {
        if let Some(m) = c.get(queue).await.unwrap() {
            return m;
        }
        sleep(rt, Duration::from_millis(20)).await;
    }
}
