//! Everything `connect` needs: where, how (TCP or TLS), who, and limits.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use carehare_core::ConnectionConfig;

use crate::address::{Address, AddressOrder};
use crate::metrics::Metrics;

/// Connection options. Build them from a URL with
/// [`ConnectOptions::from_url`] (or several URLs naming the nodes of one
/// cluster with [`ConnectOptions::from_urls`]), or by hand, starting from
/// [`ConnectOptions::default`] (`amqp://guest:guest@localhost:5672/`).
///
/// ## Several addresses
///
/// `host:port` is the first address; [`extra_addresses`](Self::extra_addresses)
/// adds more nodes of the same cluster. `connect` tries them in
/// [`address_order`](Self::address_order) until one completes TCP, TLS and
/// the AMQP handshake. A host name that resolves to several IP addresses
/// counts as several addresses. Each attempt may take
/// [`address_timeout`](Self::address_timeout), except the last one, which
/// gets whatever is left of [`connection_timeout`](Self::connection_timeout):
/// with a single address, that is all of it.
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
    /// More addresses of the same cluster, tried after `host:port` (or
    /// shuffled with it, see [`address_order`](Self::address_order)). Every
    /// address uses the same credentials, vhost and TLS settings; with TLS
    /// the server certificate is checked against each address's own host
    /// name (unless [`TlsOptions::server_name`] is set).
    pub extra_addresses: Vec<Address>,
    /// In order (the default) or shuffled.
    pub address_order: AddressOrder,
    /// The longest one address may take (TCP, TLS and AMQP handshake) before
    /// `connect` moves on to the next, within `connection_timeout`. The last
    /// address gets all that is left. Default 10 s.
    pub address_timeout: Duration,
    /// `Some` for `amqps`.
    pub tls: Option<TlsOptions>,
    /// Credentials, vhost, tune proposals and client limits for the core.
    pub amqp: ConnectionConfig,
    /// Covers TCP connect, the TLS handshake and the AMQP handshake, for
    /// all addresses together.
    pub connection_timeout: Duration,
    /// Where the connection reports what it counts (messages published,
    /// confirmed, delivered, acked..., bytes, reconnects, time blocked):
    /// see [`Metrics`] and the ready-made [`Counters`](crate::Counters).
    /// `None` (the default) counts nothing.
    pub metrics: Option<Arc<dyn Metrics>>,
}

impl ConnectOptions {
    /// Every address, in the order given: `host:port`, then
    /// [`extra_addresses`](Self::extra_addresses).
    ///
    /// ```
    /// use carehare_client::{Address, ConnectOptions};
    /// let options = ConnectOptions::from_urls(["amqp://127.0.0.1:5781", "amqp://127.0.0.1:5782"])?;
    /// assert_eq!(options.addresses(), [Address::new("127.0.0.1", 5781), Address::new("127.0.0.1", 5782)]);
    /// # Ok::<(), carehare_client::UrlError>(())
    /// ```
    pub fn addresses(&self) -> Vec<Address> {
        std::iter::once(Address::new(self.host.clone(), self.port))
            .chain(self.extra_addresses.iter().cloned())
            .collect()
    }

    /// Replaces every address: the first goes to `host` and `port`, the rest
    /// to [`extra_addresses`](Self::extra_addresses). An empty list keeps
    /// `host` and `port` and clears `extra_addresses`.
    ///
    /// ```
    /// use carehare_client::{Address, ConnectOptions};
    /// let mut options = ConnectOptions::from_url("amqp://app:secret@rabbit-1/prod")?;
    /// options.set_addresses([Address::new("rabbit-1", 5672), Address::new("rabbit-2", 5672)]);
    /// assert_eq!(options.extra_addresses, [Address::new("rabbit-2", 5672)]);
    /// # Ok::<(), carehare_client::UrlError>(())
    /// ```
    pub fn set_addresses(&mut self, addresses: impl IntoIterator<Item = Address>) {
        let mut addresses = addresses.into_iter();
        if let Some(first) = addresses.next() {
            self.host = first.host;
            self.port = first.port;
        }
        self.extra_addresses = addresses.collect();
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5672,
            extra_addresses: Vec::new(),
            address_order: AddressOrder::InOrder,
            address_timeout: Duration::from_secs(10),
            tls: None,
            amqp: ConnectionConfig::default(),
            connection_timeout: Duration::from_secs(30),
            metrics: None,
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
    /// ignored. Only with the `rustls` feature (on by default).
    #[cfg(feature = "rustls")]
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
        let mut d = f.debug_struct("TlsOptions");
        #[cfg(feature = "rustls")]
        d.field(
            "config",
            &self.config.as_ref().map(|_| "<rustls::ClientConfig>"),
        );
        d.field("ca_file", &self.ca_file)
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
