//! Everything `connect` needs: where, how (TCP or TLS), who, and limits.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use carehare_core::ConnectionConfig;

/// Connection options. Build them from a URL with
/// [`ConnectOptions::from_url`], or by hand, starting from
/// [`ConnectOptions::default`] (`amqp://guest:guest@localhost:5672/`).
///
/// ```
/// use std::time::Duration;
/// use carehare_client::ConnectOptions;
/// let mut options: ConnectOptions = "amqps://user:p%40ss@rabbit.example.com/prod?heartbeat=30".parse()?;
/// options.connection_timeout = Duration::from_secs(5);
/// assert_eq!(options.port, 5671);
/// assert_eq!(options.amqp.virtual_host, "prod");
/// assert!(!format!("{options:?}").contains("p@ss"));
/// # Ok::<(), carehare_client::UrlError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Some` for `amqps`.
    pub tls: Option<TlsOptions>,
    /// Credentials, vhost, tune proposals and client limits for the core.
    pub amqp: ConnectionConfig,
    /// Covers TCP connect, the TLS handshake and the AMQP handshake.
    pub connection_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5672,
            tls: None,
            amqp: ConnectionConfig::default(),
            connection_timeout: Duration::from_secs(30),
        }
    }
}

/// TLS settings (rustls). Hostname verification is always on.
///
/// ```
/// use carehare_client::{ClientCert, ConnectOptions, TlsOptions};
/// let options = ConnectOptions {
///     host: "rabbit.example.com".into(),
///     port: 5671,
///     tls: Some(TlsOptions {
///         ca_file: Some("/etc/rabbitmq/ca.pem".into()),
///         client_cert: Some(ClientCert { cert_file: "client.pem".into(), key_file: "client.key".into() }),
///         ..Default::default()
///     }),
///     ..Default::default()
/// };
/// assert!(options.tls.is_some());
/// ```
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// A complete rustls config. When set, `ca_file` and `client_cert` are
    /// ignored.
    pub config: Option<Arc<rustls::ClientConfig>>,
    /// PEM file of CA certificates to trust instead of the platform's
    /// root store.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain and private key for client authentication
    /// (needed for `auth_mechanism=external`).
    pub client_cert: Option<ClientCert>,
    /// Name to verify the server certificate against (and send as SNI);
    /// defaults to the host.
    pub server_name: Option<String>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field(
                "config",
                &self.config.as_ref().map(|_| "<rustls::ClientConfig>"),
            )
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A client certificate: PEM chain and PEM private key, as files.
///
/// ```
/// let cert = carehare_client::ClientCert { cert_file: "client.pem".into(), key_file: "client.key".into() };
/// assert_eq!(cert.key_file.to_str(), Some("client.key"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}
