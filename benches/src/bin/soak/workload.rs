//! The traffic: one recovering connection publishing numbered, timestamped,
//! persistent messages with confirms at a steady rate, another consuming
//! them with an ack each. Every confirm and delivery goes to the tracker;
//! every lifecycle event of either connection to the event log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use carehare_tokio::{
    BasicProperties, BoxFuture, ConnectOptions, Connection, ConsumerOptions, Error, QueueOptions,
    RecoveringConfirmation, RecoveringConnection, RecoveringConsumer, RecoveryEvent,
    RecoveryOptions,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::track::Tracker;

/// The publisher's tick: the rate is spread over 100 ticks a second.
const TICK: Duration = Duration::from_millis(10);
/// Unconfirmed publishes, at most.
pub const WINDOW: usize = 10_000;
/// The consumer's prefetch.
pub const PREFETCH: u16 = 500;
/// Lifecycle events kept (a soak of hours has a few hundred).
const MAX_EVENTS: usize = 20_000;

/// A message's body: its sequence number and when it was first sent
/// (µs since the soak started), little-endian.
fn body(seq: u64, sent_us: u64) -> Bytes {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..].copy_from_slice(&sent_us.to_le_bytes());
    Bytes::copy_from_slice(&b)
}

pub fn parse(body: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

/// A lifecycle event of one of the connections.
#[derive(Clone, Debug)]
pub struct Event {
    pub t_s: f64,
    pub connection: &'static str,
    pub kind: &'static str,
    pub detail: String,
    /// For `recovered`: the library's downtime.
    pub downtime_s: Option<f64>,
}

#[derive(Default)]
pub struct EventLog {
    events: Mutex<Vec<Event>>,
    dropped: AtomicU64,
}

impl EventLog {
    fn push(&self, e: Event) {
        let mut v = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_EVENTS {
            v.push(e);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The events after `t_s`.
    pub fn since(&self, t_s: f64) -> Vec<Event> {
        let v = self.events.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().filter(|e| e.t_s > t_s).cloned().collect()
    }

    pub fn all(&self) -> Vec<Event> {
        self.since(f64::NEG_INFINITY)
    }
}

pub fn queue_options() -> QueueOptions {
    QueueOptions {
        durable: true,
        ..Default::default()
    }
}

async fn connect(
    url: &str,
    queue: &str,
) -> Result<RecoveringConnection<String>, carehare_tokio::Error> {
    let mut options = ConnectOptions::from_url(url)?;
    // A connect attempt made into a black hole would otherwise hang 30 s.
    options.connection_timeout = Duration::from_secs(5);
    let name = queue.to_string();
    carehare_tokio::connect_recovering(
        options,
        RecoveryOptions::default(),
        move |c: Connection| -> BoxFuture<'static, Result<String, Error>> {
            let name = name.clone();
            Box::pin(async move {
                c.queue_declare(&name, queue_options()).await?;
                Ok(name)
            })
        },
    )
    .await
}

pub struct Workload {
    publishing: RecoveringConnection<String>,
    consuming: RecoveringConnection<String>,
    consumer: Arc<RecoveringConsumer<String>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    closing: Arc<AtomicBool>,
    /// Sequence numbers handed out so far.
    next: Arc<AtomicU64>,
    /// Sequence numbers published and not yet confirmed.
    outstanding: Arc<AtomicU64>,
}

impl Workload {
    pub async fn start(
        url: &str,
        queue: &str,
        rate: u64,
        track: Arc<Tracker>,
        log: Arc<EventLog>,
    ) -> Result<Self, String> {
        let e = |e: Error| e.to_string();
        let publishing = connect(url, queue).await.map_err(e)?;
        let consuming = connect(url, queue).await.map_err(e)?;
        let mut tasks = Vec::new();
        for (name, rc) in [("publisher", &publishing), ("consumer", &consuming)] {
            tasks.push(tokio::spawn(log_events(
                name,
                rc.events(),
                track.clone(),
                log.clone(),
            )));
        }
        let closing = Arc::new(AtomicBool::new(false));
        let consumer = Arc::new(consuming.consumer(
            |q: &String| q.clone(),
            ConsumerOptions {
                prefetch_count: PREFETCH,
                ..Default::default()
            },
        ));
        tasks.push(tokio::spawn(consume(
            consumer.clone(),
            track.clone(),
            log.clone(),
            closing.clone(),
        )));

        let (stop, stop_rx) = watch::channel(false);
        let next = Arc::new(AtomicU64::new(0));
        let outstanding = Arc::new(AtomicU64::new(0));
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let (confirm_tx, confirm_rx) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(settle(
            confirm_rx,
            retry_tx.clone(),
            track.clone(),
            outstanding.clone(),
        )));
        let publisher = Publisher {
            publisher: publishing.publisher(WINDOW),
            queue: queue.to_string(),
            properties: BasicProperties {
                delivery_mode: Some(2),
                ..Default::default()
            },
            track,
            confirms: confirm_tx,
        };
        tasks.push(tokio::spawn(publish(
            publisher,
            rate,
            retry_tx,
            retry_rx,
            stop_rx,
            next.clone(),
            outstanding.clone(),
        )));
        Ok(Self {
            publishing,
            consuming,
            consumer,
            tasks,
            stop,
            closing,
            next,
            outstanding,
        })
    }

    /// Stops publishing new messages (republishing goes on).
    pub fn stop_publishing(&self) {
        let _ = self.stop.send(true);
    }

    pub fn published(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub async fn close(self) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.consumer.close()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.publishing.close()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.consuming.close()).await;
        for task in self.tasks {
            task.abort();
        }
    }
}

async fn log_events(
    connection: &'static str,
    mut events: carehare_tokio::RecoveryEvents,
    track: Arc<Tracker>,
    log: Arc<EventLog>,
) {
    while let Some(event) = events.next().await {
        let (kind, detail, downtime_s) = match event {
            RecoveryEvent::Disconnected { cause } => ("disconnected", cause.to_string(), None),
            RecoveryEvent::Recovered { downtime } => {
                ("recovered", String::new(), Some(downtime.as_secs_f64()))
            }
            RecoveryEvent::GaveUp { cause } => ("gave up", cause.to_string(), None),
            RecoveryEvent::Connected { address } => ("connected", address.to_string(), None),
            // One per attempt: the backoff's business, not the soak's.
            _ => continue,
        };
        log.push(Event {
            t_s: track.secs(),
            connection,
            kind,
            detail,
            downtime_s,
        });
    }
}

async fn consume(
    consumer: Arc<RecoveringConsumer<String>>,
    track: Arc<Tracker>,
    log: Arc<EventLog>,
    closing: Arc<AtomicBool>,
) {
    loop {
        match consumer.next().await {
            Ok(m) => {
                match parse(&m.body) {
                    Some((seq, sent)) => track.delivered(seq, sent),
                    None => {
                        track.counts.foreign.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !consumer.ack(m.tag) {
                    track.counts.stale_acks.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                if closing.load(Ordering::Relaxed) {
                    return;
                }
                log.push(Event {
                    t_s: track.secs(),
                    connection: "consumer",
                    kind: "next failed",
                    detail: e.to_string(),
                    downtime_s: None,
                });
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

struct Publisher {
    publisher: carehare_tokio::RecoveringPublisher<String>,
    queue: String,
    properties: BasicProperties,
    track: Arc<Tracker>,
    confirms: mpsc::UnboundedSender<(u64, Bytes, RecoveringConfirmation)>,
}

impl Publisher {
    async fn send(&self, seq: u64, body: Bytes, retry: &mpsc::UnboundedSender<(u64, Bytes)>) {
        match self
            .publisher
            .publish_with(body.clone(), "", &self.queue, &self.properties)
            .await
        {
            Ok(confirmation) => {
                let _ = self.confirms.send((seq, body, confirmation));
            }
            Err(_) => {
                self.track
                    .counts
                    .publish_errors
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = retry.send((seq, body));
            }
        }
    }
}

/// Publishes `rate` new messages a second (ticks missed while publishing
/// waits are not made up), and again what `settle` hands back.
async fn publish(
    p: Publisher,
    rate: u64,
    retry_tx: mpsc::UnboundedSender<(u64, Bytes)>,
    mut retry_rx: mpsc::UnboundedReceiver<(u64, Bytes)>,
    stop: watch::Receiver<bool>,
    next: Arc<AtomicU64>,
    outstanding: Arc<AtomicU64>,
) {
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            Some((seq, body)) = retry_rx.recv() => {
                p.track.counts.republished.fetch_add(1, Ordering::Relaxed);
                p.send(seq, body, &retry_tx).await;
            }
            _ = tick.tick() => {
                if *stop.borrow() {
                    continue;
                }
                for _ in 0..per_tick {
                    let seq = next.load(Ordering::Relaxed);
                    if seq >= p.track.capacity() {
                        break;
                    }
                    next.store(seq + 1, Ordering::Relaxed);
                    outstanding.fetch_add(1, Ordering::Relaxed);
                    p.track.counts.published.fetch_add(1, Ordering::Relaxed);
                    p.send(seq, body(seq, p.track.now_us()), &retry_tx).await;
                }
            }
        }
    }
}

/// Waits for every confirmation; a failed one goes back to the publisher.
async fn settle(
    mut rx: mpsc::UnboundedReceiver<(u64, Bytes, RecoveringConfirmation)>,
    retry: mpsc::UnboundedSender<(u64, Bytes)>,
    track: Arc<Tracker>,
    outstanding: Arc<AtomicU64>,
) {
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            got = rx.recv(), if open => match got {
                Some((seq, body, confirmation)) => {
                    pending.push(async move { (seq, body, confirmation.await) });
                }
                None => open = false,
            },
            Some((seq, body, result)) = pending.next(), if !pending.is_empty() => match result {
                Ok(()) => {
                    track.confirmed(seq);
                    outstanding.fetch_sub(1, Ordering::Relaxed);
                }
                Err(_) => {
                    track.counts.confirm_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = retry.send((seq, body));
                }
            },
            else => return,
        }
    }
}
