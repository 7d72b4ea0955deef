//! What the client asks for during the handshake.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::coalesce::Coalescing;
use crate::table::encode_table_body;
use crate::types::{AMQPValue, FieldTable, LongString};

/// SASL credentials. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// `PLAIN`: user name and password.
    Plain {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `AMQPLAIN`: RabbitMQ's table-encoded variant of PLAIN.
    AmqPlain {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `EXTERNAL`: the TLS client certificate identifies the user.
    External,
}

impl Auth {
    /// `PLAIN` credentials.
    pub fn plain(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::Plain {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The SASL mechanism name.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Auth::Plain { .. } => "PLAIN",
            Auth::AmqPlain { .. } => "AMQPLAIN",
            Auth::External => "EXTERNAL",
        }
    }

    /// The `start-ok` response for this mechanism.
    pub(crate) fn response(&self) -> Bytes {
        match self {
            Auth::Plain { username, password } => {
                let mut out = BytesMut::with_capacity(username.len() + password.len() + 2);
                out.put_u8(0);
                out.put_slice(username.as_bytes());
                out.put_u8(0);
                out.put_slice(password.as_bytes());
                out.freeze()
            }
            Auth::AmqPlain { username, password } => {
                let mut table = FieldTable::default();
                let long = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
                table.insert("LOGIN".into(), long(username));
                table.insert("PASSWORD".into(), long(password));
                let mut out = BytesMut::new();
                encode_table_body(&mut out, &table);
                out.freeze()
            }
            Auth::External => Bytes::new(),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Plain { username, .. } => f
                .debug_struct("Plain")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Auth::AmqPlain { username, .. } => f
                .debug_struct("AmqPlain")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Auth::External => f.write_str("External"),
        }
    }
}

/// Handshake parameters and client limits.
///
/// `channel_max`, `frame_max` and `heartbeat` are proposals: each is
/// negotiated as the minimum of ours and the server's, where 0 means "no
/// limit" on either side. A negotiated heartbeat of 0 disables heartbeats.
///
/// Build it with `..Default::default()` so that new fields don't break you.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionConfig {
    /// Credentials.
    pub auth: Auth,
    /// The virtual host to open; `/` is RabbitMQ's default.
    pub virtual_host: String,
    /// Highest channel number we want (RabbitMQ's default limit is 2047).
    pub channel_max: u16,
    /// Largest frame we accept, header included. At least 4096.
    pub frame_max: u32,
    /// Heartbeat interval in seconds.
    pub heartbeat: u16,
    /// Shown in the management UI.
    pub connection_name: Option<String>,
    /// Extra client properties sent in `start-ok` (e.g. an application
    /// version). They are added to carehare's own; an entry with the same
    /// key replaces carehare's, except `capabilities`, which stays ours so
    /// the features this client relies on stay negotiated.
    pub client_properties: FieldTable,
    /// SASL locale.
    pub locale: String,
    /// How long the whole AMQP handshake may take.
    pub handshake_timeout: Duration,
    /// How long a client `close` waits for `close-ok`.
    pub close_timeout: Duration,
    /// Largest message body we accept (RabbitMQ's own default
    /// `max_message_size` is 128 MiB). A bigger one closes the connection.
    pub max_body_size: u64,
    /// How long RabbitMQ may block publishing (`connection.blocked`, e.g.
    /// during a memory or disk alarm) before the client gives up and ends
    /// the connection with
    /// [`ConnectionError::BlockedTimeout`](crate::error::ConnectionError::BlockedTimeout).
    /// Publishes wait while the connection is blocked; this bounds the
    /// wait, and everything still waiting then fails with that error.
    /// `None` (the default): wait as long as the alarm lasts.
    pub blocked_timeout: Option<Duration>,
    /// When publishes are held back a moment, so that a publisher with a
    /// deep confirm window sends them in fewer, larger writes: see
    /// [`Coalescing`]. `None`: every publish is handed to
    /// [`poll_transmit`](crate::Connection::poll_transmit) at once.
    pub coalescing: Option<Coalescing>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            auth: Auth::plain("guest", "guest"),
            virtual_host: "/".into(),
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            connection_name: None,
            client_properties: FieldTable::default(),
            locale: "en_US".into(),
            handshake_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(10),
            max_body_size: 128 * 1024 * 1024,
            blocked_timeout: None,
            coalescing: Some(Coalescing::default()),
        }
    }
}

impl ConnectionConfig {
    /// The properties sent in `start-ok`: product, version, platform,
    /// connection name and the capabilities this client implements.
    pub fn client_properties(&self) -> FieldTable {
        let long = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        let mut capabilities = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "consumer_cancel_notify",
            "basic.nack",
            "connection.blocked",
            "authentication_failure_close",
            "exchange_exchange_bindings",
            "per_consumer_qos",
        ] {
            capabilities.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        props.insert("product".into(), long("carehare"));
        props.insert("version".into(), long(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), long("Rust"));
        props.insert(
            "information".into(),
            long("https://github.com/carehare/carehare-rs"),
        );
        props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
        if let Some(name) = &self.connection_name {
            props.insert("connection_name".into(), long(name));
        }
        for (key, value) in &self.client_properties {
            if key.as_str() != "capabilities" {
                props.insert(key.clone(), value.clone());
            }
        }
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_debug() {
        let config = ConnectionConfig {
            auth: Auth::plain("bob", "hunter2"),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("bob"));
        assert!(!shown.contains("hunter2"));
        let amq = Auth::AmqPlain {
            username: "bob".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{amq:?}").contains("hunter2"));
    }

    #[test]
    fn custom_client_properties_are_merged_but_capabilities_stay() {
        let mut extra = FieldTable::default();
        extra.insert(
            "app-version".into(),
            AMQPValue::LongString(b"1.2".to_vec().into()),
        );
        extra.insert("capabilities".into(), AMQPValue::Boolean(false));
        let config = ConnectionConfig {
            client_properties: extra,
            ..Default::default()
        };
        let props = config.client_properties();
        assert!(props.contains_key("app-version"));
        assert!(matches!(
            props.inner().get("capabilities"),
            Some(AMQPValue::FieldTable(_))
        ));
        assert!(props.contains_key("product"));
    }

    #[test]
    fn plain_response_is_nul_separated() {
        assert_eq!(&Auth::plain("u", "p").response()[..], b"\0u\0p");
    }

    #[test]
    fn amqplain_response_is_a_table_without_length() {
        let r = Auth::AmqPlain {
            username: "u".into(),
            password: "p".into(),
        }
        .response();
        assert_eq!(&r[..6], b"\x05LOGIN");
        assert_eq!(r[6], b'S');
    }
}
