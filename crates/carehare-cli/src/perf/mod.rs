//! `carehare perf`: a load tool in the style of RabbitMQ's PerfTest.
//!
//! Producers publish to the run's queues (on the default exchange, or
//! through `--exchange`) with [`Connection::publisher`] windows
//! (`--confirm`), or without confirms with
//! [`Connection::publish_unconfirmed`] (`-c 0`); consumers ack every `--multi-ack-every` deliveries with
//! `ack_multiple`. With `--sequential` all `--count` messages are
//! published (and confirmed) first, then consumed: each phase gets its own
//! wall time and CPU time. The short flags are PerfTest's.
//!
//! It runs on recovering connections, so a run carries on through a broker
//! restart or a lost link (unconfirmed publishes go out again, consumers
//! re-subscribe). `--no-recovery` runs on plain connections instead, to
//! measure the plain client beside clients that don't recover; a lost
//! connection then ends the run.

mod args;
mod link;
mod report;
mod series;
mod stats;
mod topology;
mod units;
mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use carehare_tokio::{BoxFuture, Connection, ConsumerOptions, Error, FieldTable};
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
use series::{Sampler, Series};
use stats::{Counters, Usage};
use topology::{Topology, long_string};
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

/// Everything a run holds.
struct Run {
    args: PerfArgs,
    connections: Vec<Link>,
    topology: Topology,
    counters: Arc<Counters>,
    series: Arc<Series>,
}

/// What a phase ended with.
struct PhaseEnd {
    publish_end: Option<Instant>,
    consume_end: Option<Instant>,
    /// Consumers stopped before getting every confirmed (or, without
    /// confirms, sent) message.
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
        for q in self.topology.queues.iter().filter(|q| q.delete) {
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
        (0..self.args.producers)
            .map(|i| {
                let (exchange, routing_key) = self.topology.route(i);
                let producer = Producer {
                    connection: self.connection(i),
                    exchange,
                    routing_key,
                    count: self.args.producer_count(i),
                    rate: self.args.rate,
                    window: self.args.window(),
                    confirms: self.args.confirms(),
                    unconfirmed: self.args.unconfirmed(),
                    mandatory: self.args.mandatory(),
                    size: self.args.size,
                    stamp,
                    persistent: self.args.persistent(),
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
                // -a: RabbitMQ settles each message as it sends it; the
                // prefetch then bounds the consumer's buffer instead.
                no_ack: self.args.autoack,
                ..Default::default()
            };
            let link = self.connection(self.args.producers + j);
            consumers.push(Consumer {
                consumer: link.consumer(self.topology.consumed(j), options).await?,
                multi_ack_every: self.args.multi_ack_every(),
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
            // Publishing is over: drain what was confirmed (or sent, when
            // nothing is confirmed).
            if consumed >= self.drain_target() {
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

    /// Starts the per-second series (and progress line) under `label`.
    fn sample(&self, label: &'static str) -> Sampler {
        self.series.set_label(label);
        self.series.spawn()
    }

    /// The publish side's count: confirmed, or with confirms off sent.
    fn published(&self) -> u64 {
        if self.args.confirms() {
            Counters::get(&self.counters.confirmed)
        } else {
            Counters::get(&self.counters.sent)
        }
    }

    /// What consumers should get in all: every message confirmed. Without
    /// confirms, every message sent (some may be lost on the way, which
    /// nothing tells).
    fn drain_target(&self) -> u64 {
        if self.args.unconfirmed() {
            Counters::get(&self.counters.sent)
        } else {
            Counters::get(&self.counters.confirmed)
        }
    }

    async fn sequential(&self) -> Result<(Report, bool), CliError> {
        let mut interrupted = false;
        // Phase 1: publish everything (confirmed, unless confirms are off).
        let sampler = self.sample("publish");
        let (stop, _) = watch::channel(false);
        let before = Usage::now();
        let start = Instant::now();
        let producers = self.spawn_producers(Stamp::None);
        let end = self
            .watch_phase(producers, Vec::new(), stop, None, None, &mut interrupted)
            .await;
        let published = Usage::now();
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                sampler.finish().await;
                return Err(e);
            }
        };
        let publish = Side {
            messages: self.published(),
            seconds: seconds(start, end.publish_end),
            cpu: published.cpu_since(&before),
            cpu_per: self.published(),
        };
        if interrupted {
            let report = Report {
                publish,
                consume: Side::default(),
                latency: None,
                usage: published,
                series: sampler.finish().await,
            };
            return Ok((report, false));
        }
        // Phase 2: consume them all. The clock starts before the consumers
        // register, since deliveries start with consume-ok.
        self.series.set_label("consume");
        let target = self.drain_target();
        let before = Usage::now();
        let start = Instant::now();
        let consumers = match self.consumers(Stamp::None, Some(target)).await {
            Ok(c) => c,
            Err(e) => {
                sampler.finish().await;
                return Err(e);
            }
        };
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
        let consumed_usage = Usage::now();
        let series = sampler.finish().await;
        let end = end?;
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
            series,
        };
        Ok((report, end.short))
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
        let (stop, _) = watch::channel(false);
        let sampler = self.sample("perf");
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
        let series = sampler.finish().await;
        let end = end?;
        let published = self.published();
        let consumed = Counters::get(&self.counters.consumed);
        let cpu = after.cpu_since(&before);
        let cpu_per = if self.args.consumers > 0 {
            consumed
        } else {
            published
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
                messages: published,
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
            series,
        };
        Ok((report, end.short))
    }
}

fn seconds(start: Instant, end: Option<Instant>) -> f64 {
    end.map_or(0.0, |e| e.saturating_duration_since(start).as_secs_f64())
}

/// Runs `perf`.
pub(crate) async fn run(conn: &ConnArgs, args: PerfArgs) -> Result<(), CliError> {
    args.validate()?;
    let counters = Arc::new(Counters::new());
    // Before connecting: a CSV file that can't be made ends the run first.
    let series = Series::new(counters.clone(), args.csv.as_deref(), !args.quiet).map_err(
        CliError::io(format!(
            "creating {}",
            args.csv
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )),
    )?;
    let topology = Topology::plan(&args);
    let mut connections = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let name = format!("carehare perf #{i}");
        connections.push(if args.no_recovery {
            Link::Plain(conn.connect(&name).await?)
        } else {
            let topology = topology.clone();
            let setup = move |c: Connection| -> BoxFuture<'static, Result<(), Error>> {
                let topology = topology.clone();
                Box::pin(async move { topology.declare(&c).await })
            };
            Link::Recovering(conn.connect_recovering_with(&name, setup).await?)
        });
    }
    if let Link::Plain(c) = &connections[0] {
        topology.declare(c).await?;
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
        topology,
        counters,
        series,
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
    let target = run.drain_target();
    if refused > 0 {
        return Err(CliError::NotConfirmed(format!(
            "{refused} publishes were nacked or returned by RabbitMQ"
        )));
    }
    let consumed = Counters::get(&run.counters.consumed);
    if short && run.args.unconfirmed() {
        // Without confirms, a message lost on the way (with a lost
        // connection, or routed nowhere) is no failure of the run: nothing
        // promised it would arrive.
        eprintln!(
            "carehare: consumers got {consumed} of the {target} messages sent; without confirms, messages lost on the way are not known"
        );
        return Ok(());
    }
    if short {
        return Err(CliError::Timeout {
            what: format!("consumers stopped after {consumed} of {target} messages: no progress"),
            timeout: Duration::from_secs(10),
        });
    }
    Ok(())
}
