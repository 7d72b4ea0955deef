//! [`UrlError`]. Its message for an unknown parameter lists the supported
//! ones from the table in `params.rs`, so this module reads that table and
//! is read by the parsers.

/// Why a URL could not be turned into [`ConnectOptions`](crate::ConnectOptions).
///
/// No variant ever contains the URL, the user name or the password.
///
/// ```
/// use carehare_client::{ConnectOptions, UrlError};
/// let err = ConnectOptions::from_url("http://guest:secret@localhost/").unwrap_err();
/// assert!(matches!(err, UrlError::UnsupportedScheme(_)));
/// assert!(!err.to_string().contains("secret"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL is malformed (the message says how).
    #[error("invalid URL: {0}")]
    Parse(String),
    /// The scheme is neither `amqp` nor `amqps`.
    #[error("invalid URL: unsupported scheme \"{0}\": use amqp or amqps")]
    UnsupportedScheme(String),
    /// The path does not name a valid vhost (the message says why).
    #[error("invalid URL: invalid vhost: {0}")]
    InvalidVhost(&'static str),
    /// A query parameter this client does not know (possibly a typo).
    #[error(
        "invalid URL: unknown query parameter \"{0}\" (supported: {supported})",
        supported = super::params::supported()
    )]
    UnknownParameter(String),
    /// A query parameter given twice (`name` and `connection_name` count as
    /// the same parameter).
    #[error("invalid URL: query parameter \"{0}\" is given more than once")]
    DuplicateParameter(String),
    /// A query parameter with a value that is not acceptable.
    #[error("invalid URL: query parameter {name}={value:?}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: String,
        /// Its (percent-decoded) value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS parameter in an `amqp://` URL.
    #[error("invalid URL: query parameter \"{0}\" needs TLS: use an amqps:// URL")]
    TlsParamWithoutTls(&'static str),
    /// [`ConnectOptions::from_urls`] was given no URL.
    ///
    /// [`ConnectOptions::from_urls`]: crate::ConnectOptions::from_urls
    #[error("invalid URLs: no URL given")]
    NoUrls,
    /// The URLs given to [`ConnectOptions::from_urls`] differ in more than
    /// host and port: they must name nodes of one cluster with the same
    /// scheme, credentials, vhost and query options. The field says which
    /// part differs (`"scheme"`, `"credentials"`, `"vhost"` or
    /// `"query options"`) and `index` which URL (0-based) differs from the
    /// first.
    ///
    /// [`ConnectOptions::from_urls`]: crate::ConnectOptions::from_urls
    #[error(
        "invalid URLs: URL #{index} has a different {part} than the first; cluster URLs may only differ in host and port"
    )]
    ClusterUrlsDisagree {
        /// Which part differs.
        part: &'static str,
        /// The 0-based position of the URL that differs from the first.
        index: usize,
    },
    /// `certfile` without `keyfile`, or the other way round.
    #[error(
        "invalid URL: query parameter \"{present}\" needs \"{missing}\": a client certificate \
         needs both certfile and keyfile"
    )]
    IncompleteClientCert {
        /// The parameter that was given.
        present: &'static str,
        /// The parameter that is missing.
        missing: &'static str,
    },
}
