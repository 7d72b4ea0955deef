//! [`Publisher`]: publishing within a window of unconfirmed messages.

use std::sync::Arc;

use bytes::Bytes;
use carehare_core::properties::BasicProperties;

use super::confirmation::Confirmation;
use super::connection::Connection;
use crate::error::Error;
use crate::message::NO_PROPERTIES;
use crate::state::Window;

/// Publishes with at most `max_in_flight` unconfirmed messages: when the
/// window is full, `publish` waits for a confirm. Memory stays bounded
/// however slow the broker is. Made by [`Connection::publisher`].
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// let publisher = connection.publisher(1000);
/// let mut confirmations = Vec::new();
/// for i in 0..100_000 {
///     // Waits while 1,000 publishes are unconfirmed.
///     confirmations.push(publisher.publish(format!("{i}"), "", "my-queue").await?);
/// }
/// for confirmation in confirmations {
///     confirmation.await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    connection: Connection,
    window: Arc<Window>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.max_in_flight())
            .finish()
    }
}

impl Connection {
    /// A publisher with a window of `max_in_flight` unconfirmed messages
    /// (at least 1).
    ///
    /// ```no_run
    /// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
    /// let publisher = connection.publisher(100);
    /// publisher.publish("hello", "", "my-queue").await?.await?;
    /// # Ok(()) }
    /// ```
    pub fn publisher(&self, max_in_flight: usize) -> Publisher {
        Publisher {
            connection: self.clone(),
            window: Window::new(max_in_flight),
        }
    }
}

impl Publisher {
    /// Unconfirmed publishes right now.
    ///
    /// ```no_run
    /// # fn f(publisher: carehare_client::Publisher) {
    /// assert!(publisher.in_flight() <= publisher.max_in_flight());
    /// # }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.window.in_flight()
    }

    /// The window size.
    ///
    /// ```no_run
    /// # fn f(connection: carehare_client::Connection) {
    /// assert_eq!(connection.publisher(10).max_in_flight(), 10);
    /// # }
    /// ```
    pub fn max_in_flight(&self) -> usize {
        self.window.max()
    }

    /// Waits for room in the window, queues the message, and returns its
    /// confirmation (see [`Connection::publish`]).
    ///
    /// ```no_run
    /// # async fn f(publisher: carehare_client::Publisher) -> Result<(), carehare_client::Error> {
    /// let confirmation = publisher.publish("hello", "", "my-queue").await?;
    /// confirmation.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: while it waits for room in the window nothing is
    /// queued, and the message is published in the poll that returns its
    /// confirmation. A cancelled call publishes nothing and holds no slot.
    pub async fn publish(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Confirmation, Error> {
        self.publish_with(body, exchange, routing_key, &NO_PROPERTIES)
            .await
    }

    /// [`publish`](Self::publish) with properties.
    ///
    /// ```no_run
    /// # async fn f(publisher: carehare_client::Publisher) -> Result<(), carehare_client::Error> {
    /// let properties = carehare_client::BasicProperties { delivery_mode: Some(2), ..Default::default() };
    /// publisher.publish_with("hello", "", "my-queue", &properties).await?.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`publish`](Self::publish).
    pub async fn publish_with(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<Confirmation, Error> {
        self.send(body.into(), exchange, routing_key, properties, false)
            .await
    }

    /// [`Connection::publish_mandatory`] within the window.
    ///
    /// ```no_run
    /// # async fn f(publisher: carehare_client::Publisher) -> Result<(), carehare_client::Error> {
    /// publisher.publish_mandatory("hello", "", "my-queue", &Default::default()).await?.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`publish`](Self::publish).
    pub async fn publish_mandatory(
        &self,
        body: impl Into<Bytes>,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
    ) -> Result<Confirmation, Error> {
        self.send(body.into(), exchange, routing_key, properties, true)
            .await
    }

    /// Waits for a window slot, then queues the publish holding it.
    async fn send(
        &self,
        body: Bytes,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        mandatory: bool,
    ) -> Result<Confirmation, Error> {
        let permit = self.window.acquire().await;
        Confirmation::publish_if_open(
            self.connection.shared(),
            body,
            exchange,
            routing_key,
            properties,
            mandatory,
            Some(permit),
        )
    }
}
