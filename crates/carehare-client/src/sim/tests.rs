//! The client's timers on simulated time, against a fake broker over
//! in-memory sockets: heartbeats, the handshake and close timeouts, RPC
//! timeouts, and a driver that stops. Each test runs in milliseconds of
//! real time, and the same way every run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use carehare_core::method::*;
use carehare_core::testing;

use super::{Behaviour, POLITE, SimRuntime, duplex, serve, with_broker};
use crate::connect::connect_with_runtime;
use crate::error::{ConnectionError, Error};
use crate::options::ConnectOptions;
use crate::runtime::{Runtime, Stream};

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
    // The client kept sending heartbeats every half interval meanwhile.
    sim.block_on(async {});
    let sent = heartbeats
        .lock()
        .unwrap()
        .expect("the client closed the socket");
    assert!(
        (3..=4).contains(&sent),
        "{sent} heartbeats in 4 s at 1 per s"
    );
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
        Err(Error::ConnectionClosed(ConnectionError::HandshakeTimeout(t))) => {
            assert_eq!(t, Duration::from_secs(3))
        }
        other => panic!("expected a connect timeout, got {other:?}"),
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
