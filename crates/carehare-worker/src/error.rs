//! The crate's errors: [`WorkerError`] (connecting, setting up, stopping),
//! [`CallError`] (the client), [`RpcError`] (an error reply's content) and
//! [`DecodeError`] (a malformed body).

use std::any::Any;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a worker (or a [`Client`](crate::Client)) could not start, or how it
/// ended.
///
/// ```no_run
/// # async fn f() {
/// use carehare_worker::{ConnectionParameters, QueueWorker, WorkerError};
/// let worker = QueueWorker::new(ConnectionParameters::new("localhost", 5672, "guest", "guest"));
/// match worker.run().await {
///     Ok(handle) => drop(handle),
///     Err(WorkerError::Connect { attempts, last }) => eprintln!("gave up after {attempts} attempts: {last}"),
///     Err(other) => eprintln!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Connecting failed `attempts` times (or once, for an error that
    /// retrying cannot fix: bad credentials, a bad URL, a missing vhost);
    /// `last` is the last attempt's error. From a running worker
    /// ([`WorkerHandle::join`](crate::WorkerHandle::join)): recovering its
    /// lost connection failed with such an error, after `attempts`
    /// reconnect attempts.
    #[error("could not connect to RabbitMQ after {attempts} attempt(s): {last}")]
    Connect {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: carehare_tokio::Error,
    },
    /// RabbitMQ refused to set up a route: e.g. `406 PRECONDITION_FAILED`
    /// because the queue exists with other arguments or durability.
    #[error("could not set up the route for queue {queue:?}: {source}")]
    Route {
        /// The route's queue.
        queue: String,
        /// RabbitMQ's refusal.
        source: carehare_tokio::Error,
    },
    /// A route's options contradict each other (e.g. a quorum queue that
    /// is not durable); nothing was sent to RabbitMQ.
    #[error("invalid options for the route of queue {queue:?}: {reason}")]
    InvalidRoute {
        /// The route's queue.
        queue: String,
        /// What is wrong.
        reason: String,
    },
    /// The same queue was routed twice on one worker.
    #[error("queue {0:?} has more than one route")]
    DuplicateRoute(String),
    /// The connection URL could not be parsed.
    #[error(transparent)]
    Url(#[from] carehare_tokio::UrlError),
    /// Stopping: `abandoned` handlers were still running when the shutdown
    /// timeout ran out. They were cancelled and their messages returned to
    /// their queues (not lost: they will be delivered again).
    #[error(
        "{abandoned} handler(s) did not finish within the shutdown timeout; their messages were requeued"
    )]
    ShutdownTimedOut {
        /// How many handlers were cancelled.
        abandoned: usize,
    },
    /// The worker's supervising task panicked (a bug in this crate).
    #[error("the worker task failed: {0}")]
    Internal(String),
}

/// Why a [`Client`](crate::Client) call (or send) failed.
///
/// ```no_run
/// # async fn f(client: carehare_worker::Client) {
/// use carehare_worker::CallError;
/// match client.call::<_, String>("a-route", "a message").await {
///     Ok(reply) => println!("{reply}"),
///     Err(CallError::ErrorReply(e)) => eprintln!("the worker failed: {} {}", e.error_type, e.message),
///     Err(CallError::Timeout(after)) => eprintln!("no reply within {after:?}"),
///     Err(CallError::Returned(_)) => eprintln!("no queue named a-route"),
///     Err(other) => eprintln!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The worker answered with an error reply (its handler failed, or the
    /// request was malformed).
    #[error("the worker replied with an error: {0}")]
    ErrorReply(#[source] RpcError),
    /// No reply within the timeout. The request may still be handled.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// No queue took the request: nothing listens on that route (RabbitMQ
    /// returned it, e.g. `312 NO_ROUTE`).
    #[error("no queue took the message: {} {}", .0.reply_code, .0.reply_text)]
    Returned(Box<carehare_tokio::Returned>),
    /// The request's data could not be serialized to JSON.
    #[error("could not encode the request: {0}")]
    Encode(String),
    /// The reply was not in the expected format (or its `data` did not fit
    /// the type asked for).
    #[error("malformed reply: {0}")]
    MalformedReply(#[source] DecodeError),
    /// The client lost its connection and recovering it failed, after
    /// `attempts` reconnect attempts, with an error that retrying can't
    /// fix (bad credentials, a missing vhost...); the request was not
    /// sent. The client stays unusable: every call fails so.
    #[error("could not reconnect to RabbitMQ after {attempts} attempt(s): {last}")]
    Connect {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: carehare_tokio::Error,
    },
    /// Any other AMQP failure: the connection closed (a call waiting when
    /// the connection is lost ends so; the request may or may not have been
    /// handled), a channel error...
    #[error(transparent)]
    Amqp(carehare_tokio::Error),
}

impl From<carehare_tokio::Error> for CallError {
    fn from(e: carehare_tokio::Error) -> Self {
        match e {
            carehare_tokio::Error::Returned(r) => CallError::Returned(r),
            carehare_tokio::Error::Timeout(d) => CallError::Timeout(d),
            other => CallError::Amqp(other),
        }
    }
}

/// A malformed message body. The worker rejects such a message without
/// requeueing it, so it never loops.
///
/// ```
/// use carehare_worker::{wire, DecodeError};
/// let e = wire::decode_request::<u32>(b"plain text", 1024).unwrap_err();
/// assert!(matches!(e, DecodeError::Gzip(_)));
/// assert_eq!(e.python_type(), "BadGzipFile");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not gzip (or a truncated or corrupt stream).
    #[error("the body is not valid gzip: {0}")]
    Gzip(String),
    /// Decompressed, it is larger than the configured limit.
    #[error("the decompressed body is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Decompressed, it is not UTF-8.
    #[error("the body is not UTF-8: {0}")]
    Utf8(String),
    /// It is not JSON.
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// It is JSON of the wrong shape: not `{"data": ...}`, or `data` does
    /// not fit the handler's type.
    #[error("the body has the wrong shape: {0}")]
    Shape(String),
}

impl DecodeError {
    /// The name of the exception Python's `amqp_worker` would report for
    /// the same body; used as the `type` of the error reply an
    /// [`RpcWorker`](crate::RpcWorker) sends for a malformed request.
    ///
    /// ```
    /// let e = carehare_worker::DecodeError::Json("expected value".into());
    /// assert_eq!(e.python_type(), "JSONDecodeError");
    /// ```
    pub fn python_type(&self) -> &'static str {
        match self {
            DecodeError::Gzip(_) => "BadGzipFile",
            DecodeError::TooLarge { .. } => "MessageTooLarge",
            DecodeError::Utf8(_) => "UnicodeDecodeError",
            DecodeError::Json(_) => "JSONDecodeError",
            DecodeError::Shape(_) => "TypeError",
        }
    }
}

/// The content of an error reply, as Python's `amqp_worker` sends it:
/// `{"type": ..., "message": ..., "args": [...], "trace": ...}`.
///
/// An [`RpcWorker`](crate::RpcWorker) handler can return it as its error
/// to choose every field; any other error type `E` is described as `type`
/// = `E`'s name (e.g. `ParseIntError`), `message` = its `Display`, `args` =
/// `[message]`.
///
/// ```
/// use carehare_worker::RpcError;
/// let e = RpcError::new("ValueError", "amount must be positive").with_args(vec![serde_json::json!(-3)]);
/// assert_eq!(e.to_string(), "ValueError: amount must be positive");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// The error's type, e.g. Python's exception class name.
    #[serde(rename = "type")]
    pub error_type: String,
    /// The message (Python sends the exception's `repr`).
    pub message: String,
    /// The error's arguments (Python's `exception.args`).
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
    /// A traceback, when the sender has one (Python always sends one;
    /// carehare-worker sends an empty string).
    #[serde(default)]
    pub trace: String,
}

impl RpcError {
    /// An error of `error_type` with `message`, whose `args` are
    /// `[message]` (like a Python exception raised with one argument).
    ///
    /// ```
    /// let e = carehare_worker::RpcError::new("KeyError", "no such account");
    /// assert_eq!(e.args, vec![serde_json::json!("no such account")]);
    /// ```
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            error_type: error_type.into(),
            args: vec![serde_json::Value::String(message.clone())],
            message,
            trace: String::new(),
        }
    }

    /// Replaces `args`.
    ///
    /// ```
    /// let e = carehare_worker::RpcError::new("ValueError", "bad").with_args(vec![1.into(), "x".into()]);
    /// assert_eq!(e.args.len(), 2);
    /// ```
    pub fn with_args(mut self, args: Vec<serde_json::Value>) -> Self {
        self.args = args;
        self
    }

    /// Describes any handler error: an `RpcError` (also boxed as
    /// `Box<dyn Error + Send + Sync>`) is kept as it is; anything else
    /// becomes `type` = its type's name, `message` = its `Display`.
    ///
    /// ```
    /// use carehare_worker::RpcError;
    /// let e = RpcError::describe("x".parse::<u32>().unwrap_err());
    /// assert_eq!(e.error_type, "ParseIntError");
    /// assert_eq!(e.message, "invalid digit found in string");
    /// ```
    pub fn describe<E: fmt::Display + 'static>(error: E) -> Self {
        let any: &dyn Any = &error;
        if let Some(e) = any.downcast_ref::<RpcError>() {
            return e.clone();
        }
        let boxed: Option<&(dyn std::error::Error + 'static)> =
            if let Some(b) = any.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>() {
                Some(b.as_ref())
            } else if let Some(b) = any.downcast_ref::<Box<dyn std::error::Error + Send>>() {
                Some(b.as_ref())
            } else {
                None
            };
        if let Some(e) = boxed.and_then(|b| b.downcast_ref::<RpcError>()) {
            return e.clone();
        }
        RpcError::new(short_type_name::<E>(), error.to_string())
    }

    /// The error reply for a panicking handler: `type` `Panic`, `message`
    /// the panic's message.
    pub(crate) fn panic(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "the handler panicked".to_string()
        };
        RpcError::new("Panic", message)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for RpcError {}

/// `core::num::error::ParseIntError` -> `ParseIntError`; boxed and string
/// errors, whose name says nothing, -> `Error`.
fn short_type_name<E>() -> String {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    let name = base
        .rsplit("::")
        .next()
        .unwrap_or(base)
        .trim_start_matches('&');
    match name {
        "" | "Box" | "Arc" | "String" | "str" | "Cow" => "Error".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn the_io_error_kind_is_reachable_through_source() {
        let refused = carehare_tokio::Error::Connect {
            address: "a:1".into(),
            error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        };
        let errors = [
            WorkerError::Connect {
                attempts: 3,
                last: refused.clone(),
            },
            WorkerError::Route {
                queue: "q".into(),
                source: refused.clone(),
            },
        ];
        for e in &errors {
            let kind = std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |&e| {
                e.source()
            })
            .find_map(|e| e.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
            assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused), "{e}");
        }
        let call = CallError::Connect {
            attempts: 1,
            last: refused,
        };
        assert!(
            call.source()
                .is_some_and(|s| s.is::<carehare_tokio::Error>())
        );
        let reply = CallError::ErrorReply(RpcError::new("ValueError", "bad"));
        assert!(reply.source().is_some_and(|s| s.is::<RpcError>()));
    }

    #[test]
    fn errors_are_described_by_type_name() {
        assert_eq!(RpcError::describe("boom").error_type, "Error");
        assert_eq!(RpcError::describe(String::from("boom")).message, "boom");
        let io = std::io::Error::other("disk");
        assert_eq!(RpcError::describe(io).error_type, "Error");
        let fmt = RpcError::describe(std::fmt::Error);
        assert_eq!(fmt.error_type, "Error");
        let mine = RpcError::new("ValueError", "v").with_args(vec![]);
        assert_eq!(RpcError::describe(mine.clone()), mine);
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(mine.clone());
        assert_eq!(RpcError::describe(boxed), mine);
        let boxed: Box<dyn std::error::Error + Send + Sync> = "plain".into();
        assert_eq!(RpcError::describe(boxed).error_type, "Error");
    }
}
