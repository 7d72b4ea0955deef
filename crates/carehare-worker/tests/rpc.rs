//! `RpcWorker` and the RPC `Client` against the live test broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carehare_tokio::carehare_core::types::ShortStr;
use carehare_tokio::{AMQPValue, BasicProperties, FieldTable};
use carehare_worker::{
    CallError, Client, RPC_DLX, RPCWorker, RouteOptions, RpcError, RpcWorker, WorkerError, wire,
};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use support::*;

const LIMIT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sum {
    id: u32,
    terms: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Total {
    id: u32,
    total: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_calls_are_all_answered_correctly() {
    within(LIMIT, "test", async {
        let route = unique("sum");
        let mut worker = RpcWorker::new(params());
        worker.route(&route, |sum: Sum| async move {
            // Let calls overlap.
            tokio::time::sleep(Duration::from_millis(u64::from(sum.id % 7))).await;
            Ok::<_, std::convert::Infallible>(Total {
                id: sum.id,
                total: sum.terms.iter().sum(),
            })
        });
        let handle = worker.run().await.expect("run");
        let client = Client::connect(&params())
            .await
            .expect("client")
            .with_timeout(Duration::from_secs(60));
        let calls = (0..1_000u32).map(|id| {
            let client = client.clone();
            let route = route.clone();
            async move {
                let sum = Sum {
                    id,
                    terms: vec![i64::from(id), 1, -2],
                };
                let total: Total = client.call(&route, &sum).await.unwrap();
                assert_eq!(
                    total,
                    Total {
                        id,
                        total: i64::from(id) - 1
                    }
                );
            }
        });
        join_all(calls).await;
        handle.stop().await.expect("stop");
        assert_eq!(message_count(&client.connection(), &route).await, 0);
        delete(&client.connection(), &[&route]).await;
        client.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handler_errors_and_panics_become_error_replies() {
    within(LIMIT, "test", async {
        let fail = unique("fail");
        let parse = unique("parse");
        let panics = unique("panics");
        let echo = unique("echo");
        let mut worker = RPCWorker::new(params());
        worker
            .route(&fail, |n: i64| async move {
                Err::<i64, _>(
                    RpcError::new("ValueError", format!("{n} is no good"))
                        .with_args(vec![n.into()]),
                )
            })
            .route(&parse, |text: String| async move { text.parse::<u64>() })
            .route(&panics, |explode: bool| async move {
                assert!(!explode, "the handler exploded");
            })
            .route(&echo, |text: String| async move {
                format!("data received {text}")
            });
        let handle = worker.run().await.expect("run");
        let client = Client::connect(&params())
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(20));

        match client.call::<_, i64>(&fail, &-3).await {
            Err(CallError::ErrorReply(e)) => {
                assert_eq!(e.error_type, "ValueError");
                assert_eq!(e.message, "-3 is no good");
                assert_eq!(e.args, vec![serde_json::json!(-3)]);
            }
            other => panic!("expected an error reply, got {other:?}"),
        }
        match client.call::<_, u64>(&parse, "12x").await {
            Err(CallError::ErrorReply(e)) => {
                assert_eq!(e.error_type, "ParseIntError");
                assert_eq!(e.message, "invalid digit found in string");
            }
            other => panic!("expected an error reply, got {other:?}"),
        }
        assert_eq!(client.call::<_, u64>(&parse, "12").await.unwrap(), 12);
        for _ in 0..3 {
            match client.call::<_, ()>(&panics, &true).await {
                Err(CallError::ErrorReply(e)) => {
                    assert_eq!(e.error_type, "Panic");
                    assert_eq!(e.message, "the handler exploded");
                }
                other => panic!("expected an error reply, got {other:?}"),
            }
        }
        // The worker lives on.
        let reply: String = client.call(&echo, "a message").await.unwrap();
        assert_eq!(reply, "data received a message");
        assert!(!handle.is_finished());
        handle.stop().await.expect("stop");
        for q in [&fail, &parse, &panics, &echo] {
            assert_eq!(message_count(&client.connection(), q).await, 0);
        }
        delete(&client.connection(), &[&fail, &parse, &panics, &echo]).await;
        client.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_times_out_and_a_call_to_no_route_is_returned() {
    within(LIMIT, "test", async {
        let slow = unique("slow");
        let mut worker = RpcWorker::new(params());
        let options = RouteOptions {
            handler_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        worker.route_with(&slow, options, |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        });
        let handle = worker.run().await.expect("run");
        let client = Client::connect(&params()).await.unwrap();

        let started = std::time::Instant::now();
        match client
            .call_with_timeout::<_, u64>(&slow, &800, Duration::from_millis(200))
            .await
        {
            Err(CallError::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        // Given time, the same call succeeds.
        assert_eq!(client.call::<_, u64>(&slow, &50).await.unwrap(), 50);
        // The route's own handler timeout turns into an error reply.
        match client.call::<_, u64>(&slow, &5_000).await {
            Err(CallError::ErrorReply(e)) => assert_eq!(e.error_type, "TimeoutError"),
            other => panic!("expected a TimeoutError reply, got {other:?}"),
        }

        let nowhere = unique("nowhere");
        match client.call::<_, u64>(&nowhere, &1).await {
            Err(CallError::Returned(r)) => {
                assert_eq!(r.reply_code, 312);
                assert_eq!(r.routing_key.as_str(), nowhere);
            }
            other => panic!("expected Returned, got {other:?}"),
        }
        assert!(matches!(
            client.send(&nowhere, &1).await,
            Err(CallError::Returned(_))
        ));
        // A reply of the wrong type is a typed error too.
        assert!(matches!(
            client.call::<_, String>(&slow, &1).await,
            Err(CallError::MalformedReply(_))
        ));
        handle.stop().await.expect("stop");
        delete(&client.connection(), &[&slow]).await;
        client.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_request_gets_an_error_reply_and_is_dead_lettered_not_requeued() {
    within(LIMIT, "test", async {
        let route = unique("rpc-malformed");
        let calls = Arc::new(AtomicUsize::new(0));
        let mut worker = RpcWorker::new(params());
        let c = calls.clone();
        worker.route(&route, move |n: u32| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                n
            }
        });
        let handle = worker.run().await.expect("run");

        // A result queue bound to rpc.dlx as aio-pika's RPC caller binds
        // its own: dead-lettered calls carrying `From: <queue>` come back.
        let connection = connect().await;
        let dead = unique("rpc-dead");
        declare(&connection, &dead).await;
        let mut binding = FieldTable::default();
        binding.insert("x-match".into(), AMQPValue::LongString("any".into()));
        binding.insert("From".into(), AMQPValue::LongString(dead.as_str().into()));
        connection
            .queue_bind(&dead, RPC_DLX, "", binding)
            .await
            .unwrap();

        let rpc = connection.direct_reply_to().await.unwrap();
        let mut headers = FieldTable::default();
        headers.insert("From".into(), AMQPValue::LongString(dead.as_str().into()));
        let properties = BasicProperties {
            headers: Some(headers),
            ..Default::default()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not gzip".to_vec(), "BadGzipFile"),
            (wire::gzip(b"\xc3\x28"), "UnicodeDecodeError"),
            (wire::gzip(b"{oops"), "JSONDecodeError"),
            (wire::gzip(br#""bare""#), "TypeError"),
            (wire::gzip(br#"{"data": "not a number"}"#), "TypeError"),
        ];
        let n = cases.len() as u32;
        for (body, error_type) in cases {
            let reply = rpc
                .call("", &route, body, &properties, Duration::from_secs(20))
                .await
                .unwrap();
            assert_eq!(reply.properties.kind.as_deref(), Some("error"));
            let e = wire::decode_reply::<u32>(&reply.body, 4096)
                .unwrap()
                .unwrap_err();
            assert_eq!(e.error_type, error_type, "{e:?}");
        }
        wait_for_count(&connection, &dead, n, Duration::from_secs(20)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(message_count(&connection, &route).await, 0);

        // A request without reply_to is handled and acked; nothing is sent.
        publish_raw(&connection, &route, wire::encode_request(&5u32).unwrap()).await;
        eventually(Duration::from_secs(10), "handled", || {
            calls.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_for_count(&connection, &route, 0, Duration::from_secs(10)).await;

        handle.stop().await.expect("stop");
        delete(&connection, &[&route, &dead]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_carry_the_correlation_id_and_python_properties() {
    within(LIMIT, "test", async {
        let route = unique("props");
        let mut worker = RpcWorker::new(params());
        worker.route(&route, |n: u32| async move { n + 1 });
        let handle = worker.run().await.expect("run");
        let connection = connect().await;
        let rpc = connection.direct_reply_to().await.unwrap();
        let properties = BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        let reply = rpc
            .call(
                "",
                &route,
                wire::encode_request(&41u32).unwrap(),
                &properties,
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        // (The RpcClient matched it by correlation id.)
        assert!(reply.properties.correlation_id.is_some());
        assert_eq!(reply.properties.kind.as_deref(), Some("result"));
        assert_eq!(
            reply.properties.content_type,
            Some(ShortStr::from_static("application/octet-stream"))
        );
        assert_eq!(reply.properties.delivery_mode, Some(2));
        let json = wire::gunzip(&reply.body, 1024).unwrap();
        assert_eq!(json, br#"{"success":true,"data":42}"#);
        handle.stop().await.expect("stop");
        delete(&connection, &[&route]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_lets_running_calls_finish_and_reply() {
    within(LIMIT, "test", async {
        let route = unique("rpc-stop");
        let started = Arc::new(AtomicUsize::new(0));
        let mut worker = RpcWorker::new(params());
        let s = started.clone();
        worker.route(&route, move |n: u32| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(700)).await;
                n * 10
            }
        });
        let handle = worker.run().await.expect("run");
        let client = Client::connect(&params())
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(20));
        let calls: Vec<_> = (0..10u32)
            .map(|n| {
                let client = client.clone();
                let route = route.clone();
                tokio::spawn(async move { client.call::<_, u32>(&route, &n).await })
            })
            .collect();
        eventually(Duration::from_secs(10), "all running", || {
            started.load(Ordering::SeqCst) == 10
        })
        .await;
        handle.stop().await.expect("stop");
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), n as u32 * 10);
        }
        assert_eq!(message_count(&client.connection(), &route).await, 0);
        delete(&client.connection(), &[&route]).await;
        client.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_queues_are_declared_like_aio_pikas() {
    within(LIMIT, "test", async {
        let route = unique("declared");
        // aio-pika's RPC.register: declare_queue(name, arguments={"x-dead-letter-exchange": "rpc.dlx"}).
        let connection = connect().await;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(RPC_DLX.into()),
        );
        let python_like = carehare_tokio::QueueOptions {
            arguments,
            ..Default::default()
        };
        connection.queue_declare(&route, python_like).await.unwrap();
        let got = Arc::new(Mutex::new(None));
        let mut worker = RpcWorker::new(params());
        let g = got.clone();
        worker.route(&route, move |s: String| {
            let g = g.clone();
            async move { g.lock().unwrap().replace(s) }
        });
        // Equivalent declarations: no 406.
        let handle = worker.run().await.expect("run");
        handle.stop().await.expect("stop");

        // A durable route can't share the queue.
        let mut worker = RpcWorker::new(params());
        let options = RouteOptions {
            durable: Some(true),
            ..Default::default()
        };
        worker.route_with(&route, options, |s: String| async move { s });
        assert!(matches!(worker.run().await, Err(WorkerError::Route { .. })));
        delete(&connection, &[&route]).await;
    })
    .await;
}

/// A client from `Client::connect` reconnects on the next call after losing
/// its connection; a call waiting for its reply at that moment ends with a
/// typed error at once. A client from `from_connection` does not reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_reconnects_on_its_next_call_after_losing_its_connection() {
    within(LIMIT, "test", async {
        let route = unique("reconnecting-client");
        let slow = unique("reconnecting-client-slow");
        let mut worker = RpcWorker::new(params());
        worker.route(&route, |n: u32| async move { n + 1 });
        // Long enough that the call is still waiting when rabbitmqctl
        // (seconds on a loaded machine) closes the client's connection.
        worker.route(&slow, |n: u32| async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            n
        });
        let handle = worker.run().await.expect("run");
        let name = unique("reconnecting-client-conn");
        let client = Client::connect(&params().with_connection_name(&name))
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(10));
        let fixed_name = unique("fixed-client-conn");
        let fixed_connection = params()
            .with_connection_name(&fixed_name)
            .connect()
            .await
            .unwrap();
        let fixed = Client::from_connection(fixed_connection).await.unwrap();
        assert_eq!(client.call::<_, u32>(&route, &1).await.unwrap(), 2);
        assert_eq!(fixed.call::<_, u32>(&route, &1).await.unwrap(), 2);

        let waiting = {
            let (client, slow) = (client.clone(), slow.clone());
            tokio::spawn(async move { client.call::<_, u32>(&slow, &7).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old = client.connection();
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            carehare_tests::close_connection_named(&n, "test: go away")
        })
        .await
        .unwrap();
        match within(Duration::from_secs(5), "the waiting call", waiting)
            .await
            .unwrap()
        {
            Err(CallError::Amqp(carehare_tokio::Error::ConnectionClosed(_))) => {}
            other => panic!("expected ConnectionClosed, got {other:?}"),
        }
        within(Duration::from_secs(5), "the old connection", old.closed()).await;
        assert_eq!(client.call::<_, u32>(&route, &2).await.unwrap(), 3);

        let n = fixed_name.clone();
        tokio::task::spawn_blocking(move || {
            carehare_tests::close_connection_named(&n, "test: go away")
        })
        .await
        .unwrap();
        within(
            Duration::from_secs(5),
            "fixed's connection",
            fixed.connection().closed(),
        )
        .await;
        match fixed.call::<_, u32>(&route, &3).await {
            Err(CallError::Amqp(carehare_tokio::Error::ConnectionClosed(_))) => {}
            other => panic!("expected ConnectionClosed, got {other:?}"),
        }
        handle.stop().await.expect("stop");
        delete(&client.connection(), &[&route, &slow]).await;
        client.close().await;
        fixed.close().await;
    })
    .await;
}
