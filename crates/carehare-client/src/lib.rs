#![doc = include_str!("../README.md")]
//! ## Design
//!
//! carehare models your *intent*, not AMQP channels:
//! - `queue_declare`, `exchange_declare`, `queue_bind`, `queue_unbind` each
//!   run on a short-lived channel, so a refusal is that call's
//!   [`Error::ChannelClosedByServer`] and the connection stays usable;
//! - `publish` always uses publisher confirms, over one channel per
//!   exchange, and returns a future per message;
//! - consuming acks ([`Connection::acking_consumer`]); a no-ack consumer
//!   ([`ConsumerOptions::no_ack`]) is an explicit opt-out, with its buffer
//!   still bounded.
//!
//! Each operation takes one short lock on the shared core, queues its
//! frames and wakes the driver: there is no task hop.

#![deny(unreachable_pub)]

mod address;
mod capacity;
mod connect;
mod driver;
mod error;
mod handles;
mod low_water;
mod message;
mod metrics;
mod options;
#[cfg(feature = "otel")]
pub mod otel;
mod outcome;
mod recovery;
mod runtime;
// Public (through `testing`) only with the `testing` feature; the
// client's own tests use more of it than the feature exposes.
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(not(test), allow(dead_code))]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod sim;
mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod uri;

pub use address::{Address, AddressOrder};
pub use carehare_core;
pub use carehare_core::properties::BasicProperties;
pub use carehare_core::properties::builder::{HeaderValue, InvalidProperty, PropertiesBuilder};
// Everything needed to build properties and headers, at the root.
pub use carehare_core::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortStr,
    ShortStrTooLong,
};
pub use connect::{Connecting, connect_with_runtime, connect_with_runtime_of};
pub use error::{Cause, CloseReason, ConnectionError, Error, UsageError};
pub use handles::blocking::{Blocking, BlockingChanges};
pub use handles::confirmation::Confirmation;
pub use handles::connection::{Connection, ExchangeOptions, QueueOptions};
pub use handles::consumer::{Acker, AckingConsumer, ConsumerOptions, STREAM_CHUNK_ALLOWANCE};
pub use handles::get::GetMessage;
pub use handles::publisher::Publisher;
pub use handles::rpc::{DIRECT_REPLY_TO, RpcClient};
pub use low_water::LowWater;
pub use message::{Message, Returned};
pub use metrics::{Counter, Counters, Metrics};
pub use options::{ClientCert, ConnectOptions, TlsOptions};
pub use recovery::{
    Backoff, DeliveryTag, RecoveredMessage, RecoveringConfirmation, RecoveringConnection,
    RecoveringConsumer, RecoveringPublisher, RecoveryEvent, RecoveryEvents, RecoveryOptions,
    Republish, Setup,
};
pub use runtime::{BoxFuture, Runtime, Stream, TcpConnected, tcp_connected};
pub use tls::{CertificateProblem, TlsError};
pub use uri::UrlError;

/// Defines an adapter's `connect(url)` and `connect_with(options)` over
/// `$runtime`, so every adapter exposes the same entry points, written once.
/// `$krate` is the adapter crate's name, for the docs' examples.
#[macro_export]
macro_rules! adapter_entry_points {
    ($krate:ident, $runtime:expr) => {
        /// Connects to `url` (`amqp://` or `amqps://`, per RabbitMQ's URI
        /// spec). The timeout (`connection_timeout`) covers TCP, TLS and
        /// the AMQP handshake.
        ///
        /// ```no_run
        #[doc = concat!("# async fn f() -> Result<(), ", stringify!($krate), "::Error> {")]
        #[doc = concat!("let connection = ", stringify!($krate), "::connect(\"amqps://user:pass@rabbit.example.com/vhost?heartbeat=30\").await?;")]
        /// connection.close().await?;
        /// # Ok(()) }
        /// ```
        pub async fn connect(url: &str) -> Result<$crate::Connection, $crate::Error> {
            // Apart, so that the parsed options are not kept across the
            // await: the future stays a few words (see `connect_with`).
            let connecting = connect_with($crate::ConnectOptions::from_url(url)?);
            connecting.await
        }

        /// Connects with explicit options. The future, [`Connecting`], is
        /// two words (its state is on the heap), and the runtime is found
        /// when it is first polled, so it may be made outside the runtime.
        ///
        /// ```no_run
        #[doc = concat!("# async fn f() -> Result<(), ", stringify!($krate), "::Error> {")]
        #[doc = concat!("let mut options = ", stringify!($krate), "::ConnectOptions::from_url(\"amqp://localhost/\")?;")]
        /// options.connection_timeout = std::time::Duration::from_secs(3);
        /// options.amqp.connection_name = Some("billing".into());
        #[doc = concat!("let connection = ", stringify!($krate), "::connect_with(options).await?;")]
        /// # drop(connection); Ok(()) }
        /// ```
        pub fn connect_with(options: $crate::ConnectOptions) -> $crate::Connecting {
            $crate::connect_with_runtime_of(move || ::std::sync::Arc::new($runtime), options)
        }

        /// Connects with `options`, runs `setup` (which declares the
        /// topology), and from then on recovers the connection whenever it
        /// is lost: see [`RecoveringConnection`].
        ///
        /// ```no_run
        #[doc = concat!("# async fn f() -> Result<(), ", stringify!($krate), "::Error> {")]
        #[doc = concat!("use ", stringify!($krate), "::{ConnectOptions, QueueOptions, RecoveryOptions};")]
        /// let options = ConnectOptions::from_url("amqp://localhost/")?;
        #[doc = concat!("let connection = ", stringify!($krate), "::connect_recovering(options, RecoveryOptions::default(), |c| {")]
        ///     Box::pin(async move {
        ///         c.queue_declare("jobs", QueueOptions { durable: true, ..Default::default() }).await?;
        ///         Ok(())
        ///     })
        /// })
        /// .await?;
        /// let publisher = connection.publisher(100);
        /// publisher.publish("hello", "", "jobs").await?.await?;
        /// # Ok(()) }
        /// ```
        pub fn connect_recovering<T, F>(
            options: $crate::ConnectOptions,
            recovery: $crate::RecoveryOptions,
            setup: F,
        ) -> $crate::BoxFuture<'static, Result<$crate::RecoveringConnection<T>, $crate::Error>>
        where
            T: Clone + Send + Sync + 'static,
            F: Fn($crate::Connection) -> $crate::BoxFuture<'static, Result<T, $crate::Error>>
                + Send
                + Sync
                + 'static,
        {
            // The runtime is made on the first poll (see `connect_with`).
            ::std::boxed::Box::pin(async move {
                $crate::RecoveringConnection::connect(
                    ::std::sync::Arc::new($runtime),
                    options,
                    recovery,
                    setup,
                )
                .await
            })
        }
    };
}
