//! `start` → `start-ok` → `tune` → `tune-ok` + `open` → `open-ok`: what the
//! client answers at each step, and what the steps agreed.
//!
//! Invariants:
//! - `server_properties` are those of the `start` that was answered (empty
//!   before, and after a `start` of the wrong protocol version).
//! - `tuning` is set once, by the `tune` that was answered, and holds what
//!   `tune-ok` said, except that a `channel_max` of 0 reads as 65535; a
//!   `frame_max` in it is 0 (no limit) or at least 4096.

use std::time::Instant;

use tracing::debug;

use super::config::ConnectionConfig;
use crate::error::{ConnectionError, ProtocolViolation, reply_code};
use crate::event::Tuning;
use crate::frame::FRAME_MIN_SIZE;
use crate::method::{
    ConnectionOpen, ConnectionStart, ConnectionStartOk, ConnectionTune, ConnectionTuneOk, Method,
};
use crate::types::{FieldTable, Secret, ShortStr};

/// Why the handshake cannot go on, and how the connection must end.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The server broke the protocol: close with the violation's code.
    Violation(ProtocolViolation),
    /// Nothing was negotiated, so there is nothing to close politely: end
    /// at once.
    End(ConnectionError),
    /// Close politely with this code and text.
    Close {
        error: ConnectionError,
        code: u16,
        text: &'static str,
    },
}

#[derive(Debug)]
pub(super) struct Handshake {
    /// When the handshake must be over.
    deadline: Instant,
    server_properties: FieldTable,
    tuning: Option<Tuning>,
}

impl Handshake {
    pub(super) fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            server_properties: FieldTable::default(),
            tuning: None,
        }
    }

    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(super) fn server_properties(&self) -> &FieldTable {
        &self.server_properties
    }

    pub(super) fn tuning(&self) -> Option<Tuning> {
        self.tuning
    }

    /// `connection.start`: the `start-ok` to send.
    pub(super) fn on_start(
        &mut self,
        config: &ConnectionConfig,
        start: ConnectionStart,
    ) -> Result<Method, Refusal> {
        if (start.version_major, start.version_minor) != (0, 9) {
            return Err(Refusal::Violation(ProtocolViolation::UnexpectedMethod {
                channel: 0,
                method: "connection.start (not 0-9)",
            }));
        }
        self.server_properties = start.server_properties;
        let wanted = config.auth.mechanism();
        let offered = String::from_utf8_lossy(&start.mechanisms).into_owned();
        if !offered.split(' ').any(|m| m == wanted) {
            return Err(Refusal::End(ConnectionError::MechanismNotOffered {
                wanted,
                offered,
            }));
        }
        let locales = String::from_utf8_lossy(&start.locales);
        let locale = if locales.split(' ').any(|l| l == config.locale) {
            config.locale.as_str()
        } else {
            locales.split(' ').next().unwrap_or("en_US")
        };
        debug!(mechanism = wanted, "sending start-ok");
        Ok(ConnectionStartOk {
            client_properties: config.client_properties(),
            mechanism: ShortStr::from_static(wanted),
            response: Secret(config.auth.response()),
            locale: ShortStr::new(locale).unwrap_or_else(|_| ShortStr::from_static("en_US")),
        }
        .into())
    }

    /// `connection.tune`: the `tune-ok` and `open` to send. The tuning is
    /// agreed (see [`tuning`](Self::tuning)) even when `open` cannot follow.
    pub(super) fn on_tune(
        &mut self,
        config: &ConnectionConfig,
        tune: ConnectionTune,
    ) -> Result<[Method; 2], Refusal> {
        let frame_max = negotiate(config.frame_max, tune.frame_max);
        if frame_max != 0 && frame_max < FRAME_MIN_SIZE {
            return Err(Refusal::Violation(ProtocolViolation::InvalidTune(
                "frame_max below 4096",
            )));
        }
        let channel_max = negotiate(config.channel_max, tune.channel_max);
        let heartbeat = negotiate(config.heartbeat, tune.heartbeat);
        // tune-ok says what we will use; 0 channel_max means 65535.
        let tuning = Tuning {
            channel_max: if channel_max == 0 {
                u16::MAX
            } else {
                channel_max
            },
            frame_max,
            heartbeat,
        };
        self.tuning = Some(tuning);
        let Ok(virtual_host) = ShortStr::new(config.virtual_host.as_str()) else {
            return Err(Refusal::Close {
                error: ConnectionError::InvalidVirtualHost(config.virtual_host.len()),
                code: reply_code::REPLY_SUCCESS,
                text: "virtual host name too long",
            });
        };
        debug!(?tuning, "tuned");
        Ok([
            ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat,
            }
            .into(),
            ConnectionOpen {
                virtual_host,
                ..Default::default()
            }
            .into(),
        ])
    }

    /// `connection.open-ok`: the limits in force from now on.
    pub(super) fn on_open_ok(&self, config: &ConnectionConfig) -> Tuning {
        self.tuning.unwrap_or(Tuning {
            channel_max: config.channel_max,
            frame_max: config.frame_max,
            heartbeat: 0,
        })
    }
}

/// Negotiates one limit: the smaller of two proposals, where 0 means "no
/// limit" on either side.
fn negotiate<T: Copy + Ord + Default>(client: T, server: T) -> T {
    let zero = T::default();
    match (client == zero, server == zero) {
        (true, _) => server,
        (_, true) => client,
        _ => client.min(server),
    }
}
