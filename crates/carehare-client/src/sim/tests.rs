//! The client's timers on simulated time, against a fake broker over
//! in-memory sockets: heartbeats, the handshake and close timeouts, RPC
//! timeouts, and a driver that stops. Each test runs in milliseconds of
//! real time, and the same way every run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use carehare_core::method::*;
use carehare_core::properties::BasicProperties;
use carehare_core::testing;
use carehare_core::types::ShortStr;
use futures_util::future::Either;

use super::{Behaviour, Captured, POLITE, SimRuntime, duplex, serve, with_broker};
use crate::connect::connect_with_runtime;
use crate::error::{ConnectionError, Error};
use crate::options::ConnectOptions;
use crate::runtime::{BoxFuture, Runtime, Stream};

fn tune(heartbeat: u16) -> ConnectionTune {
    ConnectionTune {
        heartbeat,
        ..testing::server_tune()
    }
}

fn options(heartbeat: u16) -> ConnectOptions {
    let mut options = ConnectOptions {
        // An IP address: the simulated network has no resolver entries.
        host: "127.0.0.1".into(),
        ..ConnectOptions::default()
    };
    options.amqp.heartbeat = heartbeat;
    options
}

#[test]
fn a_silent_server_is_declared_dead_after_two_heartbeat_intervals() {
    let heartbeats = Arc::new(Mutex::new(None));
    let seen = heartbeats.clone();
    let sim = with_broker(tune(2), move |mut broker| {
        let seen = seen.clone();
        async move {
            broker.expect_handshake().await;
            // Silent from here on: it reads, and never writes.
            let n = broker.count_heartbeats_until_eof().await;
            *seen.lock().unwrap() = Some(n);
        }
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let clock = sim.clone();
    let (declared, closed, took) = sim.block_on(async move {
        let connection = connect_with_runtime(runtime, options(2)).await.unwrap();
        let start = clock.elapsed();
        let declared = connection.queue_declare("q", Default::default()).await;
        let closed = connection.closed().await;
        (declared, closed, clock.elapsed() - start)
    });
    let dead = ConnectionError::ClosedByHeartbeatMonitor(Duration::from_secs(4));
    assert_eq!(took, Duration::from_secs(4), "two intervals of silence");
    assert!(
        matches!(declared, Err(Error::ConnectionClosed(ref e)) if *e == dead),
        "{declared:?}"
    );
    assert_eq!(closed, dead);
    // The client kept sending heartbeats meanwhile, after five quarters
    // of an interval without writing: at 2.5 s.
    sim.block_on(async {});
    let sent = heartbeats
        .lock()
        .unwrap()
        .expect("the client closed the socket");
    assert_eq!(sent, 1, "heartbeats in 4 s, one per 2.5 s");
}

/// On a quiet connection whose server sends a heartbeat every half
/// interval (as RabbitMQ does), the client's heartbeats go out with the
/// wakeups those reads cause, with every second one: its timer never
/// fires, and the server hears from it once per interval, half as often as
/// it speaks.
#[test]
fn a_quiet_connection_wakes_for_the_servers_heartbeats_only() {
    const SECONDS: u64 = 30;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let sim = with_clock(move |clock, server| {
        let log = log.clone();
        Box::pin(async move {
            let mut broker = super::FakeBroker::accept(server, tune(2));
            broker.expect_handshake().await;
            let mut heartbeat = bytes::BytesMut::new();
            carehare_core::frame::encode_heartbeat(&mut heartbeat);
            for _ in 0..SECONDS {
                clock
                    .sleep_until(clock.now() + Duration::from_secs(1))
                    .await;
                // What the client wrote since the last heartbeat.
                log.lock().unwrap().push(broker.heartbeats_written());
                broker.send(&heartbeat);
            }
            // Stay, silent, until the client has gone.
            broker.count_heartbeats_until_eof().await;
        })
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let clock = sim.clone();
    let (open, wakes) = sim.block_on(async move {
        let connection = connect_with_runtime(runtime, options(2)).await.unwrap();
        let wakes = clock.timer_wakes();
        clock
            .sleep_until(clock.now() + Duration::from_millis(SECONDS * 1000 + 500))
            .await;
        let open = futures_util::FutureExt::now_or_never(connection.closed()).is_none();
        let wakes = clock.timer_wakes() - wakes;
        connection.close().await.unwrap();
        (open, wakes)
    });
    assert!(open);
    // The server's 30 sleeps and this test's one: none is the client's.
    assert_eq!(wakes, SECONDS + 1, "timer wakes");
    let heard = heard.lock().unwrap().clone();
    // Before the server's first heartbeat the client has nothing to ride
    // on; after it, one of its own answers every second one.
    for (i, pair) in heard[2..].chunks(2).enumerate() {
        assert_eq!(pair, [1, 0], "heartbeats {}: {heard:?}", 2 + 2 * i);
    }
}

#[test]
fn a_server_that_never_speaks_times_out_the_connect_on_time() {
    let kept: Arc<Mutex<Vec<super::End>>> = Arc::default();
    let keep = kept.clone();
    let sim = SimRuntime::new(Box::new(move |_| {
        let (client, server) = duplex();
        // Accepted, and never answered.
        keep.lock().unwrap().push(server);
        Ok(Box::new(client) as Box<dyn Stream>)
    }));
    let runtime: Arc<dyn Runtime> = sim.clone();
    let mut opts = options(60);
    opts.connection_timeout = Duration::from_secs(3);
    let result = sim.block_on(connect_with_runtime(runtime, opts));
    assert_eq!(sim.elapsed(), Duration::from_secs(3));
    match result {
        Err(Error::ConnectTimeout { timeout, .. }) => assert_eq!(timeout, Duration::from_secs(3)),
        other => panic!("expected a connect timeout, got {other:?}"),
    }
}

/// Where a fake broker stops answering the handshake.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Accepts the connection and never writes.
    Silent,
    /// Sends `connection.start`, takes `start-ok`, and never tunes.
    AfterStart,
    /// Tunes, takes `tune-ok` and `open`, and never sends `open-ok`.
    AfterTune,
    /// Sleeps until the connect deadline exactly, then sends `start` and
    /// `tune`: a third event on the deadline's instant.
    StartOnTheDeadline,
}

/// A simulated runtime whose every connect reaches a new server running
/// `script`, given the runtime's clock and the server's end of the socket.
fn with_clock<F>(script: F) -> Arc<SimRuntime>
where
    F: Fn(Arc<dyn Runtime>, super::End) -> BoxFuture<'static, ()> + Send + Sync + 'static,
{
    let slot: Arc<Mutex<Option<std::sync::Weak<SimRuntime>>>> = Arc::default();
    let weak = slot.clone();
    let sim = SimRuntime::new(Box::new(move |_| {
        let Some(rt) = weak.lock().unwrap().as_ref().and_then(|w| w.upgrade()) else {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        };
        let (client, server) = duplex();
        let clock: Arc<dyn Runtime> = rt.clone();
        rt.spawn(script(clock, server));
        Ok(Box::new(client) as Box<dyn Stream>)
    }));
    *slot.lock().unwrap() = Some(Arc::downgrade(&sim));
    sim
}

/// The server's handshake without its last step, `open-ok`.
fn start_and_tune() -> Vec<u8> {
    let mut bytes = testing::method_bytes(0, testing::server_start());
    bytes.extend(testing::method_bytes(0, tune(0)));
    bytes
}

/// Connects to `addresses` fake brokers that all stall at `stall`, waking
/// timers due at one instant in registration order or (with
/// `latest_first`) in reverse, and returns the error.
fn connect_to_stalling(
    stall: Stall,
    latest_first: bool,
    addresses: &[&str],
    connection_timeout: Duration,
) -> Error {
    let sim = with_clock(move |clock, server| {
        let deadline = clock.now() + connection_timeout;
        Box::pin(async move {
            let mut broker = super::FakeBroker::silent(server);
            match stall {
                Stall::Silent => broker.expect_protocol_header().await,
                Stall::AfterStart => {
                    broker.send(&testing::method_bytes(0, testing::server_start()));
                    broker.expect_protocol_header().await;
                    let (_, start_ok) = broker.next_method().await.unwrap();
                    assert_eq!(start_ok.name(), "connection.start-ok");
                }
                Stall::AfterTune => {
                    broker.send(&start_and_tune());
                    broker.expect_protocol_header().await;
                    for name in [
                        "connection.start-ok",
                        "connection.tune-ok",
                        "connection.open",
                    ] {
                        let (_, method) = broker.next_method().await.unwrap();
                        assert_eq!(method.name(), name);
                    }
                }
                Stall::StartOnTheDeadline => {
                    broker.expect_protocol_header().await;
                    clock.sleep_until(deadline).await;
                    broker.send(&start_and_tune());
                }
            }
            // Holds the socket open until the client drops its end.
            while broker.next_method().await.is_some() {}
        })
    });
    if latest_first {
        sim.wake_latest_first();
    }
    let runtime: Arc<dyn Runtime> = sim.clone();
    let urls: Vec<String> = addresses.iter().map(|a| format!("amqp://{a}")).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut opts = ConnectOptions::from_urls(&urls).unwrap();
    opts.amqp.heartbeat = 0;
    opts.connection_timeout = connection_timeout;
    opts.address_timeout = Duration::from_millis(200);
    let result = sim.block_on(connect_with_runtime(runtime, opts));
    match result {
        Ok(_) => panic!("{stall:?}: connected to a stalling broker"),
        Err(e) => {
            // Nothing is left waiting past the deadline.
            assert_eq!(sim.elapsed(), connection_timeout, "{stall:?}: {e:?}");
            e
        }
    }
}

const STALLS: [Stall; 4] = [
    Stall::Silent,
    Stall::AfterStart,
    Stall::AfterTune,
    Stall::StartOnTheDeadline,
];

#[test]
fn a_connect_that_runs_out_of_time_is_always_connect_timeout() {
    // The handshake's timer and the connect loop's sleep fall on the same
    // instant; each order of the two is run.
    for stall in STALLS {
        for latest_first in [false, true] {
            let timeout = Duration::from_millis(1500);
            match connect_to_stalling(stall, latest_first, &["127.0.0.1"], timeout) {
                Error::ConnectTimeout {
                    address,
                    timeout: t,
                } => {
                    assert_eq!(address, "127.0.0.1:5672");
                    assert_eq!(t, timeout, "{stall:?}");
                }
                other => panic!("{stall:?}, latest first {latest_first}: {other:?}"),
            }
        }
    }
}

#[test]
fn each_address_that_runs_out_of_its_time_is_connect_timeout() {
    for stall in STALLS {
        for latest_first in [false, true] {
            let e = connect_to_stalling(
                stall,
                latest_first,
                &["10.0.0.1", "10.0.0.2"],
                Duration::from_secs(1),
            );
            let Error::AllAddressesFailed { attempts } = e else {
                panic!("{stall:?}, latest first {latest_first}: {e:?}");
            };
            let limits: Vec<Duration> = attempts
                .iter()
                .map(|(_, e)| match e {
                    Error::ConnectTimeout { timeout, .. } => *timeout,
                    other => panic!("{stall:?}, latest first {latest_first}: {other:?}"),
                })
                .collect();
            // address_timeout for the first; what is left for the last.
            assert_eq!(
                limits,
                [Duration::from_millis(200), Duration::from_millis(800)]
            );
        }
    }
}

#[test]
fn close_without_close_ok_gives_up_after_the_close_timeout() {
    let sim = with_broker(tune(0), |mut broker| async move {
        broker.expect_handshake().await;
        // Takes connection.close, and never answers it.
        while broker.next_method().await.is_some() {}
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let clock = sim.clone();
    let mut opts = options(0);
    opts.amqp.close_timeout = Duration::from_secs(7);
    let (closed, outcome, took) = sim.block_on(async move {
        let connection = connect_with_runtime(runtime, opts).await.unwrap();
        let start = clock.elapsed();
        let closed = connection.close().await;
        (closed, connection.closed().await, clock.elapsed() - start)
    });
    assert!(
        closed.is_ok(),
        "a close the server ignores is still ours: {closed:?}"
    );
    assert_eq!(
        outcome,
        ConnectionError::CloseTimeout(Duration::from_secs(7))
    );
    assert_eq!(took, Duration::from_secs(7));
}

/// A server that breaks the protocol (a frame for a channel never opened)
/// and then holds back its `close-ok`: a waiting consumer and an
/// unconfirmed publish fail with the violation at once, not when the
/// close times out (nothing can arrive for them once the close started);
/// `closed()` still waits for the close to end.
#[test]
fn waiters_fail_when_a_close_starts_not_when_it_ends() {
    let sim = with_broker(tune(0), |mut broker| async move {
        broker.expect_handshake().await;
        loop {
            match broker.next_method().await {
                Some((_, Method::BasicPublish(_))) => {
                    let stray = BasicAck {
                        delivery_tag: 1,
                        multiple: false,
                    };
                    broker.send(&testing::method_bytes(99, stray));
                }
                // Never answered.
                Some((_, Method::ConnectionClose(_))) => {}
                Some((channel, method)) => {
                    if let Some(reply) = testing::polite_reply(&method) {
                        broker.send(&testing::method_bytes(channel, reply));
                    }
                }
                None => return,
            }
        }
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let clock = sim.clone();
    let mut opts = options(0);
    opts.amqp.close_timeout = Duration::from_secs(7);
    let (next, confirmed, failed_after, outcome, closed_after) = sim.block_on(async move {
        let connection = connect_with_runtime(runtime, opts).await.unwrap();
        let consumer = connection.acking_consumer("q", 10).await.unwrap();
        let start = clock.elapsed();
        let confirmation = connection.publish("x", "", "q");
        let both = futures_util::future::join(consumer.next(), confirmation);
        let (next, confirmed) = both.await;
        let failed_after = clock.elapsed() - start;
        let outcome = connection.closed().await;
        (
            next,
            confirmed,
            failed_after,
            outcome,
            clock.elapsed() - start,
        )
    });
    let violation = |e: &ConnectionError| {
        matches!(
            e,
            ConnectionError::Protocol(carehare_core::error::ProtocolViolation::UnknownChannel(99))
        )
    };
    assert!(violation(&outcome), "{outcome:?}");
    for r in [next.map(drop), confirmed] {
        assert!(
            matches!(&r, Err(Error::ConnectionClosed(e)) if violation(e)),
            "{r:?}"
        );
    }
    assert_eq!(failed_after, Duration::ZERO);
    assert_eq!(closed_after, Duration::from_secs(7));
}

#[test]
fn an_rpc_call_without_a_reply_times_out_on_time() {
    let sim = with_broker(tune(0), |broker| serve(broker, 0, POLITE, Arc::default()));
    let runtime: Arc<dyn Runtime> = sim.clone();
    let clock = sim.clone();
    let (result, took) = sim.block_on(async move {
        let connection = connect_with_runtime(runtime, options(0)).await.unwrap();
        let rpc = connection.direct_reply_to().await.unwrap();
        let start = clock.elapsed();
        let result = rpc
            .call(
                "",
                "rpc",
                "ping",
                &Default::default(),
                Duration::from_secs(5),
            )
            .await;
        (result, clock.elapsed() - start)
    });
    assert!(
        matches!(result, Err(Error::Timeout(t)) if t == Duration::from_secs(5)),
        "{result:?}"
    );
    assert_eq!(took, Duration::from_secs(5));
}

#[test]
fn a_driver_that_stops_answers_every_waiter_with_that_cause() {
    let sim = with_broker(tune(0), |broker| {
        let never_ack = Behaviour { ack: 0, ..POLITE };
        serve(broker, 0, never_ack, Arc::default())
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let connection =
        sim.block_on(async move { connect_with_runtime(runtime, options(0)).await.unwrap() });
    let confirmation = connection.publish("x", "", "q");
    // Sent, and never confirmed.
    sim.block_on(async {});
    // The runtime shuts down: the driver's task is dropped.
    sim.drop_tasks();
    let (confirmed, closed, declared) = sim.block_on(async move {
        let confirmed = confirmation.await;
        let closed = connection.closed().await;
        let declared = connection.queue_declare("q", Default::default()).await;
        (confirmed, closed, declared)
    });
    let stopped = |r: &Result<_, Error>| {
        matches!(
            r,
            Err(Error::ConnectionClosed(ConnectionError::DriverStopped))
        )
    };
    assert!(stopped(&confirmed), "{confirmed:?}");
    assert!(stopped(&declared.map(drop)));
    assert_eq!(closed, ConnectionError::DriverStopped);
}

/// How a consumer is read in [`consume_while_cancelled`].
#[derive(Clone, Copy, Debug)]
enum Read {
    Next,
    NextDelivery,
    Stream,
}

/// A fake broker past the handshake whose client has opened one consumer,
/// `tag`; returns it, the consumer's channel and its tag.
async fn consuming_broker(
    server: super::End,
    tag: &'static str,
) -> (super::FakeBroker, carehare_core::types::ChannelId, ShortStr) {
    let mut broker = super::FakeBroker::accept(server, tune(0));
    broker.expect_handshake().await;
    let tag = ShortStr::from_static(tag);
    let (channel, _) = accept_consumer(&mut broker, &tag).await;
    (broker, channel, tag)
}

/// Answers a consumer's channel open, QoS and `basic.consume` (with
/// `tag`); returns its channel and the consume method.
async fn accept_consumer(
    broker: &mut super::FakeBroker,
    tag: &ShortStr,
) -> (carehare_core::types::ChannelId, BasicConsume) {
    loop {
        let (channel, method) = broker.next_method().await.unwrap();
        let reply: Method = match method {
            Method::ChannelOpen(_) => ChannelOpenOk::default().into(),
            Method::BasicQos(_) => BasicQosOk {}.into(),
            Method::BasicConsume(consume) => {
                let ok = BasicConsumeOk {
                    consumer_tag: tag.clone(),
                };
                broker.send(&testing::method_bytes(channel, ok));
                return (channel, consume);
            }
            other => panic!("unexpected {other:?}"),
        };
        broker.send(&testing::method_bytes(channel, reply));
    }
}

/// Delivers message `tag_n` (its body is the number) to the consumer
/// `tag` on `channel`.
fn deliver(
    broker: &mut super::FakeBroker,
    channel: carehare_core::types::ChannelId,
    tag: &ShortStr,
    tag_n: u64,
) {
    let deliver = BasicDeliver {
        consumer_tag: tag.clone(),
        delivery_tag: tag_n,
        ..Default::default()
    };
    broker.send(&testing::content_bytes(
        channel,
        deliver,
        &BasicProperties::default(),
        tag_n.to_string().as_bytes(),
        131_072,
    ));
}

/// Answers `method` as RabbitMQ would, if it needs an answer; whether it
/// closed the connection.
fn answer_politely(
    broker: &mut super::FakeBroker,
    channel: carehare_core::types::ChannelId,
    method: &Method,
) -> bool {
    if let Some(reply) = testing::polite_reply(method) {
        broker.send(&testing::method_bytes(channel, reply));
    }
    matches!(method, Method::ConnectionClose(_))
}

/// Hands every further method to `check`, and answers the channel and
/// connection closes until the connection is closed.
async fn answer_closes(broker: &mut super::FakeBroker, mut check: impl FnMut(&Method)) {
    while let Some((channel, method)) = broker.next_method().await {
        check(&method);
        match method {
            Method::ChannelClose(_) => {
                broker.send(&testing::method_bytes(channel, ChannelCloseOk {}));
            }
            Method::ConnectionClose(_) => {
                broker.send(&testing::method_bytes(0, ConnectionCloseOk {}));
                return;
            }
            _ => {}
        }
    }
}

/// Has a fake broker deliver `n` messages (bodies "1", "2"...) in bursts
/// of 1 to 4 at uneven times, while the consumer reads each with `reads`
/// in turn, every read raced against a timer of 0.5 or 1 ms that cancels
/// it when it fires first. Returns the delivery tags and bodies read, in
/// order, and how many reads were cancelled.
fn consume_while_cancelled(
    n: u64,
    reads: &'static [Read],
    latest_first: bool,
) -> (Vec<(u64, String)>, usize) {
    let sim = with_clock(move |clock, server| {
        Box::pin(async move {
            let (mut broker, channel, tag) = consuming_broker(server, "amq.ctag-1").await;
            let mut sent = 0;
            let mut burst = 0u64;
            while sent < n {
                // Gaps of 0, 1 and 2 ms: some deliveries land on the same
                // instant as the consumer's timer.
                let gap = Duration::from_millis(burst % 3);
                clock.sleep_until(clock.now() + gap).await;
                for _ in 0..(burst % 4 + 1).min(n - sent) {
                    sent += 1;
                    deliver(&mut broker, channel, &tag, sent);
                }
                burst += 1;
            }
            // Takes the acks, then answers the closes.
            answer_closes(&mut broker, |_| {}).await;
        })
    });
    if latest_first {
        sim.wake_latest_first();
    }
    let runtime: Arc<dyn Runtime> = sim.clone();
    sim.block_on(async move {
        let connection = connect_with_runtime(runtime.clone(), options(0))
            .await
            .unwrap();
        let mut consumer = connection.acking_consumer("q", 100).await.unwrap();
        let mut got = Vec::new();
        let mut cancelled = 0;
        let mut turn = 0usize;
        // A lost message would leave this waiting forever: give up after
        // far more turns than the deliveries take.
        while (got.len() as u64) < n && turn < 20 * n as usize {
            let read = reads[turn % reads.len()];
            let wait = Duration::from_micros(if turn.is_multiple_of(2) { 1000 } else { 500 });
            turn += 1;
            let timer = runtime.sleep_until(runtime.now() + wait);
            let message: futures_util::future::BoxFuture<'_, Result<(u64, Bytes), Error>> =
                match read {
                    Read::Next => Box::pin(async {
                        let m = consumer.next().await?;
                        Ok((m.delivery_tag, m.body))
                    }),
                    Read::NextDelivery => Box::pin(async {
                        let (body, tag) = consumer.next_delivery().await?;
                        Ok((tag, body))
                    }),
                    Read::Stream => Box::pin(async {
                        let m = futures_util::StreamExt::next(&mut consumer)
                            .await
                            .ok_or(Error::ConsumerClosed)??;
                        Ok((m.delivery_tag, m.body))
                    }),
                };
            // The losing future (a read, or the timer) is dropped here.
            let outcome = match futures_util::future::select(message, timer).await {
                Either::Left((read, _)) => Some(read),
                Either::Right(_) => None,
            };
            match outcome {
                Some(Ok((tag, body))) => {
                    consumer.ack(tag);
                    got.push((tag, String::from_utf8(body.to_vec()).unwrap()));
                }
                Some(Err(e)) => panic!("{read:?}: {e}"),
                None => cancelled += 1,
            }
        }
        consumer.close().await;
        connection.close().await.unwrap();
        (got, cancelled)
    })
}

#[test]
fn next_and_next_delivery_lose_nothing_when_cancelled_by_a_timer() {
    const N: u64 = 1000;
    let orders: [&'static [Read]; 4] = [
        &[Read::Next],
        &[Read::NextDelivery],
        &[Read::Stream],
        &[Read::Next, Read::NextDelivery, Read::Stream],
    ];
    for reads in orders {
        for latest_first in [false, true] {
            let (got, cancelled) = consume_while_cancelled(N, reads, latest_first);
            let expected: Vec<(u64, String)> = (1..=N).map(|t| (t, t.to_string())).collect();
            assert!(got == expected, "{reads:?}: messages lost or out of order");
            // The timer did cancel reads, many times.
            assert!(
                cancelled > 100,
                "{reads:?}: only {cancelled} reads cancelled"
            );
        }
    }
}

/// A no-ack consumer: RabbitMQ sends it everything at once (no prefetch
/// applies), and the client holds at most its `max_buffered` plus one
/// read's worth, leaving the rest in the socket; a consumer that stops
/// reading for far longer than the heartbeat timeout does not make the
/// connection declare the server dead; every message arrives, in order.
#[test]
fn a_no_ack_consumer_pauses_reading_instead_of_buffering_without_bound() {
    use crate::handles::consumer::ConsumerOptions;
    const N: u64 = 20_000;
    let sim = with_clock(move |_clock, server| {
        Box::pin(async move {
            let mut broker = super::FakeBroker::accept(server, tune(1));
            broker.expect_handshake().await;
            let tag = ShortStr::from_static("amq.ctag-1");
            let (channel, consume) = accept_consumer(&mut broker, &tag).await;
            assert!(consume.no_ack, "the consume must ask for no-ack");
            // Everything at once, as RabbitMQ does for a no-ack consumer.
            for sent in 1..=N {
                deliver(&mut broker, channel, &tag, sent);
            }
            // No ack may come.
            answer_closes(&mut broker, |method| {
                assert!(
                    !matches!(method, Method::BasicAck(_)),
                    "a no-ack consumer acked"
                );
            })
            .await;
        })
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let (got, most_held, closed) = sim.block_on(async move {
        let connection = connect_with_runtime(runtime.clone(), options(1))
            .await
            .unwrap();
        let options = ConsumerOptions {
            no_ack: true,
            prefetch_count: 100,
            ..Default::default()
        };
        let consumer = connection.consumer("q", options).await.unwrap();
        let mut got = Vec::with_capacity(N as usize);
        let mut most_held = 0;
        while (got.len() as u64) < N {
            let m = consumer.next().await.unwrap();
            consumer.ack(m.delivery_tag); // does nothing
            got.push(m.delivery_tag);
            most_held = most_held.max(consumer.buffered());
            if got.len() == 100 {
                // Stop reading for 10 heartbeat timeouts.
                runtime
                    .sleep_until(runtime.now() + Duration::from_secs(20))
                    .await;
                most_held = most_held.max(consumer.buffered());
            }
        }
        let closed = futures_util::FutureExt::now_or_never(connection.closed());
        connection.close().await.unwrap();
        (got, most_held, closed)
    });
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "every message, in order");
    assert!(
        most_held <= 100 + crate::handles::consumer::NO_ACK_OVERSHOOT as usize,
        "held {most_held}"
    );
    assert!(
        most_held >= 100,
        "reading paused only once full: {most_held}"
    );
    assert!(
        closed.is_none(),
        "no heartbeat timeout while paused: {closed:?}"
    );
}

/// Captures every log line at every level on this thread, until the
/// guard is dropped.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let guard = captured.on_this_thread(tracing::Level::TRACE);
    (captured, guard)
}

/// Everything logged at every level while a connection with a password
/// connects, works and closes, and while another is refused (403), runs in
/// a span naming the connection; and neither the password nor the URL
/// with its credentials reaches a log line, an error or a `Debug` output.
fn logs_name_the_connection_and_never_show_a_password() {
    const PASSWORD: &str = "s3cr3t-Pa55";
    let (captured, _guard) = capture_logs();

    let world = Arc::new(Mutex::new(super::World::default()));
    let sim = super::with_network(move |_, n, io| {
        Ok(if n == 0 {
            Box::pin(serve(
                super::FakeBroker::accept(io, tune(0)),
                0,
                POLITE,
                world.clone(),
            ))
        } else {
            super::refusing(io, 403, "ACCESS_REFUSED - Login was refused")
        })
    });
    let url = format!("amqp://alice:{PASSWORD}@127.0.0.1/vh?name=billing&heartbeat=0");
    let options = ConnectOptions::from_url(&url).unwrap();
    let runtime: Arc<dyn Runtime> = sim.clone();
    let seen = {
        let options = options.clone();
        sim.block_on(async move {
            let connection = connect_with_runtime(runtime.clone(), options.clone())
                .await
                .unwrap();
            connection
                .queue_declare("q", Default::default())
                .await
                .unwrap();
            let shown = format!("{connection:?}");
            connection.close().await.unwrap();
            let refused = connect_with_runtime(runtime, options).await.unwrap_err();
            assert_eq!(refused.reply_code(), Some(403), "{refused}");
            [shown, format!("{refused:?}"), refused.to_string()]
        })
    };
    let logs = captured.text();
    assert!(logs.contains("amqp_connection{id="), "{logs}");
    assert!(logs.contains("name=\"billing\""), "{logs}");
    assert!(logs.contains("address=127.0.0.1:5672"), "{logs}");
    assert!(
        logs.contains("ACCESS_REFUSED"),
        "the refusal is logged: {logs}"
    );
    for text in seen.iter().chain([&format!("{options:?}"), &logs]) {
        assert!(!text.contains(PASSWORD), "a password in: {text}");
        assert!(!text.contains("alice:"), "credentials in: {text}");
    }
}

/// What carehare logs about a consumer (its start, RabbitMQ cancelling
/// it, its end) is under the consumer's own span, `amqp_channel`, a child
/// of the connection's; `AckingConsumer::span` hands it to the application.
fn a_consumers_logs_are_under_its_channel_span() {
    let (captured, _guard) = capture_logs();

    let sim = with_clock(move |_, server| {
        Box::pin(async move {
            let (mut broker, channel, tag) = consuming_broker(server, "amq.ctag-7").await;
            let cancel = BasicCancel {
                consumer_tag: tag,
                no_wait: true,
            };
            broker.send(&testing::method_bytes(channel, cancel));
            answer_closes(&mut broker, |_| {}).await;
        })
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    sim.block_on(async move {
        let connection = connect_with_runtime(runtime, options(0)).await.unwrap();
        let consumer = connection.acking_consumer("orders", 10).await.unwrap();
        assert_eq!(
            consumer.span().metadata().map(|m| m.name()),
            Some("amqp_channel")
        );
        let ended = consumer.next().await.unwrap_err();
        assert!(
            matches!(ended, Error::ConsumerCancelledByServer),
            "{ended:?}"
        );
        connection.close().await.unwrap();
    });
    let logs = captured.text();
    for event in [
        "consuming",
        "RabbitMQ cancelled a consumer",
        "consumer ended",
    ] {
        let line = logs
            .lines()
            .find(|l| l.contains(event))
            .unwrap_or_else(|| panic!("no {event:?} in {logs}"));
        assert!(line.contains("amqp_connection{id="), "{line}");
        assert!(line.contains(":amqp_channel{"), "{line}");
        assert!(line.contains("channel=1"), "{line}");
        assert!(line.contains("queue=\"orders\""), "{line}");
        // The tag is on the span from consume-ok on; the cancel, which may
        // arrive in the same read, carries it itself.
        if event != "consumer ended" {
            assert!(line.contains("consumer_tag=amq.ctag-7"), "{line}");
        }
    }
}

/// The two log-capturing checks above, one after the other: each installs
/// a scoped subscriber, and tracing caches whether a call site is enabled
/// process-wide, so two overlapping in one test binary can hide a span
/// from each other.
#[test]
fn logs_carry_their_spans_and_never_a_password() {
    logs_name_the_connection_and_never_show_a_password();
    a_consumers_logs_are_under_its_channel_span();
}

/// A consumer's ack on a connection whose publisher has publishes held
/// back (the core's `Coalescing`) goes out at once, with them: the ack
/// ends the hold, so the driver is woken for it and nothing waits for the
/// hold's delay or for the next command. The broker confirms nothing, so
/// only the ack can end the hold.
#[test]
fn an_ack_ends_a_publish_hold_at_once() {
    use carehare_core::Coalescing;
    const HOLD: Duration = Duration::from_secs(3600);
    let seen: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
    let noted = seen.clone();
    let sim = with_clock(move |clock, server| {
        let noted = noted.clone();
        Box::pin(async move {
            let (mut broker, consumer_channel, tag) = consuming_broker(server, "amq.ctag-1").await;
            let start = clock.now();
            let mut publishes = 0;
            while let Some((channel, method)) = broker.next_method().await {
                let name = method.name().to_string();
                noted.lock().unwrap().push((name, clock.now() - start));
                if let Method::BasicPublish(_) = method {
                    broker.next_body().await.unwrap();
                    publishes += 1;
                    if publishes == 4 {
                        deliver(&mut broker, consumer_channel, &tag, 1);
                    }
                    continue;
                }
                if answer_politely(&mut broker, channel, &method) {
                    return;
                }
            }
        })
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    sim.block_on(async move {
        let mut options = options(0);
        options.amqp.coalescing = Some(Coalescing {
            min_unconfirmed: 4,
            max_bytes: 1 << 20,
            max_delay: HOLD,
        });
        let connection = connect_with_runtime(runtime.clone(), options)
            .await
            .unwrap();
        let consumer = connection.acking_consumer("q", 10).await.unwrap();
        let publisher = connection.publisher(100);
        let mut pending = Vec::new();
        for _ in 0..4 {
            pending.push(
                publisher
                    .publish(Bytes::from_static(b"m"), "", "q")
                    .await
                    .unwrap(),
            );
        }
        // Written, unconfirmed: the broker answers with a delivery.
        let message = consumer.next().await.unwrap();
        // Held behind the four, for as long as the client does nothing else.
        pending.push(
            publisher
                .publish(Bytes::from_static(b"m"), "", "q")
                .await
                .unwrap(),
        );
        runtime
            .sleep_until(runtime.now() + Duration::from_millis(1))
            .await;
        consumer.ack(message.delivery_tag);
        // Anything else the client does would wake its driver: wait first.
        runtime
            .sleep_until(runtime.now() + Duration::from_secs(1))
            .await;
        drop(pending);
        connection.close().await.unwrap();
    });
    let seen = seen.lock().unwrap();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[names.len() - 3..],
        ["basic.publish", "basic.ack", "connection.close"],
        "{names:?}"
    );
    let (_, held_until) = &seen[seen.len() - 3];
    let (_, acked_at) = &seen[seen.len() - 2];
    assert_eq!(*held_until, Duration::from_millis(1), "the fifth was held");
    assert_eq!(
        *acked_at,
        Duration::from_millis(1),
        "the ack waited for something else to wake the driver"
    );
}

/// A consumer's ack waits while little of its prefetch is unsettled, and
/// the driver arms its timer for the hold: with nothing else happening,
/// the ack reaches the broker when the hold's `max_delay` ends, not
/// sooner and not later. Acks that leave a quarter of the prefetch
/// unsettled go at once.
#[test]
fn a_consumers_acks_wait_for_more_deliveries_or_max_delay() {
    use carehare_core::Coalescing;
    let seen: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let noted = seen.clone();
    let sim = with_clock(move |clock, server| {
        let noted = noted.clone();
        Box::pin(async move {
            let (mut broker, channel, tag) = consuming_broker(server, "amq.ctag-1").await;
            let start = clock.now();
            deliver(&mut broker, channel, &tag, 1);
            while let Some((channel, method)) = broker.next_method().await {
                if let Method::BasicAck(ack) = &method {
                    noted
                        .lock()
                        .unwrap()
                        .push((ack.delivery_tag, clock.now() - start));
                    if ack.delivery_tag == 1 {
                        for n in 2..=6 {
                            deliver(&mut broker, channel, &tag, n);
                        }
                    }
                }
                if answer_politely(&mut broker, channel, &method) {
                    return;
                }
            }
        })
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    sim.block_on(async move {
        let connection = connect_with_runtime(runtime.clone(), options(0))
            .await
            .unwrap();
        // A quarter of 20 is 5.
        let consumer = connection.acking_consumer("q", 20).await.unwrap();
        let first = consumer.next().await.unwrap();
        consumer.ack(first.delivery_tag);
        for _ in 2..=5 {
            let message = consumer.next().await.unwrap();
            consumer.ack(message.delivery_tag);
        }
        // Tags 2 to 5 are unsettled by what was written when the sixth
        // comes: the acks go with no wait.
        let sixth = consumer.next().await.unwrap();
        runtime
            .sleep_until(runtime.now() + Duration::from_secs(1))
            .await;
        consumer.ack(sixth.delivery_tag);
        runtime
            .sleep_until(runtime.now() + Duration::from_secs(1))
            .await;
        connection.close().await.unwrap();
    });
    let hold = Coalescing::default().max_delay;
    let seen = seen.lock().unwrap();
    let tags: Vec<u64> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, [1, 2, 3, 4, 5, 6], "{seen:?}");
    assert_eq!(seen[0].1, hold, "alone, the first waited max_delay");
    assert!(
        seen[1..5].iter().all(|(_, at)| *at == hold),
        "2 to 5 went when the sixth came, at once: {seen:?}"
    );
    // A hold counts from the core's latest input (commands take no time):
    // an ack a second after the last delivery finds its hold already over,
    // and goes at once.
    assert_eq!(
        seen[5].1,
        hold + Duration::from_secs(1),
        "the sixth went at once"
    );
}
