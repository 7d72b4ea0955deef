//! Fault-injection scenarios (issue "Hardening"): what the client does when
//! the link is reset or cut under load, when one exchange's channel dies
//! amid concurrent publishes, when channel ids run out, and when a server
//! sends a frame larger than negotiated. See `docs/reliability.md`.
//!
//! Heartbeat loss and a server-forced close are covered by
//! `scenarios::heartbeat_loss_ends_everything_with_the_heartbeat_error` and
//! `scenarios::server_closing_the_connection_fails_pending_futures`; here,
//! [`black_holed_link_detection_time`] only measures the first.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use carehare_client::carehare_core::frame::FRAME_BODY;
use carehare_client::carehare_core::method::ConnectionTune;
use carehare_client::{
    AckingConsumer, Connection, ConnectionError, Error, ExchangeOptions, FieldTable, QueueOptions,
    Runtime, UsageError, connect_with_runtime,
};
use futures_util::future::join_all;

use crate::AMQP_ADDR;
use crate::fake_server::FakeServer;
use crate::proxy::{Mode, Proxy};
use crate::scenarios::{connect, options, ready, sleep, unique, within};

/// This module's scenarios, for [`scenarios!`](macro@crate::scenarios).
/// They expand inside a `faults` module, so `cargo test faults` selects
/// exactly this group (`faults::rst_mid_publish_fails_unconfirmed_publishes`...).
#[macro_export]
macro_rules! fault_scenarios {
    ($block_on:path, $runtime:expr) => {
        #[allow(unused_imports)]
        mod faults {
            use super::*;
            $crate::scenarios!($block_on, $runtime;
            faults::rst_mid_publish_fails_unconfirmed_publishes,
            faults::rst_mid_consume_ends_the_consumer_with_a_typed_error,
            faults::cut_mid_consume_ends_everything,
            faults::channel_error_amid_100_concurrent_publishes_fails_only_that_exchange,
            faults::channel_max_exhaustion_gives_typed_errors_and_leaks_nothing,
            faults::consumers_past_channel_max_get_a_typed_error_and_the_rest_go_on,
            faults::oversized_frame_from_a_fake_server_closes_with_501,
            faults::black_holed_link_detection_time,
            );
        }
    };
}

/// Bound on any single step: nothing may hang.
const STEP: Duration = Duration::from_secs(15);

/// Connects to the test broker through `proxy`.
async fn through(rt: &Arc<dyn Runtime>, proxy: &Proxy) -> Connection {
    let mut opts = options();
    opts.port = proxy.port();
    connect_with_runtime(rt.clone(), opts)
        .await
        .expect("connect through the proxy")
}

/// Asserts that a lost link ended the connection as the transport saw it:
/// an IO error (e.g. an RST) or an EOF, and names which.
fn link_loss(outcome: &ConnectionError) -> &'static str {
    match outcome {
        ConnectionError::Transport(_) => "transport error",
        ConnectionError::UnexpectedEof => "EOF",
        other => panic!("expected a transport error or EOF, got {other:?}"),
    }
}

// ---- A reset or cut link ---------------------------------------------------

/// 500 publishes with a window of 50 through the proxy, which resets the
/// link (RST) after the 250th is queued. Every confirmation resolves (none
/// hangs), to `Ok` or `Error::ConnectionClosed`, and no more are `Ok` than
/// the queue holds afterwards: a publish is never reported as succeeded
/// when it was not stored.
///
/// The queue is not exclusive, so it outlives the reset connection and can
/// be counted from a direct one, which deletes it at the end.
pub async fn rst_mid_publish_fails_unconfirmed_publishes(rt: Arc<dyn Runtime>) {
    const TOTAL: u32 = 500;
    const WINDOW: u32 = 50;
    const RESET_AT: u32 = 250;
    let direct = connect(&rt).await;
    let queue = unique("rst-mid-publish");
    direct
        .queue_declare(&queue, QueueOptions::default())
        .await
        .unwrap();
    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    let c = through(&rt, &proxy).await;
    let publisher = c.publisher(WINDOW as usize);
    let mut confirmations = Vec::new();
    // `Publisher::publish` itself fails once the client knows the
    // connection is gone.
    let mut refused = 0u32;
    for i in 0..TOTAL {
        if i == RESET_AT {
            proxy.reset();
        }
        match within(&rt, STEP, publisher.publish(i.to_string(), "", &queue)).await {
            Ok(confirmation) => confirmations.push(confirmation),
            Err(Error::ConnectionClosed(_)) => refused += 1,
            Err(other) => panic!("publish {i}: expected ConnectionClosed, got {other:?}"),
        }
    }
    let (mut ok, mut failed) = (0u32, 0u32);
    for (i, r) in within(&rt, STEP, join_all(confirmations))
        .await
        .into_iter()
        .enumerate()
    {
        match r {
            Ok(()) => ok += 1,
            Err(Error::ConnectionClosed(_)) => failed += 1,
            Err(other) => panic!("confirmation {i}: expected ConnectionClosed, got {other:?}"),
        }
    }
    let outcome = within(&rt, STEP, c.closed()).await;
    let how = link_loss(&outcome);
    let stored = ready(&direct, &queue).await;
    println!(
        "rst mid publish: {ok} confirmed, {failed} failed, {refused} refused, \
         {stored} stored; closed() = {how}: {outcome}"
    );
    assert_eq!(ok + failed + refused, TOTAL);
    // With a window of 50, at least 200 were settled before the reset...
    assert!(ok >= RESET_AT - WINDOW, "{ok} confirmed");
    // ...and nothing queued after it can have been confirmed.
    assert!(ok <= RESET_AT, "{ok} confirmed");
    assert!(
        ok <= stored,
        "{ok} publishes confirmed but only {stored} messages stored"
    );
    direct.queue_delete(&queue, false, false).await.unwrap();
    direct.close().await.unwrap();
}

/// A consumer waiting in `next()` gets `Error::ConnectionClosed` when the
/// link is reset (RST), as does a publish the broker never saw (the proxy
/// black-holes it first); `closed()` says transport error or EOF.
pub async fn rst_mid_consume_ends_the_consumer_with_a_typed_error(rt: Arc<dyn Runtime>) {
    link_lost_mid_consume(rt, "rst", |p| p.reset()).await
}

/// The same with an orderly close of the link (FIN): the consumer, an
/// unconfirmed publish and `closed()` all end, and nothing works after.
pub async fn cut_mid_consume_ends_everything(rt: Arc<dyn Runtime>) {
    link_lost_mid_consume(rt, "cut", |p| p.cut()).await
}

async fn link_lost_mid_consume(rt: Arc<dyn Runtime>, label: &str, lose: fn(&Proxy)) {
    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    let c = through(&rt, &proxy).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue
        .to_string();
    let consumer = c.acking_consumer(&q, 10).await.unwrap();
    // The consumer works through the proxy.
    c.publish("before", "", &q).await.unwrap();
    let m = within(&rt, STEP, consumer.next()).await.unwrap();
    consumer.ack(m.delivery_tag);
    // A publish that can't be confirmed: the broker never sees it.
    proxy.set_mode(Mode::BlackHole);
    let unconfirmed = c.publish("never confirmed", "", &q);
    let loser = async {
        sleep(&rt, Duration::from_millis(200)).await;
        lose(&proxy);
    };
    let (next, published, (), outcome) = within(&rt, STEP, async {
        futures_util::join!(consumer.next(), unconfirmed, loser, c.closed())
    })
    .await;
    let how = link_loss(&outcome);
    println!("{label} mid consume: closed() = {how}: {outcome}");
    assert!(
        matches!(next, Err(Error::ConnectionClosed(ref e)) if *e == outcome),
        "{next:?}"
    );
    assert!(
        matches!(published, Err(Error::ConnectionClosed(ref e)) if *e == outcome),
        "{published:?}"
    );
    // Everything after fails at once, with the same reason.
    assert!(matches!(
        consumer.next().await,
        Err(Error::ConnectionClosed(_))
    ));
    assert!(matches!(
        c.publish("after", "", &q).await,
        Err(Error::ConnectionClosed(_))
    ));
    assert!(matches!(
        c.queue_declare("", QueueOptions::exclusive()).await,
        Err(Error::ConnectionClosed(_))
    ));
}

// ---- A channel error amid concurrent work -------------------------------------

/// 100 publishes queued at once, alternating between an existing exchange
/// and a missing one: the missing one's channel dies with 404 and fails
/// exactly its 50 publishes; the other 50 are confirmed and routed.
pub async fn channel_error_amid_100_concurrent_publishes_fails_only_that_exchange(
    rt: Arc<dyn Runtime>,
) {
    let c = connect(&rt).await;
    let (exchange, missing) = (unique("fault-ex"), unique("fault-missing-ex"));
    c.exchange_declare(&exchange, "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue
        .to_string();
    c.queue_bind(&q, &exchange, "", FieldTable::default())
        .await
        .unwrap();
    let confirmations: Vec<_> = (0..100u32)
        .map(|i| {
            let to = if i % 2 == 0 { &exchange } else { &missing };
            c.publish(i.to_string(), to, "")
        })
        .collect();
    let results = within(&rt, STEP, join_all(confirmations)).await;
    for (i, r) in results.into_iter().enumerate() {
        if i % 2 == 0 {
            assert!(r.is_ok(), "publish {i} to the existing exchange: {r:?}");
        } else {
            match r {
                Err(Error::ChannelClosedByServer(reason)) => {
                    assert_eq!(reason.code, 404, "{reason}");
                    assert!(reason.text.starts_with("NOT_FOUND"), "{reason}");
                }
                other => panic!("publish {i} to the missing exchange: expected 404, got {other:?}"),
            }
        }
    }
    assert_eq!(ready(&c, &q).await, 50);
    // The connection is fine.
    c.publish("still fine", &exchange, "").await.unwrap();
    c.exchange_delete(&exchange, false).await.unwrap();
    c.close().await.unwrap();
}

/// With `channel_max` 4, 40 concurrent `queue_declare`s (one short-lived
/// channel each): each succeeds or fails with the typed
/// `UsageError::NoFreeChannel`, with no panic and no hang; afterwards
/// declares succeed again, one after another and then 4 at once (so no
/// channel id leaked). Three rounds.
///
/// `channel_max` is negotiated as the minimum of both sides' (RabbitMQ's is
/// 2047), so a low client `channel_max` is the same as a broker that
/// allows few channels.
pub async fn channel_max_exhaustion_gives_typed_errors_and_leaks_nothing(rt: Arc<dyn Runtime>) {
    const CHANNEL_MAX: u16 = 4;
    // A channel id comes back when its close-ok arrives, just after the
    // declare's reply: give the last ones this long.
    const SETTLE: Duration = Duration::from_millis(100);
    let mut opts = options();
    opts.amqp.channel_max = CHANNEL_MAX;
    let c = connect_with_runtime(rt.clone(), opts).await.unwrap();
    assert_eq!(c.tuning().channel_max, CHANNEL_MAX);
    for round in 1..=3 {
        let declares: Vec<_> = (0..40)
            .map(|_| c.queue_declare("", QueueOptions::exclusive()))
            .collect();
        let (mut ok, mut no_free) = (0, 0);
        for r in within(&rt, STEP, join_all(declares)).await {
            match r {
                Ok(_) => ok += 1,
                Err(Error::Usage(UsageError::NoFreeChannel(n))) => {
                    assert_eq!(n, CHANNEL_MAX);
                    no_free += 1;
                }
                Err(other) => panic!("expected Ok or NoFreeChannel, got {other:?}"),
            }
        }
        println!(
            "channel_max {CHANNEL_MAX}, round {round}: {ok} declared, {no_free} NoFreeChannel"
        );
        assert!(
            (1..=usize::from(CHANNEL_MAX)).contains(&ok),
            "{ok} declared"
        );
        sleep(&rt, SETTLE).await;
        for _ in 0..5 {
            within(&rt, STEP, c.queue_declare("", QueueOptions::exclusive()))
                .await
                .expect("a sequential declare after the burst");
        }
        sleep(&rt, SETTLE).await;
        let all: Vec<_> = (0..CHANNEL_MAX)
            .map(|_| c.queue_declare("", QueueOptions::exclusive()))
            .collect();
        for r in within(&rt, STEP, join_all(all)).await {
            r.expect("every channel id is free again");
        }
        sleep(&rt, SETTLE).await;
    }
    c.close().await.unwrap();
}

/// One connection holds as many consumers as the negotiated `channel_max`
/// (RabbitMQ's default, 2047), one channel each; the next is refused
/// before anything is sent, with the typed `UsageError::NoFreeChannel`:
/// no panic, no hang, and no second connection opened behind the caller's
/// back (docs/architecture.md, "More consumers than channels"). The
/// connection and its consumers go on: one of them still gets a message,
/// and closing one frees its channel for a new consumer.
pub async fn consumers_past_channel_max_get_a_typed_error_and_the_rest_go_on(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let channel_max = c.tuning().channel_max;
    assert_eq!(channel_max, 2047, "RabbitMQ's default channel_max");
    // Declared before the consumers: a declare takes a short-lived channel.
    let declare = || c.queue_declare("", QueueOptions::exclusive());
    let own = declare().await.unwrap().queue.to_string();
    let shared = declare().await.unwrap().queue.to_string();
    let first = within(&rt, STEP, c.acking_consumer(&own, 10))
        .await
        .unwrap();
    let mut rest = Vec::new();
    while rest.len() + 1 < usize::from(channel_max) {
        let batch = (usize::from(channel_max) - 1 - rest.len()).min(256);
        let opened = (0..batch).map(|_| c.acking_consumer(&shared, 10));
        for r in within(&rt, STEP, join_all(opened)).await {
            rest.push(r.expect("a consumer within channel_max"));
        }
    }
    let refused = |r: Result<AckingConsumer, Error>, which: &str| match r {
        Err(Error::Usage(UsageError::NoFreeChannel(n))) => assert_eq!(n, channel_max),
        Err(other) => panic!("{which}: expected NoFreeChannel, got {other:?}"),
        Ok(_) => panic!("{which}: expected NoFreeChannel, got a consumer"),
    };
    refused(
        within(&rt, STEP, c.acking_consumer(&shared, 10)).await,
        "consumer 2048",
    );

    // A message published from another connection (this one has no
    // channel left to publish on) reaches the first consumer.
    let other = connect(&rt).await;
    within(&rt, STEP, other.publish("still consuming", "", &own))
        .await
        .unwrap();
    let (body, tag) = within(&rt, STEP, first.next_delivery()).await.unwrap();
    assert_eq!(&body[..], b"still consuming");
    first.ack(tag);

    // Closing a consumer frees its channel once RabbitMQ's close-ok is in.
    let last = rest.pop().unwrap();
    within(&rt, STEP, last.close()).await;
    let again = within(&rt, STEP, c.acking_consumer(&own, 10))
        .await
        .expect("a consumer on the freed channel");
    refused(
        within(&rt, STEP, c.acking_consumer(&shared, 10)).await,
        "a consumer past channel_max again",
    );
    drop(again);
    other.close().await.unwrap();
    c.close().await.unwrap();
}

// ---- A server that breaks the protocol ------------------------------------------

/// A fake server (a std thread speaking AMQP through carehare-core's
/// scripted broker) negotiates frame_max 4096, then sends the 7-byte header of a
/// body frame claiming 1 MiB. The client must not wait for (or allocate)
/// the megabyte: it closes with 501 FRAME_ERROR, and `closed()` is
/// `ConnectionError::Protocol` with reply code 501.
pub async fn oversized_frame_from_a_fake_server_closes_with_501(rt: Arc<dyn Runtime>) {
    let server = FakeServer::start(|peer| {
        peer.handshake(ConnectionTune {
            channel_max: 10,
            frame_max: 4096,
            heartbeat: 0,
        });
        // Let the client see the open connection first.
        std::thread::sleep(Duration::from_millis(100));
        let mib: u32 = 1 << 20;
        let mut frame_header = vec![FRAME_BODY, 0, 1];
        frame_header.extend_from_slice(&mib.to_be_bytes());
        peer.send(&frame_header);
        // Whatever else the client sends first, the close must follow.
        peer.serve_until_close()
    });
    let mut opts = options();
    opts.port = server.port();
    let c = within(&rt, STEP, connect_with_runtime(rt.clone(), opts))
        .await
        .expect("the fake server's handshake");
    assert_eq!(c.tuning().frame_max, 4096);
    let outcome = within(&rt, STEP, c.closed()).await;
    match &outcome {
        ConnectionError::Protocol(v) => assert_eq!(v.reply_code(), 501, "{v}"),
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    let close = server.join(&rt, STEP).await;
    println!(
        "oversized frame: client sent connection.close {} {:?}; closed() = {outcome}",
        close.reply_code,
        close.reply_text.as_str()
    );
    assert_eq!(close.reply_code, 501);
    assert!(matches!(
        c.publish("late", "", "q").await,
        Err(Error::ConnectionClosed(ConnectionError::Protocol(_)))
    ));
}

// ---- Heartbeat timing ---------------------------------------------------------------

/// How long a black-holed link takes to end the connection with a heartbeat
/// of 1 s, printed for `docs/reliability.md`. The monitor fires after 2 s
/// without reading; RabbitMQ's heartbeats arrive every 0.5 s, so the
/// expected time is 1.5–2 s. (The full behaviour is checked by
/// `scenarios::heartbeat_loss_ends_everything_with_the_heartbeat_error`.)
pub async fn black_holed_link_detection_time(rt: Arc<dyn Runtime>) {
    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    let mut opts = options();
    opts.port = proxy.port();
    opts.amqp.heartbeat = 1;
    let c = connect_with_runtime(rt.clone(), opts).await.unwrap();
    // Let a heartbeat or two go by.
    sleep(&rt, Duration::from_millis(1200)).await;
    proxy.set_mode(Mode::BlackHole);
    let lost_at = Instant::now();
    let outcome = within(&rt, STEP, c.closed()).await;
    let elapsed = lost_at.elapsed();
    println!("black-holed link, heartbeat 1 s: {outcome} after {elapsed:?}");
    assert!(
        matches!(outcome, ConnectionError::ClosedByHeartbeatMonitor(d) if d == Duration::from_secs(2)),
        "{outcome:?}"
    );
    assert!(
        (Duration::from_millis(1000)..=Duration::from_millis(2500)).contains(&elapsed),
        "took {elapsed:?}"
    );
}
