#![doc = include_str!("../README.md")]
//! ## The contract
//!
//! A [`Connection`] has four kinds of methods (after quinn-proto):
//!
//! - **A. Getters** (`is_open`, `tuning`, `server_properties`,
//!   `transmit_len`, ...): never
//!   change anything.
//! - **B. Inputs** mutate: [`handle_input(now, bytes)`](Connection::handle_input),
//!   [`handle_timeout(now)`](Connection::handle_timeout),
//!   [`handle_eof(now)`](Connection::handle_eof),
//!   [`handle_transport_error(now, e)`](Connection::handle_transport_error),
//!   [`handle_input_deferred(now)`](Connection::handle_input_deferred)
//!   (the driver holds back reading, for back-pressure).
//! - **C. Commands** mutate, and **only queue work**:
//!   [`open_channel`](Connection::open_channel),
//!   [`close_channel`](Connection::close_channel),
//!   [`call`](Connection::call), [`send`](Connection::send),
//!   [`publish`](Connection::publish),
//!   [`update_secret`](Connection::update_secret),
//!   [`close`](Connection::close). A command that waits for a reply returns
//!   an [`OpId`](types::OpId); the reply comes back later as
//!   [`Event::Completed`] with that id. Misuse (a closed channel, a method
//!   that may not be sent, a frame over `frame_max`) is an immediate
//!   [`UsageError`](error::UsageError) and queues nothing.
//! - **D. Outputs**: [`poll_transmit(buf)`](Connection::poll_transmit),
//!   [`poll_event()`](Connection::poll_event),
//!   [`poll_timeout()`](Connection::poll_timeout), and a hint,
//!   [`read_low_water()`](Connection::read_low_water).
//!
//! **The rule** (after str0m): after *any* input or command, the driver
//! drains `poll_transmit` (writing the bytes to the transport) and
//! `poll_event` until both are empty, then sleeps until `poll_timeout()`
//! (or until new bytes or a new command arrive), and then calls
//! `handle_timeout(now)`. `poll_timeout()` returning `None` means no timer
//! is running. Calling `handle_timeout` early is harmless.
//!
//! `poll_transmit` may hold publishes and acks back for a moment so that
//! they leave in fewer, larger writes ([`Coalescing`], on by default):
//! publishes only while at least 256 publishes already written on their
//! channel wait for their confirms; acks, nacks and rejects only while
//! fewer than a quarter of the channel's prefetch (from its `basic.qos`) is
//! delivered and not settled by what was written; never anything else. It
//! then returns nothing although
//! [`transmit_len`](Connection::transmit_len) is not zero;
//! [`has_transmit`](Connection::has_transmit) is false, and
//! `poll_timeout()` includes when the hold ends at the latest. A confirm
//! or delivery that comes in, or any other command, may end it sooner: a
//! driver that
//! skips waking itself for commands while bytes it was woken for are
//! queued must wake when [`hold_ended`](Connection::hold_ended) turns
//! true.
//!
//! While publishes are held, input is not urgent either: RabbitMQ owes
//! the confirms of what was written, and until enough of them come there
//! is nothing to write. `read_low_water()` is how many bytes can pile up
//! before they are worth a wakeup: 1 whenever nothing is held, otherwise
//! the ack frames that confirm about half of the written publishes above
//! the 256 (at most 8 KiB). A driver may set its socket's receive
//! low-water mark to it after draining `poll_transmit`, and so sleep
//! through many confirms at a time; it must then still read at
//! `poll_timeout()`, when the hold ends at the latest and the hint is 1
//! again. A driver that ignores it only wakes more often.
//!
//! Commands take no `now`: they use the latest time given to an input.
//! That time is also taken as the moment `poll_transmit`'s bytes were
//! written, which at worst makes a heartbeat go out early, never late.
//!
//! ## Faults, and whose they are (after h11)
//!
//! - The caller's misuse: [`UsageError`](error::UsageError), returned at once.
//! - The server's protocol faults (garbage, a frame on an unknown channel,
//!   content out of order, a heartbeat on a channel, an oversized frame...):
//!   the core queues `connection.close` with the right reply code (501,
//!   502, 503, 504, 505) and the connection ends with
//!   [`ConnectionError::Protocol`](error::ConnectionError::Protocol). Nothing
//!   the network sends can make the core panic, and no allocation is sized
//!   from an untrusted length before it is checked against a limit.
//! - The server's refusals: `channel.close` fails that channel's pending
//!   commands with [`ChannelError::ClosedByServer`](error::ChannelError::ClosedByServer)
//!   and the connection lives on; `connection.close` ends everything with
//!   [`ConnectionError::ClosedByServer`](error::ConnectionError::ClosedByServer).
//!
//! When the connection ends, every pending command completes with
//! [`ChannelError::ConnectionClosed`](error::ChannelError::ConnectionClosed),
//! then [`Event::ConnectionClosed`] is the last event. Later input is
//! ignored.
//!
//! ## Buffers
//!
//! The read buffer holds at most one incomplete frame beyond the bytes
//! just given (the frame's size is checked against `frame_max` from its
//! 7-byte header). A message body is bounded by
//! [`ConnectionConfig::max_body_size`]. The write buffer grows only with
//! commands; the driver bounds it by bounding commands (confirm windows,
//! prefetch), or by pausing commands while
//! [`transmit_len`](Connection::transmit_len) is high. A body that arrives in one frame is handed out as a
//! zero-copy slice of the read buffer.
//!
//! ## Example
//!
//! ```
//! use std::time::Instant;
//! use carehare_core::{Connection, ConnectionConfig};
//!
//! let now = Instant::now();
//! let mut conn = Connection::new(ConnectionConfig::default(), now);
//! let mut out = Vec::new();
//! conn.poll_transmit(&mut out); // the protocol header: write it to the socket
//! assert_eq!(out, b"AMQP\x00\x00\x09\x01");
//! // ...then feed what the socket reads into `conn.handle_input(now, &bytes)`,
//! // drain `poll_transmit` and `poll_event`, and sleep until `poll_timeout()`.
//! ```

#![deny(unreachable_pub)]

mod channel;
mod connection;
pub mod error;
pub mod event;
pub mod frame;
mod heartbeat;
pub mod method;
pub mod properties;
pub mod table;
// Unstable helpers for carehare's own tests, not public API (see its docs).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
pub mod types;
mod wire;

pub use connection::{Auth, Coalescing, Connection, ConnectionConfig};
pub use event::{ContentMethod, Delivery, Event, Reply, Tuning};
