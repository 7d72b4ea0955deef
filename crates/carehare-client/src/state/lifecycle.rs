//! The connection's life as the handles see it: the handshake's waiter,
//! how it ended, and who waits for the end.
//!
//! Invariants:
//! - `outcome` is set once, when the connection ends; from then on every
//!   command fails with it, and `closed_wakers` stays empty;
//! - `connected` is taken once: by the handshake's success or by the end.

use std::task::{Context, Poll, Waker};

use carehare_core::Tuning;
use carehare_core::error::ConnectionError;
use futures_channel::oneshot;

/// The receiving half of the handshake's outcome.
pub(crate) type ConnectedReceiver = oneshot::Receiver<Result<Tuning, ConnectionError>>;

pub(crate) struct Lifecycle {
    connected: Option<oneshot::Sender<Result<Tuning, ConnectionError>>>,
    outcome: Option<ConnectionError>,
    closed_wakers: Vec<Waker>,
}

impl Lifecycle {
    pub(crate) fn new() -> (Self, ConnectedReceiver) {
        let (tx, rx) = oneshot::channel();
        let this = Self {
            connected: Some(tx),
            outcome: None,
            closed_wakers: Vec::new(),
        };
        (this, rx)
    }

    /// How the connection ended, once it has.
    pub(crate) fn outcome(&self) -> Option<&ConnectionError> {
        self.outcome.as_ref()
    }

    pub(crate) fn connected(&mut self, tuning: Tuning) {
        if let Some(tx) = self.connected.take() {
            let _ = tx.send(Ok(tuning));
        }
    }

    /// How the connection ended, or `Pending` (woken when it ends).
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<ConnectionError> {
        if let Some(e) = &self.outcome {
            return Poll::Ready(e.clone());
        }
        if !self.closed_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            self.closed_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The connection ended with `error`.
    pub(crate) fn ended(&mut self, error: ConnectionError) {
        if let Some(tx) = self.connected.take() {
            let _ = tx.send(Err(error.clone()));
        }
        self.outcome = Some(error);
        for w in self.closed_wakers.drain(..) {
            w.wake();
        }
    }
}
