//! What the driver and every handle share: the core connection and the
//! client state around it. One short lock per operation; no task hop.
//!
//! Each piece owns its data behind private fields and states its
//! invariants at its top:
//! - [`confirms`]: confirm-mode publish channels, publishes awaiting their
//!   confirm, held publishes;
//! - [`unconfirmed`]: the one channel that publishes without confirms;
//! - [`backlog`]: the bytes queued for the socket, and who waits for them
//!   to drain;
//! - [`consumers`]: consumer mailboxes;
//! - [`rpc`]: direct reply-to routes;
//! - [`blocking`]: `connection.blocked` as watchers see it;
//! - [`ops`]: waiters for pending operations;
//! - [`lifecycle`]: the handshake's waiter and the connection's end.
//!
//! [`Inner`] is the only place that sees them together. Its methods are
//! what handles and the driver call; [`Inner::route`] hands each core event
//! to the piece it concerns. Nothing here reads a clock: times come in as
//! arguments, from the runtime.

mod backlog;
mod blocking;
mod channels;
mod confirms;
mod consumers;
mod lifecycle;
mod ops;
mod rpc;
mod unconfirmed;
mod window;

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use carehare_core::error::{ConnectionError, ProtocolViolation};
use carehare_core::method::{BasicPublish, Method};
use carehare_core::properties::BasicProperties;
use carehare_core::types::{AMQPValue, ChannelId, FieldTable, ShortStr};
use carehare_core::{Connection, ContentMethod, Delivery, Event, Reply};
use futures_util::task::AtomicWaker;
use tracing::{debug, warn};

use crate::error::Error;
use crate::message::Message;
use crate::metrics::{Counter, Meter};
use crate::outcome::OutcomeReceiver;

#[cfg(test)]
pub(crate) use backlog::HIGH_WATER;
pub(crate) use blocking::Watch;
pub(crate) use consumers::Token;
pub(crate) use lifecycle::ConnectedReceiver;
pub(crate) use ops::OpReceiver;
pub(crate) use rpc::ReplyReceiver;
pub(crate) use window::{Permit, Window};

use backlog::Backlog;
use blocking::Blocking;
use confirms::{Confirms, Outgoing};
use consumers::Consumers;
use lifecycle::Lifecycle;
use ops::Ops;
use rpc::RpcRoutes;
use unconfirmed::Unconfirmed;

/// What a connection still has waiting or open. Once the connection has
/// ended (its `closed()` returned), every count is 0.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Operations waiting for a reply.
    pub op_waiters: usize,
    /// Short-lived channels (a declare's) still to be closed.
    pub temporary_channels: usize,
    /// Publishes awaiting their confirm, or held while blocked.
    pub unsettled_publishes: usize,
    /// RPC replies awaited.
    pub reply_waiters: usize,
    /// Consumer mailboxes that have not ended.
    pub open_mailboxes: usize,
    /// Channels the core still counts as open.
    pub core_channels: usize,
}

/// The shared state behind one connection.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the driver when a command queued bytes to send.
    driver: AtomicWaker,
    /// The connection's log span (`amqp_connection`), parent of its
    /// channels' spans.
    span: tracing::Span,
}

impl Shared {
    /// State around `conn`, counting into `meter` and logging under
    /// `span`, and the receiver of its handshake's outcome.
    pub(crate) fn new(
        conn: Connection,
        meter: Meter,
        span: tracing::Span,
    ) -> (Arc<Self>, ConnectedReceiver) {
        let (lifecycle, connected) = Lifecycle::new();
        let shared = Arc::new(Self {
            inner: Mutex::new(Inner {
                conn,
                ops: Ops::default(),
                confirms: Confirms::default(),
                unconfirmed: Unconfirmed::default(),
                backlog: Backlog::default(),
                consumers: Consumers::new(meter.is_on()),
                rpc: RpcRoutes::default(),
                blocking: Blocking::default(),
                lifecycle,
                meter,
            }),
            driver: AtomicWaker::new(),
            span,
        });
        (shared, connected)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for
        // failing everything; don't cascade the panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection's log span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }

    /// The driver's task, woken by [`wake_driver`](Self::wake_driver).
    pub(crate) fn register_driver(&self, waker: &Waker) {
        self.driver.register(waker);
    }
}

pub(crate) struct Inner {
    conn: Connection,
    ops: Ops,
    confirms: Confirms,
    unconfirmed: Unconfirmed,
    backlog: Backlog,
    consumers: Consumers,
    rpc: RpcRoutes,
    blocking: Blocking,
    lifecycle: Lifecycle,
    meter: Meter,
}

/// Driver side: bytes, timers and the end.
impl Inner {
    /// Feeds bytes read from the socket, then routes what they caused.
    pub(crate) fn input(&mut self, now: Instant, data: BytesMut) {
        self.meter.add(Counter::BytesReceived, data.len() as u64);
        self.meter.add(Counter::Reads, 1);
        self.conn.handle_input_bytes(now, data);
        self.route_events(now);
    }

    /// The socket reached EOF.
    pub(crate) fn eof(&mut self, now: Instant) {
        self.conn.handle_eof(now);
        self.route_events(now);
    }

    /// The socket failed.
    pub(crate) fn transport_error(&mut self, now: Instant, error: std::io::Error) {
        self.conn.handle_transport_error(now, error);
        self.route_events(now);
    }

    /// The core's timer fired.
    pub(crate) fn timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.route_events(now);
    }

    /// When the core's timer wants to fire next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// How many bytes of input are worth a wakeup (the core's
    /// `read_low_water`).
    pub(crate) fn read_low_water(&self) -> usize {
        self.conn.read_low_water()
    }

    /// Takes everything queued for the socket into `out`; returns how
    /// many bytes. `out` is what the driver holds unwritten from then on.
    pub(crate) fn poll_transmit(&mut self, out: &mut std::collections::VecDeque<Bytes>) -> usize {
        let n = self.conn.poll_transmit_chunks(out);
        self.meter.add(Counter::BytesSent, n as u64);
        self.backlog
            .driver_holds(out.iter().map(Bytes::len).sum(), self.conn.transmit_len());
        n
    }

    /// The driver wrote part of what it took and holds `unwritten` bytes
    /// still: publishers waiting for the backlog to drain may go on.
    pub(crate) fn unwritten(&mut self, unwritten: usize) {
        self.backlog
            .driver_holds(unwritten, self.conn.transmit_len());
    }

    /// Moves a partial frame into a fresh read block (see the core).
    pub(crate) fn relocate_input(&mut self, into: &mut BytesMut) {
        self.conn.relocate_input(into);
    }

    /// Whether the core is done (everything it queued is written).
    pub(crate) fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// The driver stopped without the connection having ended (its task
    /// was dropped): nothing will ever be sent or received again, so every
    /// waiter is told, with that cause.
    pub(crate) fn driver_stopped(&mut self) {
        if self.lifecycle.outcome().is_none() {
            warn!("the connection's driver stopped before the connection ended");
            self.on_closed(ConnectionError::DriverStopped);
        }
    }

    fn route_events(&mut self, now: Instant) {
        while let Some(event) = self.conn.poll_event() {
            self.route(now, event);
        }
        // Once a close is under way the core reads nothing but its
        // close-ok: no confirm, delivery or reply can come any more, so
        // waiters learn why now rather than when the close-ok comes (which
        // a server may hold back until `close_timeout`).
        if let Some(reason) = self.conn.closing_reason() {
            let why = Error::ConnectionClosed(reason.clone());
            self.fail_waiters(&why);
        }
    }

    /// Hands one core event to the piece it concerns.
    fn route(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected(tuning) => self.lifecycle.connected(tuning),
            Event::Completed {
                op,
                channel,
                result,
            } => {
                if let Ok(Reply::Message(_)) = &result {
                    self.meter.add(Counter::Delivered, 1);
                }
                self.ops
                    .complete(&mut self.conn, op, channel, result.map_err(Error::from))
            }
            Event::Delivery { channel, delivery } => self.delivered(now, channel, delivery),
            Event::Ack {
                channel,
                delivery_tag,
                multiple,
            } => self.confirms.settle(
                &mut self.conn,
                channel,
                delivery_tag,
                multiple,
                true,
                &self.meter,
            ),
            Event::Nack {
                channel,
                delivery_tag,
                multiple,
            } => self.confirms.settle(
                &mut self.conn,
                channel,
                delivery_tag,
                multiple,
                false,
                &self.meter,
            ),
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                self.consumers.span_of(channel).in_scope(|| {
                    warn!(channel, %consumer_tag, "RabbitMQ cancelled a consumer");
                });
                self.consumers
                    .detach(channel, Error::ConsumerCancelledByServer);
                // We close the channel; its id is freed at close-ok.
                let _ = self.conn.close_channel(channel);
            }
            Event::ChannelClosed { channel, reason } => {
                let why = Error::ChannelClosedByServer(reason);
                self.confirms.channel_closed(channel, &why);
                self.unconfirmed.channel_closed(channel, &why);
                self.rpc.close(channel, &why);
                self.consumers.detach(channel, why);
            }
            Event::ConnectionClosed(error) => {
                let blocked = self.blocking.take_blocked_time(now);
                self.meter
                    .add(Counter::BlockedMicros, blocked.as_micros() as u64);
                self.on_closed(error)
            }
            Event::Blocked { reason } => {
                self.blocking.block(now, reason);
                self.confirms.hold();
            }
            Event::Unblocked => {
                self.blocking.unblock();
                let blocked = self.blocking.take_blocked_time(now);
                self.meter
                    .add(Counter::BlockedMicros, blocked.as_micros() as u64);
                self.confirms.release(&mut self.conn);
                self.backlog.wake_all();
            }
            _ => {}
        }
    }

    fn delivered(&mut self, now: Instant, channel: ChannelId, delivery: Delivery) {
        match delivery.method {
            ContentMethod::Deliver(d) => {
                self.meter.add(Counter::Delivered, 1);
                let message = Message::delivered(d, delivery.properties, delivery.body);
                if let Some(message) = self.rpc.route(channel, message)
                    && let Err(limit) = self.consumers.deliver(channel, message)
                {
                    self.conn.close_for_violation(
                        now,
                        ProtocolViolation::PrefetchExceeded { channel, limit },
                    );
                }
            }
            ContentMethod::Return(r) => {
                self.meter.add(Counter::Returned, 1);
                self.confirms
                    .returned(channel, &r, &delivery.properties, &delivery.body);
            }
            _ => {}
        }
    }

    fn on_closed(&mut self, error: ConnectionError) {
        debug!(%error, "connection over");
        self.fail_waiters(&Error::ConnectionClosed(error.clone()));
        self.lifecycle.ended(error);
        self.blocking.changed();
    }

    /// Fails everything that waits for the server with `why`. Harmless
    /// to repeat: each piece is emptied (a consumer keeps its first reason).
    fn fail_waiters(&mut self, why: &Error) {
        self.ops.fail_all(why);
        self.confirms.fail_all(why);
        self.unconfirmed.forget();
        self.backlog.wake_all();
        self.rpc.fail_all(why);
        self.consumers.fail_all(why);
    }
}

/// Handle side: what users' calls do under the lock.
impl Inner {
    /// Adds `n` to `counter` of the connection's metrics, if any.
    pub(crate) fn count(&self, counter: Counter, n: u64) {
        self.meter.add(counter, n);
    }

    /// The error for anything attempted after the connection ended (or
    /// while it is closing), or `None` while it is usable.
    pub(crate) fn closed_error(&self) -> Option<Error> {
        // While closing, the core refuses commands as misuse
        // (`UsageError::Closed`), but the user can't see that state: report
        // why it is closing instead.
        self.lifecycle
            .outcome()
            .or_else(|| self.conn.closing_reason())
            .cloned()
            .map(Error::ConnectionClosed)
    }

    /// The error for a waiter whose answer will never come. Every waiter is
    /// answered when the connection ends (and the driver's end counts,
    /// see [`driver_stopped`](Self::driver_stopped)), so that is why; a
    /// waiter dropped while the connection lives is a bug of ours.
    pub(crate) fn lost(&self) -> Error {
        self.closed_error()
            .unwrap_or(Error::Internal("a waiter was dropped unanswered"))
    }

    /// What is still waiting or open, for the `testing` feature's leak
    /// checks.
    #[cfg(feature = "testing")]
    pub(crate) fn leftovers(&self) -> Leftovers {
        let (op_waiters, temporary_channels) = self.ops.pending();
        Leftovers {
            op_waiters,
            temporary_channels,
            unsettled_publishes: self.confirms.pending(),
            reply_waiters: self.rpc.pending(),
            open_mailboxes: self.consumers.open(),
            core_channels: self.conn.channel_count(),
        }
    }

    /// How the connection ended, if it has.
    pub(crate) fn outcome(&self) -> Option<ConnectionError> {
        self.lifecycle.outcome().cloned()
    }

    /// Fails with why the connection is over, if it is.
    fn check_usable(&self) -> Result<(), Error> {
        match self.closed_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `method` on a short-lived channel: open, call, close,
    /// pipelined; the channel closes when the call succeeds.
    pub(crate) fn on_temporary_channel(&mut self, method: Method) -> Result<OpReceiver, Error> {
        self.check_usable()?;
        let (ch, op) = channels::open_with(&mut self.conn, [method])?;
        Ok(self.ops.wait_then_close(op, ch))
    }

    /// Opens a channel that delivers into a mailbox of at most `limit`
    /// messages, pipelining `methods` on it; waits for the last one.
    pub(crate) fn open_mailbox(
        &mut self,
        methods: impl IntoIterator<Item = Method>,
        limit: u32,
        pause_at: Option<u32>,
    ) -> Result<(ChannelId, Token, OpReceiver), Error> {
        self.check_usable()?;
        let (ch, op) = channels::open_with(&mut self.conn, methods)?;
        // Deliveries may follow the last reply in the same read.
        let token = self.consumers.register(ch, limit, pause_at);
        Ok((ch, token, self.ops.wait(op)))
    }

    /// Logs what happens to mailbox `token` (its end) under `span`.
    pub(crate) fn set_mailbox_span(&mut self, token: Token, span: tracing::Span) {
        self.consumers.set_span(token, span);
    }

    /// The next message of mailbox `token`, its end, or `Pending`.
    pub(crate) fn poll_mailbox(
        &mut self,
        token: Token,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Message, Error>> {
        self.consumers.poll(token, cx)
    }

    /// Whether reading must pause now (a no-ack consumer's buffer is
    /// full); if so, the core is told that the server's silence from now
    /// on is ours, not its.
    pub(crate) fn hold_input(&mut self, now: Instant) -> bool {
        let paused = self.consumers.input_paused();
        if paused {
            self.conn.handle_input_deferred(now);
        }
        paused
    }

    /// Whether reading may resume since the last call (a full no-ack
    /// buffer was read from): the driver is then to be woken.
    pub(crate) fn input_resumed(&mut self) -> bool {
        self.consumers.take_resumed()
    }

    /// Messages held in mailbox `token`.
    #[cfg(test)]
    pub(crate) fn mailbox_buffered(&self, token: Token) -> usize {
        self.consumers.buffered(token)
    }

    /// Whether a stream over mailbox `token` has nothing more to yield.
    pub(crate) fn mailbox_done(&self, token: Token) -> bool {
        self.consumers.stream_done(token)
    }

    /// A stream over mailbox `token` reported its error: it ends next.
    pub(crate) fn mailbox_error_reported(&mut self, token: Token) {
        self.consumers.error_reported(token);
    }

    /// Sends `method` (a settle) on mailbox `token`'s channel, unless it
    /// ended: after a server close the id may already belong to someone
    /// else. Returns whether the driver must be woken.
    pub(crate) fn send_on_mailbox(
        &mut self,
        token: Token,
        channel: ChannelId,
        method: Method,
    ) -> bool {
        if !self.consumers.is_live(token) {
            return false;
        }
        if let Some((counter, n)) = self.consumers.settling(token, &method) {
            self.meter.add(counter, n);
        }
        let (sent, wake) = self.queue_command(|inner| inner.conn.send(channel, method));
        sent.is_ok() && wake
    }

    /// Forgets mailbox `token`, first sending `method` (if any) and then
    /// closing its channel if it is still ours. Returns the close's
    /// waiter, or `None` if nothing was sent.
    pub(crate) fn close_mailbox(
        &mut self,
        token: Token,
        method: Option<Method>,
    ) -> Option<OpReceiver> {
        if let Some(method) = &method
            && let Some((counter, n)) = self.consumers.settling(token, method)
        {
            self.meter.add(counter, n);
        }
        let channel = self.consumers.remove(token)?;
        if let Some(method) = method {
            let _ = self.conn.send(channel, method);
        }
        let op = self.conn.close_channel(channel).ok()?;
        Some(self.ops.wait(op))
    }

    /// Queues an operation without a channel (`update-secret`).
    pub(crate) fn update_secret(
        &mut self,
        secret: Bytes,
        reason: &str,
    ) -> Result<OpReceiver, Error> {
        self.check_usable()?;
        let op = self.conn.update_secret(secret, reason)?;
        Ok(self.ops.wait(op))
    }

    /// Publishes with confirms: queued now, or held while blocked.
    pub(crate) fn publish(
        &mut self,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
        permit: Option<Permit>,
    ) -> Result<OutcomeReceiver, Error> {
        if mandatory || self.confirms.is_holding() || self.lifecycle.outcome().is_some() {
            let (exchange, routing_key) = self.confirms.names(exchange, routing_key)?;
            self.check_usable()?;
            self.meter.add(Counter::Published, 1);
            let outgoing =
                Outgoing::new(exchange, routing_key, properties.clone(), body, mandatory);
            Ok(self.confirms.enqueue(&mut self.conn, outgoing, permit))
        } else {
            let rx = self.confirms.publish_now(
                &mut self.conn,
                exchange,
                routing_key,
                properties,
                &body,
                permit,
            )?;
            // Counted under the lock, before the driver can settle it.
            self.meter.add(Counter::Published, 1);
            Ok(rx)
        }
    }

    /// Publishes without a confirm, on the unconfirmed channel; or, while
    /// RabbitMQ blocks publishing or the bytes queued for the socket reach
    /// the high-water mark, queues nothing and returns `Pending` (`cx` is
    /// woken when that may have changed).
    pub(crate) fn poll_publish_unconfirmed(
        &mut self,
        cx: &mut Context<'_>,
        body: &Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Poll<Result<(), Error>> {
        if let Err(e) = self.check_usable() {
            return Poll::Ready(Err(e));
        }
        if self.blocking.reason().is_some() || self.backlog.is_full(self.conn.transmit_len()) {
            self.backlog.park(cx.waker());
            return Poll::Pending;
        }
        let result =
            self.confirms
                .names(exchange, routing_key)
                .and_then(|(exchange, routing_key)| {
                    self.unconfirmed.publish(
                        &mut self.conn,
                        exchange,
                        routing_key,
                        properties,
                        body,
                    )
                });
        if result.is_ok() {
            self.meter.add(Counter::Published, 1);
        }
        Poll::Ready(result)
    }

    /// Bytes queued for the socket in all: the core's and the driver's.
    #[cfg(test)]
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.total(self.conn.transmit_len())
    }

    /// Runs `command`, which queues bytes for the socket; returns its
    /// result and whether the driver must be woken for them. Bytes queued
    /// before it mean the driver was woken for them and has not taken them
    /// yet (it takes them under this lock), or it holds them back as
    /// publishes to coalesce: then it needs waking only if the command
    /// ended that hold.
    pub(crate) fn queue_command<T>(&mut self, command: impl FnOnce(&mut Self) -> T) -> (T, bool) {
        let queued_before = self.conn.transmit_len() > 0;
        let done = command(self);
        (done, !queued_before || self.conn.hold_ended())
    }

    /// Opens a direct reply-to channel: `methods` pipelined, replies routed
    /// by correlation id, publishes confirmed.
    pub(crate) fn open_rpc(
        &mut self,
        methods: impl IntoIterator<Item = Method>,
    ) -> Result<(ChannelId, OpReceiver), Error> {
        self.check_usable()?;
        let (ch, op) = channels::open_with(&mut self.conn, methods)?;
        self.rpc.open(ch);
        self.confirms.add_rpc_channel(ch);
        Ok((ch, self.ops.wait(op)))
    }

    /// Publishes an RPC request on `channel` and waits for both its
    /// confirm and the reply with its correlation id.
    pub(crate) fn rpc_call(
        &mut self,
        channel: ChannelId,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: &Bytes,
        correlation_id: &ShortStr,
    ) -> Result<(ReplyReceiver, OutcomeReceiver), Error> {
        self.check_usable()?;
        let Some(reply) = self.rpc.expect(channel, correlation_id.clone()) else {
            return Err(Error::ConsumerClosed);
        };
        match self.conn.publish(channel, publish, properties, body) {
            Ok(Some(seq)) => {
                let outgoing = Outgoing::new(
                    publish.exchange.clone(),
                    publish.routing_key.clone(),
                    properties.clone(),
                    body.clone(),
                    true,
                );
                let confirm = self.confirms.track_rpc(channel, seq, outgoing);
                Ok((reply, confirm))
            }
            other => {
                self.rpc.forget(channel, correlation_id);
                Err(match other {
                    Err(e) => e.into(),
                    Ok(_) => Error::Internal("an RPC channel is not in confirm mode"),
                })
            }
        }
    }

    /// An RPC call gave up: forget its waiter.
    pub(crate) fn rpc_forget(&mut self, channel: ChannelId, correlation_id: &ShortStr) {
        self.rpc.forget(channel, correlation_id);
    }

    /// How many RPC calls wait for a reply.
    #[cfg(test)]
    pub(crate) fn rpc_waiting(&self) -> usize {
        self.rpc.waiting()
    }

    /// The RPC client is gone: close its channel.
    pub(crate) fn close_rpc(&mut self, channel: ChannelId) {
        self.rpc.close(channel, &Error::ConsumerClosed);
        self.confirms.remove_rpc_channel(channel);
        let _ = self.conn.close_channel(channel);
    }

    /// Starts a clean close (if not already over); routes what it caused.
    pub(crate) fn close(&mut self, now: Instant, code: u16, text: &str) {
        if self.lifecycle.outcome().is_none() {
            let _ = self.conn.close(now, code, text);
            self.route_events(now);
        }
    }

    /// How the connection ended, or `Pending` (woken when it ends).
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<ConnectionError> {
        self.lifecycle.poll_closed(cx)
    }

    /// The server's `connection.start` properties.
    pub(crate) fn server_properties(&self) -> &FieldTable {
        self.conn.server_properties()
    }

    /// Whether the server advertises capability `name`.
    pub(crate) fn server_has_capability(&self, name: &str) -> bool {
        match self.conn.server_properties().inner().get("capabilities") {
            Some(AMQPValue::FieldTable(caps)) => {
                matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
            }
            _ => false,
        }
    }

    /// Why RabbitMQ blocks publishing now, if it does.
    pub(crate) fn blocked(&self) -> Option<String> {
        self.blocking.reason().map(str::to_string)
    }

    /// The current blocked/unblocked version, for a new watcher.
    pub(crate) fn blocking_version(&self) -> u64 {
        self.blocking.version()
    }

    /// A blocked/unblocked watcher's poll.
    pub(crate) fn watch_blocking(&mut self, seen: u64, waker: &Waker) -> Watch {
        self.blocking.watch(seen, waker)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unconfirmed_tests;
