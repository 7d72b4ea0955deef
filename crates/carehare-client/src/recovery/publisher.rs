//! A publisher whose publishes survive recovery.
//!
//! One task per publisher owns every unsettled publish, in the order they
//! were made. It publishes each on the live connection and settles the
//! caller's confirmation from that connection's confirm. When the
//! connection is lost, the publishes it had not confirmed are in doubt:
//! RabbitMQ may or may not have them. With [`Republish::Unconfirmed`] they
//! go out again, in their original order, on the next connection
//! (at-least-once: never lost, perhaps duplicated); with
//! [`Republish::FailInDoubt`] their confirmations fail with
//! [`Error::InDoubt`].
//!
//! Invariants (of the task's `entries`):
//! - in submission order; an entry leaves only when its caller's
//!   confirmation is answered, and each caller is answered exactly once;
//! - `inner` is `Some` exactly for entries sent on the live connection;
//!   after a loss every entry is `None` until the next connection;
//! - each entry holds its window slot, so the window bounds publishes
//!   queued during an outage too.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use carehare_core::properties::BasicProperties;
use futures_channel::oneshot;

use super::options::Republish;
use super::shared::Recovery;
use crate::error::{ConnectionError, Error};
use crate::handles::confirmation::Confirmation;
use crate::handles::connection::Connection;
use crate::state::Permit;

/// One publish, as the caller made it.
struct Job {
    exchange: String,
    routing_key: String,
    properties: BasicProperties,
    body: Bytes,
    mandatory: bool,
    tx: oneshot::Sender<Result<(), Error>>,
    _permit: Permit,
}

/// A job and, once sent on the live connection, that connection's confirm.
struct Entry {
    job: Job,
    inner: Option<Confirmation>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Every publisher handle is gone: finish what is queued, then stop.
    handles_gone: bool,
    /// The task stopped: new publishes fail at once.
    task_gone: Option<Error>,
    waker: Option<Waker>,
}

type SharedQueue = Arc<Mutex<Queue>>;

fn lock(queue: &SharedQueue) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tells the task when the last handle goes.
struct Handles(SharedQueue);

impl Drop for Handles {
    fn drop(&mut self) {
        let mut q = lock(&self.0);
        q.handles_gone = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

/// Publishes with confirms over a
/// [`RecoveringConnection`](crate::RecoveringConnection), with at most
/// `max_in_flight` unsettled messages, outages included: when the window
/// is full, `publish` waits. Cheap to clone; clones share the window and
/// the order.
pub struct RecoveringPublisher<T> {
    shared: Arc<Recovery<T>>,
    queue: SharedQueue,
    window: Arc<async_lock::Semaphore>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    _handles: Arc<Handles>,
}

impl<T> Clone for RecoveringPublisher<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            queue: self.queue.clone(),
            window: self.window.clone(),
            in_flight: self.in_flight.clone(),
            max_in_flight: self.max_in_flight,
            _handles: self._handles.clone(),
        }
    }
}

impl<T> std::fmt::Debug for RecoveringPublisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveringPublisher")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> RecoveringPublisher<T> {
    pub(super) fn new(shared: Arc<Recovery<T>>, max_in_flight: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let queue = SharedQueue::default();
        let task = run(shared.clone(), queue.clone());
        shared.runtime().spawn(Box::pin(task));
        Self {
            shared,
            queue: queue.clone(),
            window: Arc::new(async_lock::Semaphore::new(max_in_flight)),
            in_flight: Arc::default(),
            max_in_flight,
            _handles: Arc::new(Handles(queue)),
        }
    }

    /// Unsettled publishes right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Waits for room in the window, queues the message and returns its
    /// confirmation, which resolves once, with the final outcome.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is queued until this returns.
    pub async fn publish(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
    ) -> Result<RecoveringConfirmation, Error> {
        self.send(
            body.into(),
            exchange,
            routing_key,
            &BasicProperties::default(),
            false,
        )
        .await
    }

    /// [`publish`](Self::publish) with properties.
    pub async fn publish_with(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<RecoveringConfirmation, Error> {
        self.send(body.into(), exchange, routing_key, properties, false)
            .await
    }

    /// [`publish`](Self::publish) with `mandatory` set (see
    /// [`Connection::publish_mandatory`](crate::Connection::publish_mandatory)).
    pub async fn publish_mandatory(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<RecoveringConfirmation, Error> {
        self.send(body.into(), exchange, routing_key, properties, true)
            .await
    }

    async fn send(
        &self,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
    ) -> Result<RecoveringConfirmation, Error> {
        if let Some(e) = self.shared.ended() {
            return Err(e);
        }
        // Names are checked now, not on some later connection.
        crate::error::short(exchange)?;
        crate::error::short(routing_key)?;
        let permit = Permit::acquire(&self.window, &self.in_flight).await;
        let (tx, rx) = oneshot::channel();
        let job = Job {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            properties: properties.clone(),
            body,
            mandatory,
            tx,
            _permit: permit,
        };
        let mut q = lock(&self.queue);
        if let Some(e) = &q.task_gone {
            return Err(e.clone());
        }
        q.jobs.push_back(job);
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        Ok(RecoveringConfirmation { rx })
    }
}

/// The confirm of one recovering publish: it resolves once, with the final
/// outcome (after any re-publishing).
#[must_use = "a publish is only known to be safe once its confirmation resolves"]
pub struct RecoveringConfirmation {
    rx: oneshot::Receiver<Result<(), Error>>,
}

impl std::fmt::Debug for RecoveringConfirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveringConfirmation")
            .finish_non_exhaustive()
    }
}

impl Future for RecoveringConfirmation {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The publisher's task was dropped with its runtime.
            Poll::Ready(Err(_)) => {
                Poll::Ready(Err(Error::ConnectionClosed(ConnectionError::DriverStopped)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Sends `job` on `connection`.
fn send_on(connection: &Connection, job: &Job) -> Confirmation {
    if job.mandatory {
        connection.publish_mandatory(
            job.body.clone(),
            &job.exchange,
            &job.routing_key,
            &job.properties,
        )
    } else {
        connection.publish_with(
            job.body.clone(),
            &job.exchange,
            &job.routing_key,
            &job.properties,
        )
    }
}

/// What one pass over the entries found.
enum Pass {
    /// The connection was lost: every unsettled entry is in doubt.
    Lost,
    /// Every handle is gone and everything is settled.
    Done,
}

/// The publisher's task.
async fn run<T: Clone + Send + Sync + 'static>(shared: Arc<Recovery<T>>, queue: SharedQueue) {
    let mut entries: VecDeque<Entry> = VecDeque::new();
    let mut after = 0;
    loop {
        let live = shared.live(after).await;
        let (connection, _, generation) = match live {
            Ok(live) => live,
            Err(e @ Error::RecoveryTimeout(_)) => {
                // The outage outlasted the timeout: what waits fails.
                fail(&mut entries, &queue, &e, false);
                continue;
            }
            Err(e) => {
                fail(&mut entries, &queue, &e, true);
                return;
            }
        };
        after = generation;
        // What was in doubt goes out again first, in order.
        for entry in entries.iter_mut() {
            entry.inner = Some(send_on(&connection, &entry.job));
        }
        let pass = std::future::poll_fn(|cx| pump(&connection, &mut entries, &queue, cx)).await;
        match pass {
            Pass::Done => return,
            Pass::Lost => {
                for entry in entries.iter_mut() {
                    entry.inner = None;
                }
                if shared.options().republish == Republish::FailInDoubt {
                    for entry in entries.drain(..) {
                        let _ = entry.job.tx.send(Err(Error::InDoubt));
                    }
                }
            }
        }
    }
}

/// Sends new jobs, settles what the connection settled, and notices a
/// loss.
fn pump(
    connection: &Connection,
    entries: &mut VecDeque<Entry>,
    queue: &SharedQueue,
    cx: &mut Context<'_>,
) -> Poll<Pass> {
    let handles_gone = {
        let mut q = lock(queue);
        for job in q.jobs.drain(..) {
            let inner = Some(send_on(connection, &job));
            entries.push_back(Entry { job, inner });
        }
        q.waker = Some(cx.waker().clone());
        q.handles_gone
    };
    let mut lost = false;
    let mut settled = Vec::new();
    for (i, entry) in entries.iter_mut().enumerate() {
        let Some(inner) = entry.inner.as_mut() else {
            continue;
        };
        match Pin::new(inner).poll(cx) {
            Poll::Pending => {}
            Poll::Ready(Err(Error::ConnectionClosed(_))) => lost = true,
            Poll::Ready(result) => settled.push((i, result)),
        }
    }
    // Answer settled callers, keeping the rest in order.
    for (i, result) in settled.into_iter().rev() {
        if let Some(entry) = entries.remove(i) {
            let _ = entry.job.tx.send(result);
        }
    }
    if lost {
        return Poll::Ready(Pass::Lost);
    }
    if handles_gone && entries.is_empty() && lock(queue).jobs.is_empty() {
        return Poll::Ready(Pass::Done);
    }
    Poll::Pending
}

/// Fails every entry, and every queued job, with `why`; with `stop`, new
/// publishes fail too.
fn fail(entries: &mut VecDeque<Entry>, queue: &SharedQueue, why: &Error, stop: bool) {
    for entry in entries.drain(..) {
        let _ = entry.job.tx.send(Err(why.clone()));
    }
    let mut q = lock(queue);
    for job in q.jobs.drain(..) {
        let _ = job.tx.send(Err(why.clone()));
    }
    if stop {
        q.task_gone = Some(why.clone());
    }
}
