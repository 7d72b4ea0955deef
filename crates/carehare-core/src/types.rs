//! Value types used across the codec.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

pub use amq_protocol_types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};

/// A string was too long to be an AMQP `shortstr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("string of {len} bytes is longer than the 255 bytes a shortstr allows")]
pub struct ShortStrTooLong {
    /// The length in bytes.
    pub len: usize,
}

/// An AMQP `shortstr`: UTF-8, at most 255 bytes, backed by [`Bytes`] so that
/// decoding one out of a frame does not allocate.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortStr(ByteString);

impl ShortStr {
    /// The longest a `shortstr` can be, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Builds a `shortstr`, or says how long the string was.
    pub fn new(s: impl Into<String>) -> Result<Self, ShortStrTooLong> {
        let s: String = s.into();
        if s.len() > Self::MAX_LEN {
            return Err(ShortStrTooLong { len: s.len() });
        }
        Ok(Self(ByteString::from(s)))
    }

    /// Builds a `shortstr` from a literal without copying it.
    ///
    /// # Panics
    /// If the literal is longer than 255 bytes: that is a bug in the caller's
    /// source code, never a runtime input.
    pub fn from_static(s: &'static str) -> Self {
        assert!(s.len() <= Self::MAX_LEN, "shortstr literal over 255 bytes");
        Self(ByteString::from_static(s))
    }

    #[inline]
    pub(crate) fn from_utf8(raw: Bytes) -> Result<Self, std::str::Utf8Error> {
        // Callers slice at most 255 bytes (the length is one octet).
        ByteString::try_from(raw).map(Self)
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ShortStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A `shortstr` serializes as a string, and deserializes only from one
/// that fits (255 bytes at most).
#[cfg(feature = "serde")]
impl serde::Serialize for ShortStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ShortStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        ShortStr::new(s).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&str> for ShortStr {
    type Error = ShortStrTooLong;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for ShortStr {
    type Error = ShortStrTooLong;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

/// A `longstr` that holds a credential. Its `Debug` output is redacted so a
/// password can never reach a log through `{:?}`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Bytes);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Identifies a command whose reply comes back later as an
/// [`Event::Completed`](crate::Event::Completed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The raw number, unique within one connection.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A channel number. Channel 0 is the connection itself.
pub type ChannelId = u16;
