//! What the core tells its driver.

use bytes::Bytes;

use crate::error::{ChannelError, CloseReason, ConnectionError};
use crate::method::{BasicDeliver, BasicGetOk, BasicReturn, Method};
use crate::properties::BasicProperties;
use crate::types::{ChannelId, OpId, ShortStr};

/// The values agreed in `tune`/`tune-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Highest usable channel number (never 0: "no limit" becomes 65535).
    pub channel_max: u16,
    /// Largest frame either side may send; 0 means no limit.
    pub frame_max: u32,
    /// Heartbeat interval in seconds; 0 means disabled.
    pub heartbeat: u16,
}

/// The method that carried a message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ContentMethod {
    /// Pushed to a consumer.
    Deliver(BasicDeliver),
    /// A mandatory publish that could not be routed.
    Return(BasicReturn),
    /// Answer to `basic.get`.
    GetOk(BasicGetOk),
}

/// A whole message: method, properties and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The method it came with.
    pub method: ContentMethod,
    /// Its properties (boxed, as decoded: see
    /// [`ContentHeader`](crate::properties::ContentHeader)).
    pub properties: Box<BasicProperties>,
    /// Its body. When the body came in one frame this is a slice of the
    /// read buffer, not a copy.
    pub body: Bytes,
}

/// The answer to a command that waited for one.
// Not boxed: boxing would cost an allocation per `basic.get`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// The reply method, e.g. `queue.declare-ok`.
    Method(Method),
    /// `basic.get-ok` with its message.
    Message(Delivery),
}

/// Everything the core reports. Drain them with
/// [`Connection::poll_event`](crate::Connection::poll_event).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake finished; commands are accepted from now on.
    Connected(Tuning),
    /// A command that waited for a reply is done.
    Completed {
        /// The id the command returned.
        op: OpId,
        /// Its channel (0 for connection-level commands).
        channel: ChannelId,
        /// The reply, or why none will come.
        result: Result<Reply, ChannelError>,
    },
    /// A message for a consumer, or a returned publish.
    Delivery {
        /// The channel it arrived on.
        channel: ChannelId,
        /// The message.
        delivery: Delivery,
    },
    /// Publisher confirm: the broker took responsibility for these publishes.
    Ack {
        /// The channel.
        channel: ChannelId,
        /// Publish sequence number.
        delivery_tag: u64,
        /// Also every earlier unconfirmed publish.
        multiple: bool,
    },
    /// Publisher confirm: the broker could not take these publishes.
    Nack {
        /// The channel.
        channel: ChannelId,
        /// Publish sequence number.
        delivery_tag: u64,
        /// Also every earlier unconfirmed publish.
        multiple: bool,
    },
    /// RabbitMQ cancelled a consumer (e.g. its queue was deleted).
    ConsumerCancelled {
        /// The channel.
        channel: ChannelId,
        /// The consumer.
        consumer_tag: ShortStr,
    },
    /// The server asked to pause (`false`) or resume content; the core
    /// already answered `flow-ok`.
    Flow {
        /// The channel.
        channel: ChannelId,
        /// Whether content may flow.
        active: bool,
    },
    /// RabbitMQ closed a channel. Its pending commands have already failed
    /// with [`ChannelError::ClosedByServer`]; the id is free again.
    ChannelClosed {
        /// The channel.
        channel: ChannelId,
        /// Code and text.
        reason: CloseReason,
    },
    /// RabbitMQ stopped reading publishes (a resource alarm).
    Blocked {
        /// Why.
        reason: String,
    },
    /// Publishing may resume.
    Unblocked,
    /// The connection is over. This is the last event. Any bytes still
    /// returned by `poll_transmit` (e.g. a `close-ok`) should be written
    /// before the socket is closed.
    ConnectionClosed(ConnectionError),
}
