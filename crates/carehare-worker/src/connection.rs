//! Where to connect, and how hard to try.

use std::fmt;
use std::time::Duration;

use carehare_tokio::carehare_core::{Auth, ConnectionConfig};
use carehare_tokio::{ConnectOptions, Connection, ConnectionError, Error};

use crate::error::WorkerError;

/// How connecting is retried: up to `max_attempts` attempts, waiting
/// `initial_delay` after the first failure, doubling each time up to
/// `max_delay`.
///
/// The default (12 attempts, 200 ms doubling to 5 s, about 36 s in all)
/// mirrors Python's `amqp_worker`, which tries 12 times, 5 s apart. Errors
/// that retrying cannot fix (bad credentials, a missing virtual host, a bad
/// URL or TLS setup) fail at once.
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

    /// The wait after failed attempt number `attempt` (1-based).
    ///
    /// ```
    /// let policy = carehare_worker::RetryPolicy::default();
    /// assert!(policy.delay_after(2) > policy.delay_after(1));
    /// ```
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
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
    pub(crate) async fn connect_counted(&self) -> Result<Connection, (u32, Error)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match carehare_tokio::connect_with(self.options.clone()).await {
                Ok(connection) => return Ok(connection),
                Err(e) if attempt < self.retry.max_attempts && is_retryable(&e) => {
                    let delay = self.retry.delay_after(attempt);
                    tracing::info!(
                        "connecting failed (attempt {attempt}): {e}; retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(last) => return Err((attempt, last)),
            }
        }
    }
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

/// Whether trying again may help: the broker is down, starting, restarting
/// or unreachable. Bad credentials, a missing vhost, bad TLS or URL, or a
/// refused declaration will fail the same way again.
pub(crate) fn is_retryable(e: &Error) -> bool {
    match e {
        Error::Connect { .. } | Error::ConnectTimeout { .. } => true,
        e if is_queue_unavailable(e) => true,
        // Several addresses: another try may find one of them back.
        Error::AllAddressesFailed { attempts } => attempts.iter().any(|(_, e)| is_retryable(e)),
        Error::ConnectionClosed(c) => match c {
            ConnectionError::AuthenticationFailed(_)
            | ConnectionError::MechanismNotOffered { .. }
            | ConnectionError::InvalidVirtualHost(_)
            | ConnectionError::Protocol(_) => false,
            // 530 NOT_ALLOWED: no such vhost, or no access to it.
            ConnectionError::ClosedByServer(reason) => reason.code != 530,
            _ => true,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use carehare_tokio::carehare_core::error::CloseReason;
    use carehare_tokio::{Address, Error};

    use super::{is_queue_unavailable, is_retryable};

    fn channel_closed(code: u16, text: &str) -> Error {
        Error::ChannelClosedByServer(CloseReason {
            code,
            text: text.into(),
            class_id: 50,
            method_id: 10,
        })
    }

    #[test]
    fn a_queue_on_a_node_that_is_down_is_retried_a_refused_one_is_not() {
        let down = channel_closed(
            404,
            "NOT_FOUND - home node 'rabbit@b' of durable queue 'q' in vhost '/' is down or inaccessible",
        );
        assert!(is_queue_unavailable(&down) && is_retryable(&down));
        let refused = channel_closed(406, "PRECONDITION_FAILED - inequivalent arg 'durable'");
        assert!(!is_queue_unavailable(&refused) && !is_retryable(&refused));
    }

    #[test]
    fn every_address_failing_is_retried_if_one_may_come_back() {
        let refused = Error::Connect {
            address: "127.0.0.1:5781".into(),
            error: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        let all = Error::AllAddressesFailed {
            attempts: vec![(Address::new("127.0.0.1", 5781), refused)],
        };
        assert!(is_retryable(&all));
        let refused_everywhere = Error::AllAddressesFailed {
            attempts: vec![(
                Address::new("127.0.0.1", 5781),
                channel_closed(406, "not a connect error"),
            )],
        };
        assert!(!is_retryable(&refused_everywhere));
    }
}
