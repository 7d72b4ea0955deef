//! The reconnect recipe in action (see `docs/reconnect.md`): publish N
//! messages with confirms to a quorum queue on a cluster, surviving node
//! stops by reconnecting to another node with backoff and re-publishing
//! what was not confirmed; then consume them all and count what was lost
//! (must be 0) and duplicated.
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

use carehare_examples::reconnect::{ReliablePublisher, Settings, drain_ids, numbered};
use carehare_tokio::{AMQPValue, ConnectOptions, Error, FieldTable, QueueOptions, Runtime};

const BATCH: u64 = 100;

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
        let rt: Arc<dyn Runtime> = Arc::new(carehare_tokio::Tokio::current());

        let queue = "carehare-reconnect-example";
        let setup = carehare_tokio::connect_with(options.clone()).await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        setup
            .queue_declare(queue, QueueOptions { durable: true, arguments, ..Default::default() })
            .await?;
        setup.queue_purge(queue).await?;

        let mut publisher = ReliablePublisher::new(rt.clone(), options.clone(), Settings::default());
        let started = Instant::now();
        let mut next = 0;
        while next < total {
            let n = BATCH.min(total - next);
            publisher.publish("", queue, numbered(next, n)).await?;
            next += n;
            // Paced, so a node can be stopped while this runs.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if next % 2_000 == 0 {
                let r = publisher.report();
                eprintln!(
                    "{next:>6}/{total} confirmed, on {}, {} failover(s)",
                    r.connected_to.last().map(|a| a.to_string()).unwrap_or_default(),
                    r.failovers
                );
            }
        }
        publisher.close().await;
        let report = publisher.report().clone();
        println!(
            "published {total} in {:.1}s: {} failover(s), {} re-published, {} nack(s) ({} reconnect(s) after nacks), outages {:?}, nodes {:?}",
            started.elapsed().as_secs_f64(),
            report.failovers,
            report.republished,
            report.nacks,
            report.reconnects_after_nacks,
            report.outages,
            report.connected_to.iter().map(|a| a.to_string()).collect::<Vec<_>>()
        );

        // Any live node will do for the check (setup's node may be gone).
        let _ = setup.close().await;
        let reader = carehare_tokio::connect_with(options).await?;
        let drained = drain_ids(
            &rt,
            &reader,
            queue,
            total as usize,
            Duration::from_secs(1),
            Duration::from_secs(120),
        )
        .await;
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
        reader.queue_delete(queue, false, false).await?;
        reader.close().await?;
        if lost > 0 {
            std::process::exit(1);
        }
        Ok(())
    })
}
