//! Building [`BasicProperties`] from plain strings and numbers, one call per
//! property, with one check at the end.
//!
//! Invariant: `error` holds the first property that could not be set; once
//! set, later calls change nothing and [`build`](PropertiesBuilder::build)
//! returns it.

use crate::types::{AMQPValue, FieldTable, ShortStr, ShortStrTooLong};

use super::BasicProperties;

/// A property that does not fit AMQP: a string over the 255 bytes of a
/// `shortstr`. Names the property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("property {property}: {source}")]
pub struct InvalidProperty {
    /// The property (or `headers: <key>` for a header's name).
    pub property: String,
    /// Why.
    #[source]
    pub source: ShortStrTooLong,
}

/// A header's value: a string, a number, a bool, or any [`AMQPValue`].
pub trait HeaderValue {
    /// The value as AMQP sends it.
    fn into_amqp(self) -> AMQPValue;
}

impl HeaderValue for &str {
    /// A `longstr`, as RabbitMQ's clients send strings.
    fn into_amqp(self) -> AMQPValue {
        AMQPValue::LongString(self.into())
    }
}

impl HeaderValue for String {
    fn into_amqp(self) -> AMQPValue {
        AMQPValue::LongString(self.into())
    }
}

macro_rules! header_value_from {
    ($($t:ty),*) => {$(
        impl HeaderValue for $t {
            fn into_amqp(self) -> AMQPValue {
                self.into()
            }
        }
    )*};
}

header_value_from!(
    bool, i8, i16, i32, i64, u8, u16, u32, f32, f64, AMQPValue, FieldTable
);

/// Builds [`BasicProperties`]: made by [`BasicProperties::builder`].
///
/// ```
/// use carehare_core::properties::BasicProperties;
/// let properties = BasicProperties::builder()
///     .content_type("application/json")
///     .persistent()
///     .correlation_id("req-42")
///     .expiration_ms(60_000)
///     .header("tenant", "acme")
///     .header("attempt", 3)
///     .build()?;
/// assert_eq!(properties.content_type.as_deref(), Some("application/json"));
/// assert_eq!(properties.delivery_mode, Some(2));
/// assert_eq!(properties.expiration.as_deref(), Some("60000"));
/// # Ok::<(), carehare_core::properties::builder::InvalidProperty>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "nothing is set until `build` is called"]
pub struct PropertiesBuilder {
    properties: BasicProperties,
    error: Option<InvalidProperty>,
}

impl PropertiesBuilder {
    /// Sets a `shortstr` property, or records why it can't be.
    fn text(
        mut self,
        property: &str,
        value: &str,
        set: fn(&mut BasicProperties, ShortStr),
    ) -> Self {
        if self.error.is_none() {
            match ShortStr::new(value) {
                Ok(v) => set(&mut self.properties, v),
                Err(source) => {
                    self.error = Some(InvalidProperty {
                        property: property.to_string(),
                        source,
                    })
                }
            }
        }
        self
    }

    /// `content_type`, e.g. `application/json`.
    pub fn content_type(self, value: &str) -> Self {
        self.text("content_type", value, |p, v| p.content_type = Some(v))
    }

    /// `content_encoding`, e.g. `gzip`.
    pub fn content_encoding(self, value: &str) -> Self {
        self.text("content_encoding", value, |p, v| {
            p.content_encoding = Some(v)
        })
    }

    /// `correlation_id`: matches an RPC reply to its request.
    pub fn correlation_id(self, value: &str) -> Self {
        self.text("correlation_id", value, |p, v| p.correlation_id = Some(v))
    }

    /// `reply_to`: where an RPC reply goes.
    pub fn reply_to(self, value: &str) -> Self {
        self.text("reply_to", value, |p, v| p.reply_to = Some(v))
    }

    /// `message_id`.
    pub fn message_id(self, value: &str) -> Self {
        self.text("message_id", value, |p, v| p.message_id = Some(v))
    }

    /// The message type (`type` in the spec).
    pub fn kind(self, value: &str) -> Self {
        self.text("type", value, |p, v| p.kind = Some(v))
    }

    /// `user_id`: RabbitMQ checks it against the login.
    pub fn user_id(self, value: &str) -> Self {
        self.text("user_id", value, |p, v| p.user_id = Some(v))
    }

    /// `app_id`.
    pub fn app_id(self, value: &str) -> Self {
        self.text("app_id", value, |p, v| p.app_id = Some(v))
    }

    /// A per-message TTL, in milliseconds (sent as the string RabbitMQ
    /// expects).
    pub fn expiration_ms(self, ms: u64) -> Self {
        self.text("expiration", &ms.to_string(), |p, v| p.expiration = Some(v))
    }

    /// `delivery_mode`: 1 transient, 2 persistent.
    pub fn delivery_mode(mut self, mode: u8) -> Self {
        self.properties.delivery_mode = Some(mode);
        self
    }

    /// `delivery_mode` 2: stored on disk by a durable queue.
    pub fn persistent(self) -> Self {
        self.delivery_mode(2)
    }

    /// `priority`, 0 to 9 (or the queue's `x-max-priority`).
    pub fn priority(mut self, priority: u8) -> Self {
        self.properties.priority = Some(priority);
        self
    }

    /// `timestamp`, in seconds since the Unix epoch.
    pub fn timestamp(mut self, seconds: u64) -> Self {
        self.properties.timestamp = Some(seconds);
        self
    }

    /// Adds the header `name` (a string, a number, a bool, or any
    /// [`AMQPValue`]: see [`HeaderValue`]).
    pub fn header(mut self, name: &str, value: impl HeaderValue) -> Self {
        if self.error.is_some() {
            return self;
        }
        if let Err(source) = ShortStr::new(name) {
            self.error = Some(InvalidProperty {
                property: format!("headers: {name:.32}…"),
                source,
            });
            return self;
        }
        self.properties
            .headers
            .get_or_insert_with(FieldTable::default)
            .insert(name.into(), value.into_amqp());
        self
    }

    /// The properties, or the first one that could not be set.
    pub fn build(self) -> Result<BasicProperties, InvalidProperty> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.properties),
        }
    }
}

impl BasicProperties {
    /// A builder that takes `&str`s and numbers, one call per property.
    pub fn builder() -> PropertiesBuilder {
        PropertiesBuilder::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_is_set_and_a_long_one_is_named() {
        let p = BasicProperties::builder()
            .content_type("text/plain")
            .content_encoding("gzip")
            .correlation_id("c")
            .reply_to("r")
            .message_id("m")
            .kind("t")
            .user_id("u")
            .app_id("a")
            .expiration_ms(1500)
            .priority(5)
            .timestamp(7)
            .delivery_mode(1)
            .header("flag", true)
            .build()
            .unwrap();
        assert_eq!(p.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(p.kind.as_deref(), Some("t"));
        assert_eq!(p.expiration.as_deref(), Some("1500"));
        assert_eq!(
            (p.priority, p.timestamp, p.delivery_mode),
            (Some(5), Some(7), Some(1))
        );
        assert_eq!(
            p.headers.unwrap().inner().get("flag"),
            Some(&AMQPValue::Boolean(true))
        );
        let long = "x".repeat(256);
        let e = BasicProperties::builder()
            .content_type("ok")
            .reply_to(&long)
            .app_id(&long)
            .build()
            .unwrap_err();
        assert_eq!(e.property, "reply_to", "the first one");
        assert_eq!(e.source.len, 256);
        let e = BasicProperties::builder()
            .header(&long, 1)
            .build()
            .unwrap_err();
        assert!(e.property.starts_with("headers: xxx"), "{}", e.property);
    }
}
