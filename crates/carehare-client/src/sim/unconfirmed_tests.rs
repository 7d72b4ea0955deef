//! Publishing without confirms through the real driver, on simulated
//! time: a broker that stops reading holds unconfirmed publishers back
//! at the high-water mark (memory stays bounded) until it reads again,
//! and a blocked connection holds them until it is unblocked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use carehare_core::method::*;
use carehare_core::testing;
use carehare_core::types::ShortStr;
use futures_channel::oneshot;
use futures_util::StreamExt;

use super::{End, FakeBroker, SimRuntime, duplex_bounded};
use crate::connect::connect_with_runtime;
use crate::options::ConnectOptions;
use crate::runtime::{BoxFuture, Runtime, Stream};
use crate::state::HIGH_WATER;
use crate::{Blocking, Connection};

fn options() -> ConnectOptions {
    let mut options = ConnectOptions {
        host: "127.0.0.1".into(),
        ..ConnectOptions::default()
    };
    options.amqp.heartbeat = 0;
    options
}

/// A simulated runtime whose every connect reaches a new server running
/// `script` over a socket whose client-to-server direction holds at most
/// `capacity` unread bytes.
fn with_socket<F>(capacity: usize, script: F) -> Arc<SimRuntime>
where
    F: Fn(Arc<dyn Runtime>, End) -> BoxFuture<'static, ()> + Send + Sync + 'static,
{
    let slot: Arc<Mutex<Option<std::sync::Weak<SimRuntime>>>> = Arc::default();
    let weak = slot.clone();
    let sim = SimRuntime::new(Box::new(move |_| {
        let Some(rt) = weak.lock().unwrap().as_ref().and_then(|w| w.upgrade()) else {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        };
        let (client, server) = duplex_bounded(Some(capacity));
        let clock: Arc<dyn Runtime> = rt.clone();
        rt.spawn(script(clock, server));
        Ok(Box::new(client) as Box<dyn Stream>)
    }));
    *slot.lock().unwrap() = Some(Arc::downgrade(&sim));
    sim
}

/// After the handshake: answers the first `channel.open`, then takes every
/// publish until the client closes, recording its body's first `prefix`
/// bytes. After the first publish it runs `pause`, reading nothing.
async fn serve_publishes(
    mut broker: FakeBroker,
    prefix: usize,
    pause: impl std::future::Future<Output = ()>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let (channel, method) = broker.next_method().await.unwrap();
    assert_eq!(method.name(), "channel.open", "no confirm.select first");
    broker.send(&testing::method_bytes(channel, ChannelOpenOk::default()));
    let mut pause = Some(pause);
    while let Some((ch, method)) = broker.next_method().await {
        match method {
            Method::BasicPublish(_) => {
                assert_eq!(ch, channel, "one channel");
                let body = broker.next_body().await.unwrap();
                let head = String::from_utf8(body[..prefix.min(body.len())].to_vec()).unwrap();
                seen.lock().unwrap().push(head);
                if let Some(pause) = pause.take() {
                    pause.await;
                }
            }
            Method::ConnectionClose(_) => {
                broker.send(&testing::method_bytes(0, ConnectionCloseOk {}));
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sleeps `d` of simulated time: returns once every task has stalled.
async fn settle(clock: &Arc<dyn Runtime>, d: Duration) {
    clock.sleep_until(clock.now() + d).await;
}

#[test]
fn a_broker_that_stops_reading_holds_unconfirmed_publishers_at_the_high_water_mark() {
    const BODY: usize = 64 * 1024;
    const CAPACITY: usize = 256 * 1024;
    const N: usize = 200; // 12.5 MiB: three times the mark
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (resume_tx, resume_rx) = oneshot::channel::<()>();
    let resume = Arc::new(Mutex::new(Some(resume_rx)));
    let recorded = seen.clone();
    let sim = with_socket(CAPACITY, move |_, server| {
        let resume = resume.lock().unwrap().take().unwrap();
        let mut broker = FakeBroker::accept(server, testing::server_tune());
        let recorded = recorded.clone();
        Box::pin(async move {
            broker.expect_handshake().await;
            // Reads nothing after the first publish until told to.
            let pause = async move {
                let _ = resume.await;
            };
            serve_publishes(broker, 8, pause, recorded).await;
        })
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let backlogs: Arc<Mutex<Vec<usize>>> = Arc::default();
    let noted = backlogs.clone();
    let (stalled_at, backlog, done) = sim.block_on(async move {
        let backlogs = noted;
        let connection = connect_with_runtime(runtime.clone(), options())
            .await
            .unwrap();
        let returned = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = oneshot::channel();
        let publisher = publish_numbered(
            connection.clone(),
            N,
            BODY,
            returned.clone(),
            backlogs.clone(),
            done_tx,
        );
        runtime.spawn(Box::pin(publisher));
        settle(&runtime, Duration::from_secs(1)).await;
        let stalled_at = returned.load(Ordering::Relaxed);
        let backlog = connection.shared().lock().backlog();
        // The broker reads again: every publish goes on.
        resume_tx.send(()).unwrap();
        done_rx.await.unwrap();
        let done = returned.load(Ordering::Relaxed);
        connection.close().await.unwrap();
        (stalled_at, backlog, done)
    });
    // What returned is in the socket (at most CAPACITY) or queued for it
    // (the mark, passed by at most one message).
    assert!(stalled_at < N, "publishing did not stop: {stalled_at}");
    assert!(
        stalled_at * BODY >= HIGH_WATER,
        "stopped before the mark: {stalled_at}"
    );
    assert!(
        stalled_at * BODY <= HIGH_WATER + CAPACITY + 2 * BODY,
        "memory is not bounded: {stalled_at} publishes returned"
    );
    assert!(backlog >= HIGH_WATER, "{backlog}");
    assert!(backlog <= HIGH_WATER + BODY + 4096, "{backlog}");
    assert_eq!(done, N);
    // Once the broker reads again, the first publisher through went on as
    // soon as the backlog was written below the mark (with most of it still
    // unwritten: the socket frees CAPACITY at a time), not once the
    // connection had written everything it held.
    let resumed_with = backlogs.lock().unwrap()[stalled_at];
    assert!(
        resumed_with >= HIGH_WATER / 2,
        "woken late, with {resumed_with} bytes left"
    );
    let want: Vec<String> = (0..N).map(|i| format!("{i:08}")).collect();
    assert_eq!(*seen.lock().unwrap(), want, "every publish, in order");
}

/// Publishes `n` bodies of `size` bytes, each starting with its number,
/// counting the calls that returned and noting the bytes queued for the
/// socket as each returned; says when all have.
async fn publish_numbered(
    connection: Connection,
    n: usize,
    size: usize,
    returned: Arc<AtomicUsize>,
    backlogs: Arc<Mutex<Vec<usize>>>,
    done: oneshot::Sender<()>,
) {
    for i in 0..n {
        let mut body = format!("{i:08}").into_bytes();
        body.resize(size.max(8), b'.');
        connection
            .publish_unconfirmed(Bytes::from(body), "", "q", &Default::default())
            .await
            .unwrap();
        returned.fetch_add(1, Ordering::Relaxed);
        let backlog = connection.shared().lock().backlog();
        backlogs.lock().unwrap().push(backlog);
    }
    let _ = done.send(());
}

#[test]
fn unconfirmed_publishes_wait_while_the_connection_is_blocked() {
    const UNBLOCK_AT: Duration = Duration::from_secs(5);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = seen.clone();
    let sim = with_socket(usize::MAX, move |clock, server| {
        let mut broker = FakeBroker::accept(server, testing::server_tune());
        let recorded = recorded.clone();
        Box::pin(async move {
            broker.expect_handshake().await;
            let blocked = ConnectionBlocked {
                reason: ShortStr::from_static("low on memory"),
            };
            broker.send(&testing::method_bytes(0, blocked));
            clock.sleep_until(clock.now() + UNBLOCK_AT).await;
            broker.send(&testing::method_bytes(0, ConnectionUnblocked {}));
            serve_publishes(broker, usize::MAX, async {}, recorded).await;
        })
    });
    let runtime: Arc<dyn Runtime> = sim.clone();
    let clock = sim.clone();
    let returns = sim.block_on(async move {
        let connection = connect_with_runtime(runtime, options()).await.unwrap();
        let mut changes = connection.blocking_changes();
        if connection.blocked().is_none() {
            assert!(matches!(changes.next().await, Some(Blocking::Blocked(_))));
        }
        let mut returns = Vec::new();
        for body in ["1", "2", "3"] {
            connection
                .publish_unconfirmed(body, "", "q", &Default::default())
                .await
                .unwrap();
            returns.push(clock.elapsed());
        }
        connection.close().await.unwrap();
        returns
    });
    assert_eq!(returns, [UNBLOCK_AT; 3], "each waited for the unblock");
    assert_eq!(*seen.lock().unwrap(), ["1", "2", "3"]);
}
