//! The errors users match on, named after Python carehare's exceptions.

use carehare_core::types::ShortStr;

pub use carehare_core::error::{Cause, CloseReason, ConnectionError, UsageError};

use crate::address::Address;
use crate::message::Returned;
use crate::tls::{CertificateProblem, TlsError};
use crate::uri::UrlError;

/// Everything an operation can fail with.
///
/// The variants mirror Python carehare's exceptions:
/// [`ChannelClosedByServer`](Error::ChannelClosedByServer) means RabbitMQ
/// refused this one operation and the connection is still usable;
/// [`ConnectionClosed`](Error::ConnectionClosed) means the whole connection
/// ended, and carries why (e.g. [`ConnectionError::ClosedByServer`] with
/// "320 CONNECTION_FORCED", or [`ConnectionError::ClosedByHeartbeatMonitor`]).
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// use carehare_client::{ConnectionError, Error};
/// match connection.publish("Hello, world!", "my-exchange", "key").await {
///     Ok(()) => {}
///     Err(Error::ServerSentNack) => eprintln!("Failed to publish message"),
///     // e.g. "RabbitMQ closed the channel: 404 NOT_FOUND - no exchange 'my-exchange' in vhost '/'"
///     Err(e @ Error::ChannelClosedByServer(_)) => eprintln!("{e}"),
///     Err(Error::ConnectionClosed(ConnectionError::ClosedByHeartbeatMonitor(_))) => eprintln!("RabbitMQ went away"),
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// RabbitMQ closed the channel this operation ran on: e.g. `404
    /// NOT_FOUND` for a missing exchange or queue, `405 RESOURCE_LOCKED` for
    /// another connection's exclusive queue, `406 PRECONDITION_FAILED` for
    /// a redeclare with other arguments. The connection is still usable.
    #[error("RabbitMQ closed the channel: {0}")]
    ChannelClosedByServer(CloseReason),
    /// RabbitMQ could not take responsibility for a published message
    /// (`basic.nack`), e.g. a full queue with `x-overflow=reject-publish`.
    #[error("RabbitMQ refused the message (basic.nack)")]
    ServerSentNack,
    /// RabbitMQ returned a mandatory message that no queue would take
    /// (see [`Connection::publish_mandatory`](crate::Connection::publish_mandatory)).
    #[error("RabbitMQ returned the message: {} {}", .0.reply_code, .0.reply_text)]
    Returned(Box<Returned>),
    /// No answer within the given time (e.g. an RPC reply).
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection ended; the reason says why.
    #[error("connection closed: {0}")]
    ConnectionClosed(#[source] ConnectionError),
    /// The consumer was closed (by `close()`, or by dropping it) while this
    /// call was waiting.
    #[error("the consumer was closed")]
    ConsumerClosed,
    /// RabbitMQ cancelled the consumer, e.g. because its queue was deleted.
    #[error("RabbitMQ cancelled the consumer (was its queue deleted?)")]
    ConsumerCancelledByServer,
    /// The request was invalid before anything was sent (e.g. a name over
    /// 255 bytes, or arguments larger than `frame_max`).
    #[error("invalid request: {0}")]
    Usage(#[from] UsageError),
    /// The URL could not be parsed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// TLS could not be set up (bad CA file, bad client certificate...).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The TCP connection or the TLS handshake failed (but see
    /// [`TlsVerification`](Error::TlsVerification) for a server
    /// certificate that does not verify).
    #[error("could not connect to {address}: {error}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The I/O error (e.g. of kind `ConnectionRefused`), or the TLS
        /// library's error wrapped in one.
        #[source]
        error: Cause<std::io::Error>,
    },
    /// The server's TLS certificate did not verify: it expired, names
    /// another host, was not signed by a trusted CA... `problem` says
    /// which, without depending on the TLS library; the library's own
    /// error (a `rustls::Error`) is the [`source`](std::error::Error::source).
    /// Not [transient](Error::is_transient): retrying would meet the same
    /// certificate.
    ///
    /// ```no_run
    /// # async fn f(runtime: std::sync::Arc<dyn carehare_client::Runtime>) {
    /// use carehare_client::{CertificateProblem, ConnectOptions, Error};
    /// let options = ConnectOptions::from_url("amqps://rabbit.example.com/").unwrap();
    /// match carehare_client::connect_with_runtime(runtime, options).await {
    ///     Err(Error::TlsVerification { problem: CertificateProblem::Expired, .. }) => {
    ///         eprintln!("RabbitMQ's certificate has expired")
    ///     }
    ///     Err(Error::TlsVerification { problem: CertificateProblem::NotValidForName, server_name, .. }) => {
    ///         eprintln!("RabbitMQ's certificate is not for {server_name}: set TlsOptions::server_name?")
    ///     }
    ///     Err(e) => eprintln!("{e}"),
    ///     Ok(_) => {}
    /// }
    /// # }
    /// ```
    #[error(
        "could not connect to {address}: the server's TLS certificate did not verify for {server_name}: {source}"
    )]
    TlsVerification {
        /// `host:port`.
        address: String,
        /// The name the certificate was checked against: the host, or
        /// [`TlsOptions::server_name`](crate::TlsOptions::server_name).
        server_name: String,
        /// What is wrong with the certificate.
        problem: CertificateProblem,
        /// The TLS library's error, with the details (e.g. the names the
        /// certificate is valid for).
        #[source]
        source: Cause<dyn std::error::Error + Send + Sync>,
    },
    /// TCP, TLS and the AMQP handshake together took longer than
    /// `connection_timeout`.
    #[error("could not connect to {address} within {timeout:?}")]
    ConnectTimeout {
        /// `host:port`.
        address: String,
        /// The time this attempt had: `connection_timeout` for a single
        /// address, else at most `address_timeout`.
        timeout: std::time::Duration,
    },
    /// Every address of [`ConnectOptions`](crate::ConnectOptions) was tried
    /// and none connected (only with more than one address, counting each
    /// IP address a host name resolves to). Each attempt is listed in the
    /// order tried, with why it failed: usually
    /// [`Connect`](Error::Connect) or [`ConnectTimeout`](Error::ConnectTimeout).
    ///
    /// ```
    /// use carehare_client::{Address, Error};
    /// let error = Error::AllAddressesFailed { attempts: vec![] };
    /// if let Error::AllAddressesFailed { attempts } = &error {
    ///     for (address, why) in attempts {
    ///         eprintln!("{address}: {why}");
    ///     }
    /// }
    /// # let _: Option<Address> = None;
    /// ```
    #[error("could not connect to any of {} addresses: {}", attempts.len(), list_attempts(attempts))]
    AllAddressesFailed {
        /// Each address tried (as configured), and its error.
        attempts: Vec<(Address, Error)>,
    },
    /// The connection was lost before RabbitMQ confirmed this publish, so
    /// it may or may not have been routed. Only from a
    /// [`RecoveringPublisher`](crate::RecoveringPublisher) with
    /// [`Republish::FailInDoubt`](crate::Republish::FailInDoubt); the
    /// default publishes it again instead.
    #[error(
        "the connection was lost before the publish was confirmed: it may or may not have been routed"
    )]
    InDoubt,
    /// The connection was down for longer than
    /// [`RecoveryOptions::outage_timeout`](crate::RecoveryOptions::outage_timeout)
    /// while this call waited for it.
    #[error("no connection to RabbitMQ within {0:?}: recovery is still trying")]
    RecoveryTimeout(std::time::Duration),
    /// carehare broke one of its own rules (a bug: please report it). The
    /// text says which. The connection may still be usable.
    #[error("internal error in carehare: {0}")]
    Internal(&'static str),
}

fn list_attempts(attempts: &[(Address, Error)]) -> String {
    let mut out = String::new();
    for (i, (_, error)) in attempts.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        // Each error already names its address.
        out.push_str(&error.to_string());
    }
    out
}

impl Error {
    /// Whether trying again later may succeed: the link or the broker went
    /// away (a reset, EOF, heartbeat loss, a forced close such as 320, a
    /// timeout). `false` for what a retry would only repeat: bad
    /// credentials (403), a vhost that is missing or not allowed (530), a
    /// SASL mechanism the server does not offer, TLS or URL settings, a
    /// server certificate that does not verify, misuse,
    /// and the outcome of one operation (a channel refusal, a nack, a
    /// return). Also `false` when we ended the connection ourselves, or
    /// when its runtime shut down.
    ///
    /// Connecting to several addresses stops at the first error that is not
    /// transient, and a [`RecoveringConnection`](crate::RecoveringConnection)
    /// gives up on it at once (unless told to retry everything).
    ///
    /// ```
    /// use carehare_client::{CloseReason, ConnectionError, Error};
    /// let forced = CloseReason { code: 320, text: "CONNECTION_FORCED".into(), class_id: 0, method_id: 0 };
    /// assert!(Error::ConnectionClosed(ConnectionError::ClosedByServer(forced.clone())).is_transient());
    /// let refused = CloseReason { code: 403, ..forced };
    /// assert!(!Error::ConnectionClosed(ConnectionError::AuthenticationFailed(refused)).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            // A certificate that does not verify is `TlsVerification`, not
            // transient: it falls to the last arm.
            Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::Timeout(_)
            | Error::RecoveryTimeout(_) => true,
            Error::AllAddressesFailed { attempts } => {
                attempts.iter().all(|(_, error)| error.is_transient())
            }
            Error::ConnectionClosed(c) => match c {
                ConnectionError::AuthenticationFailed(_)
                | ConnectionError::MechanismNotOffered { .. }
                | ConnectionError::InvalidVirtualHost(_)
                | ConnectionError::ClosedByClient
                | ConnectionError::CloseTimeout(_)
                | ConnectionError::DriverStopped => false,
                // 403 ACCESS_REFUSED; 530 NOT_ALLOWED: no such vhost, or
                // no access to it. Users and vhosts are cluster-wide.
                ConnectionError::ClosedByServer(reason) => !matches!(reason.code, 403 | 530),
                _ => true,
            },
            _ => false,
        }
    }

    /// The AMQP reply code, when RabbitMQ gave one.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let code = connection.queue_declare("q", Default::default()).await.err().and_then(|e| e.reply_code());
    /// assert!(code.is_none() || code == Some(406));
    /// # Ok(()) }
    /// ```
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Error::ChannelClosedByServer(r) => Some(r.code),
            Error::ConnectionClosed(
                ConnectionError::ClosedByServer(r) | ConnectionError::AuthenticationFailed(r),
            ) => Some(r.code),
            _ => None,
        }
    }
}

impl From<carehare_core::error::ChannelError> for Error {
    fn from(e: carehare_core::error::ChannelError) -> Self {
        use carehare_core::error::ChannelError as C;
        match e {
            C::ClosedByServer(r) => Error::ChannelClosedByServer(r),
            C::ConnectionClosed(c) => Error::ConnectionClosed(c),
            // Only our own consumer/operation plumbing closes channels early.
            C::ClosedByClient => Error::ConsumerClosed,
            _ => Error::ConsumerClosed,
        }
    }
}

/// Converts a user string to a `shortstr`, or a usage error.
pub(crate) fn short(s: &str) -> Result<ShortStr, Error> {
    ShortStr::new(s).map_err(|e| Error::Usage(UsageError::StringTooLong(e.len)))
}

#[cfg(test)]
mod tests {
    use std::io;

    use carehare_core::error::{ChannelError, DecodeError, ProtocolViolation};

    use super::*;
    use crate::tls::TlsError;

    /// Each error of `error`'s `source()` chain, `error` first.
    fn chain<'a>(
        error: &'a (dyn std::error::Error + 'static),
    ) -> Vec<&'a (dyn std::error::Error + 'static)> {
        std::iter::successors(Some(error), |&e| e.source()).collect()
    }

    /// The kind of the first `io::Error` in the chain.
    fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
        chain(error)
            .into_iter()
            .find_map(|e| e.downcast_ref::<io::Error>())
            .map(io::Error::kind)
    }

    fn transport(kind: io::ErrorKind) -> ConnectionError {
        ConnectionError::Transport(io::Error::new(kind, "the link went").into())
    }

    #[test]
    fn the_io_error_kind_is_reachable_through_source() {
        let reset = Error::ConnectionClosed(transport(io::ErrorKind::ConnectionReset));
        assert_eq!(io_kind(&reset), Some(io::ErrorKind::ConnectionReset));
        // Error -> ConnectionError -> io::Error, each with its own text.
        let texts: Vec<String> = chain(&reset).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts,
            [
                "connection closed: transport error: the link went",
                "transport error: the link went",
                "the link went",
            ]
        );

        let refused = Error::Connect {
            address: "a:1".into(),
            error: io::Error::from(io::ErrorKind::ConnectionRefused).into(),
        };
        assert_eq!(io_kind(&refused), Some(io::ErrorKind::ConnectionRefused));

        // A channel's end, in the core's own terms.
        let channel = ChannelError::ConnectionClosed(transport(io::ErrorKind::BrokenPipe));
        assert_eq!(io_kind(&channel), Some(io::ErrorKind::BrokenPipe));
        // ...and once converted to the client's error.
        assert_eq!(
            io_kind(&Error::from(channel)),
            Some(io::ErrorKind::BrokenPipe)
        );

        // A CA file that is not there.
        let tls = missing_ca_file();
        assert_eq!(io_kind(&tls), Some(io::ErrorKind::NotFound));

        // Inside an `AllAddressesFailed`, each attempt keeps its chain.
        let all = Error::AllAddressesFailed {
            attempts: vec![(Address::new("a", 1), refused.clone())],
        };
        if let Error::AllAddressesFailed { attempts } = &all {
            assert_eq!(
                io_kind(&attempts[0].1),
                Some(io::ErrorKind::ConnectionRefused)
            );
        }
    }

    #[test]
    fn other_causes_are_reachable_through_source() {
        let violation = ConnectionError::Protocol(ProtocolViolation::Decode {
            channel: 1,
            error: DecodeError::InvalidUtf8,
        });
        let e = Error::ConnectionClosed(violation);
        assert!(
            chain(&e)
                .iter()
                .any(|e| e.downcast_ref::<DecodeError>() == Some(&DecodeError::InvalidUtf8)),
            "{:?}",
            chain(&e)
        );

        #[cfg(feature = "rustls")]
        rustls_error_is_the_source_of_a_verification_failure();
    }

    /// A certificate that did not verify: rustls's own error is the
    /// source, for whoever depends on rustls.
    #[cfg(feature = "rustls")]
    fn rustls_error_is_the_source_of_a_verification_failure() {
        use std::error::Error as _;

        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io_error = io::Error::new(io::ErrorKind::InvalidData, rustls_error.clone());
        let Ok((problem, source)) = crate::tls::certificate_problem(io_error) else {
            panic!("not a certificate problem");
        };
        let e = Error::TlsVerification {
            address: "a:1".into(),
            server_name: "a".into(),
            problem,
            source,
        };
        assert!(!e.is_transient());
        assert_eq!(
            e.source().and_then(|s| s.downcast_ref::<rustls::Error>()),
            Some(&rustls_error)
        );
    }

    /// The error `connect` gives for a CA file that is not there.
    fn missing_ca_file() -> Error {
        Error::Tls(TlsError::ReadFile {
            what: "CA certificate",
            path: "/nonexistent/carehare/ca.pem".into(),
            source: io::Error::from(io::ErrorKind::NotFound).into(),
        })
    }
}
