//! `get`: fetch one message (`basic.get`) on a short-lived channel that
//! lives until the message is settled.

use std::sync::Arc;

use carehare_core::method::{BasicAck, BasicGet, BasicNack, BasicReject, Method};
use carehare_core::types::ChannelId;
use carehare_core::{ContentMethod, Reply};

use super::connection::Connection;
use super::wait::{reply, unexpected};
use crate::error::{Error, short};
use crate::message::Message;
use crate::state::{Shared, Token};

impl Connection {
    /// Fetches one message from `queue`, if there is one (`basic.get`,
    /// with an ack required). `None` means the queue was empty.
    ///
    /// The message comes on its own channel, which stays open until you
    /// settle it with [`GetMessage::ack`], [`nack`](GetMessage::nack) or
    /// [`reject`](GetMessage::reject). Dropping it unsettled closes the
    /// channel, so RabbitMQ requeues it. Polling with `get` is far slower
    /// than a [`consumer`](Self::consumer); use it for occasional fetches.
    ///
    /// A refusal (e.g. 404 for a missing queue) is
    /// [`Error::ChannelClosedByServer`] and leaves the connection usable.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// match connection.get("my-queue").await? {
    ///     Some(message) => {
    ///         println!("{:?} ({} more waiting)", message.body, message.message_count());
    ///         message.ack();
    ///     }
    ///     None => println!("the queue is empty"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// No message is lost: cancelled after `basic.get` went out, its
    /// channel is closed, so a message RabbitMQ already handed out is
    /// requeued (it comes again, with `redelivered` set).
    pub async fn get(&self, queue: &str) -> Result<Option<GetMessage>, Error> {
        let method = BasicGet {
            queue: short(queue)?,
            no_ack: false,
            ..Default::default()
        };
        let shared = self.shared().clone();
        // Open and get are pipelined: one round trip. A mailbox (never fed:
        // there is no consumer) tells us if the server closes the channel
        // or the connection ends.
        let (channel, token, rx) = shared
            .lock()
            .open_mailbox([method.into()], 0, None)
            // A failed open may have queued a close for the channel.
            .inspect_err(|_| shared.wake_driver())?;
        shared.wake_driver();
        // From here on, dropping (this future or the message) closes the
        // channel, and an unsettled message goes back to the queue.
        let channel = GetChannel {
            shared,
            channel,
            token,
            _connection: self.clone(),
        };
        match reply(&channel.shared, rx).await? {
            Reply::Message(delivery) => match delivery.method {
                ContentMethod::GetOk(ok) => Ok(Some(GetMessage {
                    message_count: ok.message_count,
                    message: Message::got(ok, delivery.properties, delivery.body),
                    channel,
                })),
                _ => unexpected(),
            },
            // basic.get-empty: dropping `channel` closes it.
            Reply::Method(Method::BasicGetEmpty(_)) => Ok(None),
            _ => unexpected(),
        }
    }
}

/// The channel a `basic.get` ran on; closed when dropped.
struct GetChannel {
    shared: Arc<Shared>,
    channel: ChannelId,
    /// Our registration (see the state's consumers): the id alone may be
    /// reused.
    token: Token,
    /// Keeps the connection open while the message is unsettled.
    _connection: Connection,
}

impl GetChannel {
    /// Sends `method` (if any) then closes the channel, fire and forget.
    /// Does nothing if the channel already ended: its id may belong to
    /// someone else by now, and RabbitMQ requeued the message.
    fn finish(&self, method: Option<Method>) {
        if self
            .shared
            .lock()
            .close_mailbox(self.token, method)
            .is_some()
        {
            self.shared.wake_driver();
        }
    }
}

impl Drop for GetChannel {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// A message fetched by [`Connection::get`]. It dereferences to its
/// [`Message`] (whose `consumer_tag` is empty: no consumer is involved).
///
/// Settle it with [`ack`](Self::ack), [`nack`](Self::nack) or
/// [`reject`](Self::reject); each sends its method and closes the message's
/// channel, without waiting. Dropping it unsettled closes the channel, so
/// RabbitMQ requeues the message (it comes again with `redelivered` set).
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// if let Some(message) = connection.get("my-queue").await? {
///     println!("{} from {:?}", message.delivery_tag, message.routing_key);
///     if message.redelivered {
///         message.reject(false); // failed before: dead-letter it
///     } else {
///         message.ack();
///     }
/// }
/// # Ok(()) }
/// ```
#[must_use = "dropping a GetMessage requeues it: ack, nack or reject it"]
pub struct GetMessage {
    message: Message,
    message_count: u32,
    channel: GetChannel,
}

impl std::fmt::Debug for GetMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetMessage")
            .field("message", &self.message)
            .field("message_count", &self.message_count)
            .field("channel", &self.channel.channel)
            .finish()
    }
}

impl std::ops::Deref for GetMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

impl GetMessage {
    /// The message: body, envelope and properties.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// if let Some(got) = connection.get("my-queue").await? {
    ///     let copy: carehare_client::Message = got.message().clone();
    ///     got.ack();
    ///     println!("{:?}", copy.properties.content_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// How many messages were left in the queue after this one was taken
    /// (`basic.get-ok`'s `message_count`).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// while let Some(message) = connection.get("my-queue").await? {
    ///     let left = message.message_count();
    ///     message.ack();
    ///     if left == 0 {
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn message_count(&self) -> u32 {
        self.message_count
    }

    /// Acks the message: RabbitMQ removes it from the queue. Never fails
    /// and never waits (if the channel is gone, RabbitMQ requeued it).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// if let Some(message) = connection.get("my-queue").await? {
    ///     message.ack();
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ack(self) {
        let ack = BasicAck {
            delivery_tag: self.message.delivery_tag,
            multiple: false,
        };
        self.channel.finish(Some(ack.into()));
    }

    /// Refuses the message: with `requeue` it goes back to the queue,
    /// without it it is dropped or dead-lettered. Never fails and never
    /// waits.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// if let Some(message) = connection.get("my-queue").await? {
    ///     message.nack(true); // not now: put it back
    /// }
    /// # Ok(()) }
    /// ```
    pub fn nack(self, requeue: bool) {
        let nack = BasicNack {
            delivery_tag: self.message.delivery_tag,
            multiple: false,
            requeue,
        };
        self.channel.finish(Some(nack.into()));
    }

    /// Refuses the message with AMQP's `basic.reject`: the same outcome as
    /// [`nack`](Self::nack).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// if let Some(message) = connection.get("my-queue").await? {
    ///     message.reject(false); // dead-letter it
    /// }
    /// # Ok(()) }
    /// ```
    pub fn reject(self, requeue: bool) {
        let reject = BasicReject {
            delivery_tag: self.message.delivery_tag,
            requeue,
        };
        self.channel.finish(Some(reject.into()));
    }
}
