//! The at-least-once proof, alone in its own test binary.
//!
//! N messages (the body is the message id) are published with confirms,
//! a window of 100 in flight, through a proxy (20 ms each way) whose link
//! a background thread breaks at random intervals (150–600 ms; an orderly
//! close or, one time in three, an RST). After any connection error the
//! publisher reconnects through the proxy and re-publishes every id not
//! yet confirmed (so an id may be stored more than once). Once every id is
//! confirmed the cutting stops, and the durable queue is drained from a
//! direct connection with manual acks. Every confirmed id must have been
//! received: a confirmation means stored, whatever happened to the link
//! afterwards.
//!
//! `cargo test -p carehare-tests --test at_least_once -- --nocapture`
//! prints the figures (`docs/reliability.md` quotes them). The cutter's
//! seed is printed; `CAREHARE_FAULT_SEED=<seed>` replays its schedule
//! (the intervals and the kind of each break; how far publishing got by
//! then still varies).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use carehare_client::{BasicProperties, Connection, Error, QueueOptions, Runtime};
use carehare_tests::AMQP_ADDR;
use carehare_tests::proxy::{Mode, Proxy};
use carehare_tests::scenarios::{connect, options, sleep, unique, within};
use futures_util::future::{Either, join_all, select};

/// Messages to get confirmed.
const N: u32 = 5_000;
/// Unconfirmed publishes in flight at most.
const WINDOW: usize = 100;
/// The whole test, so it can't hang.
const LIMIT: Duration = Duration::from_secs(120);
/// The cutter's interval, in milliseconds.
const CUT_EVERY_MS: (u64, u64) = (150, 600);
/// The proxied link's latency, each way. On loopback all 5,000 messages
/// would be confirmed within a cut or two; with a 40 ms round trip, the
/// window of 100 allows at most 2,500 confirms a second, so publishing
/// spans many cuts (and each cut catches up to 100 in flight).
const LINK_DELAY: Duration = Duration::from_millis(20);

/// xorshift64*: enough randomness for a fault schedule, and replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    if let Ok(s) = std::env::var("CAREHARE_FAULT_SEED") {
        let seed: u64 = s.parse().expect("CAREHARE_FAULT_SEED is a u64");
        // Never 0: xorshift would stay 0.
        return seed.max(1);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Never 0: xorshift would stay 0.
    (nanos as u64) | 1
}

/// What the cutter did: link closes (FIN) and resets (RST) that hit at
/// least one live connection, and how many fired at an idle proxy.
#[derive(Debug, Default, Clone, Copy)]
struct Cuts {
    fin: u32,
    rst: u32,
    idle: u32,
}

/// A thread that breaks the proxy's link at random intervals until told
/// to stop. Dropping it stops and joins it, also when the test panics.
struct Cutter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Cuts>>,
}

impl Cutter {
    fn start(proxy: Arc<Proxy>, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut cuts = Cuts::default();
            loop {
                let due = Instant::now()
                    + Duration::from_millis(rng.between(CUT_EVERY_MS.0, CUT_EVERY_MS.1));
                while Instant::now() < due {
                    if stopping.load(Ordering::SeqCst) {
                        return cuts;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let live = proxy.connections() > 0;
                if rng.between(0, 2) == 0 {
                    proxy.reset();
                    if live {
                        cuts.rst += 1;
                    }
                } else {
                    proxy.cut();
                    if live {
                        cuts.fin += 1;
                    }
                }
                if !live {
                    cuts.idle += 1;
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Cuts {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("not stopped yet");
        thread.join().expect("the cutter panicked")
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the publishing side did.
#[derive(Debug, Default)]
struct Published {
    /// Publishes queued, re-publishes included.
    attempts: u64,
    /// Connections made (the first one included).
    connections: u32,
    /// Connection attempts that failed (the link was cut mid-handshake).
    failed_connects: u32,
    /// Confirmations that failed because the connection ended.
    unconfirmed: u64,
    /// `basic.nack`s (none expected; they are re-published too).
    nacks: u64,
}

/// Publishes ids `0..N` through `proxy` until every one is confirmed,
/// reconnecting after each connection error. Returns the confirmed set.
async fn publish_all(
    rt: &Arc<dyn Runtime>,
    proxy: &Proxy,
    queue: &str,
    stats: &mut Published,
) -> HashSet<u32> {
    let mut opts = options();
    opts.port = proxy.port();
    opts.connection_timeout = Duration::from_secs(5);
    let persistent = BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    };
    let mut confirmed = HashSet::new();
    while confirmed.len() < N as usize {
        let c: Connection =
            match carehare_client::connect_with_runtime(rt.clone(), opts.clone()).await {
                Ok(c) => c,
                Err(_) => {
                    stats.failed_connects += 1;
                    sleep(rt, Duration::from_millis(10)).await;
                    continue;
                }
            };
        stats.connections += 1;
        let publisher = c.publisher(WINDOW);
        let mut pending = Vec::new();
        for id in (0..N).filter(|id| !confirmed.contains(id)) {
            match publisher
                .publish_with(id.to_string(), "", queue, &persistent)
                .await
            {
                Ok(confirmation) => {
                    stats.attempts += 1;
                    pending.push(async move { (id, confirmation.await) });
                }
                Err(Error::ConnectionClosed(_)) => break,
                Err(other) => panic!("publish {id}: {other:?}"),
            }
        }
        for (id, result) in join_all(pending).await {
            match result {
                Ok(()) => {
                    confirmed.insert(id);
                }
                Err(Error::ConnectionClosed(_)) => stats.unconfirmed += 1,
                Err(Error::ServerSentNack) => stats.nacks += 1,
                Err(other) => panic!("confirmation of {id}: {other:?}"),
            }
        }
        // Done, or the connection ended: either way, this one is finished.
        let _ = c.close().await;
    }
    confirmed
}

/// Drains `queue` with manual acks until nothing arrives for a second.
/// Returns every id received, with repeats.
async fn drain(rt: &Arc<dyn Runtime>, c: &Connection, queue: &str) -> Vec<u32> {
    let consumer = c.acking_consumer(queue, 1000).await.unwrap();
    let mut ids = Vec::new();
    loop {
        let next = std::pin::pin!(consumer.next_delivery());
        let idle = rt.sleep_until(Instant::now() + Duration::from_secs(1));
        match select(next, idle).await {
            Either::Left((delivery, _)) => {
                let (body, tag) = delivery.unwrap();
                let id = std::str::from_utf8(&body)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or_else(|| panic!("a body that is no id: {body:?}"));
                ids.push(id);
                consumer.ack(tag);
            }
            Either::Right(_) => break,
        }
    }
    consumer.close().await;
    ids
}

/// Deletes the (durable) queue if the test fails before it does.
struct DeleteOnFailure(String);

impl Drop for DeleteOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let script = format!(
                "source '{}/../test-server/env.sh' && rabbitmqctl -q delete_queue '{}'",
                env!("CARGO_MANIFEST_DIR"),
                self.0
            );
            let _ = std::process::Command::new("bash")
                .arg("-c")
                .arg(script)
                .status();
        }
    }
}

async fn proof(rt: Arc<dyn Runtime>) {
    let started = Instant::now();
    let seed = seed();
    println!(
        "at-least-once: N = {N}, window {WINDOW}, link delay {LINK_DELAY:?} each way, \
         a cut every {}-{} ms, seed {seed} (CAREHARE_FAULT_SEED)",
        CUT_EVERY_MS.0, CUT_EVERY_MS.1
    );
    let direct = connect(&rt).await;
    let queue = unique("at-least-once");
    direct
        .queue_declare(
            &queue,
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let _cleanup = DeleteOnFailure(queue.clone());
    let proxy = Arc::new(Proxy::start(AMQP_ADDR).unwrap());
    proxy.set_mode(Mode::Delay(LINK_DELAY));
    let cutter = Cutter::start(proxy.clone(), seed);
    let mut stats = Published::default();
    let confirmed = publish_all(&rt, &proxy, &queue, &mut stats).await;
    let cuts = cutter.stop();
    let published_in = started.elapsed();

    let received = drain(&rt, &direct, &queue).await;
    let distinct: HashSet<u32> = received.iter().copied().collect();
    let lost = confirmed.difference(&distinct).count();
    let duplicates = received.len() - distinct.len();
    let strangers = distinct.iter().filter(|id| **id >= N).count();
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    let left = direct
        .queue_declare(&queue, passive)
        .await
        .unwrap()
        .message_count;
    direct.queue_delete(&queue, false, false).await.unwrap();
    direct.close().await.unwrap();

    println!(
        "at-least-once: N = {N}, confirmed {}, cuts {} ({} FIN + {} RST; {} more at an idle link), \
         connections {} (reconnects {}, {} failed connects), publishes {} ({} unconfirmed, {} nacks), \
         received {} ({} distinct), duplicates {duplicates}, lost {lost}; \
         published in {:.1?}, total {:.1?}",
        confirmed.len(),
        cuts.fin + cuts.rst,
        cuts.fin,
        cuts.rst,
        cuts.idle,
        stats.connections,
        stats.connections.saturating_sub(1),
        stats.failed_connects,
        stats.attempts,
        stats.unconfirmed,
        stats.nacks,
        received.len(),
        distinct.len(),
        published_in,
        started.elapsed(),
    );
    assert_eq!(confirmed.len(), N as usize);
    assert_eq!(lost, 0, "confirmed but never delivered");
    assert_eq!(strangers, 0, "ids that were never published");
    assert_eq!(left, 0, "the queue was drained");
    assert!(
        cuts.fin + cuts.rst > 0,
        "the link was never cut: the proof proved nothing"
    );
}

#[test]
fn every_confirmed_message_is_delivered_at_least_once_across_link_cuts() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async {
            let rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());
            within(&rt, LIMIT, proof(rt.clone())).await
        });
}
