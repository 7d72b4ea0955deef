//! Publishing: confirms, mandatory returns, the in-flight window, and
//! holding publishes while RabbitMQ blocks the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use carehare_core::error::ConnectionError;
use carehare_core::method::{BasicPublish, BasicReturn};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{ChannelId, ShortStr};
use futures_channel::oneshot;

use crate::connection::Connection;
use crate::error::Error;
use crate::shared::{Inner, Shared, short};

/// A mandatory message RabbitMQ could not route to any queue, as it came
/// back in `basic.return`.
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// use carehare_client::Error;
/// if let Err(Error::Returned(returned)) = connection.publish_mandatory("x", "", "nowhere", &Default::default()).await {
///     println!("{} {}: {:?}", returned.reply_code, returned.reply_text, returned.body);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Returned {
    /// Why, e.g. 312.
    pub reply_code: u16,
    /// Why, e.g. `NO_ROUTE`.
    pub reply_text: String,
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// Its routing key.
    pub routing_key: ShortStr,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
}

/// A message on its way out.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Bytes,
    pub(crate) mandatory: bool,
}

type ConfirmSender = oneshot::Sender<Result<(), Error>>;

/// One unconfirmed publish.
pub(crate) struct PendingConfirm {
    tx: ConfirmSender,
    /// Kept for mandatory publishes only, to match a `basic.return`;
    /// boxed so the confirm map's entries stay small (they are moved as
    /// the map's nodes split and merge).
    outgoing: Option<Box<Outgoing>>,
    returned: Option<Box<Returned>>,
    /// The in-flight window slot, freed when this is settled.
    _permit: Option<Permit>,
}

impl PendingConfirm {
    pub(crate) fn new(
        tx: ConfirmSender,
        outgoing: Option<Outgoing>,
        permit: Option<Permit>,
    ) -> Self {
        Self {
            tx,
            outgoing: outgoing.map(Box::new),
            returned: None,
            _permit: permit,
        }
    }

    /// Settles with an ack (`true`) or a nack.
    pub(crate) fn settle(self, ack: bool) {
        let result = match (ack, self.returned) {
            (true, None) => Ok(()),
            (true, Some(returned)) => Err(Error::Returned(returned)),
            (false, _) => Err(Error::ServerSentNack),
        };
        let _ = self.tx.send(result);
    }

    pub(crate) fn fail(self, why: Error) {
        let _ = self.tx.send(Err(why));
    }

    /// Marks this publish as returned if `r` is its message.
    pub(crate) fn claim_return(
        &mut self,
        r: &BasicReturn,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> bool {
        let Some(o) = &self.outgoing else {
            return false;
        };
        if self.returned.is_some()
            || o.exchange != r.exchange
            || o.routing_key != r.routing_key
            || o.body != body
            || !same_but_reply_to(&o.properties, properties)
        {
            return false;
        }
        self.returned = Some(Box::new(Returned {
            reply_code: r.reply_code,
            reply_text: r.reply_text.to_string(),
            exchange: r.exchange.clone(),
            routing_key: r.routing_key.clone(),
            properties: properties.clone(),
            body: body.clone(),
        }));
        true
    }
}

/// Whether two property sets are equal apart from `reply_to`, which
/// RabbitMQ rewrites for direct reply-to (`amq.rabbitmq.reply-to` becomes
/// the caller's real reply address) before it returns a message.
fn same_but_reply_to(sent: &BasicProperties, returned: &BasicProperties) -> bool {
    let mut returned = returned.clone();
    returned.reply_to.clone_from(&sent.reply_to);
    *sent == returned
}

/// A publish waiting for RabbitMQ to unblock the connection.
pub(crate) struct Held {
    outgoing: Outgoing,
    tx: ConfirmSender,
    permit: Option<Permit>,
}

impl Held {
    pub(crate) fn fail(self, why: Error) {
        let _ = self.tx.send(Err(why));
    }
}

impl Inner {
    /// Queues a publish now, or holds it while the connection is blocked.
    fn enqueue_publish(&mut self, outgoing: Outgoing, tx: ConfirmSender, permit: Option<Permit>) {
        if let Some(e) = self.closed_error() {
            let _ = tx.send(Err(e));
        } else if self.blocked.is_some() {
            self.held.push_back(Held {
                outgoing,
                tx,
                permit,
            });
        } else {
            self.send_publish(outgoing, tx, permit);
        }
    }

    fn send_publish(&mut self, outgoing: Outgoing, tx: ConfirmSender, permit: Option<Permit>) {
        let queued = self.queue_publish(
            &outgoing.exchange,
            &outgoing.routing_key,
            &outgoing.properties,
            &outgoing.body,
            outgoing.mandatory,
        );
        let keep = outgoing.mandatory.then_some(outgoing);
        self.track_publish(queued, tx, keep, permit);
    }

    /// Queues the frames of a publish; returns its channel and sequence
    /// number.
    fn queue_publish(
        &mut self,
        exchange: &ShortStr,
        routing_key: &ShortStr,
        properties: &BasicProperties,
        body: &Bytes,
        mandatory: bool,
    ) -> Result<(ChannelId, Option<u64>), Error> {
        let publish = BasicPublish {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            mandatory,
            ..Default::default()
        };
        let ch = self.publish_channel(exchange.as_str())?;
        let seq = self.conn.publish_bytes(ch, &publish, properties, body)?;
        Ok((ch, seq))
    }

    /// Registers a queued publish's confirm (or fails it).
    fn track_publish(
        &mut self,
        queued: Result<(ChannelId, Option<u64>), Error>,
        tx: ConfirmSender,
        outgoing: Option<Outgoing>,
        permit: Option<Permit>,
    ) {
        match queued {
            Ok((ch, Some(seq))) => {
                let entry = PendingConfirm::new(tx, outgoing, permit);
                if let Some(p) = self.publishers.get_mut(&ch) {
                    p.pending.insert(seq, entry);
                }
            }
            // Publish channels are always in confirm mode; no sequence
            // number would mean no confirm will ever come.
            Ok((_, None)) => {
                let _ = tx.send(Err(Error::ConnectionClosed(
                    ConnectionError::ClosedByClient,
                )));
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    }

    /// A `shortstr` for `s`, reusing the last one made for the same
    /// string: most callers publish to a few routing keys, and this saves
    /// an allocation per publish.
    fn short_cached(&mut self, s: &str, exchange: bool) -> Result<ShortStr, Error> {
        let slot = if exchange {
            &mut self.last_exchange
        } else {
            &mut self.last_routing_key
        };
        if let Some(k) = slot
            && k.as_str() == s
        {
            return Ok(k.clone());
        }
        let k = short(s)?;
        *slot = Some(k.clone());
        Ok(k)
    }

    /// Sends what was held while blocked, in order.
    pub(crate) fn release_held(&mut self) {
        while self.blocked.is_none() {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.send_publish(h.outgoing, h.tx, h.permit);
        }
    }
}

pub(crate) fn publish(
    shared: &Arc<Shared>,
    body: Bytes,
    exchange: &str,
    routing_key: &str,
    properties: &BasicProperties,
    mandatory: bool,
    permit: Option<Permit>,
) -> Confirmation {
    let (tx, rx) = oneshot::channel();
    let mut inner = shared.lock();
    // Queued bytes mean the driver was woken for them and has not taken
    // them yet (it takes them under this lock): it will send this publish
    // with them, so skip the wake-up.
    let driver_due = inner.conn.has_transmit();
    let names = inner
        .short_cached(exchange, true)
        .and_then(|e| Ok((e, inner.short_cached(routing_key, false)?)));
    match names {
        Ok((exchange, routing_key)) => {
            if mandatory || inner.blocked.is_some() || inner.outcome.is_some() {
                let outgoing = Outgoing {
                    exchange,
                    routing_key,
                    properties: properties.clone(),
                    body,
                    mandatory,
                };
                inner.enqueue_publish(outgoing, tx, permit);
            } else {
                // The common case: frames straight into the write buffer,
                // nothing kept but the confirm.
                let queued = inner.queue_publish(&exchange, &routing_key, properties, &body, false);
                inner.track_publish(queued, tx, None, permit);
            }
            drop(inner);
            if !driver_due {
                shared.wake_driver();
            }
        }
        Err(e) => {
            drop(inner);
            let _ = tx.send(Err(e));
        }
    }
    Confirmation {
        rx,
        shared: shared.clone(),
    }
}

/// The confirm of one publish. See [`Connection::publish`].
///
/// Publishes are queued when `publish` is called, so keep several
/// confirmations and await them together:
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// let confirmations: Vec<_> = (0..100).map(|i| connection.publish(format!("{i}"), "", "my-queue")).collect();
/// for confirmation in confirmations {
///     confirmation.await?;
/// }
/// # Ok(()) }
/// ```
#[must_use = "a publish is only known to be safe once its confirmation resolves"]
pub struct Confirmation {
    rx: oneshot::Receiver<Result<(), Error>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmation").finish_non_exhaustive()
    }
}

impl Future for Confirmation {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The sender went without a word: the connection is gone.
            Poll::Ready(Err(_)) => {
                Poll::Ready(Err(self.shared.lock().closed_error().unwrap_or(
                    Error::ConnectionClosed(ConnectionError::ClosedByClient),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A slot in a [`Publisher`]'s window, freed when its publish is settled.
pub(crate) struct Permit {
    _guard: async_lock::SemaphoreGuardArc,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Publishes with at most `max_in_flight` unconfirmed messages: when the
/// window is full, `publish` waits for a confirm. Memory stays bounded
/// however slow the broker is. Made by [`Connection::publisher`].
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// let publisher = connection.publisher(1000);
/// let mut confirmations = Vec::new();
/// for i in 0..100_000 {
///     // Waits while 1,000 publishes are unconfirmed.
///     confirmations.push(publisher.publish(format!("{i}"), "", "my-queue").await?);
/// }
/// for confirmation in confirmations {
///     confirmation.await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    connection: Connection,
    window: Arc<async_lock::Semaphore>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl Connection {
    /// A publisher with a window of `max_in_flight` unconfirmed messages
    /// (at least 1).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let publisher = connection.publisher(100);
    /// publisher.publish("hello", "", "my-queue").await?.await?;
    /// # Ok(()) }
    /// ```
    pub fn publisher(&self, max_in_flight: usize) -> Publisher {
        let max_in_flight = max_in_flight.max(1);
        Publisher {
            connection: self.clone(),
            window: Arc::new(async_lock::Semaphore::new(max_in_flight)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight,
        }
    }
}

impl Publisher {
    /// Unconfirmed publishes right now.
    ///
    /// ```no_run
    /// # fn f(publisher: carehare_client::Publisher) {
    /// assert!(publisher.in_flight() <= publisher.max_in_flight());
    /// # }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The window size.
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// assert_eq!(connection.publisher(10).max_in_flight(), 10);
    /// # }
    /// ```
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    async fn permit(&self) -> Permit {
        let guard = self.window.acquire_arc().await;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Permit {
            _guard: guard,
            in_flight: self.in_flight.clone(),
        }
    }

    /// Waits for room in the window, queues the message, and returns its
    /// confirmation (see [`Connection::publish`]).
    ///
    /// ```no_run
    /// # async fn f(publisher: carehare_client::Publisher) -> Result<(), carehare_client::Error> {
    /// let confirmation = publisher.publish("hello", "", "my-queue").await?;
    /// confirmation.await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Confirmation, Error> {
        self.publish_with(body, exchange, routing_key, &BasicProperties::default())
            .await
    }

    /// [`publish`](Self::publish) with properties.
    ///
    /// ```no_run
    /// # async fn f(publisher: carehare_client::Publisher) -> Result<(), carehare_client::Error> {
    /// let properties = carehare_client::BasicProperties { delivery_mode: Some(2), ..Default::default() };
    /// publisher.publish_with("hello", "", "my-queue", &properties).await?.await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_with(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<Confirmation, Error> {
        self.send(body.into(), exchange, routing_key, properties, false)
            .await
    }

    /// [`Connection::publish_mandatory`] within the window.
    ///
    /// ```no_run
    /// # async fn f(publisher: carehare_client::Publisher) -> Result<(), carehare_client::Error> {
    /// publisher.publish_mandatory("hello", "", "my-queue", &Default::default()).await?.await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_mandatory(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<Confirmation, Error> {
        self.send(body.into(), exchange, routing_key, properties, true)
            .await
    }

    /// Waits for a window slot, then queues the publish holding it.
    async fn send(
        &self,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
    ) -> Result<Confirmation, Error> {
        let permit = self.permit().await;
        if let Some(e) = self.connection.shared().lock().closed_error() {
            return Err(e);
        }
        Ok(publish(
            self.connection.shared(),
            body,
            exchange,
            routing_key,
            properties,
            mandatory,
            Some(permit),
        ))
    }
}
