#![doc = include_str!("../README.md")]
//!
//! This crate is the tokio [`Runtime`]; all the
//! logic is in `carehare-client` and `carehare-core`, shared with the
//! async-std and smol adapters.

#![deny(unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub use carehare_client::*;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// The tokio runtime: spawns on the runtime that was current at `connect`.
///
/// ```no_run
/// # async fn f() -> Result<(), carehare_tokio::Error> {
/// use std::sync::Arc;
/// let options = carehare_tokio::ConnectOptions::from_url("amqp://localhost/")?;
/// let connection = carehare_tokio::connect_with_runtime(Arc::new(carehare_tokio::Tokio::current()), options).await?;
/// # drop(connection); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Tokio {
    handle: tokio::runtime::Handle,
}

impl Tokio {
    /// The runtime this is called from.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let runtime = carehare_tokio::Tokio::current();
    /// # drop(runtime); }
    /// ```
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn current() -> Self {
        Self {
            handle: tokio::runtime::Handle::current(),
        }
    }
}

impl Runtime for Tokio {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }

    fn connect_tcp(&self, address: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp.compat()) as Box<dyn Stream>)
        })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) {
        self.handle.spawn(future);
    }
}

carehare_client::adapter_entry_points!(carehare_tokio, crate::Tokio::current());
