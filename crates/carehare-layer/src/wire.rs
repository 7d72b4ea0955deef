//! The wire format, byte for byte as Python's `channels_rabbitmq` writes it:
//! the message is a msgpack map, and the recipient rides in it as one more
//! key, `__asgi_channel__` (a channel name) or `__asgi_group__` (a group
//! name), appended after the message's own keys (Python's
//! `msgpack.packb({**message, "__asgi_channel__": channel})`).
//!
//! The recipient key is added and removed at the byte level: the message's
//! own entries are copied untouched, so what one side encodes is what the
//! other decodes, whatever serde types produced it.

/// The key that names a recipient channel.
pub(crate) const CHANNEL_KEY: &str = "__asgi_channel__";
/// The key that names a recipient group.
pub(crate) const GROUP_KEY: &str = "__asgi_group__";

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recipient {
    /// One channel, `<queue>!<local>`.
    Channel(String),
    /// Every channel in a group.
    Group(String),
}

/// Why bytes are not a channel-layer message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The top-level value is not a map.
    #[error("a message must be a map (a struct or a map with string keys)")]
    NotAMap,
    /// The bytes end early or use a byte msgpack reserves.
    #[error("malformed msgpack")]
    Malformed,
    /// Containers are nested too deeply to be walked safely.
    #[error("msgpack nested too deeply")]
    TooDeep,
    /// The message already has `__asgi_channel__` or `__asgi_group__`.
    #[error("a message may not contain the reserved key {0}")]
    ReservedKey(&'static str),
    /// A received message names no recipient, or both kinds.
    #[error("a received message must name exactly one recipient")]
    NoRecipient,
}

/// Most containers we walk into; msgpack from real messages is shallow,
/// and this stops crafted input from costing much.
const MAX_PENDING: u64 = 1 << 32;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Malformed)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, WireError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// The length of a map, if the next value is one.
    fn map_len(&mut self) -> Result<u64, WireError> {
        match self.byte()? {
            b @ 0x80..=0x8f => Ok(u64::from(b & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => Err(WireError::NotAMap),
        }
    }

    /// Reads a str (or bin) value, or skips any other value and returns `None`.
    fn str_or_skip(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let len = match self.buf.get(self.pos).copied() {
            Some(b @ 0xa0..=0xbf) => {
                self.pos += 1;
                usize::from(b & 0x1f)
            }
            Some(0xd9 | 0xc4) => {
                self.pos += 1;
                self.be(1)? as usize
            }
            Some(0xda | 0xc5) => {
                self.pos += 1;
                self.be(2)? as usize
            }
            Some(0xdb | 0xc6) => {
                self.pos += 1;
                self.be(4)? as usize
            }
            _ => {
                self.skip()?;
                return Ok(None);
            }
        };
        self.take(len).map(Some)
    }

    /// Skips one value, containers included, without recursion.
    fn skip(&mut self) -> Result<(), WireError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let b = self.byte()?;
            let (skip, children): (u64, u64) = match b {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(b & 0x0f)),
                0x90..=0x9f => (0, u64::from(b & 0x0f)),
                0xa0..=0xbf => (u64::from(b & 0x1f), 0),
                0xc1 => return Err(WireError::Malformed),
                0xc4 | 0xd9 => (self.be(1)?, 0),
                0xc5 | 0xda => (self.be(2)?, 0),
                0xc6 | 0xdb => (self.be(4)?, 0),
                // ext 8/16/32: length, then a type byte.
                0xc7 => (self.be(1)? + 1, 0),
                0xc8 => (self.be(2)? + 1, 0),
                0xc9 => (self.be(4)? + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 => (4, 0),
                0xcf | 0xd3 => (8, 0),
                // fixext 1/2/4/8/16: a type byte, then the data.
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, 2 * self.be(4)?),
            };
            let skip = usize::try_from(skip).map_err(|_| WireError::Malformed)?;
            self.take(skip)?;
            // Every child takes at least one byte: more children than bytes
            // left is malformed, which also bounds `pending`.
            pending = pending.saturating_add(children);
            if pending > MAX_PENDING || pending > (self.buf.len() - self.pos) as u64 {
                return Err(if pending > MAX_PENDING {
                    WireError::TooDeep
                } else {
                    WireError::Malformed
                });
            }
        }
        Ok(())
    }
}

fn write_map_header(out: &mut Vec<u8>, len: u64) {
    if len <= 15 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xde);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len <= 31 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.push(0xd9);
        out.push(len);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Adds the recipient key to an encoded message (a msgpack map), as its
/// last entry, like Python's `serialize_message`.
pub(crate) fn add_recipient(message: &[u8], recipient: &Recipient) -> Result<Vec<u8>, WireError> {
    let mut r = Reader::new(message);
    let len = r.map_len()?;
    let header_end = r.pos;
    for _ in 0..len {
        if let Some(key) = r.str_or_skip()? {
            for reserved in [CHANNEL_KEY, GROUP_KEY] {
                if key == reserved.as_bytes() {
                    return Err(WireError::ReservedKey(reserved));
                }
            }
        }
        r.skip()?;
    }
    if r.pos != message.len() || len >= u64::from(u32::MAX) {
        return Err(WireError::Malformed);
    }
    let (key, value) = match recipient {
        Recipient::Channel(c) => (CHANNEL_KEY, c),
        Recipient::Group(g) => (GROUP_KEY, g),
    };
    let mut out = Vec::with_capacity(message.len() + key.len() + value.len() + 8);
    write_map_header(&mut out, len + 1);
    out.extend_from_slice(&message[header_end..]);
    write_str(&mut out, key);
    write_str(&mut out, value);
    Ok(out)
}

/// Takes the recipient key out of a received message, like Python's
/// `deserialize_message`: returns the recipient and the message without it.
pub(crate) fn take_recipient(body: &[u8]) -> Result<(Recipient, Vec<u8>), WireError> {
    let mut r = Reader::new(body);
    let len = r.map_len()?;
    let mut kept = Vec::with_capacity(body.len());
    let mut recipient = None;
    let mut both = false;
    for _ in 0..len {
        let start = r.pos;
        let key = r.str_or_skip()?;
        let which = match key {
            Some(k) if k == CHANNEL_KEY.as_bytes() => Some(true),
            Some(k) if k == GROUP_KEY.as_bytes() => Some(false),
            _ => None,
        };
        match which {
            Some(is_channel) => {
                let name = r
                    .str_or_skip()?
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .ok_or(WireError::NoRecipient)?
                    .to_string();
                if recipient.is_some() {
                    both = true;
                }
                recipient = Some(if is_channel {
                    Recipient::Channel(name)
                } else {
                    Recipient::Group(name)
                });
            }
            None => {
                r.skip()?;
                kept.extend_from_slice(&body[start..r.pos]);
            }
        }
    }
    if r.pos != body.len() {
        return Err(WireError::Malformed);
    }
    let recipient = match recipient {
        Some(recipient) if !both => recipient,
        _ => return Err(WireError::NoRecipient),
    };
    let mut out = Vec::with_capacity(kept.len() + 5);
    write_map_header(&mut out, len - 1);
    out.extend_from_slice(&kept);
    Ok((recipient, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Chat {
        r#type: String,
        text: String,
        n: i64,
        tags: Vec<String>,
        extra: Option<BTreeMap<String, f64>>,
    }

    fn chat() -> Chat {
        Chat {
            r#type: "chat.message".into(),
            text: "x".repeat(40),
            n: -70_000,
            tags: vec!["a".into(), "b".into()],
            extra: Some([("pi".to_string(), 3.25)].into()),
        }
    }

    #[test]
    fn matches_python_bytes() {
        // python3 -c 'import msgpack; print(msgpack.packb({"type": "hi", "__asgi_channel__": "q!c"}).hex())'
        let python = [
            0x82, 0xa4, b't', b'y', b'p', b'e', 0xa2, b'h', b'i', 0xb0, b'_', b'_', b'a', b's',
            b'g', b'i', b'_', b'c', b'h', b'a', b'n', b'n', b'e', b'l', b'_', b'_', 0xa3, b'q',
            b'!', b'c',
        ];
        let mut map = BTreeMap::new();
        map.insert("type", "hi");
        let ours = add_recipient(
            &rmp_serde::to_vec_named(&map).expect("encode"),
            &Recipient::Channel("q!c".into()),
        )
        .expect("add");
        assert_eq!(ours, python);
        let (recipient, rest) = take_recipient(&python).expect("take");
        assert_eq!(recipient, Recipient::Channel("q!c".into()));
        let back: BTreeMap<String, String> = rmp_serde::from_slice(&rest).expect("decode");
        assert_eq!(back.get("type").map(String::as_str), Some("hi"));
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn round_trips_structs_and_long_names() {
        let group = "g".repeat(99);
        let body = add_recipient(
            &rmp_serde::to_vec_named(&chat()).expect("encode"),
            &Recipient::Group(group.clone()),
        )
        .expect("add");
        let (recipient, rest) = take_recipient(&body).expect("take");
        assert_eq!(recipient, Recipient::Group(group));
        assert_eq!(
            rmp_serde::from_slice::<Chat>(&rest).expect("decode"),
            chat()
        );
    }

    #[test]
    fn big_maps_get_bigger_headers() {
        for n in [14usize, 15, 16, 65_534, 65_535, 65_536] {
            let map: BTreeMap<String, u8> = (0..n).map(|i| (format!("k{i}"), 1)).collect();
            let body = add_recipient(
                &rmp_serde::to_vec_named(&map).expect("encode"),
                &Recipient::Channel("a!b".into()),
            )
            .expect("add");
            let whole: BTreeMap<String, serde::de::IgnoredAny> =
                rmp_serde::from_slice(&body).expect("a valid map");
            assert_eq!(whole.len(), n + 1);
            let (_, rest) = take_recipient(&body).expect("take");
            assert_eq!(rest, rmp_serde::to_vec_named(&map).expect("encode"));
        }
    }

    #[test]
    fn refuses_non_maps_reserved_keys_and_garbage() {
        let list = rmp_serde::to_vec(&[1, 2]).expect("encode");
        let to = Recipient::Channel("a!b".into());
        assert_eq!(add_recipient(&list, &to), Err(WireError::NotAMap));
        let mut reserved = BTreeMap::new();
        reserved.insert(GROUP_KEY, "x");
        let reserved = rmp_serde::to_vec_named(&reserved).expect("encode");
        assert_eq!(
            add_recipient(&reserved, &to),
            Err(WireError::ReservedKey(GROUP_KEY))
        );
        assert_eq!(
            take_recipient(&reserved).map(|r| r.0),
            Ok(Recipient::Group("x".into()))
        );
        let mut none = BTreeMap::new();
        none.insert("type", "x");
        let none = rmp_serde::to_vec_named(&none).expect("encode");
        assert_eq!(take_recipient(&none), Err(WireError::NoRecipient));
        assert_eq!(take_recipient(&[]), Err(WireError::Malformed));
        assert_eq!(take_recipient(&[0x90]), Err(WireError::NotAMap));
        assert_eq!(take_recipient(&[0x81, 0xa1]), Err(WireError::Malformed));
        // A map claiming 2^32-1 nested arrays in 5 bytes.
        assert!(take_recipient(&[0x81, 0xa1, b'k', 0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Trailing bytes.
        let mut trailing = none.clone();
        trailing.push(0xc0);
        assert_eq!(take_recipient(&trailing), Err(WireError::Malformed));
    }

    #[test]
    fn skips_every_kind_of_value() {
        // nil, bools, ints of each width, floats, bin, ext, nested containers.
        let values: Vec<u8> = vec![
            0xc0, 0xc2, 0xc3, 0x05, 0xe0, 0xcc, 1, 0xcd, 1, 2, 0xce, 1, 2, 3, 4, 0xcf, 1, 2, 3, 4,
            5, 6, 7, 8, 0xd0, 1, 0xd1, 1, 2, 0xd2, 1, 2, 3, 4, 0xd3, 1, 2, 3, 4, 5, 6, 7, 8, 0xca,
            1, 2, 3, 4, 0xcb, 1, 2, 3, 4, 5, 6, 7, 8, 0xc4, 2, 9, 9, 0xd4, 1, 1, 0xd5, 1, 1, 2,
            0xd6, 1, 1, 2, 3, 4, 0xc7, 1, 5, 9, 0x92, 0x81, 0xa1, b'k', 0x90, 0x80,
        ];
        let mut r = Reader::new(&values);
        let mut n = 0;
        while r.pos < values.len() {
            r.skip().expect("skip");
            n += 1;
        }
        assert_eq!(n, 21);
    }
}
