//! Percent-decoding, shared by the URL parser (`mod.rs`) and the query
//! parser (`query.rs`). A leaf: it uses no other module of `uri`.

use percent_encoding::percent_decode;

/// Added to errors that a password with special characters may cause.
pub(super) const ENCODE_HINT: &str = "if the user name or password contains '@', ':', '/', '?', '#' or '%', \
     percent-encode it (%40, %3A, %2F, %3F, %23, %25)";

#[derive(Debug, Clone, Copy)]
pub(super) enum DecodeError {
    BadEscape,
    NotUtf8,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::BadEscape => "has a '%' not followed by two hex digits",
            DecodeError::NotUtf8 => "is not valid UTF-8 after percent-decoding",
        })
    }
}

/// Percent-decodes `s`, which must be well-formed and decode to UTF-8.
pub(super) fn decode(s: &str) -> Result<String, DecodeError> {
    decode_bytes(s.as_bytes())
}

/// As [`decode`], with `+` meaning a space (form encoding, for queries).
pub(super) fn decode_query(s: &str) -> Result<String, DecodeError> {
    decode_bytes(s.replace('+', " ").as_bytes())
}

fn decode_bytes(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| b == b'%') {
        match rest.get(pos + 1..pos + 3) {
            Some([hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                rest = &rest[pos + 3..];
            }
            _ => return Err(DecodeError::BadEscape),
        }
    }
    String::from_utf8(percent_decode(bytes).collect()).map_err(|_| DecodeError::NotUtf8)
}
