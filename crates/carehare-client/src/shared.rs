//! The state the driver and every handle share: the core connection and
//! who is waiting for what. One short lock per operation; no task hop.

use std::collections::{BTreeMap, HashMap, VecDeque};

// Ids we allocate (channels, ops, tokens) and the caller's exchange names:
// keys no peer chooses, so no need for SipHash's DoS resistance.
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use carehare_core::error::ConnectionError;
use carehare_core::method::Method;
use carehare_core::types::{ChannelId, OpId, ShortStr};
use carehare_core::{Connection, ContentMethod, Event, Reply, Tuning};
use futures_channel::oneshot;
use futures_util::task::AtomicWaker;
use tracing::{debug, warn};

use crate::error::Error;
use crate::message::Message;
use crate::publish::{Held, PendingConfirm};

pub(crate) type OpSender = oneshot::Sender<Result<Reply, Error>>;
pub(crate) type RpcWaiter = oneshot::Sender<Result<Message, Error>>;

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the driver when a command queued bytes to send.
    pub(crate) driver: AtomicWaker,
}

/// A publish channel: one per exchange, in confirm mode.
pub(crate) struct PublishChannel {
    /// The exchange this channel publishes to; `None` for an RPC channel,
    /// which publishes anywhere.
    pub(crate) exchange: Option<String>,
    /// Unconfirmed publishes by sequence number.
    pub(crate) pending: BTreeMap<u64, PendingConfirm>,
}

/// A consumer's mailbox. Bounded: by the prefetch count (RabbitMQ never has
/// more unacked deliveries out), or for a stream consumer by a larger limit
/// (streams deliver whole chunks past the prefetch).
#[derive(Default)]
pub(crate) struct Mailbox {
    /// The most messages held: a longer queue here is a server fault.
    pub(crate) limit: u32,
    pub(crate) messages: VecDeque<Message>,
    pub(crate) end: Option<Error>,
    pub(crate) waker: Option<Waker>,
}

/// Consumer mailboxes, keyed by a registration token rather than by
/// channel id: after a server `channel.close` the core frees the id at once
/// and a new channel may take it, while the old handle still exists. The
/// token keeps the old handle from reading, acking or closing the new one.
#[derive(Default)]
pub(crate) struct Consumers {
    /// The live registration of each channel.
    by_channel: FxHashMap<ChannelId, u64>,
    boxes: FxHashMap<u64, (ChannelId, Mailbox)>,
    next: u64,
}

impl Consumers {
    /// A new mailbox for `channel`; returns its token.
    /// A new mailbox for `channel` holding at most `limit` messages (the
    /// consumer's prefetch; 0 for a channel that receives no deliveries);
    /// returns its token.
    pub(crate) fn register(&mut self, channel: ChannelId, limit: u32) -> u64 {
        self.next += 1;
        let token = self.next;
        self.by_channel.insert(channel, token);
        let mailbox = Mailbox {
            limit,
            ..Mailbox::default()
        };
        self.boxes.insert(token, (channel, mailbox));
        token
    }

    /// The live mailbox on `channel`, if any.
    pub(crate) fn on_channel(&mut self, channel: ChannelId) -> Option<&mut Mailbox> {
        let token = self.by_channel.get(&channel)?;
        self.boxes.get_mut(token).map(|(_, m)| m)
    }

    /// Unlinks `channel` (its id is being freed) and returns its mailbox.
    pub(crate) fn detach(&mut self, channel: ChannelId) -> Option<&mut Mailbox> {
        let token = self.by_channel.remove(&channel)?;
        self.boxes.get_mut(&token).map(|(_, m)| m)
    }

    pub(crate) fn get(&mut self, token: u64) -> Option<&mut Mailbox> {
        self.boxes.get_mut(&token).map(|(_, m)| m)
    }

    pub(crate) fn get_ref(&self, token: u64) -> Option<&Mailbox> {
        self.boxes.get(&token).map(|(_, m)| m)
    }

    /// Whether `token` still owns its channel (so commands on it are ours).
    pub(crate) fn owns_channel(&self, token: u64) -> bool {
        self.boxes
            .get(&token)
            .is_some_and(|(ch, _)| self.by_channel.get(ch) == Some(&token))
    }

    pub(crate) fn remove(&mut self, token: u64) -> Option<Mailbox> {
        let (channel, mailbox) = self.boxes.remove(&token)?;
        if self.by_channel.get(&channel) == Some(&token) {
            self.by_channel.remove(&channel);
        }
        Some(mailbox)
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Mailbox> {
        self.boxes.values_mut().map(|(_, m)| m)
    }
}

impl Mailbox {
    pub(crate) fn finish(&mut self, why: Error) {
        if self.end.is_none() {
            self.end = Some(why);
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    pub(crate) ops: FxHashMap<OpId, OpSender>,
    /// Short-lived channels: the op whose success closes the channel.
    pub(crate) temporary: FxHashMap<OpId, ChannelId>,
    pub(crate) exchanges: FxHashMap<String, ChannelId>,
    pub(crate) publishers: FxHashMap<ChannelId, PublishChannel>,
    /// Why RabbitMQ blocked publishing, while it does.
    pub(crate) blocked: Option<String>,
    /// Publishes waiting for `connection.unblocked`.
    pub(crate) held: VecDeque<Held>,
    /// Bumped on every blocked/unblocked change, for watchers.
    pub(crate) blocked_version: u64,
    pub(crate) blocked_wakers: Vec<Waker>,
    pub(crate) consumers: Consumers,
    /// Direct reply-to channels: replies routed by correlation id.
    pub(crate) rpc_waiters: FxHashMap<ChannelId, HashMap<ShortStr, RpcWaiter>>,
    pub(crate) connected: Option<oneshot::Sender<Result<Tuning, ConnectionError>>>,
    pub(crate) outcome: Option<ConnectionError>,
    pub(crate) closed_waiters: Vec<oneshot::Sender<ConnectionError>>,
    /// The last exchange and routing key published to, as `shortstr`s.
    pub(crate) last_exchange: Option<ShortStr>,
    pub(crate) last_routing_key: Option<ShortStr>,
}

impl Shared {
    pub(crate) fn new(
        conn: Connection,
        connected: oneshot::Sender<Result<Tuning, ConnectionError>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                conn,
                ops: FxHashMap::default(),
                temporary: FxHashMap::default(),
                exchanges: FxHashMap::default(),
                publishers: FxHashMap::default(),
                blocked: None,
                held: VecDeque::new(),
                blocked_version: 0,
                blocked_wakers: Vec::new(),
                consumers: Consumers::default(),
                rpc_waiters: FxHashMap::default(),
                connected: Some(connected),
                outcome: None,
                closed_waiters: Vec::new(),
                last_exchange: None,
                last_routing_key: None,
            }),
            driver: AtomicWaker::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for
        // failing everything; don't cascade the panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }
}

impl Inner {
    /// The error for anything attempted after the connection ended.
    pub(crate) fn closed_error(&self) -> Option<Error> {
        // While closing, the core refuses commands as misuse
        // (`UsageError::Closed`), but the user can't see that state: report
        // why it is closing instead.
        self.outcome
            .clone()
            .or_else(|| self.conn.closing_reason().cloned())
            .map(Error::ConnectionClosed)
    }

    /// Routes every event the core has queued.
    pub(crate) fn route_events(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            self.route(event);
        }
    }

    fn route(&mut self, event: Event) {
        match event {
            Event::Connected(tuning) => {
                if let Some(tx) = self.connected.take() {
                    let _ = tx.send(Ok(tuning));
                }
            }
            Event::Completed {
                op,
                channel,
                result,
            } => {
                if let Some(ch) = self.temporary.remove(&op)
                    && result.is_ok()
                {
                    // The operation is done: close its channel (fire and forget).
                    debug_assert_eq!(ch, channel);
                    let _ = self.conn.close_channel(ch);
                }
                if let Some(tx) = self.ops.remove(&op) {
                    let _ = tx.send(result.map_err(Error::from));
                }
            }
            Event::Delivery { channel, delivery } => match delivery.method {
                ContentMethod::Deliver(d) => {
                    let message = Message {
                        body: delivery.body,
                        delivery_tag: d.delivery_tag,
                        redelivered: d.redelivered,
                        exchange: d.exchange,
                        routing_key: d.routing_key,
                        consumer_tag: d.consumer_tag,
                        properties: delivery.properties,
                    };
                    if let Some(waiters) = self.rpc_waiters.get_mut(&channel) {
                        let waiter = message
                            .properties
                            .correlation_id
                            .as_ref()
                            .and_then(|id| waiters.remove(id));
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send(Ok(message));
                            }
                            // A reply after its call gave up: nobody wants it.
                            None => debug!(channel, "direct reply-to: reply for no pending call"),
                        }
                    } else if let Some(mailbox) = self.consumers.on_channel(channel) {
                        if mailbox.messages.len() >= mailbox.limit as usize {
                            let limit = mailbox.limit;
                            self.conn.close_for_violation(
                                std::time::Instant::now(),
                                carehare_core::error::ProtocolViolation::PrefetchExceeded {
                                    channel,
                                    limit,
                                },
                            );
                            return;
                        }
                        mailbox.messages.push_back(message);
                        if let Some(w) = mailbox.waker.take() {
                            w.wake();
                        }
                    }
                }
                ContentMethod::Return(r) => {
                    let claimed = self.publishers.get_mut(&channel).is_some_and(|p| {
                        p.pending
                            .values_mut()
                            .any(|c| c.claim_return(&r, &delivery.properties, &delivery.body))
                    });
                    if !claimed {
                        warn!(
                            channel,
                            code = r.reply_code,
                            "basic.return matches no pending mandatory publish"
                        );
                    }
                }
                _ => {}
            },
            Event::Ack {
                channel,
                delivery_tag,
                multiple,
            } => {
                self.settle(channel, delivery_tag, multiple, true);
            }
            Event::Nack {
                channel,
                delivery_tag,
                multiple,
            } => {
                self.settle(channel, delivery_tag, multiple, false);
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                warn!(channel, %consumer_tag, "RabbitMQ cancelled a consumer");
                // We close the channel; its id is freed at close-ok.
                if let Some(mailbox) = self.consumers.detach(channel) {
                    mailbox.finish(Error::ConsumerCancelledByServer);
                }
                let _ = self.conn.close_channel(channel);
            }
            Event::ChannelClosed { channel, reason } => {
                let why = Error::ChannelClosedByServer(reason);
                if let Some(p) = self.publishers.remove(&channel) {
                    if let Some(exchange) = &p.exchange {
                        self.exchanges.remove(exchange);
                    }
                    for (_, c) in p.pending {
                        c.fail(why.clone());
                    }
                }
                for (_, tx) in self.rpc_waiters.remove(&channel).into_iter().flatten() {
                    let _ = tx.send(Err(why.clone()));
                }
                if let Some(mailbox) = self.consumers.detach(channel) {
                    mailbox.finish(why);
                }
            }
            Event::ConnectionClosed(error) => self.on_closed(error),
            Event::Blocked { reason } => {
                warn!(%reason, "RabbitMQ blocked publishing; publishes wait");
                self.blocked = Some(reason);
                self.blocked_changed();
            }
            Event::Unblocked => {
                debug!("RabbitMQ unblocked publishing");
                self.blocked = None;
                self.blocked_changed();
                self.release_held();
            }
            Event::Flow { .. } => {}
            _ => {}
        }
    }

    /// Settles one confirm, or all up to `tag` when `multiple`.
    fn settle(&mut self, channel: ChannelId, tag: u64, multiple: bool, ack: bool) {
        let Some(p) = self.publishers.get_mut(&channel) else {
            return;
        };
        if multiple {
            let rest = p.pending.split_off(&(tag.saturating_add(1)));
            for (_, c) in std::mem::replace(&mut p.pending, rest) {
                c.settle(ack);
            }
        } else if let Some(c) = p.pending.remove(&tag) {
            c.settle(ack);
        }
    }

    fn blocked_changed(&mut self) {
        self.blocked_version += 1;
        for w in self.blocked_wakers.drain(..) {
            w.wake();
        }
    }

    fn on_closed(&mut self, error: ConnectionError) {
        debug!(%error, "connection over");
        let why = Error::ConnectionClosed(error.clone());
        if let Some(tx) = self.connected.take() {
            let _ = tx.send(Err(error.clone()));
        }
        for (_, tx) in self.ops.drain() {
            let _ = tx.send(Err(why.clone()));
        }
        self.temporary.clear();
        self.exchanges.clear();
        for (_, p) in self.publishers.drain() {
            for (_, c) in p.pending {
                c.fail(why.clone());
            }
        }
        for h in self.held.drain(..) {
            h.fail(why.clone());
        }
        for (_, waiters) in self.rpc_waiters.drain() {
            for (_, tx) in waiters {
                let _ = tx.send(Err(why.clone()));
            }
        }
        for mailbox in self.consumers.all_mut() {
            mailbox.finish(why.clone());
        }
        for tx in self.closed_waiters.drain(..) {
            let _ = tx.send(error.clone());
        }
        self.outcome = Some(error);
        self.blocked_changed();
    }

    /// Opens a channel and pipelines `methods` on it (each expecting a
    /// reply), returning the channel and the last method's op. If a method
    /// can't be queued, the channel is closed again so no id leaks; the
    /// caller wakes the driver to send that close.
    pub(crate) fn open_with(
        &mut self,
        methods: impl IntoIterator<Item = Method>,
    ) -> Result<(ChannelId, OpId), Error> {
        let (ch, mut last) = self.conn.open_channel()?;
        for method in methods {
            match self.conn.call(ch, method) {
                Ok(op) => last = op,
                Err(e) => {
                    let _ = self.conn.close_channel(ch);
                    return Err(e.into());
                }
            }
        }
        Ok((ch, last))
    }

    /// The channel that publishes to `exchange`, opened (pipelined with
    /// `confirm.select`, no round trip) if there is none yet.
    pub(crate) fn publish_channel(&mut self, exchange: &str) -> Result<ChannelId, Error> {
        if let Some(ch) = self.exchanges.get(exchange) {
            return Ok(*ch);
        }
        let select = carehare_core::method::ConfirmSelect { no_wait: false };
        // The publish path wakes the driver afterwards, on success or error.
        let (ch, _select) = self.open_with([select.into()])?;
        self.exchanges.insert(exchange.to_string(), ch);
        self.publishers.insert(
            ch,
            PublishChannel {
                exchange: Some(exchange.to_string()),
                pending: BTreeMap::new(),
            },
        );
        Ok(ch)
    }
}

/// Converts a user string to a `shortstr`, or a usage error.
pub(crate) fn short(s: &str) -> Result<ShortStr, Error> {
    ShortStr::new(s)
        .map_err(|e| Error::Usage(carehare_core::error::UsageError::StringTooLong(e.len)))
}

#[cfg(test)]
mod tests {
    //! Confirm settling, driven by scripted server frames (no broker).
    use std::time::Instant;

    use bytes::BytesMut;
    use carehare_core::frame::encode_method;
    use carehare_core::method::*;
    use carehare_core::properties::BasicProperties;
    use carehare_core::{Connection, ConnectionConfig};

    use super::*;

    fn feed(inner: &mut Inner, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method.into());
        inner.conn.handle_input(Instant::now(), &out);
        inner.route_events();
    }

    fn open_inner() -> Arc<Shared> {
        let (tx, _rx) = oneshot::channel();
        let shared = Shared::new(
            Connection::new(ConnectionConfig::default(), Instant::now()),
            tx,
        );
        {
            let mut inner = shared.lock();
            feed(
                &mut inner,
                0,
                ConnectionStart {
                    version_major: 0,
                    version_minor: 9,
                    mechanisms: "PLAIN".into(),
                    locales: "en_US".into(),
                    ..Default::default()
                },
            );
            feed(
                &mut inner,
                0,
                ConnectionTune {
                    channel_max: 10,
                    frame_max: 131_072,
                    heartbeat: 0,
                },
            );
            feed(&mut inner, 0, ConnectionOpenOk::default());
            assert!(inner.conn.is_open());
        }
        shared
    }

    fn publish(shared: &Arc<Shared>, exchange: &str) -> (ChannelId, crate::Confirmation) {
        let confirmation = crate::publish::publish(
            shared,
            bytes::Bytes::from_static(b"x"),
            exchange,
            "",
            &BasicProperties::default(),
            false,
            None,
        );
        let ch = shared.lock().exchanges[exchange];
        (ch, confirmation)
    }

    fn settled(c: &mut crate::Confirmation) -> Option<Result<(), Error>> {
        use std::future::Future;
        let waker = futures_util::task::noop_waker();
        match std::pin::Pin::new(c).poll(&mut std::task::Context::from_waker(&waker)) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn multiple_acks_and_nacks_settle_every_covered_publish() {
        let shared = open_inner();
        let mut rx: Vec<_> = (0..5).map(|_| publish(&shared, "ex")).collect();
        let mut inner = shared.lock();
        let ch = rx[0].0;
        assert!(rx.iter().all(|(c, _)| *c == ch), "one channel per exchange");
        feed(&mut inner, ch, ChannelOpenOk::default());
        feed(&mut inner, ch, ConfirmSelectOk {});
        // ack up to 2 (multiple), nack 3 alone, then ack up to 5 (multiple).
        feed(
            &mut inner,
            ch,
            BasicAck {
                delivery_tag: 2,
                multiple: true,
            },
        );
        assert!(matches!(settled(&mut rx[0].1), Some(Ok(()))));
        assert!(matches!(settled(&mut rx[1].1), Some(Ok(()))));
        assert!(settled(&mut rx[2].1).is_none());
        feed(
            &mut inner,
            ch,
            BasicNack {
                delivery_tag: 3,
                multiple: false,
                requeue: false,
            },
        );
        assert!(matches!(
            settled(&mut rx[2].1),
            Some(Err(Error::ServerSentNack))
        ));
        feed(
            &mut inner,
            ch,
            BasicNack {
                delivery_tag: 5,
                multiple: true,
                requeue: false,
            },
        );
        assert!(matches!(
            settled(&mut rx[3].1),
            Some(Err(Error::ServerSentNack))
        ));
        assert!(matches!(
            settled(&mut rx[4].1),
            Some(Err(Error::ServerSentNack))
        ));
        assert!(inner.publishers[&ch].pending.is_empty());
    }

    #[test]
    fn a_closed_publish_channel_fails_its_publishes_and_is_replaced() {
        let shared = open_inner();
        let (ch, mut first) = publish(&shared, "missing");
        let mut inner = shared.lock();
        feed(&mut inner, ch, ChannelOpenOk::default());
        feed(
            &mut inner,
            ch,
            ChannelClose {
                reply_code: 404,
                reply_text: short("NOT_FOUND - no exchange 'missing' in vhost '/'").unwrap(),
                class_id: 60,
                method_id: 40,
            },
        );
        assert!(
            matches!(settled(&mut first), Some(Err(Error::ChannelClosedByServer(r))) if r.code == 404)
        );
        drop(inner);
        let (again, _rx) = publish(&shared, "missing");
        let inner = shared.lock();
        assert_eq!(again, ch, "a fresh channel (the freed id is reused)");
        assert_eq!(inner.publishers[&again].pending.len(), 1);
    }

    #[test]
    fn a_returned_mandatory_publish_fails_with_returned_and_others_confirm() {
        let shared = open_inner();
        let props = BasicProperties::default();
        let mut routed = crate::publish::publish(&shared, "a".into(), "", "q", &props, true, None);
        let mut lost =
            crate::publish::publish(&shared, "b".into(), "", "nowhere", &props, true, None);
        let mut inner = shared.lock();
        let ch = inner.exchanges[""];
        feed(&mut inner, ch, ChannelOpenOk::default());
        feed(&mut inner, ch, ConfirmSelectOk {});
        let mut wire = BytesMut::new();
        let ret = BasicReturn {
            reply_code: 312,
            reply_text: short("NO_ROUTE").unwrap(),
            exchange: short("").unwrap(),
            routing_key: short("nowhere").unwrap(),
        };
        encode_method(&mut wire, ch, &ret.into());
        carehare_core::frame::encode_content(&mut wire, ch, 60, &props, b"b", 131_072);
        inner.conn.handle_input(Instant::now(), &wire);
        inner.route_events();
        feed(
            &mut inner,
            ch,
            BasicAck {
                delivery_tag: 2,
                multiple: true,
            },
        );
        drop(inner);
        assert!(matches!(settled(&mut routed), Some(Ok(()))));
        match settled(&mut lost) {
            Some(Err(Error::Returned(r))) => {
                assert_eq!((r.reply_code, r.reply_text.as_str()), (312, "NO_ROUTE"));
                assert_eq!(&r.body[..], b"b");
            }
            other => panic!("expected Returned, got {other:?}"),
        }
    }

    #[test]
    fn publishes_wait_while_blocked() {
        let shared = open_inner();
        feed(
            &mut shared.lock(),
            0,
            ConnectionBlocked {
                reason: short("low on memory").unwrap(),
            },
        );
        let mut out = Vec::new();
        shared.lock().conn.poll_transmit(&mut out);
        let mut c = crate::publish::publish(
            &shared,
            "x".into(),
            "",
            "q",
            &BasicProperties::default(),
            false,
            None,
        );
        let mut out = Vec::new();
        assert_eq!(
            shared.lock().conn.poll_transmit(&mut out),
            0,
            "nothing is sent while blocked"
        );
        assert_eq!(shared.lock().held.len(), 1);
        assert!(settled(&mut c).is_none());
        feed(&mut shared.lock(), 0, ConnectionUnblocked {});
        assert!(
            shared.lock().conn.poll_transmit(&mut out) > 0,
            "sent once unblocked"
        );
        let mut inner = shared.lock();
        let ch = inner.exchanges[""];
        feed(&mut inner, ch, ChannelOpenOk::default());
        feed(&mut inner, ch, ConfirmSelectOk {});
        feed(
            &mut inner,
            ch,
            BasicAck {
                delivery_tag: 1,
                multiple: false,
            },
        );
        drop(inner);
        assert!(matches!(settled(&mut c), Some(Ok(()))));
    }

    #[test]
    fn more_deliveries_than_the_prefetch_close_the_connection_with_505() {
        let shared = open_inner();
        let mut inner = shared.lock();
        let (ch, _) = inner.conn.open_channel().unwrap();
        feed(&mut inner, ch, ChannelOpenOk::default());
        inner.consumers.register(ch, 2);
        let mut out = Vec::new();
        inner.conn.poll_transmit(&mut out);
        for tag in 1..=3 {
            let mut wire = BytesMut::new();
            let deliver = BasicDeliver {
                consumer_tag: short("c").unwrap(),
                delivery_tag: tag,
                ..Default::default()
            };
            encode_method(&mut wire, ch, &deliver.into());
            carehare_core::frame::encode_content(
                &mut wire,
                ch,
                60,
                &BasicProperties::default(),
                b"m",
                131_072,
            );
            inner.conn.handle_input(Instant::now(), &wire);
            inner.route_events();
        }
        assert_eq!(
            inner.consumers.on_channel(ch).map(|m| m.messages.len()),
            Some(2)
        );
        let mut out = BytesMut::new();
        let mut raw = Vec::new();
        inner.conn.poll_transmit(&mut raw);
        out.extend_from_slice(&raw);
        match carehare_core::frame::decode_frame(&mut out, 0).unwrap() {
            Some(carehare_core::frame::Frame::Method {
                method: Method::ConnectionClose(c),
                ..
            }) => {
                assert_eq!(c.reply_code, 505, "{}", c.reply_text);
            }
            other => panic!("expected connection.close, got {other:?}"),
        }
        assert!(!inner.conn.is_open());
    }

    #[test]
    fn commands_while_closing_report_why_not_misuse() {
        let shared = open_inner();
        let mut inner = shared.lock();
        assert!(inner.closed_error().is_none());
        inner.conn.close(Instant::now(), 200, "bye").unwrap();
        // The core refuses commands now; the user is told why.
        assert!(inner.conn.open_channel().is_err());
        assert!(matches!(
            inner.closed_error(),
            Some(Error::ConnectionClosed(ConnectionError::ClosedByClient))
        ));
    }
}
