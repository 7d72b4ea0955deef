//! The reconnect recipe: publish through the loss of a node without losing
//! a message, then count what arrived.
//!
//! The reconnecting is the client's: a [`RecoveringConnection`]
//! (`connect_recovering` in each adapter), given every node of the
//! cluster, replaces a lost connection with one to whichever node answers,
//! runs the application's `setup` again to declare its topology, and its
//! [`RecoveringPublisher`] publishes again, in order, whatever RabbitMQ
//! had not confirmed. What stays with the application (see
//! `docs/reconnect.md`):
//!
//! 1. an id on every message (`message_id`, and here the body too): a
//!    message whose confirm was lost with the connection is published
//!    again and may arrive twice;
//! 2. what to do with a nack (RabbitMQ refused the message, the
//!    connection is fine): [`publish_all`] publishes it again, a few times;
//! 3. a consumer that tolerates duplicates: [`drain_ids`] counts them.
//!
//! Nothing confirmed is ever lost when the queue is a quorum queue.
//!
//! One setting is not the default: the first reconnect waits a second or
//! two ([`recovery_options`]), for the reason given there.
//!
//! [`RecoveringConnection`]: carehare_client::RecoveringConnection

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use carehare_client::carehare_core::types::ShortStr;
use carehare_client::{
    Address, BasicProperties, Error, RecoveringConnection, RecoveringConsumer, RecoveringPublisher,
    RecoveryEvent, RecoveryOptions, Runtime,
};
use futures_util::StreamExt;
use futures_util::future::{Either, join_all, select};

/// Rounds of publishing the nacked messages of a batch again before
/// [`publish_all`] gives up with [`Error::ServerSentNack`].
pub const NACK_ROUNDS: u32 = 10;

/// The pause before publishing nacked messages again: a queue that refuses
/// (full, or electing a leader) is not hammered.
pub const NACK_PAUSE: Duration = Duration::from_millis(200);

/// The recovery options of the recipe: the defaults, except that the
/// first reconnect waits 1 to 2 s (then up to 5 s), and that a call waits
/// `outage_timeout` at most for a connection.
///
/// Why wait: with the defaults, the client is back on a surviving node
/// within about 50 ms, before RabbitMQ 3.10 has elected the quorum queue's
/// new leader, and the channel it then opens keeps nacking the publishes
/// to that queue (seen on the local cluster after both a clean stop and a
/// kill of the leader's node). A connection made a second later is fine.
///
/// ```
/// use std::time::Duration;
/// let options = carehare_examples::reconnect::recovery_options(Duration::from_secs(60));
/// assert!(options.backoff.delay(0, 1.0) >= Duration::from_secs(1));
/// ```
pub fn recovery_options(outage_timeout: Duration) -> RecoveryOptions {
    let mut options = RecoveryOptions::default();
    options.backoff.initial = Duration::from_secs(2);
    options.backoff.max = Duration::from_secs(5);
    options.outage_timeout = Some(outage_timeout);
    options
}

/// What happened while publishing.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Messages confirmed by RabbitMQ.
    pub confirmed: usize,
    /// `basic.nack`s received (each message was published again).
    pub nacks: usize,
    /// Connections lost (each followed by a recovery, or by giving up).
    pub failovers: usize,
    /// Every address connected to, in order.
    pub connected_to: Vec<Address>,
    /// For each recovery: from the loss to the new connection's `setup`
    /// done.
    pub outages: Vec<Duration>,
}

impl Report {
    /// Counts `event`.
    pub fn record(&mut self, event: &RecoveryEvent) {
        match event {
            RecoveryEvent::Disconnected { .. } => self.failovers += 1,
            RecoveryEvent::Connected { address } => self.connected_to.push(address.clone()),
            RecoveryEvent::Recovered { downtime } => self.outages.push(*downtime),
            _ => {}
        }
    }
}

/// The report shared by the publishing code and the event watcher.
pub type SharedReport = Arc<Mutex<Report>>;

/// Locks a report; a panic elsewhere leaves plain counters usable.
pub fn lock(report: &SharedReport) -> MutexGuard<'_, Report> {
    report.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A report that starts with the address `connection` is on, and the
/// future that keeps it up to date from the connection's events, printing
/// each on stderr; spawn it. It ends when the connection is gone.
pub async fn watch<T: Clone + Send + Sync + 'static>(
    connection: &RecoveringConnection<T>,
) -> Result<(SharedReport, impl Future<Output = ()> + Send + 'static), Error> {
    let mut events = connection.events();
    let first = connection.connection().await?.address().clone();
    let report = SharedReport::default();
    lock(&report).connected_to.push(first);
    let updated = report.clone();
    let follow = async move {
        while let Some(event) = events.next().await {
            match &event {
                RecoveryEvent::Disconnected { cause } => {
                    eprintln!("connection lost ({cause}); recovering")
                }
                RecoveryEvent::Connected { address } => eprintln!("connected to {address}"),
                RecoveryEvent::Recovered { downtime } => eprintln!("recovered after {downtime:?}"),
                RecoveryEvent::GaveUp { cause } => eprintln!("recovery gave up: {cause}"),
                _ => {}
            }
            lock(&updated).record(&event);
        }
    };
    Ok((report, follow))
}

/// A message to publish reliably: an id (for the consumer to deduplicate
/// on) and a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Unique per message; sent as `message_id`.
    pub id: u64,
    /// The body.
    pub body: Bytes,
}

/// The messages `first..first + count`, each body `"message <id>"`.
///
/// ```
/// let batch = carehare_examples::reconnect::numbered(5, 2);
/// assert_eq!(batch[1].id, 6);
/// assert_eq!(&batch[1].body[..], b"message 6");
/// ```
pub fn numbered(first: u64, count: u64) -> Vec<Outgoing> {
    (first..first + count)
        .map(|id| Outgoing {
            id,
            body: Bytes::from(format!("message {id}")),
        })
        .collect()
}

/// Publishes `messages` (persistent, each with its id as `message_id`)
/// and returns once RabbitMQ has confirmed every one. The publisher
/// carries them over lost connections; nacked ones are published again
/// after [`NACK_PAUSE`], for [`NACK_ROUNDS`] rounds at most. Fails when
/// recovery gives up, or when RabbitMQ refuses the publish itself (e.g.
/// 404: no such exchange).
pub async fn publish_all<T: Clone + Send + Sync + 'static>(
    runtime: &Arc<dyn Runtime>,
    publisher: &RecoveringPublisher<T>,
    exchange: &str,
    routing_key: &str,
    messages: Vec<Outgoing>,
    report: &SharedReport,
) -> Result<(), Error> {
    let mut pending = messages;
    let mut round = 1;
    loop {
        let mut confirmations = Vec::with_capacity(pending.len());
        for m in &pending {
            let properties = BasicProperties {
                message_id: ShortStr::new(m.id.to_string()).ok(),
                delivery_mode: Some(2),
                ..Default::default()
            };
            confirmations.push(
                publisher
                    .publish_with(m.body.clone(), exchange, routing_key, &properties)
                    .await?,
            );
        }
        let results = join_all(confirmations).await;
        let mut nacked = Vec::new();
        for (message, result) in pending.into_iter().zip(results) {
            match result {
                Ok(()) => lock(report).confirmed += 1,
                Err(Error::ServerSentNack) => {
                    lock(report).nacks += 1;
                    nacked.push(message);
                }
                Err(other) => return Err(other),
            }
        }
        if nacked.is_empty() {
            return Ok(());
        }
        if round == NACK_ROUNDS {
            return Err(Error::ServerSentNack);
        }
        round += 1;
        runtime.sleep_until(runtime.now() + NACK_PAUSE).await;
        pending = nacked;
    }
}

/// What a consumer found in the queue.
#[derive(Clone, Debug, Default)]
pub struct Drained {
    /// Every distinct message id.
    pub ids: BTreeSet<u64>,
    /// Deliveries of an id already seen.
    pub duplicates: usize,
}

/// Consumes with `consumer` until `expected` distinct ids were seen, then
/// until the queue stays quiet for `quiet` (to count late duplicates),
/// acking everything. Fails with [`Error::Timeout`] if the ids don't all
/// arrive within `limit`.
pub async fn drain_ids<T: Clone + Send + Sync + 'static>(
    runtime: &Arc<dyn Runtime>,
    consumer: &RecoveringConsumer<T>,
    expected: usize,
    quiet: Duration,
    limit: Duration,
) -> Result<Drained, Error> {
    let mut drained = Drained::default();
    let deadline = runtime.now() + limit;
    loop {
        let wait = if drained.ids.len() >= expected {
            runtime.now() + quiet
        } else {
            deadline
        };
        let next = Box::pin(consumer.next());
        let message = match select(next, runtime.sleep_until(wait)).await {
            Either::Left((message, _)) => message?,
            Either::Right(_) if drained.ids.len() >= expected => break,
            Either::Right(_) => return Err(Error::Timeout(limit)),
        };
        let id = message
            .properties
            .message_id
            .as_ref()
            .and_then(|id| id.as_str().parse::<u64>().ok());
        match id {
            Some(id) if !drained.ids.insert(id) => drained.duplicates += 1,
            _ => {}
        }
        // `false` when its connection is gone: RabbitMQ delivers it again,
        // and it counts as a duplicate then.
        consumer.ack(message.tag);
    }
    Ok(drained)
}
