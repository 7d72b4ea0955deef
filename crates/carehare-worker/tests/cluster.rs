//! Failover on the local 3-node cluster (`test-server/cluster-start.sh`):
//! these tests stop cluster nodes. They run one at a time (a static lock
//! here, and `flock -o /tmp/carehare-cluster.lock` around the test binaries
//! that stop nodes), and always start a stopped node again, even when a
//! test fails.
//!
//! ```sh
//! flock -o /tmp/carehare-cluster.lock cargo test -p carehare-worker --test cluster -- --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carehare_tests::cluster::{NodeDown, node_of_port, start_cluster};
use carehare_tokio::{Connection, Error};
use carehare_worker::{
    CallError, Client, ConnectionParameters, QueueType, QueueWorker, RetryPolicy, RpcWorker,
};

/// The cluster's AMQP ports, node 3 first (node N listens on 5780 + N):
/// the tests stop the first node each tries.
const PORTS: [u16; 3] = [5783, 5781, 5782];

/// One test at a time in this binary: they stop nodes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stops (`stop`: a clean shutdown) or kills (`kill`: SIGKILL, a crash)
/// the node listening on `port` (in a blocking task); the guard starts it
/// again. Returns the guard and when the command returned.
async fn stop_node(port: u16, how: &'static str) -> (NodeDown, Instant) {
    tokio::task::spawn_blocking(move || (NodeDown::now(how, node_of_port(port)), Instant::now()))
        .await
        .unwrap()
}

/// The cluster's nodes as guest, in this order; patient retries.
fn params(ports: &[u16]) -> ConnectionParameters {
    let urls = ports
        .iter()
        .map(|p| format!("amqp://guest:guest@127.0.0.1:{p}/"));
    let mut params = ConnectionParameters::from_urls(urls)
        .unwrap()
        .with_retry(RetryPolicy {
            max_attempts: 120,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        });
    params.options_mut().address_timeout = Duration::from_secs(3);
    params
}

fn others(port: u16) -> Vec<u16> {
    PORTS.into_iter().filter(|p| *p != port).collect()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "carehare-worker-cluster-{prefix}-{}-{nanos}",
        std::process::id()
    )
}

/// Fails the test instead of hanging.
async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: timed out after {limit:?} (a hang)"),
    }
}

async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not true after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records when `connection` closes.
fn closed_at(connection: Connection) -> Arc<Mutex<Option<Instant>>> {
    let at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let slot = at.clone();
    tokio::spawn(async move {
        connection.closed().await;
        *slot.lock().unwrap() = Some(Instant::now());
    });
    at
}

/// The longest time between two consecutive instants (sorted) in `window`.
fn longest_gap(times: &mut [Instant], from: Instant) -> Duration {
    times.sort();
    times
        .windows(2)
        .filter(|w| w[1] >= from)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// A call: when it started, when it ended, and its outcome's kind.
type Call = (Instant, Instant, &'static str);

/// A call's outcome, by kind.
fn kind(result: &Result<u64, CallError>, n: u64) -> &'static str {
    match result {
        Ok(v) => {
            assert_eq!(*v, n * 2, "a wrong answer");
            "answer"
        }
        Err(CallError::Timeout(_)) => "Timeout",
        Err(CallError::Returned(_)) => "Returned (no queue)",
        Err(CallError::Connect { .. }) => "Connect (could not reconnect)",
        Err(CallError::Amqp(Error::ConnectionClosed(_))) => "Amqp(ConnectionClosed)",
        Err(CallError::Amqp(Error::ConsumerClosed)) => "Amqp(ConsumerClosed)",
        Err(CallError::Amqp(Error::ChannelClosedByServer(_))) => "Amqp(ChannelClosedByServer)",
        // Named by its variant (few calls end so: leaking is fine).
        Err(CallError::Amqp(e)) => {
            let debug = format!("{e:?}");
            let variant = debug.split(['(', ' ', '{']).next().unwrap_or("?");
            Box::leak(format!("Amqp({variant})").into_boxed_str())
        }
        Err(CallError::ErrorReply(_)) => "ErrorReply",
        Err(_) => "other error",
    }
}

/// An RPC worker and its client both on node N (the first address each
/// tries); node N stops. Four callers call throughout, each call with a
/// 3 s timeout, each bounded by the test so that a hang fails it. Every
/// call ends in an answer or a typed error, and calls after the failover
/// are answered: the worker moved to another node and declared its queue
/// there, the client reconnected on its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_calls_across_a_node_stop_each_end_in_an_answer_or_a_typed_error() {
    rpc_failover("stop").await;
}

/// The same when node N crashes (SIGKILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_calls_across_a_node_crash_each_end_in_an_answer_or_a_typed_error() {
    rpc_failover("kill").await;
}

async fn rpc_failover(how: &'static str) {
    let _serial = SERIAL.lock().await;
    start_cluster();
    within(Duration::from_secs(240), "test", async {
        let node = PORTS[0];
        let route = unique("rpc");
        let mut worker = RpcWorker::new(params(&PORTS));
        worker.route(&route, |n: u64| async move { n * 2 });
        let worker = worker.run().await.unwrap();
        let client = Client::connect(&params(&PORTS))
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(3));
        assert_eq!(client.connection().address().port, node);
        let two: u64 = client.call(&route, &1u64).await.unwrap();
        assert_eq!(two, 2);

        let running = Arc::new(AtomicBool::new(true));
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let mut callers = Vec::new();
        for c in 0..4u64 {
            let (client, route, running, calls) =
                (client.clone(), route.clone(), running.clone(), calls.clone());
            callers.push(tokio::spawn(async move {
                let mut n = c * 1_000_000;
                while running.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    // 3 s call timeout, plus a reconnect: 20 s means a hang.
                    let result = within(
                        Duration::from_secs(20),
                        "an RPC call",
                        client.call::<_, u64>(&route, &n),
                    )
                    .await;
                    calls
                        .lock()
                        .unwrap()
                        .push((started, Instant::now(), kind(&result, n)));
                    if result.is_err() {
                        // Don't spin on instant errors.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        let client_lost = closed_at(client.connection());
        let stop_began = Instant::now();
        let (restart, stopped_at) = stop_node(node, how).await;
        // Answers again, to calls made after the stop.
        let answered_after = |from: Instant| {
            calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(s, _, k)| *s > from && *k == "answer")
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while answered_after(stopped_at) < 40 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if answered_after(stopped_at) < 40 {
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for (s, _, k) in calls.lock().unwrap().iter() {
                if *s > stopped_at {
                    *kinds.entry(k).or_default() += 1;
                }
            }
            let why = if worker.is_finished() {
                format!("the worker ended: {:?}", worker.join().await)
            } else {
                "the worker runs".to_string()
            };
            panic!("fewer than 40 answers 90 s after the stop: calls since {kinds:?}; {why}");
        }
        running.store(false, Ordering::Relaxed);
        for caller in callers {
            within(Duration::from_secs(30), "a caller", caller)
                .await
                .unwrap();
        }
        assert_ne!(client.connection().address().port, node);
        let lost_at = client_lost.lock().unwrap().expect("the client's connection closed");

        let calls = calls.lock().unwrap().clone();
        let mut phases: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
        for (started, _, k) in &calls {
            let phase = if *started < stop_began {
                "1 before"
            } else if *started < stopped_at {
                "2 during"
            } else {
                "3 after"
            };
            *phases.entry(phase).or_default().entry(k).or_default() += 1;
        }
        let mut answers: Vec<Instant> = calls
            .iter()
            .filter(|(_, _, k)| *k == "answer")
            .map(|(_, e, _)| *e)
            .collect();
        let gap = longest_gap(&mut answers, stop_began);
        let first_answer_after_loss = calls
            .iter()
            .filter(|(s, _, k)| *s >= lost_at && *k == "answer")
            .map(|(_, e, _)| *e)
            .min()
            .unwrap();
        let ms = |d: Duration| d.as_millis();
        println!(
            "FIGURES worker RPC failover ({how}, node {}): {how} command {} ms; client connection lost {} ms after it began; \
             first answer to a call made after that {} ms later; longest time without an answer {} ms; {} calls: {phases:?}",
            node - 5780,
            ms(stopped_at - stop_began),
            ms(lost_at.saturating_duration_since(stop_began)),
            ms(first_answer_after_loss - lost_at),
            ms(gap),
            calls.len(),
        );
        // Calls after the failover work: the last 20 calls were answered.
        let mut by_start = calls.clone();
        by_start.sort_by_key(|c| c.0);
        assert!(by_start.iter().rev().take(20).all(|c| c.2 == "answer"));
        assert!(phases["1 before"].keys().all(|k| *k == "answer"));

        worker.stop().await.unwrap();
        let _ = client.connection().queue_delete(&route, false, false).await;
        client.close().await;
        drop(restart);
    })
    .await;
}

/// A queue worker on a quorum queue, on node N; a client on another node
/// sends numbered messages every 20 ms, sending again any whose confirm
/// did not come (the re-publish recipe). Node N stops: the worker moves to
/// another node and keeps serving the route. Every confirmed message is
/// handled (0 lost); duplicates (redeliveries of messages in flight at the
/// stop) are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_worker_on_a_quorum_queue_moves_to_another_node_and_keeps_serving() {
    quorum_failover("stop").await;
}

/// The same when node N crashes (SIGKILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_worker_on_a_quorum_queue_survives_a_node_crash() {
    quorum_failover("kill").await;
}

async fn quorum_failover(how: &'static str) {
    let _serial = SERIAL.lock().await;
    start_cluster();
    within(Duration::from_secs(240), "test", async {
        let node = PORTS[0];
        let queue = unique("quorum");
        let handled: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
        let mut worker = QueueWorker::new(params(&PORTS));
        worker.queue_type(QueueType::Quorum);
        let h = handled.clone();
        worker.route(&queue, move |n: u64| {
            let h = h.clone();
            async move { h.lock().unwrap().push((n, Instant::now())) }
        });
        let worker = worker.run().await.unwrap();
        let client = Client::connect(&params(&others(node)))
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        assert_ne!(client.connection().address().port, node);

        let running = Arc::new(AtomicBool::new(true));
        let send_failures: Arc<Mutex<HashMap<&'static str, usize>>> = Arc::default();
        let sender = {
            let (client, queue, running, failures) = (
                client.clone(),
                queue.clone(),
                running.clone(),
                send_failures.clone(),
            );
            tokio::spawn(async move {
                let mut confirmed = 0u64;
                while running.load(Ordering::Relaxed) {
                    let n = confirmed + 1;
                    let result =
                        within(Duration::from_secs(30), "a send", client.send(&queue, &n)).await;
                    match result {
                        Ok(()) => confirmed = n,
                        Err(e) => {
                            let k = match e {
                                CallError::Timeout(_) => "Timeout",
                                CallError::Returned(_) => "Returned",
                                CallError::Amqp(Error::ServerSentNack) => "Nack",
                                CallError::Amqp(_) => "Amqp",
                                _ => "other",
                            };
                            *failures.lock().unwrap().entry(k).or_default() += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                confirmed
            })
        };
        eventually(Duration::from_secs(20), "handling before the stop", || {
            handled.lock().unwrap().len() >= 20
        })
        .await;

        let stop_began = Instant::now();
        let (restart, stopped_at) = stop_node(node, how).await;
        let sent_after = |from: Instant| {
            // Numbers go up with time: compare with the count at `from`.
            handled
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, at)| *at > from)
                .count()
        };
        eventually(Duration::from_secs(90), "50 handled after the stop", || {
            sent_after(stopped_at) >= 50
        })
        .await;
        running.store(false, Ordering::Relaxed);
        let confirmed = within(Duration::from_secs(60), "the sender", sender)
            .await
            .unwrap();
        eventually(
            Duration::from_secs(60),
            "every confirmed message handled",
            || {
                let got = handled.lock().unwrap();
                (1..=confirmed).all(|n| got.iter().any(|(m, _)| *m == n))
            },
        )
        .await;
        let handled = handled.lock().unwrap().clone();
        let mut count: HashMap<u64, usize> = HashMap::new();
        for (n, _) in &handled {
            *count.entry(*n).or_default() += 1;
        }
        let lost = (1..=confirmed).filter(|n| !count.contains_key(n)).count();
        let duplicates = handled.len() - count.len();
        let mut times: Vec<Instant> = handled.iter().map(|(_, at)| *at).collect();
        let gap = longest_gap(&mut times, stop_began);
        println!(
            "FIGURES worker queue failover (quorum queue, {how}, node {}): {how} command {} ms; \
             longest time without handling a message {} ms; {confirmed} confirmed, {lost} lost, {duplicates} duplicates; \
             sends not confirmed (sent again): {:?}",
            node - 5780,
            (stopped_at - stop_began).as_millis(),
            gap.as_millis(),
            send_failures.lock().unwrap(),
        );
        assert_eq!(lost, 0);
        assert!(!worker.is_finished());
        worker.stop().await.unwrap();
        let _ = client.connection().queue_delete(&queue, false, false).await;
        client.close().await;
        drop(restart);
    })
    .await;
}

/// A classic durable queue (the Python-compatible default) lives on one
/// node. While that node is down, declaring it fails with `404 NOT_FOUND -
/// home node ... is down or inaccessible`: the worker keeps retrying (it
/// does not give up, as it would on a refused declaration), and serves the
/// route again once the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_worker_waits_for_the_home_node_of_its_classic_queue() {
    let _serial = SERIAL.lock().await;
    start_cluster();
    within(Duration::from_secs(300), "test", async {
        let node = PORTS[0];
        let queue = unique("classic");
        let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
        let mut worker = QueueWorker::new(params(&PORTS));
        let h = handled.clone();
        worker.route(&queue, move |n: u64| {
            let h = h.clone();
            async move { h.lock().unwrap().push(n) }
        });
        let worker = worker.run().await.unwrap();
        let client = Client::connect(&params(&others(node)))
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        client.send(&queue, &1u64).await.unwrap();
        eventually(Duration::from_secs(20), "the first message", || {
            handled.lock().unwrap().len() == 1
        })
        .await;

        let (restart, _) = stop_node(node, "stop").await;
        // The queue is there, on a node that is down.
        let refused = client
            .connection()
            .queue_declare(&queue, carehare_tokio::QueueOptions {
                durable: true,
                ..Default::default()
            })
            .await;
        match refused {
            Err(Error::ChannelClosedByServer(r)) if r.code == 404 => {
                assert!(r.text.contains("down or inaccessible"), "{r}");
            }
            other => panic!("expected a 404 for a queue whose node is down: {other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!worker.is_finished(), "the worker gave up");

        let started = Instant::now();
        tokio::task::spawn_blocking(move || drop(restart)).await.unwrap();
        let restarted_in = started.elapsed();
        let sent = within(Duration::from_secs(60), "a send after the restart", async {
            loop {
                match client.send(&queue, &2u64).await {
                    Ok(()) => break Instant::now(),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
        .await;
        eventually(Duration::from_secs(60), "the message after the restart", || {
            handled.lock().unwrap().contains(&2)
        })
        .await;
        println!(
            "FIGURES worker classic queue, home node down: the worker kept retrying; node restart took {} ms; \
             a message sent {} ms after the restart returned was handled",
            restarted_in.as_millis(),
            sent.saturating_duration_since(started + restarted_in).as_millis(),
        );
        assert!(!worker.is_finished());
        worker.stop().await.unwrap();
        let _ = client.connection().queue_delete(&queue, false, false).await;
        client.close().await;
    })
    .await;
}
