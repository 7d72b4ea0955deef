//! The client side: RPC calls to an [`RpcWorker`](crate::RpcWorker) and
//! messages to a [`QueueWorker`](crate::QueueWorker).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use carehare_tokio::carehare_core::types::ShortStr;
use carehare_tokio::{
    BasicProperties, Connection, RecoveringConnection, RecoveringPublisher, RpcClient,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::{ConnectionParameters, watch_recovery};
use crate::error::{CallError, WorkerError};
use crate::wire;

/// How long a call waits for its reply by default: 30 s.
///
/// ```
/// assert_eq!(carehare_worker::DEFAULT_CALL_TIMEOUT.as_secs(), 30);
/// ```
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Unconfirmed [`Client::send`]s at once; more wait.
const SEND_WINDOW: usize = 1000;

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
enum Inner {
    /// From [`Client::connect`]: the session is the topology, opened
    /// again on every reconnect.
    Recovering {
        rc: RecoveringConnection<Arc<Session>>,
        publisher: RecoveringPublisher<Arc<Session>>,
        /// The latest session seen, for [`Client::connection`] during an
        /// outage.
        latest: Mutex<Arc<Session>>,
        /// Reconnect attempts in the current outage.
        attempts: Arc<AtomicU32>,
        /// `close()` was called.
        closed: AtomicBool,
    },
    /// From [`Client::from_connection`]: never reconnects.
    Fixed(Arc<Session>),
}

/// A connection with its direct reply-to channel.
#[derive(Debug)]
struct Session {
    connection: Connection,
    rpc: RpcClient,
}

impl Session {
    async fn open(connection: Connection) -> Result<Self, carehare_tokio::Error> {
        let rpc = connection.direct_reply_to().await?;
        Ok(Self { connection, rpc })
    }
}

impl Client {
    /// Connects (retrying as `params`' [`RetryPolicy`](crate::RetryPolicy)
    /// says) and opens the direct reply-to channel.
    ///
    /// Such a client recovers by itself: when its connection is lost (say
    /// the cluster node it was on goes down), calls already waiting fail
    /// with [`CallError::Amqp`] (`ConnectionClosed`), it reconnects in the
    /// background (to any of `params`' addresses, with the policy's
    /// backoff) and opens the reply channel again, and calls made meanwhile
    /// wait for that, within their timeout. If recovery gives up (an error
    /// that retrying can't fix, such as bad credentials), every call fails
    /// with [`CallError::Connect`].
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
        let setup = |connection: Connection| -> carehare_tokio::BoxFuture<'static, _> {
            Box::pin(async move { Session::open(connection).await.map(Arc::new) })
        };
        let rc = params
            .connect_recovering(params.retry().recovery_options(), setup)
            .await
            .map_err(|(attempts, last)| WorkerError::Connect { attempts, last })?;
        let session = rc
            .topology()
            .await
            .map_err(|last| WorkerError::Connect { attempts: 1, last })?;
        Ok(Self::with_inner(Inner::Recovering {
            attempts: watch_recovery(&rc, "Client"),
            publisher: rc.publisher(SEND_WINDOW),
            rc,
            latest: Mutex::new(session),
            closed: AtomicBool::new(false),
        }))
    }

    /// A client over an existing connection. It does not reconnect: once
    /// the connection is lost, every call fails with [`CallError::Amqp`]
    /// (use [`connect`](Self::connect) for a client that reconnects).
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
        let session = Session::open(connection).await?;
        Ok(Self::with_inner(Inner::Fixed(Arc::new(session))))
    }

    fn with_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
            timeout: DEFAULT_CALL_TIMEOUT,
            max_message_size: wire::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// The session to call on, waiting for recovery until `deadline`.
    async fn session(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Session>, CallError> {
        match &*self.inner {
            Inner::Fixed(session) => Ok(session.clone()),
            Inner::Recovering { rc, .. } => {
                match tokio::time::timeout_at(deadline, rc.topology()).await {
                    Err(_) => Err(CallError::Timeout(timeout)),
                    Ok(Ok(session)) => Ok(session),
                    Ok(Err(e)) => Err(self.failure(e)),
                }
            }
        }
    }

    /// What an error means: the end of a recovering client's connection
    /// (closed: [`CallError::Amqp`]; recovery gave up:
    /// [`CallError::Connect`]), or this call's failure.
    fn failure(&self, e: carehare_tokio::Error) -> CallError {
        let Inner::Recovering {
            rc,
            attempts,
            closed,
            ..
        } = &*self.inner
        else {
            return CallError::from(e);
        };
        if closed.load(Ordering::Acquire) {
            return CallError::Amqp(e);
        }
        match rc.connection().now_or_never() {
            Some(Err(carehare_tokio::Error::RecoveryTimeout(_))) | Some(Ok(_)) | None => {
                CallError::from(e)
            }
            Some(Err(last)) => CallError::Connect {
                attempts: attempts.load(Ordering::Relaxed),
                last,
            },
        }
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

    /// The current connection (after a reconnect, the new one; it may have
    /// been lost since: a client from [`connect`](Self::connect) replaces
    /// it in the background).
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) {
    /// client.connection().queue_purge("a-queue").await.ok();
    /// # }
    /// ```
    pub fn connection(&self) -> Connection {
        match &*self.inner {
            Inner::Fixed(session) => session.connection.clone(),
            Inner::Recovering { rc, latest, .. } => {
                let mut latest = latest.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(Ok(session)) = rc.topology().now_or_never() {
                    *latest = session;
                }
                latest.connection.clone()
            }
        }
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
    /// [`CallError::Timeout`] (also when the connection was not recovered
    /// in time), [`CallError::Returned`] when no queue is named `route`,
    /// [`CallError::MalformedReply`] when the reply is not in the format
    /// (or does not fit `R`), [`CallError::Connect`] when recovery gave up,
    /// and [`CallError::Amqp`] otherwise.
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
        let deadline = Instant::now() + timeout;
        let session = self.session(deadline, timeout).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = session
            .rpc
            .call("", route, body, &properties, left)
            .await
            .map_err(|e| match e {
                // The timeout the caller chose, not what was left of it.
                carehare_tokio::Error::Timeout(_) => CallError::Timeout(timeout),
                e => self.failure(e),
            })?;
        match wire::decode_reply(&reply.body, self.max_message_size) {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(error)) => Err(CallError::ErrorReply(error)),
            Err(e) => Err(CallError::MalformedReply(e)),
        }
    }

    /// Sends `data` to the queue `route` (for a [`QueueWorker`](crate::QueueWorker)),
    /// as a persistent message, and waits for RabbitMQ's confirm (up to the
    /// client's timeout). A client from [`connect`](Self::connect) waits
    /// for a lost connection to be recovered, and sends the message again
    /// on the new one if the lost one had not confirmed it (so, rarely, it
    /// arrives twice).
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) -> Result<(), carehare_worker::CallError> {
    /// client.send("emails", "someone@example.com").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`CallError::Returned`] when no queue is named `route`,
    /// [`CallError::Timeout`] without a confirm in time (the message may
    /// still be sent), [`CallError::Connect`] when recovery gave up, and
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
        let deadline = Instant::now() + self.timeout;
        let sent = match &*self.inner {
            Inner::Fixed(session) => {
                let confirm = session
                    .connection
                    .publish_mandatory(body, "", route, &properties);
                tokio::time::timeout_at(deadline, confirm).await
            }
            // The publisher waits for recovery, and sends again what a lost
            // connection had not confirmed.
            Inner::Recovering { publisher, .. } => {
                let confirm = async {
                    publisher
                        .publish_mandatory(body, "", route, &properties)
                        .await?
                        .await
                };
                tokio::time::timeout_at(deadline, confirm).await
            }
        };
        match sent {
            Ok(result) => result.map_err(|e| self.failure(e)),
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
        let closing = async {
            match &*self.inner {
                Inner::Fixed(session) => session.connection.close().await,
                Inner::Recovering { rc, closed, .. } => {
                    closed.store(true, Ordering::Release);
                    rc.close().await
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

/// How long closing a connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
