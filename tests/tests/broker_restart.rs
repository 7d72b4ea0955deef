//! A broker restart, alone in its own test binary: it stops the shared test
//! broker (`test-server/stop.sh`) under live connections, then starts it
//! again (`test-server/start.sh`). Run it on its own, never alongside other
//! live-broker tests.
//!
//! A tokio connection and a smol connection (smol's driver runs on smol's
//! global executor, so it works from inside tokio's `block_on`) each have a
//! consumer waiting and publishes in flight: each publishes as fast as its
//! window of 100 unconfirmed messages allows, so the window is usually
//! full when the broker goes away. Each connection must end with a typed
//! error (RabbitMQ's `320 CONNECTION_FORCED - broker forced connection
//! closure with reason 'shutdown'`, or an EOF or transport error), every
//! pending future (unconfirmed publishes, the waiting consumer, the
//! publisher's next publish, `closed()`) must resolve, failing with
//! `Error::ConnectionClosed` and the same reason, instead of hanging, and
//! once the broker is back a fresh connection works on each runtime.
//!
//! How many publishes are unconfirmed at the end varies: RabbitMQ confirms
//! what it has read before it closes, and sometimes that is everything
//! (the test prints the counts).
//!
//! The connections are direct, not through the test proxy: with a delay,
//! the proxy tears a connection down as soon as one side fails, dropping
//! the 320 `connection.close` still waiting out the delay.
//!
//! Whatever happens, the broker is started again when the test ends (a
//! drop guard runs `start.sh`, which is idempotent).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carehare_client::{
    Connection, ConnectionError, Error, QueueOptions, Runtime, connect_with_runtime,
};
use carehare_tests::scenarios::{options, sleep, within};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};

/// Bounds: the connections ending once `stop.sh` runs; `stop.sh`; `start.sh`.
const ENDS_WITHIN: Duration = Duration::from_secs(30);
const STOP_WITHIN: Duration = Duration::from_secs(60);
const START_WITHIN: Duration = Duration::from_secs(120);
/// The whole test.
const LIMIT: Duration = Duration::from_secs(300);

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../test-server")
        .join(name)
}

/// Runs `test-server/<name>` (its log goes to stderr).
fn run_script(name: &str) -> ExitStatus {
    let started = Instant::now();
    let status = Command::new(script(name))
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: {status} after {:.1?}", started.elapsed());
    status
}

/// Starts the broker again when dropped, unless the test already did.
struct RestartGuard {
    started: bool,
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        if !self.started {
            eprintln!("broker_restart: starting the broker again");
            let _ = Command::new(script("start.sh"))
                .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
                .status();
        }
    }
}

/// Runs `name` on a thread and waits for it (without blocking the
/// runtime), for at most `limit`.
async fn script_within(rt: &Arc<dyn Runtime>, name: &'static str, limit: Duration) -> ExitStatus {
    let thread: JoinHandle<ExitStatus> = std::thread::spawn(move || run_script(name));
    let deadline = Instant::now() + limit;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "{name} took more than {limit:?}");
        sleep(rt, Duration::from_millis(50)).await;
    }
    thread.join().unwrap()
}

/// A connection with its own queue.
struct Busy {
    label: &'static str,
    rt: Arc<dyn Runtime>,
    connection: Connection,
    queue: String,
}

impl Busy {
    async fn open(label: &'static str, rt: Arc<dyn Runtime>) -> Self {
        let connection = connect_with_runtime(rt.clone(), options()).await.unwrap();
        let queue = connection
            .queue_declare("", QueueOptions::exclusive())
            .await
            .unwrap()
            .queue
            .to_string();
        Self {
            label,
            rt,
            connection,
            queue,
        }
    }

    /// Publishes (as fast as a window of 100 allows) and consumes until
    /// the connection ends, then checks how everything pending ended.
    async fn until_the_end(self) {
        let Self {
            label,
            rt,
            connection: c,
            queue,
        } = self;
        let consumer = c.acking_consumer(&queue, 100).await.unwrap();
        let publisher = c.publisher(100);
        let publishing = async {
            let mut pending = FuturesUnordered::new();
            let mut results = Vec::new();
            let refused = loop {
                // Collect what has settled, so memory stays bounded.
                while let Some(Some(r)) = pending.next().now_or_never() {
                    results.push(r);
                }
                match publisher.publish("restart", "", &queue).await {
                    Ok(confirmation) => pending.push(confirmation),
                    Err(e) => break e,
                }
            };
            // Every confirmation still pending must resolve, not hang.
            while let Some(r) = within(&rt, ENDS_WITHIN, pending.next()).await {
                results.push(r);
            }
            (results, refused)
        };
        let consuming = async {
            let mut consumed = 0u32;
            loop {
                match consumer.next().await {
                    Ok(m) => {
                        consumer.ack(m.delivery_tag);
                        consumed += 1;
                    }
                    Err(e) => break (consumed, e),
                }
            }
        };
        let ((results, refused), (consumed, consumer_error), outcome) =
            futures_util::join!(publishing, consuming, c.closed());
        let published = results.len();
        let (mut confirmed, mut failed) = (0u32, 0u32);
        // Confirmations that ended otherwise, by error (reported, then failed on).
        let mut others: Vec<String> = Vec::new();
        for r in results {
            match r {
                Ok(()) => confirmed += 1,
                Err(Error::ConnectionClosed(ref e)) if *e == outcome => failed += 1,
                Err(other) => others.push(format!("{other:?}")),
            }
        }
        println!(
            "{label}: closed() = {outcome}; {published} published: {confirmed} confirmed, \
             {failed} failed with it, {} otherwise {others:?}; {consumed} consumed; \
             the publisher ended with {refused}; the consumer with {consumer_error}",
            others.len()
        );
        assert!(
            others.is_empty(),
            "{label}: confirmations ended with {others:?}"
        );
        match &outcome {
            ConnectionError::ClosedByServer(r) => {
                assert_eq!(r.code, 320, "{label}: {r}");
                assert!(r.text.starts_with("CONNECTION_FORCED"), "{label}: {r}");
            }
            ConnectionError::UnexpectedEof | ConnectionError::Transport(_) => {}
            other => panic!("{label}: expected 320, EOF or a transport error, got {other:?}"),
        }
        assert!(
            matches!(refused, Error::ConnectionClosed(ref e) if *e == outcome),
            "{label}: the publisher ended with {refused:?}"
        );
        assert!(
            matches!(consumer_error, Error::ConnectionClosed(ref e) if *e == outcome),
            "{label}: the consumer ended with {consumer_error:?}"
        );
        assert!(consumed > 0, "{label}: the consumer never got a message");
        assert!(matches!(
            c.queue_declare("", QueueOptions::exclusive()).await,
            Err(Error::ConnectionClosed(_))
        ));
    }
}

/// A fresh direct connection on `rt` works: declare, publish, consume.
/// Retries the connect briefly: the listener may lag `start.sh` a little.
async fn fresh_round_trip(label: &str, rt: Arc<dyn Runtime>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        match connect_with_runtime(rt.clone(), options()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                println!("{label}: connect after the restart: {e}; retrying");
                sleep(&rt, Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{label}: no connection after the restart: {e}"),
        }
    };
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap()
        .queue
        .to_string();
    c.publish("after the restart", "", &q).await.unwrap();
    let consumer = c.acking_consumer(&q, 1).await.unwrap();
    let (body, tag) = consumer.next_delivery().await.unwrap();
    assert_eq!(body, Bytes::from_static(b"after the restart"));
    consumer.ack(tag);
    c.close().await.unwrap();
    println!("{label}: a fresh connection works after the restart");
}

#[test]
fn broker_restart_fails_everything_pending_then_reconnect_works() {
    let mut guard = RestartGuard { started: false };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async {
            let tokio_rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());
            let smol_rt: Arc<dyn Runtime> = Arc::new(carehare_smol::Smol);
            let rt = tokio_rt.clone();
            within(&rt, LIMIT, async {
                let on_tokio = Busy::open("tokio", tokio_rt.clone()).await;
                let on_smol = Busy::open("smol", smol_rt.clone()).await;
                let stopping = async {
                    // Let both get busy first.
                    sleep(&tokio_rt, Duration::from_secs(1)).await;
                    script_within(&tokio_rt, "stop.sh", STOP_WITHIN).await
                };
                let ends = async {
                    futures_util::join!(on_tokio.until_the_end(), on_smol.until_the_end())
                };
                // The connections end while stop.sh runs.
                let ended_by = within(&tokio_rt, Duration::from_secs(1) + ENDS_WITHIN, ends);
                let (stopped, ((), ())) = futures_util::join!(stopping, ended_by);
                assert!(stopped.success(), "stop.sh: {stopped}");
                let started = script_within(&tokio_rt, "start.sh", START_WITHIN).await;
                assert!(started.success(), "start.sh: {started}");
                fresh_round_trip("tokio", tokio_rt.clone()).await;
                fresh_round_trip("smol", smol_rt.clone()).await;
            })
            .await;
        });
    guard.started = true;
}
