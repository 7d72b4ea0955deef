//! The user-facing connection handle.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use carehare_core::error::ConnectionError;
use carehare_core::method::{
    ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeUnbind, Method, QueueBind, QueueDeclare,
    QueueDeclareOk, QueueDelete, QueuePurge, QueueUnbind,
};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{AMQPValue, FieldTable};
use carehare_core::{Reply, Tuning};
use futures_channel::oneshot;

use crate::error::Error;
use crate::publish::Confirmation;
use crate::shared::{Shared, short};

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
#[derive(Clone)]
pub struct Connection {
    pub(crate) handle: Arc<Handle>,
}

/// Closes the connection when the last [`Connection`] clone goes.
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tuning: Tuning,
    /// For timeouts in the API (e.g. RPC calls).
    pub(crate) runtime: Arc<dyn crate::Runtime>,
    /// The address connected to, as configured.
    pub(crate) address: crate::Address,
    /// The IP address and port it resolved to.
    pub(crate) peer_addr: std::net::SocketAddr,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if inner.outcome.is_none() {
            let _ = inner.conn.close(Instant::now(), 200, "connection dropped");
        }
        drop(inner);
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
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
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
    pub fn address(&self) -> &crate::Address {
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
    pub fn peer_addr(&self) -> std::net::SocketAddr {
        self.handle.peer_addr
    }

    /// Runs one method on a short-lived channel: open, call, close. The
    /// three are pipelined; only the reply is waited for.
    async fn on_temporary_channel(&self, method: Method) -> Result<Reply, Error> {
        let rx = {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.closed_error() {
                return Err(e);
            }
            let (ch, op) = inner
                .open_with([method])
                .inspect_err(|_| self.shared().wake_driver())?;
            let (tx, rx) = oneshot::channel();
            inner.ops.insert(op, tx);
            inner.temporary.insert(op, ch);
            rx
        };
        self.shared().wake_driver();
        wait(self.shared(), rx).await
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
            _ => unreachable_reply(),
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
            _ => unreachable_reply(),
        }
    }

    /// Removes every ready message from a queue and returns how many.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let purged = connection.queue_purge("my-queue").await?;
    /// # Ok(()) }
    /// ```
    pub async fn queue_purge(&self, name: &str) -> Result<u32, Error> {
        let method = QueuePurge {
            queue: short(name)?,
            ..Default::default()
        };
        match self.on_temporary_channel(method.into()).await? {
            Reply::Method(Method::QueuePurgeOk(ok)) => Ok(ok.message_count),
            _ => unreachable_reply(),
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
    pub async fn update_secret(&self, secret: impl Into<Bytes>, reason: &str) -> Result<(), Error> {
        let rx = {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.closed_error() {
                return Err(e);
            }
            let op = inner.conn.update_secret(secret.into(), reason)?;
            let (tx, rx) = oneshot::channel();
            inner.ops.insert(op, tx);
            rx
        };
        self.shared().wake_driver();
        wait(self.shared(), rx).await.map(drop)
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
        self.shared().lock().conn.server_properties().clone()
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
        let inner = self.shared().lock();
        match inner.conn.server_properties().inner().get("capabilities") {
            Some(AMQPValue::FieldTable(caps)) => {
                matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
            }
            _ => false,
        }
    }

    /// Why RabbitMQ is blocking publishes right now (a memory or disk
    /// alarm), or `None`. While blocked, publishes wait in the client
    /// instead of piling up in the socket.
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// if let Some(reason) = connection.blocked() {
    ///     eprintln!("publishing is blocked: {reason}");
    /// }
    /// # }
    /// ```
    pub fn blocked(&self) -> Option<String> {
        self.shared().lock().blocked.clone()
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
        let seen = self.shared().lock().blocked_version;
        BlockingChanges {
            shared: self.shared().clone(),
            seen,
        }
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
        self.publish_with(body, exchange, routing_key, &BasicProperties::default())
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
        crate::publish::publish(
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
        crate::publish::publish(
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
    pub async fn close(&self) -> Result<(), Error> {
        let rx = {
            let mut inner = self.shared().lock();
            if inner.outcome.is_some() {
                return Ok(());
            }
            let _ = inner.conn.close(Instant::now(), 200, "Goodbye");
            inner.route_events();
            let (tx, rx) = oneshot::channel();
            inner.closed_waiters.push(tx);
            rx
        };
        self.shared().wake_driver();
        match rx.await {
            Ok(ConnectionError::ClosedByClient | ConnectionError::CloseTimeout(_)) | Err(_) => {
                Ok(())
            }
            Ok(other) => Err(Error::ConnectionClosed(other)),
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
    pub async fn closed(&self) -> ConnectionError {
        let rx = {
            let mut inner = self.shared().lock();
            if let Some(e) = &inner.outcome {
                return e.clone();
            }
            let (tx, rx) = oneshot::channel();
            inner.closed_waiters.push(tx);
            rx
        };
        rx.await.unwrap_or(ConnectionError::ClosedByClient)
    }
}

/// Awaits an operation's reply; a dropped sender means the connection went.
pub(crate) async fn wait(
    shared: &Shared,
    rx: oneshot::Receiver<Result<Reply, Error>>,
) -> Result<Reply, Error> {
    match rx.await {
        Ok(result) => result,
        Err(_) => Err(shared
            .lock()
            .closed_error()
            .unwrap_or(Error::ConnectionClosed(ConnectionError::ClosedByClient))),
    }
}

fn unreachable_reply<T>() -> Result<T, Error> {
    // The core matches replies to requests by method id; any other reply
    // would have been a protocol violation, not a completion.
    Err(Error::ConnectionClosed(ConnectionError::ClosedByClient))
}

/// A change in RabbitMQ's flow control of this connection.
///
/// ```
/// use carehare_client::Blocking;
/// let change = Blocking::Blocked("low on memory".into());
/// assert_ne!(change, Blocking::Unblocked);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocking {
    /// RabbitMQ stopped reading publishes (`connection.blocked`), e.g.
    /// "low on memory".
    Blocked(String),
    /// Publishing resumed (`connection.unblocked`).
    Unblocked,
}

/// Blocked/unblocked changes; see [`Connection::blocking_changes`]. Ends
/// when the connection ends.
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) {
/// use futures_util::StreamExt;
/// let mut changes: carehare_client::BlockingChanges = connection.blocking_changes();
/// if let Some(change) = changes.next().await {
///     println!("{change:?}");
/// }
/// # }
/// ```
pub struct BlockingChanges {
    shared: Arc<Shared>,
    seen: u64,
}

impl std::fmt::Debug for BlockingChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingChanges").finish_non_exhaustive()
    }
}

impl futures_core::Stream for BlockingChanges {
    type Item = Blocking;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Blocking>> {
        let mut inner = self.shared.lock();
        if inner.blocked_version != self.seen {
            let version = inner.blocked_version;
            let state = match &inner.blocked {
                Some(reason) => Blocking::Blocked(reason.clone()),
                None => Blocking::Unblocked,
            };
            let ended = inner.outcome.is_some();
            drop(inner);
            self.seen = version;
            if ended {
                return std::task::Poll::Ready(None);
            }
            return std::task::Poll::Ready(Some(state));
        }
        if inner.outcome.is_some() {
            return std::task::Poll::Ready(None);
        }
        if !inner.blocked_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            inner.blocked_wakers.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }
}
