//! The connection's one channel for publishes without confirms.
//!
//! Invariants:
//! - `channel`, when set, is open (or opening, pipelined) and was never
//!   put in confirm mode: no `confirm.select` is sent on it, so RabbitMQ
//!   sends nothing back for its publishes (they are never mandatory
//!   either, so nothing is returned);
//! - it is not one of the confirm-mode publish channels: no ack, nack or
//!   return is ever routed to it;
//! - it is forgotten when RabbitMQ closes it (e.g. 404 for a missing
//!   exchange) or the connection ends; the next publish opens a fresh one.

use bytes::Bytes;
use carehare_core::Connection;
use carehare_core::method::BasicPublish;
use carehare_core::properties::BasicProperties;
use carehare_core::types::{ChannelId, ShortStr};
use tracing::warn;

use crate::error::Error;

#[derive(Default)]
pub(crate) struct Unconfirmed {
    channel: Option<ChannelId>,
}

impl Unconfirmed {
    /// Queues the frames of a publish on the unconfirmed channel, opening
    /// it first (pipelined, no round trip) if there is none.
    pub(crate) fn publish(
        &mut self,
        conn: &mut Connection,
        exchange: ShortStr,
        routing_key: ShortStr,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> Result<(), Error> {
        let channel = match self.channel {
            Some(ch) => ch,
            None => {
                // Nobody waits for the open-ok: its completion is dropped.
                let (ch, _open) = conn.open_channel()?;
                self.channel = Some(ch);
                ch
            }
        };
        let publish = BasicPublish {
            exchange,
            routing_key,
            ..Default::default()
        };
        match conn.publish_bytes(channel, &publish, properties, body)? {
            None => Ok(()),
            Some(_) => Err(Error::Internal(
                "the unconfirmed channel is in confirm mode",
            )),
        }
    }

    /// RabbitMQ closed `channel`: if it is ours, forget it.
    pub(crate) fn channel_closed(&mut self, channel: ChannelId, why: &Error) {
        if self.channel == Some(channel) {
            warn!(channel, %why, "RabbitMQ closed the unconfirmed publish channel; unconfirmed publishes on it since may be lost");
            self.channel = None;
        }
    }

    /// The connection ended.
    pub(crate) fn forget(&mut self) {
        self.channel = None;
    }

    /// The unconfirmed channel, if one is open.
    #[cfg(test)]
    pub(crate) fn channel(&self) -> Option<ChannelId> {
        self.channel
    }
}
