//! The layer's settings, named and defaulted like Python's
//! `RabbitmqChannelLayer(host=..., expiry=..., ...)`.

use std::time::Duration;

use carehare_tokio::{ConnectOptions, TlsOptions};

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
    pub host: String,
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
    /// Full connection options, replacing `host` and `tls` (for settings
    /// a URL can't carry). Default: `None`.
    pub connect_options: Option<ConnectOptions>,
    /// The direct exchange that carries group messages. Default: `groups`.
    pub groups_exchange: String,
    /// Wait between failed connection attempts. Default: 1 s.
    pub reconnect_delay: Duration,
    /// This layer's queue name. Default: `None`, a random
    /// `channels_<12 letters>` as in Python; set it only to debug or test.
    pub queue_name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "amqp://guest:guest@127.0.0.1/asgi".into(),
            expiry: Some(Duration::from_secs(60)),
            local_capacity: 100,
            remote_capacity: Some(100),
            local_expiry: None,
            tls: None,
            connect_options: None,
            groups_exchange: "groups".into(),
            reconnect_delay: Duration::from_secs(1),
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
        let mut options = ConnectOptions::from_url(&self.host)
            .map_err(|e| Error::Config(format!("host: {e}")))?;
        if let Some(tls) = &self.tls {
            if options.tls.is_none() && !has_explicit_port(&self.host) {
                options.port = 5671;
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
