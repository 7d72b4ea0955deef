//! # carehare on async-std
//!
//! > **async-std is discontinued upstream** ([RUSTSEC-2025-0052], which
//! > recommends [smol]). This adapter is kept for code that already runs
//! > on async-std, and it stays tested against the same scenarios as the
//! > other adapters, but **new code should use `carehare-smol`**: the API
//! > is identical, so switching is a one-line change.
//!
//! A RabbitMQ client that handles all the edge cases: typed, matchable
//! errors; a refused operation never kills the connection; publishing
//! always uses confirms; consuming always acks.
//!
//! ```no_run
//! # async fn f() -> Result<(), carehare_async_std::Error> {
//! use carehare_async_std::{Error, QueueOptions};
//!
//! let connection = carehare_async_std::connect("amqp://guest:guest@localhost/").await?;
//! connection.queue_declare("my-queue", QueueOptions::exclusive()).await?;
//! match connection.publish("Hello, world!", "", "my-queue").await {
//!     Ok(()) => {}
//!     Err(Error::ServerSentNack) => eprintln!("Failed to publish message"),
//!     Err(Error::ChannelClosedByServer(reason)) => eprintln!("Problem with the exchange: {reason}"),
//!     Err(other) => return Err(other),
//! }
//! let consumer = connection.acking_consumer("my-queue", 10).await?;
//! let (body, delivery_tag) = consumer.next_delivery().await?;
//! consumer.ack(delivery_tag);
//! connection.close().await?;
//! # Ok(()) }
//! ```
//!
//! This crate is the async-std [`Runtime`]; all
//! the logic is in `carehare-client` and `carehare-core`, shared with the
//! tokio and smol adapters.
//!
//! [RUSTSEC-2025-0052]: https://rustsec.org/advisories/RUSTSEC-2025-0052.html
//! [smol]: https://docs.rs/smol

#![deny(unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub use carehare_client::*;

/// The async-std runtime: spawns on async-std's global executor.
///
/// ```no_run
/// # async fn f() -> Result<(), carehare_async_std::Error> {
/// use std::sync::Arc;
/// let options = carehare_async_std::ConnectOptions::from_url("amqp://localhost/")?;
/// let connection = carehare_async_std::connect_with_runtime(Arc::new(carehare_async_std::AsyncStd), options).await?;
/// # drop(connection); Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            use async_std::net::ToSocketAddrs;
            Ok((host.as_str(), port).to_socket_addrs().await?.collect())
        })
    }

    fn connect_tcp(&self, address: SocketAddr) -> BoxFuture<'static, io::Result<TcpConnected>> {
        Box::pin(async move {
            let tcp = async_std::net::TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp_connected(tcp, |tcp| Box::new(tcp)))
        })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(
            deadline.saturating_duration_since(Instant::now()),
        ))
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        // Dropping an async-std `JoinHandle` detaches the task.
        drop(async_std::task::spawn(future));
    }
}

carehare_client::adapter_entry_points!(carehare_async_std, crate::AsyncStd);

/// The README's examples, compiled as doctests so that they keep building.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
