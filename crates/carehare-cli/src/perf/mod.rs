//! `carehare perf`: a load tool in the style of RabbitMQ's PerfTest.
//!
//! Producers publish on the default exchange to the run's queues through
//! [`Connection::publisher`] windows (`--confirm`); consumers ack every
//! `--multi-ack-every` deliveries with `ack_multiple`. With `--sequential`
//! all `--count` messages are published (and confirmed) first, then
//! consumed: each phase gets its own wall time and CPU time.
//!
//! It runs on recovering connections, so a run carries on through a broker
//! restart or a lost link (unconfirmed publishes go out again, consumers
//! re-subscribe). `--no-recovery` runs on plain connections instead, to
//! measure the plain client beside clients that don't recover; a lost
//! connection then ends the run.

mod args;
mod link;
mod report;
mod stats;
mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use carehare_tokio::carehare_core::types::LongString;
use carehare_tokio::{
    AMQPValue, BoxFuture, Connection, ConsumerOptions, Error, FieldTable, QueueOptions,
};
use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::commands::admin::QueueType;
use crate::commands::consume::say_recovery;
use crate::common::ConnArgs;
use crate::error::CliError;
use link::Link;
use report::{Percentiles, Report, Side};
use stats::{Counters, Usage};
use worker::{Consumer, Producer, Stamp};

pub(crate) use args::PerfArgs;

/// The runtime `perf` runs on (`--threads`).
pub(crate) fn runtime(args: &PerfArgs) -> std::io::Result<tokio::runtime::Runtime> {
    if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    }
}

/// A queue of the run, and how to declare it.
#[derive(Clone)]
struct RunQueue {
    name: String,
    /// `--queue`: used as it is if it exists (a declare with other
    /// arguments would be refused with 406), made if missing.
    existing_ok: bool,
    options: QueueOptions,
    /// Created by the run (not --queue) and not exclusive: delete it at
    /// the end.
    delete: bool,
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// The run's queues. Their names are chosen here, so that declaring them
/// again (as a recovering connection's `setup` does after every reconnect)
/// names the same queues.
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

/// Declares the run's queues on `connection`.
async fn declare_queues(connection: &Connection, queues: &[RunQueue]) -> Result<(), Error> {
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    for q in queues {
        if q.existing_ok {
            match connection.queue_declare(&q.name, passive.clone()).await {
                Err(Error::ChannelClosedByServer(r)) if r.code == 404 => {}
                other => {
                    other?;
                    continue;
                }
            }
        }
        connection.queue_declare(&q.name, q.options.clone()).await?;
    }
    Ok(())
}

/// Everything a run holds.
struct Run {
    args: PerfArgs,
    connections: Vec<Link>,
    queues: Vec<RunQueue>,
    counters: Arc<Counters>,
}

/// What a phase ended with.
struct PhaseEnd {
    publish_end: Option<Instant>,
    consume_end: Option<Instant>,
    /// Consumers stopped before getting every confirmed message.
    short: bool,
}

impl Run {
    /// Deletes the run's queues, on a fresh connection if the run's own
    /// died (durable quorum queues and streams would stay otherwise).
    async fn delete_queues(&self, conn: &ConnArgs) {
        let mut connection = match self.connections[0].connection().now_or_never() {
            Some(Ok(c)) => c,
            // Lost (a recovering run waits for no recovery here): the
            // delete fails and a fresh connection is made below.
            _ => match conn.connect("carehare perf cleanup").await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("carehare: could not reconnect to delete the run's queues: {e}");
                    return;
                }
            },
        };
        let mut reconnected = false;
        for q in self.queues.iter().filter(|q| q.delete) {
            let mut result = connection.queue_delete(&q.name, false, false).await;
            let dead = matches!(result, Err(Error::ConnectionClosed(_) | Error::Usage(_)));
            if dead && !reconnected {
                reconnected = true;
                match conn.connect("carehare perf cleanup").await {
                    Ok(c) => {
                        connection = c;
                        result = connection.queue_delete(&q.name, false, false).await;
                    }
                    Err(e) => {
                        eprintln!("carehare: could not reconnect to delete the run's queues: {e}")
                    }
                }
            }
            if let Err(e) = result {
                eprintln!("carehare: could not delete queue {}: {e}", q.name);
            }
        }
        if reconnected {
            let _ = connection.close().await;
        }
    }

    fn connection(&self, role: usize) -> Link {
        self.connections[role % self.connections.len()].clone()
    }

    fn spawn_producers(&self, stamp: Stamp) -> Vec<JoinHandle<Option<Instant>>> {
        let n = self.args.producers as u64;
        (0..self.args.producers)
            .map(|i| {
                let count = self
                    .args
                    .count
                    .map(|c| c / n + u64::from((i as u64) < c % n));
                let producer = Producer {
                    connection: self.connection(i),
                    queue: self.queues[i % self.queues.len()].name.clone(),
                    count,
                    rate: self.args.rate,
                    window: usize::try_from(self.args.confirm).unwrap_or(usize::MAX),
                    size: self.args.size,
                    stamp,
                    persistent: self.args.persistent,
                };
                let counters = self.counters.clone();
                tokio::spawn(async move {
                    match producer.run(counters.clone()).await {
                        Ok(end) => Some(end),
                        Err(e) => {
                            counters.fail(e);
                            None
                        }
                    }
                })
            })
            .collect()
    }

    /// Registers the consumers with RabbitMQ (before any clock starts),
    /// and returns them ready to run.
    async fn consumers(
        &self,
        stamp: Stamp,
        target: Option<u64>,
    ) -> Result<Vec<Consumer>, CliError> {
        let mut arguments = FieldTable::default();
        if self.args.queue_type == QueueType::Stream {
            // Read the stream from its start: the run's messages may be
            // there already (sequential runs).
            arguments.insert("x-stream-offset".into(), long_string("first"));
        }
        let mut consumers = Vec::with_capacity(self.args.consumers);
        for j in 0..self.args.consumers {
            let options = ConsumerOptions {
                prefetch_count: self.args.prefetch(),
                arguments: arguments.clone(),
                ..Default::default()
            };
            let link = self.connection(self.args.producers + j);
            let queue = &self.queues[j % self.queues.len()].name;
            consumers.push(Consumer {
                consumer: link.consumer(queue, options).await?,
                multi_ack_every: self.args.multi_ack_every,
                stamp,
                target,
            });
        }
        Ok(consumers)
    }

    fn spawn_consumers(
        &self,
        consumers: Vec<Consumer>,
        stop: &watch::Sender<bool>,
    ) -> Vec<JoinHandle<Option<Instant>>> {
        consumers
            .into_iter()
            .map(|c| {
                let counters = self.counters.clone();
                let stop = stop.subscribe();
                tokio::spawn(async move {
                    match c.run(counters.clone(), stop).await {
                        Ok(end) => end,
                        Err(e) => {
                            counters.fail(e);
                            None
                        }
                    }
                })
            })
            .collect()
    }

    /// Watches a phase until it is done: producers finished and consumers
    /// have everything confirmed (or `target`), the deadline passed,
    /// Ctrl-C, a task failed, or consumers made no progress for a while.
    async fn watch_phase(
        &self,
        producers: Vec<JoinHandle<Option<Instant>>>,
        consumers: Vec<JoinHandle<Option<Instant>>>,
        stop_consumers: watch::Sender<bool>,
        target: Option<u64>,
        deadline: Option<Instant>,
        interrupted: &mut bool,
    ) -> Result<PhaseEnd, CliError> {
        let counters = &self.counters;
        let has_consumers = !consumers.is_empty();
        let has_producers = !producers.is_empty();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut last_consumed = Counters::get(&counters.consumed);
        let mut last_progress = Instant::now();
        let mut short = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = &mut ctrl_c, if !*interrupted => *interrupted = true,
            }
            if counters.failure().is_some() {
                break;
            }
            let now = Instant::now();
            if *interrupted || deadline.is_some_and(|d| now >= d) {
                counters.stop_producers.store(true, Ordering::Relaxed);
            }
            let consumed = Counters::get(&counters.consumed);
            if consumed != last_consumed {
                last_consumed = consumed;
                last_progress = now;
            }
            if !has_consumers {
                if producers.iter().all(JoinHandle::is_finished) {
                    break;
                }
                continue;
            }
            if !has_producers {
                // Consuming only: until the target, the deadline or Ctrl-C.
                if target.is_some_and(|t| consumed >= t)
                    || *interrupted
                    || deadline.is_some_and(|d| now >= d)
                {
                    break;
                }
                continue;
            }
            if !producers.iter().all(JoinHandle::is_finished) {
                last_progress = now;
                continue;
            }
            // Publishing is over: drain what was confirmed.
            if consumed >= Counters::get(&counters.confirmed) {
                break;
            }
            let patience = if *interrupted {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(10)
            };
            if now.duration_since(last_progress) > patience {
                // After Ctrl-C, stopping short is what was asked for.
                short = !*interrupted;
                break;
            }
        }
        counters.stop_producers.store(true, Ordering::Relaxed);
        let _ = stop_consumers.send(true);
        let mut publish_end = None;
        for p in producers {
            publish_end = publish_end.max(p.await.ok().flatten());
        }
        let mut consume_end = None;
        for c in consumers {
            consume_end = consume_end.max(c.await.ok().flatten());
        }
        if let Some(e) = counters.failure() {
            return Err(e.into());
        }
        Ok(PhaseEnd {
            publish_end,
            consume_end,
            short,
        })
    }

    fn progress(&self, label: &'static str) -> Option<JoinHandle<()>> {
        (!self.args.quiet).then(|| tokio::spawn(report::progress(self.counters.clone(), label)))
    }

    async fn sequential(&self) -> Result<(Report, bool), CliError> {
        let mut interrupted = false;
        // Phase 1: publish everything, confirmed.
        let progress = self.progress("publish");
        let (stop, _) = watch::channel(false);
        let before = Usage::now();
        let start = Instant::now();
        let producers = self.spawn_producers(Stamp::None);
        let end = self
            .watch_phase(producers, Vec::new(), stop, None, None, &mut interrupted)
            .await;
        let published = Usage::now();
        stop_progress(progress);
        let end = end?;
        let publish = Side {
            messages: Counters::get(&self.counters.confirmed),
            seconds: seconds(start, end.publish_end),
            cpu: published.cpu_since(&before),
            cpu_per: Counters::get(&self.counters.confirmed),
        };
        if interrupted {
            return Ok((self.partial_report(publish, published), false));
        }
        // Phase 2: consume them all. The clock starts before the consumers
        // register, since deliveries start with consume-ok.
        let target = Counters::get(&self.counters.confirmed);
        let before = Usage::now();
        let start = Instant::now();
        let consumers = self.consumers(Stamp::None, Some(target)).await?;
        let progress = self.progress("consume");
        let (stop, _) = watch::channel(false);
        let consumers = self.spawn_consumers(consumers, &stop);
        let end = self
            .watch_phase(
                Vec::new(),
                consumers,
                stop,
                Some(target),
                None,
                &mut interrupted,
            )
            .await;
        stop_progress(progress);
        let end = end?;
        let consumed_usage = Usage::now();
        let consumed = Counters::get(&self.counters.consumed);
        let consume = Side {
            messages: consumed,
            seconds: seconds(start, end.consume_end),
            cpu: consumed_usage.cpu_since(&before),
            cpu_per: consumed,
        };
        let report = Report {
            publish,
            consume,
            latency: None,
            usage: consumed_usage,
        };
        Ok((report, end.short))
    }

    /// The report of a sequential run stopped during publishing.
    fn partial_report(&self, publish: Side, usage: Usage) -> Report {
        Report {
            publish,
            consume: Side::default(),
            latency: None,
            usage,
        }
    }

    async fn concurrent(&self) -> Result<(Report, bool), CliError> {
        let mut interrupted = false;
        let stamp = Stamp::for_size(self.args.size, true);
        let target = if self.args.producers == 0 {
            self.args.count
        } else {
            None
        };
        let consumers = self.consumers(stamp, target).await?;
        let progress = self.progress("perf");
        let (stop, _) = watch::channel(false);
        let before = Usage::now();
        let start = Instant::now();
        let deadline = self.args.duration.map(|d| start + d);
        let consumers = self.spawn_consumers(consumers, &stop);
        let producers = self.spawn_producers(stamp);
        let end = self
            .watch_phase(
                producers,
                consumers,
                stop,
                target,
                deadline,
                &mut interrupted,
            )
            .await;
        let after = Usage::now();
        stop_progress(progress);
        let end = end?;
        let confirmed = Counters::get(&self.counters.confirmed);
        let consumed = Counters::get(&self.counters.consumed);
        let cpu = after.cpu_since(&before);
        let cpu_per = if self.args.consumers > 0 {
            consumed
        } else {
            confirmed
        };
        let latency = {
            let l = self.counters.latency();
            (!l.total.is_empty()).then(|| Percentiles {
                p50: l.total.value_at_quantile(0.50),
                p95: l.total.value_at_quantile(0.95),
                p99: l.total.value_at_quantile(0.99),
                max: l.total.max(),
            })
        };
        let report = Report {
            publish: Side {
                messages: confirmed,
                seconds: seconds(start, end.publish_end),
                cpu,
                cpu_per,
            },
            consume: Side {
                messages: consumed,
                seconds: seconds(start, end.consume_end),
                cpu,
                cpu_per,
            },
            latency,
            usage: after,
        };
        Ok((report, end.short))
    }
}

fn seconds(start: Instant, end: Option<Instant>) -> f64 {
    end.map_or(0.0, |e| e.saturating_duration_since(start).as_secs_f64())
}

fn stop_progress(progress: Option<JoinHandle<()>>) {
    if let Some(p) = progress {
        p.abort();
        report::end_progress();
    }
}

/// Runs `perf`.
pub(crate) async fn run(conn: &ConnArgs, args: PerfArgs) -> Result<(), CliError> {
    args.validate()?;
    let queues = plan_queues(&args);
    let mut connections = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let name = format!("carehare perf #{i}");
        connections.push(if args.no_recovery {
            Link::Plain(conn.connect(&name).await?)
        } else {
            let queues = queues.clone();
            let setup = move |c: Connection| -> BoxFuture<'static, Result<(), Error>> {
                let queues = queues.clone();
                Box::pin(async move { declare_queues(&c, &queues).await })
            };
            Link::Recovering(conn.connect_recovering_with(&name, setup).await?)
        });
    }
    if let Link::Plain(c) = &connections[0] {
        declare_queues(c, &queues).await?;
    }
    // Losses and recoveries are said on stderr as they happen.
    let said: Vec<JoinHandle<()>> = connections
        .iter()
        .filter_map(|c| match c {
            Link::Recovering(c) => Some(tokio::spawn(say_recovery(c.events()))),
            Link::Plain(_) => None,
        })
        .collect();
    let run = Run {
        args,
        connections,
        queues,
        counters: Arc::new(Counters::new()),
    };
    let outcome = if run.args.sequential {
        run.sequential().await
    } else {
        run.concurrent().await
    };
    run.delete_queues(conn).await;
    for c in &run.connections {
        c.close().await;
    }
    said.iter().for_each(JoinHandle::abort);
    let (report, short) = outcome?;
    if run.args.json {
        println!("{}", report.json(&run.args));
    } else {
        print!("{}", report.table(&run.args));
    }
    let refused = Counters::get(&run.counters.refused);
    if refused > 0 {
        return Err(CliError::NotConfirmed(format!(
            "{refused} publishes were nacked or returned by RabbitMQ"
        )));
    }
    if short {
        return Err(CliError::Timeout {
            what: format!(
                "consumers stopped after {} of {} messages: no progress",
                Counters::get(&run.counters.consumed),
                Counters::get(&run.counters.confirmed)
            ),
            timeout: Duration::from_secs(10),
        });
    }
    Ok(())
}
