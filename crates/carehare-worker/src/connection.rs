//! Where to connect, and how hard to try; and what every connection of
//! the crate shares: a first connection made with retries, then watched
//! while it recovers.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use carehare_tokio::carehare_core::{Auth, ConnectionConfig};
use carehare_tokio::{
    Backoff, ConnectOptions, Connection, Error, RecoveringConnection, RecoveryEvent,
    RecoveryOptions,
};
use futures_util::{FutureExt, StreamExt};

use crate::error::WorkerError;

/// How connecting is retried, and how fast a lost connection is
/// recovered.
///
/// - `max_attempts` bounds the first connection: [`QueueWorker::run`](crate::QueueWorker::run),
///   [`RpcWorker::run`](crate::RpcWorker::run), [`Client::connect`](crate::Client::connect)
///   and [`ConnectionParameters::connect`] give up after that many
///   attempts. It also bounds the wait for a route's queue whose node is
///   down (see [`QueueType`](crate::QueueType)).
/// - `initial_delay` and `max_delay` are the [`Backoff`] between attempts,
///   for the first connection and for recovery alike (see
///   [`recovery_options`](Self::recovery_options)): each wait is
///   [`delay_after`](Self::delay_after) with up to half of it taken off at
///   random, so that many workers cut off at once don't all come back in
///   the same instant.
///
/// Once connected, a worker or client recovers a lost connection for as
/// long as the errors may pass (the broker or the node is down,
/// restarting, unreachable): `max_attempts` does not limit that. Errors
/// that retrying cannot fix (bad credentials, a missing virtual host, a
/// bad URL or TLS setup; see
/// [`Error::is_transient`](carehare_tokio::Error::is_transient)) fail at
/// once, when connecting first and when recovering.
///
/// The default (12 attempts, 200 ms doubling to 5 s, at most about 36 s
/// in all) mirrors Python's `amqp_worker`, which tries 12 times, 5 s
/// apart.
///
/// ```
/// use std::time::Duration;
/// use carehare_worker::RetryPolicy;
/// let patient = RetryPolicy { max_attempts: 60, max_delay: Duration::from_secs(10), ..Default::default() };
/// assert_eq!(patient.delay_after(1), Duration::from_millis(200));
/// assert_eq!(patient.delay_after(3), Duration::from_millis(800));
/// assert_eq!(patient.delay_after(40), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1 (0 is taken as 1).
    pub max_attempts: u32,
    /// The wait after the first failed attempt.
    pub initial_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// One attempt only.
    ///
    /// ```
    /// assert_eq!(carehare_worker::RetryPolicy::no_retry().max_attempts, 1);
    /// ```
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The longest wait after failed attempt number `attempt` (1-based);
    /// the actual wait is between half of it and all of it.
    ///
    /// ```
    /// let policy = carehare_worker::RetryPolicy::default();
    /// assert!(policy.delay_after(2) > policy.delay_after(1));
    /// ```
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.backoff().delay(attempt.saturating_sub(1), 0.0)
    }

    /// The backoff: `initial_delay` doubling to `max_delay`, with
    /// [`Backoff`]'s default jitter and reset.
    ///
    /// ```
    /// let backoff = carehare_worker::RetryPolicy::default().backoff();
    /// assert_eq!(backoff.max, std::time::Duration::from_secs(5));
    /// ```
    pub fn backoff(&self) -> Backoff {
        let mut backoff = Backoff::default();
        backoff.initial = self.initial_delay;
        backoff.max = self.max_delay;
        backoff
    }

    /// The [`RecoveryOptions`] workers and clients recover with: this
    /// policy's [`backoff`](Self::backoff), the rest as
    /// [`RecoveryOptions::default`] (permanent errors are not retried,
    /// calls wait for recovery as long as it takes, unconfirmed publishes
    /// are sent again).
    ///
    /// ```
    /// let options = carehare_worker::RetryPolicy::default().recovery_options();
    /// assert!(!options.retry_permanent);
    /// ```
    pub fn recovery_options(&self) -> RecoveryOptions {
        let mut options = RecoveryOptions::default();
        options.backoff = self.backoff();
        options
    }

    /// The wait before attempt `attempt + 1`, jittered.
    pub(crate) fn jittered_delay_after(&self, attempt: u32) -> Duration {
        self.backoff()
            .delay(attempt.saturating_sub(1), fastrand::f64())
    }
}

/// Where the broker is, who to log in as, and how to retry: Python's
/// `ConnectionParameters(host, port, user, password)`, or a URL.
///
/// ```
/// use carehare_worker::ConnectionParameters;
/// let params = ConnectionParameters::new("localhost", 5672, "guest", "guest");
/// assert_eq!(params.options().port, 5672);
/// let params = ConnectionParameters::from_url("amqp://user:pass@rabbit.example.com:5673/prod")?;
/// assert_eq!(params.options().amqp.virtual_host, "prod");
/// assert!(!format!("{params:?}").contains("pass@"));
/// # Ok::<(), carehare_worker::WorkerError>(())
/// ```
#[derive(Clone)]
pub struct ConnectionParameters {
    options: ConnectOptions,
    retry: RetryPolicy,
}

impl fmt::Debug for ConnectionParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ConnectOptions' Debug redacts the password.
        f.debug_struct("ConnectionParameters")
            .field("options", &self.options)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ConnectionParameters {
    /// Plain AMQP to `host:port` as `user`, on the default virtual host `/`.
    ///
    /// ```
    /// let params = carehare_worker::ConnectionParameters::new("rabbit", 5672, "guest", "guest");
    /// assert_eq!(params.options().host, "rabbit");
    /// ```
    pub fn new(host: impl Into<String>, port: u16, user: &str, password: &str) -> Self {
        Self::from_options(ConnectOptions {
            host: host.into(),
            port,
            tls: None,
            amqp: ConnectionConfig {
                auth: Auth::plain(user, password),
                ..ConnectionConfig::default()
            },
            ..ConnectOptions::default()
        })
    }

    /// From an `amqp://` or `amqps://` URL (RabbitMQ's URI spec, with query
    /// parameters such as `heartbeat` and `connection_timeout`).
    ///
    /// ```
    /// let params = carehare_worker::ConnectionParameters::from_url("amqps://rabbit.example.com/")?;
    /// assert!(params.options().tls.is_some());
    /// # Ok::<(), carehare_worker::WorkerError>(())
    /// ```
    ///
    /// # Errors
    /// [`WorkerError::Url`] if the URL is invalid.
    pub fn from_url(url: &str) -> Result<Self, WorkerError> {
        Ok(Self::from_options(ConnectOptions::from_url(url)?))
    }

    /// From the URLs of the nodes of one RabbitMQ cluster (they may differ
    /// only in host and port). Connecting tries them in order (see
    /// [`ConnectOptions::address_order`] to shuffle them), so a worker or
    /// client whose node goes away reconnects to another.
    ///
    /// ```
    /// let params = carehare_worker::ConnectionParameters::from_urls([
    ///     "amqp://guest:guest@rabbit-1/",
    ///     "amqp://guest:guest@rabbit-2/",
    ///     "amqp://guest:guest@rabbit-3/",
    /// ])?;
    /// assert_eq!(params.options().addresses().len(), 3);
    /// # Ok::<(), carehare_worker::WorkerError>(())
    /// ```
    ///
    /// # Errors
    /// [`WorkerError::Url`] if a URL is invalid, none is given, or they
    /// differ in more than host and port.
    pub fn from_urls<I, S>(urls: I) -> Result<Self, WorkerError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self::from_options(ConnectOptions::from_urls(urls)?))
    }

    /// Adds more nodes of the same cluster (same credentials, vhost and
    /// TLS settings), tried after the ones already set.
    ///
    /// ```
    /// use carehare_worker::ConnectionParameters;
    /// let params = ConnectionParameters::new("rabbit-1", 5672, "guest", "guest")
    ///     .with_hosts([("rabbit-2", 5672), ("rabbit-3", 5672)]);
    /// assert_eq!(params.options().addresses().len(), 3);
    /// ```
    pub fn with_hosts<I, H>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = (H, u16)>,
        H: Into<String>,
    {
        self.options.extra_addresses.extend(
            hosts
                .into_iter()
                .map(|(host, port)| carehare_tokio::Address::new(host, port)),
        );
        self
    }

    /// From carehare's full [`ConnectOptions`] (TLS, heartbeat, timeouts...).
    ///
    /// ```
    /// let mut options = carehare_tokio::ConnectOptions::default();
    /// options.amqp.connection_name = Some("billing-worker".into());
    /// let params = carehare_worker::ConnectionParameters::from_options(options);
    /// # drop(params);
    /// ```
    pub fn from_options(options: ConnectOptions) -> Self {
        Self {
            options,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy.
    ///
    /// ```
    /// use carehare_worker::{ConnectionParameters, RetryPolicy};
    /// let params = ConnectionParameters::new("localhost", 5672, "guest", "guest").with_retry(RetryPolicy::no_retry());
    /// assert_eq!(params.retry().max_attempts, 1);
    /// ```
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Names the connection (shown in the management UI).
    ///
    /// ```
    /// let params = carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest")
    ///     .with_connection_name("billing-worker");
    /// assert_eq!(params.options().amqp.connection_name.as_deref(), Some("billing-worker"));
    /// ```
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.options.amqp.connection_name = Some(name.into());
        self
    }

    /// The retry policy.
    ///
    /// ```
    /// let params = carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest");
    /// assert_eq!(params.retry().max_attempts, 12);
    /// ```
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The connection options.
    ///
    /// ```
    /// let params = carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest");
    /// assert_eq!(params.options().amqp.virtual_host, "/");
    /// ```
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// The connection options, to change (e.g. the heartbeat or TLS).
    ///
    /// ```
    /// let mut params = carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest");
    /// params.options_mut().amqp.heartbeat = 30;
    /// ```
    pub fn options_mut(&mut self) -> &mut ConnectOptions {
        &mut self.options
    }

    /// Connects, retrying as the [`RetryPolicy`] says.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), carehare_worker::WorkerError> {
    /// let params = carehare_worker::ConnectionParameters::from_url("amqp://guest:guest@localhost/")?;
    /// let connection = params.connect().await?;
    /// connection.publish("hi", "", "a-queue").await.ok();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`WorkerError::Connect`] with the number of attempts and the last
    /// error.
    pub async fn connect(&self) -> Result<Connection, WorkerError> {
        self.connect_counted()
            .await
            .map_err(|(attempts, last)| WorkerError::Connect { attempts, last })
    }

    /// [`connect`](Self::connect), failing with the number of attempts and
    /// the last error.
    async fn connect_counted(&self) -> Result<Connection, (u32, Error)> {
        self.first(|| carehare_tokio::connect_with(self.options.clone()))
            .await
    }

    /// Connects with recovery: the first connection (and `setup`) retried
    /// as the [`RetryPolicy`] says, by the recovering connection itself;
    /// after that, recovery as `recovery` says. Fails with the number of
    /// attempts and the last error.
    pub(crate) async fn connect_recovering<T, F>(
        &self,
        mut recovery: RecoveryOptions,
        setup: F,
    ) -> Result<RecoveringConnection<T>, (u32, Error)>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(Connection) -> carehare_tokio::BoxFuture<'static, Result<T, Error>>
            + Send
            + Sync
            + 'static,
    {
        recovery.retry_first_connect = true;
        recovery.first_connect_attempts = Some(self.retry.max_attempts.max(1));
        let rc = carehare_tokio::connect_recovering(self.options.clone(), recovery, setup)
            .await
            .map_err(|e| (1, e))?;
        // Taken before the first connection is up, the stream replays the
        // first connect's events: they count its attempts.
        let mut events = rc.events();
        match rc.connection().await {
            Ok(_) => Ok(rc),
            Err(last) => {
                let attempts = std::iter::from_fn(|| events.next().now_or_never().flatten())
                    .filter_map(|e| match e {
                        RecoveryEvent::Connecting { attempt, .. } => Some(attempt),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(1);
                let _ = rc.close().await;
                Err((attempts, last))
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails with an error that retrying
    /// can't fix, or the policy's attempts run out.
    async fn first<T, F, Fut>(&self, attempt: F) -> Result<T, (u32, Error)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt().await {
                Ok(connected) => return Ok(connected),
                Err(e) if attempts < self.retry.max_attempts && e.is_transient() => {
                    let delay = self.retry.jittered_delay_after(attempts);
                    tracing::info!(
                        attempt = attempts,
                        error = %e,
                        ?delay,
                        "connecting failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(last) => return Err((attempts, last)),
            }
        }
    }
}

/// Follows a recovering connection's events: logs them under `name`, and
/// counts the reconnect attempts of the current outage (for
/// [`WorkerError::Connect`] and [`CallError::Connect`](crate::CallError::Connect)
/// when recovery gives up). Ends with the connection.
pub(crate) fn watch_recovery<T>(rc: &RecoveringConnection<T>, name: &'static str) -> Arc<AtomicU32>
where
    T: Clone + Send + Sync + 'static,
{
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let mut events = rc.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                RecoveryEvent::Disconnected { cause } => {
                    tracing::warn!(worker = name, error = %cause, "the connection was lost; reconnecting");
                }
                RecoveryEvent::Connecting { attempt, .. } => {
                    counted.store(attempt, Ordering::Relaxed)
                }
                RecoveryEvent::Connected { address } => {
                    tracing::info!(worker = name, %address, "reconnected");
                }
                RecoveryEvent::Recovered { .. } => counted.store(0, Ordering::Relaxed),
                RecoveryEvent::GaveUp { cause } => {
                    tracing::error!(worker = name, error = %cause, "reconnecting failed for good; giving up");
                }
                _ => {}
            }
        }
    });
    attempts
}

/// Whether RabbitMQ refused to declare or consume a queue because it is
/// unavailable for now: `404 NOT_FOUND`, which a (non-passive) declaration
/// only gets for a classic queue whose node is down or stopping (`home node
/// '...' of durable queue '...' is down or inaccessible`, or its process
/// stopped), and a consume for a queue deleted since its declaration (its
/// node went down). The queue comes back with its node, or is declared
/// again, so trying again may help.
pub(crate) fn is_queue_unavailable(e: &Error) -> bool {
    matches!(e, Error::ChannelClosedByServer(reason) if reason.code == 404)
}

#[cfg(test)]
mod tests {
    use carehare_tokio::Error;
    use carehare_tokio::carehare_core::error::CloseReason;

    use super::{RetryPolicy, is_queue_unavailable};

    fn channel_closed(code: u16, text: &str) -> Error {
        Error::ChannelClosedByServer(CloseReason {
            code,
            text: text.into(),
            class_id: 50,
            method_id: 10,
        })
    }

    #[test]
    fn a_queue_on_a_node_that_is_down_is_unavailable_a_refused_one_is_not() {
        let down = channel_closed(
            404,
            "NOT_FOUND - home node 'rabbit@b' of durable queue 'q' in vhost '/' is down or inaccessible",
        );
        assert!(is_queue_unavailable(&down));
        let refused = channel_closed(406, "PRECONDITION_FAILED - inequivalent arg 'durable'");
        assert!(!is_queue_unavailable(&refused));
    }

    #[test]
    fn the_policy_is_the_recovery_backoff() {
        let policy = RetryPolicy::default();
        let options = policy.recovery_options();
        assert_eq!(options.backoff.initial, policy.initial_delay);
        assert_eq!(options.backoff.max, policy.max_delay);
        for attempt in 1..20 {
            let longest = policy.delay_after(attempt);
            let wait = policy.jittered_delay_after(attempt);
            assert!(
                wait <= longest && wait >= longest / 2,
                "{attempt}: {wait:?}"
            );
        }
    }
}
