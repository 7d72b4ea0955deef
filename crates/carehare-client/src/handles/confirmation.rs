//! The future of one publish's confirm.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use carehare_core::properties::BasicProperties;

use crate::error::Error;
use crate::outcome::{self, OutcomeReceiver};
use crate::state::{Inner, Permit, Shared};

/// The confirm of one publish. See
/// [`Connection::publish`](crate::Connection::publish).
///
/// Publishes are queued when `publish` is called, so keep several
/// confirmations and await them together:
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// let confirmations: Vec<_> = (0..100).map(|i| connection.publish(format!("{i}"), "", "my-queue")).collect();
/// for confirmation in confirmations {
///     confirmation.await?;
/// }
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Awaiting it is cancel-safe: the outcome stays until a later poll takes
/// it. Dropping it does not take the publish back (it was queued when
/// `publish` returned): only its outcome is lost. A window slot of a
/// [`Publisher`](crate::Publisher) is freed when RabbitMQ settles the
/// message, not when its confirmation is dropped.
#[must_use = "a publish is only known to be safe once its confirmation resolves"]
pub struct Confirmation {
    rx: OutcomeReceiver,
    shared: Arc<Shared>,
}

impl Confirmation {
    /// Queues a publish (or holds it while blocked) and returns its
    /// confirmation.
    pub(crate) fn publish(
        shared: &Arc<Shared>,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
        permit: Option<Permit>,
    ) -> Self {
        let inner = shared.lock();
        Self::publish_locked(
            shared,
            inner,
            body,
            exchange,
            routing_key,
            properties,
            mandatory,
            permit,
        )
    }

    /// [`publish`](Self::publish), but an error at once if the connection
    /// is closed: the check and the publish take the lock once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn publish_if_open(
        shared: &Arc<Shared>,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
        permit: Option<Permit>,
    ) -> Result<Self, Error> {
        let inner = shared.lock();
        if let Some(e) = inner.closed_error() {
            return Err(e);
        }
        Ok(Self::publish_locked(
            shared,
            inner,
            body,
            exchange,
            routing_key,
            properties,
            mandatory,
            permit,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn publish_locked(
        shared: &Arc<Shared>,
        mut inner: MutexGuard<'_, Inner>,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
        permit: Option<Permit>,
    ) -> Self {
        let (queued, wake) = inner.queue_command(|inner| {
            inner.publish(body, exchange, routing_key, properties, mandatory, permit)
        });
        drop(inner);
        let rx = match queued {
            Ok(rx) => {
                if wake {
                    shared.wake_driver();
                }
                rx
            }
            Err(e) => outcome::ready(Err(e)),
        };
        Self {
            rx,
            shared: shared.clone(),
        }
    }
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmation").finish_non_exhaustive()
    }
}

impl Future for Confirmation {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Some(result)) => Poll::Ready(result),
            Poll::Ready(None) => Poll::Ready(Err(self.shared.lock().lost())),
            Poll::Pending => Poll::Pending,
        }
    }
}
