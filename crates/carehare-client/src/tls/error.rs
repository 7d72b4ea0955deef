//! What can go wrong with TLS: a configuration that cannot be built
//! ([`TlsError`]), and a server certificate that does not verify
//! ([`CertificateProblem`]). Both exist in every build, with or without a
//! TLS backend, so that matching on them never needs a feature.

use std::path::PathBuf;

use carehare_core::error::Cause;

/// Why the TLS configuration could not be built. Reported by `connect`
/// before any network traffic.
///
/// ```no_run
/// # async fn f(runtime: std::sync::Arc<dyn carehare_client::Runtime>) {
/// use carehare_client::{ConnectOptions, Error};
/// let options = ConnectOptions::from_url("amqps://localhost/?cacertfile=/no/such/ca.pem").unwrap();
/// match carehare_client::connect_with_runtime(runtime, options).await {
///     Err(Error::Tls(e)) => eprintln!("{e}"), // names /no/such/ca.pem
///     _ => {}
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("TLS: cannot read {what} file {path}: {source}", path = .path.display())]
    ReadFile {
        /// What the file should hold ("CA certificate", "client certificate",
        /// "client key").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error (e.g. of kind `NotFound`).
        source: Cause<std::io::Error>,
    },
    /// A file is not valid PEM.
    #[error("TLS: invalid PEM in {what} file {path}: {source}", path = .path.display())]
    InvalidPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM parser's error.
        source: Cause<dyn std::error::Error + Send + Sync>,
    },
    /// A certificate file holds no `CERTIFICATE` section.
    #[error("TLS: no certificates in {what} file {path}", path = .path.display())]
    NoCertificates {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM).
    #[error("TLS: no private key in client key file {path}", path = .path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The host (or `server_name`) is neither a DNS name nor an IP address.
    #[error("TLS: invalid server name \"{0}\": expected a DNS name or an IP address")]
    InvalidServerName(String),
    /// rustls rejected the configuration (an unusable client certificate
    /// or key, a key that does not match its certificate, ...). The cause
    /// is rustls's error.
    #[error("TLS: {0}")]
    Rustls(#[source] Cause<dyn std::error::Error + Send + Sync>),
    /// A certificate in the CA file cannot be used as a trust anchor.
    #[error("TLS: unusable CA certificate in {path}: {source}", path = .path.display())]
    UnusableCaCertificate {
        /// The CA file.
        path: PathBuf,
        /// rustls's error.
        source: Cause<dyn std::error::Error + Send + Sync>,
    },
    /// No CA file was given and the platform's certificate store yielded no
    /// usable root certificate.
    #[error(
        "TLS: no usable root certificates in the platform's certificate store{0}; \
         give a CA file (TlsOptions::ca_file, or cacertfile= in the URL)"
    )]
    NoNativeRoots(String),
    /// No CA file was given and this build has no root store to fall back
    /// on: enable the `native-roots` or `webpki-roots` feature, or give a
    /// CA file.
    #[error(
        "TLS: no CA file given and no root certificates compiled in; give a CA file \
         (TlsOptions::ca_file, or cacertfile= in the URL) or enable carehare's \
         `native-roots` or `webpki-roots` feature"
    )]
    NoRootStore,
    /// Neither the `ring` nor the `aws-lc-rs` feature is on, and no
    /// process-wide rustls crypto provider was installed
    /// (`rustls::crypto::CryptoProvider::install_default`).
    #[error(
        "TLS: no crypto provider: enable carehare's `ring` or `aws-lc-rs` feature, \
         or install a process-wide rustls provider"
    )]
    NoCryptoProvider,
    /// TLS options were given (an `amqps://` URL, say) but this build has
    /// no TLS: enable carehare's `rustls` feature (on by default).
    #[error("TLS: amqps needs carehare's `rustls` feature, which this build leaves out")]
    NotCompiledIn,
}

/// Why a server certificate did not verify: see
/// [`Error::TlsVerification`](crate::Error::TlsVerification).
///
/// ```
/// use carehare_client::CertificateProblem;
/// assert_eq!(CertificateProblem::UnknownIssuer.to_string(), "it was not issued by a trusted CA");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// It has expired (or the clock is wrong).
    Expired,
    /// It is not valid yet (or the clock is wrong).
    NotYetValid,
    /// It is not valid for the name it was checked against: connect by the
    /// name it carries, or set
    /// [`TlsOptions::server_name`](crate::TlsOptions::server_name).
    NotValidForName,
    /// No trusted CA issued it: a self-signed certificate, or a CA missing
    /// from [`TlsOptions::ca_file`](crate::TlsOptions::ca_file) (or from
    /// the platform's roots).
    UnknownIssuer,
    /// Its signature does not verify.
    BadSignature,
    /// It has been revoked.
    Revoked,
    /// Anything else (a bad encoding, a wrong purpose, an unsupported
    /// algorithm...), in the TLS library's words.
    Other(String),
}

impl std::fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertificateProblem::Expired => f.write_str("it has expired"),
            CertificateProblem::NotYetValid => f.write_str("it is not valid yet"),
            CertificateProblem::NotValidForName => f.write_str("it is not valid for the name"),
            CertificateProblem::UnknownIssuer => f.write_str("it was not issued by a trusted CA"),
            CertificateProblem::BadSignature => f.write_str("its signature does not verify"),
            CertificateProblem::Revoked => f.write_str("it has been revoked"),
            CertificateProblem::Other(what) => f.write_str(what),
        }
    }
}

/// Why a TLS handshake failed: the server's certificate did not verify, or
/// anything else (a refused connection, a TLS alert...) as an I/O error.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "rustls"),
    expect(dead_code, reason = "no handshake without a TLS backend")
)]
pub(crate) enum HandshakeError {
    /// The certificate did not verify; `source` is the TLS library's error.
    Certificate {
        /// What is wrong with it.
        problem: CertificateProblem,
        /// The TLS library's error.
        source: Cause<dyn std::error::Error + Send + Sync>,
    },
    /// Any other failure.
    Io(std::io::Error),
}
