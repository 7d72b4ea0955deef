//! The CLI's errors and the exit code each class maps to.

use std::time::Duration;

use carehare_tokio::{ConnectionError, Error};

/// Exit codes, one per class of failure (documented in `carehare --help`).
pub(crate) mod code {
    /// Anything else: connection lost mid-operation, I/O errors.
    pub(crate) const OTHER: u8 = 1;
    /// Bad command line or an invalid request refused before sending.
    pub(crate) const USAGE: u8 = 2;
    /// Could not connect: URL, TCP, TLS, authentication, vhost access.
    pub(crate) const CONNECT: u8 = 3;
    /// RabbitMQ refused an operation (404, 403, 405, 406... on a channel).
    pub(crate) const REFUSED: u8 = 4;
    /// A publish was returned (mandatory, unroutable) or nacked.
    pub(crate) const NOT_CONFIRMED: u8 = 5;
    /// No answer, confirm or message within `--timeout`.
    pub(crate) const TIMEOUT: u8 = 6;
    /// `get` found the queue empty.
    pub(crate) const EMPTY: u8 = 7;
    /// `consume --exec`: the command failed and `--on-failure stop` said
    /// to stop.
    pub(crate) const EXEC_FAILED: u8 = 8;
}

/// Why a command failed. The `Display` text is what `carehare` prints on
/// stderr; for broker refusals it is the client's typed error text, e.g.
/// `RabbitMQ closed the channel: 404 NOT_FOUND - no queue 'x' in vhost '/'`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A bad flag value, detected before connecting.
    #[error("{0}")]
    Usage(String),
    /// Connecting failed (the connection never opened).
    #[error("{0}")]
    Connect(Error),
    /// An operation failed.
    #[error(transparent)]
    Amqp(#[from] Error),
    /// Reading a body or writing output failed.
    #[error("{context}: {error}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A wait of the CLI's own ran out.
    #[error("{what} within {timeout:?}")]
    Timeout {
        /// What did not happen.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// `get` found no message.
    #[error("the queue is empty")]
    Empty,
    /// `perf` saw publishes nacked or returned.
    #[error("{0}")]
    NotConfirmed(String),
    /// A management API request failed.
    #[error(transparent)]
    Management(#[from] ManagementError),
    /// `consume --exec`: the command failed, and that stops the consumer.
    #[error("{0}")]
    ExecFailed(String),
}

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManagementError {
    /// No HTTP answer: refused, unreachable, TLS, timeout.
    #[error("could not reach the management API at {url}: {error}")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// What went wrong.
        error: ureq::Error,
    },
    /// 401: wrong user or password, or a user without a management tag.
    #[error("the management API refused the login ({status}): {reason}")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// RabbitMQ's `reason`.
        reason: String,
    },
    /// 404: e.g. no such vhost.
    #[error("the management API has no {url} (404): {reason}")]
    NotFound {
        /// The request's URL.
        url: String,
        /// RabbitMQ's `reason`.
        reason: String,
    },
    /// Any other failure status, or an answer that is not JSON.
    #[error("the management API answered {url} with {what}")]
    Other {
        /// The request's URL.
        url: String,
        /// The status and reason, or why the body is unreadable.
        what: String,
    },
}

impl CliError {
    /// A usage error with this text.
    pub(crate) fn usage(text: impl Into<String>) -> Self {
        CliError::Usage(text.into())
    }

    /// An I/O error while doing `context`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |error| CliError::Io { context, error }
    }

    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => code::USAGE,
            CliError::Connect(_) => code::CONNECT,
            CliError::Amqp(e) => amqp_code(e),
            CliError::Io { .. } => code::OTHER,
            CliError::Timeout { .. } => code::TIMEOUT,
            CliError::Empty => code::EMPTY,
            CliError::NotConfirmed(_) => code::NOT_CONFIRMED,
            CliError::Management(e) => match e {
                ManagementError::Unreachable { .. } | ManagementError::Unauthorized { .. } => {
                    code::CONNECT
                }
                ManagementError::NotFound { .. } => code::REFUSED,
                ManagementError::Other { .. } => code::OTHER,
            },
            CliError::ExecFailed(_) => code::EXEC_FAILED,
        }
    }
}

fn amqp_code(e: &Error) -> u8 {
    match e {
        Error::ChannelClosedByServer(_) | Error::ConsumerCancelledByServer => code::REFUSED,
        Error::ServerSentNack | Error::Returned(_) => code::NOT_CONFIRMED,
        Error::Timeout(_) => code::TIMEOUT,
        Error::Usage(_) => code::USAGE,
        Error::Url(_)
        | Error::Tls(_)
        | Error::TlsVerification { .. }
        | Error::Connect { .. }
        | Error::ConnectTimeout { .. } => code::CONNECT,
        Error::ConnectionClosed(ConnectionError::AuthenticationFailed(_)) => code::CONNECT,
        _ => code::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carehare_tokio::CloseReason;

    fn reason(code: u16) -> CloseReason {
        CloseReason {
            code,
            text: "NOT_FOUND - no queue 'q' in vhost '/'".into(),
            class_id: 50,
            method_id: 10,
        }
    }

    #[test]
    fn each_class_has_its_code() {
        let refused = CliError::Amqp(Error::ChannelClosedByServer(reason(404)));
        assert_eq!(refused.exit_code(), code::REFUSED);
        assert_eq!(
            refused.to_string(),
            "RabbitMQ closed the channel: 404 NOT_FOUND - no queue 'q' in vhost '/'"
        );
        assert_eq!(
            CliError::Amqp(Error::ServerSentNack).exit_code(),
            code::NOT_CONFIRMED
        );
        assert_eq!(
            CliError::Amqp(Error::Timeout(Duration::from_secs(1))).exit_code(),
            code::TIMEOUT
        );
        assert_eq!(
            CliError::Connect(Error::ConnectionClosed(ConnectionError::UnexpectedEof)).exit_code(),
            code::CONNECT
        );
        assert_eq!(
            CliError::Amqp(Error::ConnectionClosed(ConnectionError::UnexpectedEof)).exit_code(),
            code::OTHER
        );
        assert_eq!(CliError::usage("bad").exit_code(), code::USAGE);
        assert_eq!(CliError::Empty.exit_code(), code::EMPTY);
    }
}
