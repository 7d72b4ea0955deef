//! # carehare on smol
//!
//! A RabbitMQ client that handles all the edge cases: typed, matchable
//! errors; a refused operation never kills the connection; publishing
//! always uses confirms; consuming always acks.
//!
//! ```no_run
//! # async fn f() -> Result<(), carehare_smol::Error> {
//! use carehare_smol::{Error, QueueOptions};
//!
//! let connection = carehare_smol::connect("amqp://guest:guest@localhost/").await?;
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
//! This crate is the smol [`Runtime`]; all the
//! logic is in `carehare-client` and `carehare-core`, shared with the tokio
//! and async-std adapters.
//!
//! The connection's driver runs on smol's global executor
//! ([`smol::spawn`]), which has its own thread(s) (`SMOL_THREADS`, default
//! 1), so it makes progress whether or not your code is inside
//! `smol::block_on`.

#![deny(unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub use carehare_client::*;

/// The smol runtime: spawns on smol's global executor.
///
/// ```no_run
/// # async fn f() -> Result<(), carehare_smol::Error> {
/// use std::sync::Arc;
/// let options = carehare_smol::ConnectOptions::from_url("amqp://localhost/")?;
/// let connection = carehare_smol::connect_with_runtime(Arc::new(carehare_smol::Smol), options).await?;
/// # drop(connection); Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl Runtime for Smol {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_string();
        Box::pin(async move { smol::net::resolve((host.as_str(), port)).await })
    }

    fn connect_tcp(&self, address: SocketAddr) -> BoxFuture<'static, io::Result<TcpConnected>> {
        Box::pin(async move {
            let tcp = smol::net::TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp_connected(tcp, |tcp| Box::new(tcp)))
        })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let timer = smol::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        smol::spawn(future).detach();
    }
}

carehare_client::adapter_entry_points!(carehare_smol, crate::Smol);

/// The README's examples, compiled as doctests so that they keep building.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
