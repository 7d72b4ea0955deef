//! A connection that recovers: when the link or the broker goes away, it
//! reconnects (with backoff, to any of the configured addresses), re-runs
//! the application's `setup` to declare its topology again, and carries
//! its consumers and unconfirmed publishes over to the new connection.
//!
//! It is built on [`Connection`], never inside it: it owns one at a time,
//! replaces it after a loss, and nothing below knows that recovery exists.
//!
//! The pieces: `options` (how to recover), `backoff`, `events` (the
//! lifecycle stream), `shared` (the state the supervisor, the handles and
//! their waiters share, with its invariants), `consumer` and `publisher`
//! (handles that survive recovery). This file holds the connection handle
//! and the supervisor.

mod backoff;
mod consumer;
mod events;
mod options;
mod publisher;
mod shared;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use futures_channel::oneshot;
use futures_util::future::{Either, select};
use tracing::{info, warn};

pub use backoff::Backoff;
pub use consumer::{DeliveryTag, RecoveredMessage, RecoveringConsumer};
pub use events::{RecoveryEvent, RecoveryEvents};
pub use options::{RecoveryOptions, Republish};
pub use publisher::{RecoveringConfirmation, RecoveringPublisher};

use crate::connect::{connect_observed, connect_with_runtime};
use crate::error::Error;
use crate::handles::connection::Connection;
use crate::options::ConnectOptions;
use crate::runtime::{BoxFuture, Runtime};
use shared::{AfterLoss, Recovery};

/// What a [`RecoveringConnection`] runs on every (re)connect: it declares
/// the topology the application needs (exchanges, queues, bindings) and
/// returns what the application needs to know of it, e.g. the name the
/// server gave an exclusive queue.
pub type Setup<T> = Arc<dyn Fn(Connection) -> BoxFuture<'static, Result<T, Error>> + Send + Sync>;

/// A connection that survives the broker going away. Cheap to clone.
///
/// Made by `connect_recovering` in each adapter crate (or
/// [`RecoveringConnection::connect`] with a runtime). The first connect and
/// `setup` must succeed: their error is returned as is (unless
/// [`RecoveryOptions::retry_first_connect`] is set, which makes the first
/// connection in the background, like a reconnect). After that, a lost
/// connection is replaced, `setup` runs again on the new one, and
/// [`consumer`](Self::consumer)s and [`publisher`](Self::publisher)s carry
/// on. What is recovered and what is not is in `docs/reconnect.md`.
///
/// ```no_run
/// # async fn f(runtime: std::sync::Arc<dyn carehare_client::Runtime>) -> Result<(), carehare_client::Error> {
/// use carehare_client::{ConnectOptions, QueueOptions, RecoveringConnection, RecoveryOptions};
/// let options = ConnectOptions::from_url("amqp://localhost/")?;
/// let connection = RecoveringConnection::connect(runtime, options, RecoveryOptions::default(), |c| {
///     Box::pin(async move {
///         c.queue_declare("jobs", QueueOptions { durable: true, ..Default::default() }).await?;
///         Ok(())
///     })
/// })
/// .await?;
/// let publisher = connection.publisher(1000);
/// publisher.publish("hello", "", "jobs").await?.await?;
/// # Ok(()) }
/// ```
pub struct RecoveringConnection<T = ()> {
    shared: Arc<Recovery<T>>,
}

impl<T> Clone for RecoveringConnection<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for RecoveringConnection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (generation, live) = self.shared.status();
        f.debug_struct("RecoveringConnection")
            .field("generation", &generation)
            .field("live", &live)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> RecoveringConnection<T> {
    /// Connects with `options`, runs `setup`, and from then on recovers
    /// the connection whenever it is lost. The future is boxed (two
    /// words), like [`Connecting`](crate::Connecting).
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing runs on before it returns. Cancelled, a
    /// connection it already made is closed, and recovery (which starts
    /// when it returns) never starts.
    pub fn connect<F>(
        runtime: Arc<dyn Runtime>,
        options: ConnectOptions,
        recovery: RecoveryOptions,
        setup: F,
    ) -> BoxFuture<'static, Result<Self, Error>>
    where
        F: Fn(Connection) -> BoxFuture<'static, Result<T, Error>> + Send + Sync + 'static,
    {
        // Boxed, for the reason `Connecting` is: see there.
        Box::pin(async move {
            let setup: Setup<T> = Arc::new(setup);
            let first = if recovery.retry_first_connect {
                None
            } else {
                let connection = connect_with_runtime(runtime.clone(), options.clone()).await?;
                let topology = setup(connection.clone()).await?;
                info!(address = %connection.address(), "connected; recovery is on");
                Some((connection, topology))
            };
            let background = first.is_none();
            let (shared, handles_gone) = Recovery::new(runtime.clone(), recovery, first);
            let supervisor = supervise(
                Arc::downgrade(&shared),
                handles_gone,
                runtime.clone(),
                options,
                setup,
                background,
            );
            runtime.spawn(Box::pin(supervisor));
            Ok(Self { shared })
        })
    }

    /// The connection in use, waiting for recovery if there is none
    /// (within [`RecoveryOptions::outage_timeout`]). Use it for
    /// declarations, `get` and the rest of [`Connection`]'s API; a call on
    /// it fails with [`Error::ConnectionClosed`] if the link goes down
    /// meanwhile.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn connection(&self) -> Result<Connection, Error> {
        self.shared.live(0).await.map(|(c, _, _)| c)
    }

    /// What the latest `setup` returned, waiting for recovery like
    /// [`connection`](Self::connection).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn topology(&self) -> Result<T, Error> {
        self.shared.live(0).await.map(|(_, t, _)| t)
    }

    /// A consumer that re-subscribes after every recovery, to the queue
    /// that `queue` names in the latest topology.
    pub fn consumer(
        &self,
        queue: impl Fn(&T) -> String + Send + Sync + 'static,
        options: crate::ConsumerOptions,
    ) -> RecoveringConsumer<T> {
        RecoveringConsumer::new(self.shared.clone(), Arc::new(queue), options)
    }

    /// A publisher with a window of `max_in_flight` unconfirmed messages
    /// whose publishes survive recovery (see [`Republish`]).
    pub fn publisher(&self, max_in_flight: usize) -> RecoveringPublisher<T> {
        RecoveringPublisher::new(self.shared.clone(), max_in_flight)
    }

    /// Lifecycle events from now on: connecting, connected, disconnected,
    /// recovered, gave up. While a first connection made in the background
    /// ([`RecoveryOptions::retry_first_connect`]) is not up yet, the stream
    /// also starts with that connect's events so far.
    pub fn events(&self) -> RecoveryEvents {
        self.shared.subscribe()
    }

    /// Closes the connection and stops recovering. Every call waiting for
    /// recovery fails at once with [`ConnectionError::ClosedByClient`](crate::ConnectionError::ClosedByClient).
    ///
    /// # Cancel safety
    /// Cancel-safe: recovery has stopped and the connection's close has
    /// started by the first poll; a cancelled call only stops waiting for
    /// the close to finish.
    pub async fn close(&self) -> Result<(), Error> {
        match self.shared.close() {
            Some(connection) => connection.close().await,
            None => Ok(()),
        }
    }
}

/// The supervisor: waits for the live connection to end, then reconnects
/// with backoff and re-runs `setup`, until closed or given up. With
/// `first`, there is no connection yet: it makes the first one the same
/// way, at once. Holds only a weak reference, so it ends once every handle
/// is gone.
async fn supervise<T: Clone + Send + Sync + 'static>(
    shared: std::sync::Weak<Recovery<T>>,
    mut handles_gone: oneshot::Receiver<()>,
    runtime: Arc<dyn Runtime>,
    options: ConnectOptions,
    setup: Setup<T>,
    mut first: bool,
) {
    let mut connected_at = runtime.now();
    let mut attempt: u32 = 0;
    loop {
        let lost_at = if first {
            runtime.now()
        } else {
            // Wait for the live connection to end.
            let Some(current) = shared.upgrade().and_then(|s| s.current()) else {
                return;
            };
            let cause = match select(Box::pin(current.closed()), &mut handles_gone).await {
                Either::Left((cause, _)) => cause,
                // Every handle is gone: let go of the connection, which closes.
                Either::Right(_) => return,
            };
            drop(current);
            let Some(rec) = shared.upgrade() else { return };
            let lost_at = runtime.now();
            if let AfterLoss::Stop = rec.lost(cause) {
                return;
            }
            if lost_at.saturating_duration_since(connected_at) >= rec.options().backoff.reset_after
            {
                attempt = 0;
            }
            lost_at
        };
        // Reconnect until it works, is closed, or gives up.
        loop {
            let Some(rec) = shared.upgrade() else { return };
            // A first connect starts at once; a reconnect after a backoff.
            let delay = if first && attempt == 0 {
                std::time::Duration::ZERO
            } else {
                rec.options().backoff.delay(attempt, fastrand::f64())
            };
            attempt = attempt.saturating_add(1);
            drop(rec);
            runtime.sleep_until(runtime.now() + delay).await;
            if shared.upgrade().is_none_or(|rec| rec.ended().is_some()) {
                return;
            }
            let trying = |address: &crate::Address| {
                if let Some(rec) = shared.upgrade() {
                    rec.emit(RecoveryEvent::Connecting {
                        address: address.clone(),
                        attempt,
                    });
                }
            };
            let result = match connect_observed(runtime.clone(), options.clone(), &trying).await {
                Ok(connection) => match setup(connection.clone()).await {
                    Ok(topology) => Ok((connection, topology)),
                    Err(e) => {
                        let _ = connection.close().await;
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            };
            let Some(rec) = shared.upgrade() else { return };
            if rec.ended().is_some() {
                // Closed while this attempt ran: nothing to install, retry
                // or give up on, and no event to announce.
                drop(rec);
                if let Ok((connection, _)) = result {
                    let _ = connection.close().await;
                }
                return;
            }
            match result {
                Ok((connection, topology)) => {
                    connected_at = runtime.now();
                    let downtime = connected_at.saturating_duration_since(lost_at);
                    if let Err(stale) = rec.install(connection, topology, downtime) {
                        // Closed meanwhile.
                        drop(rec);
                        let _ = stale.close().await;
                        return;
                    }
                    first = false;
                    break;
                }
                Err(e)
                    if first
                        && rec
                            .options()
                            .first_connect_attempts
                            .is_some_and(|n| attempt >= n) =>
                {
                    rec.give_up(e);
                    return;
                }
                Err(e) if e.is_transient() || rec.options().retry_permanent => {
                    // Loud once per outage, then quieter.
                    if attempt == 1 {
                        warn!(error = %e, attempt, "connecting failed; retrying");
                    } else {
                        info!(error = %e, attempt, "connecting failed; retrying");
                    }
                }
                Err(e) => {
                    rec.give_up(e);
                    return;
                }
            }
        }
    }
}
