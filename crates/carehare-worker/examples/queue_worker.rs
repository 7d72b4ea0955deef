//! The `queue_worker.py` of Python `amqp_worker`'s README, in Rust.
//!
//! Start a broker, run `cargo run -p carehare-worker --example queue_worker`,
//! then send it gzip-compressed JSON `{"data": ...}` from any AMQP client,
//! e.g. pika:
//!
//! ```text
//! channel.basic_publish(exchange='', routing_key='a-queue',
//!     body=gzip.compress(json.dumps({'data': 'a test message'}).encode('UTF8')))
//! ```
//!
//! and it prints `data received a test message`. Ctrl-C stops it
//! gracefully.

use std::collections::HashMap;

use carehare_worker::{ConnectionParameters, QueueWorker};

#[tokio::main]
async fn main() -> Result<(), carehare_worker::WorkerError> {
    // define broker connection data
    let connection_parameters = ConnectionParameters::new("localhost", 5672, "guest", "guest");
    // create Worker
    let mut worker = QueueWorker::new(connection_parameters);

    // define a "route" on the worker: messages published to a queue with
    // the name given to `route` will be handled by the handler
    worker.route("a-queue", |data: String| async move {
        println!("data received {data}");
    });

    // you can define as many routes as you need
    worker.route(
        "another-route",
        |data: HashMap<String, serde_json::Value>| async move {
            println!("got data on another-route:\n{data:?}");
        },
    );

    // run returns a handle that stops the worker: keep it for later
    let stop_worker = worker.run().await?;

    // run until Ctrl-C, then stop gracefully
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot listen for Ctrl-C: {e}");
    }
    stop_worker.stop().await
}
