//! # carehare-core in a mio event loop: many connections, one thread
//!
//! `CONNECTIONS` connections share one `mio::Poll`. Each one, as a state
//! machine driven by the core's events (walked through in
//! `docs/embedding.md`):
//!
//! 1. runs the handshake, then pipelines its setup: a publish channel, an
//!    exclusive queue limited to `QUEUE_MAX` ready messages with
//!    `x-overflow=reject-publish`, `confirm.select`, a consume channel and
//!    `basic.qos`;
//! 2. publishes a first burst of `WINDOW` messages before anyone consumes:
//!    the queue takes `QUEUE_MAX` and RabbitMQ nacks the rest;
//! 3. starts consuming and publishes the remaining messages with
//!    `WINDOW` unconfirmed at most, re-publishing nacked ones after
//!    `RETRY_DELAY` (an application timer, next to the core's), and acks
//!    deliveries with `multiple`;
//! 4. idles for `IDLE` with a 1-second heartbeat, so only heartbeats
//!    (the core's timers, through `poll_timeout`) keep it alive, then proves
//!    it still works with a passive `queue.declare`;
//! 5. closes cleanly.
//!
//! `AMQP_URL` picks the broker (default: the local test broker). Every wait
//! is bounded by `DEADLINE`; any failure is typed and makes the program
//! exit 1.
//!
//! Run it: `cargo run -p carehare-examples --bin embed-mio`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use carehare_client::{ConnectOptions, UrlError};
use carehare_core::error::{ChannelError, CloseReason, ConnectionError, UsageError};
use carehare_core::method::{
    BasicAck, BasicConsume, BasicPublish, BasicQos, ConfirmSelect, QueueDeclare,
};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{AMQPValue, ChannelId, FieldTable, OpId, ShortStr};
use carehare_core::{Connection, ContentMethod, Event};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Connections driven by the one thread.
const CONNECTIONS: usize = 8;
/// Messages each connection publishes and consumes.
const MESSAGES: usize = 500;
/// Unconfirmed publishes per connection at most.
const WINDOW: usize = 64;
/// The queue's `x-max-length`: with the first burst of `WINDOW`, RabbitMQ
/// nacks `WINDOW - QUEUE_MAX` publishes for sure.
const QUEUE_MAX: i32 = 16;
/// Unacked deliveries per consumer at most.
const PREFETCH: u16 = 20;
/// One `basic.ack` with `multiple` per this many deliveries (< `PREFETCH`).
const ACK_EVERY: usize = 10;
/// How long a nacked message waits before it is published again.
const RETRY_DELAY: Duration = Duration::from_millis(20);
/// Our heartbeat proposal, in seconds (RabbitMQ takes the smaller one).
const HEARTBEAT: u16 = 1;
/// Idle time with nothing but heartbeats: more than two heartbeat
/// intervals, after which a silent peer counts as dead.
const IDLE: Duration = Duration::from_secs(3);
/// Everything must be over by then.
const DEADLINE: Duration = Duration::from_secs(60);

/// Why a connection failed. The variants keep apart whose fault it was.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// `AMQP_URL` does not parse.
    #[error("AMQP_URL: {0}")]
    Url(#[from] UrlError),
    /// This example has no TLS layer.
    #[error(
        "this example speaks plain TCP: use an amqp:// URL (docs/embedding.md says how to add TLS)"
    )]
    TlsNotSupported,
    /// TCP connect failed, or the poller could not be set up.
    #[error("could not connect to {address}: {error}")]
    Connect { address: String, error: io::Error },
    /// The poller failed.
    #[error("poll: {0}")]
    Poll(io::Error),
    /// The core refused a command: our own misuse, so a bug in this program.
    #[error("the core refused a command (a bug in this program): {0}")]
    Usage(#[from] UsageError),
    /// An operation failed because its channel ended.
    #[error("an operation failed: {0}")]
    Channel(ChannelError),
    /// RabbitMQ closed a channel (e.g. 406 PRECONDITION_FAILED).
    #[error("RabbitMQ closed channel {channel}: {reason}")]
    ChannelClosed {
        channel: ChannelId,
        reason: CloseReason,
    },
    /// The connection ended: the server closed it, broke the protocol, went
    /// silent (heartbeats), or the socket failed.
    #[error("the connection ended: {0}")]
    Connection(ConnectionError),
    /// RabbitMQ cancelled our consumer (its queue was deleted).
    #[error("RabbitMQ cancelled the consumer (was the queue deleted?)")]
    ConsumerCancelled,
    /// `DEADLINE` passed.
    #[error("not done within {0:?}")]
    Timeout(Duration),
    /// A body we did not publish.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
}

/// Where a connection is in its script.
#[derive(Debug)]
enum Phase {
    /// Waiting for `Event::Connected`.
    Handshake,
    /// Waiting for the replies to the pipelined setup.
    Setup(Vec<OpId>),
    /// The first burst is out, no consumer yet; waiting for its confirms.
    Burst,
    /// Consuming, publishing the rest and re-publishing nacked messages.
    Running,
    /// Done with messages; only heartbeats flow until then.
    Idle(Instant),
    /// A passive `queue.declare` after the idle time.
    Probe(OpId),
    /// `connection.close` sent; the failure to report, if any.
    Closing(Option<Failure>),
    /// Over.
    Done(Result<(), Failure>),
}

/// One connection: the core, its socket, and the script's progress.
struct Client {
    id: usize,
    conn: Connection,
    sock: TcpStream,
    /// Whether `sock` is registered with the poller.
    registered: bool,
    /// Bytes taken from the core that the socket has not taken yet.
    out: Vec<u8>,
    written: usize,
    phase: Phase,
    queue: ShortStr,
    publish_channel: ChannelId,
    consume_channel: ChannelId,
    /// Next message index never published yet.
    next: usize,
    /// Publish sequence number → message index, until confirmed.
    unconfirmed: BTreeMap<u64, usize>,
    /// Nacked message indexes, published again from `retry_at` on.
    nacked: VecDeque<usize>,
    retry_at: Option<Instant>,
    nacks: usize,
    blocked: bool,
    seen: Vec<bool>,
    received: usize,
    duplicates: usize,
    unacked: usize,
    acks: usize,
    /// How often the core's timer was due (heartbeats sent or checked).
    timer_runs: usize,
    heartbeat: u16,
}

impl Client {
    fn new(id: usize, options: &ConnectOptions, now: Instant) -> Result<Self, Failure> {
        let address = format!("{}:{}", options.host, options.port);
        let sock = tcp_connect(options).map_err(|error| Failure::Connect { address, error })?;
        let queue = format!("carehare-embed-mio-{}-{id}", std::process::id());
        Ok(Client {
            id,
            conn: Connection::new(options.amqp.clone(), now),
            sock,
            registered: false,
            out: Vec::new(),
            written: 0,
            phase: Phase::Handshake,
            queue: ShortStr::new(queue).map_err(|_| Failure::Unexpected("queue name"))?,
            publish_channel: 0,
            consume_channel: 0,
            next: 0,
            unconfirmed: BTreeMap::new(),
            nacked: VecDeque::new(),
            retry_at: None,
            nacks: 0,
            blocked: false,
            seen: vec![false; MESSAGES],
            received: 0,
            duplicates: 0,
            unacked: 0,
            acks: 0,
            timer_runs: 0,
            heartbeat: 0,
        })
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    /// When this connection next needs the loop without a socket event:
    /// the core's timer, or one of the script's own.
    fn next_wakeup(&self) -> Option<Instant> {
        let mine = match self.phase {
            Phase::Idle(until) => Some(until),
            Phase::Running if !self.nacked.is_empty() => self.retry_at,
            _ => None,
        };
        match (self.conn.poll_timeout(), mine) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads until the socket has nothing more (mio is edge-triggered),
    /// feeding the core and turning after each read.
    fn on_readable(&mut self, buf: &mut [u8]) {
        while !self.conn.is_closed() {
            match self.sock.read(buf) {
                Ok(0) => self.conn.handle_eof(Instant::now()),
                Ok(n) => self.conn.handle_input(Instant::now(), &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => self.conn.handle_transport_error(Instant::now(), e),
            }
            self.turn(Instant::now());
        }
    }

    /// Runs the core's timers if they are due, then turns.
    fn on_tick(&mut self, now: Instant) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            self.timer_runs += 1;
        }
        self.turn(now);
    }

    /// The rule: take every event (reacting to each, which may queue
    /// commands), let the script queue what it may, and write everything
    /// queued, until nothing more happens.
    fn turn(&mut self, now: Instant) {
        loop {
            let mut progress = false;
            while let Some(event) = self.conn.poll_event() {
                progress = true;
                if let Err(failure) = self.on_event(now, event) {
                    self.fail(now, failure);
                }
            }
            if let Err(failure) = self.advance(now) {
                self.fail(now, failure);
            }
            if self.conn.poll_transmit(&mut self.out) > 0 {
                progress = true;
                self.flush();
            }
            if !progress {
                return;
            }
        }
    }

    /// Writes what the socket takes; the rest waits for a writable event.
    fn flush(&mut self) {
        while self.written < self.out.len() {
            match self.sock.write(&self.out[self.written..]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    self.conn.handle_transport_error(Instant::now(), e);
                    break;
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.conn.handle_transport_error(Instant::now(), e);
                    break;
                }
            }
        }
        self.out.clear();
        self.written = 0;
    }

    /// Ends the script: closes the connection if it is still open.
    fn fail(&mut self, now: Instant, failure: Failure) {
        if matches!(self.phase, Phase::Closing(_) | Phase::Done(_)) {
            return;
        }
        self.phase = if self.conn.close(now, 200, "giving up").is_ok() {
            Phase::Closing(Some(failure))
        } else {
            Phase::Done(Err(failure))
        };
    }

    fn on_event(&mut self, now: Instant, event: Event) -> Result<(), Failure> {
        match event {
            Event::Connected(tuning) => {
                self.heartbeat = tuning.heartbeat;
                self.setup()?;
            }
            Event::Completed { op, result, .. } => {
                result.map_err(|e| match e {
                    ChannelError::ConnectionClosed(e) => Failure::Connection(e),
                    e => Failure::Channel(e),
                })?;
                self.on_completed(now, op)?;
            }
            Event::Ack {
                delivery_tag,
                multiple,
                ..
            } => self.settle(now, delivery_tag, multiple, true),
            Event::Nack {
                delivery_tag,
                multiple,
                ..
            } => self.settle(now, delivery_tag, multiple, false),
            Event::Delivery { delivery, .. } => {
                if let ContentMethod::Deliver(deliver) = delivery.method {
                    self.on_delivery(deliver.delivery_tag, &delivery.body)?;
                }
            }
            Event::ChannelClosed { channel, reason } => {
                return Err(Failure::ChannelClosed { channel, reason });
            }
            Event::ConsumerCancelled { .. } => return Err(Failure::ConsumerCancelled),
            Event::Blocked { reason } => {
                println!(
                    "connection {}: RabbitMQ blocked publishing: {reason}",
                    self.id
                );
                self.blocked = true;
            }
            Event::Unblocked => self.blocked = false,
            Event::ConnectionClosed(error) => {
                let phase = std::mem::replace(&mut self.phase, Phase::Handshake);
                self.phase = Phase::Done(match (phase, error) {
                    (Phase::Closing(Some(failure)), _) => Err(failure),
                    (Phase::Closing(None), ConnectionError::ClosedByClient) => Ok(()),
                    (_, error) => Err(Failure::Connection(error)),
                });
            }
            // `Flow` (RabbitMQ never sends it) and events added later.
            _ => {}
        }
        Ok(())
    }

    /// Pipelines the whole setup: it goes out in one write.
    fn setup(&mut self) -> Result<(), Failure> {
        let (publish_channel, open_publish) = self.conn.open_channel()?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongInt(QUEUE_MAX));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        let declare = QueueDeclare {
            queue: self.queue.clone(),
            exclusive: true,
            arguments,
            ..Default::default()
        };
        let declare = self.conn.call(publish_channel, declare.into())?;
        let select = self
            .conn
            .call(publish_channel, ConfirmSelect::default().into())?;
        let (consume_channel, open_consume) = self.conn.open_channel()?;
        let qos = BasicQos {
            prefetch_count: PREFETCH,
            ..Default::default()
        };
        let qos = self.conn.call(consume_channel, qos.into())?;
        self.publish_channel = publish_channel;
        self.consume_channel = consume_channel;
        self.phase = Phase::Setup(vec![open_publish, declare, select, open_consume, qos]);
        Ok(())
    }

    fn on_completed(&mut self, now: Instant, op: OpId) -> Result<(), Failure> {
        match &mut self.phase {
            Phase::Setup(ops) => {
                ops.retain(|&o| o != op);
                if ops.is_empty() {
                    // The queue holds QUEUE_MAX: the rest of this burst is nacked.
                    while self.next < WINDOW.min(MESSAGES) {
                        self.publish_next(self.next)?;
                        self.next += 1;
                    }
                    self.phase = Phase::Burst;
                }
            }
            Phase::Probe(probe) if *probe == op => {
                self.conn.close(now, 200, "done")?;
                self.phase = Phase::Closing(None);
            }
            // basic.consume-ok: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn publish_next(&mut self, index: usize) -> Result<(), Failure> {
        let publish = BasicPublish {
            routing_key: self.queue.clone(),
            ..Default::default()
        };
        let body = format!("message {index}");
        let seq = self
            .conn
            .publish(
                self.publish_channel,
                &publish,
                &BasicProperties::default(),
                body.as_bytes(),
            )?
            .ok_or(Failure::Unexpected("publish without confirms"))?;
        self.unconfirmed.insert(seq, index);
        Ok(())
    }

    fn settle(&mut self, now: Instant, tag: u64, multiple: bool, acked: bool) {
        let settled: Vec<usize> = if multiple {
            let later = self.unconfirmed.split_off(&(tag + 1));
            std::mem::replace(&mut self.unconfirmed, later)
                .into_values()
                .collect()
        } else {
            self.unconfirmed.remove(&tag).into_iter().collect()
        };
        if !acked && !settled.is_empty() {
            self.nacks += settled.len();
            self.nacked.extend(settled);
            self.retry_at.get_or_insert(now + RETRY_DELAY);
        }
    }

    fn on_delivery(&mut self, tag: u64, body: &[u8]) -> Result<(), Failure> {
        let index = std::str::from_utf8(body)
            .ok()
            .and_then(|b| b.strip_prefix("message "))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|&i| i < MESSAGES)
            .ok_or(Failure::Unexpected("message body"))?;
        // At-least-once means a message may come twice: count it once.
        if std::mem::replace(&mut self.seen[index], true) {
            self.duplicates += 1;
        } else {
            self.received += 1;
        }
        self.unacked += 1;
        if self.unacked == ACK_EVERY || self.received == MESSAGES {
            let ack = BasicAck {
                delivery_tag: tag,
                multiple: true,
            };
            self.conn.send(self.consume_channel, ack.into())?;
            self.unacked = 0;
            self.acks += 1;
        }
        Ok(())
    }

    /// Queues whatever the script may do now.
    fn advance(&mut self, now: Instant) -> Result<(), Failure> {
        match self.phase {
            Phase::Burst if self.unconfirmed.is_empty() => {
                let consume = BasicConsume {
                    queue: self.queue.clone(),
                    ..Default::default()
                };
                self.conn.call(self.consume_channel, consume.into())?;
                self.phase = Phase::Running;
                self.advance(now)?;
            }
            Phase::Running => {
                let retry_due = self.retry_at.is_some_and(|t| t <= now);
                while self.unconfirmed.len() < WINDOW && !self.blocked {
                    let index = if retry_due && let Some(index) = self.nacked.pop_front() {
                        index
                    } else if self.next < MESSAGES {
                        self.next += 1;
                        self.next - 1
                    } else {
                        break;
                    };
                    self.publish_next(index)?;
                }
                if retry_due {
                    self.retry_at = (!self.nacked.is_empty()).then_some(now + RETRY_DELAY);
                }
                let all_published =
                    self.next == MESSAGES && self.nacked.is_empty() && self.unconfirmed.is_empty();
                if all_published && self.received == MESSAGES {
                    self.phase = Phase::Idle(now + IDLE);
                }
            }
            Phase::Idle(until) if until <= now => {
                // Still alive after the idle time? A passive declare says.
                let probe = QueueDeclare {
                    queue: self.queue.clone(),
                    passive: true,
                    ..Default::default()
                };
                let op = self.conn.call(self.publish_channel, probe.into())?;
                self.phase = Phase::Probe(op);
            }
            _ => {}
        }
        Ok(())
    }
}

/// TCP connect with the options' timeout; mio takes the socket over.
fn tcp_connect(options: &ConnectOptions) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolved to nothing");
    for address in (options.host.as_str(), options.port).to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&address, options.connection_timeout) {
            Ok(sock) => {
                sock.set_nodelay(true)?;
                sock.set_nonblocking(true)?;
                return Ok(TcpStream::from_std(sock));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn run(url: &str) -> Result<Vec<Client>, Failure> {
    let mut options = ConnectOptions::from_url(url)?;
    if options.tls.is_some() {
        return Err(Failure::TlsNotSupported);
    }
    // Short, so the idle phase lives on heartbeats alone.
    options.amqp.heartbeat = HEARTBEAT;

    let mut poll = Poll::new().map_err(Failure::Poll)?;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for id in 0..CONNECTIONS {
        let mut client = Client::new(id, &options, started)?;
        poll.registry()
            .register(
                &mut client.sock,
                Token(id),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(Failure::Poll)?;
        client.registered = true;
        // The protocol header, queued by `Connection::new`.
        client.turn(Instant::now());
        clients.push(client);
    }

    let deadline = started + DEADLINE;
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 64 * 1024];
    let mut loops = 0usize;
    while !clients.iter().all(Client::is_done) {
        let now = Instant::now();
        if now >= deadline {
            for client in clients.iter_mut().filter(|c| !c.is_done()) {
                client.phase = Phase::Done(Err(Failure::Timeout(DEADLINE)));
            }
            break;
        }
        // Sleep until a socket is ready or the earliest timer of any
        // connection (the core's or the script's) is due.
        let wake = clients
            .iter()
            .filter_map(Client::next_wakeup)
            .min()
            .map_or(deadline, |t| t.min(deadline));
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Poll(e)),
        }
        loops += 1;
        for event in &events {
            let Some(client) = clients.get_mut(event.token().0) else {
                continue;
            };
            if event.is_writable() {
                client.flush();
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                client.on_readable(&mut buf);
            }
        }
        let now = Instant::now();
        for client in &mut clients {
            if !client.is_done() {
                client.on_tick(now);
            }
            if client.is_done() && client.registered {
                // The socket closes when the client is dropped; until then
                // it must not wake the loop.
                client.registered = false;
                poll.registry()
                    .deregister(&mut client.sock)
                    .map_err(Failure::Poll)?;
            }
        }
    }
    println!(
        "{CONNECTIONS} connections on one thread, {loops} loop turns, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(clients)
}

fn main() -> ExitCode {
    let clients = match run(&carehare_examples::url()) {
        Ok(clients) => clients,
        Err(failure) => {
            eprintln!("embed-mio: {failure}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    let (mut published, mut consumed, mut nacks) = (0, 0, 0);
    for client in &clients {
        match &client.phase {
            Phase::Done(Ok(())) => {
                published += client.next;
                consumed += client.received;
                nacks += client.nacks;
                println!(
                    "connection {}: published {} with confirms ({} nacked by the full queue and re-published), \
                     consumed {} ({} duplicates) with {} multiple acks, idled {:?} on a {}s heartbeat \
                     ({} timer runs), closed cleanly",
                    client.id,
                    client.next,
                    client.nacks,
                    client.received,
                    client.duplicates,
                    client.acks,
                    IDLE,
                    client.heartbeat,
                    client.timer_runs
                );
            }
            Phase::Done(Err(failure)) => {
                failed += 1;
                eprintln!("connection {}: {failure}", client.id);
            }
            other => {
                failed += 1;
                eprintln!("connection {}: stopped in {other:?}", client.id);
            }
        }
    }
    println!(
        "total: connections={CONNECTIONS} ok={} published={published} consumed={consumed} nacked={nacks}",
        CONNECTIONS - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
