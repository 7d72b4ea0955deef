//! The reconnect recipe: a publisher that survives the loss of its node.
//!
//! carehare's `Connection` never reconnects by itself (see
//! `docs/reconnect.md`): a lost connection fails every pending operation
//! with a typed error, and what to do next is the application's decision.
//! This module is that decision for the common case, "every message must
//! reach the queue at least once":
//!
//! 1. connect to any node of the cluster ([`ConnectOptions::from_urls`]
//!    tries each in turn), retrying with exponential backoff;
//! 2. publish with confirms, keeping every message until its confirm
//!    arrives;
//! 3. when the connection is lost (or a confirm does not come in time),
//!    drop it, reconnect, and re-publish everything not confirmed.
//!
//! A message whose confirm was lost in flight may already be in the queue:
//! re-publishing it makes a duplicate, so consumers must be idempotent
//! (here: each message carries an id in `message_id` and in its body).
//! Nothing confirmed is ever lost when the queue is a quorum queue.
//!
//! [`ConnectOptions::from_urls`]: carehare_client::ConnectOptions::from_urls

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carehare_client::carehare_core::types::ShortStr;
use carehare_client::{
    Address, BasicProperties, ConnectOptions, Connection, ConsumerOptions, Error, Runtime,
    connect_with_runtime,
};
use futures_util::future::{Either, join_all, select};

/// How hard to try.
///
/// ```
/// let settings = carehare_examples::reconnect::Settings::default();
/// assert!(settings.backoff_max >= settings.backoff_initial);
/// ```
#[derive(Clone, Debug)]
pub struct Settings {
    /// The first wait after a failed connect.
    pub backoff_initial: Duration,
    /// Waits double up to this.
    pub backoff_max: Duration,
    /// Give up (with the last connect error) after trying this long without
    /// a connection.
    pub give_up_after: Duration,
    /// A batch whose confirms take longer than this counts as a lost
    /// connection: it is re-published on a new one. Heartbeats catch a dead
    /// peer too, but only after two intervals.
    pub confirm_timeout: Duration,
    /// After this many rounds in a row in which RabbitMQ nacked every
    /// message, reconnect (see [`ReliablePublisher::publish`]).
    pub nack_rounds_before_reconnect: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
            confirm_timeout: Duration::from_secs(30),
            nack_rounds_before_reconnect: 3,
        }
    }
}

/// What happened while publishing.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Messages confirmed by RabbitMQ.
    pub confirmed: usize,
    /// Connections lost (each followed by a reconnect).
    pub failovers: usize,
    /// Publishes sent again after a failover or a nack.
    pub republished: usize,
    /// `basic.nack`s received (each message was re-published).
    pub nacks: usize,
    /// Fresh connections made because every publish kept being nacked.
    pub reconnects_after_nacks: usize,
    /// Every address connected to, in order.
    pub connected_to: Vec<Address>,
    /// For each failover: from noticing the loss to the first confirm on
    /// the new connection.
    pub outages: Vec<Duration>,
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

/// Publishes with confirms, reconnecting with backoff and re-publishing
/// what was not confirmed. See the module docs.
pub struct ReliablePublisher {
    runtime: Arc<dyn Runtime>,
    options: ConnectOptions,
    settings: Settings,
    connection: Option<Connection>,
    report: Report,
    /// When the current outage began, until the first confirm after it.
    lost_at: Option<Instant>,
}

impl ReliablePublisher {
    /// A publisher that connects (lazily) with `options`; give it every
    /// node of the cluster ([`ConnectOptions::from_urls`]).
    pub fn new(runtime: Arc<dyn Runtime>, options: ConnectOptions, settings: Settings) -> Self {
        Self {
            runtime,
            options,
            settings,
            connection: None,
            report: Report::default(),
            lost_at: None,
        }
    }

    /// What happened so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The current connection, or a new one: every address is tried, and
    /// the whole round again after a backoff, until `give_up_after`.
    pub async fn connection(&mut self) -> Result<Connection, Error> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let started = Instant::now();
        let mut wait = self.settings.backoff_initial;
        loop {
            match connect_with_runtime(self.runtime.clone(), self.options.clone()).await {
                Ok(connection) => {
                    self.report.connected_to.push(connection.address().clone());
                    self.connection = Some(connection.clone());
                    return Ok(connection);
                }
                // Bad credentials or a missing vhost won't fix themselves.
                Err(e @ Error::ConnectionClosed(_))
                    if e.reply_code().is_some_and(|c| c == 403 || c == 530) =>
                {
                    return Err(e);
                }
                Err(e) if started.elapsed() + wait > self.settings.give_up_after => return Err(e),
                Err(_) => {
                    self.sleep(wait).await;
                    wait = (wait * 2).min(self.settings.backoff_max);
                }
            }
        }
    }

    /// Publishes `messages` to `exchange` with `routing_key` and returns
    /// once RabbitMQ has confirmed every one of them, reconnecting and
    /// re-publishing as often as needed. Fails only when no node can be
    /// reached for `give_up_after`, or when RabbitMQ refuses the publish
    /// itself (e.g. 404: no such exchange).
    ///
    /// Nacked messages are re-published after a backoff. When every message
    /// of several rounds in a row is nacked, the connection is replaced: on
    /// RabbitMQ 3.10 a channel opened on a surviving node while a quorum
    /// queue was still electing its new leader was seen to nack every
    /// later publish to that queue, for good; a new channel does not.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        messages: impl IntoIterator<Item = Outgoing>,
    ) -> Result<(), Error> {
        let mut unconfirmed: VecDeque<Outgoing> = messages.into_iter().collect();
        let mut first_round = true;
        let mut nack_rounds = 0;
        let mut nack_wait = self.settings.backoff_initial;
        while !unconfirmed.is_empty() {
            if !first_round {
                self.report.republished += unconfirmed.len();
            }
            first_round = false;
            let connection = self.connection().await?;
            let confirmations: Vec<_> = unconfirmed
                .iter()
                .map(|m| {
                    let properties = BasicProperties {
                        message_id: ShortStr::new(m.id.to_string()).ok(),
                        delivery_mode: Some(2),
                        ..Default::default()
                    };
                    connection.publish_with(m.body.clone(), exchange, routing_key, &properties)
                })
                .collect();
            let deadline = Instant::now() + self.settings.confirm_timeout;
            let results =
                match select(join_all(confirmations), self.runtime.sleep_until(deadline)).await {
                    Either::Left((results, _)) => results,
                    Either::Right(_) => {
                        // Treat the silence as a dead node.
                        self.lose_connection().await;
                        continue;
                    }
                };
            let mut lost = false;
            let mut confirmed_any = false;
            let mut nacked_any = false;
            let mut retry = VecDeque::new();
            for (message, result) in unconfirmed.drain(..).zip(results) {
                match result {
                    Ok(()) => {
                        confirmed_any = true;
                        self.report.confirmed += 1;
                        if let Some(at) = self.lost_at.take() {
                            self.report.outages.push(at.elapsed());
                        }
                    }
                    Err(Error::ServerSentNack) => {
                        nacked_any = true;
                        self.report.nacks += 1;
                        retry.push_back(message);
                    }
                    // The connection went (node stopped, network, heartbeat):
                    // this message may or may not be in the queue.
                    Err(Error::ConnectionClosed(_)) => {
                        lost = true;
                        retry.push_back(message);
                    }
                    Err(other) => return Err(other),
                }
            }
            unconfirmed = retry;
            if lost {
                self.lose_connection().await;
                continue;
            }
            if nacked_any && !confirmed_any {
                nack_rounds += 1;
                if nack_rounds >= self.settings.nack_rounds_before_reconnect {
                    nack_rounds = 0;
                    self.report.reconnects_after_nacks += 1;
                    self.drop_connection().await;
                }
                // Don't hammer a queue that refuses: back off.
                self.sleep(nack_wait).await;
                nack_wait = (nack_wait * 2).min(self.settings.backoff_max);
            } else {
                nack_rounds = 0;
                nack_wait = self.settings.backoff_initial;
            }
        }
        Ok(())
    }

    /// Closes the current connection (if it is not gone already) and counts
    /// a failover.
    async fn lose_connection(&mut self) {
        if self.connection.is_some() {
            self.report.failovers += 1;
            self.lost_at.get_or_insert_with(Instant::now);
            self.drop_connection().await;
        }
    }

    /// Closes the current connection, if any, within 2 s.
    async fn drop_connection(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Best effort: a dead connection fails this at once.
            let close = Box::pin(connection.close());
            let limit = self
                .runtime
                .sleep_until(Instant::now() + Duration::from_secs(2));
            let _ = select(close, limit).await;
        }
    }

    /// Closes the connection.
    pub async fn close(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }

    async fn sleep(&self, d: Duration) {
        self.runtime.sleep_until(Instant::now() + d).await;
    }
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

/// What a consumer found in the queue.
#[derive(Clone, Debug, Default)]
pub struct Drained {
    /// Every distinct message id.
    pub ids: BTreeSet<u64>,
    /// Deliveries of an id already seen.
    pub duplicates: usize,
}

/// Consumes `queue` until `expected` distinct ids were seen, then until the
/// queue stays quiet for `quiet` (to count late duplicates), acking
/// everything. Fails with [`Error::Timeout`] if the ids don't all arrive
/// within `limit`.
pub async fn drain_ids(
    runtime: &Arc<dyn Runtime>,
    connection: &Connection,
    queue: &str,
    expected: usize,
    quiet: Duration,
    limit: Duration,
) -> Result<Drained, Error> {
    let consumer = connection
        .consumer(
            queue,
            ConsumerOptions {
                prefetch_count: 500,
                ..Default::default()
            },
        )
        .await?;
    let mut drained = Drained::default();
    let deadline = Instant::now() + limit;
    loop {
        let wait = if drained.ids.len() >= expected {
            Instant::now() + quiet
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
        consumer.ack(message.delivery_tag);
    }
    consumer.close().await;
    Ok(drained)
}
