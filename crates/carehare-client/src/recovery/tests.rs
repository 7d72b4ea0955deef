//! Recovery on simulated time, against fake brokers that go away and come
//! back: re-publish order, in-doubt failures, consumers that re-subscribe
//! with stale tags refused, giving up on permanent errors, backoff, close
//! and the outage timeout.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::{Arc, Mutex};
use std::time::Duration;

use carehare_core::method::*;
use carehare_core::testing;
use futures_util::{FutureExt, StreamExt};

use super::*;
use crate::error::ConnectionError;
use crate::handles::consumer::ConsumerOptions;
use crate::sim::{Behaviour, FakeBroker, POLITE, SimRuntime, World, refusing, serve, with_network};

fn options() -> ConnectOptions {
    let mut options = ConnectOptions {
        host: "127.0.0.1".into(),
        ..ConnectOptions::default()
    };
    options.amqp.heartbeat = 0;
    options
}

fn tune() -> ConnectionTune {
    ConnectionTune {
        heartbeat: 0,
        ..testing::server_tune()
    }
}

/// A network where connection `n` (from 0) behaves as `plan(n)` says, and
/// connects fail while the simulated time is in `down`.
fn network(
    world: &Arc<Mutex<World>>,
    down: std::ops::Range<Duration>,
    plan: impl Fn(usize) -> Behaviour + Send + Sync + 'static,
) -> Arc<SimRuntime> {
    let world = world.clone();
    let accepted = Arc::new(Mutex::new(0usize));
    with_network(move |now, _, io| {
        world.lock().unwrap().attempts.push(now);
        if down.contains(&now) {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        let n = {
            let mut a = accepted.lock().unwrap();
            *a += 1;
            *a - 1
        };
        Ok(Box::pin(serve(
            FakeBroker::accept(io, tune()),
            n,
            plan(n),
            world.clone(),
        )))
    })
}

/// A network whose first connection behaves as `first` and whose later
/// ones run `later`; every attempt is recorded.
fn first_then(
    world: &Arc<Mutex<World>>,
    first: Behaviour,
    later: impl Fn(crate::sim::End) -> BoxFuture<'static, ()> + Send + Sync + 'static,
) -> Arc<SimRuntime> {
    let world = world.clone();
    with_network(move |now, n, io| {
        world.lock().unwrap().attempts.push(now);
        if n == 0 {
            return Ok(Box::pin(serve(
                FakeBroker::accept(io, tune()),
                0,
                first,
                world.clone(),
            )));
        }
        Ok(later(io))
    })
}

/// Declares a server-named queue and hands its name on.
fn declare_setup(c: Connection) -> BoxFuture<'static, Result<String, Error>> {
    Box::pin(async move {
        let ok = c.queue_declare("", Default::default()).await?;
        Ok(ok.queue.to_string())
    })
}

fn connect(sim: &Arc<SimRuntime>, recovery: RecoveryOptions) -> RecoveringConnection<String> {
    connect_with(sim, options(), recovery)
}

fn connect_with(
    sim: &Arc<SimRuntime>,
    options: ConnectOptions,
    recovery: RecoveryOptions,
) -> RecoveringConnection<String> {
    let runtime: Arc<dyn Runtime> = sim.clone();
    sim.block_on(RecoveringConnection::connect(
        runtime,
        options,
        recovery,
        declare_setup,
    ))
    .unwrap()
}

#[test]
fn unconfirmed_publishes_go_out_again_in_order_on_the_next_connection() {
    let world = Arc::new(Mutex::new(World::default()));
    let first = Behaviour {
        ack: 2,
        drop_after_publishes: Some(5),
        ..POLITE
    };
    let down = Duration::from_millis(1)..Duration::from_secs(2);
    let sim = network(&world, down, move |n| if n == 0 { first } else { POLITE });
    let counters = Arc::new(crate::Counters::default());
    let metered = ConnectOptions {
        metrics: Some(counters.clone()),
        ..options()
    };
    let connection = connect_with(&sim, metered, RecoveryOptions::default());
    let mut events = connection.events();
    let publisher = connection.publisher(10);
    let clock = sim.clone();
    let outcomes = sim.block_on(async move {
        let mut confirmations = Vec::new();
        for i in 1..=5 {
            confirmations.push(publisher.publish(format!("m{i}"), "", "q").await.unwrap());
        }
        let mut outcomes = Vec::new();
        for c in confirmations {
            outcomes.push((c.await, clock.elapsed()));
        }
        outcomes
    });
    for (i, (outcome, _)) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "publish {}: {outcome:?}", i + 1);
    }
    let w = world.lock().unwrap();
    assert_eq!(w.published[0], ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(
        w.published[1],
        ["m3", "m4", "m5"],
        "in doubt, again, in order"
    );
    // Recovered within the backoff's cap of the broker coming back.
    let back = outcomes[4].1;
    assert!(back >= Duration::from_secs(2), "{back:?}");
    assert!(
        back <= Duration::from_secs(2) + Duration::from_millis(800),
        "{back:?}"
    );
    drop(w);
    let seen: Vec<RecoveryEvent> = sim.block_on(async move {
        let mut seen = Vec::new();
        while let Some(e) = events.next().await {
            let done = matches!(e, RecoveryEvent::Recovered { .. });
            seen.push(e);
            if done {
                break;
            }
        }
        seen
    });
    assert!(
        matches!(seen[0], RecoveryEvent::Disconnected { .. }),
        "{seen:?}"
    );
    assert!(
        matches!(seen[1], RecoveryEvent::Connecting { attempt: 1, .. }),
        "{seen:?}"
    );
    assert!(
        matches!(seen[seen.len() - 2], RecoveryEvent::Connected { .. }),
        "{seen:?}"
    );
    match seen.last() {
        Some(RecoveryEvent::Recovered { downtime }) => {
            assert!(*downtime >= Duration::from_secs(2) - Duration::from_millis(1));
        }
        other => panic!("{other:?}"),
    }
    // Both connections count into the one hook: 5 publishes, the 3 in
    // doubt again, and the reconnect.
    use crate::Counter;
    assert_eq!(counters.get(Counter::Reconnects), 1);
    assert_eq!(counters.get(Counter::Published), 8);
    assert_eq!(counters.get(Counter::Confirmed), 5);
}

#[test]
fn fail_in_doubt_mode_fails_only_the_unconfirmed_publishes() {
    let world = Arc::new(Mutex::new(World::default()));
    let first = Behaviour {
        ack: 2,
        drop_after_publishes: Some(5),
        ..POLITE
    };
    let sim = network(&world, Duration::ZERO..Duration::ZERO, move |n| {
        if n == 0 { first } else { POLITE }
    });
    let recovery = RecoveryOptions {
        republish: Republish::FailInDoubt,
        ..RecoveryOptions::default()
    };
    let connection = connect(&sim, recovery);
    let publisher = connection.publisher(10);
    let outcomes = sim.block_on(async move {
        let mut confirmations = Vec::new();
        for i in 1..=5 {
            confirmations.push(publisher.publish(format!("m{i}"), "", "q").await.unwrap());
        }
        let mut outcomes = Vec::new();
        for c in confirmations {
            outcomes.push(c.await);
        }
        // The publisher carries on on the new connection.
        outcomes.push(publisher.publish("m6", "", "q").await.unwrap().await);
        outcomes
    });
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    for o in &outcomes[2..5] {
        assert!(matches!(o, Err(Error::InDoubt)), "{outcomes:?}");
    }
    assert!(outcomes[5].is_ok(), "{outcomes:?}");
    assert_eq!(world.lock().unwrap().published[1], ["m6"]);
}

#[test]
fn a_consumer_resubscribes_to_the_new_queue_name_and_refuses_stale_tags() {
    let world = Arc::new(Mutex::new(World::default()));
    let first = Behaviour {
        deliver: true,
        drop_after_deliver: true,
        ..POLITE
    };
    let second = Behaviour {
        deliver: true,
        ..POLITE
    };
    let sim = network(&world, Duration::ZERO..Duration::ZERO, move |n| {
        if n == 0 { first } else { second }
    });
    let connection = connect(&sim, RecoveryOptions::default());
    let consumer =
        Arc::new(connection.consumer(|queue: &String| queue.clone(), ConsumerOptions::default()));
    let c = consumer.clone();
    let (first_message, stale_ack, second_message, fresh_ack) = sim.block_on(async move {
        let first = c.next().await.unwrap();
        // The connection drops right after this delivery: the next
        // message comes from the new connection.
        let second = c.next().await.unwrap();
        let stale = c.ack(first.tag);
        let fresh = c.ack(second.tag);
        (first, stale, second, fresh)
    });
    assert_eq!(first_message.tag.generation(), 1);
    assert!(!first_message.redelivered);
    assert_eq!(second_message.tag.generation(), 2);
    assert!(
        second_message.redelivered,
        "RabbitMQ redelivers what was unacked"
    );
    assert!(!stale_ack, "a tag of a lost connection settles nothing");
    assert!(fresh_ack);
    // An idle consumer's ack is written at the latest once the hold on
    // acks ends (see `Coalescing`).
    let clock = sim.clone();
    sim.block_on(async move {
        let hold = carehare_core::Coalescing::default().max_delay;
        clock.sleep_until(clock.now() + hold).await;
    });
    let w = world.lock().unwrap();
    assert_eq!(w.consumed[0], ["amq.gen-0"]);
    assert_eq!(
        w.consumed[1],
        ["amq.gen-1"],
        "the name setup got on the new connection"
    );
    assert!(w.acked[0].is_empty());
    assert_eq!(w.acked[1], [1]);
}

#[test]
fn a_permanent_refusal_gives_up_at_once() {
    let world = Arc::new(Mutex::new(World::default()));
    let first = Behaviour {
        drop_after_publishes: Some(1),
        ack: 0,
        ..POLITE
    };
    // The password changed meanwhile: 403 during the handshake.
    let sim = first_then(&world, first, |io| {
        refusing(io, 403, "ACCESS_REFUSED - Login was refused")
    });
    let connection = connect(&sim, RecoveryOptions::default());
    let mut events = connection.events();
    let publisher = connection.publisher(10);
    let c = connection.clone();
    let (published, after) = sim.block_on(async move {
        let published = publisher.publish("m1", "", "q").await.unwrap().await;
        (published, c.connection().await)
    });
    let refused = |e: &Error| matches!(e, Error::ConnectionClosed(ConnectionError::AuthenticationFailed(r)) if r.code == 403);
    assert!(published.as_ref().is_err_and(refused), "{published:?}");
    assert!(after.as_ref().is_err_and(refused), "{after:?}");
    assert_eq!(world.lock().unwrap().attempts.len(), 2, "no retry loop");
    let last = sim.block_on(async move {
        let mut last = None;
        while let Some(e) = events.next().await {
            last = Some(e);
        }
        last
    });
    assert!(
        matches!(last, Some(RecoveryEvent::GaveUp { ref cause }) if refused(cause)),
        "{last:?}"
    );
}

#[test]
fn reconnects_back_off_with_jitter_up_to_the_cap() {
    let world = Arc::new(Mutex::new(World::default()));
    let first = Behaviour {
        drop_after_publishes: Some(1),
        ack: 0,
        ..POLITE
    };
    let down = Duration::from_millis(1)..Duration::from_secs(5);
    let sim = network(&world, down, move |n| if n == 0 { first } else { POLITE });
    let connection = connect(&sim, RecoveryOptions::default());
    let publisher = connection.publisher(10);
    let result = sim.block_on(async move { publisher.publish("m1", "", "q").await.unwrap().await });
    assert!(result.is_ok(), "{result:?}");
    let attempts = world.lock().unwrap().attempts.clone();
    let gaps: Vec<Duration> = attempts.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    let backoff = Backoff::default();
    for (i, gap) in gaps.iter().enumerate() {
        // The first gap is the wait before the second attempt.
        let most = backoff.delay(i as u32 + 1, 0.0);
        let least = backoff.delay(i as u32 + 1, 1.0);
        assert!(
            *gap >= least && *gap <= most,
            "attempt {i}: {gap:?} not in {least:?}..={most:?}"
        );
    }
    assert!(gaps.len() >= 7, "a 5 s outage at <= 800 ms apart: {gaps:?}");
    // Back within the cap of the broker's return.
    let last = *attempts.last().unwrap();
    assert!(
        last >= Duration::from_secs(5) && last <= Duration::from_millis(5_800),
        "{last:?}"
    );
}

/// A network whose first connection drops after one publish (unacked),
/// and which never lets a connection through again.
fn lost_for_good_after_one_publish() -> Arc<SimRuntime> {
    let world = Arc::new(Mutex::new(World::default()));
    let first = Behaviour {
        drop_after_publishes: Some(1),
        ack: 0,
        ..POLITE
    };
    let down = Duration::from_millis(1)..Duration::MAX;
    network(&world, down, move |_| first)
}

#[test]
fn close_during_an_outage_returns_at_once_and_answers_every_waiter() {
    let sim = lost_for_good_after_one_publish();
    let connection = connect(&sim, RecoveryOptions::default());
    let publisher = connection.publisher(10);
    let consumer = connection.consumer(|q: &String| q.clone(), ConsumerOptions::default());
    let c = connection.clone();
    let clock = sim.clone();
    let (published, consumed, closed, took) = sim.block_on(async move {
        let confirmation = publisher.publish("m1", "", "q").await.unwrap();
        // Let the outage start and a few reconnects fail.
        let runtime = clock.clone();
        runtime
            .sleep_until(runtime.now() + Duration::from_secs(3))
            .await;
        let start = clock.elapsed();
        let waiting = c.clone();
        let closed = c.close().await;
        let consumed = consumer.next().await.map(drop);
        let published = confirmation.await;
        drop(waiting);
        (published, consumed, closed, clock.elapsed() - start)
    });
    let by_client = |r: &Result<(), Error>| {
        matches!(
            r,
            Err(Error::ConnectionClosed(ConnectionError::ClosedByClient))
        )
    };
    assert!(closed.is_ok(), "{closed:?}");
    assert_eq!(
        took,
        Duration::ZERO,
        "close and every waiter answer at once"
    );
    assert!(by_client(&published), "{published:?}");
    assert!(by_client(&consumed), "{consumed:?}");
}

#[test]
fn close_during_a_hanging_reconnect_ends_recovery_without_another_event() {
    let world = Arc::new(Mutex::new(World::default()));
    let first = Behaviour {
        drop_after_publishes: Some(1),
        ack: 0,
        ..POLITE
    };
    // Accepts, then never answers: the attempt waits for its timeout.
    let sim = first_then(&world, first, |io| {
        Box::pin(async move {
            let mut b = FakeBroker::silent(io);
            b.expect_protocol_header().await;
            while b.next_method().await.is_some() {}
        })
    });
    let mut opts = options();
    opts.connection_timeout = Duration::from_secs(5);
    let runtime: Arc<dyn Runtime> = sim.clone();
    let connection = sim
        .block_on(RecoveringConnection::connect(
            runtime,
            opts,
            RecoveryOptions::default(),
            declare_setup,
        ))
        .unwrap();
    let mut events = connection.events();
    let publisher = connection.publisher(10);
    let c = connection.clone();
    let clock = sim.clone();
    sim.block_on(async move {
        // The connection drops after this publish; the reconnect hangs.
        let _in_doubt = publisher.publish("m1", "", "q").await.unwrap();
        clock
            .sleep_until(clock.now() + Duration::from_secs(1))
            .await;
        c.close().await.unwrap();
        // Long past the attempt's timeout and any backoff.
        clock
            .sleep_until(clock.now() + Duration::from_secs(60))
            .await;
    });
    let seen: Vec<RecoveryEvent> =
        std::iter::from_fn(|| events.next().now_or_never().flatten()).collect();
    assert!(
        matches!(
            seen.as_slice(),
            [
                RecoveryEvent::Disconnected { .. },
                RecoveryEvent::Connecting { attempt: 1, .. }
            ]
        ),
        "nothing after the close: {seen:?}"
    );
    assert_eq!(
        world.lock().unwrap().attempts.len(),
        2,
        "no attempt after close"
    );
}

#[test]
fn calls_waiting_for_recovery_fail_after_the_outage_timeout() {
    let sim = lost_for_good_after_one_publish();
    let recovery = RecoveryOptions {
        outage_timeout: Some(Duration::from_secs(5)),
        ..RecoveryOptions::default()
    };
    let connection = connect(&sim, recovery);
    let publisher = connection.publisher(10);
    let c = connection.clone();
    let clock = sim.clone();
    let (published, waited, took) = sim.block_on(async move {
        let published = publisher.publish("m1", "", "q").await.unwrap().await;
        let start = clock.elapsed();
        let waited = c.connection().await.map(drop);
        (published, waited, clock.elapsed() - start)
    });
    let timed_out = |r: &Result<(), Error>| matches!(r, Err(Error::RecoveryTimeout(t)) if *t == Duration::from_secs(5));
    assert!(timed_out(&published), "{published:?}");
    assert!(timed_out(&waited), "{waited:?}");
    assert_eq!(took, Duration::from_secs(5));
    sim.block_on(async move { connection.close().await })
        .unwrap();
}

#[test]
fn a_publish_that_kills_every_connection_fails_after_max_republish() {
    let world = Arc::new(Mutex::new(World::default()));
    let poisoned = Behaviour {
        poison: Some("poison"),
        ..POLITE
    };
    let sim = network(&world, Duration::ZERO..Duration::ZERO, move |_| poisoned);
    let connection = connect(&sim, RecoveryOptions::default());
    let publisher = connection.publisher(10);
    let (poison, after) = sim.block_on(async move {
        let poison = publisher.publish("poison", "", "q").await.unwrap().await;
        let after = publisher.publish("fine", "", "q").await.unwrap().await;
        (poison, after)
    });
    assert!(matches!(poison, Err(Error::InDoubt)), "{poison:?}");
    assert!(after.is_ok(), "the publisher goes on: {after:?}");
    let w = world.lock().unwrap();
    let sends = w
        .published
        .iter()
        .flatten()
        .filter(|b| *b == "poison")
        .count();
    assert_eq!(sends, 6, "sent once, then again on 5 connections");
}

/// Two addresses, so that events name each one tried.
fn two_addresses() -> ConnectOptions {
    let mut options = options();
    options.extra_addresses = vec![crate::Address::new("127.0.0.2", 5672)];
    options
}

#[test]
fn retry_first_connect_connects_in_the_background_and_reports_each_address() {
    let world = Arc::new(Mutex::new(World::default()));
    let down = Duration::ZERO..Duration::from_secs(2);
    let sim = network(&world, down, |_| POLITE);
    let runtime: Arc<dyn Runtime> = sim.clone();
    let recovery = RecoveryOptions {
        retry_first_connect: true,
        ..RecoveryOptions::default()
    };
    let clock = sim.clone();
    let (connection, returned_at) = sim.block_on(async move {
        let c = RecoveringConnection::connect(runtime, two_addresses(), recovery, declare_setup)
            .await
            .unwrap();
        (c, clock.elapsed())
    });
    assert_eq!(returned_at, Duration::ZERO, "connect returns at once");
    let mut events = connection.events();
    let publisher = connection.publisher(10);
    let clock = sim.clone();
    let (published, queue, at) = sim.block_on(async move {
        let published = publisher.publish("m1", "", "q").await.unwrap().await;
        (published, connection.topology().await, clock.elapsed())
    });
    assert!(published.is_ok(), "{published:?}");
    assert_eq!(
        queue.unwrap(),
        "amq.gen-0",
        "setup ran once, on the first connection"
    );
    assert!(at >= Duration::from_secs(2), "{at:?}");
    assert!(
        at <= Duration::from_secs(2) + Duration::from_millis(800),
        "{at:?}"
    );
    let seen: Vec<RecoveryEvent> =
        std::iter::from_fn(|| events.next().now_or_never().flatten()).collect();
    // Every attempt tries both addresses, in order; the first has no
    // backoff before it.
    let tried: Vec<(String, u32)> = seen
        .iter()
        .filter_map(|e| match e {
            RecoveryEvent::Connecting { address, attempt } => Some((address.to_string(), *attempt)),
            _ => None,
        })
        .collect();
    assert!(tried.len() >= 4, "{seen:?}");
    assert_eq!(tried[0], ("127.0.0.1:5672".to_string(), 1));
    assert_eq!(tried[1], ("127.0.0.2:5672".to_string(), 1));
    assert_eq!(tried[2], ("127.0.0.1:5672".to_string(), 2));
    assert_eq!(world.lock().unwrap().attempts[0], Duration::ZERO);
    assert!(
        matches!(seen.last(), Some(RecoveryEvent::Connected { .. })),
        "the first connection recovers nothing: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, RecoveryEvent::Recovered { .. }))
    );
}

#[test]
fn retry_first_connect_gives_up_on_a_permanent_refusal_and_calls_get_it() {
    let world = Arc::new(Mutex::new(World::default()));
    let w = world.clone();
    let sim = with_network(move |now, _, io| {
        w.lock().unwrap().attempts.push(now);
        Ok(refusing(io, 530, "NOT_ALLOWED - vhost nope not found"))
    });
    let recovery = RecoveryOptions {
        retry_first_connect: true,
        ..RecoveryOptions::default()
    };
    let connection = connect(&sim, recovery);
    let events = connection.events();
    let publisher = connection.publisher(10);
    let (published, topology) = sim.block_on(async move {
        let published = publisher.publish("m1", "", "q").await.map(|_| ());
        (published, connection.topology().await)
    });
    let refused = |e: &Error| e.reply_code() == Some(530) && !e.is_transient();
    assert!(published.as_ref().is_err_and(refused), "{published:?}");
    assert!(topology.as_ref().is_err_and(refused), "{topology:?}");
    assert_eq!(world.lock().unwrap().attempts.len(), 1, "no retry loop");
    let seen: Vec<RecoveryEvent> = sim.block_on(async move { events.collect().await });
    assert!(
        matches!(
            seen.as_slice(),
            [RecoveryEvent::Connecting { attempt: 1, .. }, RecoveryEvent::GaveUp { cause }] if refused(cause)
        ),
        "a late subscriber still sees the first connect's events, then the end: {seen:?}"
    );
}

#[test]
fn first_connect_attempts_gives_up_the_first_connect_after_that_many() {
    let world = Arc::new(Mutex::new(World::default()));
    let down = Duration::ZERO..Duration::from_secs(3600);
    let sim = network(&world, down, |_| POLITE);
    let recovery = RecoveryOptions {
        retry_first_connect: true,
        first_connect_attempts: Some(3),
        ..RecoveryOptions::default()
    };
    let connection = connect(&sim, recovery);
    let events = connection.events();
    let result = sim.block_on(async move { connection.connection().await.map(drop) });
    assert!(
        result.as_ref().is_err_and(Error::is_transient),
        "the last attempt's own error: {result:?}"
    );
    assert_eq!(world.lock().unwrap().attempts.len(), 3);
    let seen: Vec<RecoveryEvent> = sim.block_on(async move { events.collect().await });
    let attempts: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            RecoveryEvent::Connecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(
        matches!(seen.last(), Some(RecoveryEvent::GaveUp { .. })),
        "{seen:?}"
    );
}

/// A task's waker that does nothing.
struct Task;

impl std::task::Wake for Task {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn a_cancelled_next_during_an_outage_leaves_no_waker_behind() {
    use std::future::Future;
    use std::task::{Context, Waker};

    let sim = lost_for_good_after_one_publish();
    let connection = connect(&sim, RecoveryOptions::default());
    let publisher = connection.publisher(10);
    let consumer = connection.consumer(|q: &String| q.clone(), ConsumerOptions::default());
    let clock = sim.clone();
    let ended = sim.block_on(async move {
        let _confirmation = publisher.publish("m1", "", "q").await.unwrap();
        // The connection is lost and stays away.
        clock
            .sleep_until(clock.now() + Duration::from_secs(3))
            .await;
        // Calls from tasks of their own (a `timeout(.., next())` loop,
        // say), each given up on while it waits for recovery.
        for _ in 0..100 {
            let task = Arc::new(Task);
            let waker = Waker::from(task.clone());
            let mut next = Box::pin(consumer.next());
            let polled = next.as_mut().poll(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
            assert!(consumer.has_waiter());
            drop(next);
            assert!(!consumer.has_waiter(), "the cancelled call's waker stays");
        }
        // A call still waiting is woken by close.
        let closing = async {
            clock
                .sleep_until(clock.now() + Duration::from_secs(1))
                .await;
            consumer.close().await;
        };
        futures_util::future::join(consumer.next(), closing).await.0
    });
    assert!(matches!(ended, Err(Error::ConsumerClosed)), "{ended:?}");
}
