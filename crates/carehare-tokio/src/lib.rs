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

    fn connect_tcp(&self, address: SocketAddr) -> BoxFuture<'static, io::Result<TcpConnected>> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp_connected(tcp, |tcp| Box::new(tcp.compat())))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use std::mem::size_of_val;

    /// A task that awaits a connection carries the future it awaits for
    /// its whole life: it is two words, and it may be made before the
    /// runtime it runs on is entered.
    #[test]
    fn connecting_is_two_words_and_finds_its_runtime_when_polled() {
        // Nothing listens on port 1: refused at once.
        let options = crate::ConnectOptions::from_url("amqp://127.0.0.1:1/").unwrap();
        let connecting = crate::connect_with(options.clone());
        assert_eq!(size_of_val(&connecting), 2 * size_of::<usize>());
        let recovering =
            crate::connect_recovering(options, Default::default(), |_| Box::pin(async { Ok(()) }));
        assert_eq!(size_of_val(&recovering), 2 * size_of::<usize>());
        let url_connect = async { crate::connect("amqp://127.0.0.1:1/").await.map(drop) };
        assert!(
            size_of_val(&url_connect) <= 64,
            "{}",
            size_of_val(&url_connect)
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime.block_on(connecting).unwrap_err();
        assert!(matches!(error, crate::Error::Connect { .. }), "{error:?}");
        drop(recovering);
        assert!(matches!(
            runtime.block_on(url_connect).unwrap_err(),
            crate::Error::Connect { .. }
        ));
    }
}
