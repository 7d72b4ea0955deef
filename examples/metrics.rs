//! Metering a connection: a `Counters` hook in `ConnectOptions::metrics`,
//! a small workload, and the totals printed in Prometheus's text format
//! (what a `/metrics` endpoint would serve).
//!
//! ```sh
//! cargo run -p carehare-examples --bin metrics-export      # AMQP_URL, or the local broker
//! ```

use std::sync::Arc;

use carehare_tokio::{ConnectOptions, Counters, QueueOptions};

/// Messages the workload publishes and consumes.
const MESSAGES: u64 = 1000;

fn main() {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("metrics-export: cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("metrics-export: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), carehare_tokio::Error> {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/".into());
    let counters = Arc::new(Counters::default());
    let mut options = ConnectOptions::from_url(&url)?;
    options.metrics = Some(counters.clone());
    let connection = carehare_tokio::connect_with(options).await?;

    let queue = connection
        .queue_declare("", QueueOptions::exclusive())
        .await?
        .queue;
    let publisher = connection.publisher(100);
    let mut confirmations = Vec::new();
    for i in 0..MESSAGES {
        confirmations.push(publisher.publish(i.to_string(), "", &queue).await?);
    }
    for c in confirmations {
        c.await?;
    }
    let consumer = connection.acking_consumer(&queue, 100).await?;
    for _ in 0..MESSAGES {
        let (_, tag) = consumer.next_delivery().await?;
        consumer.ack(tag);
    }
    connection.close().await?;

    // One line per counter, as a Prometheus scrape would read them.
    for (counter, total) in counters.snapshot() {
        let name = format!("carehare_{}_total", counter.name());
        println!("# TYPE {name} counter");
        println!("{name} {total}");
    }
    Ok(())
}
