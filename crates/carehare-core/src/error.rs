//! Typed errors.
//!
//! Following h11, faults are kept apart by whose they are:
//! - [`UsageError`]: the caller misused the API. Returned at once by the
//!   command; nothing was queued and the connection is unaffected.
//! - [`ProtocolViolation`]: the server broke the protocol. The core queues a
//!   `connection.close` with [`ProtocolViolation::reply_code`] and ends the
//!   connection with [`ConnectionError::Protocol`].
//! - [`ConnectionError`] / [`ChannelError`]: why a connection or a channel
//!   ended, as seen by the operations that were waiting on it.

use std::sync::Arc;
use std::time::Duration;

use crate::types::{ChannelId, ShortStr};
// Defined next to `ShortStr`, so that `types` needs nothing from here.
#[doc(inline)]
pub use crate::types::ShortStrTooLong;

/// AMQP reply codes used by the core.
pub mod reply_code {
    /// Normal shutdown.
    pub const REPLY_SUCCESS: u16 = 200;
    /// A frame was malformed or too large.
    pub const FRAME_ERROR: u16 = 501;
    /// A frame held illegal field values.
    pub const SYNTAX_ERROR: u16 = 502;
    /// A method arrived that is invalid in the current state.
    pub const COMMAND_INVALID: u16 = 503;
    /// A frame arrived for a channel that is not open.
    pub const CHANNEL_ERROR: u16 = 504;
    /// A content frame arrived out of sequence.
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// A limit of this client was exceeded.
    pub const RESOURCE_ERROR: u16 = 506;
    /// The peer asked for something not implemented.
    pub const NOT_IMPLEMENTED: u16 = 540;
    /// Access refused (also RabbitMQ's authentication failure code).
    pub const ACCESS_REFUSED: u16 = 403;
    /// An internal error.
    pub const INTERNAL_ERROR: u16 = 541;

    /// The spec's name for a reply code, e.g. `FRAME_ERROR` for 501.
    pub fn name(code: u16) -> &'static str {
        match code {
            REPLY_SUCCESS => "REPLY_SUCCESS",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            INTERNAL_ERROR => "INTERNAL_ERROR",
            _ => "ERROR",
        }
    }
}

/// Bytes that could not be decoded as AMQP 0-9-1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A field runs past the end of its frame.
    #[error("truncated: a field runs past the end of its frame")]
    Truncated,
    /// The frame-end octet was not `0xCE`.
    #[error("frame-end octet is {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    /// The frame type octet is not method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// The frame header declares a frame larger than the negotiated maximum.
    #[error("frame of {size} bytes exceeds frame_max {max}")]
    FrameTooLarge {
        /// Declared frame size, header and frame-end included.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// A class/method pair this client does not know.
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod {
        /// Class id.
        class_id: u16,
        /// Method id.
        method_id: u16,
    },
    /// A `shortstr` or table key that is not UTF-8.
    #[error("invalid UTF-8 in a string field")]
    InvalidUtf8,
    /// A field-table value with an unknown type tag.
    #[error("unknown field value type {0:#04x}")]
    UnknownFieldType(u8),
    /// Field tables or arrays nested too deep to decode safely.
    #[error("field values nested deeper than {0} levels")]
    TooDeep(usize),
    /// Bytes left over after the last field of a method or header.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
    /// A content header for a class other than `basic`.
    #[error("content header for class {0}, expected basic (60)")]
    UnknownContentClass(u16),
    /// A content header whose property flags name properties that don't exist.
    #[error("content header has unknown property flags {0:#06x}")]
    UnknownPropertyFlags(u16),
    /// A heartbeat frame carrying a payload.
    #[error("heartbeat frame with a {0}-byte payload")]
    HeartbeatPayload(u32),
}

impl DecodeError {
    /// The reply code to close the connection with.
    pub fn reply_code(&self) -> u16 {
        match self {
            Self::UnknownMethod { .. } => reply_code::COMMAND_INVALID,
            Self::InvalidUtf8
            | Self::UnknownFieldType(_)
            | Self::TooDeep(_)
            | Self::TrailingBytes(_)
            | Self::UnknownPropertyFlags(_)
            | Self::UnknownContentClass(_) => reply_code::SYNTAX_ERROR,
            Self::Truncated
            | Self::BadFrameEnd(_)
            | Self::UnknownFrameType(_)
            | Self::FrameTooLarge { .. }
            | Self::HeartbeatPayload(_) => reply_code::FRAME_ERROR,
        }
    }
}

/// The server broke the protocol. The core has queued a `connection.close`
/// carrying [`reply_code`](Self::reply_code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// Bytes that do not decode.
    #[error("undecodable frame on channel {channel}: {error}")]
    Decode {
        /// The channel of the frame, or 0 if it was not known.
        channel: ChannelId,
        /// What was wrong.
        #[source]
        error: DecodeError,
    },
    /// A frame for a channel that is not open.
    #[error("frame for channel {0}, which is not open")]
    UnknownChannel(ChannelId),
    /// A content header or body frame out of sequence, or a method where
    /// content was expected.
    #[error("unexpected {what} on channel {channel}")]
    UnexpectedFrame {
        /// The channel.
        channel: ChannelId,
        /// What arrived.
        what: &'static str,
    },
    /// A heartbeat frame on a channel other than 0.
    #[error("heartbeat frame on channel {0}")]
    HeartbeatOnChannel(ChannelId),
    /// A method that is not valid from a server in the current state.
    #[error("unexpected method {method} on channel {channel}")]
    UnexpectedMethod {
        /// The channel.
        channel: ChannelId,
        /// The method's name, e.g. `basic.deliver`.
        method: &'static str,
    },
    /// Body frames carried more bytes than the content header declared.
    #[error("body frames exceed the declared body size of {declared} bytes on channel {channel}")]
    BodyOverrun {
        /// The channel.
        channel: ChannelId,
        /// Body size from the content header.
        declared: u64,
    },
    /// A content header declared a body larger than this client accepts.
    #[error("body of {size} bytes exceeds the limit of {max} bytes on channel {channel}")]
    BodyTooLarge {
        /// The channel.
        channel: ChannelId,
        /// Declared body size.
        size: u64,
        /// The limit (`ConnectionConfig::max_body_size`).
        max: u64,
    },
    /// The server answered our protocol header with its own: it does not
    /// speak AMQP 0-9-1.
    #[error("server does not speak AMQP 0-9-1; it offered protocol header {0:?}")]
    ProtocolHeader([u8; 8]),
    /// The server delivered more messages to a consumer than the client
    /// holds for it (its prefetch, or a larger limit for a stream
    /// consumer): the client's buffer would grow without bound. Detected by
    /// the driver, reported through
    /// [`Connection::close_for_violation`](crate::Connection::close_for_violation).
    #[error(
        "channel {channel}: more than {limit} deliveries waiting for a consumer that holds at most {limit}"
    )]
    PrefetchExceeded {
        /// The channel.
        channel: ChannelId,
        /// The most deliveries the client holds for the consumer.
        limit: u32,
    },
    /// The server negotiated values the spec forbids (e.g. a frame_max below 4096).
    #[error("invalid tune from server: {0}")]
    InvalidTune(&'static str),
}

impl ProtocolViolation {
    /// The reply code sent in our `connection.close`.
    pub fn reply_code(&self) -> u16 {
        match self {
            Self::Decode { error, .. } => error.reply_code(),
            Self::UnknownChannel(_) => reply_code::CHANNEL_ERROR,
            Self::UnexpectedFrame { .. }
            | Self::BodyOverrun { .. }
            | Self::PrefetchExceeded { .. } => reply_code::UNEXPECTED_FRAME,
            Self::HeartbeatOnChannel(_) => reply_code::FRAME_ERROR,
            Self::UnexpectedMethod { .. } | Self::InvalidTune(_) => reply_code::COMMAND_INVALID,
            Self::BodyTooLarge { .. } => reply_code::FRAME_ERROR,
            Self::ProtocolHeader(_) => reply_code::NOT_IMPLEMENTED,
        }
    }
}

/// A `close` method from the server: reply code, text and the method that
/// caused it (0/0 when none did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// AMQP reply code, e.g. 404 or 320.
    pub code: u16,
    /// RabbitMQ's text, e.g. `NOT_FOUND - no exchange 'x' in vhost '/'`.
    pub text: String,
    /// Class of the method that failed, or 0.
    pub class_id: u16,
    /// Method that failed, or 0.
    pub method_id: u16,
}

impl CloseReason {
    /// The reason a `connection.close` or `channel.close` carries.
    pub(crate) fn new(code: u16, text: &ShortStr, class_id: u16, method_id: u16) -> Self {
        Self {
            code,
            text: text.to_string(),
            class_id,
            method_id,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// An error that caused another, kept inside an error that must be `Clone`
/// (every waiter gets a copy of why a connection ended) although the cause
/// itself is not (`std::io::Error`, a TLS library's error).
///
/// It dereferences to the cause, and the error that holds it reports the
/// cause itself, not this wrapper, as its
/// [`source()`](std::error::Error::source): walking a chain finds the
/// `io::Error` with `downcast_ref::<std::io::Error>()`. Two causes are
/// equal when they are the same one, or when they read the same (and, for
/// I/O errors, have the same kind).
///
/// ```
/// use std::error::Error as _;
/// use carehare_core::error::{Cause, ConnectionError};
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// let ended = ConnectionError::Transport(Cause::new(reset));
/// if let ConnectionError::Transport(cause) = &ended {
///     assert_eq!(cause.kind(), std::io::ErrorKind::ConnectionReset);
/// }
/// let source = ended.source().and_then(|s| s.downcast_ref::<std::io::Error>());
/// assert_eq!(source.map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionReset));
/// ```
// Deliberately not `std::error::Error` itself: `thiserror`'s `#[source]`
// then reaches through `Deref` to the cause, so a chain holds the cause and
// not a wrapper that only repeats it.
pub struct Cause<E: ?Sized>(Arc<E>);

impl<E> Cause<E> {
    /// Wraps `cause`.
    pub fn new(cause: E) -> Self {
        Cause(Arc::new(cause))
    }
}

impl Cause<dyn std::error::Error + Send + Sync> {
    /// Wraps a boxed cause, e.g. what `std::io::Error::into_inner` gives.
    pub fn from_box(cause: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Cause(Arc::from(cause))
    }
}

impl<E: ?Sized> Clone for Cause<E> {
    fn clone(&self) -> Self {
        Cause(Arc::clone(&self.0))
    }
}

impl<E: ?Sized> std::ops::Deref for Cause<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.0
    }
}

impl<E: ?Sized + std::fmt::Debug> std::fmt::Debug for Cause<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: ?Sized + std::fmt::Display> std::fmt::Display for Cause<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<std::io::Error> for Cause<std::io::Error> {
    fn from(e: std::io::Error) -> Self {
        Cause::new(e)
    }
}

impl PartialEq for Cause<std::io::Error> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string())
    }
}

impl Eq for Cause<std::io::Error> {}

impl PartialEq for Cause<dyn std::error::Error + Send + Sync> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause<dyn std::error::Error + Send + Sync> {}

/// Why a connection ended. Once the core reports one, it is final.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// RabbitMQ sent `connection.close` (carehare's `ConnectionClosedByServer`).
    #[error("RabbitMQ closed the connection: {0}")]
    ClosedByServer(CloseReason),
    /// RabbitMQ refused the credentials (403 during the handshake).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(CloseReason),
    /// Nothing arrived for two heartbeat intervals (carehare's
    /// `ConnectionClosedByHeartbeatMonitor`).
    #[error("no data from RabbitMQ for {0:?}: heartbeat monitor closed the connection")]
    ClosedByHeartbeatMonitor(Duration),
    /// The server broke the protocol; we closed with the violation's code.
    #[error("protocol violation by the server: {0}")]
    Protocol(#[source] ProtocolViolation),
    /// We closed the connection (carehare's `ConnectionClosed`).
    #[error("connection closed by the client")]
    ClosedByClient,
    /// We closed the connection but the server never sent `close-ok`.
    #[error("connection closed by the client; close-ok did not arrive within {0:?}")]
    CloseTimeout(Duration),
    /// The byte stream ended without a `connection.close`.
    #[error("connection lost: the server closed the socket without connection.close")]
    UnexpectedEof,
    /// RabbitMQ blocked publishing (`connection.blocked`) for longer than
    /// [`ConnectionConfig::blocked_timeout`](crate::ConnectionConfig::blocked_timeout),
    /// so the client closed the connection (publishes held meanwhile fail
    /// with this).
    #[error("RabbitMQ blocked publishing for longer than {0:?}: the client closed the connection")]
    BlockedTimeout(Duration),
    /// The handshake did not finish in time.
    #[error("handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// The server does not offer the configured SASL mechanism.
    #[error("server does not offer SASL mechanism {wanted}; it offers {offered:?}")]
    MechanismNotOffered {
        /// Ours.
        wanted: &'static str,
        /// Theirs, space-separated as sent.
        offered: String,
    },
    /// The configured virtual host name is longer than 255 bytes.
    #[error("virtual host name of {0} bytes is longer than the 255 bytes AMQP allows")]
    InvalidVirtualHost(usize),
    /// The transport failed (reported by the driver through
    /// [`handle_transport_error`](crate::Connection::handle_transport_error)):
    /// the I/O error itself, e.g. of kind `ConnectionReset`.
    #[error("transport error: {0}")]
    Transport(#[source] Cause<std::io::Error>),
    /// The program stopped driving the connection before it ended: its
    /// driver (the task that moves bytes and runs timers) was dropped,
    /// e.g. because the async runtime it ran on shut down.
    #[error("the connection's driver stopped (was its async runtime shut down?)")]
    DriverStopped,
}

/// Why an operation on a channel failed or a channel ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// RabbitMQ sent `channel.close` (carehare's `ChannelClosedByServer`).
    /// The connection is still usable.
    #[error("RabbitMQ closed the channel: {0}")]
    ClosedByServer(CloseReason),
    /// The channel was closed by the client while this was pending.
    #[error("channel closed by the client")]
    ClosedByClient,
    /// The whole connection ended (carehare's `ConnectionClosed`).
    #[error("connection closed: {0}")]
    ConnectionClosed(#[source] ConnectionError),
}

/// The caller misused the API. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The handshake has not finished yet.
    #[error("the connection is not open yet")]
    NotOpen,
    /// The connection is closing or closed.
    #[error("the connection is closed")]
    Closed,
    /// Every channel id up to `channel_max` is in use.
    #[error("all {0} channels are in use")]
    NoFreeChannel(u16),
    /// The channel is not open (never opened, closing, or closed).
    #[error("channel {0} is not open")]
    ChannelNotOpen(ChannelId),
    /// This method cannot be sent by a client, or must go through its own
    /// command (e.g. `channel.open` through `open_channel`).
    #[error("method {0} cannot be sent with this command")]
    MethodNotAllowed(&'static str),
    /// `call` was used with a method that has no reply, or `send` with one
    /// that has.
    #[error("method {method} {}", if *.expects_reply { "expects a reply: use call" } else { "has no reply: use send" })]
    WrongCommand {
        /// The method's name.
        method: &'static str,
        /// Whether it expects a reply.
        expects_reply: bool,
    },
    /// A frame (method with its arguments, or a content header with its
    /// properties) would exceed the negotiated `frame_max`.
    #[error("frame of {size} bytes would exceed frame_max {max}")]
    FrameTooLarge {
        /// Encoded size.
        size: usize,
        /// The negotiated limit.
        max: u32,
    },
    /// A feature RabbitMQ does not implement, refused here because the
    /// broker would close the whole connection for it.
    #[error("not supported by RabbitMQ: {0}")]
    Unsupported(&'static str),
    /// An argument that would break one of carehare's guarantees, e.g. a
    /// prefetch of 0 (unlimited), which would leave a consumer's buffer
    /// unbounded.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A string argument is longer than a `shortstr` allows.
    #[error("string of {0} bytes is longer than the 255 bytes a shortstr allows")]
    StringTooLong(usize),
}
