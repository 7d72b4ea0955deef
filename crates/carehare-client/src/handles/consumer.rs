//! `consumer` / `acking_consumer`: a stream of messages that you settle
//! (ack, nack or reject).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use carehare_core::Reply;
use carehare_core::method::{BasicAck, BasicConsume, BasicNack, BasicQos, BasicReject, Method};
use carehare_core::types::{AMQPValue, ChannelId, FieldTable, ShortStr};

use super::connection::Connection;
use super::wait::{reply, unexpected};
use crate::error::{Error, UsageError, short};
use crate::message::Message;
use crate::state::{Shared, Token};

/// Options for [`Connection::consumer`].
///
/// Every field defaults to "off": no prefetch limit, a shared consumer,
/// the default priority, a server-chosen tag and no arguments.
///
/// ```
/// use carehare_client::{AMQPValue, ConsumerOptions, FieldTable};
/// let mut arguments = FieldTable::default();
/// arguments.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
/// let options = ConsumerOptions {
///     prefetch_count: 100,
///     priority: Some(10),
///     consumer_tag: "billing-worker-1".into(),
///     arguments,
///     ..Default::default()
/// };
/// assert!(!options.exclusive);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerOptions {
    /// At most this many unacked messages are out to the consumer, which
    /// also bounds its buffer. At least 1 (the default is 100): 0 would
    /// mean "unlimited" to RabbitMQ and an unbounded buffer here, so it is
    /// refused with [`UsageError::InvalidArgument`](crate::UsageError::InvalidArgument).
    pub prefetch_count: u16,
    /// At most this many bytes of unacked message bodies. RabbitMQ does
    /// not implement a byte window and would close the whole connection
    /// (`540 NOT_IMPLEMENTED`) for anything but 0, so a non-zero value is
    /// refused here with [`UsageError::Unsupported`](crate::UsageError::Unsupported).
    pub prefetch_size: u32,
    /// The only consumer on the queue: RabbitMQ refuses it (403
    /// `ACCESS_REFUSED`) if the queue has other consumers, and refuses
    /// other consumers while it lives.
    pub exclusive: bool,
    /// The consumer priority (`x-priority`): RabbitMQ delivers to the
    /// highest-priority consumers that have prefetch capacity left. `None`
    /// is the default priority, 0.
    pub priority: Option<i32>,
    /// The consumer tag; empty lets RabbitMQ choose one. It must be unique
    /// on the connection.
    pub consumer_tag: String,
    /// Other consumer arguments, e.g. `x-stream-offset` for stream queues.
    pub arguments: FieldTable,
    /// The most delivered messages held for this consumer before you take
    /// them; more is a server fault that closes the connection (505), so a
    /// slow consumer's buffer never grows without bound. `None` means
    /// `prefetch_count`, which RabbitMQ honours for classic and quorum
    /// queues, or for a stream consumer (one with an `x-stream-offset`
    /// argument) `prefetch_count` + [`STREAM_CHUNK_ALLOWANCE`]: RabbitMQ
    /// delivers a stream a whole chunk at a time, past the prefetch. Set it
    /// for a stream consumer without `x-stream-offset`. At least
    /// `prefetch_count`, else [`UsageError::InvalidArgument`](crate::UsageError::InvalidArgument).
    /// For a [`no_ack`](Self::no_ack) consumer, it is where reading pauses
    /// (`None`: `prefetch_count`).
    pub max_buffered: Option<u32>,
    /// Automatic acknowledgement (`no-ack`, RabbitMQ's "autoack"): RabbitMQ
    /// counts each message as settled the moment it sends it, so a message
    /// is lost if the process ends before handling it, and the settling
    /// calls ([`AckingConsumer::ack`] and the rest) send nothing. It is
    /// faster, and it is what RabbitMQ's PerfTest's `-a` measures; leave
    /// it off (the default) for at-least-once. RabbitMQ applies no
    /// prefetch to such a consumer, so its buffer is bounded here instead:
    /// while it holds [`max_buffered`](Self::max_buffered) messages (or
    /// `prefetch_count`), the connection stops reading from its socket,
    /// and TCP's flow control holds RabbitMQ back, until the consumer
    /// takes some. Everything else on that connection waits meanwhile, so
    /// give such a consumer a connection of its own.
    pub no_ack: bool,
}

/// How many deliveries past its `max_buffered` a no-ack consumer may hold:
/// reading pauses before each read, so one read's deliveries can come on
/// top (a 64 KiB read holds at most about 1,300 of the smallest
/// deliveries).
pub(crate) const NO_ACK_OVERSHOOT: u32 = 2048;

/// How many deliveries past its prefetch a stream consumer holds by
/// default (see [`ConsumerOptions::max_buffered`]): RabbitMQ sends a stream
/// chunk whole once the consumer has any credit, and chunks of a few
/// thousand small messages are common.
///
/// ```
/// assert!(carehare_client::STREAM_CHUNK_ALLOWANCE >= 4096);
/// ```
pub const STREAM_CHUNK_ALLOWANCE: u32 = 65_536;

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            prefetch_count: 100,
            prefetch_size: 0,
            exclusive: false,
            priority: None,
            consumer_tag: String::new(),
            arguments: FieldTable::default(),
            max_buffered: None,
            no_ack: false,
        }
    }
}

impl Connection {
    /// Starts consuming `queue` with `prefetch` unacked messages at most:
    /// shorthand for [`consumer`](Self::consumer) with only
    /// `prefetch_count` set. Consuming always acks: call
    /// [`AckingConsumer::ack`] for each message. Messages not acked when
    /// the consumer closes (or is dropped) are redelivered.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let consumer = connection.acking_consumer("my-queue", 10).await?;
    /// loop {
    ///     let (body, delivery_tag) = consumer.next_delivery().await?;
    ///     consumer.ack(delivery_tag);
    ///     if body.starts_with(b"okay, go away now") {
    ///         break;
    ///     }
    /// }
    /// consumer.close().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`consumer`](Self::consumer).
    pub async fn acking_consumer(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<AckingConsumer, Error> {
        let options = ConsumerOptions {
            prefetch_count: prefetch,
            ..Default::default()
        };
        self.consumer(queue, options).await
    }

    /// Starts consuming `queue` on its own channel, with `options`
    /// (prefetch, exclusivity, priority, tag, arguments). Consuming always
    /// acks: settle each message with [`AckingConsumer::ack`],
    /// [`nack`](AckingConsumer::nack) or [`reject`](AckingConsumer::reject).
    /// Messages not settled when the consumer closes (or is dropped) are
    /// redelivered.
    ///
    /// A refusal (404 for a missing queue, 403 when an exclusive consumer
    /// is already there...) is [`Error::ChannelClosedByServer`] and leaves
    /// the connection usable. A non-zero
    /// [`prefetch_size`](ConsumerOptions::prefetch_size) is refused here,
    /// before anything is sent, with [`UsageError::Unsupported`](crate::UsageError::Unsupported):
    /// RabbitMQ does not implement it and would close the whole connection
    /// (540 NOT_IMPLEMENTED).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// use carehare_client::ConsumerOptions;
    /// let options = ConsumerOptions { prefetch_count: 50, priority: Some(10), ..Default::default() };
    /// let consumer = connection.consumer("my-queue", options).await?;
    /// let message = consumer.next().await?;
    /// consumer.ack(message.delivery_tag);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: cancelled after `basic.consume` went out, the
    /// half-made consumer's channel is closed, so RabbitMQ requeues
    /// whatever it already delivered to it. No message is lost and no
    /// consumer is left behind.
    pub async fn consumer(
        &self,
        queue: &str,
        options: ConsumerOptions,
    ) -> Result<AckingConsumer, Error> {
        let ConsumerOptions {
            prefetch_count,
            prefetch_size,
            exclusive,
            priority,
            consumer_tag,
            mut arguments,
            max_buffered,
            no_ack,
        } = options;
        if prefetch_count == 0 {
            return Err(Error::Usage(UsageError::InvalidArgument(
                "prefetch_count must be at least 1: 0 (unlimited) would let a slow consumer's buffer grow without bound",
            )));
        }
        let is_stream = arguments.contains_key("x-stream-offset");
        let limit = match max_buffered {
            Some(limit) if limit < u32::from(prefetch_count) => {
                return Err(Error::Usage(UsageError::InvalidArgument(
                    "max_buffered must be at least prefetch_count: RabbitMQ may deliver that many",
                )));
            }
            Some(limit) => limit,
            None if is_stream => u32::from(prefetch_count) + STREAM_CHUNK_ALLOWANCE,
            None => u32::from(prefetch_count),
        };
        // A no-ack consumer pauses reading at `limit` and may hold one
        // read's deliveries more.
        let (limit, pause_at) = if no_ack {
            (limit.saturating_add(NO_ACK_OVERSHOOT), Some(limit))
        } else {
            (limit, None)
        };
        if prefetch_size != 0 {
            return Err(Error::Usage(UsageError::Unsupported(
                "prefetch_size: RabbitMQ closes the connection (540 NOT_IMPLEMENTED) for a non-zero value",
            )));
        }
        if let Some(priority) = priority {
            arguments.insert("x-priority".into(), AMQPValue::LongInt(priority));
        }
        let qos = BasicQos {
            prefetch_size,
            prefetch_count,
            global: false,
        };
        let consume = BasicConsume {
            queue: short(queue)?,
            consumer_tag: short(&consumer_tag)?,
            exclusive,
            no_ack,
            arguments,
            ..Default::default()
        };
        let shared = self.shared().clone();
        // The span exists before the channel opens, so that whatever
        // happens to the consumer from its first delivery on logs under it.
        let span = tracing::info_span!(
            parent: shared.span(),
            "amqp_channel",
            channel = tracing::field::Empty,
            queue,
            consumer_tag = tracing::field::Empty,
        );
        let (channel, token, rx) = {
            let mut inner = shared.lock();
            let opened = inner
                .open_mailbox([qos.into(), consume.into()], limit, pause_at)
                // A failed open may have queued a close for the channel.
                .inspect_err(|_| shared.wake_driver())?;
            span.record("channel", opened.0);
            inner.set_mailbox_span(opened.1, span.clone());
            opened
        };
        shared.wake_driver();
        // From here on, dropping the consumer closes the channel.
        let mut consumer = AckingConsumer {
            acker: Acker {
                shared: shared.clone(),
                channel,
                token,
                no_ack,
            },
            shared,
            channel,
            token,
            consumer_tag: ShortStr::default(),
            span,
            _connection: self.clone(),
        };
        match reply(&consumer.shared, rx).await? {
            Reply::Method(Method::BasicConsumeOk(ok)) => consumer.consumer_tag = ok.consumer_tag,
            _ => return unexpected(),
        }
        consumer.span.record(
            "consumer_tag",
            tracing::field::display(&consumer.consumer_tag),
        );
        consumer
            .span
            .in_scope(|| tracing::debug!(prefetch_count, no_ack, "consuming"));
        Ok(consumer)
    }
}

/// A consumer on its own channel. It is a [`futures_core::Stream`] of
/// [`Message`]s and also offers [`next_delivery`](Self::next_delivery).
///
/// The stream ends with an error item when the consumer can't go on:
/// [`Error::ConsumerCancelledByServer`] (its queue was deleted),
/// [`Error::ChannelClosedByServer`], [`Error::ConnectionClosed`], or
/// [`Error::ConsumerClosed`] after [`close`](Self::close).
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// use futures_util::StreamExt;
/// let mut consumer = connection.acking_consumer("my-queue", 10).await?;
/// while let Some(message) = StreamExt::next(&mut consumer).await {
///     let message = message?;
///     println!("{:?}", message.body);
///     consumer.ack(message.delivery_tag);
/// }
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Reading is cancel-safe, through [`next`](Self::next),
/// [`next_delivery`](Self::next_delivery) or the `Stream`: a message is
/// taken from the consumer's buffer only by the poll that returns it, so a
/// read cancelled by a `select!` leaves it for the next read, in order.
pub struct AckingConsumer {
    shared: Arc<Shared>,
    channel: ChannelId,
    /// Our registration: the channel id alone may be reused by another
    /// channel once RabbitMQ closed ours.
    token: Token,
    consumer_tag: ShortStr,
    /// `amqp_channel{channel, queue, consumer_tag}`, under the
    /// connection's span.
    span: tracing::Span,
    /// Settles this consumer's messages; a no-ack consumer's sends nothing
    /// (an ack would be an unknown delivery tag to RabbitMQ, 406).
    acker: Acker,
    /// Keeps the connection open while the consumer lives.
    _connection: Connection,
}

impl std::fmt::Debug for AckingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckingConsumer")
            .field("channel", &self.channel)
            .field("consumer_tag", &self.consumer_tag)
            .finish()
    }
}

/// Settles a consumer's messages from anywhere: `Clone + Send + Sync`, so
/// it can be moved into the task that handles a message (as lapin's
/// `Acker`), while the consumer goes on reading. Made by
/// [`AckingConsumer::acker`]. Its calls are the consumer's own: they never
/// fail and never wait, and once the consumer has ended (closed, dropped,
/// or its channel gone) they send nothing: RabbitMQ has requeued what was
/// unsettled.
///
/// ```no_run
/// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
/// let message = consumer.next().await?;
/// let acker = consumer.acker();
/// std::thread::spawn(move || {
///     // ...handle the message elsewhere...
///     acker.ack(message.delivery_tag);
/// });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Acker {
    shared: Arc<Shared>,
    channel: ChannelId,
    token: Token,
    /// A no-ack consumer's acker sends nothing.
    no_ack: bool,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Acker {
    /// Acks one message (see [`AckingConsumer::ack`]).
    pub fn ack(&self, delivery_tag: u64) {
        self.settle(BasicAck {
            delivery_tag,
            multiple: false,
        });
    }

    /// Acks this message and every earlier unsettled one (see
    /// [`AckingConsumer::ack_multiple`]).
    pub fn ack_multiple(&self, delivery_tag: u64) {
        self.settle(BasicAck {
            delivery_tag,
            multiple: true,
        });
    }

    /// Refuses one message (see [`AckingConsumer::nack`]).
    pub fn nack(&self, delivery_tag: u64, requeue: bool) {
        self.settle(BasicNack {
            delivery_tag,
            multiple: false,
            requeue,
        });
    }

    /// Refuses this message and every earlier unsettled one (see
    /// [`AckingConsumer::nack_multiple`]).
    pub fn nack_multiple(&self, delivery_tag: u64, requeue: bool) {
        self.settle(BasicNack {
            delivery_tag,
            multiple: true,
            requeue,
        });
    }

    /// Refuses one message with `basic.reject` (see
    /// [`AckingConsumer::reject`]).
    pub fn reject(&self, delivery_tag: u64, requeue: bool) {
        self.settle(BasicReject {
            delivery_tag,
            requeue,
        });
    }

    /// Sends a settling method, unless the consumer ended: after a server
    /// close the channel id may already belong to someone else, and after
    /// our own close there is nothing left to settle.
    fn settle(&self, method: impl Into<Method>) {
        if self.no_ack {
            return;
        }
        let wake = self
            .shared
            .lock()
            .send_on_mailbox(self.token, self.channel, method.into());
        if wake {
            self.shared.wake_driver();
        }
    }
}

impl AckingConsumer {
    /// The consumer tag RabbitMQ gave this consumer.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// println!("consuming as {}", consumer.consumer_tag());
    /// # Ok(()) }
    /// ```
    pub fn consumer_tag(&self) -> &str {
        &self.consumer_tag
    }

    /// This consumer's log span, `amqp_channel{channel, queue,
    /// consumer_tag}`, a child of its connection's `amqp_connection{id,
    /// name, address}`. What carehare logs about the consumer (its start,
    /// a cancel by RabbitMQ, its end) is under it; instrument the work done
    /// per message with it so that the application's own events carry the
    /// same fields.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// use tracing::Instrument;
    /// let message = consumer.next().await?;
    /// async { tracing::info!(bytes = message.body.len(), "handling") }
    ///     .instrument(consumer.span().clone())
    ///     .await;
    /// consumer.ack(message.delivery_tag);
    /// # Ok(()) }
    /// ```
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The next message. Waits until one arrives or the consumer ends.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let message = consumer.next().await?;
    /// println!("{} from {:?}", message.delivery_tag, message.routing_key);
    /// consumer.ack(message.delivery_tag);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: a message is taken from the buffer only by the poll
    /// that returns it. Cancelled, this call takes nothing, and the next
    /// call gets the message it would have got.
    pub async fn next(&self) -> Result<Message, Error> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// The next message's body and delivery tag, like Python carehare's
    /// `next_delivery()`.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let (body, delivery_tag) = consumer.next_delivery().await?;
    /// consumer.ack(delivery_tag);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`next`](Self::next).
    pub async fn next_delivery(&self) -> Result<(Bytes, u64), Error> {
        self.next().await.map(|m| (m.body, m.delivery_tag))
    }

    /// Messages waiting in this consumer's buffer.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.shared.lock().mailbox_buffered(self.token)
    }

    fn poll_message(&self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        let mut inner = self.shared.lock();
        let polled = inner.poll_mailbox(self.token, cx);
        let resume = inner.input_resumed();
        drop(inner);
        if resume {
            // A no-ack buffer was full and the driver stopped reading.
            self.shared.wake_driver();
        }
        polled
    }

    /// Acks one message. Never fails and never waits: if the channel is
    /// gone there is nothing to ack (RabbitMQ requeued the message).
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let (_body, delivery_tag) = consumer.next_delivery().await?;
    /// consumer.ack(delivery_tag); // no await, never fails
    /// # Ok(()) }
    /// ```
    pub fn ack(&self, delivery_tag: u64) {
        self.acker.ack(delivery_tag);
    }

    /// Acks this message and every earlier unsettled one, in one frame.
    /// Never fails and never waits, like [`ack`](Self::ack).
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let mut last = 0;
    /// for _ in 0..100 {
    ///     let message = consumer.next().await?;
    ///     // ...process it...
    ///     last = message.delivery_tag;
    /// }
    /// consumer.ack_multiple(last); // all 100 at once
    /// # Ok(()) }
    /// ```
    pub fn ack_multiple(&self, delivery_tag: u64) {
        self.acker.ack_multiple(delivery_tag);
    }

    /// Refuses one message: with `requeue` RabbitMQ puts it back in the
    /// queue (it comes again with `redelivered` set), without it the
    /// message is dropped or dead-lettered (`x-dead-letter-exchange`).
    /// Never fails and never waits, like [`ack`](Self::ack).
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let message = consumer.next().await?;
    /// if message.body.is_empty() {
    ///     consumer.nack(message.delivery_tag, false); // poison: dead-letter it
    /// } else {
    ///     consumer.ack(message.delivery_tag);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn nack(&self, delivery_tag: u64, requeue: bool) {
        self.acker.nack(delivery_tag, requeue);
    }

    /// [`nack`](Self::nack)s this message and every earlier unsettled one,
    /// in one frame.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let first = consumer.next().await?;
    /// let second = consumer.next().await?;
    /// // The database is down: put both back.
    /// consumer.nack_multiple(second.delivery_tag, true);
    /// # drop(first); Ok(()) }
    /// ```
    pub fn nack_multiple(&self, delivery_tag: u64, requeue: bool) {
        self.acker.nack_multiple(delivery_tag, requeue);
    }

    /// Refuses one message with AMQP's `basic.reject`: the same outcome
    /// as [`nack`](Self::nack) without `multiple`.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let message = consumer.next().await?;
    /// consumer.reject(message.delivery_tag, true); // try again later
    /// # Ok(()) }
    /// ```
    pub fn reject(&self, delivery_tag: u64, requeue: bool) {
        self.acker.reject(delivery_tag, requeue);
    }

    /// A handle that settles this consumer's messages from another task or
    /// thread: see [`Acker`].
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// Stops consuming: closes the channel, so RabbitMQ requeues every
    /// unacked message. Pending `next`/`next_delivery` calls end with
    /// [`Error::ConsumerClosed`]. Calling it again does nothing.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// consumer.close().await;
    /// consumer.close().await; // idempotent
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: the consumer has stopped and its channel's close is
    /// queued by the first poll; a cancelled call only stops waiting for
    /// RabbitMQ's `close-ok`.
    pub async fn close(&self) {
        // Forget the mailbox now, not after close-ok: once close-ok frees
        // the channel id, a new channel may take it.
        let rx = self.shared.lock().close_mailbox(self.token, None);
        self.shared.wake_driver();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }
}

impl Drop for AckingConsumer {
    fn drop(&mut self) {
        if self.shared.lock().close_mailbox(self.token, None).is_some() {
            self.shared.wake_driver();
        }
    }
}

impl futures_core::Stream for AckingConsumer {
    type Item = Result<Message, Error>;

    /// Yields messages, then at most one error, then ends.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.shared.lock().mailbox_done(this.token) {
            return Poll::Ready(None);
        }
        match this.poll_message(cx) {
            Poll::Ready(Ok(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Err(e)) => {
                // Report the error once, then end.
                this.shared.lock().mailbox_error_reported(this.token);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
