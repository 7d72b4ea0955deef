//! The machinery both workers share: the recovering connection and its
//! `setup`, route loops, message processing, graceful stop.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use carehare_tokio::carehare_core::types::ShortStr;
use carehare_tokio::{
    AMQPValue, BasicProperties, Connection, ConnectionError, ConsumerOptions, Error,
    ExchangeOptions, FieldTable, QueueOptions, RecoveredMessage, RecoveringConnection,
    RecoveringConsumer, RecoveringPublisher, Republish,
};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::connection::{ConnectionParameters, is_queue_unavailable, watch_recovery};
use crate::error::{RpcError, WorkerError};
use crate::handler::{BoxFuture, Failure, QueueHandler, RpcHandler};
use crate::wire;

/// The dead-letter exchange of RPC queues, as aio-pika's RPC pattern (which
/// Python's `RPCWorker` uses) declares it: `rpc.dlx`, a non-durable,
/// auto-delete headers exchange.
pub const RPC_DLX: &str = "rpc.dlx";

/// How long closing a consumer or the connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long RabbitMQ may take to confirm an RPC reply.
const REPLY_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long cancelled handlers get to unwind.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// Per-route settings, for [`QueueWorker::route_with`](crate::QueueWorker::route_with)
/// and [`RpcWorker::route_with`](crate::RpcWorker::route_with).
///
/// ```
/// use std::time::Duration;
/// use carehare_worker::{AMQPValue, RouteOptions};
/// let mut options = RouteOptions { prefetch: 4, handler_timeout: Some(Duration::from_secs(60)), ..Default::default() };
/// // Keep failed messages: dead-letter them to the `failed` queue.
/// options.arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
/// options.arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("failed".into()));
/// assert_eq!(RouteOptions::default().prefetch, 32);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOptions {
    /// The consumer's prefetch, which is also the route's concurrency: at
    /// most this many messages are being handled at once. At least 1.
    pub prefetch: u16,
    /// Whether the queue survives a broker restart. `None` is the Python
    /// library's choice: durable for a [`QueueWorker`](crate::QueueWorker),
    /// not durable for an [`RpcWorker`](crate::RpcWorker) (aio-pika's RPC
    /// pattern declares its queues without `durable`). A queue must be
    /// declared the same way by every worker, or RabbitMQ refuses the
    /// second with `406 PRECONDITION_FAILED`.
    pub durable: Option<bool>,
    /// Extra queue arguments (`x-dead-letter-exchange`, `x-message-ttl`,
    /// `x-queue-type`...). An RPC route gets `x-dead-letter-exchange:
    /// rpc.dlx` unless this sets another one.
    pub arguments: FieldTable,
    /// Fail a handler that runs longer than this (its message is then
    /// treated like a handler error). `None`: no limit.
    pub handler_timeout: Option<Duration>,
    /// The queue's type. `None`: the worker's default (see
    /// [`QueueWorker::queue_type`](crate::QueueWorker::queue_type)), which
    /// is [`QueueType::Classic`] unless changed, as Python's library
    /// declares its queues.
    pub queue_type: Option<QueueType>,
}

/// The type of a route's queue.
///
/// [`Classic`](QueueType::Classic) is what Python's `amqp_worker` declares,
/// so Rust and Python workers can share a route. On a RabbitMQ cluster a
/// classic queue lives on one node: while that node is down the queue can't
/// be used (declaring it fails with `404 NOT_FOUND - home node ... is down
/// or inaccessible`, and the worker keeps retrying as its
/// [`RetryPolicy`](crate::RetryPolicy) says). A [`Quorum`](QueueType::Quorum)
/// queue is replicated and keeps working while a minority of nodes is down;
/// it is always durable. Every worker (Rust or Python) of one route must
/// declare the same type, or RabbitMQ refuses the second declaration with
/// `406 PRECONDITION_FAILED`.
///
/// ```
/// use carehare_worker::{ConnectionParameters, QueueType, QueueWorker, RouteOptions};
/// let mut worker = QueueWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
/// worker.queue_type(QueueType::Quorum); // every route of this worker
/// let classic = RouteOptions { queue_type: Some(QueueType::Classic), ..Default::default() };
/// worker.route_with("legacy", classic, |data: String| async move { println!("{data}") });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueType {
    /// A classic queue, on the node it was declared on (no `x-queue-type`
    /// argument is sent).
    #[default]
    Classic,
    /// A replicated quorum queue (`x-queue-type: quorum`), always durable.
    Quorum,
}

impl Default for RouteOptions {
    fn default() -> Self {
        Self {
            prefetch: 32,
            durable: None,
            arguments: FieldTable::default(),
            handler_timeout: None,
            queue_type: None,
        }
    }
}

/// Which pattern a worker follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Queue,
    Rpc,
}

pub(crate) enum RouteHandler {
    Queue(QueueHandler),
    Rpc(RpcHandler),
}

pub(crate) struct Route {
    pub(crate) queue: String,
    pub(crate) options: RouteOptions,
    pub(crate) handler: RouteHandler,
}

/// A worker's configuration, shared by its tasks once it runs.
pub(crate) struct WorkerCore {
    pub(crate) kind: Kind,
    pub(crate) params: ConnectionParameters,
    pub(crate) routes: Vec<Arc<Route>>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_message_size: usize,
    /// The type of routes' queues whose options don't say.
    pub(crate) queue_type: QueueType,
    /// The route whose declaration RabbitMQ refused in the latest `setup`,
    /// and why: what a failed start or a recovery that gave up reports.
    refused: Mutex<Option<(String, Error)>>,
}

impl WorkerCore {
    pub(crate) fn new(kind: Kind, params: ConnectionParameters) -> Self {
        Self {
            kind,
            params,
            routes: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            max_message_size: wire::DEFAULT_MAX_MESSAGE_SIZE,
            queue_type: QueueType::Classic,
            refused: Mutex::new(None),
        }
    }

    /// Notes that RabbitMQ refused `queue`'s declaration (or the RPC
    /// dead-letter exchange's), if `e` is such a refusal.
    fn note_refusal(&self, queue: &str, e: &Error) {
        if matches!(e, Error::ChannelClosedByServer(_) | Error::Usage(_)) {
            *self.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((queue.to_string(), e.clone()));
        }
    }

    /// Why connecting (with `attempts` attempts, the last failing with
    /// `last`) ended for good: a refused route, or the connection.
    fn connect_error(&self, attempts: u32, last: Error) -> WorkerError {
        match self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some((queue, source)) => WorkerError::Route { queue, source },
            None => WorkerError::Connect { attempts, last },
        }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Queue => "QueueWorker",
            Kind::Rpc => "RPCWorker",
        }
    }
}

/// A running worker. [`stop`](Self::stop) it to shut down gracefully.
///
/// Dropping the handle stops the worker too (gracefully, in the
/// background), so keep it for as long as the worker should run.
///
/// ```no_run
/// # async fn f() -> Result<(), carehare_worker::WorkerError> {
/// use carehare_worker::{ConnectionParameters, QueueWorker};
/// let mut worker = QueueWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
/// worker.route("a-queue", |data: String| async move { println!("data received {data}") });
/// let handle = worker.run().await?;
/// tokio::signal::ctrl_c().await.ok();
/// handle.stop().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the handle stops the worker"]
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl WorkerHandle {
    /// Stops gracefully: no new message is taken, the handlers already
    /// running finish (for up to the shutdown timeout) and their messages
    /// are acked (RPC replies sent first); messages prefetched but not yet
    /// started go back to their queues; then the connection closes.
    ///
    /// ```no_run
    /// # async fn f(handle: carehare_worker::WorkerHandle) {
    /// if let Err(e) = handle.stop().await {
    ///     eprintln!("{e}"); // e.g. ShutdownTimedOut: some messages were requeued
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`WorkerError::ShutdownTimedOut`] if handlers had to be cancelled
    /// (their messages were requeued), or the error the worker had already
    /// ended with (e.g. [`WorkerError::Connect`] after losing the broker
    /// for good).
    pub async fn stop(self) -> Result<(), WorkerError> {
        let _ = self.stop.send(true);
        join(self.task).await
    }

    /// Waits until the worker ends on its own, which it only does when it
    /// lost its connection and could not recover it (an error that
    /// retrying can't fix, such as bad credentials), or a route could no
    /// longer be set up (RabbitMQ refused it, or its queue's node stayed
    /// down for the retry policy's attempts).
    ///
    /// ```no_run
    /// # async fn f(handle: carehare_worker::WorkerHandle) {
    /// if let Err(e) = handle.join().await {
    ///     eprintln!("the worker died: {e}");
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// Why the worker ended.
    pub async fn join(self) -> Result<(), WorkerError> {
        let WorkerHandle { stop, task } = self;
        let result = join(task).await;
        drop(stop);
        result
    }

    /// Whether the worker has ended.
    ///
    /// ```no_run
    /// # fn f(handle: carehare_worker::WorkerHandle) {
    /// assert!(!handle.is_finished());
    /// # }
    /// ```
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

async fn join(task: JoinHandle<Result<(), WorkerError>>) -> Result<(), WorkerError> {
    match task.await {
        Ok(result) => result,
        Err(e) => Err(WorkerError::Internal(e.to_string())),
    }
}

/// Connects, sets up every route (in `setup`, which runs again on every
/// reconnect) and starts consuming; then supervises the worker in a task
/// until it is stopped.
pub(crate) async fn run(core: WorkerCore) -> Result<WorkerHandle, WorkerError> {
    check_routes(&core)?;
    let core = Arc::new(core);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut recovery = core.params.retry().recovery_options();
    // A reply the lost connection had not confirmed is not sent again on
    // the next: its caller was often on the node that went away, and
    // RabbitMQ closes a connection that replies to a caller on a node that
    // is down (541 INTERNAL_ERROR), so the reply would close every new
    // connection in turn. The request was not acked either: it is
    // delivered again (if its queue survived) and answered then.
    recovery.republish = Republish::FailInDoubt;
    let rc = core
        .params
        .connect_recovering(recovery, setup(core.clone(), stop_rx.clone()))
        .await
        .map_err(|(attempts, last)| core.connect_error(attempts, last))?;
    let attempts = watch_recovery(&rc, core.name());
    if let Some(Ok(connection)) = rc.connection().now_or_never() {
        tracing::info!(
            routes = core.routes.len(),
            address = %connection.address(),
            worker = core.name(),
            "consuming"
        );
    }
    let task = tokio::spawn(supervise(core, rc, attempts, stop_rx));
    Ok(WorkerHandle {
        stop: stop_tx,
        task,
    })
}

/// Resolves once a stop was asked for, or the handle was dropped.
async fn stop_signalled(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// A connection closed by this side: what ends a `setup` interrupted by a
/// stop (not transient: recovery ends).
fn closed_by_client() -> Error {
    Error::ConnectionClosed(ConnectionError::ClosedByClient)
}

/// The worker's `setup`, run on every (re)connect: declares the RPC
/// dead-letter exchange (RPC workers) and every route's queue.
fn setup(
    core: Arc<WorkerCore>,
    stop: watch::Receiver<bool>,
) -> impl Fn(Connection) -> carehare_tokio::BoxFuture<'static, Result<(), Error>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |connection| {
        let (core, mut stop) = (core.clone(), stop.clone());
        Box::pin(async move {
            if core.kind == Kind::Rpc {
                let options = ExchangeOptions {
                    auto_delete: true,
                    ..Default::default()
                };
                connection
                    .exchange_declare(RPC_DLX, "headers", options)
                    .await
                    .inspect_err(|e| core.note_refusal(RPC_DLX, e))?;
            }
            for route in &core.routes {
                declare_route(&core, &connection, route, &mut stop)
                    .await
                    .inspect_err(|e| core.note_refusal(&route.queue, e))?;
            }
            Ok(())
        })
    }
}

/// Declares a route's queue. A classic queue whose node is down (`404
/// NOT_FOUND`) is tried again, as the retry policy says: it comes back
/// with its node. A stop interrupts the wait.
async fn declare_route(
    core: &WorkerCore,
    connection: &Connection,
    route: &Route,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    let policy = core.params.retry();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let declared = connection
            .queue_declare(&route.queue, queue_options(core, route))
            .await;
        match declared {
            Ok(_) => return Ok(()),
            Err(e) if is_queue_unavailable(&e) && attempts < policy.max_attempts => {
                let delay = policy.jittered_delay_after(attempts);
                tracing::info!(
                    queue = route.queue,
                    attempt = attempts,
                    error = %e,
                    ?delay,
                    "the queue is unavailable (its node is down?); retrying"
                );
                tokio::select! {
                    biased;
                    () = stop_signalled(stop) => return Err(closed_by_client()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// How a route's queue is declared.
fn queue_options(core: &WorkerCore, route: &Route) -> QueueOptions {
    let mut arguments = route.options.arguments.clone();
    if core.kind == Kind::Rpc && !arguments.contains_key("x-dead-letter-exchange") {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(RPC_DLX.into()),
        );
    }
    let durable = match route.options.queue_type.unwrap_or(core.queue_type) {
        QueueType::Classic => route.options.durable.unwrap_or(core.kind == Kind::Queue),
        QueueType::Quorum => {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            true
        }
    };
    QueueOptions {
        durable,
        arguments,
        ..Default::default()
    }
}

/// Checks what RabbitMQ would refuse for certain before connecting.
fn check_routes(core: &WorkerCore) -> Result<(), WorkerError> {
    let mut seen = HashSet::new();
    for route in &core.routes {
        if !seen.insert(route.queue.as_str()) {
            return Err(WorkerError::DuplicateRoute(route.queue.clone()));
        }
        let quorum = route.options.queue_type.unwrap_or(core.queue_type) == QueueType::Quorum;
        if quorum && route.options.durable == Some(false) {
            return Err(WorkerError::InvalidRoute {
                queue: route.queue.clone(),
                reason: "a quorum queue is always durable".into(),
            });
        }
    }
    Ok(())
}

/// Runs the routes until stopped, or until one ends for good (recovery
/// gave up, or RabbitMQ refused a route): then stops the others
/// gracefully, closes the connection, and ends with why.
async fn supervise(
    core: Arc<WorkerCore>,
    rc: RecoveringConnection<()>,
    attempts: Arc<AtomicU32>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    // Replies: at most one per running handler.
    let window = core
        .routes
        .iter()
        .map(|r| usize::from(r.options.prefetch))
        .sum();
    let publisher = rc.publisher(window);
    let (stop_routes, routes_stopped) = watch::channel(false);
    let mut routes = JoinSet::new();
    for route in &core.routes {
        routes.spawn(route_loop(
            core.clone(),
            route.clone(),
            rc.clone(),
            publisher.clone(),
            routes_stopped.clone(),
        ));
    }
    let first_end = tokio::select! {
        biased;
        () = stop_signalled(&mut stop) => None,
        Some(ended) = routes.join_next() => Some(ended),
    };
    let _ = stop_routes.send(true);
    let mut abandoned = 0;
    let mut failure = None;
    let mut note = |ended: Result<RouteReport, JoinError>| match ended {
        Ok(report) => {
            abandoned += report.abandoned;
            if failure.is_none() {
                failure = report.end.map(|end| match end {
                    RouteEnd::Refused(source) => WorkerError::Route {
                        queue: report.queue,
                        source,
                    },
                    RouteEnd::Ended(last) => {
                        core.connect_error(attempts.load(Ordering::Relaxed), last)
                    }
                });
            }
        }
        Err(e) => {
            failure.get_or_insert(WorkerError::Internal(format!("a route task failed: {e}")));
        }
    };
    if let Some(ended) = first_end {
        note(ended);
    }
    let limit = core.shutdown_timeout + ABORT_WAIT + CLOSE_TIMEOUT + Duration::from_secs(1);
    let joined = tokio::time::timeout(limit, async {
        while let Some(ended) = routes.join_next().await {
            note(ended);
        }
    })
    .await;
    if joined.is_err() {
        abandoned += routes.len();
        routes.abort_all();
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, rc.close()).await;
    match failure {
        Some(e) => {
            tracing::error!(worker = core.name(), error = %e, "giving up");
            Err(e)
        }
        None if abandoned > 0 => Err(WorkerError::ShutdownTimedOut { abandoned }),
        None => {
            tracing::info!(worker = core.name(), "stopped");
            Ok(())
        }
    }
}

/// How a route loop ended.
struct RouteReport {
    queue: String,
    /// Why it ended, if it was not asked to stop.
    end: Option<RouteEnd>,
    /// Handlers cancelled at the shutdown timeout.
    abandoned: usize,
}

/// Why a route loop ended by itself.
enum RouteEnd {
    /// RabbitMQ refused the route's consumer or queue.
    Refused(Error),
    /// The recovering connection ended (recovery gave up): why.
    Ended(Error),
}

/// The error the recovering connection ended with (recovery gave up, or
/// it was closed), if it has ended.
fn ended(rc: &RecoveringConnection<()>) -> Option<Error> {
    match rc.connection().now_or_never() {
        Some(Err(Error::RecoveryTimeout(_))) | Some(Ok(_)) | None => None,
        Some(Err(cause)) => Some(cause),
    }
}

/// Takes messages from one route's consumer (which re-subscribes after
/// every reconnect) and handles each in its own task; the prefetch bounds
/// how many run at once, across reconnects too.
async fn route_loop(
    core: Arc<WorkerCore>,
    route: Arc<Route>,
    rc: RecoveringConnection<()>,
    publisher: RecoveringPublisher<()>,
    mut stop: watch::Receiver<bool>,
) -> RouteReport {
    let options = ConsumerOptions {
        prefetch_count: route.options.prefetch,
        ..Default::default()
    };
    let subscribe = || {
        let queue = route.queue.clone();
        Arc::new(rc.consumer(move |_: &()| queue.clone(), options.clone()))
    };
    // Handlers still running when the connection was lost finish while
    // the new subscription delivers: the permits keep them within the
    // prefetch together.
    let permits = Arc::new(Semaphore::new(usize::from(route.options.prefetch.max(1))));
    let mut consumer = subscribe();
    let mut tasks = JoinSet::new();
    let mut attempt = 0;
    let end = loop {
        let next = async {
            let permit = permits.clone().acquire_owned().await.ok();
            (permit, consumer.next().await)
        };
        let (permit, next) = tokio::select! {
            biased;
            () = stop_signalled(&mut stop) => break None,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                log_join(&route.queue, joined);
                continue;
            }
            next = next => next,
        };
        match next {
            Ok(message) => {
                attempt = 0;
                tasks.spawn(process(
                    core.clone(),
                    route.clone(),
                    consumer.clone(),
                    publisher.clone(),
                    message,
                    permit,
                ));
            }
            // An outage timeout ran out: keep waiting.
            Err(Error::RecoveryTimeout(_)) => {}
            Err(e) => {
                if let Some(cause) = ended(&rc) {
                    break Some(RouteEnd::Ended(cause));
                }
                // Its queue was deleted (its node went down), or is on a
                // node that is down: declare it again (here, or on its
                // node when it is back), then consume anew.
                let gone =
                    matches!(e, Error::ConsumerCancelledByServer) || is_queue_unavailable(&e);
                if !gone {
                    break Some(RouteEnd::Refused(e));
                }
                tracing::warn!(queue = route.queue, error = %e, "the consumer ended; declaring the queue again");
                attempt += 1;
                let delay = core.params.retry().jittered_delay_after(attempt);
                tokio::select! {
                    biased;
                    () = stop_signalled(&mut stop) => break None,
                    () = tokio::time::sleep(delay) => {}
                }
                match rc.connection().await {
                    Ok(connection) => {
                        match declare_route(&core, &connection, &route, &mut stop).await {
                            // Lost meanwhile: recovery declares it.
                            Ok(()) | Err(Error::ConnectionClosed(_)) => {}
                            Err(e) => break Some(RouteEnd::Refused(e)),
                        }
                    }
                    Err(Error::RecoveryTimeout(_)) => {}
                    Err(cause) => break Some(RouteEnd::Ended(cause)),
                }
                consumer = subscribe();
            }
        }
    };
    let abandoned = drain(&route.queue, &mut tasks, core.shutdown_timeout).await;
    // Unsettled messages (prefetched, or cancelled) go back to the queue.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, consumer.close()).await;
    RouteReport {
        queue: route.queue.clone(),
        end,
        abandoned,
    }
}

fn log_join(queue: &str, joined: Result<(), JoinError>) {
    if let Err(e) = joined
        && !e.is_cancelled()
    {
        tracing::error!(queue, error = %e, "a message task failed");
    }
}

/// Waits up to `grace` for the running handlers, then cancels the rest and
/// returns how many it cancelled.
async fn drain(queue: &str, tasks: &mut JoinSet<()>, grace: Duration) -> usize {
    let finished = tokio::time::timeout(grace, async {
        while let Some(joined) = tasks.join_next().await {
            log_join(queue, joined);
        }
    })
    .await;
    if finished.is_ok() {
        return 0;
    }
    let abandoned = tasks.len();
    tracing::warn!(
        queue,
        abandoned,
        ?grace,
        "cancelling the handlers still running after the grace period"
    );
    tasks.abort_all();
    let _ = tokio::time::timeout(ABORT_WAIT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    abandoned
}

/// Runs a handler's future, turning a panic or a timeout into a failure.
async fn guarded<T>(
    future: BoxFuture<Result<T, Failure>>,
    limit: Option<Duration>,
) -> Result<T, Failure> {
    let caught = AssertUnwindSafe(future).catch_unwind();
    let result = match limit {
        None => caught.await,
        Some(limit) => match tokio::time::timeout(limit, caught).await {
            Ok(result) => result,
            Err(_) => {
                return Err(Failure::Handler(RpcError::new(
                    "TimeoutError",
                    format!("the handler did not finish within {limit:?}"),
                )));
            }
        },
    };
    result.unwrap_or_else(|panic| Err(Failure::Handler(RpcError::panic(&*panic))))
}

/// Handles one message and settles it (a message of a connection lost
/// since can't be: RabbitMQ delivers it again). The permit is the
/// handler's slot in the route's prefetch.
async fn process(
    core: Arc<WorkerCore>,
    route: Arc<Route>,
    consumer: Arc<RecoveringConsumer<()>>,
    publisher: RecoveringPublisher<()>,
    message: RecoveredMessage,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let queue = route.queue.as_str();
    let tag = message.tag;
    let json = wire::gunzip(&message.body, core.max_message_size);
    let limit = route.options.handler_timeout;
    match &route.handler {
        RouteHandler::Queue(handler) => {
            let outcome = match json {
                Ok(json) => guarded(handler(json), limit).await,
                Err(e) => Err(Failure::Malformed(e)),
            };
            match outcome {
                Ok(()) => settled(queue, consumer.ack(tag)),
                Err(Failure::Malformed(e)) => {
                    tracing::warn!(queue, error = %e, "rejecting a malformed message (not requeued)");
                    settled(queue, consumer.nack(tag, false));
                }
                Err(Failure::Handler(e)) => {
                    tracing::error!(queue, error = %e, "the handler failed; rejecting the message (not requeued)");
                    settled(queue, consumer.nack(tag, false));
                }
            }
        }
        RouteHandler::Rpc(handler) => {
            let outcome = match json {
                Ok(json) => guarded(handler(json), limit).await,
                Err(e) => Err(Failure::Malformed(e)),
            };
            let (body, kind, malformed) = match outcome {
                Ok(data) => match wire::encode_reply(&data) {
                    Ok(body) => (body, "result", false),
                    Err(e) => {
                        let e = RpcError::new("TypeError", e.to_string());
                        (wire::encode_error_reply(&e), "result", false)
                    }
                },
                Err(Failure::Handler(e)) => {
                    tracing::warn!(queue, error = %e, "the handler failed; sending an error reply");
                    (wire::encode_error_reply(&e), "result", false)
                }
                Err(Failure::Malformed(e)) => {
                    tracing::warn!(queue, error = %e, "rejecting a malformed request (not requeued) with an error reply");
                    let error = RpcError::new(e.python_type(), e.to_string());
                    (wire::encode_error_reply(&error), "error", true)
                }
            };
            match message
                .properties
                .reply_to
                .as_ref()
                .filter(|r| !r.is_empty())
            {
                Some(reply_to) => {
                    let properties = BasicProperties {
                        content_type: Some(ShortStr::from_static(wire::CONTENT_TYPE)),
                        correlation_id: message.properties.correlation_id.clone(),
                        delivery_mode: message.properties.delivery_mode,
                        kind: Some(ShortStr::from_static(kind)),
                        timestamp: SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs()),
                        ..Default::default()
                    };
                    // On the live connection (not sent again if it is
                    // lost before RabbitMQ confirms: see `run`).
                    let confirm = async {
                        publisher
                            .publish_with(body, "", reply_to, &properties)
                            .await?
                            .await
                    };
                    let sent = match tokio::time::timeout(REPLY_CONFIRM_TIMEOUT, confirm).await {
                        Ok(sent) => sent.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("not confirmed within {REPLY_CONFIRM_TIMEOUT:?}")),
                    };
                    if let Err(e) = sent {
                        tracing::error!(queue, reply_to = %reply_to, error = %e, "could not send the reply; rejecting the request");
                        settled(queue, consumer.nack(tag, false));
                        return;
                    }
                }
                None => {
                    tracing::info!(queue, "a request without reply_to: its reply is dropped");
                }
            }
            if malformed {
                settled(queue, consumer.nack(tag, false));
            } else {
                settled(queue, consumer.ack(tag));
            }
        }
    }
}

/// Notes a message that could not be settled: it came on a connection
/// lost since, and RabbitMQ delivers it again.
fn settled(queue: &str, done: bool) {
    if !done {
        tracing::debug!(
            queue,
            "the message's connection was lost: it will be delivered again"
        );
    }
}
