//! `QueueWorker`: the work-queue pattern.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::connection::ConnectionParameters;
use crate::error::WorkerError;
use crate::handler::{QueueOutcome, erase_queue};
use crate::worker::{
    Kind, QueueType, Route, RouteHandler, RouteOptions, WorkerCore, WorkerHandle, run,
};

/// A worker for [work queues](https://www.rabbitmq.com/tutorials/tutorial-two-python.html):
/// each route is a durable queue whose messages are handed to an async
/// handler, one message per call, and acked once it returns.
///
/// The handler takes the request's `data`, deserialized into any
/// [`DeserializeOwned`] type, and returns `()` or a `Result` (see
/// [`QueueOutcome`]). A handler that fails, panics or times out, and a
/// malformed message, are logged and the message is rejected without
/// requeue: it is dropped, or dead-lettered if the queue has a
/// dead-letter exchange (see [`RouteOptions::arguments`]).
///
/// ```no_run
/// # async fn f() -> Result<(), carehare_worker::WorkerError> {
/// use std::collections::HashMap;
/// use carehare_worker::{ConnectionParameters, QueueWorker};
///
/// let mut worker = QueueWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
/// worker.route("a-queue", |data: String| async move { println!("data received {data}") });
/// worker.route("another-route", |data: HashMap<String, serde_json::Value>| async move {
///     println!("got data on another-route:\n{data:?}");
/// });
/// let handle = worker.run().await?;
/// tokio::signal::ctrl_c().await.ok();
/// handle.stop().await
/// # }
/// ```
pub struct QueueWorker {
    core: WorkerCore,
}

impl std::fmt::Debug for QueueWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<&str> = self.core.routes.iter().map(|r| r.queue.as_str()).collect();
        f.debug_struct("QueueWorker")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

impl QueueWorker {
    /// A worker with no routes yet, that will connect with `params`.
    ///
    /// ```
    /// use carehare_worker::{ConnectionParameters, QueueWorker};
    /// let worker = QueueWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// # drop(worker);
    /// ```
    pub fn new(params: ConnectionParameters) -> Self {
        Self {
            core: WorkerCore::new(Kind::Queue, params),
        }
    }

    /// Handles the messages of `queue` with `handler`, with the default
    /// [`RouteOptions`] (a durable queue, 32 messages at once).
    ///
    /// ```
    /// # let mut worker = carehare_worker::QueueWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// worker
    ///     .route("emails", |to: String| async move { println!("sending to {to}") })
    ///     .route("totals", |n: u64| async move { if n > 10 { Err("too big") } else { Ok(()) } });
    /// ```
    pub fn route<T, F, Fut>(&mut self, queue: &str, handler: F) -> &mut Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: QueueOutcome,
    {
        self.route_with(queue, RouteOptions::default(), handler)
    }

    /// [`route`](Self::route) with explicit options.
    ///
    /// ```
    /// use carehare_worker::RouteOptions;
    /// # let mut worker = carehare_worker::QueueWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
    /// let options = RouteOptions { prefetch: 1, ..Default::default() };
    /// worker.route_with("one-at-a-time", options, |data: serde_json::Value| async move { println!("{data}") });
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
        Fut::Output: QueueOutcome,
    {
        self.core.routes.push(Arc::new(Route {
            queue: queue.to_string(),
            options,
            handler: RouteHandler::Queue(erase_queue(handler)),
        }));
        self
    }

    /// How long [`WorkerHandle::stop`] lets running handlers finish before
    /// cancelling them (their messages are then requeued). Default 30 s.
    ///
    /// ```
    /// # let mut worker = carehare_worker::QueueWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
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
    /// use carehare_worker::{ConnectionParameters, QueueType, QueueWorker};
    /// let mut worker = QueueWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
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
    /// # let mut worker = carehare_worker::QueueWorker::new(carehare_worker::ConnectionParameters::new("localhost", 5672, "guest", "guest"));
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
    /// # async fn f(worker: carehare_worker::QueueWorker) -> Result<(), carehare_worker::WorkerError> {
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
