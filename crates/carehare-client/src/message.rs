//! Messages as users see them: a delivered [`Message`], and a
//! [`Returned`] mandatory publish.

use bytes::Bytes;
use carehare_core::method::{BasicDeliver, BasicGetOk};
use carehare_core::properties::BasicProperties;
use carehare_core::types::ShortStr;

/// No properties at all, for the publishes that take none. Borrowing a
/// static spares each of them building 14 `None`s and dropping them, and
/// keeps the 376 bytes out of the publishing future.
pub(crate) static NO_PROPERTIES: BasicProperties = BasicProperties {
    content_type: None,
    content_encoding: None,
    headers: None,
    delivery_mode: None,
    priority: None,
    correlation_id: None,
    reply_to: None,
    expiration: None,
    message_id: None,
    timestamp: None,
    kind: None,
    user_id: None,
    app_id: None,
    cluster_id: None,
};

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// Its properties. Boxed as they were decoded: at 376 bytes, copying
    /// them at every hand-over from the socket to the caller costs more
    /// than the one allocation. Read them as if inline
    /// (`message.properties.content_type`).
    pub properties: Box<BasicProperties>,
}

impl Message {
    /// A message from `basic.deliver`.
    pub(crate) fn delivered(
        d: BasicDeliver,
        properties: Box<BasicProperties>,
        body: Bytes,
    ) -> Self {
        Self {
            body,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: d.exchange,
            routing_key: d.routing_key,
            consumer_tag: d.consumer_tag,
            properties,
        }
    }

    /// A message from `basic.get-ok` (no consumer: the tag is empty).
    pub(crate) fn got(ok: BasicGetOk, properties: Box<BasicProperties>, body: Bytes) -> Self {
        Self {
            body,
            delivery_tag: ok.delivery_tag,
            redelivered: ok.redelivered,
            exchange: ok.exchange,
            routing_key: ok.routing_key,
            consumer_tag: ShortStr::default(),
            properties,
        }
    }
}

/// A mandatory message RabbitMQ could not route to any queue, as it came
/// back in `basic.return`.
///
/// ```no_run
/// # async fn f(connection: carehare_client::Connection) -> Result<(), carehare_client::Error> {
/// use carehare_client::Error;
/// if let Err(Error::Returned(returned)) = connection.publish_mandatory("x", "", "nowhere", &Default::default()).await {
///     println!("{} {}: {:?}", returned.reply_code, returned.reply_text, returned.body);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Returned {
    /// Why, e.g. 312.
    pub reply_code: u16,
    /// Why, e.g. `NO_ROUTE`.
    pub reply_text: String,
    /// The exchange it was published to.
    pub exchange: ShortStr,
    /// Its routing key.
    pub routing_key: ShortStr,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use super::*;
    use carehare_core::types::{AMQPValue, FieldTable};

    /// With the `serde` feature a message (body, envelope, every kind of
    /// property and typed headers) round-trips through JSON, and a
    /// `shortstr` over 255 bytes is refused on the way in.
    #[test]
    fn a_message_round_trips_through_json() {
        let mut headers = FieldTable::default();
        headers.insert("attempt".into(), AMQPValue::LongInt(3));
        headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        let properties = BasicProperties::builder()
            .content_type("application/json")
            .persistent()
            .priority(4)
            .timestamp(1_700_000_000)
            .correlation_id("c-1")
            .build()
            .unwrap();
        let message = Message {
            body: Bytes::from_static(b"{\"x\":1}\x00\xff"),
            delivery_tag: 7,
            redelivered: true,
            exchange: ShortStr::from_static("orders"),
            routing_key: ShortStr::from_static("new"),
            consumer_tag: ShortStr::from_static("amq.ctag-1"),
            properties: Box::new(BasicProperties {
                headers: Some(headers),
                ..properties
            }),
        };
        let json = serde_json::to_string(&message).unwrap();
        assert!(json.contains("\"exchange\":\"orders\""), "{json}");
        let back: Message = serde_json::from_str(&json).unwrap();
        assert_eq!(back, message);
        let long = json.replace("\"orders\"", &format!("\"{}\"", "o".repeat(256)));
        let refused = serde_json::from_str::<Message>(&long).unwrap_err();
        assert!(refused.to_string().contains("255"), "{refused}");
    }
}
