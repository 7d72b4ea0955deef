//! `QueueWorker` against the live test broker (`test-server/start.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carehare_tokio::{Error, QueueOptions};
use carehare_worker::{
    Client, ConnectionParameters, QueueWorker, RetryPolicy, RouteOptions, WorkerError, wire,
};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use support::*;

const LIMIT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    items: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_on_many_queues_each_get_their_own_typed_data() {
    within(LIMIT, "test", async {
        let strings = unique("strings");
        let numbers = unique("numbers");
        let orders = unique("orders");
        let maps = unique("maps");
        let values = unique("values");

        let got_strings = Arc::new(Mutex::new(Vec::<String>::new()));
        let got_numbers = Arc::new(Mutex::new(Vec::<u64>::new()));
        let got_orders = Arc::new(Mutex::new(Vec::<Order>::new()));
        let got_maps = Arc::new(Mutex::new(Vec::<HashMap<String, i32>>::new()));
        let got_values = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));

        let mut worker = QueueWorker::new(params());
        let g = got_strings.clone();
        worker.route(&strings, move |data: String| {
            let g = g.clone();
            async move { g.lock().unwrap().push(data) }
        });
        let g = got_numbers.clone();
        worker.route(&numbers, move |data: u64| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(data);
                Ok::<(), std::convert::Infallible>(())
            }
        });
        let g = got_orders.clone();
        worker.route(&orders, move |data: Order| {
            let g = g.clone();
            async move { g.lock().unwrap().push(data) }
        });
        let g = got_maps.clone();
        worker.route(&maps, move |data: HashMap<String, i32>| {
            let g = g.clone();
            async move { g.lock().unwrap().push(data) }
        });
        let g = got_values.clone();
        worker.route(&values, move |data: serde_json::Value| {
            let g = g.clone();
            async move { g.lock().unwrap().push(data) }
        });
        let handle = worker.run().await.expect("run");

        let client = Client::connect(&params()).await.expect("client");
        for i in 0..10u32 {
            client.send(&strings, &format!("s{i}")).await.unwrap();
            client.send(&numbers, &u64::from(i)).await.unwrap();
            let order = Order {
                id: i,
                items: vec![format!("item{i}")],
            };
            client.send(&orders, &order).await.unwrap();
            client
                .send(&maps, &HashMap::from([(format!("k{i}"), i as i32)]))
                .await
                .unwrap();
            client
                .send(&values, &serde_json::json!({"i": i, "nested": [i, null]}))
                .await
                .unwrap();
        }
        let all_in = || {
            got_strings.lock().unwrap().len() == 10
                && got_numbers.lock().unwrap().len() == 10
                && got_orders.lock().unwrap().len() == 10
                && got_maps.lock().unwrap().len() == 10
                && got_values.lock().unwrap().len() == 10
        };
        eventually(
            Duration::from_secs(20),
            "every route got its 10 messages",
            all_in,
        )
        .await;
        handle.stop().await.expect("stop");

        let mut s = got_strings.lock().unwrap().clone();
        s.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
        want.sort();
        assert_eq!(s, want);
        let mut n = got_numbers.lock().unwrap().clone();
        n.sort_unstable();
        assert_eq!(n, (0..10).collect::<Vec<u64>>());
        let mut o = got_orders.lock().unwrap().clone();
        o.sort_by_key(|o| o.id);
        assert_eq!(
            o[3],
            Order {
                id: 3,
                items: vec!["item3".into()]
            }
        );
        assert!(
            got_maps
                .lock()
                .unwrap()
                .contains(&HashMap::from([("k7".to_string(), 7)]))
        );
        assert!(
            got_values
                .lock()
                .unwrap()
                .contains(&serde_json::json!({"i": 9, "nested": [9, null]}))
        );

        // Every message was acked: the queues are empty.
        let connection = connect().await;
        for q in [&strings, &numbers, &orders, &maps, &values] {
            assert_eq!(message_count(&connection, q).await, 0, "{q}");
        }
        delete(&connection, &[&strings, &numbers, &orders, &maps, &values]).await;
        client.close().await;
    })
    .await;
}

/// A queue routed with a dead-letter queue, so rejected messages can be
/// counted.
async fn with_dead_letters(prefix: &str) -> (String, String, RouteOptions) {
    let queue = unique(prefix);
    let dead = unique(&format!("{prefix}-dead"));
    let connection = connect().await;
    declare(&connection, &dead).await;
    let options = RouteOptions {
        prefetch: 5,
        arguments: dead_letter_to(&dead),
        ..Default::default()
    };
    (queue, dead, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_error_rejects_the_message_without_requeue_and_the_worker_goes_on() {
    within(LIMIT, "test", async {
        let (queue, dead, options) = with_dead_letters("errors").await;
        let ok = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut worker = QueueWorker::new(params());
        let (o, c) = (ok.clone(), calls.clone());
        worker.route_with(&queue, options, move |n: u32| {
            let (o, c) = (o.clone(), c.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if n % 2 == 1 {
                    return Err(format!("{n} is odd"));
                }
                o.lock().unwrap().push(n);
                Ok(())
            }
        });
        let handle = worker.run().await.expect("run");
        let connection = connect().await;
        for n in 0..10u32 {
            publish_raw(&connection, &queue, wire::encode_request(&n).unwrap()).await;
        }
        wait_for_count(&connection, &dead, 5, Duration::from_secs(20)).await;
        eventually(Duration::from_secs(10), "evens handled", || {
            ok.lock().unwrap().len() == 5
        })
        .await;
        // Each message was handled once: the failures were not redelivered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        assert_eq!(message_count(&connection, &queue).await, 0);
        handle.stop().await.expect("stop");
        delete(&connection, &[&queue, &dead]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_panic_rejects_the_message_and_the_worker_goes_on() {
    within(LIMIT, "test", async {
        let (queue, dead, options) = with_dead_letters("panics").await;
        let ok = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut worker = QueueWorker::new(params());
        let (o, c) = (ok.clone(), calls.clone());
        worker.route_with(&queue, options, move |n: u32| {
            let (o, c) = (o.clone(), c.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                assert!(n != 3, "three is right out");
                o.fetch_add(1, Ordering::SeqCst);
            }
        });
        let handle = worker.run().await.expect("run");
        let connection = connect().await;
        for n in 0..6u32 {
            publish_raw(&connection, &queue, wire::encode_request(&n).unwrap()).await;
        }
        wait_for_count(&connection, &dead, 1, Duration::from_secs(20)).await;
        eventually(Duration::from_secs(10), "the others handled", || {
            ok.load(Ordering::SeqCst) == 5
        })
        .await;
        // The worker still handles new messages after the panic.
        publish_raw(&connection, &queue, wire::encode_request(&10u32).unwrap()).await;
        eventually(Duration::from_secs(10), "handled after the panic", || {
            ok.load(Ordering::SeqCst) == 6
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert!(!handle.is_finished());
        handle.stop().await.expect("stop");
        assert_eq!(message_count(&connection, &queue).await, 0);
        delete(&connection, &[&queue, &dead]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_bodies_are_rejected_without_requeue_never_looping() {
    within(LIMIT, "test", async {
        let (queue, dead, options) = with_dead_letters("malformed").await;
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut worker = QueueWorker::new(params());
        worker.max_message_size(64 * 1024);
        let g = got.clone();
        worker.route_with(&queue, options, move |n: u32| {
            let g = g.clone();
            async move { g.lock().unwrap().push(n) }
        });
        let handle = worker.run().await.expect("run");
        let connection = connect().await;
        let bad: Vec<Vec<u8>> = vec![
            b"not gzip at all".to_vec(),
            // A truncated gzip stream.
            wire::gzip(br#"{"data": 1}"#)[..12].to_vec(),
            wire::gzip(b"\xff\xfe not utf-8"),
            wire::gzip(b"{\"data\": "),
            // `amqp_worker`'s README's bare value: not an envelope.
            wire::gzip(br#""a test message""#),
            wire::gzip(br#"{"data": "not a number"}"#),
            wire::gzip(br#"{"data": 1, "extra": 2}"#),
            wire::gzip(br#"[1]"#),
            // A gzip bomb: 1 MiB of spaces, over the 64 KiB limit.
            wire::gzip(&vec![b' '; 1024 * 1024]),
        ];
        let n_bad = bad.len() as u32;
        for body in bad {
            publish_raw(&connection, &queue, body).await;
        }
        publish_raw(&connection, &queue, wire::encode_request(&7u32).unwrap()).await;
        wait_for_count(&connection, &dead, n_bad, Duration::from_secs(20)).await;
        eventually(Duration::from_secs(10), "the good message handled", || {
            !got.lock().unwrap().is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*got.lock().unwrap(), vec![7]);
        assert_eq!(message_count(&connection, &queue).await, 0);
        assert_eq!(message_count(&connection, &dead).await, n_bad);
        handle.stop().await.expect("stop");
        delete(&connection, &[&queue, &dead]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_stop_mid_load_loses_nothing_and_handles_nothing_twice() {
    const N: u32 = 2_000;
    within(Duration::from_secs(120), "test", async {
        let queue = unique("stop");
        let connection = connect().await;
        connection
            .queue_declare(
                &queue,
                QueueOptions {
                    durable: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let confirms: Vec<_> = (0..N)
            .map(|i| connection.publish(wire::encode_request(&i).unwrap(), "", &queue))
            .collect();
        for r in join_all(confirms).await {
            r.unwrap();
        }

        let handled = Arc::new(Mutex::new(BTreeMap::<u32, u32>::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let mut worker = QueueWorker::new(params());
        let (h, s, f) = (handled.clone(), started.clone(), finished.clone());
        let options = RouteOptions {
            prefetch: 20,
            ..Default::default()
        };
        worker.route_with(&queue, options, move |i: u32| {
            let (h, s, f) = (h.clone(), s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                *h.lock().unwrap().entry(i).or_default() += 1;
                f.fetch_add(1, Ordering::SeqCst);
            }
        });
        let handle = worker.run().await.expect("run");
        eventually(Duration::from_secs(30), "some handled", || {
            handled.lock().unwrap().len() >= 300
        })
        .await;
        handle.stop().await.expect("a graceful stop");

        // Every handler that started also finished.
        assert_eq!(
            started.load(Ordering::SeqCst),
            finished.load(Ordering::SeqCst)
        );
        let handled = handled.lock().unwrap().clone();
        assert!(handled.len() < N as usize, "stopped mid-load");
        assert!(
            handled.values().all(|&n| n == 1),
            "a message was handled twice"
        );

        // The rest is still in the queue, and nothing handled is.
        let rest = connection.acking_consumer(&queue, 100).await.unwrap();
        let mut remaining = HashSet::new();
        while handled.len() + remaining.len() < N as usize {
            let m = within(
                Duration::from_secs(20),
                "the remaining messages",
                rest.next(),
            )
            .await
            .unwrap();
            let i: u32 = wire::decode_request(&m.body, 1024).unwrap();
            assert!(
                !handled.contains_key(&i),
                "{i} was handled and is still queued"
            );
            assert!(remaining.insert(i), "{i} is queued twice");
            rest.ack(m.delivery_tag);
        }
        rest.close().await;
        assert_eq!(message_count(&connection, &queue).await, 0);
        delete(&connection, &[&queue]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_waits_for_running_handlers_and_acks_them() {
    within(LIMIT, "test", async {
        let queue = unique("slow-stop");
        let finished = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let mut worker = QueueWorker::new(params());
        let (s, f) = (started.clone(), finished.clone());
        worker.route_with(
            &queue,
            RouteOptions {
                prefetch: 4,
                ..Default::default()
            },
            move |_: u32| {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
        let handle = worker.run().await.expect("run");
        let connection = connect().await;
        for i in 0..10u32 {
            publish_raw(&connection, &queue, wire::encode_request(&i).unwrap()).await;
        }
        eventually(Duration::from_secs(10), "4 running", || {
            started.load(Ordering::SeqCst) == 4
        })
        .await;
        handle.stop().await.expect("stop");
        assert_eq!(finished.load(Ordering::SeqCst), 4);
        // The 4 finished ones were acked; the 6 others are back in the queue.
        wait_for_count(&connection, &queue, 6, Duration::from_secs(10)).await;
        delete(&connection, &[&queue]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_outliving_the_shutdown_timeout_is_cancelled_and_its_message_requeued() {
    within(LIMIT, "test", async {
        let queue = unique("stuck");
        let started = Arc::new(AtomicUsize::new(0));
        let mut worker = QueueWorker::new(params());
        worker.shutdown_timeout(Duration::from_millis(200));
        let s = started.clone();
        worker.route(&queue, move |_: u32| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        let handle = worker.run().await.expect("run");
        let connection = connect().await;
        publish_raw(&connection, &queue, wire::encode_request(&1u32).unwrap()).await;
        eventually(Duration::from_secs(10), "started", || {
            started.load(Ordering::SeqCst) == 1
        })
        .await;
        match handle.stop().await {
            Err(WorkerError::ShutdownTimedOut { abandoned: 1 }) => {}
            other => panic!("expected ShutdownTimedOut, got {other:?}"),
        }
        wait_for_count(&connection, &queue, 1, Duration::from_secs(10)).await;
        delete(&connection, &[&queue]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connecting_retries_with_backoff_then_fails_with_a_typed_error() {
    within(LIMIT, "test", async {
        let retry = RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(100),
        };
        // Nothing listens on port 1.
        let params = ConnectionParameters::new("127.0.0.1", 1, "guest", "guest").with_retry(retry);
        let mut worker = QueueWorker::new(params.clone());
        worker.route("never", |_: u32| async {});
        let started = std::time::Instant::now();
        match worker.run().await {
            Err(WorkerError::Connect {
                attempts: 3,
                last: Error::Connect { .. },
            }) => {}
            other => panic!("expected Connect after 3 attempts, got {other:?}"),
        }
        // 50 ms then 100 ms, each jittered down by at most half.
        assert!(
            started.elapsed() >= Duration::from_millis(75),
            "it waited between attempts"
        );
        match Client::connect(&params).await {
            Err(WorkerError::Connect { attempts: 3, .. }) => {}
            other => panic!("expected Connect, got {other:?}"),
        }

        // Bad credentials and a missing vhost fail at once: retrying
        // can't fix them.
        let bad = ConnectionParameters::new("127.0.0.1", 5672, "guest", "wrong-password");
        let mut worker = QueueWorker::new(bad.clone());
        worker.route("never", |_: u32| async {});
        match worker.run().await {
            Err(WorkerError::Connect { attempts: 1, last }) => {
                assert!(!last.is_transient(), "{last}");
                assert_eq!(last.reply_code(), Some(403), "{last}");
            }
            other => panic!("expected Connect after 1 attempt, got {other:?}"),
        }
        match Client::connect(&bad).await {
            Err(WorkerError::Connect { attempts: 1, .. }) => {}
            other => panic!("expected Connect after 1 attempt, got {other:?}"),
        }
        let vhost = unique("no-such-vhost");
        let missing =
            ConnectionParameters::from_url(&format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"))
                .unwrap();
        let mut worker = QueueWorker::new(missing);
        worker.route("never", |_: u32| async {});
        match worker.run().await {
            Err(WorkerError::Connect { attempts: 1, last }) => {
                assert_eq!(last.reply_code(), Some(530), "{last}");
            }
            other => panic!("expected Connect after 1 attempt, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_route_and_a_duplicate_route_are_typed_errors() {
    within(LIMIT, "test", async {
        let queue = unique("refused");
        let connection = connect().await;
        // Declared non-durable: the worker's durable declaration is refused.
        declare(&connection, &queue).await;
        let mut worker = QueueWorker::new(params());
        worker.route(&queue, |_: u32| async {});
        match worker.run().await {
            Err(WorkerError::Route { queue: q, source }) => {
                assert_eq!(q, queue);
                assert_eq!(source.reply_code(), Some(406));
            }
            other => panic!("expected Route, got {other:?}"),
        }
        // With the queue's own durability it is accepted.
        let mut worker = QueueWorker::new(params());
        let options = RouteOptions {
            durable: Some(false),
            ..Default::default()
        };
        worker.route_with(&queue, options, |_: u32| async {});
        worker.run().await.expect("run").stop().await.expect("stop");

        let mut worker = QueueWorker::new(params());
        worker
            .route("twice", |_: u32| async {})
            .route("twice", |_: String| async {});
        assert!(matches!(worker.run().await, Err(WorkerError::DuplicateRoute(q)) if q == "twice"));
        delete(&connection, &[&queue]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_reconnects_after_losing_its_connection() {
    within(LIMIT, "test", async {
        let queue = unique("reconnect");
        let name = unique("reconnect-conn");
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut worker = QueueWorker::new(params().with_connection_name(&name));
        let g = got.clone();
        worker.route(&queue, move |n: u32| {
            let g = g.clone();
            async move { g.lock().unwrap().push(n) }
        });
        let handle = worker.run().await.expect("run");
        let client = Client::connect(&params()).await.unwrap();
        client.send(&queue, &1u32).await.unwrap();
        eventually(Duration::from_secs(10), "first", || {
            got.lock().unwrap().len() == 1
        })
        .await;

        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            carehare_tests::close_connection_named(&n, "test: go away")
        })
        .await
        .unwrap();
        client.send(&queue, &2u32).await.unwrap();
        eventually(
            Duration::from_secs(30),
            "second, after reconnecting",
            || got.lock().unwrap().len() == 2,
        )
        .await;
        assert_eq!(*got.lock().unwrap(), vec![1, 2]);
        assert!(!handle.is_finished());
        handle.stop().await.expect("stop");
        delete(&client.connection(), &[&queue]).await;
        client.close().await;
    })
    .await;
}

/// A TCP forwarder to the test broker that the test can cut: while cut
/// (`false`), it drops every connection through it, open or new.
async fn forwarder() -> (u16, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open, rx) = tokio::sync::watch::channel(true);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                if !*rx.borrow() {
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = rx.wait_for(|open| !*open) => {}
                }
            });
        }
    });
    (port, open)
}

/// RabbitMQ refuses a route when the worker sets it up again after a
/// reconnect (its queue was redeclared with other settings while the
/// worker was away): the worker stops at once (it does not retry what
/// can't succeed) and `join` says which route and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_refused_after_a_reconnect_ends_the_worker_with_a_typed_error() {
    within(LIMIT, "test", async {
        let queue = unique("refused-later");
        let (port, open) = forwarder().await;
        let through = ConnectionParameters::new("127.0.0.1", port, "guest", "guest");
        let mut worker = QueueWorker::new(through);
        worker.route(&queue, |_: u32| async {});
        let handle = worker.run().await.expect("run");
        // The worker is cut off, and keeps trying to reconnect.
        open.send_replace(false);
        let connection = connect().await;
        within(Duration::from_secs(10), "the consumer gone", async {
            while connection
                .queue_declare(
                    &queue,
                    QueueOptions {
                        passive: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .consumer_count
                > 0
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        connection.queue_delete(&queue, false, false).await.unwrap();
        // Not durable: the worker's durable declaration is refused.
        declare(&connection, &queue).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!handle.is_finished(), "the worker waits for the broker");
        open.send_replace(true);
        match within(Duration::from_secs(20), "the worker's end", handle.join()).await {
            Err(WorkerError::Route { queue: q, source }) => {
                assert_eq!(q, queue);
                assert_eq!(source.reply_code(), Some(406), "{source}");
            }
            other => panic!("expected Route, got {other:?}"),
        }
        delete(&connection, &[&queue]).await;
    })
    .await;
}

/// The same when the route's queue is deleted while the worker consumes
/// it and someone declares it again with other settings: the worker
/// declares it again, is refused, and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_whose_queue_comes_back_different_ends_the_worker_with_a_typed_error() {
    within(LIMIT, "test", async {
        let queue = unique("refused-redeclared");
        let mut worker = QueueWorker::new(params());
        worker.route(&queue, |_: u32| async {});
        let handle = worker.run().await.expect("run");
        let connection = connect().await;
        connection.queue_delete(&queue, false, false).await.unwrap();
        declare(&connection, &queue).await;
        match within(Duration::from_secs(20), "the worker's end", handle.join()).await {
            Err(WorkerError::Route { queue: q, source }) => {
                assert_eq!(q, queue);
                assert_eq!(source.reply_code(), Some(406), "{source}");
            }
            other => panic!("expected Route, got {other:?}"),
        }
        delete(&connection, &[&queue]).await;
    })
    .await;
}
