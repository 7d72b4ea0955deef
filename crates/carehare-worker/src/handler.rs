//! What handlers may return, and handlers with their types erased.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, RpcError};
use crate::wire;

/// What a [`QueueWorker`](crate::QueueWorker) handler returns: `()`, or a
/// `Result` whose error is logged (and the message rejected, see the crate
/// docs). The `Ok` value is ignored.
///
/// ```no_run
/// # fn f(worker: &mut carehare_worker::QueueWorker) {
/// worker.route("infallible", |data: String| async move { println!("{data}") });
/// worker.route("fallible", |data: String| async move { data.parse::<u32>().map(drop) });
/// # }
/// ```
pub trait QueueOutcome: Send + 'static {
    /// `Ok(())`, or the error, described.
    fn into_outcome(self) -> Result<(), RpcError>;
}

impl QueueOutcome for () {
    fn into_outcome(self) -> Result<(), RpcError> {
        Ok(())
    }
}

impl<T: Send + 'static, E: fmt::Display + Send + 'static> QueueOutcome for Result<T, E> {
    fn into_outcome(self) -> Result<(), RpcError> {
        self.map(drop).map_err(RpcError::describe)
    }
}

/// What an [`RpcWorker`](crate::RpcWorker) handler returns: a `Result`
/// whose `Ok` value is serialized as the reply's `data` and whose error
/// becomes an error reply (see [`RpcError::describe`]), or directly one of
/// the plain JSON-friendly types Python's `amqp_worker` allows (strings,
/// numbers, booleans, lists, maps, `Option`, [`serde_json::Value`]).
///
/// A custom struct is returned as `Ok::<_, std::convert::Infallible>(it)`
/// or, usually, as the `Ok` of a fallible handler.
///
/// ```no_run
/// # fn f(worker: &mut carehare_worker::RpcWorker) {
/// use carehare_worker::RpcError;
/// worker.route("echo", |data: String| async move { format!("data received {data}") });
/// worker.route("halve", |n: i64| async move {
///     if n % 2 == 0 { Ok(n / 2) } else { Err(RpcError::new("ValueError", format!("{n} is odd"))) }
/// });
/// # }
/// ```
pub trait RpcOutcome: Send + 'static {
    /// The reply's `data`, or the error to reply with.
    fn into_reply(self) -> Result<serde_json::Value, RpcError>;
}

/// Python's message when a route's response can't be serialized.
fn unserializable(e: &serde_json::Error) -> RpcError {
    RpcError::new(
        "TypeError",
        format!("The Route's response is not JSON serializable: {e}"),
    )
}

impl<T: Serialize + Send + 'static, E: fmt::Display + Send + 'static> RpcOutcome for Result<T, E> {
    fn into_reply(self) -> Result<serde_json::Value, RpcError> {
        match self {
            Ok(data) => serde_json::to_value(data).map_err(|e| unserializable(&e)),
            Err(e) => Err(RpcError::describe(e)),
        }
    }
}

macro_rules! plain_outcomes {
    ($($t:ty),* $(,)?) => {$(
        impl RpcOutcome for $t {
            fn into_reply(self) -> Result<serde_json::Value, RpcError> {
                serde_json::to_value(self).map_err(|e| unserializable(&e))
            }
        }
    )*};
}

plain_outcomes!(
    (),
    bool,
    String,
    &'static str,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    f32,
    f64,
    serde_json::Value,
);

impl<T: Serialize + Send + 'static> RpcOutcome for Vec<T> {
    fn into_reply(self) -> Result<serde_json::Value, RpcError> {
        serde_json::to_value(self).map_err(|e| unserializable(&e))
    }
}

impl<T: Serialize + Send + 'static> RpcOutcome for Option<T> {
    fn into_reply(self) -> Result<serde_json::Value, RpcError> {
        serde_json::to_value(self).map_err(|e| unserializable(&e))
    }
}

impl<T: Serialize + Send + 'static> RpcOutcome for HashMap<String, T> {
    fn into_reply(self) -> Result<serde_json::Value, RpcError> {
        serde_json::to_value(self).map_err(|e| unserializable(&e))
    }
}

impl<T: Serialize + Send + 'static> RpcOutcome for BTreeMap<String, T> {
    fn into_reply(self) -> Result<serde_json::Value, RpcError> {
        serde_json::to_value(self).map_err(|e| unserializable(&e))
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a message was not handled successfully.
pub(crate) enum Failure {
    /// The body is malformed: reject it, never requeue it.
    Malformed(DecodeError),
    /// The handler failed (or panicked, or timed out).
    Handler(RpcError),
}

/// A route's handler, fed the decompressed JSON text: it parses the
/// envelope into the handler's type, then runs the handler.
pub(crate) type QueueHandler = Arc<dyn Fn(Vec<u8>) -> BoxFuture<Result<(), Failure>> + Send + Sync>;
/// The same for an RPC route, whose success is the reply's `data`.
pub(crate) type RpcHandler =
    Arc<dyn Fn(Vec<u8>) -> BoxFuture<Result<serde_json::Value, Failure>> + Send + Sync>;

pub(crate) fn erase_queue<T, F, Fut>(handler: F) -> QueueHandler
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: QueueOutcome,
{
    let handler = Arc::new(handler);
    Arc::new(move |json: Vec<u8>| {
        let handler = handler.clone();
        Box::pin(async move {
            let data: T = wire::parse_request(&json).map_err(Failure::Malformed)?;
            drop(json);
            handler(data).await.into_outcome().map_err(Failure::Handler)
        })
    })
}

pub(crate) fn erase_rpc<T, F, Fut>(handler: F) -> RpcHandler
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: RpcOutcome,
{
    let handler = Arc::new(handler);
    Arc::new(move |json: Vec<u8>| {
        let handler = handler.clone();
        Box::pin(async move {
            let data: T = wire::parse_request(&json).map_err(Failure::Malformed)?;
            drop(json);
            handler(data).await.into_reply().map_err(Failure::Handler)
        })
    })
}
