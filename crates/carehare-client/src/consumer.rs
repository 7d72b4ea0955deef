//! `acking_consumer`: a stream of messages that you ack.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use carehare_core::Reply;
use carehare_core::method::{BasicAck, BasicConsume, BasicQos, Method};
use carehare_core::types::{ChannelId, ShortStr};
use futures_channel::oneshot;

use crate::connection::{Connection, wait};
use crate::error::Error;
use crate::message::Message;
use crate::shared::{Mailbox, Shared, short};

impl Connection {
    /// Starts consuming `queue` with `prefetch` unacked messages at most.
    /// Consuming always acks: call [`AckingConsumer::ack`] for each
    /// message. Messages not acked when the consumer closes (or is dropped)
    /// are redelivered.
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
    pub async fn acking_consumer(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<AckingConsumer, Error> {
        let queue = short(queue)?;
        let shared = self.shared().clone();
        let (channel, rx) = {
            let mut inner = shared.lock();
            if let Some(e) = inner.closed_error() {
                return Err(e);
            }
            let (ch, _open) = inner.conn.open_channel()?;
            let qos = BasicQos {
                prefetch_count: prefetch,
                ..Default::default()
            };
            let consume = BasicConsume {
                queue,
                ..Default::default()
            };
            let op = match inner
                .conn
                .call(ch, qos.into())
                .and_then(|_| inner.conn.call(ch, consume.into()))
            {
                Ok(op) => op,
                Err(e) => {
                    let _ = inner.conn.close_channel(ch);
                    shared.wake_driver();
                    return Err(e.into());
                }
            };
            // Deliveries may follow consume-ok in the same read.
            inner.consumers.insert(ch, Mailbox::default());
            let (tx, rx) = oneshot::channel();
            inner.ops.insert(op, tx);
            (ch, rx)
        };
        shared.wake_driver();
        // From here on, dropping the consumer closes the channel.
        let mut consumer = AckingConsumer {
            shared,
            channel,
            consumer_tag: ShortStr::default(),
            _connection: self.clone(),
        };
        match wait(&consumer.shared, rx).await? {
            Reply::Method(Method::BasicConsumeOk(ok)) => consumer.consumer_tag = ok.consumer_tag,
            _ => return Err(Error::ConsumerClosed),
        }
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
pub struct AckingConsumer {
    shared: Arc<Shared>,
    channel: ChannelId,
    consumer_tag: ShortStr,
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

    /// The next message. Waits until one arrives or the consumer ends.
    ///
    /// ```no_run
    /// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
    /// let message = consumer.next().await?;
    /// println!("{} from {:?}", message.delivery_tag, message.routing_key);
    /// consumer.ack(message.delivery_tag);
    /// # Ok(()) }
    /// ```
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
    pub async fn next_delivery(&self) -> Result<(Bytes, u64), Error> {
        self.next().await.map(|m| (m.body, m.delivery_tag))
    }

    fn poll_message(&self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        let mut inner = self.shared.lock();
        let Some(mailbox) = inner.consumers.get_mut(&self.channel) else {
            return Poll::Ready(Err(Error::ConsumerClosed));
        };
        if let Some(m) = mailbox.messages.pop_front() {
            return Poll::Ready(Ok(m));
        }
        if let Some(e) = &mailbox.end {
            return Poll::Ready(Err(e.clone()));
        }
        mailbox.waker = Some(cx.waker().clone());
        Poll::Pending
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
        let mut inner = self.shared.lock();
        let ack = BasicAck {
            delivery_tag,
            multiple: false,
        };
        if inner.conn.send(self.channel, ack.into()).is_ok() {
            drop(inner);
            self.shared.wake_driver();
        }
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
    pub async fn close(&self) {
        let rx = {
            let mut inner = self.shared.lock();
            let Some(mailbox) = inner.consumers.get_mut(&self.channel) else {
                return;
            };
            mailbox.messages.clear();
            mailbox.finish_closed();
            match inner.conn.close_channel(self.channel) {
                Ok(op) => {
                    let (tx, rx) = oneshot::channel();
                    inner.ops.insert(op, tx);
                    Some(rx)
                }
                Err(_) => None,
            }
        };
        self.shared.wake_driver();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        self.shared.lock().consumers.remove(&self.channel);
    }
}

impl Mailbox {
    fn finish_closed(&mut self) {
        self.end = Some(Error::ConsumerClosed);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Drop for AckingConsumer {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if inner.consumers.remove(&self.channel).is_some() {
            let _ = inner.conn.close_channel(self.channel);
            drop(inner);
            self.shared.wake_driver();
        }
    }
}

impl futures_core::Stream for AckingConsumer {
    type Item = Result<Message, Error>;

    /// Yields messages, then at most one error, then ends.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        {
            let inner = this.shared.lock();
            if inner.consumers.get(&this.channel).is_some_and(|m| {
                m.messages.is_empty() && matches!(m.end, Some(Error::ConsumerClosed))
            }) || !inner.consumers.contains_key(&this.channel)
            {
                return Poll::Ready(None);
            }
        }
        match this.poll_message(cx) {
            Poll::Ready(Ok(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Err(e)) => {
                // Report the error once, then end.
                let mut inner = this.shared.lock();
                if let Some(m) = inner.consumers.get_mut(&this.channel) {
                    m.end = Some(Error::ConsumerClosed);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
