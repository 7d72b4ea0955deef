//! The machinery both workers share: sessions (a connection with its
//! routes), route loops, message processing, graceful stop and reconnects.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carehare_tokio::carehare_core::types::ShortStr;
use carehare_tokio::{
    AMQPValue, AckingConsumer, BasicProperties, Connection, ConsumerOptions, Error,
    ExchangeOptions, FieldTable, Message, QueueOptions,
};
use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::connection::{ConnectionParameters, is_queue_unavailable, is_retryable};
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
/// A session lost sooner than this after it started makes the next
/// reconnect wait (backing off as the retry policy says).
const QUICK_LOSS: Duration = Duration::from_secs(5);

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
    /// lost its connection and could not reconnect (the retry policy ran
    /// out), or a route could no longer be set up.
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

/// Connects, sets up every route and starts consuming; then supervises the
/// worker in a task until it is stopped.
pub(crate) async fn run(core: WorkerCore) -> Result<WorkerHandle, WorkerError> {
    check_routes(&core)?;
    let core = Arc::new(core);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let session = match start_with_retry(&core, &mut stop_rx).await {
        Ok(session) => session,
        Err(Start::Failed(e)) => return Err(e),
        // Nobody can have sent a stop yet: the sender is ours.
        Err(Start::Stopped) => return Err(WorkerError::Internal("stopped while starting".into())),
    };
    tracing::info!(
        "{} consuming {} route(s) on {}",
        core.name(),
        core.routes.len(),
        session.connection.address()
    );
    let task = tokio::spawn(supervise(core, session, stop_rx));
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

enum Start {
    Stopped,
    Failed(WorkerError),
}

/// Why a session could not start.
enum SetupError {
    /// Connecting failed, or the connection died during setup.
    Connect(Error),
    /// RabbitMQ refused a declaration or a consumer: permanent.
    Route { queue: String, source: Error },
}

fn setup_error(queue: &str, e: Error) -> SetupError {
    match e {
        // A classic queue whose node is down or stopping: retrying helps
        // once it is back (or, for a transient queue, once it is deleted).
        e if is_queue_unavailable(&e) => SetupError::Connect(e),
        Error::ChannelClosedByServer(_) | Error::Usage(_) => SetupError::Route {
            queue: queue.to_string(),
            source: e,
        },
        other => SetupError::Connect(other),
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

/// Starts a session, retrying connection failures as the retry policy
/// says. A stop interrupts it.
async fn start_with_retry(
    core: &Arc<WorkerCore>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Session, Start> {
    let retry = core.params.retry();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = tokio::select! {
            biased;
            () = stop_signalled(stop) => return Err(Start::Stopped),
            result = Session::start(core.clone()) => result,
        };
        let e = match result {
            Ok(session) => return Ok(session),
            Err(SetupError::Route { queue, source }) => {
                return Err(Start::Failed(WorkerError::Route { queue, source }));
            }
            Err(SetupError::Connect(e)) => e,
        };
        if attempt >= retry.max_attempts || !is_retryable(&e) {
            return Err(Start::Failed(WorkerError::Connect {
                attempts: attempt,
                last: e,
            }));
        }
        let delay = retry.delay_after(attempt);
        tracing::info!(
            "{}: connecting failed (attempt {attempt}): {e}; retrying in {delay:?}",
            core.name()
        );
        tokio::select! {
            biased;
            () = stop_signalled(stop) => return Err(Start::Stopped),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Runs until stopped, reconnecting (and setting every route up again)
/// when the connection is lost.
async fn supervise(
    core: Arc<WorkerCore>,
    mut session: Session,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    // Sessions lost soon after they started, in a row: reconnecting backs
    // off on those, so a route that keeps failing can't spin.
    let mut quick_losses = 0;
    loop {
        let started = Instant::now();
        let lost = tokio::select! {
            biased;
            () = stop_signalled(&mut stop) => None,
            Some(ended) = session.routes.join_next(), if !session.routes.is_empty() => {
                Some(match ended {
                    Ok(report) => match report.lost {
                        Some(e) => format!("the consumer of {:?} ended: {e}", report.queue),
                        None => format!("the consumer of {:?} ended", report.queue),
                    },
                    Err(e) => format!("a route task failed: {e}"),
                })
            }
            why = session.connection.closed() => Some(format!("the connection closed: {why}")),
        };
        let abandoned = session.shutdown(&core).await;
        let Some(why) = lost else {
            tracing::info!("{} stopped", core.name());
            return if abandoned == 0 {
                Ok(())
            } else {
                Err(WorkerError::ShutdownTimedOut { abandoned })
            };
        };
        tracing::warn!("{}: {why}; reconnecting", core.name());
        if started.elapsed() < QUICK_LOSS {
            quick_losses += 1;
            let delay = core.params.retry().delay_after(quick_losses);
            tokio::select! {
                biased;
                () = stop_signalled(&mut stop) => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        } else {
            quick_losses = 0;
        }
        session = match start_with_retry(&core, &mut stop).await {
            Ok(session) => session,
            Err(Start::Stopped) => return Ok(()),
            Err(Start::Failed(e)) => {
                tracing::error!("{}: giving up: {e}", core.name());
                return Err(e);
            }
        };
        tracing::info!(
            "{} reconnected, to {}",
            core.name(),
            session.connection.address()
        );
    }
}

/// One connection with a consumer per route.
struct Session {
    connection: Connection,
    routes: JoinSet<RouteReport>,
    stop: watch::Sender<bool>,
}

/// How a route loop ended.
struct RouteReport {
    queue: String,
    /// Why the consumer ended, if it was not asked to stop.
    lost: Option<Error>,
    /// Handlers cancelled at the shutdown timeout.
    abandoned: usize,
}

impl Session {
    async fn start(core: Arc<WorkerCore>) -> Result<Session, SetupError> {
        let connection = carehare_tokio::connect_with(core.params.options().clone())
            .await
            .map_err(SetupError::Connect)?;
        if core.kind == Kind::Rpc {
            let options = ExchangeOptions {
                auto_delete: true,
                ..Default::default()
            };
            connection
                .exchange_declare(RPC_DLX, "headers", options)
                .await
                .map_err(|e| setup_error(RPC_DLX, e))?;
        }
        let mut consumers = Vec::with_capacity(core.routes.len());
        for route in &core.routes {
            connection
                .queue_declare(&route.queue, queue_options(&core, route))
                .await
                .map_err(|e| setup_error(&route.queue, e))?;
            let options = ConsumerOptions {
                prefetch_count: route.options.prefetch,
                ..Default::default()
            };
            let consumer = connection
                .consumer(&route.queue, options)
                .await
                .map_err(|e| setup_error(&route.queue, e))?;
            consumers.push(Arc::new(consumer));
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut routes = JoinSet::new();
        for (route, consumer) in core.routes.iter().zip(consumers) {
            routes.spawn(route_loop(
                core.clone(),
                route.clone(),
                consumer,
                connection.clone(),
                stop_rx.clone(),
            ));
        }
        Ok(Session {
            connection,
            routes,
            stop,
        })
    }

    /// Stops every route (each lets its handlers finish, then closes its
    /// consumer), then closes the connection. Returns how many handlers had
    /// to be cancelled.
    async fn shutdown(mut self, core: &WorkerCore) -> usize {
        let _ = self.stop.send(true);
        let mut abandoned = 0;
        let limit = core.shutdown_timeout + ABORT_WAIT + CLOSE_TIMEOUT + Duration::from_secs(1);
        let routes = &mut self.routes;
        let joined = tokio::time::timeout(limit, async {
            while let Some(ended) = routes.join_next().await {
                if let Ok(report) = ended {
                    abandoned += report.abandoned;
                }
            }
        })
        .await;
        if joined.is_err() {
            abandoned += self.routes.len();
            self.routes.abort_all();
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close()).await;
        abandoned
    }
}

/// Takes messages from one route's consumer and handles each in its own
/// task; the prefetch bounds how many run at once.
async fn route_loop(
    core: Arc<WorkerCore>,
    route: Arc<Route>,
    consumer: Arc<AckingConsumer>,
    connection: Connection,
    mut stop: watch::Receiver<bool>,
) -> RouteReport {
    let mut tasks = JoinSet::new();
    let lost = loop {
        tokio::select! {
            biased;
            () = stop_signalled(&mut stop) => break None,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => log_join(&route.queue, joined),
            next = consumer.next() => match next {
                Ok(message) => {
                    tasks.spawn(process(
                        core.clone(),
                        route.clone(),
                        consumer.clone(),
                        connection.clone(),
                        message,
                    ));
                }
                Err(e) => break Some(e),
            },
        }
    };
    let abandoned = drain(&route.queue, &mut tasks, core.shutdown_timeout).await;
    // Unsettled messages (prefetched, or cancelled) go back to the queue.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, consumer.close()).await;
    RouteReport {
        queue: route.queue.clone(),
        lost,
        abandoned,
    }
}

fn log_join(queue: &str, joined: Result<(), JoinError>) {
    if let Err(e) = joined
        && !e.is_cancelled()
    {
        tracing::error!("{queue}: a message task failed: {e}");
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
    tracing::warn!("{queue}: cancelling {abandoned} handler(s) still running after {grace:?}");
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

/// Handles one message and settles it.
async fn process(
    core: Arc<WorkerCore>,
    route: Arc<Route>,
    consumer: Arc<AckingConsumer>,
    connection: Connection,
    message: Message,
) {
    let queue = route.queue.as_str();
    let tag = message.delivery_tag;
    let json = wire::gunzip(&message.body, core.max_message_size);
    let limit = route.options.handler_timeout;
    match &route.handler {
        RouteHandler::Queue(handler) => {
            let outcome = match json {
                Ok(json) => guarded(handler(json), limit).await,
                Err(e) => Err(Failure::Malformed(e)),
            };
            match outcome {
                Ok(()) => consumer.ack(tag),
                Err(Failure::Malformed(e)) => {
                    tracing::warn!("{queue}: rejecting a malformed message (not requeued): {e}");
                    consumer.reject(tag, false);
                }
                Err(Failure::Handler(e)) => {
                    tracing::error!(
                        "{queue}: the handler failed: {e}; rejecting the message (not requeued)"
                    );
                    consumer.reject(tag, false);
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
                    tracing::warn!("{queue}: the handler failed: {e}; sending an error reply");
                    (wire::encode_error_reply(&e), "result", false)
                }
                Err(Failure::Malformed(e)) => {
                    tracing::warn!(
                        "{queue}: rejecting a malformed request (not requeued) with an error reply: {e}"
                    );
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
                    let confirm = connection.publish_with(body, "", reply_to, &properties);
                    let sent = match tokio::time::timeout(REPLY_CONFIRM_TIMEOUT, confirm).await {
                        Ok(sent) => sent.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("not confirmed within {REPLY_CONFIRM_TIMEOUT:?}")),
                    };
                    if let Err(e) = sent {
                        tracing::error!(
                            "{queue}: could not send the reply to {reply_to}: {e}; rejecting the request"
                        );
                        consumer.reject(tag, false);
                        return;
                    }
                }
                None => {
                    tracing::info!("{queue}: a request without reply_to: its reply is dropped");
                }
            }
            if malformed {
                consumer.reject(tag, false);
            } else {
                consumer.ack(tag);
            }
        }
    }
}
