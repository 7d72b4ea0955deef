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
//! Invariants (of the task's `Unsettled`):
//! - `entries` is in submission order; an entry leaves only when its
//!   caller's confirmation is answered, and each caller is answered
//!   exactly once;
//! - an entry's `sent` is its confirm on the live connection, or `None`
//!   while it is in doubt (after a loss, until the next connection);
//! - confirms are taken in order from the front: only the front's is
//!   polled (with the task's waker), so a wakeup costs what became ready.
//!   A confirm that comes before an earlier one waits for it, which costs
//!   that caller a little latency and nobody a message; on a loss, every
//!   entry's confirm is looked at once, so that what was settled just
//!   before is not sent again;
//! - each entry holds its window slot, so the window bounds publishes
//!   queued during an outage too.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use carehare_core::properties::BasicProperties;

use super::options::Republish;
use super::shared::Recovery;
use crate::capacity::shrink_sparse;
use crate::error::{ConnectionError, Error};
use crate::handles::confirmation::Confirmation;
use crate::handles::connection::Connection;
use crate::message::NO_PROPERTIES;
use crate::outcome::{self, OutcomeReceiver, OutcomeSender};
use crate::state::{Permit, Window};

/// One publish, as the caller made it. The names and properties are
/// shared with the jobs before it when they are the same (see [`Last`]):
/// an outage queues a window of jobs, and most repeat them.
struct Job {
    exchange: Arc<str>,
    routing_key: Arc<str>,
    properties: Arc<BasicProperties>,
    body: Bytes,
    mandatory: bool,
    /// Taken when the caller is answered.
    tx: Option<OutcomeSender>,
    _permit: Permit,
    /// Connections this job was in doubt on.
    in_doubt: u32,
}

/// One unsettled publish.
struct Entry {
    job: Boxed,
    /// Its confirm on the live connection; `None` while in doubt.
    sent: Option<Confirmation>,
}

/// Every unsettled publish, in submission order.
#[derive(Default)]
struct Unsettled {
    entries: VecDeque<Entry>,
}

/// Jobs are boxed: an outage queues up to a window of them, and the
/// deques that carry them then hold pointers, not 500-byte jobs.
type Boxed = Box<Job>;

impl Unsettled {
    /// Sends every entry on `connection`, in order (after a loss, these
    /// are the ones in doubt).
    fn send_all(&mut self, connection: &Connection) {
        for entry in &mut self.entries {
            entry.sent = Some(send_on(connection, &entry.job));
        }
    }

    /// The connection was lost with every entry unconfirmed: each is in
    /// doubt once more, and those in doubt more than `limit` times fail.
    fn in_doubt(&mut self, limit: u32) {
        self.entries.retain_mut(|entry| {
            entry.sent = None;
            entry.job.in_doubt += 1;
            if entry.job.in_doubt <= limit {
                return true;
            }
            if let Some(tx) = entry.job.tx.take() {
                let _ = tx.send(Err(Error::InDoubt));
            }
            false
        });
    }

    /// Adds and sends a new job.
    fn send_new(&mut self, connection: &Connection, job: Boxed) {
        let sent = Some(send_on(connection, &job));
        self.entries.push_back(Entry { job, sent });
    }

    /// Answers the confirms that came, oldest first, up to the first that
    /// has not; `true` if the connection was lost.
    fn settle_in_order(&mut self, cx: &mut Context<'_>) -> bool {
        while let Some(front) = self.entries.front_mut() {
            let Some(sent) = front.sent.as_mut() else {
                return false;
            };
            match Pin::new(sent).poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(Error::ConnectionClosed(_))) => {
                    self.settle_what_came();
                    return true;
                }
                Poll::Ready(result) => {
                    if let Some(mut entry) = self.entries.pop_front()
                        && let Some(tx) = entry.job.tx.take()
                    {
                        let _ = tx.send(result);
                    }
                }
            }
        }
        false
    }

    /// After a loss: answers every entry whose confirm came before it, so
    /// that it is not sent again.
    fn settle_what_came(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        self.entries.retain_mut(|entry| {
            let Some(sent) = entry.sent.as_mut() else {
                return true;
            };
            match Pin::new(sent).poll(&mut cx) {
                Poll::Ready(Err(Error::ConnectionClosed(_))) | Poll::Pending => true,
                Poll::Ready(result) => {
                    if let Some(tx) = entry.job.tx.take() {
                        let _ = tx.send(result);
                    }
                    false
                }
            }
        });
    }

    /// Answers every entry with `why`.
    fn fail_all(&mut self, why: impl Fn() -> Error) {
        for mut entry in std::mem::take(&mut self.entries) {
            if let Some(tx) = entry.job.tx.take() {
                let _ = tx.send(Err(why()));
            }
        }
    }
}

/// The names and properties of the last publish, for the next to share.
#[derive(Default)]
struct Last {
    exchange: Option<Arc<str>>,
    routing_key: Option<Arc<str>>,
    properties: Option<Arc<BasicProperties>>,
}

/// `value`, shared with `last` if equal, else made and kept in `last`.
fn reuse<T: ?Sized + PartialEq>(
    last: &mut Option<Arc<T>>,
    value: &T,
    make: impl FnOnce(&T) -> Arc<T>,
) -> Arc<T> {
    match last {
        Some(kept) if **kept == *value => kept.clone(),
        _ => last.insert(make(value)).clone(),
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Boxed>,
    last: Last,
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
    window: Arc<Window>,
    _handles: Arc<Handles>,
}

impl<T> Clone for RecoveringPublisher<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            queue: self.queue.clone(),
            window: self.window.clone(),
            _handles: self._handles.clone(),
        }
    }
}

impl<T> std::fmt::Debug for RecoveringPublisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveringPublisher")
            .field("in_flight", &self.window.in_flight())
            .field("max_in_flight", &self.window.max())
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> RecoveringPublisher<T> {
    pub(super) fn new(shared: Arc<Recovery<T>>, max_in_flight: usize) -> Self {
        let queue = SharedQueue::default();
        let task = run(shared.clone(), queue.clone());
        shared.runtime().spawn(Box::pin(task));
        Self {
            shared,
            queue: queue.clone(),
            window: Window::new(max_in_flight),
            _handles: Arc::new(Handles(queue)),
        }
    }

    /// Unsettled publishes right now.
    pub fn in_flight(&self) -> usize {
        self.window.in_flight()
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
        self.send(body.into(), exchange, routing_key, &NO_PROPERTIES, false)
            .await
    }

    /// [`publish`](Self::publish) with properties.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`publish`](Self::publish).
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
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`publish`](Self::publish).
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
        let permit = self.window.acquire().await;
        let (tx, rx) = outcome::channel();
        let mut q = lock(&self.queue);
        if let Some(e) = &q.task_gone {
            return Err(e.clone());
        }
        let last = &mut q.last;
        let job = Box::new(Job {
            exchange: reuse(&mut last.exchange, exchange, |s| Arc::from(s)),
            routing_key: reuse(&mut last.routing_key, routing_key, |s| Arc::from(s)),
            properties: reuse(&mut last.properties, properties, |p| Arc::new(p.clone())),
            body,
            mandatory,
            tx: Some(tx),
            _permit: permit,
            in_doubt: 0,
        });
        q.jobs.push_back(job);
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        Ok(RecoveringConfirmation { rx })
    }
}

/// The confirm of one recovering publish: it resolves once, with the final
/// outcome (after any re-publishing).
///
/// # Cancel safety
///
/// Awaiting it is cancel-safe. Dropping it does not take the publish back:
/// the publisher still sends it (again after a loss, as
/// [`Republish`](crate::Republish) says) until RabbitMQ settles it; only
/// the outcome is lost.
#[must_use = "a publish is only known to be safe once its confirmation resolves"]
pub struct RecoveringConfirmation {
    rx: OutcomeReceiver,
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
            Poll::Ready(Some(result)) => Poll::Ready(result),
            // The publisher's task was dropped with its runtime.
            Poll::Ready(None) => {
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
    let mut unsettled = Unsettled::default();
    let mut spare = VecDeque::new();
    let mut after = 0;
    loop {
        let live = shared.live(after).await;
        let (connection, _, generation) = match live {
            Ok(live) => live,
            Err(e @ Error::RecoveryTimeout(_)) => {
                // The outage outlasted the timeout: what waits fails.
                fail(&mut unsettled, &queue, &e, false);
                continue;
            }
            Err(e) => {
                fail(&mut unsettled, &queue, &e, true);
                return;
            }
        };
        after = generation;
        // What was in doubt goes out again first, in order.
        unsettled.send_all(&connection);
        let pass =
            std::future::poll_fn(|cx| pump(&connection, &mut unsettled, &queue, &mut spare, cx))
                .await;
        match pass {
            Pass::Done => return,
            Pass::Lost => {
                if shared.options().republish == Republish::FailInDoubt {
                    unsettled.fail_all(|| Error::InDoubt);
                } else {
                    unsettled.in_doubt(shared.options().max_republish);
                }
            }
        }
    }
}

/// Sends new jobs, settles what the connection settled, and notices a
/// loss. `spare` is the task's own job buffer, swapped with the queue's so
/// that neither is allocated again for each batch.
fn pump(
    connection: &Connection,
    unsettled: &mut Unsettled,
    queue: &SharedQueue,
    spare: &mut VecDeque<Boxed>,
    cx: &mut Context<'_>,
) -> Poll<Pass> {
    let handles_gone = {
        let mut q = lock(queue);
        if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            q.waker = Some(cx.waker().clone());
        }
        std::mem::swap(&mut q.jobs, spare);
        q.handles_gone
    };
    for job in spare.drain(..) {
        unsettled.send_new(connection, job);
    }
    // After an outage both deques carried its backlog.
    shrink_sparse(spare);
    let lost = unsettled.settle_in_order(cx);
    shrink_sparse(&mut unsettled.entries);
    if lost {
        return Poll::Ready(Pass::Lost);
    }
    if handles_gone && unsettled.entries.is_empty() && lock(queue).jobs.is_empty() {
        return Poll::Ready(Pass::Done);
    }
    Poll::Pending
}

/// Fails every unsettled publish, and every queued job, with `why`; with
/// `stop`, new publishes fail too.
fn fail(unsettled: &mut Unsettled, queue: &SharedQueue, why: &Error, stop: bool) {
    unsettled.fail_all(|| why.clone());
    let mut q = lock(queue);
    for mut job in q.jobs.drain(..) {
        if let Some(tx) = job.tx.take() {
            let _ = tx.send(Err(why.clone()));
        }
    }
    if stop {
        q.task_gone = Some(why.clone());
    }
}
