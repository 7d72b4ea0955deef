//! The user-facing connection handle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use carehare_core::error::ConnectionError;
use carehare_core::method::{
    ExchangeDeclare, Method, QueueBind, QueueDeclare, QueueDeclareOk, QueueUnbind,
};
use carehare_core::properties::BasicProperties;
use carehare_core::types::FieldTable;
use carehare_core::{Reply, Tuning};
use futures_channel::oneshot;

use crate::error::Error;
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

    /// Runs one method on a short-lived channel: open, call, close. The
    /// three are pipelined; only the reply is waited for.
    async fn on_temporary_channel(&self, method: Method) -> Result<Reply, Error> {
        let rx = {
            let mut inner = self.shared().lock();
            if let Some(e) = inner.closed_error() {
                return Err(e);
            }
            let (ch, _open) = inner.conn.open_channel()?;
            let op = match inner.conn.call(ch, method) {
                Ok(op) => op,
                Err(e) => {
                    let _ = inner.conn.close_channel(ch);
                    self.shared().wake_driver();
                    return Err(e.into());
                }
            };
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
        let body = body.into();
        let result = (|| {
            let publish = carehare_core::method::BasicPublish {
                exchange: short(exchange)?,
                routing_key: short(routing_key)?,
                ..Default::default()
            };
            let mut inner = self.shared().lock();
            if let Some(e) = inner.closed_error() {
                return Err(e);
            }
            let ch = inner.publish_channel(exchange)?;
            let seq = inner.conn.publish(ch, &publish, properties, &body)?;
            let (tx, rx) = oneshot::channel();
            if let (Some(seq), Some(p)) = (seq, inner.publishers.get_mut(&ch)) {
                p.pending.insert(seq, tx);
            }
            Ok(rx)
        })();
        self.shared().wake_driver();
        Confirmation {
            state: match result {
                Ok(rx) => ConfirmState::Waiting(rx, self.shared().clone()),
                Err(e) => ConfirmState::Failed(Some(e)),
            },
        }
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
    state: ConfirmState,
}

enum ConfirmState {
    Waiting(oneshot::Receiver<Result<(), Error>>, Arc<Shared>),
    Failed(Option<Error>),
}

impl Future for Confirmation {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            ConfirmState::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or(Error::ConnectionClosed(ConnectionError::ClosedByClient)))),
            ConfirmState::Waiting(rx, shared) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(shared
                    .lock()
                    .closed_error()
                    .unwrap_or(Error::ConnectionClosed(ConnectionError::ClosedByClient)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
