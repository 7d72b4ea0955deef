//! The producer and consumer loops.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use carehare_tokio::{AMQPValue, BasicProperties, Error, FieldTable, Message};
use tokio::sync::watch;
use tokio::time::Instant;

use super::link::{Confirm, Link, Sub};
use super::stats::{Counters, epoch_nanos, latency_micros};

/// The header that carries the publish time when the body is too small.
pub(super) const STAMP_HEADER: &str = "carehare-perf-ts";

/// Where the publish time goes, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stamp {
    /// Not stamped (sequential runs: latency would only measure the phase).
    None,
    /// The first 8 bytes of the body, little-endian epoch nanoseconds.
    Body,
    /// The `carehare-perf-ts` header (bodies under 8 bytes).
    Header,
}

impl Stamp {
    /// How a body of `size` bytes is stamped, if `measure`.
    pub(super) fn for_size(size: usize, measure: bool) -> Self {
        match (measure, size >= 8) {
            (false, _) => Stamp::None,
            (true, true) => Stamp::Body,
            (true, false) => Stamp::Header,
        }
    }
}

/// One producer's job.
pub(super) struct Producer {
    /// Its connection.
    pub connection: Link,
    /// The exchange it publishes to ("" for the default exchange).
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Messages to publish; `None`: until told to stop.
    pub count: Option<u64>,
    /// Messages per second at most.
    pub rate: Option<f64>,
    /// Unconfirmed publishes at most.
    pub window: usize,
    /// Whether the run waits for confirms: if so its publishing ends with
    /// the last confirm, else with the last send.
    pub confirms: bool,
    /// Publish without confirms at all (`-c 0`), not in confirm mode.
    pub unconfirmed: bool,
    /// Publish with `mandatory`.
    pub mandatory: bool,
    /// Body size in bytes.
    pub size: usize,
    /// Where the publish time goes.
    pub stamp: Stamp,
    /// delivery-mode 2.
    pub persistent: bool,
}

impl Producer {
    /// Publishes until its count is done or `stop_producers`, then waits
    /// for the outstanding confirms (with confirms off but `-f mandatory`,
    /// in confirm mode, too: they say what consumers should get). Returns
    /// when publishing ended: the last confirm, or with confirms off the
    /// last send. Without confirms at all, see
    /// [`run_unconfirmed`](Self::run_unconfirmed).
    pub(super) async fn run(self, counters: Arc<Counters>) -> Result<Instant, Error> {
        if self.unconfirmed {
            return self.run_unconfirmed(counters).await;
        }
        let publisher = self.connection.publisher(self.window);
        // Unstamped bodies are one shared buffer: each publish only bumps
        // a reference count.
        let fixed = Bytes::from(vec![0u8; self.size]);
        let base = self.base_properties();
        let mut pending: VecDeque<Confirm> = VecDeque::with_capacity(self.window + 1);
        let (exchange, key) = (self.exchange.as_str(), self.routing_key.as_str());
        let start = Instant::now();
        let mut sent = 0u64;
        while self.count.is_none_or(|n| sent < n) {
            if !self.pace(start, sent, &counters).await {
                break;
            }
            let (body, properties) = self.message(&fixed, &base);
            let confirmation = publisher
                .publish(body, exchange, key, &properties, self.mandatory)
                .await?;
            counters.sent.fetch_add(1, Ordering::Relaxed);
            pending.push_back(confirmation);
            settle_ready(&mut pending, &counters)?;
            sent += 1;
        }
        let last_send = Instant::now();
        for confirmation in pending {
            settle(confirmation.await, &counters)?;
        }
        Ok(if self.confirms {
            Instant::now()
        } else {
            last_send
        })
    }

    /// [`run`](Self::run) without confirms: each publish returns once it
    /// is queued for the socket. On a recovering link a lost connection
    /// loses what it had not delivered (nothing says what: that is what
    /// unconfirmed means), and publishing goes on on the next one.
    async fn run_unconfirmed(self, counters: Arc<Counters>) -> Result<Instant, Error> {
        let fixed = Bytes::from(vec![0u8; self.size]);
        let base = self.base_properties();
        let (exchange, key) = (self.exchange.as_str(), self.routing_key.as_str());
        let mut connection = self.connection.live_connection().await?;
        let start = Instant::now();
        let mut sent = 0u64;
        while self.count.is_none_or(|n| sent < n) {
            if !self.pace(start, sent, &counters).await {
                break;
            }
            let (body, properties) = self.message(&fixed, &base);
            loop {
                match connection
                    .publish_unconfirmed(body.clone(), exchange, key, &properties)
                    .await
                {
                    Ok(()) => break,
                    // Not queued: it goes out on the next connection.
                    Err(Error::ConnectionClosed(_)) if self.connection.recovers() => {
                        connection = self.connection.live_connection().await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            counters.sent.fetch_add(1, Ordering::Relaxed);
            sent += 1;
        }
        Ok(Instant::now())
    }

    fn base_properties(&self) -> BasicProperties {
        BasicProperties {
            delivery_mode: self.persistent.then_some(2),
            ..Default::default()
        }
    }

    /// Waits for the next publish's turn under `--rate`. Returns false when
    /// producers are told to stop.
    async fn pace(&self, start: Instant, sent: u64, counters: &Counters) -> bool {
        if let Some(rate) = self.rate {
            // A timer only when ahead of schedule: when behind, send.
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        !counters.stop_producers.load(Ordering::Relaxed)
    }

    /// The next message's body and properties, stamped as asked.
    /// Unstamped bodies are `fixed` itself: each publish only bumps a
    /// reference count.
    fn message<'a>(
        &self,
        fixed: &Bytes,
        base: &'a BasicProperties,
    ) -> (Bytes, Cow<'a, BasicProperties>) {
        match self.stamp {
            Stamp::None => (fixed.clone(), Cow::Borrowed(base)),
            Stamp::Body => {
                let mut body = BytesMut::with_capacity(self.size);
                body.put_u64_le(epoch_nanos());
                body.extend_from_slice(&fixed[8..]);
                (body.freeze(), Cow::Borrowed(base))
            }
            Stamp::Header => {
                let mut headers = FieldTable::default();
                let nanos = i64::try_from(epoch_nanos()).unwrap_or(i64::MAX);
                headers.insert(STAMP_HEADER.into(), AMQPValue::LongLongInt(nanos));
                let properties = BasicProperties {
                    headers: Some(headers),
                    ..base.clone()
                };
                (fixed.clone(), Cow::Owned(properties))
            }
        }
    }
}

/// Counts the confirms that have already come, oldest first, without
/// waiting: the window already bounds how many are outstanding.
fn settle_ready(pending: &mut VecDeque<Confirm>, counters: &Counters) -> Result<(), Error> {
    let mut cx = Context::from_waker(Waker::noop());
    while let Some(front) = pending.front_mut() {
        match Pin::new(front).poll(&mut cx) {
            Poll::Ready(result) => {
                pending.pop_front();
                settle(result, counters)?;
            }
            Poll::Pending => break,
        }
    }
    Ok(())
}

fn settle(result: Result<(), Error>, counters: &Counters) -> Result<(), Error> {
    match result {
        Ok(()) => {
            counters.confirmed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(Error::ServerSentNack | Error::Returned(_)) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// One consumer's job.
pub(super) struct Consumer {
    /// The consumer, already registered with RabbitMQ.
    pub consumer: Sub,
    /// Ack (multiple) every this many deliveries.
    pub multi_ack_every: u16,
    /// Whether to read publish times.
    pub stamp: Stamp,
    /// Stop when this many messages were consumed in all.
    pub target: Option<u64>,
}

impl Consumer {
    /// Consumes until `target` messages were consumed by all consumers or
    /// `stop` turns true; acks what it holds and closes. Returns when it
    /// took its last message.
    pub(super) async fn run(
        self,
        counters: Arc<Counters>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Option<Instant>, Error> {
        let every = u64::from(self.multi_ack_every.max(1));
        let mut unacked = 0u64;
        let mut last_tag = None;
        let mut last_at = None;
        let outcome = loop {
            if *stop.borrow() {
                break Ok(());
            }
            let message = tokio::select! {
                biased;
                _ = stop.changed() => break Ok(()),
                m = self.consumer.next() => m,
            };
            let (message, tag) = match message {
                Ok(m) => m,
                Err(e) => break Err(e),
            };
            last_tag = Some(tag);
            unacked += 1;
            if unacked >= every {
                self.consumer.ack(tag, every > 1);
                unacked = 0;
            }
            last_at = Some(Instant::now());
            if self.stamp != Stamp::None {
                record_latency(&message, &counters);
            }
            let consumed = counters.consumed.fetch_add(1, Ordering::Relaxed) + 1;
            if self.target.is_some_and(|t| consumed >= t) {
                break Ok(());
            }
        };
        if let Some(tag) = last_tag.filter(|_| unacked > 0) {
            self.consumer.ack(tag, true);
        }
        self.consumer.close().await;
        outcome.map(|()| last_at)
    }
}

fn record_latency(message: &Message, counters: &Counters) {
    let sent = match message.body.get(..8) {
        Some(stamp) if message.properties.headers.is_none() => {
            let mut b = [0u8; 8];
            b.copy_from_slice(stamp);
            u64::from_le_bytes(b)
        }
        _ => match message
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.inner().get(STAMP_HEADER))
        {
            Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
            _ => return,
        },
    };
    if let Some(micros) = latency_micros(sent, epoch_nanos()) {
        counters.latency().record(micros);
    }
}
