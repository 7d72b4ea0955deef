//! The run's queues, and the exchange it publishes to: what they are
//! called, and declaring them (on the first connection, and again on every
//! reconnect of a recovering one).

use std::time::{SystemTime, UNIX_EPOCH};

use carehare_tokio::carehare_core::types::LongString;
use carehare_tokio::{AMQPValue, Connection, Error, ExchangeOptions, FieldTable, QueueOptions};

use super::args::PerfArgs;
use crate::commands::admin::QueueType;

/// A queue of the run, and how to declare it.
#[derive(Clone)]
pub(super) struct RunQueue {
    pub name: String,
    /// `--queue`: used as it is if it exists (a declare with other
    /// arguments would be refused with 406), made if missing.
    existing_ok: bool,
    options: QueueOptions,
    /// Created by the run (not --queue) and not exclusive: delete it at
    /// the end.
    pub delete: bool,
}

/// The run's queues and exchange.
#[derive(Clone)]
pub(super) struct Topology {
    pub queues: Vec<RunQueue>,
    /// `--exchange`, unless it is the default exchange.
    exchange: Option<String>,
    /// `--routing-key`: publishing and binding key; else each queue's name.
    routing_key: Option<String>,
}

pub(super) fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

impl Topology {
    /// The run's topology. Queue names are chosen here, so that declaring
    /// them again (as a recovering connection's `setup` does after every
    /// reconnect) names the same queues.
    pub(super) fn plan(args: &PerfArgs) -> Self {
        Self {
            queues: plan_queues(args),
            exchange: args.exchange.clone().filter(|e| !e.is_empty()),
            routing_key: args.routing_key.clone(),
        }
    }

    /// Where producer `i` publishes: exchange and routing key.
    pub(super) fn route(&self, i: usize) -> (String, String) {
        let queue = &self.queues[i % self.queues.len()].name;
        match &self.exchange {
            Some(exchange) => (
                exchange.clone(),
                self.routing_key.clone().unwrap_or_else(|| queue.clone()),
            ),
            None => (String::new(), queue.clone()),
        }
    }

    /// The queue consumer `j` consumes.
    pub(super) fn consumed(&self, j: usize) -> &str {
        &self.queues[j % self.queues.len()].name
    }

    /// Declares the queues, then the exchange (direct, if missing: an
    /// existing one is used as it is) and the bindings.
    pub(super) async fn declare(&self, connection: &Connection) -> Result<(), Error> {
        for q in &self.queues {
            if q.existing_ok && exists(connection.queue_declare(&q.name, passive()).await)? {
                continue;
            }
            connection.queue_declare(&q.name, q.options.clone()).await?;
        }
        let Some(exchange) = &self.exchange else {
            return Ok(());
        };
        let found = exists(
            connection
                .exchange_declare(
                    exchange,
                    "direct",
                    ExchangeOptions {
                        passive: true,
                        ..Default::default()
                    },
                )
                .await,
        )?;
        if !found {
            connection
                .exchange_declare(exchange, "direct", ExchangeOptions::default())
                .await?;
        }
        for q in &self.queues {
            let key = self.routing_key.as_deref().unwrap_or(&q.name);
            connection
                .queue_bind(&q.name, exchange, key, FieldTable::default())
                .await?;
        }
        Ok(())
    }
}

fn passive() -> QueueOptions {
    QueueOptions {
        passive: true,
        ..Default::default()
    }
}

/// A passive declare's answer: it exists, or not (404).
fn exists<T>(result: Result<T, Error>) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(Error::ChannelClosedByServer(r)) if r.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

fn plan_queues(args: &PerfArgs) -> Vec<RunQueue> {
    let mut arguments = FieldTable::default();
    if args.queue_type != QueueType::Classic {
        arguments.insert("x-queue-type".into(), long_string(args.queue_type.name()));
    }
    let replicated = args.queue_type != QueueType::Classic;
    if let Some(name) = &args.queue {
        return vec![RunQueue {
            name: name.clone(),
            existing_ok: true,
            options: QueueOptions {
                durable: replicated,
                arguments,
                ..Default::default()
            },
            delete: false,
        }];
    }
    // A transient queue: exclusive (gone with the connection) when one
    // plain connection uses it; otherwise deleted at the end, and expiring
    // after an hour unused in case the run is killed. Streams take no
    // x-expires. A recovering run's queues outlive a lost connection, so
    // that what was published to them is still consumed.
    if args.queue_type != QueueType::Stream {
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(3_600_000));
    }
    let exclusive = !replicated && args.connections == 1 && args.no_recovery;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    (0..args.queues)
        .map(|i| RunQueue {
            name: format!("carehare-perf-{}-{stamp}-{i}", std::process::id()),
            existing_ok: false,
            options: QueueOptions {
                durable: replicated,
                exclusive,
                arguments: if exclusive {
                    FieldTable::default()
                } else {
                    arguments.clone()
                },
                ..Default::default()
            },
            delete: !exclusive,
        })
        .collect()
}
