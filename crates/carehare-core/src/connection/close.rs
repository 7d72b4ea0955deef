//! How a connection ends: a close the client starts (its own, or for a
//! protocol fault of the server's), the server's close, the transport's
//! end, and the last step, which reports why.
//!
//! Invariants:
//! - Every move to `Closing` or `Closed` goes through [`Ending`].
//! - Entering either completes every op still waiting (each channel's and
//!   the connection-level ones) with `ChannelError::ConnectionClosed` and
//!   empties the channel table: nothing waits forever.
//! - `connection.close` is queued once, when `Closing` starts; while
//!   `Closing`, only `close` and `close-ok` on channel 0 are read, and
//!   heartbeats still go out (the server's monitor runs until it answers).
//! - `Event::ConnectionClosed` is queued once, on entering `Closed`, and is
//!   the last event; the read buffer is dropped then.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tracing::{debug, warn};

use super::outbox::Outbox;
use super::state::State;
use crate::channel::Channels;
use crate::error::{ChannelError, CloseReason, ConnectionError, ProtocolViolation, reply_code};
use crate::event::Event;
use crate::frame::{FrameType, RawFrame};
use crate::method::{ConnectionClose, ConnectionCloseOk, Method};
use crate::types::{OpId, ShortStr};

/// The parts of a connection the close path works on, borrowed for one
/// step.
pub(super) struct Ending<'a> {
    pub(super) state: &'a mut State,
    pub(super) out: &'a mut Outbox,
    pub(super) channels: &'a mut Channels,
    /// Connection-level commands awaiting a reply.
    pub(super) connection_ops: &'a mut VecDeque<OpId>,
    pub(super) read_buf: &'a mut BytesMut,
    /// The latest time given to an input.
    pub(super) now: Instant,
    /// How long a close waits for `close-ok`.
    pub(super) close_timeout: Duration,
}

impl Ending<'_> {
    /// The server broke the protocol: close with the matching code.
    pub(super) fn violation(&mut self, violation: ProtocolViolation) {
        if self.state.ending() {
            return;
        }
        warn!(%violation, "protocol violation by the server");
        let code = violation.reply_code();
        // RabbitMQ's style: "FRAME_ERROR - what happened".
        let text = format!("{} - {violation}", reply_code::name(code));
        let text = truncate_utf8(&text, ShortStr::MAX_LEN);
        self.start_closing(ConnectionError::Protocol(violation), code, text);
    }

    /// Queues `connection.close`, fails everything that waits, and waits
    /// for `close-ok` until `close_timeout` passes.
    pub(super) fn start_closing(&mut self, error: ConnectionError, code: u16, text: &str) {
        let reply_text = ShortStr::new(text).unwrap_or_default();
        self.out.method(
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
        *self.state = State::Closing {
            deadline: self.now + self.close_timeout,
            error,
        };
    }

    /// Ends now for `error`, telling the server why with a
    /// `connection.close` whose `close-ok` is not waited for (the server
    /// is not reading, e.g. while it blocks us).
    pub(super) fn abandon(&mut self, error: ConnectionError, code: u16, text: &str) {
        if self.state.ending() {
            return;
        }
        self.start_closing(error.clone(), code, text);
        self.finish(error);
    }

    /// The end: fail what is left and report why. Queued bytes (e.g. a
    /// `close-ok`) stay available to `poll_transmit`.
    pub(super) fn finish(&mut self, error: ConnectionError) {
        if matches!(self.state, State::Closed) {
            return;
        }
        debug!(%error, "connection closed");
        self.fail_all(&error);
        *self.state = State::Closed;
        *self.read_buf = BytesMut::new();
        self.out.event(Event::ConnectionClosed(error));
    }

    /// The server's `connection.close`: answer it, and the connection is
    /// over. A 403 during the handshake means the credentials were refused.
    pub(super) fn server_closed(&mut self, close: ConnectionClose) {
        let reason = CloseReason::new(
            close.reply_code,
            &close.reply_text,
            close.class_id,
            close.method_id,
        );
        self.out.method(0, &ConnectionCloseOk {}.into());
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

    /// After we sent `connection.close`, only `close` and `close-ok` on
    /// channel 0 matter (spec 2.2.4).
    pub(super) fn while_closing(&mut self, raw: RawFrame) {
        if raw.channel != 0 || raw.kind != FrameType::Method {
            return;
        }
        let State::Closing { error, .. } = &*self.state else {
            return;
        };
        let error = error.clone();
        match Method::decode(raw.payload) {
            Ok(Method::ConnectionCloseOk(_)) => self.finish(error),
            Ok(Method::ConnectionClose(_)) => {
                // Both sides closed at once: answer, and we are done.
                self.out.method(0, &ConnectionCloseOk {}.into());
                self.finish(error);
            }
            _ => {}
        }
    }

    /// The transport reached end of stream: a close under way ends as it
    /// was going to; otherwise the server vanished.
    pub(super) fn eof(&mut self) {
        match &*self.state {
            State::Closed => {}
            State::Closing { error, .. } => {
                let error = error.clone();
                self.finish(error);
            }
            _ => self.finish(ConnectionError::UnexpectedEof),
        }
    }

    /// Gives up on a close whose `close-ok` is overdue at `now`.
    pub(super) fn on_timeout(&mut self, now: Instant) {
        let State::Closing { deadline, error } = &*self.state else {
            return;
        };
        if now < *deadline {
            return;
        }
        let error = match error {
            ConnectionError::ClosedByClient => ConnectionError::CloseTimeout(self.close_timeout),
            other => other.clone(),
        };
        self.finish(error);
    }

    fn fail_all(&mut self, error: &ConnectionError) {
        let why = ChannelError::ConnectionClosed(error.clone());
        for (id, channel) in self.channels.drain() {
            for op in channel.into_unanswered() {
                self.out.complete(op, id, Err(why.clone()));
            }
        }
        while let Some(op) = self.connection_ops.pop_front() {
            self.out.complete(op, 0, Err(why.clone()));
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(super) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
