//! Scenarios for the publishing, topology and connection surface (issue 5).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use carehare_client::{
    AMQPValue, ConnectionError, Counter, Error, ExchangeOptions, FieldTable, QueueOptions, Runtime,
    connect_with_runtime,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::scenarios::{args, connect, connect_counted, options, ready, sleep, unique, within};

/// This module's scenarios, for [`scenarios!`](macro@crate::scenarios).
#[macro_export]
macro_rules! publish_scenarios {
    ($block_on:path, $runtime:expr) => {
        $crate::scenarios!($block_on, $runtime;
            publish::exchanges_of_every_type_and_their_flags,
            publish::exchange_delete_if_unused,
            publish::exchange_to_exchange_bind_and_unbind,
            publish::queue_declare_counts_server_names_and_passive,
            publish::queue_arguments_ttl_length_overflow_dlx_priority,
            publish::quorum_and_stream_queues_declare,
            publish::queue_delete_and_purge_return_counts,
            publish::headers_exchange_routing_with_binding_arguments,
            publish::mandatory_returns_are_typed,
            publish::publisher_window_bounds_in_flight,
            publish::a_deep_window_sleeps_through_confirms_and_gets_every_one,
            publish::unconfirmed_publishes_all_arrive_in_order,
            publish::an_unconfirmed_publish_to_a_missing_exchange_is_survived,
            publish::connection_name_client_and_server_properties,
            publish::update_secret_is_answered,
            publish::rpc_over_direct_reply_to,
        );
    };
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.as_bytes().to_vec().into())
}

/// direct, fanout, topic and headers exchanges; passive, durable,
/// auto_delete, internal, and arguments (`alternate-exchange`).
pub async fn exchanges_of_every_type_and_their_flags(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    for kind in ["direct", "fanout", "topic", "headers"] {
        let name = unique(kind);
        c.exchange_declare(
            &name,
            kind,
            ExchangeOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let passive = ExchangeOptions {
            passive: true,
            ..Default::default()
        };
        c.exchange_declare(&name, kind, passive).await.unwrap();
        c.exchange_delete(&name, false).await.unwrap();
    }
    let err = c
        .exchange_declare(
            &unique("absent"),
            "direct",
            ExchangeOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(404));
    // An internal exchange can't be published to directly.
    let internal = unique("internal");
    c.exchange_declare(
        &internal,
        "fanout",
        ExchangeOptions {
            internal: true,
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    match c.publish("x", &internal, "").await {
        Err(Error::ChannelClosedByServer(r)) => assert_eq!(r.code, 403, "{r}"),
        other => panic!("expected 403, got {other:?}"),
    }
    c.exchange_delete(&internal, false).await.unwrap();
    // alternate-exchange catches what the main exchange can't route.
    let (main, alt) = (unique("main"), unique("alt"));
    c.exchange_declare(&alt, "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    let opts = ExchangeOptions {
        arguments: args(&[("alternate-exchange", text(&alt))]),
        ..Default::default()
    };
    c.exchange_declare(&main, "direct", opts).await.unwrap();
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.queue_bind(&q.queue, &alt, "", FieldTable::default())
        .await
        .unwrap();
    c.publish("unrouted", &main, "no-binding").await.unwrap();
    let consumer = c.acking_consumer(&q.queue, 1).await.unwrap();
    assert_eq!(
        consumer.next_delivery().await.unwrap().0,
        Bytes::from_static(b"unrouted")
    );
    c.exchange_delete(&main, false).await.unwrap();
    c.exchange_delete(&alt, false).await.unwrap();
}

/// `if_unused` refuses to delete a bound exchange (406).
pub async fn exchange_delete_if_unused(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let ex = unique("bound");
    c.exchange_declare(&ex, "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.queue_bind(&q.queue, &ex, "", FieldTable::default())
        .await
        .unwrap();
    let err = c.exchange_delete(&ex, true).await.unwrap_err();
    assert_eq!(err.reply_code(), Some(406), "{err}");
    c.queue_unbind(&q.queue, &ex, "", FieldTable::default())
        .await
        .unwrap();
    c.exchange_delete(&ex, true).await.unwrap();
}

/// Exchange-to-exchange bindings route, and stop routing once unbound.
pub async fn exchange_to_exchange_bind_and_unbind(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let (source, dest) = (unique("source"), unique("dest"));
    c.exchange_declare(&source, "topic", ExchangeOptions::default())
        .await
        .unwrap();
    c.exchange_declare(&dest, "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    c.exchange_bind(&dest, &source, "audit.#", FieldTable::default())
        .await
        .unwrap();
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.queue_bind(&q.queue, &dest, "", FieldTable::default())
        .await
        .unwrap();
    c.publish("through two exchanges", &source, "audit.login")
        .await
        .unwrap();
    c.exchange_unbind(&dest, &source, "audit.#", FieldTable::default())
        .await
        .unwrap();
    c.publish("not routed any more", &source, "audit.login")
        .await
        .unwrap();
    assert_eq!(ready(&c, &q.queue).await, 1);
    c.exchange_delete(&source, false).await.unwrap();
    c.exchange_delete(&dest, false).await.unwrap();
}

/// `queue_declare` returns the name (server-chosen for ""), message and
/// consumer counts; `passive` checks existence.
pub async fn queue_declare_counts_server_names_and_passive(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    assert!(q.queue.starts_with("amq.gen-"), "{}", q.queue);
    assert_eq!((q.message_count, q.consumer_count), (0, 0));
    for i in 0..3 {
        c.publish(format!("{i}"), "", &q.queue).await.unwrap();
    }
    let _consumer = c.acking_consumer(&q.queue, 1).await.unwrap();
    sleep(&rt, Duration::from_millis(100)).await;
    let again = c
        .queue_declare(
            &q.queue,
            QueueOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again.consumer_count, 1);
    assert_eq!(
        again.message_count, 2,
        "one is out to the consumer (prefetch 1)"
    );
    let err = c
        .queue_declare(
            &unique("absent"),
            QueueOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(404));
}

/// `x-message-ttl` (64-bit encoded), `x-max-length` with `x-overflow`,
/// `x-dead-letter-exchange`, `x-max-priority`.
pub async fn queue_arguments_ttl_length_overflow_dlx_priority(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    // Dead letters from a 64-bit-encoded TTL land in a second queue.
    let dead = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let ttl = QueueOptions {
        exclusive: true,
        arguments: args(&[
            ("x-message-ttl", AMQPValue::LongLongInt(100)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&dead)),
        ]),
        ..Default::default()
    };
    let short_lived = c.queue_declare("", ttl).await.unwrap().queue;
    c.publish("expires", "", &short_lived).await.unwrap();
    let consumer = c.acking_consumer(&dead, 1).await.unwrap();
    let (body, tag) = consumer.next_delivery().await.unwrap();
    assert_eq!(body, Bytes::from_static(b"expires"));
    consumer.ack(tag);
    // max-length 2 with drop-head keeps the newest two.
    let capped = QueueOptions {
        exclusive: true,
        arguments: args(&[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", text("drop-head")),
        ]),
        ..Default::default()
    };
    let capped = c.queue_declare("", capped).await.unwrap().queue;
    for i in 0..5 {
        c.publish(format!("{i}"), "", &capped).await.unwrap();
    }
    let consumer = c.acking_consumer(&capped, 10).await.unwrap();
    for expected in ["3", "4"] {
        let (body, tag) = consumer.next_delivery().await.unwrap();
        assert_eq!(body, Bytes::from(expected));
        consumer.ack(tag);
    }
    // A priority queue delivers higher priorities first.
    let prio = QueueOptions {
        exclusive: true,
        arguments: args(&[("x-max-priority", AMQPValue::ShortShortUInt(10))]),
        ..Default::default()
    };
    let prio = c.queue_declare("", prio).await.unwrap().queue;
    for p in [1u8, 9, 5] {
        let props = carehare_client::BasicProperties {
            priority: Some(p),
            ..Default::default()
        };
        c.publish_with(format!("{p}"), "", &prio, &props)
            .await
            .unwrap();
    }
    let consumer = c.acking_consumer(&prio, 10).await.unwrap();
    for expected in ["9", "5", "1"] {
        let m = consumer.next().await.unwrap();
        assert_eq!(m.body, Bytes::from(expected));
        consumer.ack(m.delivery_tag);
    }
}

/// `x-queue-type` quorum and stream: declared, published to with confirms.
pub async fn quorum_and_stream_queues_declare(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    for kind in ["quorum", "stream"] {
        let name = unique(kind);
        let opts = QueueOptions {
            durable: true,
            arguments: args(&[("x-queue-type", text(kind))]),
            ..Default::default()
        };
        c.queue_declare(&name, opts).await.unwrap();
        c.publish("durable", "", &name).await.unwrap();
        c.queue_delete(&name, false, false).await.unwrap();
    }
}

/// `queue_delete` with `if_unused` / `if_empty`, and `queue_purge`, return
/// counts.
pub async fn queue_delete_and_purge_return_counts(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let name = unique("counted");
    c.queue_declare(&name, QueueOptions::default())
        .await
        .unwrap();
    for i in 0..4 {
        c.publish(format!("{i}"), "", &name).await.unwrap();
    }
    let err = c.queue_delete(&name, false, true).await.unwrap_err();
    assert_eq!(
        err.reply_code(),
        Some(406),
        "if_empty on a queue with messages: {err}"
    );
    assert_eq!(c.queue_purge(&name).await.unwrap(), 4);
    c.publish("one more", "", &name).await.unwrap();
    let consumer = c.acking_consumer(&name, 1).await.unwrap();
    let err = c.queue_delete(&name, true, false).await.unwrap_err();
    assert_eq!(
        err.reply_code(),
        Some(406),
        "if_unused on a consumed queue: {err}"
    );
    consumer.close().await;
    assert_eq!(c.queue_delete(&name, true, false).await.unwrap(), 1);
}

/// Headers exchanges route on binding arguments (`x-match` all / any).
pub async fn headers_exchange_routing_with_binding_arguments(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let ex = unique("headers");
    c.exchange_declare(
        &ex,
        "headers",
        ExchangeOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let all = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let any = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    c.queue_bind(
        &all,
        &ex,
        "",
        args(&[
            ("x-match", text("all")),
            ("format", text("pdf")),
            ("type", text("report")),
        ]),
    )
    .await
    .unwrap();
    c.queue_bind(
        &any,
        &ex,
        "",
        args(&[
            ("x-match", text("any")),
            ("format", text("pdf")),
            ("type", text("report")),
        ]),
    )
    .await
    .unwrap();
    let publish = |format: &str, kind: &str| {
        let headers = args(&[("format", text(format)), ("type", text(kind))]);
        let props = carehare_client::BasicProperties {
            headers: Some(headers),
            ..Default::default()
        };
        c.publish_with(format!("{format}/{kind}"), &ex, "", &props)
    };
    publish("pdf", "report").await.unwrap();
    publish("pdf", "log").await.unwrap();
    publish("zip", "log").await.unwrap();
    let count = |q: carehare_client::carehare_core::types::ShortStr| {
        let c = c.clone();
        async move { ready(&c, &q).await }
    };
    assert_eq!(count(all.clone()).await, 1, "x-match all: only pdf/report");
    assert_eq!(
        count(any.clone()).await,
        2,
        "x-match any: pdf/report and pdf/log"
    );
    c.queue_unbind(
        &any,
        &ex,
        "",
        args(&[
            ("x-match", text("any")),
            ("format", text("pdf")),
            ("type", text("report")),
        ]),
    )
    .await
    .unwrap();
    publish("pdf", "report").await.unwrap();
    assert_eq!(count(any).await, 2, "unbound: no more routing");
}

/// An unroutable mandatory message resolves to `Error::Returned` with code
/// and text; a routable one confirms.
pub async fn mandatory_returns_are_typed(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let nowhere = unique("nowhere");
    let props = carehare_client::BasicProperties::default();
    let (routed, lost, also_routed) = futures_util::join!(
        c.publish_mandatory("routed", "", &q, &props),
        c.publish_mandatory("lost", "", &nowhere, &props),
        c.publish_mandatory("also routed", "", &q, &props),
    );
    routed.unwrap();
    also_routed.unwrap();
    match lost {
        Err(Error::Returned(r)) => {
            assert_eq!((r.reply_code, r.reply_text.as_str()), (312, "NO_ROUTE"));
            assert_eq!(r.routing_key.as_str(), nowhere);
            assert_eq!(r.body, Bytes::from_static(b"lost"));
        }
        other => panic!("expected Returned, got {other:?}"),
    }
    // Not mandatory: an unroutable message is simply confirmed.
    c.publish("dropped", "", &nowhere).await.unwrap();
}

/// A publisher window never has more than N unconfirmed publishes.
pub async fn publisher_window_bounds_in_flight(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let publisher = c.publisher(10);
    let mut confirmations = Vec::new();
    let mut most = 0;
    for i in 0..2000 {
        confirmations.push(publisher.publish(format!("{i}"), "", &q).await.unwrap());
        most = most.max(publisher.in_flight());
    }
    assert!(most <= 10, "in flight peaked at {most}");
    assert!(most >= 2, "the window was used: {most}");
    for confirmation in confirmations {
        confirmation.await.unwrap();
    }
    assert_eq!(publisher.in_flight(), 0);
    assert_eq!(ready(&c, &q).await, 2000);
}

/// A window of 1,000 kept full, as the guide writes it: while publishes
/// are held back the connection sleeps through many confirms at a time
/// (the socket's low-water mark), so it reads far less often than once
/// per ack frame; and every confirm still comes, the last ones, which no
/// publish follows, too.
pub async fn a_deep_window_sleeps_through_confirms_and_gets_every_one(rt: Arc<dyn Runtime>) {
    const N: u64 = 30_000;
    const WINDOW: usize = 1000;
    let (c, counters) = connect_counted(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let publisher = c.publisher(WINDOW);
    let reads_before = counters.get(Counter::Reads);
    within(&rt, Duration::from_secs(60), async {
        let mut pending = FuturesUnordered::new();
        for _ in 0..N {
            pending.push(publisher.publish("m", "", &q).await.unwrap());
            if pending.len() >= WINDOW {
                pending.next().await.unwrap().unwrap();
            }
        }
        while let Some(confirmed) = pending.next().await {
            confirmed.unwrap();
        }
    })
    .await;
    let reads = counters.get(Counter::Reads) - reads_before;
    // Waking for each ack frame reads 60-90 times per 1,000 publishes
    // here; sleeping through them, about 10.
    assert!(
        reads * 1000 < N * 30,
        "{reads} reads for {N} publishes: woken for each ack frame"
    );
    assert_eq!(u64::from(ready(&c, &q).await), N);
}

/// 10,000 publishes without confirms all reach the queue, in order: a
/// consumer gets every one.
pub async fn unconfirmed_publishes_all_arrive_in_order(rt: Arc<dyn Runtime>) {
    const N: usize = 10_000;
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let props = carehare_client::BasicProperties::default();
    for i in 0..N {
        c.publish_unconfirmed(i.to_string(), "", &q, &props)
            .await
            .unwrap();
    }
    let consumer = c.acking_consumer(&q, 500).await.unwrap();
    for i in 0..N {
        let m = consumer.next().await.unwrap();
        assert_eq!(m.body, Bytes::from(i.to_string()), "message {i}");
        consumer.ack(m.delivery_tag);
    }
    // Nothing more: every publish arrived exactly once.
    let next = std::pin::pin!(consumer.next());
    let timer = rt.sleep_until(std::time::Instant::now() + Duration::from_millis(200));
    if let futures_util::future::Either::Left((m, _)) =
        futures_util::future::select(next, timer).await
    {
        panic!("a message too many: {m:?}");
    }
}

/// A publish to a missing exchange makes RabbitMQ close the unconfirmed
/// channel (404); later unconfirmed publishes go on a fresh channel and
/// arrive, and the connection lives on.
pub async fn an_unconfirmed_publish_to_a_missing_exchange_is_survived(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let consumer = c.acking_consumer(&q, 10).await.unwrap();
    let props = carehare_client::BasicProperties::default();
    c.publish_unconfirmed("lost", &unique("missing"), "", &props)
        .await
        .unwrap();
    // Publishes sent before the 404 arrives are dropped with the channel:
    // keep publishing until one comes through.
    let mut sent = 0;
    let got = loop {
        sent += 1;
        assert!(sent <= 100, "no unconfirmed publish arrived after the 404");
        c.publish_unconfirmed(format!("after {sent}"), "", &q, &props)
            .await
            .unwrap();
        let next = std::pin::pin!(consumer.next());
        let timer = rt.sleep_until(std::time::Instant::now() + Duration::from_millis(50));
        if let futures_util::future::Either::Left((m, _)) =
            futures_util::future::select(next, timer).await
        {
            break m.unwrap();
        }
    };
    assert!(got.body.starts_with(b"after "), "{got:?}");
    // The connection lives on.
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    c.queue_declare(&q, passive).await.unwrap();
}

/// The connection name and custom client properties reach RabbitMQ; the
/// server's properties and capabilities are readable.
pub async fn connection_name_client_and_server_properties(rt: Arc<dyn Runtime>) {
    let mut opts = options();
    let name = unique("named");
    opts.amqp.connection_name = Some(name.clone());
    opts.amqp.client_properties = args(&[("app-version", text("7.3.1"))]);
    let c = connect_with_runtime(rt, opts).await.unwrap();
    let listed = crate::rabbitmqctl("list_connections client_properties --no-table-headers -q");
    let ours = listed
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("{name} not in {listed}"));
    assert!(ours.contains("7.3.1"), "{ours}");
    assert!(ours.contains("carehare"), "{ours}");
    let props = c.server_properties();
    assert_eq!(props.inner().get("product"), Some(&text("RabbitMQ")));
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "exchange_exchange_bindings",
    ] {
        assert!(c.server_has_capability(cap), "{cap}");
    }
    assert!(!c.server_has_capability("no-such-capability"));
    assert_eq!(c.blocked(), None);
}

/// `update_secret` gets RabbitMQ's answer: accepted, or refused with a
/// typed error (the internal auth backend cannot refresh credentials).
pub async fn update_secret_is_answered(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    match c
        .update_secret(Bytes::from_static(b"guest"), "refresh")
        .await
    {
        Ok(()) => c
            .queue_declare("", QueueOptions::exclusive())
            .await
            .map(drop)
            .unwrap(),
        Err(Error::ConnectionClosed(ConnectionError::ClosedByServer(r))) => {
            assert!(r.code >= 400, "{r}");
        }
        Err(other) => panic!("expected an answer, got {other:?}"),
    }
}

/// RPC over direct reply-to: concurrent calls get their own replies; no
/// route is `Returned`; no answer is `Timeout`.
pub async fn rpc_over_direct_reply_to(rt: Arc<dyn Runtime>) {
    let server = connect(&rt).await;
    let requests = server
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    let consumer = server.acking_consumer(&requests, 20).await.unwrap();
    let replier = server.clone();
    rt.spawn(Box::pin(async move {
        while let Ok(m) = consumer.next().await {
            let props = carehare_client::BasicProperties {
                correlation_id: m.properties.correlation_id.clone(),
                ..Default::default()
            };
            let reply_to = m.properties.reply_to.clone().unwrap_or_default();
            let answer = String::from_utf8_lossy(&m.body).to_uppercase();
            let _ = replier.publish_with(answer, "", &reply_to, &props).await;
            consumer.ack(m.delivery_tag);
        }
    }));
    let c = connect(&rt).await;
    let rpc = c.direct_reply_to().await.unwrap();
    let calls = (0..10).map(|i| {
        let rpc = &rpc;
        let requests = requests.clone();
        async move {
            let reply = rpc
                .call(
                    "",
                    &requests,
                    format!("call {i}"),
                    &Default::default(),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            assert_eq!(reply.body, Bytes::from(format!("CALL {i}")));
        }
    });
    futures_util::future::join_all(calls).await;
    let nowhere = unique("no-server");
    match rpc
        .call(
            "",
            &nowhere,
            "hello?",
            &Default::default(),
            Duration::from_secs(10),
        )
        .await
    {
        Err(Error::Returned(r)) => assert_eq!(r.reply_code, 312),
        other => panic!("expected Returned, got {other:?}"),
    }
    let silent = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue;
    match rpc
        .call(
            "",
            &silent,
            "anyone?",
            &Default::default(),
            Duration::from_millis(300),
        )
        .await
    {
        Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_millis(300)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    server.close().await.unwrap();
}

/// Restores the memory watermark even if the scenario panics.
struct RestoreWatermark;

impl Drop for RestoreWatermark {
    fn drop(&mut self) {
        crate::rabbitmqctl("set_vm_memory_high_watermark 0.8");
    }
}

/// Used by the blocked-connection test binary, which runs alone because a
/// memory alarm blocks every publisher on the broker.
///
/// While blocked, RabbitMQ stops reading a publishing connection's socket,
/// so the queue is inspected from a second connection that never publishes.
pub async fn memory_alarm_blocks_then_unblocks_publishes(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let observer = connect(&rt).await;
    let q = unique("alarm");
    observer
        .queue_declare(&q, QueueOptions::default())
        .await
        .unwrap();
    let count = || ready(&observer, &q);
    let mut changes = c.blocking_changes();
    let restore = RestoreWatermark;
    crate::rabbitmqctl("set_vm_memory_high_watermark 0");
    // RabbitMQ announces the block when a publish arrives.
    let waiting = c.publish("during the alarm", "", &q);
    match crate::scenarios::within(&rt, Duration::from_secs(20), changes.next()).await {
        Some(carehare_client::Blocking::Blocked(reason)) => {
            assert!(reason.contains("memory"), "{reason}")
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert!(c.blocked().is_some());
    let held = c.publish("held in the client", "", &q);
    sleep(&rt, Duration::from_millis(500)).await;
    assert_eq!(count().await, 0, "nothing was enqueued while blocked");
    drop(restore);
    assert_eq!(
        crate::scenarios::within(&rt, Duration::from_secs(20), changes.next()).await,
        Some(carehare_client::Blocking::Unblocked)
    );
    waiting.await.unwrap();
    held.await.unwrap();
    assert_eq!(count().await, 2);
    observer.queue_delete(&q, false, false).await.unwrap();
}
