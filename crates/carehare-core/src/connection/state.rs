//! Where a connection is in its life.
//!
//! Invariants:
//! - The handshake moves `AwaitingStart` → `AwaitingTune` →
//!   `AwaitingOpenOk` → `Open`, in that order only, one step per server
//!   method.
//! - `Closing` and `Closed` are entered only through the close path
//!   (`close.rs`), from any state; `Closing` only moves on to `Closed`, and
//!   `Closed` is final.

use std::time::Instant;

use crate::error::ConnectionError;

#[derive(Debug)]
pub(super) enum State {
    /// Protocol header sent, waiting for `connection.start`.
    AwaitingStart,
    /// `start-ok` sent, waiting for `tune` (or a 403 close).
    AwaitingTune,
    /// `tune-ok` and `open` sent.
    AwaitingOpenOk,
    Open,
    /// A `connection.close` went out; waiting for `close-ok`.
    Closing {
        deadline: Instant,
        error: ConnectionError,
    },
    Closed,
}

impl State {
    /// Whether the handshake is still under way.
    pub(super) fn handshaking(&self) -> bool {
        matches!(
            self,
            State::AwaitingStart | State::AwaitingTune | State::AwaitingOpenOk
        )
    }

    /// Whether heartbeats go out: from the tuning on (its interval is
    /// known then) until the close is answered, since the server's monitor
    /// runs until it sends its `close-ok`.
    pub(super) fn sends_heartbeats(&self) -> bool {
        matches!(
            self,
            State::AwaitingOpenOk | State::Open | State::Closing { .. }
        )
    }

    /// Whether a close started or finished.
    pub(super) fn ending(&self) -> bool {
        matches!(self, State::Closing { .. } | State::Closed)
    }
}
