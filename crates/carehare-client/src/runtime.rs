//! The few things a runtime must provide. Everything else (the driver, the
//! handles, TLS) is written once, here, over `futures-io`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Instant;

use futures_io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream the driver can read and write.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// An async runtime: TCP, timers and spawning. Each adapter crate
/// (`carehare-tokio`, `carehare-async-std`, `carehare-smol`) implements
/// this in a few dozen lines.
pub trait Runtime: Send + Sync + 'static {
    /// Resolves `host` and connects to the first address that answers, with
    /// `TCP_NODELAY` set.
    fn connect_tcp(&self, host: &str, port: u16)
    -> BoxFuture<'static, io::Result<Box<dyn Stream>>>;

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;

    /// Runs `future` to completion in the background, on this runtime.
    fn spawn(&self, future: BoxFuture<'static, ()>);
}
