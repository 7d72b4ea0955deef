//! # carehare-core over a blocking `std::net::TcpStream`
//!
//! No async runtime: one thread and one socket with read and write
//! timeouts, following the core's contract to the letter (walked through in
//! `docs/embedding.md`):
//!
//! 1. connect and run the AMQP handshake;
//! 2. open a channel, declare an exclusive queue, turn on publisher confirms;
//! 3. publish `MESSAGES` messages with at most `WINDOW` unconfirmed,
//!    re-publishing any that RabbitMQ nacks;
//! 4. consume them on a second channel (`basic.qos` + `basic.consume`),
//!    acking with `multiple` every `ACK_EVERY` deliveries;
//! 5. close the channel and the connection cleanly.
//!
//! `AMQP_URL` picks the broker (default: the local test broker). Every wait
//! is bounded and ends in a typed [`Failure`]; the program then exits 1.
//!
//! Run it: `cargo run -p carehare-examples --bin embed-blocking`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carehare_client::{ConnectOptions, UrlError};
use carehare_core::error::{ChannelError, CloseReason, ConnectionError, UsageError};
use carehare_core::method::{
    BasicAck, BasicConsume, BasicPublish, BasicQos, ConfirmSelect, Method, QueueDeclare,
};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{ChannelId, OpId, ShortStr};
use carehare_core::{Connection, ContentMethod, Event, Reply, Tuning};

/// Messages to publish, then consume.
const MESSAGES: usize = 1000;
/// Unconfirmed publishes at most: bounds the core's write buffer and ours.
const WINDOW: usize = 100;
/// Unacked deliveries at most: bounds the deliveries we hold.
const PREFETCH: u16 = 50;
/// One `basic.ack` with `multiple` per this many deliveries. Must stay
/// below `PREFETCH`, or RabbitMQ would stop delivering before we ack.
const ACK_EVERY: usize = 25;
/// How often a nacked message is published before we give up.
const MAX_ATTEMPTS: u32 = 5;
/// The longest any one wait may take (a reply, a confirm, a delivery).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that makes no progress for this long fails the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the program failed. The variants keep apart whose fault it was.
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
    /// TCP connect failed.
    #[error("could not connect to {address}: {error}")]
    Connect { address: String, error: io::Error },
    /// The core refused a command: our own misuse, so a bug in this program.
    #[error("the core refused a command (a bug in this program): {0}")]
    Usage(#[from] UsageError),
    /// An operation failed because its channel ended.
    #[error("{what} failed: {error}")]
    Channel {
        what: &'static str,
        error: ChannelError,
    },
    /// RabbitMQ closed a channel (e.g. 404 NOT_FOUND); the connection lives on.
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
    /// A message was nacked `MAX_ATTEMPTS` times.
    #[error("message {index} was nacked {MAX_ATTEMPTS} times; giving up")]
    GaveUp { index: usize },
    /// A wait ran out.
    #[error("no {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// A reply of the wrong kind, or a body we did not publish.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
}

impl Failure {
    /// An operation's failure: when the whole connection ended, say that.
    fn channel(what: &'static str, error: ChannelError) -> Self {
        match error {
            ChannelError::ConnectionClosed(e) => Failure::Connection(e),
            error => Failure::Channel { what, error },
        }
    }
}

/// What the core's events said, kept until the program looks.
#[derive(Default)]
struct State {
    /// Set by `Event::Connected`.
    tuning: Option<Tuning>,
    /// Replies to commands, by the id the command returned.
    completed: HashMap<OpId, Result<Reply, ChannelError>>,
    /// Publish sequence number → message index, until confirmed.
    unconfirmed: BTreeMap<u64, usize>,
    /// Nacked message indexes, to publish again.
    nacked: VecDeque<usize>,
    /// Confirms so far, acks and nacks; lets a wait see progress.
    settled: usize,
    /// Nacks so far.
    nacks: usize,
    /// `(delivery tag, body)` not yet taken; the prefetch bounds it.
    deliveries: VecDeque<(u64, Bytes)>,
    /// Why RabbitMQ blocks our publishes (a resource alarm), if it does.
    blocked: Option<String>,
    /// Faults that end this program.
    channel_closed: Option<(ChannelId, CloseReason)>,
    cancelled: bool,
    closed: Option<ConnectionError>,
}

impl State {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected(tuning) => self.tuning = Some(tuning),
            Event::Completed { op, result, .. } => {
                self.completed.insert(op, result);
            }
            Event::Ack {
                delivery_tag,
                multiple,
                ..
            } => self.settle(delivery_tag, multiple, true),
            Event::Nack {
                delivery_tag,
                multiple,
                ..
            } => self.settle(delivery_tag, multiple, false),
            Event::Delivery { delivery, .. } => {
                if let ContentMethod::Deliver(deliver) = delivery.method {
                    self.deliveries
                        .push_back((deliver.delivery_tag, delivery.body));
                }
            }
            Event::ChannelClosed { channel, reason } => {
                self.channel_closed = Some((channel, reason));
            }
            Event::ConsumerCancelled { .. } => self.cancelled = true,
            Event::Blocked { reason } => {
                println!("RabbitMQ blocked publishing: {reason}");
                self.blocked = Some(reason);
            }
            Event::Unblocked => self.blocked = None,
            Event::ConnectionClosed(error) => self.closed = Some(error),
            // `Flow` (RabbitMQ never sends it) and events added later.
            _ => {}
        }
    }

    /// A confirm settles one publish, or with `multiple` every unconfirmed
    /// one up to `tag`.
    fn settle(&mut self, tag: u64, multiple: bool, acked: bool) {
        let settled: Vec<usize> = if multiple {
            let later = self.unconfirmed.split_off(&(tag + 1));
            std::mem::replace(&mut self.unconfirmed, later)
                .into_values()
                .collect()
        } else {
            self.unconfirmed.remove(&tag).into_iter().collect()
        };
        self.settled += settled.len();
        if !acked {
            self.nacks += settled.len();
            self.nacked.extend(settled);
        }
    }

    /// A fault that ends the program, if one happened.
    fn check(&self) -> Result<(), Failure> {
        if let Some(error) = &self.closed {
            return Err(Failure::Connection(error.clone()));
        }
        if let Some((channel, reason)) = &self.channel_closed {
            return Err(Failure::ChannelClosed {
                channel: *channel,
                reason: reason.clone(),
            });
        }
        if self.cancelled {
            return Err(Failure::ConsumerCancelled);
        }
        Ok(())
    }
}

/// The core, its socket, and what its events said.
struct Driver {
    conn: Connection,
    sock: TcpStream,
    /// Outgoing bytes, reused.
    out: Vec<u8>,
    /// Incoming bytes, reused.
    buf: Vec<u8>,
    state: State,
}

impl Driver {
    /// Connects TCP and starts the handshake (the core queues the protocol
    /// header at once).
    fn connect(options: &ConnectOptions) -> Result<Self, Failure> {
        let address = format!("{}:{}", options.host, options.port);
        let sock = tcp_connect(options).map_err(|error| Failure::Connect { address, error })?;
        let mut driver = Driver {
            conn: Connection::new(options.amqp.clone(), Instant::now()),
            sock,
            out: Vec::new(),
            buf: vec![0; 64 * 1024],
            state: State::default(),
        };
        driver.drain();
        Ok(driver)
    }

    /// The rule: after any input or command, write everything the core
    /// queued and take every event, until both are empty.
    fn drain(&mut self) {
        loop {
            self.out.clear();
            if self.conn.poll_transmit(&mut self.out) > 0
                && let Err(error) = self.sock.write_all(&self.out)
            {
                // A write that timed out may have sent part of a frame:
                // the stream cannot be used any more.
                self.conn.handle_transport_error(Instant::now(), error);
            }
            let mut any = false;
            while let Some(event) = self.conn.poll_event() {
                any = true;
                self.state.on_event(event);
            }
            if !any && !self.conn.has_transmit() {
                return;
            }
        }
    }

    /// One turn: wait for bytes until `deadline` or the core's next timer,
    /// whichever comes first, feed them in, run the timers if due, drain.
    fn step(&mut self, deadline: Instant) {
        let wake = self
            .conn
            .poll_timeout()
            .map_or(deadline, |timer| timer.min(deadline));
        // std refuses a zero timeout, so wait one millisecond at least.
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let read = self
            .sock
            .set_read_timeout(Some(wait))
            .and_then(|()| self.sock.read(&mut self.buf));
        match read {
            Ok(0) => self.conn.handle_eof(Instant::now()),
            Ok(n) => self.conn.handle_input(Instant::now(), &self.buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => self.conn.handle_transport_error(Instant::now(), e),
        }
        self.drain();
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|timer| timer <= now) {
            self.conn.handle_timeout(now);
            self.drain();
        }
    }

    /// Turns the loop until `ready` finds what it waits for in the state,
    /// a fault ends the program, or `timeout` passes.
    fn wait_for<T>(
        &mut self,
        what: &'static str,
        timeout: Duration,
        mut ready: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = ready(&mut self.state) {
                return Ok(found);
            }
            self.state.check()?;
            if Instant::now() >= deadline {
                return Err(Failure::Timeout {
                    what,
                    after: timeout,
                });
            }
            self.step(deadline);
        }
    }

    /// Waits for the reply to the command that returned `op`.
    fn wait_op(&mut self, what: &'static str, op: OpId) -> Result<Reply, Failure> {
        self.wait_for(what, STEP_TIMEOUT, |s| s.completed.remove(&op))?
            .map_err(|error| Failure::channel(what, error))
    }

    /// Closes the connection and waits for `close-ok` (the core's
    /// `close_timeout` bounds that too).
    fn close(&mut self) -> Result<(), Failure> {
        self.conn.close(Instant::now(), 200, "done")?;
        self.drain();
        let deadline = Instant::now() + STEP_TIMEOUT;
        while self.state.closed.is_none() {
            if Instant::now() >= deadline {
                return Err(Failure::Timeout {
                    what: "close-ok",
                    after: STEP_TIMEOUT,
                });
            }
            self.step(deadline);
        }
        match self.state.closed.take() {
            Some(ConnectionError::ClosedByClient) => Ok(()),
            Some(other) => Err(Failure::Connection(other)),
            None => Err(Failure::Unexpected("end of the close")),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    // A read timeout is `WouldBlock` on Unix and `TimedOut` on Windows.
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// TCP connect with the options' timeout, trying each resolved address.
fn tcp_connect(options: &ConnectOptions) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolved to nothing");
    for address in (options.host.as_str(), options.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, options.connection_timeout) {
            Ok(sock) => {
                sock.set_nodelay(true)?;
                sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
                return Ok(sock);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn message_index(body: &[u8]) -> Option<usize> {
    std::str::from_utf8(body)
        .ok()?
        .strip_prefix("message ")?
        .parse()
        .ok()
        .filter(|&i| i < MESSAGES)
}

/// Publishes every message with confirms, `WINDOW` unconfirmed at most.
fn publish_all(driver: &mut Driver, channel: ChannelId, queue: &ShortStr) -> Result<(), Failure> {
    let publish = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let properties = BasicProperties::default();
    let mut attempts = vec![0u32; MESSAGES];
    let mut next = 0;
    loop {
        // Nacked messages go again first; nothing goes while blocked.
        while driver.state.unconfirmed.len() < WINDOW && driver.state.blocked.is_none() {
            let index = match driver.state.nacked.pop_front() {
                Some(index) => index,
                None if next < MESSAGES => {
                    next += 1;
                    next - 1
                }
                None => break,
            };
            attempts[index] += 1;
            if attempts[index] > MAX_ATTEMPTS {
                return Err(Failure::GaveUp { index });
            }
            let body = format!("message {index}");
            let seq = driver
                .conn
                .publish(channel, &publish, &properties, body.as_bytes())?
                .ok_or(Failure::Unexpected("publish without confirms"))?;
            driver.state.unconfirmed.insert(seq, index);
        }
        driver.drain();
        let state = &driver.state;
        if next == MESSAGES && state.unconfirmed.is_empty() && state.nacked.is_empty() {
            return Ok(());
        }
        // Wait for a confirm, or for the end of a block.
        let settled = state.settled;
        let was_blocked = state.blocked.is_some();
        driver.wait_for("publisher confirm", STEP_TIMEOUT, |s| {
            (s.settled > settled || (was_blocked && s.blocked.is_none())).then_some(())
        })?;
    }
}

/// Consumes every message, acking with `multiple`; returns how many acks
/// went out and how many duplicates came in.
fn consume_all(driver: &mut Driver, queue: &ShortStr) -> Result<(usize, usize), Failure> {
    // Pipelined: open, qos and consume go out in one write.
    let (channel, open) = driver.conn.open_channel()?;
    let qos = BasicQos {
        prefetch_count: PREFETCH,
        ..Default::default()
    };
    let qos = driver.conn.call(channel, qos.into())?;
    let consume = BasicConsume {
        queue: queue.clone(),
        ..Default::default()
    };
    let consume = driver.conn.call(channel, consume.into())?;
    driver.drain();
    driver.wait_op("channel.open", open)?;
    driver.wait_op("basic.qos", qos)?;
    driver.wait_op("basic.consume", consume)?;

    let mut seen = vec![false; MESSAGES];
    let (mut received, mut duplicates, mut unacked, mut acks) = (0, 0, 0, 0);
    while received < MESSAGES {
        let (tag, body) =
            driver.wait_for("delivery", STEP_TIMEOUT, |s| s.deliveries.pop_front())?;
        let index = message_index(&body).ok_or(Failure::Unexpected("message body"))?;
        // At-least-once means a message may come twice: count it once.
        if std::mem::replace(&mut seen[index], true) {
            duplicates += 1;
        } else {
            received += 1;
        }
        unacked += 1;
        if unacked == ACK_EVERY || received == MESSAGES {
            let ack = BasicAck {
                delivery_tag: tag,
                multiple: true,
            };
            driver.conn.send(channel, ack.into())?;
            driver.drain();
            unacked = 0;
            acks += 1;
        }
    }
    let close = driver.conn.close_channel(channel)?;
    driver.drain();
    driver.wait_op("channel.close", close)?;
    Ok((acks, duplicates))
}

fn run(url: &str) -> Result<(), Failure> {
    let options = ConnectOptions::from_url(url)?;
    if options.tls.is_some() {
        return Err(Failure::TlsNotSupported);
    }
    let started = Instant::now();
    let mut driver = Driver::connect(&options)?;
    let tuning = driver.wait_for("handshake", options.connection_timeout, |s| s.tuning)?;
    println!(
        "connected to {}:{} in {:.1} ms: channel_max={} frame_max={} heartbeat={}s",
        options.host,
        options.port,
        started.elapsed().as_secs_f64() * 1e3,
        tuning.channel_max,
        tuning.frame_max,
        tuning.heartbeat
    );

    // Commands only queue work: open, declare and select go out in one
    // write, before channel.open-ok comes back.
    let (channel, open) = driver.conn.open_channel()?;
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let declare = driver.conn.call(channel, declare.into())?;
    let select = driver.conn.call(channel, ConfirmSelect::default().into())?;
    driver.drain();
    driver.wait_op("channel.open", open)?;
    let queue = match driver.wait_op("queue.declare", declare)? {
        Reply::Method(Method::QueueDeclareOk(ok)) => ok.queue,
        _ => return Err(Failure::Unexpected("reply to queue.declare")),
    };
    driver.wait_op("confirm.select", select)?;

    let t = Instant::now();
    publish_all(&mut driver, channel, &queue)?;
    println!(
        "published {MESSAGES} messages to {queue} with confirms in {:.1} ms ({} nacked and re-published)",
        t.elapsed().as_secs_f64() * 1e3,
        driver.state.nacks
    );

    let t = Instant::now();
    let (acks, duplicates) = consume_all(&mut driver, &queue)?;
    println!(
        "consumed {MESSAGES} messages in {:.1} ms, acked with {acks} multiple acks ({duplicates} duplicates)",
        t.elapsed().as_secs_f64() * 1e3
    );

    driver.close()?;
    println!("closed cleanly");
    Ok(())
}

fn main() -> ExitCode {
    match run(&carehare_examples::url()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("embed-blocking: {failure}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_unconfirmed(seqs: &[(u64, usize)]) -> State {
        State {
            unconfirmed: seqs.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_multiple_ack_settles_every_publish_up_to_its_tag() {
        let mut state = with_unconfirmed(&[(1, 10), (2, 11), (3, 12), (4, 13)]);
        state.on_event(Event::Ack {
            channel: 1,
            delivery_tag: 3,
            multiple: true,
        });
        assert_eq!(state.unconfirmed.keys().copied().collect::<Vec<_>>(), [4]);
        assert_eq!((state.settled, state.nacks), (3, 0));
        assert!(state.nacked.is_empty());
    }

    #[test]
    fn nacked_publishes_are_queued_to_publish_again() {
        let mut state = with_unconfirmed(&[(1, 10), (2, 11), (3, 12), (4, 13)]);
        state.on_event(Event::Nack {
            channel: 1,
            delivery_tag: 2,
            multiple: false,
        });
        state.on_event(Event::Nack {
            channel: 1,
            delivery_tag: 4,
            multiple: true,
        });
        assert!(state.unconfirmed.is_empty());
        assert_eq!(state.nacked, [11, 10, 12, 13]);
        assert_eq!((state.settled, state.nacks), (4, 4));
    }

    #[test]
    fn a_confirm_for_an_unknown_tag_settles_nothing() {
        let mut state = with_unconfirmed(&[(5, 0)]);
        state.on_event(Event::Ack {
            channel: 1,
            delivery_tag: 4,
            multiple: false,
        });
        assert_eq!(state.settled, 0);
        assert_eq!(state.unconfirmed.len(), 1);
    }

    #[test]
    fn only_bodies_this_program_published_are_accepted() {
        assert_eq!(message_index(b"message 7"), Some(7));
        assert_eq!(message_index(b"message 1000"), None);
        assert_eq!(message_index(b"hello"), None);
        assert_eq!(message_index(&[0xff, 0xfe]), None);
    }
}
