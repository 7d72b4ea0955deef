//! The layer's settings, named and defaulted like Python's
//! `RabbitmqChannelLayer(host=..., expiry=..., ...)`.

use std::time::Duration;

use carehare_tokio::{ConnectOptions, RecoveryOptions, TlsOptions};

use crate::Error;

/// Settings for a [`Layer`](crate::Layer). The names and defaults are
/// Python `channels_rabbitmq`'s `CONFIG` keys.
///
/// ```
/// use std::time::Duration;
/// let mut config = carehare_layer::Config::new("amqp://guest:guest@127.0.0.1/");
/// config.expiry = Some(Duration::from_secs(10));
/// config.local_capacity = 50;
/// assert_eq!(config.remote_capacity, Some(100));
/// assert_eq!(config.groups_exchange, "groups");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The RabbitMQ URL (`amqp://` or `amqps://`, RabbitMQ's URI spec;
    /// query parameters such as `heartbeat`, `connection_timeout` and
    /// `name` are understood). Default: `amqp://guest:guest@127.0.0.1/asgi`.
    ///
    /// To connect to a cluster, either let `host`'s name resolve to every
    /// node's IP address (as Python's README advises: each address is
    /// tried in turn), or list the nodes' URLs in [`hosts`](Self::hosts).
    pub host: String,
    /// The URLs of the nodes of one RabbitMQ cluster (Rust-only; Python
    /// takes one `host`). When not empty, it replaces `host`: the layer
    /// connects to the first node that answers, in this order, and when
    /// that node goes away it reconnects to another, declaring its queue,
    /// group bindings and consumer again. Default: empty.
    pub hosts: Vec<String>,
    /// Minimum time a message waits in RabbitMQ before it may be dropped:
    /// the queue's `x-message-ttl`. `None`: no TTL. Default: 60 s.
    pub expiry: Option<Duration>,
    /// Messages held in memory, waiting for `receive` (a message for a
    /// group with several local channels counts once): the consumer's
    /// prefetch count. Beyond it, messages wait in RabbitMQ. At least 1.
    /// Default: 100.
    pub local_capacity: u16,
    /// Messages RabbitMQ holds for this layer before `send`s to it fail
    /// with [`ChannelFull`](crate::Error::ChannelFull): the queue's
    /// `x-max-length`, with `x-overflow: reject-publish`. `None`: no
    /// limit. Default: 100.
    pub remote_capacity: Option<u32>,
    /// Minimum time a received message is held in memory waiting for
    /// `receive` before it may be dropped (acked, with a rate-limited
    /// warning). `None`: the same as `expiry` (no local expiry if that is
    /// `None` too). Default: `None`.
    pub local_expiry: Option<Duration>,
    /// TLS settings (CA file, client certificate, a rustls config). When
    /// set, the connection uses TLS even for an `amqp://` URL, whose
    /// default port becomes 5671. Default: `None` (TLS only for `amqps://`,
    /// with the platform's root certificates).
    pub tls: Option<TlsOptions>,
    /// Full connection options, replacing `host`, `hosts` and `tls` (for
    /// settings a URL can't carry, e.g. shuffling a cluster's nodes with
    /// `address_order`). Default: `None`.
    pub connect_options: Option<ConnectOptions>,
    /// The direct exchange that carries group messages. Default: `groups`.
    pub groups_exchange: String,
    /// How the layer reconnects (Rust-only): the backoff between attempts
    /// (default: 50 ms doubling to 800 ms, jittered), whether errors that
    /// retrying can't fix are retried anyway (`retry_permanent`, default
    /// `false`: bad credentials or a missing vhost end the layer at once
    /// with [`Error::Connect`](crate::Error::Connect)), and how long an
    /// operation waits for a connection (`outage_timeout`, default: as
    /// long as it takes). The first connection is retried with the same
    /// backoff.
    pub recovery: RecoveryOptions,
    /// This layer's queue name. Default: `None`, a random
    /// `channels_<12 letters>` as in Python; set it only to debug or test.
    pub queue_name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "amqp://guest:guest@127.0.0.1/asgi".into(),
            hosts: Vec::new(),
            expiry: Some(Duration::from_secs(60)),
            local_capacity: 100,
            remote_capacity: Some(100),
            local_expiry: None,
            tls: None,
            connect_options: None,
            groups_exchange: "groups".into(),
            recovery: RecoveryOptions::default(),
            queue_name: None,
        }
    }
}

impl Config {
    /// The defaults, with `host` set.
    ///
    /// ```
    /// let config = carehare_layer::Config::new("amqps://user:pass@rabbit.example.com/asgi");
    /// assert_eq!(config.local_capacity, 100);
    /// ```
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            ..Self::default()
        }
    }

    /// The defaults, connecting to the nodes of a cluster: `hosts` set
    /// (see [`hosts`](Self::hosts)).
    ///
    /// ```
    /// let config = carehare_layer::Config::with_hosts([
    ///     "amqp://guest:guest@rabbit-1/asgi",
    ///     "amqp://guest:guest@rabbit-2/asgi",
    ///     "amqp://guest:guest@rabbit-3/asgi",
    /// ]);
    /// assert_eq!(config.connect_options()?.addresses().len(), 3);
    /// # Ok::<(), carehare_layer::Error>(())
    /// ```
    pub fn with_hosts<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The URLs this config connects to: `hosts`, or else `host`.
    fn urls(&self) -> Vec<&str> {
        if self.hosts.is_empty() {
            vec![self.host.as_str()]
        } else {
            self.hosts.iter().map(String::as_str).collect()
        }
    }

    /// The local expiry in force: `local_expiry`, else `expiry`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut config = carehare_layer::Config::default();
    /// assert_eq!(config.effective_local_expiry(), Some(Duration::from_secs(60)));
    /// config.local_expiry = Some(Duration::from_secs(5));
    /// assert_eq!(config.effective_local_expiry(), Some(Duration::from_secs(5)));
    /// ```
    pub fn effective_local_expiry(&self) -> Option<Duration> {
        self.local_expiry.or(self.expiry)
    }

    /// The connection options this config connects with.
    ///
    /// ```
    /// let mut config = carehare_layer::Config::new("amqp://guest:guest@127.0.0.1/");
    /// config.tls = Some(Default::default());
    /// let options = config.connect_options()?;
    /// assert_eq!(options.port, 5671);
    /// assert!(options.tls.is_some());
    /// # Ok::<(), carehare_layer::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that can't be parsed.
    pub fn connect_options(&self) -> Result<ConnectOptions, Error> {
        if let Some(options) = &self.connect_options {
            return Ok(options.clone());
        }
        let field = if self.hosts.is_empty() {
            "host"
        } else {
            "hosts"
        };
        let urls = self.urls();
        let mut options = ConnectOptions::from_urls(urls.iter().copied())
            .map_err(|e| Error::Config(format!("{field}: {e}")))?;
        if let Some(tls) = &self.tls {
            if options.tls.is_none() {
                // As in Python, TLS makes 5671 the default port: of each
                // URL that names none.
                let mut addresses = options.addresses();
                for (address, url) in addresses.iter_mut().zip(&urls) {
                    if !has_explicit_port(url) {
                        address.port = 5671;
                    }
                }
                options.set_addresses(addresses);
            }
            options.tls = Some(tls.clone());
        }
        Ok(options)
    }

    /// Checks the settings that can be checked without a broker.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.local_capacity == 0 {
            return Err(Error::Config("local_capacity must be at least 1".into()));
        }
        if self.remote_capacity.is_some_and(|c| c > i32::MAX as u32) {
            return Err(Error::Config("remote_capacity is too large".into()));
        }
        if let Some(expiry) = self.expiry
            && (expiry.as_millis() == 0 || expiry.as_millis() > u128::from(u32::MAX))
        {
            return Err(Error::Config(
                "expiry must be between 1 ms and 2^32-1 ms".into(),
            ));
        }
        if let Some(name) = &self.queue_name
            && (name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(Error::Config(format!(
                "queue_name {name:?}: want [a-zA-Z0-9-_.]+"
            )));
        }
        if self.groups_exchange.is_empty() || self.groups_exchange.len() > 255 {
            return Err(Error::Config(
                "groups_exchange must be 1 to 255 bytes".into(),
            ));
        }
        self.connect_options().map(drop)
    }
}

/// Whether an `amqp[s]://` URL names a port.
fn has_explicit_port(url: &str) -> bool {
    let rest = url.trim().split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(']') {
        Some((_, after)) => after.starts_with(':'),
        None => host_port.contains(':'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_ports() {
        assert!(has_explicit_port("amqp://u:p@h:1234/v"));
        assert!(!has_explicit_port("amqp://u:p@h/v"));
        assert!(!has_explicit_port("amqp://u:p@h"));
        assert!(has_explicit_port("amqp://[::1]:5672/"));
        assert!(!has_explicit_port("amqp://[::1]/"));
        assert!(!has_explicit_port("amqp://u:p@h?x=1:2"));
    }

    #[test]
    fn tls_keeps_an_explicit_port() {
        let mut config = Config::new("amqp://h:5672/");
        config.tls = Some(TlsOptions::default());
        assert_eq!(config.connect_options().map(|o| o.port).ok(), Some(5672));
    }

    #[test]
    fn hosts_replace_host() {
        let mut config = Config::with_hosts(["amqp://a:5781/", "amqp://b/"]);
        let options = config.connect_options().ok();
        let ports: Vec<u16> = options
            .iter()
            .flat_map(|o| o.addresses())
            .map(|a| a.port)
            .collect();
        assert_eq!(ports, [5781, 5672]);
        config.tls = Some(TlsOptions::default());
        let options = config.connect_options().ok();
        let addresses: Vec<String> = options
            .iter()
            .flat_map(|o| o.addresses())
            .map(|a| a.to_string())
            .collect();
        assert_eq!(addresses, ["a:5781", "b:5671"]);
        config.hosts.push("http://c/".into());
        assert!(matches!(config.validate(), Err(Error::Config(e)) if e.starts_with("hosts")));
    }

    #[test]
    fn validation() {
        assert!(Config::default().validate().is_ok());
        let c = Config {
            local_capacity: 0,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        let c = Config {
            host: "http://x".into(),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        let c = Config {
            queue_name: Some("a!b".into()),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        let c = Config {
            expiry: Some(Duration::ZERO),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
    }
}
