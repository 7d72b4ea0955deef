//! The state the driver and every handle share: the core connection and
//! who is waiting for what. One short lock per operation; no task hop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use carehare_core::error::ConnectionError;
use carehare_core::types::{ChannelId, OpId, ShortStr};
use carehare_core::{Connection, ContentMethod, Event, Reply, Tuning};
use futures_channel::oneshot;
use futures_util::task::AtomicWaker;
use tracing::{debug, warn};

use crate::error::Error;
use crate::message::Message;

pub(crate) type OpSender = oneshot::Sender<Result<Reply, Error>>;
pub(crate) type ConfirmSender = oneshot::Sender<Result<(), Error>>;

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the driver when a command queued bytes to send.
    pub(crate) driver: AtomicWaker,
}

/// A publish channel: one per exchange, in confirm mode.
pub(crate) struct Publisher {
    pub(crate) exchange: String,
    /// Unconfirmed publishes by sequence number.
    pub(crate) pending: BTreeMap<u64, ConfirmSender>,
}

/// A consumer's mailbox. Bounded by the prefetch count: RabbitMQ never has
/// more than `prefetch` unacked deliveries out, and we hold at most those.
#[derive(Default)]
pub(crate) struct Mailbox {
    pub(crate) messages: VecDeque<Message>,
    pub(crate) end: Option<Error>,
    pub(crate) waker: Option<Waker>,
}

impl Mailbox {
    fn finish(&mut self, why: Error) {
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
    pub(crate) ops: HashMap<OpId, OpSender>,
    /// Short-lived channels: the op whose success closes the channel.
    pub(crate) temporary: HashMap<OpId, ChannelId>,
    pub(crate) exchanges: HashMap<String, ChannelId>,
    pub(crate) publishers: HashMap<ChannelId, Publisher>,
    pub(crate) consumers: HashMap<ChannelId, Mailbox>,
    pub(crate) connected: Option<oneshot::Sender<Result<Tuning, ConnectionError>>>,
    pub(crate) outcome: Option<ConnectionError>,
    pub(crate) closed_waiters: Vec<oneshot::Sender<ConnectionError>>,
}

impl Shared {
    pub(crate) fn new(
        conn: Connection,
        connected: oneshot::Sender<Result<Tuning, ConnectionError>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                conn,
                ops: HashMap::new(),
                temporary: HashMap::new(),
                exchanges: HashMap::new(),
                publishers: HashMap::new(),
                consumers: HashMap::new(),
                connected: Some(connected),
                outcome: None,
                closed_waiters: Vec::new(),
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
        self.outcome.clone().map(Error::ConnectionClosed)
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
                    if let Some(mailbox) = self.consumers.get_mut(&channel) {
                        mailbox.messages.push_back(Message {
                            body: delivery.body,
                            delivery_tag: d.delivery_tag,
                            redelivered: d.redelivered,
                            exchange: d.exchange,
                            routing_key: d.routing_key,
                            consumer_tag: d.consumer_tag,
                            properties: delivery.properties,
                        });
                        if let Some(w) = mailbox.waker.take() {
                            w.wake();
                        }
                    }
                }
                ContentMethod::Return(r) => {
                    debug!(
                        channel,
                        code = r.reply_code,
                        "basic.return (not mandatory here)"
                    );
                }
                _ => {}
            },
            Event::Ack {
                channel,
                delivery_tag,
                multiple,
            } => {
                self.settle(channel, delivery_tag, multiple, || Ok(()));
            }
            Event::Nack {
                channel,
                delivery_tag,
                multiple,
            } => {
                self.settle(channel, delivery_tag, multiple, || {
                    Err(Error::ServerSentNack)
                });
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                warn!(channel, %consumer_tag, "RabbitMQ cancelled a consumer");
                if let Some(mailbox) = self.consumers.get_mut(&channel) {
                    mailbox.finish(Error::ConsumerCancelledByServer);
                }
                let _ = self.conn.close_channel(channel);
            }
            Event::ChannelClosed { channel, reason } => {
                let why = Error::ChannelClosedByServer(reason);
                if let Some(p) = self.publishers.remove(&channel) {
                    self.exchanges.remove(&p.exchange);
                    for (_, tx) in p.pending {
                        let _ = tx.send(Err(why.clone()));
                    }
                }
                if let Some(mailbox) = self.consumers.get_mut(&channel) {
                    mailbox.finish(why);
                }
            }
            Event::ConnectionClosed(error) => self.on_closed(error),
            Event::Blocked { reason } => warn!(%reason, "RabbitMQ blocked publishing"),
            Event::Unblocked => debug!("RabbitMQ unblocked publishing"),
            Event::Flow { .. } => {}
            _ => {}
        }
    }

    fn settle(
        &mut self,
        channel: ChannelId,
        tag: u64,
        multiple: bool,
        result: impl Fn() -> Result<(), Error>,
    ) {
        let Some(p) = self.publishers.get_mut(&channel) else {
            return;
        };
        if multiple {
            let rest = p.pending.split_off(&(tag.saturating_add(1)));
            for (_, tx) in std::mem::replace(&mut p.pending, rest) {
                let _ = tx.send(result());
            }
        } else if let Some(tx) = p.pending.remove(&tag) {
            let _ = tx.send(result());
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
            for (_, tx) in p.pending {
                let _ = tx.send(Err(why.clone()));
            }
        }
        for mailbox in self.consumers.values_mut() {
            mailbox.finish(why.clone());
        }
        for tx in self.closed_waiters.drain(..) {
            let _ = tx.send(error.clone());
        }
        self.outcome = Some(error);
    }

    /// The channel that publishes to `exchange`, opened (pipelined with
    /// `confirm.select`, no round trip) if there is none yet.
    pub(crate) fn publish_channel(&mut self, exchange: &str) -> Result<ChannelId, Error> {
        if let Some(ch) = self.exchanges.get(exchange) {
            return Ok(*ch);
        }
        let (ch, _open) = self.conn.open_channel()?;
        let select = carehare_core::method::ConfirmSelect { no_wait: false };
        if let Err(e) = self.conn.call(ch, select.into()) {
            let _ = self.conn.close_channel(ch);
            return Err(e.into());
        }
        self.exchanges.insert(exchange.to_string(), ch);
        self.publishers.insert(
            ch,
            Publisher {
                exchange: exchange.to_string(),
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

    fn publish(
        inner: &mut Inner,
        exchange: &str,
    ) -> (ChannelId, oneshot::Receiver<Result<(), Error>>) {
        let ch = inner.publish_channel(exchange).unwrap();
        let publish = BasicPublish {
            exchange: short(exchange).unwrap(),
            ..Default::default()
        };
        let seq = inner
            .conn
            .publish(ch, &publish, &BasicProperties::default(), b"x")
            .unwrap()
            .unwrap();
        let (tx, rx) = oneshot::channel();
        inner
            .publishers
            .get_mut(&ch)
            .unwrap()
            .pending
            .insert(seq, tx);
        (ch, rx)
    }

    fn settled(rx: &mut oneshot::Receiver<Result<(), Error>>) -> Option<Result<(), Error>> {
        rx.try_recv().ok().flatten()
    }

    #[test]
    fn multiple_acks_and_nacks_settle_every_covered_publish() {
        let shared = open_inner();
        let mut inner = shared.lock();
        let mut rx: Vec<_> = (0..5).map(|_| publish(&mut inner, "ex")).collect();
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
        let mut inner = shared.lock();
        let (ch, mut first) = publish(&mut inner, "missing");
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
        let (again, _rx) = publish(&mut inner, "missing");
        assert_eq!(again, ch, "a fresh channel (the freed id is reused)");
        assert_eq!(inner.publishers[&again].pending.len(), 1);
    }
}
