//! A consumed message.

use bytes::Bytes;
use carehare_core::properties::BasicProperties;
use carehare_core::types::ShortStr;

/// A message delivered to an [`AckingConsumer`](crate::AckingConsumer).
/// Ack it with [`AckingConsumer::ack`](crate::AckingConsumer::ack) and its
/// `delivery_tag`.
///
/// ```no_run
/// # async fn f(consumer: carehare_client::AckingConsumer) -> Result<(), carehare_client::Error> {
/// let message = consumer.next().await?;
/// if message.redelivered {
///     println!("seen before: {:?}", message.properties.message_id);
/// }
/// consumer.ack(message.delivery_tag);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The body. A body that arrived in one frame is a zero-copy slice of
    /// the read buffer.
    pub body: Bytes,
    /// The tag to ack with.
    pub delivery_tag: u64,
    /// RabbitMQ delivered it before (to this or another consumer).
    pub redelivered: bool,
    /// The exchange it was published to (empty: the default exchange).
    pub exchange: ShortStr,
    /// Its routing key.
    pub routing_key: ShortStr,
    /// The consumer it was delivered to.
    pub consumer_tag: ShortStr,
    /// Its properties.
    pub properties: BasicProperties,
}
