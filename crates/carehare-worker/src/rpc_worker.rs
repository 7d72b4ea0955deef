//! `RpcWorker`: the RPC pattern.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::connection::ConnectionParameters;
use crate::error::WorkerError;
use crate::handler::{RpcOutcome, erase_rpc};
use crate::worker::{
    Kind, QueueType, Route, RouteHandler, RouteOptions, WorkerCore, WorkerHandle, run,
};

/// A worker for [remote procedure calls](https://www.rabbitmq.com/tutorials/tutorial-six-python.html):
/// each route is a queue whose requests are handed to an async handler;
/// what it returns is sent back to the request's `reply_to`, with the
/// request's `correlation_id`, as `{"success": true, "data": ...}`, or as
/// `{"success": false, "error": {...}}` when the handler fails (see
/// [`RpcOutcome`]). The request is acked once the reply is confirmed.
///
/// Queues are declared as aio-pika's RPC pattern (which Python's
/// `RPCWorker` uses) declares them: not durable, with
/// `x-dead-letter-exchange: rpc.dlx`, and the `rpc.dlx` headers exchange
/// is declared too. A panicking or timed-out handler gets an error reply
/// (`type` `Panic` or `TimeoutError`); a malformed request gets an error
/// reply too, and is rejected without requeue (dead-lettered to `rpc.dlx`).
///
/// ```no_run
/// # async fn f() -> Result<(), carehare_worker::WorkerError> {
/// use carehare_worker::{ConnectionParameters, RpcError, RpcWorker};
///
/// let mut worker = RpcWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
/// worker.route("a-route", |data: String| async move { format!("data received {data}") });
/// worker.route("divide", |(a, b): (i64, i64)| async move {
///     a.checked_div(b).ok_or_else(|| RpcError::new("ZeroDivisionError", "division by zero"))
/// });
/// let handle = worker.run().await?;
/// tokio::signal::ctrl_c().await.ok();
/// handle.stop().await
/// # }
/// ```
pub struct RpcWorker {
    core: WorkerCore,
}

impl std::fmt::Debug for RpcWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<&str> = self.core.routes.iter().map(|r| r.queue.as_str()).collect();
        f.debug_struct("RpcWorker")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

impl RpcWorker {
    /// A worker with no routes yet, that will connect with `params`.
    ///
    /// ```
    /// use carehare_worker::{ConnectionParameters, RpcWorker};
    /// let worker = RpcWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// # drop(worker);
    /// ```
    pub fn new(params: ConnectionParameters) -> Self {
        Self {
            core: WorkerCore::new(Kind::Rpc, params),
        }
    }

    /// Answers the requests sent to `queue` with `handler`, with the
    /// default [`RouteOptions`] (a non-durable queue dead-lettering to
    /// `rpc.dlx`, 32 requests at once).
    ///
    /// ```
    /// # let mut worker = carehare_worker::RpcWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// worker
    ///     .route("echo", |data: String| async move { data })
    ///     .route("parse", |text: String| async move { text.parse::<u64>() });
    /// ```
    pub fn route<T, F, Fut>(&mut self, queue: &str, handler: F) -> &mut Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: RpcOutcome,
    {
        self.route_with(queue, RouteOptions::default(), handler)
    }

    /// [`route`](Self::route) with explicit options.
    ///
    /// ```
    /// use carehare_worker::RouteOptions;
    /// # let mut worker = carehare_worker::RpcWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// let options = RouteOptions { prefetch: 1, durable: Some(true), ..Default::default() };
    /// worker.route_with("one-at-a-time", options, |data: serde_json::Value| async move { data });
    /// ```
    pub fn route_with<T, F, Fut>(
        &mut self,
        queue: &str,
        options: RouteOptions,
        handler: F,
    ) -> &mut Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: RpcOutcome,
    {
        self.core.routes.push(Arc::new(Route {
            queue: queue.to_string(),
            options,
            handler: RouteHandler::Rpc(erase_rpc(handler)),
        }));
        self
    }

    /// How long [`WorkerHandle::stop`] lets running handlers finish before
    /// cancelling them (their messages are then requeued). Default 30 s.
    ///
    /// ```
    /// # let mut worker = carehare_worker::RpcWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// worker.shutdown_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn shutdown_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.core.shutdown_timeout = timeout;
        self
    }

    /// The type of the queues of routes whose [`RouteOptions::queue_type`]
    /// is `None`. Default [`QueueType::Classic`], as Python's library
    /// declares them; choose [`QueueType::Quorum`] on a cluster so routes
    /// keep working while a node is down (every worker of a route must
    /// agree on its type).
    ///
    /// ```
    /// use carehare_worker::{ConnectionParameters, QueueType, RpcWorker};
    /// let mut worker = RpcWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// worker.queue_type(QueueType::Quorum);
    /// ```
    pub fn queue_type(&mut self, queue_type: QueueType) -> &mut Self {
        self.core.queue_type = queue_type;
        self
    }

    /// The largest decompressed body accepted; a bigger message is
    /// rejected as malformed. Default [`DEFAULT_MAX_MESSAGE_SIZE`](crate::wire::DEFAULT_MAX_MESSAGE_SIZE).
    ///
    /// ```
    /// # let mut worker = carehare_worker::RpcWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// worker.max_message_size(1024 * 1024);
    /// ```
    pub fn max_message_size(&mut self, bytes: usize) -> &mut Self {
        self.core.max_message_size = bytes;
        self
    }

    /// Connects (retrying as the [`RetryPolicy`](crate::RetryPolicy) says),
    /// declares every route's queue, starts consuming, and returns the
    /// handle that stops the worker. If the connection is lost later, the
    /// worker reconnects on its own (with the policy's backoff, for as long
    /// as the errors may pass) and declares every route's queue again.
    ///
    /// ```no_run
    /// # async fn f(worker: carehare_worker::RpcWorker) -> Result<(), carehare_worker::WorkerError> {
    /// let handle = worker.run().await?;
    /// handle.stop().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`WorkerError::Connect`] when connecting failed for good,
    /// [`WorkerError::Route`] when RabbitMQ refused a route's queue,
    /// [`WorkerError::DuplicateRoute`].
    pub async fn run(self) -> Result<WorkerHandle, WorkerError> {
        run(self.core).await
    }
}

/// The Python library's name for [`RpcWorker`].
///
/// ```
/// use carehare_worker::{ConnectionParameters, RPCWorker};
/// let worker = RPCWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
/// # drop(worker);
/// ```
pub type RPCWorker = RpcWorker;
