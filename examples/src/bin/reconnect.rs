//! The reconnect recipe in action (see `docs/reconnect.md`): publish N
//! messages with confirms to a quorum queue on a cluster through a
//! recovering connection, which survives node stops by reconnecting to
//! another node and publishing again what was not confirmed; then consume
//! them all and count what was lost (must be 0) and duplicated.
//!
//! ```sh
//! test-server/cluster-start.sh
//! cargo run -p carehare-examples --bin reconnect &
//! test-server/cluster-node.sh stop 1   # while it runs; then: start 1
//! ```
//!
//! `AMQP_URLS` (comma-separated) overrides the nodes (default: the local
//! test cluster, 127.0.0.1:5781-5783); `MESSAGES` the count (default
//! 20,000, in batches of 100 every 50 ms, so there is time to stop a node).

use std::sync::Arc;
use std::time::{Duration, Instant};

use carehare_examples::reconnect::{
    drain_ids, lock, numbered, publish_all, recovery_options, watch,
};
use carehare_tokio::{
    AMQPValue, ConnectOptions, ConsumerOptions, Error, FieldTable, QueueOptions, Runtime,
};

const BATCH: u64 = 100;
const QUEUE: &str = "carehare-reconnect-example";

fn quorum() -> QueueOptions {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    QueueOptions {
        durable: true,
        arguments,
        ..Default::default()
    }
}

fn main() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let urls = std::env::var("AMQP_URLS").unwrap_or_else(|_| {
            "amqp://carehare:carehare-pw@127.0.0.1:5781/,amqp://carehare:carehare-pw@127.0.0.1:5782/,\
             amqp://carehare:carehare-pw@127.0.0.1:5783/"
                .into()
        });
        let total: u64 = std::env::var("MESSAGES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000);
        let mut options = ConnectOptions::from_urls(urls.split(',').map(str::trim))?;
        // A dead node is noticed in seconds even without a TCP reset.
        options.amqp.heartbeat = 5;
        options.address_timeout = Duration::from_secs(3);
        // Never wait forever: with no node reachable for 2 minutes, fail.
        let recovery = recovery_options(Duration::from_secs(120));
        let rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());

        // `setup` runs on every connection: the declare is idempotent.
        let connection = carehare_tokio::connect_recovering(options, recovery, |c| {
            Box::pin(async move {
                c.queue_declare(QUEUE, quorum()).await?;
                Ok(())
            })
        })
        .await?;
        let (report, follow) = watch(&connection).await?;
        tokio::spawn(follow);
        connection.connection().await?.queue_purge(QUEUE).await?;

        let publisher = connection.publisher(1000);
        let started = Instant::now();
        let mut next = 0;
        while next < total {
            let n = BATCH.min(total - next);
            publish_all(&rt, &publisher, "", QUEUE, numbered(next, n), &report).await?;
            next += n;
            // Paced, so a node can be stopped while this runs.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if next % 2_000 == 0 {
                let r = lock(&report);
                eprintln!(
                    "{next:>6}/{total} confirmed, on {}, {} failover(s)",
                    r.connected_to.last().map(|a| a.to_string()).unwrap_or_default(),
                    r.failovers
                );
            }
        }
        let published = started.elapsed();
        let r = lock(&report).clone();
        println!(
            "published {total} in {:.1}s: {} confirmed, {} failover(s), {} nack(s), outages {:?}, nodes {:?}",
            published.as_secs_f64(),
            r.confirmed,
            r.failovers,
            r.nacks,
            r.outages,
            r.connected_to.iter().map(|a| a.to_string()).collect::<Vec<_>>()
        );

        // The same connection reads them back, recovering too.
        let consumer = connection.consumer(
            |_| QUEUE.to_string(),
            ConsumerOptions {
                prefetch_count: 500,
                ..Default::default()
            },
        );
        let drained = drain_ids(
            &rt,
            &consumer,
            total as usize,
            Duration::from_secs(1),
            Duration::from_secs(120),
        )
        .await;
        consumer.close().await;
        let drained = match drained {
            Ok(d) => d,
            Err(Error::Timeout(_)) => {
                println!("FAILED: not every confirmed message arrived");
                std::process::exit(1);
            }
            Err(e) => return Err(e),
        };
        let lost = (0..total).filter(|id| !drained.ids.contains(id)).count();
        println!(
            "consumed {} distinct: lost {lost}, duplicates {}",
            drained.ids.len(),
            drained.duplicates
        );
        connection
            .connection()
            .await?
            .queue_delete(QUEUE, false, false)
            .await?;
        connection.close().await?;
        if lost > 0 {
            std::process::exit(1);
        }
        Ok(())
    })
}
