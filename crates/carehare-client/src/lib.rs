//! # carehare-client
//!
//! The runtime-agnostic half of carehare: the driver that runs
//! [`carehare_core`] over a socket, and the user-facing handles
//! ([`Connection`], [`AckingConsumer`], [`Confirmation`]) and errors.
//! It is written once, over `futures-io`, and shared by the runtime
//! adapters: `carehare-tokio`, `carehare-async-std` and `carehare-smol`
//! each only implement [`Runtime`] (TCP, timers, spawn).
//!
//! Users depend on an adapter crate, not on this one.
//!
//! ## Design
//!
//! carehare models your *intent*, not AMQP channels:
//! - `queue_declare`, `exchange_declare`, `queue_bind`, `queue_unbind` each
//!   run on a short-lived channel, so a refusal is that call's
//!   [`Error::ChannelClosedByServer`] and the connection stays usable;
//! - `publish` always uses publisher confirms, over one channel per
//!   exchange, and returns a future per message;
//! - consuming always acks ([`Connection::acking_consumer`]).
//!
//! Each operation takes one short lock on the shared core, queues its
//! frames and wakes the driver: there is no task hop.

mod connect;
mod connection;
mod consumer;
mod driver;
mod error;
mod message;
mod options;
mod runtime;
mod shared;
mod tls;
mod uri;

pub use carehare_core;
pub use carehare_core::properties::BasicProperties;
pub use carehare_core::types::{AMQPValue, FieldTable};
pub use connect::connect_with_runtime;
pub use connection::{Confirmation, Connection, ExchangeOptions, QueueOptions};
pub use consumer::AckingConsumer;
pub use error::{CloseReason, ConnectionError, Error, UsageError};
pub use message::Message;
pub use options::{ClientCert, ConnectOptions, TlsOptions};
pub use runtime::{BoxFuture, Runtime, Stream};
pub use tls::TlsError;
pub use uri::UrlError;
