//! `start` → `start-ok` → `tune` → `tune-ok` + `open`.

use std::time::Instant;

use tracing::debug;

use super::{Connection, State, negotiate};
use crate::error::{ConnectionError, ProtocolViolation};
use crate::event::Tuning;
use crate::frame::{FRAME_MIN_SIZE, encode_method};
use crate::heartbeat::Heartbeat;
use crate::method::{
    ConnectionOpen, ConnectionStart, ConnectionStartOk, ConnectionTune, ConnectionTuneOk, Method,
};
use crate::types::{Secret, ShortStr};

impl Connection {
    pub(super) fn on_start(&mut self, start: ConnectionStart) {
        if (start.version_major, start.version_minor) != (0, 9) {
            self.unexpected_method(0, "connection.start (not 0-9)");
            return;
        }
        self.server_properties = start.server_properties;
        let wanted = self.config.auth.mechanism();
        let offered = String::from_utf8_lossy(&start.mechanisms).into_owned();
        if !offered.split(' ').any(|m| m == wanted) {
            // Nothing was negotiated, so there is nothing to close politely.
            self.finish(ConnectionError::MechanismNotOffered { wanted, offered });
            return;
        }
        let locales = String::from_utf8_lossy(&start.locales);
        let locale = if locales.split(' ').any(|l| l == self.config.locale) {
            self.config.locale.as_str()
        } else {
            locales.split(' ').next().unwrap_or("en_US")
        };
        let start_ok = Method::from(ConnectionStartOk {
            client_properties: self.config.client_properties(),
            mechanism: ShortStr::from_static(wanted),
            response: Secret(self.config.auth.response()),
            locale: ShortStr::new(locale).unwrap_or_else(|_| ShortStr::from_static("en_US")),
        });
        encode_method(&mut self.write_buf, 0, &start_ok);
        debug!(mechanism = wanted, "sent start-ok");
        self.state = State::AwaitingTune;
    }

    pub(super) fn on_tune(&mut self, now: Instant, tune: ConnectionTune) {
        let frame_max = negotiate(self.config.frame_max, tune.frame_max);
        if frame_max != 0 && frame_max < FRAME_MIN_SIZE {
            self.violation(ProtocolViolation::InvalidTune("frame_max below 4096"));
            return;
        }
        let channel_max = negotiate(self.config.channel_max, tune.channel_max);
        let heartbeat = negotiate(self.config.heartbeat, tune.heartbeat);
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
        self.heartbeat = Heartbeat::new(heartbeat, now);
        let vhost = match ShortStr::new(self.config.virtual_host.as_str()) {
            Ok(v) => v,
            Err(_) => {
                self.start_closing(
                    ConnectionError::InvalidVirtualHost(self.config.virtual_host.len()),
                    crate::error::reply_code::REPLY_SUCCESS,
                    "virtual host name too long",
                );
                return;
            }
        };
        encode_method(
            &mut self.write_buf,
            0,
            &ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat,
            }
            .into(),
        );
        encode_method(
            &mut self.write_buf,
            0,
            &ConnectionOpen {
                virtual_host: vhost,
                ..Default::default()
            }
            .into(),
        );
        debug!(?tuning, "tuned");
        self.state = State::AwaitingOpenOk;
    }
}
