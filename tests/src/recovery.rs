//! Recovery against the real RabbitMQ: a [`RecoveringConnection`] carries a
//! publisher sending numbered persistent messages with confirms at a steady
//! pace and a consumer acking them through a fault ([`ride_out`]); every
//! scenario must end with every confirmed message consumed (lost = 0), the
//! consumer resumed, and its duplicates counted and printed. See the
//! "Recovery" section of `docs/reliability.md`.
//!
//! The scenarios here disturb no one else: they break links through a
//! proxy of their own, force-close only their own connection, or use a
//! user of their own. So they run in the shared per-runtime suite
//! ([`recovery_scenarios!`](macro@crate::recovery_scenarios)), on each
//! runtime's own executor, in parallel with the rest of it. Restarting the
//! broker, closing every connection on it and stopping cluster nodes would
//! break the tests running next to them: those are in
//! `tests/tests/recovery.rs`, a binary that takes the locks and runs one
//! test at a time, built on [`ride_out`] too.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use carehare_client::{
    AMQPValue, Address, BasicProperties, BoxFuture, ConnectOptions, Connection, ConnectionError,
    ConsumerOptions, Error, QueueOptions, RecoveringConnection, RecoveringConsumer,
    RecoveringPublisher, RecoveryEvent, RecoveryEvents, RecoveryOptions, Runtime,
};
use carehare_core::Auth;
use futures_util::FutureExt;
use futures_util::future::{Either, select};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::proxy::{Mode, Proxy};
use crate::scenarios::{args, options, sleep, unique};
use crate::{AMQP_ADDR, close_connection_named, rabbitmqctl, try_rabbitmqctl};

/// This module's scenarios, for [`scenarios!`](macro@crate::scenarios).
/// They expand inside a `recovery` module, so `cargo test recovery::`
/// selects exactly this group.
#[macro_export]
macro_rules! recovery_scenarios {
    ($block_on:path, $runtime:expr) => {
        #[allow(unused_imports)]
        mod recovery {
            use super::*;
            $crate::scenarios!($block_on, $runtime;
            recovery::rst_mid_publish_and_consume_loses_nothing,
            recovery::fin_mid_publish_and_consume_loses_nothing,
            recovery::black_hole_until_the_heartbeat_fires_loses_nothing,
            recovery::a_forced_close_declares_the_exclusive_queue_again_under_a_new_name,
            recovery::a_wrong_password_fails_at_once,
            recovery::an_unknown_vhost_fails_at_once,
            recovery::a_password_changed_while_connected_gives_up_with_403,
            recovery::close_during_an_outage_answers_every_waiter_at_once,
            );
        }
    };
}

/// Bound on each wait of the scenarios here: nothing may hang.
const STEP: Duration = Duration::from_secs(30);
/// How often a wait on shared state looks again.
const POLL: Duration = Duration::from_millis(10);

// ---- The traffic ---------------------------------------------------------------

/// How [`ride_out`] drives its traffic.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Printed with the figures.
    pub label: String,
    /// Publishes go to it through the default exchange; the consumer
    /// consumes it.
    pub queue: String,
    /// The wait between two publishes.
    pub pace: Duration,
    /// The publisher's window of unconfirmed messages.
    pub window: usize,
    /// The consumer's prefetch.
    pub prefetch: u16,
    /// Messages consumed before the fault.
    pub warm_up: usize,
    /// Messages consumed after the recovery, to call the consumer resumed.
    pub after: usize,
    /// Bound on each phase: the warm-up, the recovery after the fault, the
    /// consumer resuming, the last confirms, the drain.
    pub limit: Duration,
}

impl Traffic {
    /// 200 publishes a second with a window of 100, a prefetch of 50, the
    /// fault after 50 messages consumed, 50 more after the recovery, 30 s
    /// for each phase.
    pub fn new(label: impl Into<String>, queue: &str) -> Self {
        Self {
            label: label.into(),
            queue: queue.to_string(),
            pace: Duration::from_millis(5),
            window: 100,
            prefetch: 50,
            warm_up: 50,
            after: 50,
            limit: STEP,
        }
    }
}

/// What a scenario measured.
#[derive(Debug, Default)]
pub struct Tally {
    /// Which scenario, on which runtime.
    pub label: String,
    /// Distinct ids published (0, 1, ...).
    pub ids: u64,
    /// Publish calls, re-publishes of nacked ids included.
    pub published: u64,
    /// Ids whose confirmation succeeded.
    pub confirmed: BTreeSet<u64>,
    /// Confirmations that failed with `basic.nack` (published again).
    pub nacked: u64,
    /// Anything else that failed, as text: any of it fails the scenario.
    pub failed: Vec<String>,
    /// Ids consumed.
    pub received: BTreeSet<u64>,
    /// Messages consumed, duplicates included.
    pub deliveries: u64,
    /// Of those, with `redelivered` set.
    pub redelivered: u64,
    /// Acks refused because their connection was gone.
    pub stale_acks: u64,
    /// Unconfirmed publishes when the loss was seen (the first
    /// `Disconnected` event): in doubt, published again.
    pub in_flight_at_loss: Option<usize>,
    /// Every `Disconnected` cause.
    pub disconnects: Vec<String>,
    /// Every `Recovered` downtime (loss to `setup` done on a new connection).
    pub downtimes: Vec<Duration>,
    /// `Connecting` events: reconnect attempts.
    pub attempts: u32,
    /// Every `Connected` address.
    pub addresses: Vec<Address>,
    /// The `GaveUp` cause, if any.
    pub gave_up: Option<Error>,
    /// From the start of the fault to the first `Recovered`.
    pub recovered_after: Option<Duration>,
    /// From the start of the fault to the first message consumed after
    /// recovering.
    pub resumed_after: Option<Duration>,
    /// Messages consumed after the first `Recovered`.
    pub after_recovery: u64,
    /// The longest wait between two deliveries while publishing: the
    /// outage as the consumer saw it.
    pub longest_gap: Duration,
    /// The whole scenario.
    pub took: Duration,
}

impl Tally {
    fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Default::default()
        }
    }

    /// Confirmed ids never consumed.
    pub fn lost(&self) -> BTreeSet<u64> {
        self.confirmed.difference(&self.received).copied().collect()
    }

    /// Deliveries of an id already consumed.
    pub fn duplicates(&self) -> u64 {
        self.deliveries - self.received.len() as u64
    }

    /// The figures on one line.
    pub fn summary(&self) -> String {
        let lost = self.lost();
        format!(
            "lost {} of {} confirmed ({} ids, {} publishes, {} nacked, {} failed {:?}); \
             {} deliveries: {} distinct, {} duplicates, {} redelivered, {} stale acks refused; \
             {:?} in flight at the loss; disconnects {:?}; {} reconnect attempts; downtime {:?}; \
             recovered {:?} and consumer resumed {:?} after the fault; longest consumer gap {:?}; \
             {} consumed after recovery; connected to {:?}; gave up {:?}; took {:.1?}",
            lost.len(),
            self.confirmed.len(),
            self.ids,
            self.published,
            self.nacked,
            self.failed.len(),
            self.failed.iter().take(5).collect::<Vec<_>>(),
            self.deliveries,
            self.received.len(),
            self.duplicates(),
            self.redelivered,
            self.stale_acks,
            self.in_flight_at_loss,
            self.disconnects,
            self.attempts,
            self.downtimes,
            self.recovered_after,
            self.resumed_after,
            self.longest_gap,
            self.after_recovery,
            self.addresses.iter().map(|a| a.port).collect::<Vec<_>>(),
            self.gave_up.as_ref().map(ToString::to_string),
            self.took,
        )
    }

    /// Prints the figures (shown with `--nocapture`).
    pub fn report(&self) {
        println!("recovery [{}]: {}", self.label, self.summary());
    }

    /// The fault cut the connection, recovery replaced it, the consumer
    /// resumed, every id was confirmed, nothing confirmed was lost and
    /// nothing unknown arrived.
    ///
    /// # Panics
    /// If any of that is not so.
    pub fn assert_recovered(&self) {
        let label = &self.label;
        assert!(
            self.gave_up.is_none(),
            "{label}: gave up: {}",
            self.summary()
        );
        assert!(self.failed.is_empty(), "{label}: {}", self.summary());
        assert!(
            !self.disconnects.is_empty(),
            "{label}: the fault did not cut the connection: {}",
            self.summary()
        );
        assert!(!self.downtimes.is_empty(), "{label}: never recovered");
        assert!(
            self.after_recovery > 0,
            "{label}: the consumer did not resume"
        );
        let lost = self.lost();
        assert!(
            lost.is_empty(),
            "{label}: confirmed messages lost: {:?}...: {}",
            lost.iter().take(20).collect::<Vec<_>>(),
            self.summary()
        );
        assert_eq!(
            self.confirmed.len() as u64,
            self.ids,
            "{label}: not every id was confirmed: {}",
            self.summary()
        );
        assert!(
            self.received.iter().all(|&id| id < self.ids),
            "{label}: an unknown id arrived"
        );
    }
}

/// The state [`ride_out`]'s publisher, consumer, event reader and fault
/// share, for the fault to wait on (e.g. [`Watch::disconnected`]).
#[derive(Clone)]
pub struct Watch {
    rt: Arc<dyn Runtime>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    tally: Tally,
    /// Confirmed and not consumed yet.
    missing: BTreeSet<u64>,
    /// No new ids from now on.
    stop: bool,
    /// Every publish settled.
    publishing_done: bool,
    fault_at: Option<Instant>,
    last_delivery: Option<Instant>,
}

impl Watch {
    fn new(rt: Arc<dyn Runtime>, label: &str) -> Self {
        Self {
            rt,
            state: Arc::new(Mutex::new(State {
                tally: Tally::new(label),
                ..Default::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the connection was lost at least once.
    ///
    /// # Panics
    /// If it is not within `limit`.
    pub async fn disconnected(&self, limit: Duration) {
        self.until("disconnect", limit, |s| !s.tally.disconnects.is_empty())
            .await
    }

    async fn until(&self, what: &str, limit: Duration, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            {
                let state = self.lock();
                if done(&state) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: no {what} within {limit:?}: {}",
                    state.tally.label,
                    state.tally.summary()
                );
            }
            sleep(&self.rt, POLL).await;
        }
    }

    /// Records `event`; `in_flight` is the publisher's unconfirmed count.
    fn record_event(&self, event: RecoveryEvent, in_flight: usize) {
        let mut s = self.lock();
        let since_fault = s.fault_at.map(|t| t.elapsed());
        let t = &mut s.tally;
        match event {
            RecoveryEvent::Connecting { .. } => t.attempts += 1,
            RecoveryEvent::Connected { address } => t.addresses.push(address),
            RecoveryEvent::Disconnected { cause } => {
                t.disconnects.push(cause.to_string());
                t.in_flight_at_loss = t.in_flight_at_loss.or(Some(in_flight));
            }
            RecoveryEvent::Recovered { downtime } => {
                t.downtimes.push(downtime);
                t.recovered_after = t.recovered_after.or(since_fault);
            }
            RecoveryEvent::GaveUp { cause } => t.gave_up = Some(cause),
            _ => {}
        }
    }

    fn record_delivery(&self, id: u64, redelivered: bool) {
        let mut s = self.lock();
        let now = Instant::now();
        if !s.stop
            && let Some(last) = s.last_delivery
        {
            s.tally.longest_gap = s.tally.longest_gap.max(now - last);
        }
        s.last_delivery = Some(now);
        s.missing.remove(&id);
        let since_fault = s.fault_at.map(|t| t.elapsed());
        let t = &mut s.tally;
        t.deliveries += 1;
        t.redelivered += u64::from(redelivered);
        t.received.insert(id);
        if !t.downtimes.is_empty() {
            t.after_recovery += 1;
            t.resumed_after = t.resumed_after.or(since_fault);
        }
    }

    /// Records a confirmation; `true` if it was nacked (to publish again).
    fn settle(&self, id: u64, result: Result<(), Error>) -> bool {
        let mut s = self.lock();
        match result {
            Ok(()) => {
                s.tally.confirmed.insert(id);
                if !s.tally.received.contains(&id) {
                    s.missing.insert(id);
                }
                false
            }
            Err(Error::ServerSentNack) => {
                s.tally.nacked += 1;
                true
            }
            Err(e) => {
                s.tally.failed.push(format!("confirmation of {id}: {e}"));
                false
            }
        }
    }

    fn fail(&self, what: String) {
        self.lock().tally.failed.push(what);
    }
}

/// Runs `fault` amid steady traffic on `rc` and returns the figures:
/// publishes numbered persistent messages to `traffic.queue` every
/// `traffic.pace` with confirms, and consumes and acks them, counting
/// duplicates. Once `warm_up` messages were consumed it awaits `fault`;
/// then it waits for the recovery and for `after` more messages, stops
/// publishing, waits for every confirmation (publishing nacked ids again)
/// and drains the queue until every confirmed id has arrived or `limit`
/// passed. Every wait is bounded by `traffic.limit`.
///
/// It neither closes `rc` nor deletes the queue: see [`finish`].
pub async fn ride_out<T, F>(
    rt: &Arc<dyn Runtime>,
    rc: &RecoveringConnection<T>,
    traffic: &Traffic,
    fault: impl FnOnce(Watch) -> F,
) -> Tally
where
    T: Clone + Send + Sync + 'static,
    F: Future<Output = ()>,
{
    let started = Instant::now();
    let watch = Watch::new(rt.clone(), &traffic.label);
    let mut events = rc.events();
    let publisher = rc.publisher(traffic.window);
    let queue = traffic.queue.clone();
    let consumer = rc.consumer(
        move |_: &T| queue.clone(),
        ConsumerOptions {
            prefetch_count: traffic.prefetch,
            ..Default::default()
        },
    );
    let control = async {
        let warm_up = traffic.warm_up;
        watch
            .until("warm-up", traffic.limit, |s| {
                s.tally.received.len() >= warm_up
            })
            .await;
        watch.lock().fault_at = Some(Instant::now());
        fault(watch.clone()).await;
        watch
            .until("recovery", traffic.limit, |s| {
                !s.tally.downtimes.is_empty() || s.tally.gave_up.is_some()
            })
            .await;
        if watch.lock().tally.gave_up.is_none() {
            let after = traffic.after as u64;
            watch
                .until("consumer resuming", traffic.limit, |s| {
                    s.tally.after_recovery >= after
                })
                .await;
        }
        watch.lock().stop = true;
    };
    {
        let recording = pin!(async {
            while let Some(event) = events.next().await {
                watch.record_event(event, publisher.in_flight());
            }
            std::future::pending::<()>().await
        });
        let work = pin!(async {
            futures_util::join!(
                publish_numbered(rt, &publisher, traffic, &watch),
                consume_numbered(rt, &consumer, traffic, &watch),
                control
            )
        });
        select(work, recording).await;
    }
    while let Some(Some(event)) = events.next().now_or_never() {
        watch.record_event(event, publisher.in_flight());
    }
    consumer.close().await;
    let mut s = watch.lock();
    s.tally.took = started.elapsed();
    std::mem::take(&mut s.tally)
}

async fn publish_numbered<T: Clone + Send + Sync + 'static>(
    rt: &Arc<dyn Runtime>,
    publisher: &RecoveringPublisher<T>,
    traffic: &Traffic,
    watch: &Watch,
) {
    let persistent = BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    };
    let mut pending = FuturesUnordered::new();
    // Nacked ids, to publish again, as an application would.
    let mut again = VecDeque::new();
    let mut next_id = 0u64;
    let mut deadline = None;
    loop {
        while let Some(Some((id, result))) = pending.next().now_or_never() {
            if watch.settle(id, result) {
                again.push_back(id);
            }
        }
        let stop = watch.lock().stop;
        let id = match again.pop_front() {
            Some(id) => id,
            None if !stop => {
                next_id += 1;
                watch.lock().tally.ids = next_id;
                next_id - 1
            }
            None if pending.is_empty() => break,
            None => {
                let deadline = *deadline.get_or_insert(Instant::now() + traffic.limit);
                let left = deadline.saturating_duration_since(Instant::now());
                if let Some((id, result)) =
                    bounded(rt, "the last confirms", left, pending.next()).await
                    && watch.settle(id, result)
                {
                    again.push_back(id);
                }
                continue;
            }
        };
        let publish = publisher.publish_with(id.to_string(), "", &traffic.queue, &persistent);
        match bounded(rt, "room in the window", traffic.limit, publish).await {
            Ok(confirmation) => {
                watch.lock().tally.published += 1;
                pending.push(async move { (id, confirmation.await) });
            }
            Err(e) => {
                watch.fail(format!("publish of {id}: {e}"));
                watch.lock().stop = true;
            }
        }
        sleep(rt, traffic.pace).await;
    }
    watch.lock().publishing_done = true;
}

async fn consume_numbered<T: Clone + Send + Sync + 'static>(
    rt: &Arc<dyn Runtime>,
    consumer: &RecoveringConsumer<T>,
    traffic: &Traffic,
    watch: &Watch,
) {
    // One `next` at a time, kept across the ticks that look at the state.
    let mut next = Box::pin(consumer.next());
    let mut deadline = None;
    loop {
        {
            let s = watch.lock();
            if s.publishing_done {
                if s.missing.is_empty() {
                    return;
                }
                let deadline = *deadline.get_or_insert(Instant::now() + traffic.limit);
                if Instant::now() >= deadline {
                    // What is still missing is reported as lost.
                    return;
                }
            }
        }
        let tick = rt.sleep_until(Instant::now() + POLL * 10);
        match select(next.as_mut(), tick).await {
            Either::Left((Ok(message), _)) => {
                match std::str::from_utf8(&message.body)
                    .ok()
                    .and_then(|b| b.parse().ok())
                {
                    Some(id) => watch.record_delivery(id, message.redelivered),
                    None => watch.fail(format!("an unknown message {:?}", message.body)),
                }
                if !consumer.ack(message.tag) {
                    watch.lock().tally.stale_acks += 1;
                }
                next.set(consumer.next());
            }
            Either::Left((Err(e), _)) => {
                watch.fail(format!("the consumer ended: {e}"));
                return;
            }
            Either::Right(_) => {}
        }
    }
}

// ---- Helpers for the scenarios, here and in tests/tests/recovery.rs --------------

/// Recovery that gives up waiting for a connection after `outage`.
pub fn recovery_options(outage: Duration) -> RecoveryOptions {
    let mut recovery = RecoveryOptions::default();
    recovery.outage_timeout = Some(outage);
    recovery
}

/// A durable queue that expires 5 minutes after its last use, so that a
/// failed scenario can't leave it behind for long.
pub fn durable_queue() -> QueueOptions {
    QueueOptions {
        durable: true,
        arguments: args(&[("x-expires", AMQPValue::LongInt(300_000))]),
        ..Default::default()
    }
}

/// A recovering connection whose `setup` declares `queue` as `declare`
/// says, and hands its name on.
///
/// # Panics
/// If the first connect or `setup` fails.
pub async fn connect_with_queue(
    rt: &Arc<dyn Runtime>,
    options: ConnectOptions,
    recovery: RecoveryOptions,
    queue: &str,
    declare: QueueOptions,
) -> RecoveringConnection<String> {
    let queue = queue.to_string();
    let setup = move |c: Connection| -> BoxFuture<'static, Result<String, Error>> {
        let (queue, declare) = (queue.clone(), declare.clone());
        Box::pin(async move {
            c.queue_declare(&queue, declare).await?;
            Ok(queue)
        })
    };
    let connecting = RecoveringConnection::connect(rt.clone(), options, recovery, setup);
    bounded(rt, "the first connect", STEP, connecting)
        .await
        .unwrap()
}

/// Prints `tally`, deletes `queue`, closes `rc`, then asserts that it
/// recovered with nothing lost ([`Tally::assert_recovered`]).
pub async fn finish(
    rt: &Arc<dyn Runtime>,
    rc: &RecoveringConnection<String>,
    queue: &str,
    tally: Tally,
) -> Tally {
    tally.report();
    if let Ok(c) = bounded(rt, "the connection", STEP, rc.connection()).await {
        let _ = bounded(
            rt,
            "deleting the queue",
            STEP,
            c.queue_delete(queue, false, false),
        )
        .await;
    }
    let _ = bounded(rt, "close", STEP, rc.close()).await;
    tally.assert_recovered();
    tally
}

/// `fut`, or a panic naming `what` if it takes longer than `limit`.
pub async fn bounded<T>(
    rt: &Arc<dyn Runtime>,
    what: &str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> T {
    match select(pin!(fut), rt.sleep_until(Instant::now() + limit)).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

/// Runs blocking `f` (a script, `rabbitmqctl`) on a thread of its own and
/// waits for it without blocking the runtime, for at most `limit`.
///
/// # Panics
/// If `f` panics or takes longer.
pub async fn off_thread<R: Send + 'static>(
    rt: &Arc<dyn Runtime>,
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let thread = std::thread::spawn(f);
    let deadline = Instant::now() + limit;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "{what} took more than {limit:?}");
        sleep(rt, POLL).await;
    }
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The test binary's name without its hash (`client_tokio`...), to tell the
/// runtimes' figures apart in the output.
fn suite() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, _)) => name.to_string(),
        None => stem,
    }
}

/// Connects with recovery on `opts` (setup declares a server-named queue)
/// and checks one message there and back: the connection, its events
/// from then on, a consumer of the queue, a publisher (window 10) and the
/// queue's name.
async fn round_trip_first(
    rt: &Arc<dyn Runtime>,
    opts: ConnectOptions,
) -> (
    RecoveringConnection<String>,
    RecoveryEvents,
    RecoveringConsumer<String>,
    RecoveringPublisher<String>,
    String,
) {
    let connecting =
        RecoveringConnection::connect(rt.clone(), opts, recovery_options(STEP), server_named_queue);
    let rc = bounded(rt, "connect", STEP, connecting).await.unwrap();
    let events = rc.events();
    let consumer = rc.consumer(|queue: &String| queue.clone(), ConsumerOptions::default());
    let publisher = rc.publisher(10);
    let queue = rc.topology().await.unwrap();
    let confirmation = publisher.publish("before", "", &queue).await.unwrap();
    bounded(rt, "a confirmation", STEP, confirmation)
        .await
        .unwrap();
    let before = bounded(rt, "a message", STEP, consumer.next())
        .await
        .unwrap();
    assert!(consumer.ack(before.tag));
    (rc, events, consumer, publisher, queue)
}

/// A `setup` that declares a server-named exclusive queue and hands its
/// name on.
fn server_named_queue(c: Connection) -> BoxFuture<'static, Result<String, Error>> {
    Box::pin(async move {
        let ok = c.queue_declare("", QueueOptions::exclusive()).await?;
        Ok(ok.queue.to_string())
    })
}

/// Events as they come, each with when it came, until `done` says so or the
/// stream ends.
async fn events_until(
    rt: &Arc<dyn Runtime>,
    events: &mut RecoveryEvents,
    done: impl Fn(&RecoveryEvent) -> bool,
) -> Vec<(Instant, RecoveryEvent)> {
    let mut seen = Vec::new();
    while let Some(event) = bounded(rt, "a recovery event", STEP, events.next()).await {
        let last = done(&event);
        seen.push((Instant::now(), event));
        if last {
            break;
        }
    }
    seen
}

// ---- A lost link ---------------------------------------------------------------

/// The proxy's latency each way, so that publishes are in flight when the
/// link goes: with a 40 ms round trip and a publish every 5 ms, about 8
/// are unconfirmed at any time (on loopback, confirms come back before the
/// next publish).
const LATENCY: Duration = Duration::from_millis(20);

/// Traffic on a durable queue through a proxy of its own (with
/// [`LATENCY`]; `heartbeat` in seconds if set), and `fault` on the proxy
/// mid-publish and mid-consume.
async fn through_a_proxy(
    rt: Arc<dyn Runtime>,
    label: &str,
    heartbeat: Option<u16>,
    fault: impl AsyncFnOnce(&Proxy, Watch),
) {
    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    proxy.set_mode(Mode::Delay(LATENCY));
    let mut opts = options();
    opts.port = proxy.port();
    // A reconnect caught by a black hole gives up on the attempt soon.
    opts.connection_timeout = Duration::from_secs(5);
    if let Some(heartbeat) = heartbeat {
        opts.amqp.heartbeat = heartbeat;
    }
    let queue = unique("recovery-link");
    let rc = connect_with_queue(&rt, opts, recovery_options(STEP), &queue, durable_queue()).await;
    let traffic = Traffic::new(format!("{label}, {}", suite()), &queue);
    let tally = ride_out(&rt, &rc, &traffic, |watch| fault(&proxy, watch)).await;
    finish(&rt, &rc, &queue, tally).await;
}

/// The proxy resets the link (RST) amid traffic: the client reconnects
/// through it, re-publishes what was unconfirmed and re-subscribes; every
/// confirmed message is consumed.
pub async fn rst_mid_publish_and_consume_loses_nothing(rt: Arc<dyn Runtime>) {
    through_a_proxy(rt, "proxy RST", None, async |proxy, _| proxy.reset()).await
}

/// The same with an orderly close of the link (FIN).
pub async fn fin_mid_publish_and_consume_loses_nothing(rt: Arc<dyn Runtime>) {
    through_a_proxy(rt, "proxy FIN", None, async |proxy, _| proxy.cut()).await
}

/// The proxy black-holes the link: nothing passes, nothing closes, until
/// the heartbeat monitor (heartbeat 2 s) ends the connection; then the
/// link passes again and the client reconnects.
pub async fn black_hole_until_the_heartbeat_fires_loses_nothing(rt: Arc<dyn Runtime>) {
    through_a_proxy(
        rt,
        "proxy black hole, heartbeat 2 s",
        Some(2),
        async |proxy, watch| {
            proxy.set_mode(Mode::BlackHole);
            watch.disconnected(STEP).await;
            proxy.set_mode(Mode::Delay(LATENCY));
        },
    )
    .await
}

// ---- A server-named exclusive queue ----------------------------------------------

/// Publishes `ids` to `queue` and waits for each confirmation.
async fn publish_all(
    rt: &Arc<dyn Runtime>,
    publisher: &RecoveringPublisher<String>,
    queue: &str,
    ids: std::ops::Range<u64>,
    tally: &mut Tally,
) {
    let mut confirmations = Vec::new();
    for id in ids {
        let confirmation = bounded(
            rt,
            "publish",
            STEP,
            publisher.publish(id.to_string(), "", queue),
        )
        .await
        .unwrap();
        confirmations.push((id, confirmation));
        tally.ids = tally.ids.max(id + 1);
        tally.published += 1;
    }
    for (id, confirmation) in confirmations {
        match bounded(rt, "a confirmation", STEP, confirmation).await {
            Ok(()) => {
                tally.confirmed.insert(id);
            }
            Err(e) => tally.failed.push(format!("confirmation of {id}: {e}")),
        }
    }
}

/// Records one message from `consumer` and acks it; returns its generation.
fn take(
    consumer: &RecoveringConsumer<String>,
    message: Result<carehare_client::RecoveredMessage, Error>,
    tally: &mut Tally,
) -> u64 {
    let message = message.unwrap();
    let id = std::str::from_utf8(&message.body).unwrap().parse().unwrap();
    tally.deliveries += 1;
    tally.redelivered += u64::from(message.redelivered);
    tally.received.insert(id);
    assert!(consumer.ack(message.tag), "a fresh tag is acked");
    message.tag.generation()
}

/// `setup` declares a server-named exclusive queue and returns its name;
/// the consumer follows that name. RabbitMQ force-closes the connection
/// (`rabbitmqctl close_connection`: 320 CONNECTION_FORCED) while the
/// consumer waits: the exclusive queue goes with the connection, `setup`
/// declares a new one under a new name, and the consumer resumes on it.
/// 20 messages before (consumed before the close: an exclusive queue's
/// messages die with it), 20 after, published to the name `topology()`
/// gives.
pub async fn a_forced_close_declares_the_exclusive_queue_again_under_a_new_name(
    rt: Arc<dyn Runtime>,
) {
    const PER_PHASE: u64 = 20;
    let name = unique("recovery-exclusive");
    let mut opts = options();
    opts.amqp.connection_name = Some(name.clone());
    let connecting =
        RecoveringConnection::connect(rt.clone(), opts, recovery_options(STEP), server_named_queue);
    let rc = bounded(&rt, "connect", STEP, connecting).await.unwrap();
    let mut events = rc.events();
    let consumer = rc.consumer(|queue: &String| queue.clone(), ConsumerOptions::default());
    let publisher = rc.publisher(PER_PHASE as usize);
    let mut tally = Tally::new(format!("forced close, exclusive queue, {}", suite()));
    let started = Instant::now();

    let first = rc.topology().await.unwrap();
    publish_all(&rt, &publisher, &first, 0..PER_PHASE, &mut tally).await;
    for _ in 0..PER_PHASE {
        let message = bounded(&rt, "a message", STEP, consumer.next()).await;
        assert_eq!(take(&consumer, message, &mut tally), 1);
    }

    // The consumer waits in `next` while the connection is closed.
    let closer = name.clone();
    let closing = async {
        // Events are read while `rabbitmqctl` runs, to time them.
        let close = off_thread(&rt, "close_connection", STEP, move || {
            close_connection_named(&closer, "carehare recovery test")
        });
        let recovered = events_until(&rt, &mut events, |e| {
            matches!(e, RecoveryEvent::Recovered { .. })
        });
        let ((), seen) = futures_util::join!(close, recovered);
        let second = rc.topology().await.unwrap();
        assert_ne!(second, first, "a new server-named queue");
        let mut more = Tally::new("");
        publish_all(
            &rt,
            &publisher,
            &second,
            PER_PHASE..2 * PER_PHASE,
            &mut more,
        )
        .await;
        (seen, second, more)
    };
    let waiting = async { (consumer.next().await, Instant::now()) };
    let ((waiting, resumed_at), (seen, second, more)) =
        bounded(&rt, "the close and recovery", STEP, async {
            futures_util::join!(waiting, closing)
        })
        .await;
    // Timed from the `Disconnected` event: `rabbitmqctl` itself takes
    // seconds to start.
    let lost_at = seen.first().map_or(resumed_at, |(at, _)| *at);
    // Everything was confirmed before the close.
    tally.in_flight_at_loss = Some(0);
    tally.resumed_after = Some(resumed_at - lost_at);
    // The consumer waited from the loss on (it had nothing to do before).
    tally.longest_gap = resumed_at - lost_at;
    assert_eq!(
        take(&consumer, waiting, &mut tally),
        2,
        "from the new connection"
    );
    for _ in 1..PER_PHASE {
        let message = bounded(&rt, "a message", STEP, consumer.next()).await;
        assert_eq!(take(&consumer, message, &mut tally), 2);
    }
    tally.confirmed.extend(more.confirmed);
    tally.failed.extend(more.failed);
    tally.ids = more.ids;
    tally.published += more.published;
    for (at, event) in seen {
        match event {
            RecoveryEvent::Disconnected { cause } => {
                assert!(
                    matches!(&cause, Error::ConnectionClosed(ConnectionError::ClosedByServer(r)) if r.code == 320),
                    "{cause:?}"
                );
                tally.disconnects.push(cause.to_string());
            }
            RecoveryEvent::Connecting { .. } => tally.attempts += 1,
            RecoveryEvent::Connected { address } => tally.addresses.push(address),
            RecoveryEvent::Recovered { downtime } => {
                tally.downtimes.push(downtime);
                tally.recovered_after = Some(at - lost_at);
                tally.after_recovery = PER_PHASE;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The old queue went with its connection.
    let c = rc.connection().await.unwrap();
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    match c.queue_declare(&first, passive).await {
        Err(Error::ChannelClosedByServer(r)) => assert_eq!(r.code, 404, "{r}"),
        other => panic!("the first exclusive queue still exists: {other:?}"),
    }
    tally.took = started.elapsed();
    tally.report();
    println!("recovery [{}]: queue {first} became {second}", tally.label);
    bounded(&rt, "close", STEP, rc.close()).await.unwrap();
    tally.assert_recovered();
    assert_eq!(tally.duplicates(), 0, "{}", tally.summary());
}

// ---- Refused credentials -------------------------------------------------------

/// A `setup` with nothing to declare.
fn no_setup(_: Connection) -> BoxFuture<'static, Result<(), Error>> {
    Box::pin(async { Ok(()) })
}

/// `connect_recovering` with `opts` through a proxy of its own: returns its
/// error, how long it took, and how many connections the proxy saw half a
/// second later (a retry loop would show there).
async fn refused(rt: &Arc<dyn Runtime>, mut opts: ConnectOptions) -> (Error, Duration, u64) {
    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    opts.port = proxy.port();
    let started = Instant::now();
    let connecting =
        RecoveringConnection::connect(rt.clone(), opts, RecoveryOptions::default(), no_setup);
    let result = bounded(rt, "connect_recovering", STEP, connecting).await;
    let took = started.elapsed();
    let error = match result {
        Err(e) => e,
        Ok(rc) => panic!("connected: {rc:?}"),
    };
    sleep(rt, Duration::from_millis(500)).await;
    (error, took, proxy.served())
}

/// A wrong password: `connect_recovering` returns the typed 403 at once,
/// after one connection: no retry loop.
pub async fn a_wrong_password_fails_at_once(rt: Arc<dyn Runtime>) {
    let mut opts = options();
    opts.amqp.auth = Auth::plain("carehare", "wrong-password");
    let (error, took, connections) = refused(&rt, opts).await;
    println!(
        "recovery [wrong password, {}]: {error} after {took:?}, {connections} connection(s)",
        suite()
    );
    assert!(
        matches!(&error, Error::ConnectionClosed(ConnectionError::AuthenticationFailed(r)) if r.code == 403),
        "{error:?}"
    );
    assert_eq!(connections, 1, "no retry");
}

/// An unknown vhost: the typed 530 at once, after one connection.
pub async fn an_unknown_vhost_fails_at_once(rt: Arc<dyn Runtime>) {
    let mut opts = options();
    opts.amqp.virtual_host = "no-such-vhost".into();
    let (error, took, connections) = refused(&rt, opts).await;
    println!(
        "recovery [unknown vhost, {}]: {error} after {took:?}, {connections} connection(s)",
        suite()
    );
    assert!(
        matches!(&error, Error::ConnectionClosed(ConnectionError::ClosedByServer(r)) if r.code == 530),
        "{error:?}"
    );
    assert_eq!(connections, 1, "no retry");
}

/// A user of the test broker's own, deleted when dropped (also when the
/// test fails).
struct TempUser(String);

impl TempUser {
    fn create(name: &str, password: &str) -> Self {
        rabbitmqctl(&format!("add_user '{name}' '{password}'"));
        let user = Self(name.to_string());
        rabbitmqctl(&format!("set_permissions -p / '{name}' '.*' '.*' '.*'"));
        user
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        if let Err(e) = try_rabbitmqctl(&format!("delete_user '{}'", self.0)) {
            eprintln!("could not delete user {}: {e}", self.0);
        }
    }
}

/// A user of its own connects; its password is changed, then RabbitMQ
/// closes its connection (320). The reconnect is refused with 403, which
/// is not worth retrying: recovery gives up at once (`GaveUp` with the
/// 403, after one attempt), and the waiting consumer, `connection()` and
/// new publishes all fail with it.
pub async fn a_password_changed_while_connected_gives_up_with_403(rt: Arc<dyn Runtime>) {
    let name = unique("recovery-user");
    let user = {
        let name = name.clone();
        off_thread(&rt, "add_user", STEP, move || {
            TempUser::create(&name, "first-pw")
        })
        .await
    };
    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    let mut opts = options();
    opts.port = proxy.port();
    opts.amqp.auth = Auth::plain(&name, "first-pw");
    opts.amqp.connection_name = Some(name.clone());
    let (rc, mut events, consumer, publisher, queue) = round_trip_first(&rt, opts).await;

    let changing = {
        let name = name.clone();
        move || rabbitmqctl(&format!("change_password '{name}' 'second-pw'"))
    };
    off_thread(&rt, "change_password", STEP, changing).await;
    let closing = {
        let name = name.clone();
        move || close_connection_named(&name, "carehare recovery test: password changed")
    };
    let (next, (), seen) = bounded(&rt, "giving up", STEP, async {
        futures_util::join!(
            consumer.next(),
            off_thread(&rt, "close_connection", STEP, closing),
            events_until(&rt, &mut events, |e| matches!(
                e,
                RecoveryEvent::GaveUp { .. }
            ))
        )
    })
    .await;
    let refused = |e: &Error| matches!(e, Error::ConnectionClosed(ConnectionError::AuthenticationFailed(r)) if r.code == 403);
    let kinds: Vec<String> = seen.iter().map(|(_, e)| format!("{e:?}")).collect();
    let [
        (lost_at, RecoveryEvent::Disconnected { cause: lost }),
        (_, RecoveryEvent::Connecting { attempt: 1, .. }),
        (gave_up_at, RecoveryEvent::GaveUp { cause }),
    ] = seen.as_slice()
    else {
        panic!("expected Disconnected, Connecting 1, GaveUp: {kinds:?}");
    };
    println!(
        "recovery [password changed, {}]: disconnected by {lost}; gave up {:?} later with {cause}; \
         {} connection(s)",
        suite(),
        *gave_up_at - *lost_at,
        proxy.served()
    );
    assert!(
        matches!(lost, Error::ConnectionClosed(ConnectionError::ClosedByServer(r)) if r.code == 320),
        "{lost:?}"
    );
    assert!(refused(cause), "{cause:?}");
    assert!(next.as_ref().is_err_and(refused), "{next:?}");
    let connection = rc.connection().await.map(drop);
    assert!(connection.as_ref().is_err_and(refused), "{connection:?}");
    let publish = publisher.publish("after", "", &queue).await.map(drop);
    assert!(publish.as_ref().is_err_and(refused), "{publish:?}");
    // The stream ends after `GaveUp`, and no attempt follows.
    assert!(events.next().await.is_none());
    sleep(&rt, Duration::from_millis(500)).await;
    assert_eq!(proxy.served(), 2, "the first connection and one attempt");
    drop(user);
}

// ---- close() during an outage ----------------------------------------------------

/// The link is cut and every reconnect hangs in a black hole (the proxy
/// accepts, then forwards nothing). `close()` returns at once, and the
/// consumer waiting in `next`, a publish waiting for its confirmation,
/// `connection()` and `topology()` all fail with `ClosedByClient` at once.
/// The attempt under way is dropped once its timeout passes: no
/// connection is left behind, and no event follows the close.
pub async fn close_during_an_outage_answers_every_waiter_at_once(rt: Arc<dyn Runtime>) {
    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    let mut opts = options();
    opts.port = proxy.port();
    opts.connection_timeout = Duration::from_secs(2);
    let (rc, mut events, consumer, publisher, queue) = round_trip_first(&rt, opts).await;

    proxy.set_mode(Mode::BlackHole);
    proxy.cut();
    let seen = events_until(&rt, &mut events, |e| {
        matches!(e, RecoveryEvent::Connecting { .. })
    })
    .await;
    assert!(
        matches!(seen.first(), Some((_, RecoveryEvent::Disconnected { .. }))),
        "{seen:?}"
    );
    // Let the attempt reach the proxy and hang there.
    sleep(&rt, Duration::from_millis(300)).await;
    let hanging = proxy.connections();

    let confirmation = publisher
        .publish("in the outage", "", &queue)
        .await
        .unwrap();
    let mut next = pin!(consumer.next());
    let mut connection = pin!(rc.connection());
    let mut topology = pin!(rc.topology());
    let mut confirmation = pin!(confirmation);
    assert!(next.as_mut().now_or_never().is_none());
    assert!(connection.as_mut().now_or_never().is_none());
    assert!(topology.as_mut().now_or_never().is_none());
    assert!(confirmation.as_mut().now_or_never().is_none());

    let started = Instant::now();
    bounded(&rt, "close", STEP, rc.close()).await.unwrap();
    let close_took = started.elapsed();
    let (next, connection, topology, confirmation) = bounded(&rt, "the waiters", STEP, async {
        futures_util::join!(next, connection, topology, confirmation)
    })
    .await;
    let answered = started.elapsed();
    println!(
        "recovery [close during an outage, {}]: close() took {close_took:?}, every waiter \
         answered after {answered:?} ({hanging} attempt(s) hanging in the black hole)",
        suite()
    );
    let by_client =
        |e: &Error| matches!(e, Error::ConnectionClosed(ConnectionError::ClosedByClient));
    assert!(next.as_ref().is_err_and(by_client), "{next:?}");
    assert!(connection.as_ref().is_err_and(by_client), "{connection:?}");
    assert!(topology.as_ref().is_err_and(by_client), "{topology:?}");
    assert!(
        confirmation.as_ref().is_err_and(by_client),
        "{confirmation:?}"
    );
    assert!(
        close_took < Duration::from_secs(1),
        "close() took {close_took:?}"
    );
    assert!(
        answered < Duration::from_secs(1),
        "the waiters took {answered:?}"
    );
    // Later calls fail the same way at once.
    let publish = publisher.publish("after", "", &queue).await.map(drop);
    assert!(publish.as_ref().is_err_and(by_client), "{publish:?}");
    let next = consumer.next().await.map(drop);
    assert!(next.as_ref().is_err_and(by_client), "{next:?}");

    // The hanging attempt ends with its timeout; nothing is left open.
    proxy.set_mode(Mode::Pass);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.connections() > 0 {
        assert!(Instant::now() < deadline, "a connection was left open");
        sleep(&rt, Duration::from_millis(50)).await;
    }
    sleep(&rt, Duration::from_millis(500)).await;
    let after: Vec<RecoveryEvent> =
        std::iter::from_fn(|| events.next().now_or_never().flatten()).collect();
    assert!(after.is_empty(), "events after close(): {after:?}");
}
