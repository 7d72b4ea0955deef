//! Simulated time and in-memory sockets, for fuzz targets and tests
//! outside this crate. Only with the `testing` feature, which is **not**
//! part of the stable API: it may change in any release.
//!
//! - [`SimRuntime`]: a [`Runtime`](crate::Runtime) on a manual clock whose
//!   executor moves the clock only when every task waits, and panics
//!   (instead of hanging) when every task waits with no timer set: a
//!   deadlock is a failure, not a hang.
//! - [`duplex`] and [`End`]: in-memory sockets.
//! - [`FakeBroker`]: the server's side of one socket, playing the
//!   handshake of `carehare_core::testing`, then whatever its caller sends.
//! - [`with_broker`] and [`with_network`]: runtimes whose connects reach a
//!   fake server.
//! - [`leftovers`]: what a connection still has waiting or open, to check
//!   that nothing leaks once it has ended.
//! - [`Captured`]: log lines captured as text, for tests that search them.

pub use crate::sim::{
    Captured, Connector, End, FakeBroker, SimRuntime, duplex, duplex_bounded, with_broker,
    with_network,
};

pub use crate::state::Leftovers;

use crate::Connection;

/// What `connection` still has waiting or open.
pub fn leftovers(connection: &Connection) -> Leftovers {
    connection.shared().lock().leftovers()
}
