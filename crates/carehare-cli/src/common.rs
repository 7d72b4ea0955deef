//! Flags shared by several commands: where to connect, message properties,
//! where a body comes from.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use carehare_tokio::carehare_core::types::ShortStr;
use carehare_tokio::{
    BasicProperties, BoxFuture, ClientCert, ConnectOptions, Connection, RecoveringConnection,
    RecoveryOptions,
};
use clap::Args;

use crate::error::CliError;
use crate::fields::{self, Untyped};

/// Where and how to connect; accepted by every command.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnArgs {
    /// RabbitMQ URL: `amqp[s]://user:password@host:port/vhost?params`
    /// (e.g. `?auth_mechanism=external` for client-certificate login).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@localhost:5672/",
        hide_env_values = true,
        global = true,
        help_heading = "Connection"
    )]
    pub url: String,
    /// PEM file of CA certificates to trust (amqps only) instead of the
    /// system's.
    #[arg(long, value_name = "PEM", global = true, help_heading = "Connection")]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate chain (amqps only; with --key).
    #[arg(
        long,
        value_name = "PEM",
        global = true,
        help_heading = "Connection",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate (with --cert).
    #[arg(
        long,
        value_name = "PEM",
        global = true,
        help_heading = "Connection",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// Name to verify the server's certificate against (default: the
    /// URL's host).
    #[arg(long, value_name = "NAME", global = true, help_heading = "Connection")]
    pub server_name: Option<String>,
    /// Limit for TCP connect, TLS and the AMQP handshake.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = fields::duration, global = true, help_heading = "Connection")]
    pub connect_timeout: Duration,
}

impl ConnArgs {
    /// The connect options: the URL, then the TLS flags over it.
    pub(crate) fn options(&self, connection_name: &str) -> Result<ConnectOptions, CliError> {
        let mut options = ConnectOptions::from_url(&self.url)
            .map_err(|e| CliError::Connect(carehare_tokio::Error::Url(e)))?;
        let tls_flags = self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.server_name.is_some();
        if tls_flags {
            let Some(tls) = options.tls.as_mut() else {
                return Err(CliError::usage(
                    "--cacert, --cert, --key and --server-name need an amqps:// URL",
                ));
            };
            if let Some(ca) = &self.cacert {
                tls.ca_file = Some(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls.client_cert = Some(ClientCert {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                });
            }
            if let Some(name) = &self.server_name {
                tls.server_name = Some(name.clone());
            }
        }
        options.connection_timeout = self.connect_timeout;
        if options.amqp.connection_name.is_none() {
            options.amqp.connection_name = Some(connection_name.to_owned());
        }
        Ok(options)
    }

    /// Connects; any failure is a connect error (exit code 3).
    pub(crate) async fn connect(&self, connection_name: &str) -> Result<Connection, CliError> {
        let options = self.options(connection_name)?;
        carehare_tokio::connect_with(options)
            .await
            .map_err(CliError::Connect)
    }

    /// Connects with recovery: from then on a lost connection is replaced
    /// (with backoff, for as long as it takes), until a reconnect is
    /// refused for a reason retrying can't fix. `setup` declares what the
    /// command needs, on the first connection and again after every
    /// reconnect. A failed first connect is exit code 3, like
    /// [`connect`](Self::connect); RabbitMQ refusing what `setup` asks
    /// (e.g. 404 for a missing exchange) is 4. `setup` returns what later calls need to know of the topology
    /// (e.g. a server-named queue's name).
    pub(crate) async fn connect_recovering_with<T, F>(
        &self,
        connection_name: &str,
        setup: F,
    ) -> Result<RecoveringConnection<T>, CliError>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(Connection) -> BoxFuture<'static, Result<T, carehare_tokio::Error>>
            + Send
            + Sync
            + 'static,
    {
        let options = self.options(connection_name)?;
        carehare_tokio::connect_recovering(options, RecoveryOptions::default(), setup)
            .await
            .map_err(|e| match e {
                carehare_tokio::Error::ChannelClosedByServer(_) => CliError::Amqp(e),
                e => CliError::Connect(e),
            })
    }
}

/// The 14 basic properties (less `cluster_id`) and headers, as flags.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct PropsArgs {
    /// MIME type, e.g. application/json.
    #[arg(long)]
    pub content_type: Option<String>,
    /// MIME encoding, e.g. gzip.
    #[arg(long)]
    pub content_encoding: Option<String>,
    /// Correlation id.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Reply-to queue name.
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Message id.
    #[arg(long)]
    pub message_id: Option<String>,
    /// 1 (transient) or 2 (persistent).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2), conflicts_with = "persistent")]
    pub delivery_mode: Option<u8>,
    /// Same as --delivery-mode 2.
    #[arg(long)]
    pub persistent: bool,
    /// Priority, 0 to 255 (queues honour up to their x-max-priority).
    #[arg(long)]
    pub priority: Option<u8>,
    /// Per-message TTL in milliseconds.
    #[arg(long, value_name = "MS")]
    pub expiration: Option<u64>,
    /// Message type (the `type` property).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Application id.
    #[arg(long)]
    pub app_id: Option<String>,
    /// User id; RabbitMQ refuses (406) one that is not the connection's user.
    #[arg(long)]
    pub user_id: Option<String>,
    /// Seconds since the Unix epoch, or `now`.
    #[arg(long, value_name = "SECONDS|now")]
    pub timestamp: Option<String>,
    /// A header, `key=value` (a string), or typed as `key:TYPE=value`
    /// with TYPE one of str, int, float, bool, timestamp. Repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
}

fn short(flag: &str, value: &Option<String>) -> Result<Option<ShortStr>, CliError> {
    value
        .as_deref()
        .map(|v| {
            ShortStr::new(v)
                .map_err(|_| CliError::usage(format!("--{flag} is longer than 255 bytes")))
        })
        .transpose()
}

impl PropsArgs {
    /// The properties these flags describe.
    pub(crate) fn properties(&self) -> Result<BasicProperties, CliError> {
        let timestamp = match self.timestamp.as_deref() {
            None => None,
            Some("now") => Some(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            Some(s) => Some(s.parse().map_err(|_| {
                CliError::usage(format!("--timestamp {s:?}: expected seconds or `now`"))
            })?),
        };
        let headers = if self.headers.is_empty() {
            None
        } else {
            Some(fields::table(&self.headers, Untyped::String)?)
        };
        Ok(BasicProperties {
            content_type: short("content-type", &self.content_type)?,
            content_encoding: short("content-encoding", &self.content_encoding)?,
            headers,
            delivery_mode: if self.persistent {
                Some(2)
            } else {
                self.delivery_mode
            },
            priority: self.priority,
            correlation_id: short("correlation-id", &self.correlation_id)?,
            reply_to: short("reply-to", &self.reply_to)?,
            expiration: short("expiration", &self.expiration.map(|e| e.to_string()))?,
            message_id: short("message-id", &self.message_id)?,
            timestamp,
            kind: short("type", &self.kind)?,
            user_id: short("user-id", &self.user_id)?,
            app_id: short("app-id", &self.app_id)?,
            cluster_id: None,
        })
    }
}

/// Where a message body comes from.
#[derive(Args, Debug, Clone)]
pub(crate) struct BodyArgs {
    /// The body. Without it (and without --file) the body is read from
    /// standard input.
    #[arg(value_name = "BODY")]
    pub body: Option<String>,
    /// Read the body from this file (`-` for standard input).
    #[arg(long, short = 'f', value_name = "PATH", conflicts_with = "body")]
    pub file: Option<PathBuf>,
}

impl BodyArgs {
    /// Reads the body (before connecting, so a bad path fails fast).
    pub(crate) fn read(&self) -> Result<Bytes, CliError> {
        if let Some(body) = &self.body {
            return Ok(Bytes::from(body.clone()));
        }
        match &self.file {
            Some(path) if path.as_os_str() != "-" => std::fs::read(path)
                .map(Bytes::from)
                .map_err(CliError::io(format!("reading {}", path.display()))),
            _ => {
                let mut body = Vec::new();
                std::io::stdin()
                    .lock()
                    .read_to_end(&mut body)
                    .map_err(CliError::io("reading standard input"))?;
                Ok(Bytes::from(body))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_from_flags() {
        let args = PropsArgs {
            content_type: Some("application/json".into()),
            persistent: true,
            expiration: Some(60_000),
            kind: Some("order".into()),
            timestamp: Some("1700000000".into()),
            headers: vec!["n:int=1".into()],
            ..Default::default()
        };
        let p = args.properties().unwrap();
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.expiration.as_deref(), Some("60000"));
        assert_eq!(p.kind.as_deref(), Some("order"));
        assert_eq!(p.timestamp, Some(1_700_000_000));
        assert!(p.headers.is_some());
    }

    #[test]
    fn tls_flags_need_amqps() {
        let args = ConnArgs {
            url: "amqp://localhost/".into(),
            cacert: Some("ca.pem".into()),
            cert: None,
            key: None,
            server_name: None,
            connect_timeout: Duration::from_secs(1),
        };
        assert!(matches!(args.options("t"), Err(CliError::Usage(_))));
        let args = ConnArgs {
            url: "amqps://localhost/".into(),
            ..args
        };
        let options = args.options("t").unwrap();
        assert_eq!(
            options.tls.and_then(|t| t.ca_file),
            Some(PathBuf::from("ca.pem"))
        );
    }
}
