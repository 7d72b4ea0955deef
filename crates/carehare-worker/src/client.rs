//! The client side: RPC calls to an [`RpcWorker`](crate::RpcWorker) and
//! messages to a [`QueueWorker`](crate::QueueWorker).

use std::sync::Arc;
use std::time::Duration;

use carehare_tokio::carehare_core::types::ShortStr;
use carehare_tokio::{BasicProperties, Connection, RpcClient};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::ConnectionParameters;
use crate::error::{CallError, WorkerError};
use crate::wire;

/// How long a call waits for its reply by default: 30 s.
///
/// ```
/// assert_eq!(carehare_worker::DEFAULT_CALL_TIMEOUT.as_secs(), 30);
/// ```
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls RPC routes and sends messages to queue routes, in the Python
/// library's wire format.
///
/// Calls use RabbitMQ's direct reply-to (no reply queue to declare); any
/// number can be in flight at once, from clones of one client. Requests
/// are published with `mandatory`, so a route nobody declared fails at once
/// with [`CallError::Returned`] instead of timing out.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use carehare_worker::{Client, ConnectionParameters};
/// let client = Client::connect(&ConnectionParameters::new("localhost", 5672, "guest", "guest")).await?;
/// let reply: String = client.call("a-route", "a message").await?;
/// assert_eq!(reply, "data received a message");
/// client.send("a-queue", "a test message").await?;
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Duration,
    max_message_size: usize,
}

#[derive(Debug)]
struct Inner {
    connection: Connection,
    rpc: RpcClient,
}

impl Client {
    /// Connects (retrying as `params`' [`RetryPolicy`](crate::RetryPolicy)
    /// says) and opens the direct reply-to channel.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), carehare_worker::WorkerError> {
    /// use carehare_worker::{Client, ConnectionParameters};
    /// let client = Client::connect(&ConnectionParameters::from_url("amqp://guest:guest@localhost/")?).await?;
    /// # drop(client); Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`WorkerError::Connect`] when connecting (or opening the reply
    /// channel) failed.
    pub async fn connect(params: &ConnectionParameters) -> Result<Self, WorkerError> {
        let connection = params.connect().await?;
        Self::from_connection(connection)
            .await
            .map_err(|last| WorkerError::Connect { attempts: 1, last })
    }

    /// A client over an existing connection.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), carehare_tokio::Error> {
    /// let connection = carehare_tokio::connect("amqp://guest:guest@localhost/").await?;
    /// let client = carehare_worker::Client::from_connection(connection).await?;
    /// # drop(client); Ok(()) }
    /// ```
    ///
    /// # Errors
    /// If the direct reply-to channel can't be opened.
    pub async fn from_connection(connection: Connection) -> Result<Self, carehare_tokio::Error> {
        let rpc = connection.direct_reply_to().await?;
        Ok(Self {
            inner: Arc::new(Inner { connection, rpc }),
            timeout: DEFAULT_CALL_TIMEOUT,
            max_message_size: wire::DEFAULT_MAX_MESSAGE_SIZE,
        })
    }

    /// This client (sharing its connection) with another call timeout.
    ///
    /// ```no_run
    /// # fn f(client: carehare_worker::Client) {
    /// let impatient = client.with_timeout(std::time::Duration::from_secs(2));
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This client with another limit on the decompressed size of replies.
    ///
    /// ```no_run
    /// # fn f(client: carehare_worker::Client) {
    /// let client = client.with_max_message_size(1024 * 1024);
    /// # }
    /// ```
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The underlying connection.
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) {
    /// client.connection().queue_purge("a-queue").await.ok();
    /// # }
    /// ```
    pub fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    /// Calls `route` with `data` and waits (up to the client's timeout) for
    /// the reply's `data`, deserialized as `R`.
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) -> Result<(), carehare_worker::CallError> {
    /// let reply: String = client.call("a-route", "a message").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`CallError::ErrorReply`] when the worker answered with an error,
    /// [`CallError::Timeout`], [`CallError::Returned`] when no queue is
    /// named `route`, [`CallError::MalformedReply`] when the reply is not in
    /// the format (or does not fit `R`), and [`CallError::Amqp`] otherwise.
    pub async fn call<D, R>(&self, route: &str, data: &D) -> Result<R, CallError>
    where
        D: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_with_timeout(route, data, self.timeout).await
    }

    /// [`call`](Self::call) with its own timeout.
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) -> Result<(), carehare_worker::CallError> {
    /// use std::time::Duration;
    /// let total: u64 = client.call_with_timeout("sum", &[1, 2, 3], Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_with_timeout<D, R>(
        &self,
        route: &str,
        data: &D,
        timeout: Duration,
    ) -> Result<R, CallError>
    where
        D: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let body = wire::encode_request(data).map_err(|e| CallError::Encode(e.to_string()))?;
        // As aio-pika's RPC pattern sends calls: transient, typed "call".
        let properties = BasicProperties {
            content_type: Some(ShortStr::from_static(wire::CONTENT_TYPE)),
            delivery_mode: Some(1),
            kind: Some(ShortStr::from_static("call")),
            ..Default::default()
        };
        let reply = self
            .inner
            .rpc
            .call("", route, body, &properties, timeout)
            .await?;
        match wire::decode_reply(&reply.body, self.max_message_size) {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(error)) => Err(CallError::ErrorReply(error)),
            Err(e) => Err(CallError::MalformedReply(e)),
        }
    }

    /// Sends `data` to the queue `route` (for a [`QueueWorker`](crate::QueueWorker)),
    /// as a persistent message, and waits for RabbitMQ's confirm (up to the
    /// client's timeout).
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) -> Result<(), carehare_worker::CallError> {
    /// client.send("emails", "someone@example.com").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`CallError::Returned`] when no queue is named `route`,
    /// [`CallError::Timeout`] without a confirm in time, and
    /// [`CallError::Amqp`] otherwise (e.g. [`Error::ServerSentNack`](carehare_tokio::Error::ServerSentNack)).
    pub async fn send<D: Serialize + ?Sized>(
        &self,
        route: &str,
        data: &D,
    ) -> Result<(), CallError> {
        let body = wire::encode_request(data).map_err(|e| CallError::Encode(e.to_string()))?;
        let properties = BasicProperties {
            content_type: Some(ShortStr::from_static(wire::CONTENT_TYPE)),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let confirm = self
            .inner
            .connection
            .publish_mandatory(body, "", route, &properties);
        match tokio::time::timeout(self.timeout, confirm).await {
            Ok(result) => result.map_err(CallError::from),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// Closes the connection (for every clone of this client). Calls still
    /// waiting fail.
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) {
    /// client.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.inner.connection.close()).await;
    }
}
