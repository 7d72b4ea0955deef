//! How a recovering connection recovers.

use std::time::Duration;

use super::backoff::Backoff;

/// How a [`RecoveringConnection`](crate::RecoveringConnection) recovers.
///
/// ```
/// use std::time::Duration;
/// let mut options = carehare_client::RecoveryOptions::default();
/// options.outage_timeout = Some(Duration::from_secs(30));
/// assert!(!options.retry_permanent);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecoveryOptions {
    /// The wait between reconnect attempts.
    pub backoff: Backoff,
    /// Also retry errors that are not [transient](crate::Error::is_transient):
    /// bad credentials, a missing vhost, a refused `setup`. Off by default:
    /// those give up at once with their typed error.
    pub retry_permanent: bool,
    /// How long a call that needs the connection (a declare, a consumer
    /// re-subscribing, a publish) waits for recovery before it fails with
    /// [`Error::RecoveryTimeout`](crate::Error::RecoveryTimeout). `None` (the default) waits until
    /// recovery succeeds, gives up, or the connection is closed.
    pub outage_timeout: Option<Duration>,
    /// What a [`RecoveringPublisher`](crate::RecoveringPublisher) does with publishes that were not
    /// confirmed when the link went down.
    pub republish: Republish,
    /// How many connections one message may be in doubt on before it fails
    /// with [`Error::InDoubt`](crate::Error::InDoubt) instead of going out
    /// again. It bounds a publish that itself makes RabbitMQ close the
    /// connection (e.g. `541 INTERNAL_ERROR` for a reply to a direct
    /// reply-to caller that is gone), which would otherwise be re-sent on
    /// every new connection. Default 5.
    pub max_republish: u32,
    /// Make the first connection like a reconnect: `connect` returns at
    /// once, the connection is made in the background (retried with the
    /// backoff while RabbitMQ is not up yet), and calls wait for it as
    /// they wait during an outage. The lifecycle stream reports it:
    /// `Connecting`, then `Connected`, or `GaveUp` on a permanent error.
    /// Off by default: `connect` then returns the first connect's error
    /// (or `setup`'s) as is.
    pub retry_first_connect: bool,
    /// With [`retry_first_connect`](Self::retry_first_connect): give up
    /// after this many failed attempts at the first connection, with the
    /// last attempt's error (`GaveUp`). `None` (the default): as long as
    /// it takes. Recovery after a loss is never limited by it: a service
    /// that was up waits out any outage.
    pub first_connect_attempts: Option<u32>,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            retry_permanent: false,
            outage_timeout: None,
            republish: Republish::Unconfirmed,
            max_republish: 5,
            retry_first_connect: false,
            first_connect_attempts: None,
        }
    }
}

/// What a [`RecoveringPublisher`](crate::RecoveringPublisher) does with publishes that RabbitMQ had not
/// confirmed when the connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Republish {
    /// Publish them again on the next connection, in their original order
    /// (the default): at-least-once, so a consumer may see a message twice.
    #[default]
    Unconfirmed,
    /// Fail their confirmations with [`Error::InDoubt`](crate::Error::InDoubt), for callers that
    /// decide for themselves.
    FailInDoubt,
}
