//! # carehare-worker
//!
//! Flask-like AMQP workers on [carehare](carehare_tokio) and tokio, a port
//! of Python's [`amqp_worker`](https://github.com/cheese-drawer/lib-python-amqp-worker)
//! that speaks its wire format, so Rust and Python services can call each
//! other:
//!
//! - [`QueueWorker`]: routes are [work queues](https://www.rabbitmq.com/tutorials/tutorial-two-python.html);
//!   a handler takes a message's data and returns nothing (or an error);
//! - [`RpcWorker`]: routes answer [remote procedure calls](https://www.rabbitmq.com/tutorials/tutorial-six-python.html);
//!   what the handler returns (or its error) is sent back;
//! - [`Client`]: calls RPC routes (direct reply-to, many calls in flight)
//!   and sends messages to queue routes.
//!
//! ```no_run
//! use carehare_worker::{ConnectionParameters, QueueWorker, RpcWorker};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), carehare_worker::WorkerError> {
//!     let params = ConnectionParameters::new("localhost", 5672, "guest", "guest");
//!
//!     let mut queue_worker = QueueWorker::new(params.clone());
//!     queue_worker.route("a-queue", |data: String| async move { println!("data received {data}") });
//!     let queues = queue_worker.run().await?;
//!
//!     let mut rpc_worker = RpcWorker::new(params);
//!     rpc_worker.route("a-route", |data: String| async move { format!("data received {data}") });
//!     let rpc = rpc_worker.run().await?;
//!
//!     tokio::signal::ctrl_c().await.ok();
//!     queues.stop().await?;
//!     rpc.stop().await
//! }
//! ```
//!
//! ## Wire format
//!
//! Every body is UTF-8 JSON, gzip-compressed (see [`wire`]). A request is
//! `{"data": ...}` (an object with that one key: Python calls
//! `handler(**body)`). An RPC reply goes to the request's `reply_to` with
//! its `correlation_id`, and is `{"success": true, "data": ...}` or
//! `{"success": false, "error": {"type": ..., "message": ..., "args": [...],
//! "trace": ...}}`.
//!
//! ## Errors never kill a worker
//!
//! - A queue handler's error, panic or timeout is logged and its message
//!   is **rejected without requeue**. Requeueing would hand a message that
//!   fails every time straight back, in a tight loop; Python's library acks
//!   it (logging the error), which drops it just the same. Rejecting lets
//!   you keep failed messages: give the queue a dead-letter exchange
//!   ([`RouteOptions::arguments`] or a policy) and they are dead-lettered
//!   there instead of dropped.
//! - An RPC handler's error, panic (caught) or timeout becomes an error
//!   reply; the request is acked.
//! - A caught panic still goes through Rust's panic hook first, which by
//!   default prints the panic's message to stderr (with a backtrace when
//!   `RUST_BACKTRACE` is set), before the worker logs it as a failure. A
//!   library must not replace the process-wide hook, so the application
//!   decides: `std::panic::set_hook` in `main` sends panics to its own
//!   logs, e.g. `std::panic::set_hook(Box::new(|info| tracing::error!(%info, "panic")))`.
//! - A malformed body (not gzip, not UTF-8, not JSON, not `{"data": ...}`
//!   or not the handler's type, bigger than the size limit) is rejected
//!   without requeue, so it never loops. An RPC worker also sends an error
//!   reply (so the caller does not wait for its timeout), typed as Python
//!   would (`BadGzipFile`, `JSONDecodeError`, `TypeError`...).
//!
//! ## Delivery
//!
//! A message is acked after its handler returns (for RPC, after the reply
//! is confirmed), so delivery is at least once: if the worker dies or its
//! connection drops mid-handler, the message is delivered again. Each
//! route's prefetch bounds its concurrency. [`WorkerHandle::stop`] is
//! graceful: running handlers finish and are acked, prefetched messages go
//! back to the queue. A lost connection is recovered (a
//! [`RecoveringConnection`](carehare_tokio::RecoveringConnection), with
//! the [`RetryPolicy`]'s backoff) and every route set up again; an error
//! that retrying can't fix (bad credentials, a missing vhost, a refused
//! route) ends the worker instead, at once.
//!
//! ## Clusters
//!
//! [`ConnectionParameters::from_urls`] (or [`ConnectionParameters::with_hosts`])
//! lists the nodes of a RabbitMQ cluster: workers and clients connect to the
//! first that answers and, when their node goes away, reconnect to another
//! and declare their queues and consumers again there. Route queues are
//! classic by default (as Python's library declares them), and a classic
//! queue lives on one node: choose [`QueueType::Quorum`] (with
//! [`QueueWorker::queue_type`] or [`RouteOptions::queue_type`]) for routes
//! that must keep working while a node is down. A [`Client`] made with
//! [`Client::connect`] recovers its connection too.

#![deny(unreachable_pub)]

mod client;
mod connection;
mod error;
mod handler;
mod queue_worker;
mod rpc_worker;
pub mod wire;
mod worker;

pub use carehare_tokio;
pub use carehare_tokio::{AMQPValue, FieldTable};
pub use client::{Client, DEFAULT_CALL_TIMEOUT};
pub use connection::{ConnectionParameters, RetryPolicy};
pub use error::{CallError, DecodeError, RpcError, WorkerError};
pub use handler::{QueueOutcome, RpcOutcome};
pub use queue_worker::QueueWorker;
pub use rpc_worker::{RPCWorker, RpcWorker};
pub use worker::{QueueType, RPC_DLX, RouteOptions, WorkerHandle};

/// The README's examples, compiled as doctests so that they keep building.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
