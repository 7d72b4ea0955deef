//! The `rpc_worker.py` of Python `amqp_worker`'s README, in Rust.
//!
//! Start a broker, run `cargo run -p carehare-worker --example rpc_worker`,
//! then call it, e.g. with that README's pika `Client`:
//!
//! ```text
//! response = client.call('a-route', 'a message')
//! # => {'success': True, 'data': 'data received a message'}
//! ```
//!
//! or with carehare-worker's own client:
//!
//! ```text
//! let reply: String = client.call("a-route", "a message").await?;
//! ```
//!
//! Ctrl-C stops it gracefully.

use carehare_worker::{ConnectionParameters, RpcError, RpcWorker};

#[tokio::main]
async fn main() -> Result<(), carehare_worker::WorkerError> {
    let connection_parameters = ConnectionParameters::new("localhost", 5672, "guest", "guest");
    let mut worker = RpcWorker::new(connection_parameters);

    // the handler's return value is the data sent back to the caller
    worker.route("a-route", |data: String| async move {
        format!("data received {data}")
    });

    // an error becomes an error reply: {"success": false, "error": {...}}
    worker.route("divide", |(a, b): (i64, i64)| async move {
        a.checked_div(b)
            .ok_or_else(|| RpcError::new("ZeroDivisionError", "division by zero"))
    });

    let stop_worker = worker.run().await?;
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot listen for Ctrl-C: {e}");
    }
    stop_worker.stop().await
}
