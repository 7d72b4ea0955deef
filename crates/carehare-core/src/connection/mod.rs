//! The connection: the public surface of the crate (getters, inputs,
//! commands and outputs, in the A–D order of the [crate docs](crate)) and
//! the routing between them. The rules live in the modules it routes to:
//! the handshake (`handshake`), each channel (`crate::channel`), the close
//! path (`close`), the queues of bytes and events (`outbox`), and when
//! publishes and acks wait to be written together (`coalesce`).
//!
//! Invariants:
//! - Every byte of input goes through `process_input`, which cuts it into
//!   frames no larger than `frame_max_in` and routes each one: channel 0 to
//!   the handshake or the connection's own methods, any other channel to
//!   that channel's rules, and everything to the close path once a close
//!   started.
//! - A frame for a channel that is not allocated, or that comes before the
//!   connection is open, is a protocol fault (504).
//! - `now` only moves forward: it is the latest time any input was given.
//! - `next_op` only grows, so op ids are unique within the connection.
//! - `blocked_since` is set from the first `connection.blocked` to the
//!   next `unblocked` (a repeated `blocked` keeps the first time), and only
//!   while `Open`: the blocked timeout counts from it.
//! - `poll_transmit` hands out nothing only while `Open` and `coalescer`
//!   holds what `out` says is publishes, or settlements, on one channel
//!   (`coalesce`); anything else queued is handed out at the next call.

mod close;
mod coalesce;
mod config;
mod handshake;
mod outbox;
mod state;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

pub use coalesce::Coalescing;
pub use config::{Auth, ConnectionConfig};

use crate::channel::{Channel, Channels, Effects, Outcome};
use crate::error::{ChannelError, ConnectionError, ProtocolViolation, UsageError, reply_code};
use crate::event::{Event, Reply, Tuning};
use crate::frame::{self, Frame, FrameType};
use crate::heartbeat::Heartbeat;
use crate::method::{self, *};
use crate::properties::BasicProperties;
use crate::types::{ChannelId, FieldTable, OpId, Secret, ShortStr};
use close::{Ending, truncate_utf8};
use coalesce::{ChannelView, Coalescer};
use handshake::{Handshake, Refusal};
use outbox::{BodyRef, Outbox};
use state::State;

/// The input buffer `handle_input` copies into starts this large.
const READ_BUF_START: usize = 4096;

/// One AMQP connection, without IO. See the [crate docs](crate) for the
/// contract.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    state: State,
    handshake: Handshake,
    read_buf: BytesMut,
    out: Outbox,
    /// Whether `out`'s publishes or acks are held back for now.
    coalescer: Coalescer,
    channels: Channels,
    /// Connection-level commands awaiting a reply (`update-secret`).
    connection_ops: VecDeque<OpId>,
    heartbeat: Heartbeat,
    /// Since when the server has blocked publishing, while it does.
    blocked_since: Option<Instant>,
    next_op: u64,
    /// The latest time passed in; used as "now" by commands, which take none.
    now: Instant,
}

impl Connection {
    // ---- A. Construction and getters ------------------------------------

    /// Starts a connection at `now`: the protocol header is queued for
    /// [`poll_transmit`](Self::poll_transmit) at once.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        Self {
            handshake: Handshake::new(now + config.handshake_timeout),
            coalescer: Coalescer::new(config.coalescing),
            config,
            state: State::AwaitingStart,
            // Taken on the first `handle_input`: a caller that reads into
            // its own buffers (`handle_input_bytes`) never needs it.
            read_buf: BytesMut::new(),
            out: Outbox::new(),
            channels: Channels::default(),
            connection_ops: VecDeque::new(),
            heartbeat: Heartbeat::new(0, now),
            blocked_since: None,
            next_op: 0,
            now,
        }
    }

    /// The configuration this connection was made with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Whether the handshake finished and the connection is not closing.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether the connection is over ([`Event::ConnectionClosed`] was queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Why the connection is closing, while it is: from the moment a close
    /// starts (ours, the server's, or a protocol fault's) until
    /// [`Event::ConnectionClosed`]. Commands fail with [`UsageError::Closed`]
    /// in that window; a driver whose user could not have known can report
    /// this reason instead.
    pub fn closing_reason(&self) -> Option<&ConnectionError> {
        match &self.state {
            State::Closing { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The negotiated limits, once `tune` arrived.
    pub fn tuning(&self) -> Option<Tuning> {
        self.handshake.tuning()
    }

    /// The server's `connection.start` properties (product, version,
    /// capabilities...). Empty before `start` arrives.
    pub fn server_properties(&self) -> &FieldTable {
        self.handshake.server_properties()
    }

    /// How many channels are allocated (opening, open or closing).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    // ---- B. Inputs --------------------------------------------------------

    /// Feeds bytes read from the transport. Never panics, whatever the bytes.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.tick(now);
        if matches!(self.state, State::Closed) || data.is_empty() {
            return;
        }
        self.heartbeat.on_read(now);
        if self.read_buf.capacity() == 0 {
            self.read_buf = BytesMut::with_capacity(READ_BUF_START.max(data.len()));
        }
        self.read_buf.extend_from_slice(data);
        self.process_input(now);
        self.heartbeat_with_read(now);
    }

    /// [`handle_input`](Self::handle_input) for a buffer the caller read
    /// into, without copying it when it can be avoided: when no partial
    /// frame is buffered, `data` becomes the input buffer, and when `data`
    /// directly follows the buffered bytes in memory (the caller split it
    /// off the same allocation) it is joined without a copy. Bodies are
    /// then slices of `data`.
    pub fn handle_input_bytes(&mut self, now: Instant, data: BytesMut) {
        self.tick(now);
        if matches!(self.state, State::Closed) || data.is_empty() {
            return;
        }
        self.heartbeat.on_read(now);
        if self.read_buf.is_empty() {
            self.read_buf = data;
        } else {
            // O(1) when contiguous, else one copy of `data`.
            self.read_buf.unsplit(data);
        }
        self.process_input(now);
        self.heartbeat_with_read(now);
    }

    /// Moves the buffered bytes of a partial frame (if any) to the end of
    /// `into`, the caller's next read buffer, so the next
    /// [`handle_input_bytes`](Self::handle_input_bytes) takes that buffer
    /// whole instead of copying it behind them. Call it when starting a
    /// fresh read buffer; it copies at most one partial frame.
    pub fn relocate_input(&mut self, into: &mut BytesMut) {
        if !self.read_buf.is_empty() {
            into.extend_from_slice(&self.read_buf);
        }
        // Drop the reference, so the old block can be reused or freed.
        self.read_buf = BytesMut::new();
    }

    /// Tells the core that the driver holds back reading on purpose (its
    /// consumers' buffers are full, and the socket's data waits in the
    /// kernel: TCP back-pressure). The server's silence then says nothing
    /// about it, so the heartbeat monitor counts `now` as heard from; it
    /// judges the server again from the moment reading resumes.
    pub fn handle_input_deferred(&mut self, now: Instant) {
        self.heartbeat.on_read(now);
    }

    /// Tells the core that the transport reached end of stream.
    pub fn handle_eof(&mut self, now: Instant) {
        self.tick(now);
        self.ending().eof();
    }

    /// Tells the core that the transport failed; the connection is over,
    /// with [`ConnectionError::Transport`] holding `error`.
    pub fn handle_transport_error(&mut self, now: Instant, error: std::io::Error) {
        self.tick(now);
        if !matches!(self.state, State::Closed) {
            self.finish(ConnectionError::Transport(error.into()));
        }
    }

    /// Runs the timers due at `now`: heartbeat send and monitor, handshake,
    /// close and blocked timeouts. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        match &self.state {
            State::Closed => {}
            State::Closing { .. } => self.ending().on_timeout(now),
            state if state.handshaking() && now >= self.handshake.deadline() => {
                self.finish(ConnectionError::HandshakeTimeout(
                    self.config.handshake_timeout,
                ));
            }
            _ => {
                if self.heartbeat.is_dead(now) {
                    warn!("no data from the server: heartbeat timeout");
                    self.finish(ConnectionError::ClosedByHeartbeatMonitor(
                        self.heartbeat.dead_after(),
                    ));
                } else if let Some((deadline, limit)) = self.blocked_deadline()
                    && now >= deadline
                {
                    warn!(?limit, "blocked by the server for too long: closing");
                    // The server reads nothing while it blocks us, so its
                    // close-ok would never come: tell it why, and end now.
                    let text = format!("blocked by the server for longer than {limit:?}");
                    self.ending().abandon(
                        ConnectionError::BlockedTimeout(limit),
                        reply_code::REPLY_SUCCESS,
                        &text,
                    );
                }
            }
        }
        // After the monitor and the timeouts: a connection they ended is
        // `Closed` and sends nothing.
        if self.state.sends_heartbeats() && self.heartbeat.should_send(now) {
            self.send_heartbeat(now);
        }
    }

    // ---- C. Commands: they only queue work ------------------------------

    /// Opens a channel. [`Event::Completed`] with `channel.open-ok` follows.
    /// Commands may be queued on the channel before then.
    pub fn open_channel(&mut self) -> Result<(ChannelId, OpId), UsageError> {
        self.check_open()?;
        let channel_max = self.handshake.tuning().map_or(u16::MAX, |t| t.channel_max);
        let id = self
            .channels
            .allocate(channel_max)
            .ok_or(UsageError::NoFreeChannel(channel_max))?;
        let open = Method::from(ChannelOpen::default());
        self.out.command(id, &open, self.frame_max_out())?;
        let op = self.next_op_id();
        if let Some(ch) = self.channels.get_mut(id) {
            ch.on_sent(&open, Some(op));
        }
        debug!(channel = id, "opening channel");
        Ok((id, op))
    }

    /// Closes a channel normally. Its pending commands fail at once with
    /// [`ChannelError::ClosedByClient`]; frames for it are dropped until
    /// `close-ok`, which completes the returned op and frees the id.
    pub fn close_channel(&mut self, channel: ChannelId) -> Result<OpId, UsageError> {
        self.check_open()?;
        self.open_channel_mut(channel)?;
        let close = Method::from(ChannelClose {
            reply_code: reply_code::REPLY_SUCCESS,
            reply_text: ShortStr::from_static("closed by client"),
            class_id: 0,
            method_id: 0,
        });
        self.out.command(channel, &close, self.frame_max_out())?;
        let op = self.next_op_id();
        let ch = self
            .channels
            .get_mut(channel)
            .ok_or(UsageError::ChannelNotOpen(channel))?;
        for failed in ch.on_close_sent(op) {
            self.out
                .complete(failed, channel, Err(ChannelError::ClosedByClient));
        }
        Ok(op)
    }

    /// Sends a method that expects a reply (e.g. `queue.declare` without
    /// `no_wait`). [`Event::Completed`] carries the reply.
    pub fn call(&mut self, channel: ChannelId, method: Method) -> Result<OpId, UsageError> {
        self.check_sendable(channel, &method, true)?;
        self.out.command(channel, &method, self.frame_max_out())?;
        let op = self.next_op_id();
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.on_sent(&method, Some(op));
        }
        Ok(op)
    }

    /// Sends a method that gets no reply (`basic.ack`, `basic.nack`,
    /// `basic.reject`, or any method with `no_wait` set).
    pub fn send(&mut self, channel: ChannelId, method: Method) -> Result<(), UsageError> {
        self.check_sendable(channel, &method, false)?;
        let settled = match method {
            Method::BasicAck(_) | Method::BasicNack(_) | Method::BasicReject(_) => {
                self.channels.get(channel).map(|ch| ch.settling().0)
            }
            _ => None,
        };
        match settled {
            // A settlement may wait for others (see `coalesce`).
            Some(settled) => self.out.settle(channel, &method, settled),
            None => self.out.command(channel, &method, self.frame_max_out())?,
        }
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.on_sent(&method, None);
        }
        Ok(())
    }

    /// Publishes a message: `basic.publish`, a content header and as many
    /// body frames as `frame_max` needs.
    ///
    /// Returns the publish sequence number when the channel is in confirm
    /// mode (`confirm.select` was sent): [`Event::Ack`] / [`Event::Nack`]
    /// refer to it.
    pub fn publish(
        &mut self,
        channel: ChannelId,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Result<Option<u64>, UsageError> {
        self.publish_content(channel, publish, properties, BodyRef::Slice(body))
    }

    /// [`publish`](Self::publish) without copying a large body: pieces of
    /// at least [`ZERO_COPY_MIN`](frame::ZERO_COPY_MIN) bytes are queued as
    /// slices of `body`, which [`poll_transmit_chunks`](Self::poll_transmit_chunks)
    /// hands out for a vectored write.
    pub fn publish_bytes(
        &mut self,
        channel: ChannelId,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> Result<Option<u64>, UsageError> {
        self.publish_content(channel, publish, properties, BodyRef::Shared(body))
    }

    fn publish_content(
        &mut self,
        channel: ChannelId,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: BodyRef<'_>,
    ) -> Result<Option<u64>, UsageError> {
        self.check_open()?;
        self.open_channel_mut(channel)?;
        let frame_max = self.frame_max_out();
        self.out
            .publish(channel, publish, properties, body, frame_max)?;
        let ch = self
            .channels
            .get_mut(channel)
            .ok_or(UsageError::ChannelNotOpen(channel))?;
        Ok(ch.on_publish())
    }

    /// Replaces the credential (`connection.update-secret`, e.g. a refreshed
    /// OAuth token). [`Event::Completed`] on channel 0 follows.
    pub fn update_secret(&mut self, secret: Bytes, reason: &str) -> Result<OpId, UsageError> {
        self.check_open()?;
        let reason = ShortStr::new(reason).map_err(|e| UsageError::StringTooLong(e.len))?;
        let method = Method::from(ConnectionUpdateSecret {
            new_secret: Secret(secret),
            reason,
        });
        self.out.command(0, &method, self.frame_max_out())?;
        let op = self.next_op_id();
        self.connection_ops.push_back(op);
        Ok(op)
    }

    /// Closes the connection: every pending command fails now with
    /// [`ChannelError::ConnectionClosed`], and [`Event::ConnectionClosed`]
    /// follows when `close-ok` arrives or `close_timeout` passes.
    pub fn close(&mut self, now: Instant, code: u16, text: &str) -> Result<(), UsageError> {
        self.tick(now);
        if self.state.ending() {
            return Err(UsageError::Closed);
        }
        // Truncate rather than refuse: the text is informational.
        let text = truncate_utf8(text, ShortStr::MAX_LEN);
        self.ending()
            .start_closing(ConnectionError::ClosedByClient, code, text);
        Ok(())
    }

    /// Ends the connection for a fault the driver detected in what the
    /// server sent (e.g. [`ProtocolViolation::PrefetchExceeded`]): queues
    /// `connection.close` with the violation's reply code, exactly as for a
    /// fault the core detects itself.
    pub fn close_for_violation(&mut self, now: Instant, violation: ProtocolViolation) {
        self.tick(now);
        self.violation(violation);
    }

    // ---- D. Outputs -------------------------------------------------------

    /// Appends every queued outgoing byte to `buf`, and returns how many:
    /// none while publishes or acks are held back (see [`Coalescing`]); then
    /// [`has_transmit`](Self::has_transmit) is false and
    /// [`poll_timeout`](Self::poll_timeout) says when the hold ends at the
    /// latest.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> usize {
        if self.hold() {
            return 0;
        }
        let n = self.out.transmit(buf);
        if n > 0 {
            self.heartbeat.on_write(self.now);
        }
        n
    }

    /// [`poll_transmit`](Self::poll_transmit) without copying: moves every
    /// queued piece to the back of `chunks`, in order, for a vectored
    /// write, and returns how many bytes they hold. Large bodies published
    /// with [`publish_bytes`](Self::publish_bytes) are the caller's own
    /// `Bytes`; everything else is one piece of the write buffer, whose
    /// memory is reused once the caller drops it.
    pub fn poll_transmit_chunks(&mut self, chunks: &mut VecDeque<Bytes>) -> usize {
        if self.hold() {
            return 0;
        }
        let n = self.out.transmit_chunks(chunks);
        if n > 0 {
            self.heartbeat.on_write(self.now);
        }
        n
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has bytes to give
    /// now: false while publishes or acks are held back (see
    /// [`Coalescing`]).
    pub fn has_transmit(&self) -> bool {
        self.out.has_transmit() && !self.holds()
    }

    /// Whether the last [`poll_transmit`](Self::poll_transmit) held
    /// publishes or acks back and they are to be handed out now (something that
    /// may not wait was queued since, or they reached `max_bytes`). A
    /// driver that isn't woken for commands while bytes it was woken for
    /// are still queued must be woken when this turns true.
    pub fn hold_ended(&self) -> bool {
        self.coalescer.holding() && self.has_transmit()
    }

    /// How many bytes of input are worth waking for: 1 (anything) unless
    /// publishes are held back (see [`Coalescing`]). While they are,
    /// RabbitMQ owes the confirms of the written ones, and this is about
    /// the bytes of the ack frames that confirm half of those above
    /// `min_unconfirmed`, at most 8 KiB. A driver may set its socket's
    /// receive low-water mark (`SO_RCVLOWAT`) to it after each
    /// [`poll_transmit`](Self::poll_transmit), and so sleep through many
    /// confirms at a time. It must still read when
    /// [`poll_timeout`](Self::poll_timeout)'s deadline comes, which ends
    /// the hold at the latest; this is then 1 again. A driver that ignores
    /// it only wakes more often.
    pub fn read_low_water(&self) -> usize {
        // The coalescer answers 1 unless a hold is under way.
        if !self.holds() {
            return 1;
        }
        self.coalescer
            .read_low_water(self.out.queued(), |channel| self.channel_view(channel))
    }

    /// How many bytes commands queued and the driver has not taken yet,
    /// held back or not. A driver that bounds its write backlog adds this
    /// to the bytes it holds.
    pub fn transmit_len(&self) -> usize {
        self.out.transmit_len()
    }

    /// The next event, in the order things happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.next_event()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called;
    /// `None` when no timer is running (closed, or heartbeats disabled and
    /// no handshake or close under way).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshake_deadline = self.handshake.deadline();
        match &self.state {
            State::Closed => None,
            State::Closing { deadline, .. } => Some(
                self.heartbeat
                    .send_deadline()
                    .map_or(*deadline, |h| h.min(*deadline)),
            ),
            State::AwaitingStart | State::AwaitingTune => Some(handshake_deadline),
            State::AwaitingOpenOk => Some(
                self.heartbeat
                    .next_deadline()
                    .map_or(handshake_deadline, |h| h.min(handshake_deadline)),
            ),
            State::Open => {
                let blocked = self.blocked_deadline().map(|(at, _)| at);
                // Only while the hold still applies: once a confirm ended
                // it, the timer needn't wake the driver for it.
                let hold = self.coalescer.deadline().filter(|_| self.holds());
                [self.heartbeat.next_deadline(), blocked, hold]
                    .into_iter()
                    .flatten()
                    .min()
            }
        }
    }

    // ---- Internals ----------------------------------------------------------

    /// Queues a heartbeat on a read's wakeup when one is nearly due and
    /// nothing else is queued (see `heartbeat`): on a quiet connection the
    /// timer then never has to wake the caller just to send one.
    fn heartbeat_with_read(&mut self, now: Instant) {
        if self.state.sends_heartbeats()
            && !self.out.has_transmit()
            && self.heartbeat.send_with_read(now)
        {
            self.send_heartbeat(now);
        }
    }

    fn send_heartbeat(&mut self, now: Instant) {
        self.out.heartbeat();
        self.heartbeat.on_write(now);
    }

    /// When the blocked timeout runs out, and the limit, while the server
    /// blocks publishing and a limit is set.
    fn blocked_deadline(&self) -> Option<(Instant, std::time::Duration)> {
        let limit = self.config.blocked_timeout?;
        Some((self.blocked_since? + limit, limit))
    }

    /// Whether `poll_transmit` holds the queued bytes back now (see
    /// `coalesce`).
    fn holds(&self) -> bool {
        matches!(self.state, State::Open)
            && self.coalescer.holds(
                self.now,
                self.out.queued(),
                self.out.transmit_len(),
                |channel| self.channel_view(channel),
            )
    }

    /// How `channel` stands, as far as holding bytes back goes.
    fn channel_view(&self, channel: ChannelId) -> ChannelView {
        self.channels
            .get(channel)
            .map_or_else(ChannelView::default, |ch| {
                let (_, delivered, prefetch) = ch.settling();
                ChannelView {
                    unconfirmed: ch.unconfirmed(),
                    delivered,
                    prefetch,
                    confirm_batch: ch.confirm_batch(),
                }
            })
    }

    /// `poll_transmit`'s decision: true to hand out nothing this time.
    fn hold(&mut self) -> bool {
        if self.holds() {
            self.coalescer.held(self.now);
            true
        } else {
            self.coalescer.released();
            false
        }
    }

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn next_op_id(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    fn check_open(&self) -> Result<(), UsageError> {
        match self.state {
            State::Open => Ok(()),
            State::Closing { .. } | State::Closed => Err(UsageError::Closed),
            _ => Err(UsageError::NotOpen),
        }
    }

    fn open_channel_mut(&mut self, channel: ChannelId) -> Result<&mut Channel, UsageError> {
        match self.channels.get_mut(channel) {
            Some(ch) if ch.accepts_commands() => Ok(ch),
            _ => Err(UsageError::ChannelNotOpen(channel)),
        }
    }

    fn check_sendable(
        &mut self,
        channel: ChannelId,
        method: &Method,
        want_reply: bool,
    ) -> Result<(), UsageError> {
        self.check_open()?;
        if !method::client_may_send(method) {
            return Err(UsageError::MethodNotAllowed(method.name()));
        }
        let expects_reply = method::reply_ids(method).is_some();
        if expects_reply != want_reply {
            return Err(UsageError::WrongCommand {
                method: method.name(),
                expects_reply,
            });
        }
        self.open_channel_mut(channel)?;
        Ok(())
    }

    /// The `frame_max` our frames must respect.
    fn frame_max_out(&self) -> u32 {
        self.handshake
            .tuning()
            .map_or(frame::FRAME_MIN_SIZE, |t| t.frame_max)
    }

    /// The largest frame we accept.
    fn frame_max_in(&self) -> u32 {
        match self.handshake.tuning() {
            Some(t) if t.frame_max != 0 => t.frame_max,
            Some(_) => u32::MAX,
            // Before tune the server may not exceed our own proposal.
            None => self.config.frame_max.max(frame::FRAME_MIN_SIZE),
        }
    }

    /// The close path, over this connection's parts.
    fn ending(&mut self) -> Ending<'_> {
        Ending {
            state: &mut self.state,
            out: &mut self.out,
            channels: &mut self.channels,
            connection_ops: &mut self.connection_ops,
            read_buf: &mut self.read_buf,
            now: self.now,
            close_timeout: self.config.close_timeout,
        }
    }

    fn violation(&mut self, violation: ProtocolViolation) {
        self.ending().violation(violation);
    }

    fn finish(&mut self, error: ConnectionError) {
        self.ending().finish(error);
    }

    // ---- Routing of input -------------------------------------------------

    fn process_input(&mut self, now: Instant) {
        if matches!(self.state, State::AwaitingStart) && self.read_buf.starts_with(b"AMQP") {
            if self.read_buf.len() >= 8 {
                let mut header = [0u8; 8];
                header.copy_from_slice(&self.read_buf[..8]);
                self.finish(ConnectionError::Protocol(
                    ProtocolViolation::ProtocolHeader(header),
                ));
            }
            return;
        }
        loop {
            if matches!(self.state, State::Closed) {
                self.read_buf.clear();
                return;
            }
            let channel_hint = peek_channel(&self.read_buf);
            let frame_max = self.frame_max_in();
            let raw = match frame::decode_raw_with(&mut self.read_buf, frame_max, false) {
                Ok(Some(raw)) => raw,
                Ok(None) => return,
                Err(error) => {
                    // The stream is out of sync: nothing after this can be read.
                    self.read_buf.clear();
                    self.violation(ProtocolViolation::Decode {
                        channel: channel_hint,
                        error,
                    });
                    return;
                }
            };
            if let State::Closing { .. } = self.state {
                self.ending().while_closing(raw);
                continue;
            }
            let channel = raw.channel;
            // A heartbeat is checked before parsing so the right fault is reported.
            if raw.kind == FrameType::Heartbeat && channel != 0 {
                self.violation(ProtocolViolation::HeartbeatOnChannel(channel));
                continue;
            }
            match raw.parse() {
                Ok(frame) => self.handle_frame(now, frame),
                Err(error) => self.violation(ProtocolViolation::Decode { channel, error }),
            }
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame) {
        match frame {
            Frame::Heartbeat { .. } => {}
            Frame::Method { channel: 0, method } => self.handle_connection_method(now, method),
            Frame::Header { channel: 0, .. } => {
                self.violation(ProtocolViolation::UnexpectedFrame {
                    channel: 0,
                    what: "content header",
                })
            }
            Frame::Body { channel: 0, .. } => self.violation(ProtocolViolation::UnexpectedFrame {
                channel: 0,
                what: "content body",
            }),
            frame => self.handle_channel_frame(frame),
        }
    }

    /// A frame for channel 1 and up: the channel's rules say what it means.
    fn handle_channel_frame(&mut self, frame: Frame) {
        let channel = frame.channel();
        let max_body_size = self.config.max_body_size;
        let open = self.is_open();
        let Some(ch) = self.channels.get_mut(channel).filter(|_| open) else {
            self.violation(ProtocolViolation::UnknownChannel(channel));
            return;
        };
        let outcome = match frame {
            Frame::Method { method, .. } => ch.on_method(method),
            Frame::Header { header, .. } => {
                ch.on_header(header.properties, header.body_size, max_body_size)
            }
            Frame::Body { payload, .. } => ch.on_body(payload),
            Frame::Heartbeat { .. } => return,
        };
        match outcome {
            Ok(outcome) => self.apply(channel, outcome),
            Err(violation) => self.violation(violation),
        }
    }

    /// Does what a channel said, in the order [`Outcome`] documents.
    fn apply(&mut self, channel: ChannelId, outcome: Outcome) {
        let Outcome { event, effects } = outcome;
        if let Some(effects) = effects {
            let Effects {
                reply,
                free,
                failed,
            } = *effects;
            if let Some(reply) = reply {
                self.out.method(channel, &reply);
            }
            if free {
                self.channels.free(channel);
            }
            if let Some((ops, why)) = failed {
                for op in ops {
                    self.out.complete(op, channel, Err(why.clone()));
                }
            }
        }
        if let Some(event) = event {
            self.out.event(event);
        }
    }

    fn handle_connection_method(&mut self, now: Instant, method: Method) {
        match (&self.state, method) {
            (_, Method::ConnectionClose(close)) => self.ending().server_closed(close),
            (State::AwaitingStart, Method::ConnectionStart(start)) => {
                match self.handshake.on_start(&self.config, start) {
                    Ok(start_ok) => {
                        self.out.method(0, &start_ok);
                        self.state = State::AwaitingTune;
                    }
                    Err(refusal) => self.refuse(refusal),
                }
            }
            (State::AwaitingTune, Method::ConnectionTune(tune)) => {
                let answer = self.handshake.on_tune(&self.config, tune);
                // An agreed tuning starts the heartbeat, even when `open`
                // cannot follow it.
                if let Some(tuning) = self.handshake.tuning() {
                    self.heartbeat = Heartbeat::new(tuning.heartbeat, now);
                }
                match answer {
                    Ok([tune_ok, open]) => {
                        self.out.method(0, &tune_ok);
                        self.out.method(0, &open);
                        self.state = State::AwaitingOpenOk;
                    }
                    Err(refusal) => self.refuse(refusal),
                }
            }
            (State::AwaitingOpenOk, Method::ConnectionOpenOk(_)) => {
                self.state = State::Open;
                self.out.handshake_done();
                let tuning = self.handshake.on_open_ok(&self.config);
                debug!(?tuning, "connection open");
                self.out.event(Event::Connected(tuning));
            }
            (State::Open, Method::ConnectionBlocked(b)) => {
                self.blocked_since.get_or_insert(now);
                self.out.event(Event::Blocked {
                    reason: b.reason.to_string(),
                })
            }
            (State::Open, Method::ConnectionUnblocked(_)) => {
                self.blocked_since = None;
                self.out.event(Event::Unblocked)
            }
            (State::Open, Method::ConnectionUpdateSecretOk(m)) => {
                match self.connection_ops.pop_front() {
                    Some(op) => self.out.complete(op, 0, Ok(Reply::Method(m.into()))),
                    None => self.violation(ProtocolViolation::UnexpectedMethod {
                        channel: 0,
                        method: ConnectionUpdateSecretOk::NAME,
                    }),
                }
            }
            (_, other) => self.violation(ProtocolViolation::UnexpectedMethod {
                channel: 0,
                method: other.name(),
            }),
        }
    }

    /// The handshake cannot go on.
    fn refuse(&mut self, refusal: Refusal) {
        match refusal {
            Refusal::Violation(violation) => self.violation(violation),
            Refusal::End(error) => self.finish(error),
            Refusal::Close { error, code, text } => self.ending().start_closing(error, code, text),
        }
    }
}

/// The channel in a frame header, if 3 bytes of it are there.
fn peek_channel(buf: &[u8]) -> ChannelId {
    match buf {
        [_, hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use crate::frame::Frame;
    use crate::method::BasicPublish;
    use crate::properties::BasicProperties;
    use crate::testing::Broker;

    /// An idle connection holds its write buffer for as long as it lives:
    /// the handshake's is traded for a small one, and the first publish
    /// takes a large one.
    #[test]
    fn the_write_buffer_is_small_between_the_handshake_and_the_first_publish() {
        let mut b = Broker::new(Default::default());
        assert!(b.conn.out.write_capacity() >= 1024);
        b.handshake();
        assert!(
            b.conn.out.write_capacity() <= 128,
            "{}",
            b.conn.out.write_capacity()
        );
        // Heartbeats and channel opens fit without growing it.
        b.advance(std::time::Duration::from_secs(75));
        assert_eq!(b.sent(), vec![Frame::Heartbeat { channel: 0 }]);
        let ch = b.open_channel();
        assert!(b.conn.out.write_capacity() <= 128);
        b.conn
            .publish(
                ch,
                &BasicPublish::default(),
                &BasicProperties::default(),
                b"x",
            )
            .unwrap();
        assert!(b.conn.out.write_capacity() >= 4096);
        assert!(b.sent().iter().any(|f| matches!(f, Frame::Body { .. })));
    }
}
