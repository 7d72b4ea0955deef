//! The user-facing connection handle: declarations, publishing entry
//! points, server facts and the connection's end.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use carehare_core::Reply;
use carehare_core::Tuning;
use carehare_core::error::ConnectionError;
use carehare_core::method::{
    ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeUnbind, Method, QueueBind, QueueDeclare,
    QueueDeclareOk, QueueDelete, QueuePurge, QueueUnbind,
};
use carehare_core::properties::BasicProperties;
use carehare_core::types::FieldTable;

use super::blocking::BlockingChanges;
use super::confirmation::Confirmation;
use super::wait::{reply, unexpected};
use crate::address::Address;
use crate::error::{Error, short};
use crate::message::NO_PROPERTIES;
use crate::runtime::Runtime;
use crate::state::Shared;

/// Options for [`Connection::queue_declare`].
///
/// ```
/// use carehare_client::{AMQPValue, FieldTable, QueueOptions};
/// let mut arguments = FieldTable::default();
/// arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(60_000));
/// let options = QueueOptions { durable: true, arguments, ..Default::default() };
/// assert!(!options.exclusive);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueOptions {
    /// Only check that the queue exists (404 if it doesn't).
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Used by this connection only, and deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// `x-message-ttl`, `x-max-length`, `x-queue-type`...
    pub arguments: FieldTable,
}

impl QueueOptions {
    /// An exclusive queue (the connection's own).
    ///
    /// ```
    /// assert!(carehare_client::QueueOptions::exclusive().exclusive);
    /// ```
    pub fn exclusive() -> Self {
        Self {
            exclusive: true,
            ..Self::default()
        }
    }
}

/// Options for [`Connection::exchange_declare`].
///
/// ```
/// let options = carehare_client::ExchangeOptions { durable: true, ..Default::default() };
/// assert!(!options.auto_delete);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeOptions {
    /// Only check that the exchange exists.
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// e.g. `alternate-exchange`.
    pub arguments: FieldTable,
}

/// A connection to RabbitMQ. Cheap to clone; the connection closes when
/// [`close`](Self::close) is called or the last clone is dropped.
///
/// Every operation is a future that resolves with the operation's own
/// outcome: a broker refusal is [`Error::ChannelClosedByServer`] and leaves
/// the connection usable.
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// use carehare_client::{Error, QueueOptions};
/// match connection.queue_declare("my-queue", QueueOptions { passive: true, ..Default::default() }).await {
///     Ok(ok) => println!("{} messages waiting", ok.message_count),
///     Err(Error::ChannelClosedByServer(reason)) if reason.code == 404 => println!("no such queue"),
///     Err(other) => return Err(other),
/// }
/// // The connection is still usable after a refusal.
/// connection.publish("hi", "", "my-queue").await?;
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// An operation's future (`queue_declare`, `queue_bind`, `update_secret`
/// and the others that wait for RabbitMQ's answer) sends its request when
/// it is first polled. Cancelling it (dropping it, e.g. when it loses a
/// `select!`) before then sends nothing; cancelling it after does not take
/// the request back: RabbitMQ carries it out, and only its answer is
/// lost. The short-lived channel it ran on is closed either way. To know
/// the outcome, await the operation to the end.
///
/// [`closed`](Self::closed) only watches, and [`close`](Self::close) has
/// started the close by its first poll: both are cancel-safe. A
/// [`publish`](Self::publish) is queued when called, before any await;
/// see [`Confirmation`] for what dropping its confirmation means.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

/// Closes the connection when the last [`Connection`] clone goes.
struct Handle {
    shared: Arc<Shared>,
    tuning: Tuning,
    /// The clock, and timers for timeouts in the API (e.g. RPC calls).
    runtime: Arc<dyn Runtime>,
    /// The address connected to, as configured.
    address: Address,
    /// The IP address and port it resolved to.
    peer_addr: SocketAddr,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared
            .lock()
            .close(self.runtime.now(), 200, "connection dropped");
        self.shared.wake_driver();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("tuning", &self.handle.tuning)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A handle on an open connection (the handshake is done).
    pub(crate) fn new(
        shared: Arc<Shared>,
        tuning: Tuning,
        runtime: Arc<dyn Runtime>,
        address: Address,
        peer_addr: SocketAddr,
    ) -> Self {
        Self {
            handle: Arc::new(Handle {
                shared,
                tuning,
                runtime,
                address,
                peer_addr,
            }),
        }
    }

    /// Adds `n` to `counter` of this connection's metrics, if any.
    pub(crate) fn count(&self, counter: crate::metrics::Counter, n: u64) {
        self.shared().lock().count(counter, n);
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    pub(crate) fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.handle.runtime
    }

    /// The negotiated `channel_max`, `frame_max` and `heartbeat`.
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// println!("heartbeat every {} s", connection.tuning().heartbeat);
    /// # }
    /// ```
    pub fn tuning(&self) -> Tuning {
        self.handle.tuning
    }

    /// The address this connection was made to, as configured (one of
    /// [`ConnectOptions::addresses`](crate::ConnectOptions::addresses)):
    /// with several addresses, the node that answered.
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// println!("connected to {}", connection.address());
    /// # }
    /// ```
    pub fn address(&self) -> &Address {
        &self.handle.address
    }

    /// The IP address and port connected to (what
    /// [`address`](Self::address) resolved to).
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// println!("connected to {}", connection.peer_addr());
    /// # }
    /// ```
    pub fn peer_addr(&self) -> SocketAddr {
        self.handle.peer_addr
    }

    /// Runs one method on a short-lived channel: open, call, close. The
    /// three are pipelined; only the reply is waited for.
    async fn on_temporary_channel(&self, method: Method) -> Result<Reply, Error> {
        let rx = self
            .shared()
            .lock()
            .on_temporary_channel(method)
            // A failed open may have queued a close for the channel.
            .inspect_err(|_| self.shared().wake_driver())?;
        self.shared().wake_driver();
        reply(self.shared(), rx).await
    }

    /// Declares a queue; returns its name (the server's choice when `name`
    /// is empty), message count and consumer count.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// use carehare_client::QueueOptions;
    /// let ok = connection.queue_declare("my-queue", QueueOptions::exclusive()).await?;
    /// println!("{} has {} messages", ok.queue, ok.message_count);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn queue_declare(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<QueueDeclareOk, Error> {
        let method = QueueDeclare {
            queue: short(name)?,
            passive: options.passive,
            durable: options.durable,
            exclusive: options.exclusive,
            auto_delete: options.auto_delete,
            arguments: options.arguments,
            ..Default::default()
        };
        match self.on_temporary_channel(method.into()).await? {
            Reply::Method(Method::QueueDeclareOk(ok)) => Ok(ok),
            _ => unexpected(),
        }
    }

    /// Declares an exchange of `kind` (`direct`, `fanout`, `topic`,
    /// `headers`, or a plugin's type).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// use carehare_client::ExchangeOptions;
    /// connection.exchange_declare("logs", "fanout", ExchangeOptions::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn exchange_declare(
        &self,
        name: &str,
        kind: &str,
        options: ExchangeOptions,
    ) -> Result<(), Error> {
        let method = ExchangeDeclare {
            exchange: short(name)?,
            kind: short(kind)?,
            passive: options.passive,
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            arguments: options.arguments,
            ..Default::default()
        };
        self.on_temporary_channel(method.into()).await.map(drop)
    }

    /// Binds `queue` to `exchange` with `routing_key` (and `arguments`, for
    /// headers exchanges).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.queue_bind("my-queue", "logs", "", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn queue_bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = QueueBind {
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            arguments,
            ..Default::default()
        };
        self.on_temporary_channel(method.into()).await.map(drop)
    }

    /// Removes a binding made by [`queue_bind`](Self::queue_bind).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.queue_unbind("my-queue", "logs", "", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn queue_unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = QueueUnbind {
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            arguments,
            ..Default::default()
        };
        self.on_temporary_channel(method.into()).await.map(drop)
    }

    /// Deletes an exchange; with `if_unused`, only if it has no bindings
    /// (406 PRECONDITION_FAILED otherwise).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.exchange_delete("logs", false).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn exchange_delete(&self, name: &str, if_unused: bool) -> Result<(), Error> {
        let method = ExchangeDelete {
            exchange: short(name)?,
            if_unused,
            ..Default::default()
        };
        self.on_temporary_channel(method.into()).await.map(drop)
    }

    /// Binds exchange `destination` to exchange `source` (RabbitMQ's
    /// exchange-to-exchange bindings).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.exchange_bind("audit", "events", "#", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn exchange_bind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = ExchangeBind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            arguments,
            ..Default::default()
        };
        self.on_temporary_channel(method.into()).await.map(drop)
    }

    /// Removes a binding made by [`exchange_bind`](Self::exchange_bind).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.exchange_unbind("audit", "events", "#", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn exchange_unbind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = ExchangeUnbind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            arguments,
            ..Default::default()
        };
        self.on_temporary_channel(method.into()).await.map(drop)
    }

    /// Deletes a queue and returns how many messages went with it. With
    /// `if_unused` / `if_empty`, RabbitMQ refuses (406) a queue that has
    /// consumers / messages.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let dropped = connection.queue_delete("my-queue", false, false).await?;
    /// println!("{dropped} messages deleted");
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn queue_delete(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, Error> {
        let method = QueueDelete {
            queue: short(name)?,
            if_unused,
            if_empty,
            ..Default::default()
        };
        match self.on_temporary_channel(method.into()).await? {
            Reply::Method(Method::QueueDeleteOk(ok)) => Ok(ok.message_count),
            _ => unexpected(),
        }
    }

    /// Removes every ready message from a queue and returns how many.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let purged = connection.queue_purge("my-queue").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn queue_purge(&self, name: &str) -> Result<u32, Error> {
        let method = QueuePurge {
            queue: short(name)?,
            ..Default::default()
        };
        match self.on_temporary_channel(method.into()).await? {
            Reply::Method(Method::QueuePurgeOk(ok)) => Ok(ok.message_count),
            _ => unexpected(),
        }
    }

    /// Replaces the connection's credential (`connection.update-secret`),
    /// e.g. a refreshed OAuth 2 token. RabbitMQ refuses it (closing the
    /// connection) for backends that cannot refresh, like the internal one.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.update_secret(b"new-token".to_vec(), "token refresh").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling does not undo it: see the [`Connection`'s cancel
    /// safety](Connection#cancel-safety).
    pub async fn update_secret(&self, secret: impl Into<Bytes>, reason: &str) -> Result<(), Error> {
        let rx = self.shared().lock().update_secret(secret.into(), reason)?;
        self.shared().wake_driver();
        reply(self.shared(), rx).await.map(drop)
    }

    /// The server's `connection.start` properties: `product`, `version`,
    /// `cluster_name`, `capabilities`...
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// use carehare_client::AMQPValue;
    /// if let Some(AMQPValue::LongString(v)) = connection.server_properties().inner().get("version") {
    ///     println!("RabbitMQ {}", String::from_utf8_lossy(v.as_bytes()));
    /// }
    /// # }
    /// ```
    pub fn server_properties(&self) -> FieldTable {
        self.shared().lock().server_properties().clone()
    }

    /// Whether the server advertises capability `name` (e.g.
    /// `"consumer_cancel_notify"`, `"per_consumer_qos"`).
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// assert!(connection.server_has_capability("publisher_confirms"));
    /// # }
    /// ```
    pub fn server_has_capability(&self, name: &str) -> bool {
        self.shared().lock().server_has_capability(name)
    }

    /// Why RabbitMQ is blocking publishes right now (a memory or disk
    /// alarm), or `None`. While blocked, publishes wait in the client
    /// instead of piling up in the socket, for as long as the alarm lasts
    /// unless [`ConnectionConfig::blocked_timeout`](crate::carehare_core::ConnectionConfig::blocked_timeout)
    /// bounds it: the connection then ends with
    /// [`ConnectionError::BlockedTimeout`], and every waiting publish
    /// fails with it.
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// if let Some(reason) = connection.blocked() {
    ///     eprintln!("publishing is blocked: {reason}");
    /// }
    /// # }
    /// ```
    pub fn blocked(&self) -> Option<String> {
        self.shared().lock().blocked()
    }

    /// A stream of blocked/unblocked changes. Changes that happen between
    /// two polls are coalesced to the latest state, so it never buffers.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) {
    /// use futures_util::StreamExt;
    /// use carehare_client::Blocking;
    /// let mut changes = connection.blocking_changes();
    /// while let Some(change) = changes.next().await {
    ///     match change {
    ///         Blocking::Blocked(reason) => eprintln!("blocked: {reason}"),
    ///         Blocking::Unblocked => eprintln!("unblocked"),
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn blocking_changes(&self) -> BlockingChanges {
        BlockingChanges::new(self.shared().clone())
    }

    /// Publishes `body` and returns a future for its confirm.
    ///
    /// The message is queued at once, before the future is awaited, so many
    /// publishes can be in flight. The future resolves when RabbitMQ acks
    /// it; fails with [`Error::ServerSentNack`] on a nack, and with
    /// [`Error::ChannelClosedByServer`] (e.g. 404 for a missing exchange)
    /// if the exchange's channel dies. The next publish to that exchange
    /// opens a fresh channel.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.publish("Hello, world!", "", "my-queue").await?;
    /// # Ok(()) }
    /// ```
    pub fn publish(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
    ) -> Confirmation {
        self.publish_with(body, exchange, routing_key, &NO_PROPERTIES)
    }

    /// [`publish`](Self::publish) with message properties.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// use carehare_client::BasicProperties;
    /// use carehare_client::carehare_core::types::ShortStr;
    /// let properties = BasicProperties {
    ///     content_type: Some(ShortStr::from_static("application/json")),
    ///     delivery_mode: Some(2),
    ///     ..Default::default()
    /// };
    /// connection.publish_with(r#"{"hello":"world"}"#, "", "my-queue", &properties).await?;
    /// # Ok(()) }
    /// ```
    pub fn publish_with(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Confirmation {
        Confirmation::publish(
            self.shared(),
            body.into(),
            exchange,
            routing_key,
            properties,
            false,
            None,
        )
    }

    /// Publishes with `mandatory` set: if no queue gets the message,
    /// RabbitMQ returns it and the confirmation fails with
    /// [`Error::Returned`], carrying the reply code and text (e.g. `312
    /// NO_ROUTE`) and the message itself. A routed message confirms as
    /// usual.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// use carehare_client::Error;
    /// match connection.publish_mandatory("hi", "", "no-such-queue", &Default::default()).await {
    ///     Ok(()) => println!("routed and confirmed"),
    ///     Err(Error::Returned(r)) => println!("unroutable: {} {}", r.reply_code, r.reply_text),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn publish_mandatory(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Confirmation {
        Confirmation::publish(
            self.shared(),
            body.into(),
            exchange,
            routing_key,
            properties,
            true,
            None,
        )
    }

    /// Closes the connection cleanly. Every pending operation fails with
    /// [`Error::ConnectionClosed`]. Calling it again is harmless.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// connection.close().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: the close has started by the first poll and goes on
    /// without this future; [`closed`](Self::closed) says when it is over.
    pub async fn close(&self) -> Result<(), Error> {
        {
            let mut inner = self.shared().lock();
            if inner.outcome().is_some() {
                return Ok(());
            }
            inner.close(self.runtime().now(), 200, "Goodbye");
        }
        self.shared().wake_driver();
        match self.closed().await {
            ConnectionError::ClosedByClient | ConnectionError::CloseTimeout(_) => Ok(()),
            other => Err(Error::ConnectionClosed(other)),
        }
    }

    /// Resolves when the connection ends, with why: a clean close is
    /// [`ConnectionError::ClosedByClient`].
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) {
    /// use carehare_client::ConnectionError;
    /// match connection.closed().await {
    ///     ConnectionError::ClosedByServer(r) => eprintln!("RabbitMQ closed our connection: {r}"),
    ///     ConnectionError::ClosedByHeartbeatMonitor(_) => eprintln!("RabbitMQ went away"),
    ///     other => eprintln!("{other}"),
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: it only watches.
    pub async fn closed(&self) -> ConnectionError {
        std::future::poll_fn(|cx| self.shared().lock().poll_closed(cx)).await
    }
}
