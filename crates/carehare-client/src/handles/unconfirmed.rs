//! Publishing without confirms: [`Connection::publish_unconfirmed`].

use bytes::Bytes;
use carehare_core::properties::BasicProperties;

use super::connection::Connection;
use crate::error::Error;

impl Connection {
    /// Publishes `body` without a publisher confirm ("fire and forget"):
    /// returns once the message's frames are queued for the socket.
    ///
    /// RabbitMQ says nothing about the message's fate: it may be routed to
    /// no queue, or lost with the connection, and nothing tells. Use
    /// [`publish`](Self::publish) (confirmed) when messages must not be
    /// lost; this is for messages that may be, where the confirm's round
    /// trip and bookkeeping are not worth it (metrics, logs, benchmarks
    /// like for like with clients that publish without confirms).
    ///
    /// Unconfirmed publishes share one channel per connection, opened at
    /// the first one, never in confirm mode. A publish to a missing
    /// exchange makes RabbitMQ close that channel (404): the publish still
    /// returns `Ok`, and so may the few after it that were already on
    /// their way (RabbitMQ drops those); the next one opens a fresh
    /// channel.
    ///
    /// Memory stays bounded: the call waits while RabbitMQ blocks
    /// publishing (see [`blocked`](Self::blocked)), and while the bytes
    /// queued for the socket and not yet written reach a high-water mark
    /// (4 MiB), until the connection has written them down below it. It
    /// fails with [`Error::ConnectionClosed`] once the connection is over.
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// for i in 0..10_000 {
    ///     connection.publish_unconfirmed(format!("{i}"), "", "metrics", &Default::default()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is queued while it waits, and the message is
    /// queued in the poll that returns `Ok`. A cancelled call published
    /// nothing.
    pub async fn publish_unconfirmed(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<(), Error> {
        let body = body.into();
        let shared = self.shared();
        std::future::poll_fn(|cx| {
            let mut inner = shared.lock();
            let (polled, wake) = inner.queue_command(|inner| {
                inner.poll_publish_unconfirmed(cx, &body, exchange, routing_key, properties)
            });
            drop(inner);
            // A failed publish may have queued a channel open: send it too.
            if polled.is_ready() && wake {
                shared.wake_driver();
            }
            polled
        })
        .await
    }
}
