//! What a recovering connection's supervisor, its handles and their
//! waiters share.
//!
//! Invariants (of [`State`]):
//! - `generation` counts connections: it grows by one each time `setup`
//!   succeeds on a new connection, and `live` holds that connection (and
//!   the topology `setup` returned) until it is lost; generation 0 (no
//!   connection yet) exists only while a first connect made in the
//!   background is under way;
//! - once `ended` is set (closed by the user, or given up), `live` is
//!   `None` for good and every waiter is answered with the end's error;
//! - every waiter for a connection is woken on each change of `live`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_channel::oneshot;
use futures_util::future::{Either, select};
use tracing::{info, warn};

use super::events::{RecoveryEvent, RecoveryEvents, Subscribers};
use super::options::RecoveryOptions;
use crate::error::{ConnectionError, Error};
use crate::handles::connection::Connection;
use crate::metrics::Counter;
use crate::runtime::Runtime;

pub(crate) struct Recovery<T> {
    runtime: Arc<dyn Runtime>,
    options: RecoveryOptions,
    state: Mutex<State<T>>,
    /// Dropped with the last handle: tells the supervisor to let go of
    /// the connection (which then closes) and end.
    _handles_alive: oneshot::Sender<()>,
}

struct State<T> {
    /// The connection in use and its topology.
    live: Option<(Connection, T)>,
    generation: u64,
    /// Closed by the user, or given up: why.
    ended: Option<Error>,
    waiters: Vec<Waker>,
    events: Subscribers,
}

/// What the supervisor does after a loss.
pub(super) enum AfterLoss {
    /// Reconnect.
    Recover,
    /// Stop: closed, or not worth recovering.
    Stop,
}

impl<T> State<T> {
    fn wake_all(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

impl<T> Recovery<T> {
    /// State around the first connection (generation 1), or before it
    /// (generation 0, when it is made in the background), and the signal
    /// that every handle is gone.
    pub(super) fn new(
        runtime: Arc<dyn Runtime>,
        options: RecoveryOptions,
        first: Option<(Connection, T)>,
    ) -> (Arc<Self>, oneshot::Receiver<()>) {
        let generation = u64::from(first.is_some());
        let events = if first.is_some() {
            Subscribers::default()
        } else {
            Subscribers::replaying()
        };
        let (alive, gone) = oneshot::channel();
        let shared = Arc::new(Self {
            runtime,
            options,
            state: Mutex::new(State {
                live: first,
                generation,
                ended: None,
                waiters: Vec::new(),
                events,
            }),
            _handles_alive: alive,
        });
        (shared, gone)
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub(crate) fn options(&self) -> &RecoveryOptions {
        &self.options
    }

    /// The current generation, and whether a connection is live.
    pub(super) fn status(&self) -> (u64, bool) {
        let state = self.lock();
        (state.generation, state.live.is_some())
    }

    /// Whether the connection was closed by the user or recovery gave up.
    pub(crate) fn ended(&self) -> Option<Error> {
        self.lock().ended.clone()
    }

    pub(super) fn subscribe(&self) -> RecoveryEvents {
        self.lock().events.subscribe()
    }

    pub(super) fn emit(&self, event: RecoveryEvent) {
        self.lock().events.send(event);
    }

    /// The live connection, if any (for the supervisor to watch).
    pub(super) fn current(&self) -> Option<Connection> {
        self.lock().live.as_ref().map(|(c, _)| c.clone())
    }

    /// The user closes: ends recovery and answers every waiter; returns
    /// the live connection, for the caller to close.
    pub(super) fn close(&self) -> Option<Connection> {
        let mut state = self.lock();
        if state.ended.is_none() {
            state.ended = Some(Error::ConnectionClosed(ConnectionError::ClosedByClient));
        }
        state.wake_all();
        state.live.take().map(|(c, _)| c)
    }

    /// The live connection ended with `cause`.
    pub(super) fn lost(&self, cause: ConnectionError) -> AfterLoss {
        let mut state = self.lock();
        if state.ended.is_some() {
            return AfterLoss::Stop;
        }
        state.live = None;
        state.wake_all();
        let cause = Error::ConnectionClosed(cause);
        if !cause.is_transient() {
            // Closed through `connection()` by the application, or its
            // runtime is gone: nothing to recover.
            info!(error = %cause, "connection ended; not recovering");
            state.ended = Some(cause.clone());
            state.events.send(RecoveryEvent::GaveUp { cause });
            return AfterLoss::Stop;
        }
        warn!(error = %cause, "connection lost; recovering");
        state.events.send(RecoveryEvent::Disconnected { cause });
        AfterLoss::Recover
    }

    /// A new connection is up and `setup` ran on it: it becomes the live
    /// one. If the user closed meanwhile, it is handed back, to be closed.
    /// The first connection (made in the background) recovers nothing, so
    /// it brings no `Recovered` event.
    pub(super) fn install(
        &self,
        connection: Connection,
        topology: T,
        downtime: Duration,
    ) -> Result<(), Connection> {
        let mut state = self.lock();
        if state.ended.is_some() {
            return Err(connection);
        }
        let address = connection.address().clone();
        state.live = Some((connection, topology));
        state.generation += 1;
        state.wake_all();
        state.events.send(RecoveryEvent::Connected {
            address: address.clone(),
        });
        if state.generation == 1 {
            info!(%address, "connected; recovery is on");
        } else {
            info!(%address, ?downtime, "recovered");
            if let Some((live, _)) = &state.live {
                live.count(Counter::Reconnects, 1);
            }
            state.events.send(RecoveryEvent::Recovered { downtime });
        }
        Ok(())
    }

    /// Recovery stops for good with `cause`.
    pub(super) fn give_up(&self, cause: Error) {
        warn!(error = %cause, "reconnect failed for good; giving up");
        let mut state = self.lock();
        if state.ended.is_none() {
            state.ended = Some(cause.clone());
        }
        state.wake_all();
        state.events.send(RecoveryEvent::GaveUp { cause });
    }
}

impl<T: Clone> Recovery<T> {
    /// A live connection of a generation after `after` (0: any), its
    /// topology and its generation; waits for recovery within the outage
    /// timeout.
    pub(crate) async fn live(&self, after: u64) -> Result<(Connection, T, u64), Error> {
        let wait = std::future::poll_fn(|cx| self.poll_live(after, cx));
        match self.options.outage_timeout {
            None => wait.await,
            Some(limit) => {
                let deadline = self.runtime.now() + limit;
                match select(Box::pin(wait), self.runtime.sleep_until(deadline)).await {
                    Either::Left((result, _)) => result,
                    Either::Right(_) => Err(Error::RecoveryTimeout(limit)),
                }
            }
        }
    }

    fn poll_live(
        &self,
        after: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Connection, T, u64), Error>> {
        let mut state = self.lock();
        if let Some(e) = &state.ended {
            return Poll::Ready(Err(e.clone()));
        }
        if state.generation > after
            && let Some((c, t)) = &state.live
        {
            return Poll::Ready(Ok((c.clone(), t.clone(), state.generation)));
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
