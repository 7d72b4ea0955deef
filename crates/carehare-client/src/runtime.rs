//! The few things a runtime must provide. Everything else (the driver, the
//! handles, TLS) is written once, here, over `futures-io`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use futures_io::{AsyncRead, AsyncWrite};

use crate::low_water::LowWater;

/// A boxed, sendable future.
///
/// ```
/// let f: carehare_client::BoxFuture<'static, u8> = Box::pin(async { 1 });
/// # drop(f);
/// ```
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream the driver can read and write: anything with the
/// `futures-io` traits, e.g. smol's `TcpStream` or tokio's through
/// `tokio_util::compat`.
///
/// ```
/// fn accepts(_: Box<dyn carehare_client::Stream>) {}
/// accepts(Box::new(futures_util::io::Cursor::new(Vec::<u8>::new())));
/// ```
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A connected TCP stream, and its socket's [`LowWater`] mark when the
/// runtime can reach it: what [`Runtime::connect_tcp`] gives. With the
/// mark, a connection whose publishes are held back sleeps through many
/// confirms at a time; without it, it works the same, only waking for
/// every read.
pub type TcpConnected = (Box<dyn Stream>, Option<LowWater>);

/// For an adapter's [`connect_tcp`](Runtime::connect_tcp): takes `socket`'s [`LowWater`] mark (on Unix), then hands `socket` to
/// `stream`, so the stream owns the socket the mark is set on.
///
/// ```no_run
/// # fn f() -> std::io::Result<()> {
/// let tcp = std::net::TcpStream::connect("127.0.0.1:5672")?;
/// # fn wrap(_: std::net::TcpStream) -> Box<dyn carehare_client::Stream> { unimplemented!() }
/// let (stream, low_water) = carehare_client::tcp_connected(tcp, wrap);
/// # drop((stream, low_water)); Ok(()) }
/// ```
#[cfg(unix)]
pub fn tcp_connected<S: std::os::fd::AsRawFd>(
    socket: S,
    stream: impl FnOnce(S) -> Box<dyn Stream>,
) -> TcpConnected {
    let low_water = LowWater::of(&socket);
    (stream(socket), Some(low_water))
}

/// For an adapter's [`connect_tcp`](Runtime::connect_tcp): no low-water
/// mark off Unix.
#[cfg(not(unix))]
pub fn tcp_connected<S>(socket: S, stream: impl FnOnce(S) -> Box<dyn Stream>) -> TcpConnected {
    (stream(socket), None)
}

/// An async runtime: TCP, timers and spawning. Each adapter crate
/// (`carehare-tokio`, `carehare-async-std`, `carehare-smol`) implements
/// this in a few dozen lines.
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Instant;
/// use carehare_client::{BoxFuture, Runtime, TcpConnected};
///
/// /// A runtime that can only fail: enough to show the shape.
/// struct Nowhere;
/// impl Runtime for Nowhere {
///     fn resolve(&self, _host: &str, _port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
///         Box::pin(async { Err(std::io::ErrorKind::Unsupported.into()) })
///     }
///     fn connect_tcp(&self, _address: SocketAddr) -> BoxFuture<'static, std::io::Result<TcpConnected>> {
///         Box::pin(async { Err(std::io::ErrorKind::Unsupported.into()) })
///     }
///     fn sleep_until(&self, _deadline: Instant) -> BoxFuture<'static, ()> {
///         Box::pin(std::future::pending())
///     }
///     fn spawn(&self, _future: BoxFuture<'static, ()>) {}
/// }
/// ```
pub trait Runtime: Send + Sync + 'static {
    /// Resolves a host name to every IP address it has, in the resolver's
    /// order. `connect` tries each of them in turn (it never calls this for
    /// an IP address).
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;

    /// Connects TCP to one socket address, with `TCP_NODELAY` set, and
    /// gives the socket's [`LowWater`] mark if the runtime can reach it
    /// ([`tcp_connected`] takes both; a stream alone is `(stream, None)`).
    fn connect_tcp(&self, address: SocketAddr) -> BoxFuture<'static, io::Result<TcpConnected>>;

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;

    /// Runs `future` to completion in the background, on this runtime.
    fn spawn(&self, future: BoxFuture<'static, ()>);

    /// The current time. Every time the client uses (deadlines, the core's
    /// timers) comes from here, so a test runtime with a manual clock runs
    /// heartbeats, timeouts and backoff faster than real time. It must
    /// agree with [`sleep_until`](Self::sleep_until). The default is the
    /// system's monotonic clock, which tokio, async-std and smol use.
    fn now(&self) -> Instant {
        Instant::now()
    }
}
