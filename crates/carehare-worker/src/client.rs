//! The client side: RPC calls to an [`RpcWorker`](crate::RpcWorker) and
//! messages to a [`QueueWorker`](crate::QueueWorker).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

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
    /// Where to reconnect; `None` for a client made from a connection,
    /// which never reconnects.
    params: Option<ConnectionParameters>,
    /// The session calls use; replaced when it is lost.
    current: Mutex<Arc<Session>>,
    /// Held while reconnecting, so that concurrent calls share one attempt.
    reconnecting: tokio::sync::Mutex<()>,
    /// `close()` was called: no more reconnecting.
    closed: AtomicBool,
}

/// A connection with its direct reply-to channel.
#[derive(Debug)]
struct Session {
    connection: Connection,
    rpc: RpcClient,
    /// The connection ended, or the reply channel did.
    broken: Arc<AtomicBool>,
    /// Dropped with the session: ends the task watching the connection.
    _watching: oneshot::Sender<()>,
}

impl Session {
    async fn open(connection: Connection) -> Result<Self, carehare_tokio::Error> {
        let rpc = connection.direct_reply_to().await?;
        let broken = Arc::new(AtomicBool::new(false));
        let (watching, dropped) = oneshot::channel::<()>();
        // Notices a lost connection at once, so the next call reconnects
        // instead of failing. It holds a handle only while the session
        // lives, so dropping the client still closes the connection.
        let watched = connection.clone();
        let flag = broken.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = watched.closed() => flag.store(true, Ordering::Release),
                _ = dropped => {}
            }
        });
        Ok(Self {
            connection,
            rpc,
            broken,
            _watching: watching,
        })
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Notes a call's error that means this session can't serve calls any
    /// more: the connection or the reply channel is gone.
    fn note(&self, e: &carehare_tokio::Error) {
        use carehare_tokio::Error as E;
        if matches!(
            e,
            E::ConnectionClosed(_)
                | E::ConsumerClosed
                | E::ConsumerCancelledByServer
                | E::ChannelClosedByServer(_)
        ) {
            self.broken.store(true, Ordering::Release);
        }
    }
}

impl Inner {
    fn current(&self) -> Arc<Session> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Client {
    /// Connects (retrying as `params`' [`RetryPolicy`](crate::RetryPolicy)
    /// says) and opens the direct reply-to channel.
    ///
    /// Such a client reconnects by itself: when its connection is lost (say
    /// the cluster node it was on goes down), calls already waiting fail
    /// with [`CallError::Amqp`] (`ConnectionClosed`), and the next call
    /// connects again (to any of `params`' addresses, retrying as the
    /// policy says, within the call's timeout) before publishing.
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
        let session = Session::open(connection)
            .await
            .map_err(|last| WorkerError::Connect { attempts: 1, last })?;
        Ok(Self::with_session(session, Some(params.clone())))
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
        Ok(Self::with_session(Session::open(connection).await?, None))
    }

    fn with_session(session: Session, params: Option<ConnectionParameters>) -> Self {
        Self {
            inner: Arc::new(Inner {
                params,
                current: Mutex::new(Arc::new(session)),
                reconnecting: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
            timeout: DEFAULT_CALL_TIMEOUT,
            max_message_size: wire::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// The session to use, reconnecting first if the current one is lost
    /// (and this client can), by `deadline`.
    async fn session(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Session>, CallError> {
        let current = self.inner.current();
        let Some(params) = &self.inner.params else {
            return Ok(current);
        };
        if !current.is_broken() || self.inner.closed.load(Ordering::Acquire) {
            return Ok(current);
        }
        let _reconnecting = tokio::time::timeout_at(deadline, self.inner.reconnecting.lock())
            .await
            .map_err(|_| CallError::Timeout(timeout))?;
        // Another call may have reconnected while this one waited.
        let current = self.inner.current();
        if !current.is_broken() || self.inner.closed.load(Ordering::Acquire) {
            return Ok(current);
        }
        tracing::info!("the client lost its connection; reconnecting");
        let connected = tokio::time::timeout_at(deadline, async {
            let connection = params.connect_counted().await?;
            Session::open(connection).await.map_err(|e| (1, e))
        })
        .await;
        let session = match connected {
            Err(_) => return Err(CallError::Timeout(timeout)),
            Ok(Err((attempts, last))) => return Err(CallError::Connect { attempts, last }),
            Ok(Ok(session)) => Arc::new(session),
        };
        let old = {
            let mut slot = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
            if self.inner.closed.load(Ordering::Acquire) {
                None
            } else {
                Some(std::mem::replace(&mut *slot, session.clone()))
            }
        };
        match old {
            // Closed while reconnecting: don't keep the new connection.
            None => {
                close_soon(session.connection.clone());
                Ok(self.inner.current())
            }
            Some(old) => {
                tracing::info!("the client reconnected");
                close_soon(old.connection.clone());
                Ok(session)
            }
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
    /// been lost since, and is replaced by the next call).
    ///
    /// ```no_run
    /// # async fn f(client: carehare_worker::Client) {
    /// client.connection().queue_purge("a-queue").await.ok();
    /// # }
    /// ```
    pub fn connection(&self) -> Connection {
        self.inner.current().connection.clone()
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
        let deadline = Instant::now() + timeout;
        let session = self.session(deadline, timeout).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = session
            .rpc
            .call("", route, body, &properties, left)
            .await
            .map_err(|e| {
                session.note(&e);
                match e {
                    // The timeout the caller chose, not what was left of it.
                    carehare_tokio::Error::Timeout(_) => CallError::Timeout(timeout),
                    e => CallError::from(e),
                }
            })?;
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
        let deadline = Instant::now() + self.timeout;
        let session = self.session(deadline, self.timeout).await?;
        let confirm = session
            .connection
            .publish_mandatory(body, "", route, &properties);
        match tokio::time::timeout_at(deadline, confirm).await {
            Ok(result) => result.map_err(|e| {
                // A channel error here is the publish channel's, which the
                // next publish replaces: only a lost connection counts.
                if matches!(e, carehare_tokio::Error::ConnectionClosed(_)) {
                    session.note(&e);
                }
                CallError::from(e)
            }),
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
        self.inner.closed.store(true, Ordering::Release);
        let connection = self.inner.current().connection.clone();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await;
    }
}

/// How long closing a connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Closes a connection that is no longer used, in the background.
fn close_soon(connection: Connection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await;
    });
}
