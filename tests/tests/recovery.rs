//! Recovery through faults that disturb everyone on the broker or the
//! cluster: a broker restart, `rabbitmqctl close_all_connections`, and the
//! stop and the kill of the node leading a quorum queue. They would break
//! the tests running next to them, so they live in this binary of their
//! own: its tests take turns ([`serial`]), and each holds the lock of what
//! it disturbs (the exclusive broker lock, or the cluster lock), taken here
//! unless the process running the tests already holds it (`scripts/test`
//! holds the cluster lock). The faults that disturb no one else (proxy
//! cuts, a forced close of one's own connection, refused credentials,
//! `close()` during an outage) are in the shared per-runtime suite:
//! `carehare_tests::recovery`.
//!
//! Each test runs its scenario ([`ride_out`]: numbered persistent messages
//! published with confirms at a steady pace, and an acking consumer, on a
//! `RecoveringConnection`) on tokio, smol and async-std at once, each on a
//! thread of its own under its own executor, against one fault: one
//! broker restart serves all three runtimes and keeps the binary short.
//! Each runtime's scenario must end with lost = 0 and its consumer
//! resumed, and prints its figures (duplicates included) with
//! `--nocapture`:
//!
//! ```sh
//! cargo test -p carehare-tests --test recovery -- --nocapture
//! ```
//!
//! Whatever happens, the broker and the cluster's nodes are started again
//! (drop guards).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use carehare_client::{AMQPValue, ConnectOptions, QueueOptions, RecoveryOptions, Runtime};
use carehare_tests::cluster::{
    DeleteQueue, NodeDown, VHOST, ctl, node_port, node_url, start_cluster,
};
use carehare_tests::locks::{BROKER_LOCK, CLUSTER_LOCK, ExclusiveLock};
use carehare_tests::rabbitmqctl;
use carehare_tests::recovery::{
    Tally, Traffic, connect_with_queue, durable_queue, finish, recovery_options, ride_out,
};
use carehare_tests::scenarios::{args, options, sleep, unique, within};

/// Bound on one runtime's whole scenario.
const LIMIT: Duration = Duration::from_secs(240);
/// Bound on every runtime's scenario getting ready for the fault.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One test at a time: each disturbs the broker or the cluster for all.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy, Debug)]
enum Flavour {
    Tokio,
    Smol,
    AsyncStd,
}

const RUNTIMES: [Flavour; 3] = [Flavour::Tokio, Flavour::Smol, Flavour::AsyncStd];

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::Tokio => "tokio",
            Flavour::Smol => "smol",
            Flavour::AsyncStd => "async-std",
        }
    }

    /// Runs the future `make` returns under this runtime's own `block_on`.
    fn block_on<F: Future>(self, make: impl FnOnce(Arc<dyn Runtime>) -> F) -> F::Output {
        match self {
            Flavour::Tokio => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(async { make(Arc::new(carehare_tokio::Tokio::current())).await }),
            // smol's and async-std's drivers run on their global executors,
            // so they progress while `block_on` waits.
            Flavour::Smol => smol::block_on(make(Arc::new(carehare_smol::Smol))),
            Flavour::AsyncStd => {
                async_std::task::block_on(make(Arc::new(carehare_async_std::AsyncStd)))
            }
        }
    }
}

/// Between the runtimes' scenarios and the fault: which are ready for it,
/// and whether it is over.
#[derive(Default)]
struct Cue {
    ready: [AtomicBool; 3],
    done: AtomicBool,
}

/// One runtime's place in the [`Cue`]. Dropping it counts as ready, so a
/// scenario that failed early holds nobody up.
struct Ticket {
    cue: Arc<Cue>,
    index: usize,
}

impl Ticket {
    /// Says this runtime is ready for the fault, and waits until it is over.
    async fn fault(&self, rt: &Arc<dyn Runtime>) {
        self.cue.ready[self.index].store(true, Ordering::SeqCst);
        while !self.cue.done.load(Ordering::SeqCst) {
            sleep(rt, Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.cue.ready[self.index].store(true, Ordering::SeqCst);
    }
}

/// Sets the flag when dropped: the fault is over, also when it panicked.
struct Over<'a>(&'a AtomicBool);

impl Drop for Over<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `scenario` on tokio, smol and async-std at once, each on a thread
/// of its own, and `fault` once all three are ready; returns their
/// figures. A scenario's panic is re-raised once all three have ended.
fn on_every_runtime<F>(
    scenario: impl Fn(Flavour, Arc<dyn Runtime>, Ticket) -> F + Sync,
    fault: impl FnOnce(),
) -> Vec<Tally>
where
    F: Future<Output = Tally>,
{
    let cue = Arc::new(Cue::default());
    std::thread::scope(|scope| {
        let over = Over(&cue.done);
        let threads: Vec<_> = RUNTIMES
            .iter()
            .enumerate()
            .map(|(index, &flavour)| {
                let ticket = Ticket {
                    cue: cue.clone(),
                    index,
                };
                let scenario = &scenario;
                std::thread::Builder::new()
                    .name(format!("recovery-{}", flavour.name()))
                    .spawn_scoped(scope, move || {
                        flavour.block_on(|rt| async move {
                            within(&rt, LIMIT, scenario(flavour, rt.clone(), ticket)).await
                        })
                    })
                    .expect("a thread")
            })
            .collect();
        let deadline = Instant::now() + READY_WITHIN;
        while !cue.ready.iter().all(|r| r.load(Ordering::SeqCst)) {
            assert!(
                Instant::now() < deadline,
                "the runtimes were not ready for the fault within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        fault();
        println!("the fault took {:.1?}", started.elapsed());
        drop(over);
        let mut tallies = Vec::new();
        let mut panicked = None;
        for thread in threads {
            match thread.join() {
                Ok(tally) => tallies.push(tally),
                Err(panic) => {
                    panicked.get_or_insert(panic);
                }
            }
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        tallies
    })
}

/// One runtime's part: traffic on a queue `setup` declares, through the
/// fault; then the figures are printed, the queue deleted, and lost = 0
/// and the consumer's resumption asserted ([`finish`]).
async fn traffic_through_the_fault(
    rt: Arc<dyn Runtime>,
    label: String,
    connect: ConnectOptions,
    (queue, declare): (String, QueueOptions),
    recovery: RecoveryOptions,
    limit: Duration,
    ticket: Ticket,
) -> Tally {
    let rc = connect_with_queue(&rt, connect, recovery, &queue, declare).await;
    let mut traffic = Traffic::new(label, &queue);
    traffic.limit = limit;
    let tally = ride_out(&rt, &rc, &traffic, |_| ticket.fault(&rt)).await;
    finish(&rt, &rc, &queue, tally).await
}

// ---- The single broker ----------------------------------------------------------------

fn test_server(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../test-server")
        .join(name)
}

/// Runs `test-server/<name>` (its log goes to stderr); `true` if it worked.
fn script(name: &str) -> bool {
    let started = Instant::now();
    let status = Command::new(test_server(name))
        .status()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: {status} after {:.1?}", started.elapsed());
    status.success()
}

/// Starts the broker again when dropped, unless the test did.
struct StartAgain {
    started: bool,
}

impl Drop for StartAgain {
    fn drop(&mut self) {
        if !self.started {
            eprintln!("recovery: starting the broker again");
            script("start.sh");
        }
    }
}

/// `test-server/stop.sh`, then `start.sh`, mid-publish and mid-consume,
/// under the exclusive broker lock. The messages are persistent and the
/// queue durable: what was confirmed before the stop is consumed after the
/// start; what was unconfirmed is published again.
#[test]
fn a_broker_restart_mid_publish_and_mid_consume_loses_nothing() {
    let _serial = serial();
    let _lock = ExclusiveLock::take(BROKER_LOCK);
    let mut again = StartAgain { started: false };
    assert!(script("start.sh"), "the broker is up");
    // stop.sh takes up to ~10 s and start.sh ~15 s: recovery waits longer.
    let limit = Duration::from_secs(90);
    on_every_runtime(
        |flavour, rt, ticket| {
            let label = format!("broker restart, {}", flavour.name());
            let queue = unique(&format!("recovery-restart-{}", flavour.name()));
            let recovery = recovery_options(limit);
            let queue = (queue, durable_queue());
            traffic_through_the_fault(rt, label, options(), queue, recovery, limit, ticket)
        },
        || {
            assert!(script("stop.sh"), "stop.sh");
            assert!(script("start.sh"), "start.sh");
            again.started = true;
        },
    );
}

/// `rabbitmqctl close_all_connections` (320 CONNECTION_FORCED to every
/// connection on the broker, hence the exclusive lock), mid-publish and
/// mid-consume.
#[test]
fn close_all_connections_mid_publish_and_mid_consume_loses_nothing() {
    let _serial = serial();
    let _lock = ExclusiveLock::take(BROKER_LOCK);
    on_every_runtime(
        |flavour, rt, ticket| {
            let label = format!("close_all_connections, {}", flavour.name());
            let queue = unique(&format!("recovery-close-all-{}", flavour.name()));
            let limit = Duration::from_secs(30);
            let recovery = recovery_options(limit);
            let queue = (queue, durable_queue());
            traffic_through_the_fault(rt, label, options(), queue, recovery, limit, ticket)
        },
        || {
            rabbitmqctl("close_all_connections 'carehare recovery test'");
        },
    );
}

// ---- The cluster ------------------------------------------------------------------------

/// The cluster is up (`cluster-start.sh`, idempotent), once per binary.
fn cluster_up() {
    static STARTED: Once = Once::new();
    STARTED.call_once(start_cluster);
}

/// Node 1 first, then 2 and 3.
fn cluster_options() -> ConnectOptions {
    let mut options = ConnectOptions::from_urls((1..=3).map(node_url)).unwrap();
    options.address_timeout = Duration::from_secs(3);
    options
}

fn quorum_queue() -> QueueOptions {
    QueueOptions {
        durable: true,
        arguments: args(&[("x-queue-type", AMQPValue::LongString("quorum".into()))]),
        ..Default::default()
    }
}

/// Deletes the queues if the test fails: durable queues outlive it
/// otherwise. On success [`finish`] has deleted them already, and each
/// `rabbitmqctl` costs a second or more.
struct DeleteIfFailed(Vec<String>);

impl Drop for DeleteIfFailed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.drain(..).map(DeleteQueue).for_each(drop);
        }
    }
}

/// The nodes (1-3) leading `queues`, in one `rabbitmqctl` call on node 2
/// (each call costs a second or more).
fn leaders_of(queues: &[String]) -> Vec<u8> {
    let listing = ctl(
        2,
        "rabbitmqctl",
        &format!("-q list_queues -p {VHOST} name leader --no-table-headers"),
    );
    let leader = |queue: &str| {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(queue))
            .unwrap_or_else(|| panic!("{queue} is not listed: {listing}"));
        let node = line.split_whitespace().nth(1).unwrap_or_default();
        (1..=3u8)
            .find(|n| node == format!("carehare-c{n}@localhost"))
            .unwrap_or_else(|| panic!("{queue} is led by {node:?}"))
    };
    queues.iter().map(|q| leader(q)).collect()
}

// With the default backoff, the connection is back within milliseconds of
// a crash, before the queue has elected its new leader. RabbitMQ 3.10 then
// nacks every publish on the channel that first published to the queue,
// for good; the client replaces a publish channel after 64 nacks in a row,
// so the traffic goes on (those publishes are reported as nacks, never
// counted as confirmed).

/// Each runtime's quorum queue is declared through node 1, where its
/// connection is: node 1 leads them (RabbitMQ places a new quorum queue's
/// leader on the node it was declared on). Then node 1 goes (`how`: `stop`
/// cleanly, or `kill` with SIGKILL), under the cluster lock; the
/// connections move to node 2, the queues elect a new leader, and the
/// traffic goes on. A drop guard starts node 1 again.
fn the_quorum_leader_going(how: &'static str) {
    let _serial = serial();
    let _lock = ExclusiveLock::take(CLUSTER_LOCK);
    cluster_up();
    let queues: Vec<String> = RUNTIMES
        .iter()
        .map(|f| unique(&format!("recovery-quorum-{how}-{}", f.name())))
        .collect();
    // Dropped after `down`, once node 1 is back.
    let _cleanup = DeleteIfFailed(queues.clone());
    let mut down = None;
    let limit = Duration::from_secs(60);
    on_every_runtime(
        |flavour, rt, ticket| {
            let label = format!("quorum leader {how}, {}", flavour.name());
            let queue = (queues[flavour as usize].clone(), quorum_queue());
            let recovery = recovery_options(limit);
            traffic_through_the_fault(rt, label, cluster_options(), queue, recovery, limit, ticket)
        },
        || {
            let leaders = leaders_of(&queues);
            println!("quorum leaders: {leaders:?}; {how} node 1");
            assert!(
                leaders.iter().all(|&l| l == 1),
                "the queues should be led by node 1, where they were declared: {leaders:?}"
            );
            let started = Instant::now();
            down = Some(NodeDown::now(how, 1));
            println!(
                "cluster node 1 ({}) {how}: {:.1?}",
                node_port(1),
                started.elapsed()
            );
        },
    );
    // Node 1 starts again.
    drop(down);
}

/// The node leading the quorum queue is stopped cleanly (320 to its
/// connections).
#[test]
fn the_quorum_leader_stopping_loses_nothing() {
    the_quorum_leader_going("stop");
}

/// The node leading the quorum queue is killed (SIGKILL: the sockets just
/// end).
#[test]
fn the_quorum_leader_killed_loses_nothing() {
    the_quorum_leader_going("kill");
}
