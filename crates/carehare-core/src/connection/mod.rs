//! The connection state machine.

mod config;
mod handshake;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

pub use config::{Auth, ConnectionConfig};

use crate::channel::{Assembly, Body, Channel, Channels, Lifecycle, Pending};
use crate::error::{
    ChannelError, CloseReason, ConnectionError, ProtocolViolation, UsageError, reply_code,
};
use crate::event::{ContentMethod, Event, Reply, Tuning};
use crate::frame::{self, Frame, FrameType, PROTOCOL_HEADER, encode_heartbeat, encode_method};
use crate::heartbeat::Heartbeat;
use crate::method::{self, *};
use crate::properties::{BASIC_CLASS_ID, BasicProperties};
use crate::types::{ChannelId, FieldTable, OpId, Secret, ShortStr};

#[derive(Debug)]
enum State {
    /// Protocol header sent, waiting for `connection.start`.
    AwaitingStart,
    /// `start-ok` sent, waiting for `tune` (or a 403 close).
    AwaitingTune,
    /// `tune-ok` and `open` sent.
    AwaitingOpenOk,
    Open,
    /// A `connection.close` went out; waiting for `close-ok`.
    Closing {
        deadline: Instant,
        error: ConnectionError,
    },
    Closed,
}

/// One AMQP connection, without IO. See the [crate docs](crate) for the
/// contract.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    state: State,
    handshake_deadline: Instant,
    read_buf: BytesMut,
    /// Outgoing bytes that precede `write_buf`: sealed pieces of it and
    /// large bodies, not copied (see `publish_bytes`).
    out_chunks: VecDeque<Bytes>,
    write_buf: BytesMut,
    events: VecDeque<Event>,
    channels: Channels,
    /// Connection-level commands awaiting a reply (`update-secret`).
    connection_ops: VecDeque<OpId>,
    tuning: Option<Tuning>,
    heartbeat: Heartbeat,
    server_properties: FieldTable,
    next_op: u64,
    /// The latest time passed in; used as "now" by commands, which take none.
    now: Instant,
}

impl Connection {
    // ---- A. Construction and getters ------------------------------------

    /// Starts a connection at `now`: the protocol header is queued for
    /// [`poll_transmit`](Self::poll_transmit) at once.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        let mut write_buf = BytesMut::with_capacity(4096);
        write_buf.extend_from_slice(&PROTOCOL_HEADER);
        Self {
            handshake_deadline: now + config.handshake_timeout,
            config,
            state: State::AwaitingStart,
            read_buf: BytesMut::with_capacity(4096),
            out_chunks: VecDeque::new(),
            write_buf,
            events: VecDeque::new(),
            channels: Channels::default(),
            connection_ops: VecDeque::new(),
            tuning: None,
            heartbeat: Heartbeat::new(0, now),
            server_properties: FieldTable::default(),
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
        self.tuning
    }

    /// The server's `connection.start` properties (product, version,
    /// capabilities...). Empty before `start` arrives.
    pub fn server_properties(&self) -> &FieldTable {
        &self.server_properties
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
        self.read_buf.extend_from_slice(data);
        self.process_input(now);
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

    /// Tells the core that the transport reached end of stream.
    pub fn handle_eof(&mut self, now: Instant) {
        self.tick(now);
        match &self.state {
            State::Closed => {}
            State::Closing { error, .. } => {
                let error = error.clone();
                self.finish(error);
            }
            _ => self.finish(ConnectionError::UnexpectedEof),
        }
    }

    /// Tells the core that the transport failed; the connection is over.
    pub fn handle_transport_error(&mut self, now: Instant, error: impl std::fmt::Display) {
        self.tick(now);
        if !matches!(self.state, State::Closed) {
            self.finish(ConnectionError::Transport(error.to_string()));
        }
    }

    /// Runs the timers due at `now`: heartbeat send and monitor, handshake
    /// and close timeouts. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        match &self.state {
            State::Closed => {}
            State::Closing { deadline, error } => {
                if now >= *deadline {
                    let error = match error {
                        ConnectionError::ClosedByClient => {
                            ConnectionError::CloseTimeout(self.config.close_timeout)
                        }
                        other => other.clone(),
                    };
                    self.finish(error);
                }
            }
            State::AwaitingStart | State::AwaitingTune | State::AwaitingOpenOk
                if now >= self.handshake_deadline =>
            {
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
                } else if self.heartbeat.should_send(now) {
                    encode_heartbeat(&mut self.write_buf);
                    self.heartbeat.on_write(now);
                }
            }
        }
    }

    // ---- C. Commands: they only queue work ------------------------------

    /// Opens a channel. [`Event::Completed`] with `channel.open-ok` follows.
    /// Commands may be queued on the channel before then.
    pub fn open_channel(&mut self) -> Result<(ChannelId, OpId), UsageError> {
        self.check_open()?;
        let channel_max = self.tuning.map_or(u16::MAX, |t| t.channel_max);
        let id = self
            .channels
            .allocate(channel_max)
            .ok_or(UsageError::NoFreeChannel(channel_max))?;
        let open = Method::from(ChannelOpen::default());
        self.queue_method(id, &open)?;
        let op = self.push_pending(id, &open);
        debug!(channel = id, "opening channel");
        Ok((id, op))
    }

    /// Closes a channel normally. Its pending commands fail at once with
    /// [`ChannelError::ClosedByClient`]; frames for it are dropped until
    /// `close-ok`, which completes the returned op and frees the id.
    pub fn close_channel(&mut self, channel: ChannelId) -> Result<OpId, UsageError> {
        self.check_open()?;
        let ch = self.open_channel_mut(channel)?;
        let _ = ch;
        let close = Method::from(ChannelClose {
            reply_code: reply_code::REPLY_SUCCESS,
            reply_text: ShortStr::from_static("closed by client"),
            class_id: 0,
            method_id: 0,
        });
        self.queue_method(channel, &close)?;
        let op = self.next_op_id();
        let ch = self
            .channels
            .get_mut(channel)
            .ok_or(UsageError::ChannelNotOpen(channel))?;
        ch.lifecycle = Lifecycle::Closing(op);
        ch.content = None;
        let failed: Vec<Pending> = ch.pending.drain(..).collect();
        for p in failed {
            self.complete(p.op, channel, Err(ChannelError::ClosedByClient));
        }
        Ok(op)
    }

    /// Sends a method that expects a reply (e.g. `queue.declare` without
    /// `no_wait`). [`Event::Completed`] carries the reply.
    pub fn call(&mut self, channel: ChannelId, method: Method) -> Result<OpId, UsageError> {
        self.check_sendable(channel, &method, true)?;
        self.queue_method(channel, &method)?;
        self.note_confirm_select(channel, &method);
        Ok(self.push_pending(channel, &method))
    }

    /// Sends a method that gets no reply (`basic.ack`, `basic.nack`,
    /// `basic.reject`, or any method with `no_wait` set).
    pub fn send(&mut self, channel: ChannelId, method: Method) -> Result<(), UsageError> {
        self.check_sendable(channel, &method, false)?;
        self.queue_method(channel, &method)?;
        self.note_confirm_select(channel, &method);
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
        let mark = self.write_buf.len();
        let frame_max = self.frame_max_out();
        frame::encode_basic_publish(&mut self.write_buf, channel, publish);
        let method_len = self.write_buf.len() - mark;
        if frame_max != 0 && method_len > frame_max as usize {
            self.write_buf.truncate(mark);
            return Err(UsageError::FrameTooLarge {
                size: method_len,
                max: frame_max,
            });
        }
        // The header frame alone must fit too (huge `headers` tables): check
        // it before any body piece is sealed into `out_chunks`.
        let header_start = self.write_buf.len();
        frame::encode_header_frame(
            &mut self.write_buf,
            channel,
            BASIC_CLASS_ID,
            properties,
            body.len() as u64,
        );
        let header_len = self.write_buf.len() - header_start;
        if frame_max != 0 && header_len > frame_max as usize {
            self.write_buf.truncate(mark);
            return Err(UsageError::FrameTooLarge {
                size: header_len,
                max: frame_max,
            });
        }
        match body {
            BodyRef::Slice(b) => frame::encode_body(&mut self.write_buf, channel, b, frame_max),
            BodyRef::Shared(b) => frame::encode_body_chunks(
                &mut self.write_buf,
                &mut self.out_chunks,
                channel,
                b,
                frame_max,
            ),
        }
        let ch = self
            .channels
            .get_mut(channel)
            .ok_or(UsageError::ChannelNotOpen(channel))?;
        Ok(ch.next_publish_seq.as_mut().map(|seq| {
            let this = *seq;
            *seq += 1;
            this
        }))
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
        self.queue_method(0, &method)?;
        let op = self.next_op_id();
        self.connection_ops.push_back(op);
        Ok(op)
    }

    /// Closes the connection: every pending command fails now with
    /// [`ChannelError::ConnectionClosed`], and [`Event::ConnectionClosed`]
    /// follows when `close-ok` arrives or `close_timeout` passes.
    pub fn close(&mut self, now: Instant, code: u16, text: &str) -> Result<(), UsageError> {
        self.tick(now);
        if matches!(self.state, State::Closing { .. } | State::Closed) {
            return Err(UsageError::Closed);
        }
        // Truncate rather than refuse: the text is informational.
        let text = truncate_utf8(text, ShortStr::MAX_LEN);
        self.start_closing(ConnectionError::ClosedByClient, code, text);
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

    /// Appends every queued outgoing byte to `buf`, and returns how many.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> usize {
        let mut n = 0;
        for chunk in self.out_chunks.drain(..) {
            n += chunk.len();
            buf.extend_from_slice(&chunk);
        }
        n += self.write_buf.len();
        if n > 0 {
            buf.extend_from_slice(&self.write_buf);
            self.write_buf.clear();
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
        let mut n = 0;
        for chunk in self.out_chunks.drain(..) {
            n += chunk.len();
            chunks.push_back(chunk);
        }
        if !self.write_buf.is_empty() {
            n += self.write_buf.len();
            chunks.push_back(self.write_buf.split().freeze());
        }
        if n > 0 {
            self.heartbeat.on_write(self.now);
        }
        n
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has bytes to give.
    pub fn has_transmit(&self) -> bool {
        !self.write_buf.is_empty() || !self.out_chunks.is_empty()
    }

    /// The next event, in the order things happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called;
    /// `None` when no timer is running (closed, or heartbeats disabled and
    /// no handshake or close under way).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Closed => None,
            State::Closing { deadline, .. } => Some(*deadline),
            State::AwaitingStart | State::AwaitingTune => Some(self.handshake_deadline),
            State::AwaitingOpenOk => Some(
                self.heartbeat
                    .next_deadline()
                    .map_or(self.handshake_deadline, |h| h.min(self.handshake_deadline)),
            ),
            State::Open => self.heartbeat.next_deadline(),
        }
    }

    // ---- Internals ----------------------------------------------------------

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
        self.tuning.map_or(frame::FRAME_MIN_SIZE, |t| t.frame_max)
    }

    /// The largest frame we accept.
    fn frame_max_in(&self) -> u32 {
        match self.tuning {
            Some(t) if t.frame_max != 0 => t.frame_max,
            Some(_) => u32::MAX,
            // Before tune the server may not exceed our own proposal.
            None => self.config.frame_max.max(frame::FRAME_MIN_SIZE),
        }
    }

    /// Encodes a method frame, refusing one larger than `frame_max` (e.g. a
    /// declare with huge arguments) instead of letting the server kill the
    /// connection for it.
    fn queue_method(&mut self, channel: ChannelId, method: &Method) -> Result<(), UsageError> {
        let mark = self.write_buf.len();
        encode_method(&mut self.write_buf, channel, method);
        let size = self.write_buf.len() - mark;
        let max = self.frame_max_out();
        if max != 0 && size > max as usize {
            self.write_buf.truncate(mark);
            return Err(UsageError::FrameTooLarge { size, max });
        }
        Ok(())
    }

    fn push_pending(&mut self, channel: ChannelId, method: &Method) -> OpId {
        let op = self.next_op_id();
        if let (Some(replies), Some(ch)) =
            (method::reply_ids(method), self.channels.get_mut(channel))
        {
            ch.pending.push_back(Pending { op, replies });
        }
        op
    }

    fn note_confirm_select(&mut self, channel: ChannelId, method: &Method) {
        // The broker counts publishes from the moment it reads
        // confirm.select, so the count starts when we send it.
        if let (Method::ConfirmSelect(_), Some(ch)) = (method, self.channels.get_mut(channel)) {
            ch.next_publish_seq.get_or_insert(1);
        }
    }

    fn complete(&mut self, op: OpId, channel: ChannelId, result: Result<Reply, ChannelError>) {
        self.events.push_back(Event::Completed {
            op,
            channel,
            result,
        });
    }

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
                self.handle_while_closing(raw);
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

    /// After we sent `connection.close`, only `close` and `close-ok` on
    /// channel 0 matter (spec 2.2.4).
    fn handle_while_closing(&mut self, raw: frame::RawFrame) {
        if raw.channel != 0 || raw.kind != FrameType::Method {
            return;
        }
        let State::Closing { error, .. } = &self.state else {
            return;
        };
        let error = error.clone();
        match Method::decode(raw.payload) {
            Ok(Method::ConnectionCloseOk(_)) => self.finish(error),
            Ok(Method::ConnectionClose(_)) => {
                // Both sides closed at once: answer, and we are done.
                encode_method(&mut self.write_buf, 0, &ConnectionCloseOk {}.into());
                self.finish(error);
            }
            _ => {}
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
            frame => {
                let channel = frame.channel();
                if !self.is_open() || self.channels.get(channel).is_none() {
                    self.violation(ProtocolViolation::UnknownChannel(channel));
                    return;
                }
                match frame {
                    Frame::Method { method, .. } => self.handle_channel_method(channel, method),
                    Frame::Header { header, .. } => {
                        self.handle_header(channel, header.properties, header.body_size)
                    }
                    Frame::Body { payload, .. } => self.handle_body(channel, payload),
                    Frame::Heartbeat { .. } => {}
                }
            }
        }
    }

    fn handle_connection_method(&mut self, now: Instant, method: Method) {
        match (&self.state, method) {
            (_, Method::ConnectionClose(close)) => {
                let reason = close_reason(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                encode_method(&mut self.write_buf, 0, &ConnectionCloseOk {}.into());
                warn!(code = reason.code, text = %reason.text, "server closed the connection");
                let error = if matches!(self.state, State::AwaitingTune)
                    && reason.code == reply_code::ACCESS_REFUSED
                {
                    ConnectionError::AuthenticationFailed(reason)
                } else {
                    ConnectionError::ClosedByServer(reason)
                };
                self.finish(error);
            }
            (State::AwaitingStart, Method::ConnectionStart(start)) => self.on_start(start),
            (State::AwaitingTune, Method::ConnectionTune(tune)) => self.on_tune(now, tune),
            (State::AwaitingOpenOk, Method::ConnectionOpenOk(_)) => {
                self.state = State::Open;
                let tuning = self.tuning.unwrap_or(Tuning {
                    channel_max: self.config.channel_max,
                    frame_max: self.config.frame_max,
                    heartbeat: 0,
                });
                debug!(?tuning, "connection open");
                self.events.push_back(Event::Connected(tuning));
            }
            (State::Open, Method::ConnectionBlocked(b)) => self.events.push_back(Event::Blocked {
                reason: b.reason.to_string(),
            }),
            (State::Open, Method::ConnectionUnblocked(_)) => {
                self.events.push_back(Event::Unblocked)
            }
            (State::Open, Method::ConnectionUpdateSecretOk(m)) => {
                match self.connection_ops.pop_front() {
                    Some(op) => self.complete(op, 0, Ok(Reply::Method(m.into()))),
                    None => self.unexpected_method(0, ConnectionUpdateSecretOk::NAME),
                }
            }
            (_, other) => self.unexpected_method(0, other.name()),
        }
    }

    fn handle_channel_method(&mut self, channel: ChannelId, method: Method) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if let Lifecycle::Closing(op) = ch.lifecycle {
            match method {
                Method::ChannelCloseOk(m) => {
                    self.channels.free(channel);
                    self.complete(op, channel, Ok(Reply::Method(m.into())));
                    debug!(channel, "channel closed");
                }
                Method::ChannelClose(_) => {
                    // Both sides closed at once; our close-ok still comes.
                    encode_method(&mut self.write_buf, channel, &ChannelCloseOk {}.into());
                }
                _ => {}
            }
            return;
        }
        if ch.content.is_some() {
            self.violation(ProtocolViolation::UnexpectedFrame {
                channel,
                what: "method frame while content was expected",
            });
            return;
        }
        let ids = (method.class_id(), method.method_id());
        let front_matches = ch.pending.front().is_some_and(|p| p.replies.contains(&ids));
        match method {
            Method::ChannelClose(close) => {
                let reason = close_reason(
                    close.reply_code,
                    &close.reply_text,
                    close.class_id,
                    close.method_id,
                );
                encode_method(&mut self.write_buf, channel, &ChannelCloseOk {}.into());
                warn!(channel, code = reason.code, text = %reason.text, "server closed a channel");
                if let Some(ch) = self.channels.free(channel) {
                    for p in ch.pending {
                        self.complete(
                            p.op,
                            channel,
                            Err(ChannelError::ClosedByServer(reason.clone())),
                        );
                    }
                }
                self.events
                    .push_back(Event::ChannelClosed { channel, reason });
            }
            Method::BasicDeliver(m) => {
                ch.content = Some(assembly(ContentMethod::Deliver(m), None));
            }
            Method::BasicReturn(m) => {
                ch.content = Some(assembly(ContentMethod::Return(m), None));
            }
            Method::BasicGetOk(m) if front_matches => {
                let op = ch.pending.pop_front().map(|p| p.op);
                ch.content = Some(assembly(ContentMethod::GetOk(m), op));
            }
            Method::BasicAck(m) if ch.next_publish_seq.is_some() => {
                self.events.push_back(Event::Ack {
                    channel,
                    delivery_tag: m.delivery_tag,
                    multiple: m.multiple,
                });
            }
            Method::BasicNack(m) if ch.next_publish_seq.is_some() => {
                self.events.push_back(Event::Nack {
                    channel,
                    delivery_tag: m.delivery_tag,
                    multiple: m.multiple,
                });
            }
            Method::BasicCancel(m) => {
                if !m.no_wait {
                    encode_method(
                        &mut self.write_buf,
                        channel,
                        &BasicCancelOk {
                            consumer_tag: m.consumer_tag.clone(),
                        }
                        .into(),
                    );
                }
                self.events.push_back(Event::ConsumerCancelled {
                    channel,
                    consumer_tag: m.consumer_tag,
                });
            }
            Method::ChannelFlow(m) => {
                encode_method(
                    &mut self.write_buf,
                    channel,
                    &ChannelFlowOk { active: m.active }.into(),
                );
                self.events.push_back(Event::Flow {
                    channel,
                    active: m.active,
                });
            }
            method if front_matches => {
                let Some(p) = ch.pending.pop_front() else {
                    return;
                };
                if let Method::ChannelOpenOk(_) = method {
                    ch.lifecycle = Lifecycle::Open;
                }
                self.complete(p.op, channel, Ok(Reply::Method(method)));
            }
            other => self.unexpected_method(channel, other.name()),
        }
    }

    fn handle_header(&mut self, channel: ChannelId, properties: BasicProperties, body_size: u64) {
        let max = self.config.max_body_size;
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if let Lifecycle::Closing(_) = ch.lifecycle {
            return;
        }
        match &mut ch.content {
            Some(a) if a.header.is_none() => {
                if body_size > max {
                    self.violation(ProtocolViolation::BodyTooLarge {
                        channel,
                        size: body_size,
                        max,
                    });
                    return;
                }
                a.header = Some((properties, body_size));
                if body_size == 0 {
                    self.finish_content(channel);
                }
            }
            _ => self.violation(ProtocolViolation::UnexpectedFrame {
                channel,
                what: "content header without a content method",
            }),
        }
    }

    fn handle_body(&mut self, channel: ChannelId, payload: Bytes) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if let Lifecycle::Closing(_) = ch.lifecycle {
            return;
        }
        match &mut ch.content {
            Some(Assembly {
                header: Some((_, size)),
                body,
                ..
            }) => {
                let declared = *size;
                if body.len() + payload.len() as u64 > declared {
                    self.violation(ProtocolViolation::BodyOverrun { channel, declared });
                    return;
                }
                body.push(payload);
                if body.len() == declared {
                    self.finish_content(channel);
                }
            }
            _ => self.violation(ProtocolViolation::UnexpectedFrame {
                channel,
                what: "content body without a content header",
            }),
        }
    }

    fn finish_content(&mut self, channel: ChannelId) {
        let Some(mut assembly) = self
            .channels
            .get_mut(channel)
            .and_then(|ch| ch.content.take())
        else {
            return;
        };
        let Some((properties, _)) = assembly.header.take() else {
            return;
        };
        let get_op = assembly.get_op;
        let delivery = assembly.into_delivery(properties);
        match get_op {
            Some(op) => self.complete(op, channel, Ok(Reply::Message(delivery))),
            None => self.events.push_back(Event::Delivery { channel, delivery }),
        }
    }

    fn unexpected_method(&mut self, channel: ChannelId, method: &'static str) {
        self.violation(ProtocolViolation::UnexpectedMethod { channel, method });
    }

    /// The server broke the protocol: close with the matching code.
    fn violation(&mut self, violation: ProtocolViolation) {
        if matches!(self.state, State::Closing { .. } | State::Closed) {
            return;
        }
        warn!(%violation, "protocol violation by the server");
        let code = violation.reply_code();
        // RabbitMQ's style: "FRAME_ERROR - what happened".
        let text = format!("{} - {violation}", reply_code::name(code));
        let text = truncate_utf8(&text, ShortStr::MAX_LEN);
        self.start_closing(ConnectionError::Protocol(violation), code, text);
    }

    fn start_closing(&mut self, error: ConnectionError, code: u16, text: &str) {
        let reply_text = ShortStr::new(text).unwrap_or_default();
        encode_method(
            &mut self.write_buf,
            0,
            &ConnectionClose {
                reply_code: code,
                reply_text,
                class_id: 0,
                method_id: 0,
            }
            .into(),
        );
        self.fail_all(&error);
        self.state = State::Closing {
            deadline: self.now + self.config.close_timeout,
            error,
        };
    }

    fn fail_all(&mut self, error: &ConnectionError) {
        let channels: Vec<(ChannelId, Channel)> = self.channels.drain().collect();
        let why = ChannelError::ConnectionClosed(error.clone());
        for (id, ch) in channels {
            if let Lifecycle::Closing(op) = ch.lifecycle {
                self.complete(op, id, Err(why.clone()));
            }
            if let Some(op) = ch.content.and_then(|a| a.get_op) {
                self.complete(op, id, Err(why.clone()));
            }
            for p in ch.pending {
                self.complete(p.op, id, Err(why.clone()));
            }
        }
        while let Some(op) = self.connection_ops.pop_front() {
            self.complete(op, 0, Err(why.clone()));
        }
    }

    /// The end: fail what is left and report why. Queued bytes (e.g. a
    /// `close-ok`) stay available to `poll_transmit`.
    fn finish(&mut self, error: ConnectionError) {
        if matches!(self.state, State::Closed) {
            return;
        }
        debug!(%error, "connection closed");
        self.fail_all(&error);
        self.state = State::Closed;
        self.read_buf = BytesMut::new();
        self.events.push_back(Event::ConnectionClosed(error));
    }
}

/// A body to publish: borrowed (copied into the write buffer) or shared
/// (large pieces sent as slices of it).
enum BodyRef<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes),
}

impl BodyRef<'_> {
    fn len(&self) -> usize {
        match self {
            BodyRef::Slice(b) => b.len(),
            BodyRef::Shared(b) => b.len(),
        }
    }
}

fn assembly(method: ContentMethod, get_op: Option<OpId>) -> Assembly {
    Assembly {
        method,
        get_op,
        header: None,
        body: Body::Empty,
    }
}

fn close_reason(code: u16, text: &ShortStr, class_id: u16, method_id: u16) -> CloseReason {
    CloseReason {
        code,
        text: text.to_string(),
        class_id,
        method_id,
    }
}

/// The channel in a frame header, if 3 bytes of it are there.
fn peek_channel(buf: &[u8]) -> ChannelId {
    match buf {
        [_, hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Negotiates one limit: the smaller of two proposals, where 0 means "no
/// limit" on either side.
pub(crate) fn negotiate<T: Copy + Ord + Default>(client: T, server: T) -> T {
    let zero = T::default();
    match (client == zero, server == zero) {
        (true, _) => server,
        (_, true) => client,
        _ => client.min(server),
    }
}
