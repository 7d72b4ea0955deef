//! Arbitrary UTF-8 into `ConnectOptions::from_url`.
//!
//! Invariants:
//! - nothing panics;
//! - when the input looks like `scheme://user:PASSWORD@...` (see
//!   [`password`]), neither the error's `Display` (nor its `Debug`) nor, on
//!   success, the options' `Debug` contain PASSWORD, unless the text would
//!   be there anyway (see [`shown_anyway`]);
//! - on success the port is never 0 and the vhost is at most 255 bytes (an
//!   AMQP short string).
#![no_main]

use std::sync::OnceLock;

use carehare_client::{ClientCert, ConnectOptions, TlsOptions, UrlError};
use carehare_core::Auth;
use libfuzzer_sys::fuzz_target;

/// Shortest password checked: shorter ones match by chance (a user name,
/// the host, a parameter value) too easily.
const MIN_PASSWORD: usize = 6;

/// The password of `scheme://user:PASSWORD@...`, found by plain string
/// splitting: after the first `://`, the user runs to the first `:`, the
/// password from there to the next `@`.
///
/// `None` when that reading is doubtful: no such shape, a user part holding
/// a character that ends the authority (`/ ? #`) or the user info (`@`), so
/// that the `:` is in the path or query rather than the user info; a
/// password shorter than [`MIN_PASSWORD`] bytes; or a password that also
/// occurs elsewhere in the input (then the other occurrence may show up
/// legitimately, e.g. as the host or a connection name).
///
/// Returns the password and where it starts in `input`.
fn password(input: &str) -> Option<(usize, &str)> {
    let (_, rest) = input.split_once("://")?;
    let (user, rest) = rest.split_once(':')?;
    if user.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (password, _) = rest.split_once('@')?;
    if password.len() < MIN_PASSWORD || occurrences(input, password) != 1 {
        return None;
    }
    let start = input.len() - rest.len();
    Some((start, password))
}

/// Whether `secret` is shown for reasons other than being the password:
///
/// - it is a piece of the parser's own [`wording`] (`x://u:amqp://@h` is
///   rejected with "expected amqp:// or amqps://");
/// - or the output still contains it when the password is replaced by a
///   filler of the same length: then it is made of wording and parts of
///   the input outside the password (libFuzzer builds such passwords from
///   the comparisons it sees, e.g. `Scheme("amqVp")` in
///   `amqVp://u:Scheme("amqVp")@`, whose error's `Debug` is
///   `UnsupportedScheme("amqVp")`).
fn shown_anyway(input: &str, start: usize, secret: &str) -> bool {
    if wording().iter().any(|w| w.contains(secret)) {
        return true;
    }
    let Some(filler) = ['x', 'y', 'z'].into_iter().find(|c| !secret.contains(*c)) else {
        return false;
    };
    let mut other = String::with_capacity(input.len());
    other.push_str(&input[..start]);
    other.extend(std::iter::repeat_n(filler, secret.len()));
    other.push_str(&input[start + secret.len()..]);
    shown(&ConnectOptions::from_url(&other))
        .iter()
        .any(|s| s.contains(secret))
}

/// What the parser lets the caller see: the error's `Display` and `Debug`,
/// or the options' `Debug`.
fn shown(result: &Result<ConnectOptions, UrlError>) -> Vec<String> {
    match result {
        Err(e) => vec![e.to_string(), format!("{e:?}")],
        Ok(options) => vec![format!("{options:?}")],
    }
}

/// The parser's source files (its tests are in a file of their own).
const URI_SOURCES: &[&str] = &[
    include_str!("../../crates/carehare-client/src/uri/mod.rs"),
    include_str!("../../crates/carehare-client/src/uri/decode.rs"),
    include_str!("../../crates/carehare-client/src/uri/error.rs"),
    include_str!("../../crates/carehare-client/src/uri/params.rs"),
    include_str!("../../crates/carehare-client/src/uri/query.rs"),
];

/// Text that may show up whatever the input: the string literals of
/// the `uri` module outside its tests (error messages, split at `{...}`
/// placeholders), and the `Debug` form of a few fixed options (field
/// names, defaults such as `guest` and `localhost`, `<redacted>`).
fn wording() -> &'static [String] {
    static WORDING: OnceLock<Vec<String>> = OnceLock::new();
    WORDING.get_or_init(|| {
        let mut wording: Vec<String> = URI_SOURCES
            .iter()
            .flat_map(|source| {
                let code = source.split("#[cfg(test)]").next().unwrap_or(source);
                string_literals(code)
            })
            .collect();
        let defaults = ConnectOptions::default();
        let mut tls = ConnectOptions {
            tls: Some(TlsOptions {
                ca_file: Some("/ca.pem".into()),
                client_cert: Some(ClientCert {
                    cert_file: "/c.pem".into(),
                    key_file: "/k.pem".into(),
                }),
                server_name: Some("localhost".into()),
                ..TlsOptions::default()
            }),
            ..defaults.clone()
        };
        tls.amqp.connection_name = Some(String::new());
        for auth in [
            Auth::plain("guest", "guest"),
            Auth::AmqPlain {
                username: "guest".into(),
                password: "guest".into(),
            },
            Auth::External,
        ] {
            tls.amqp.auth = auth;
            wording.push(format!("{tls:?}"));
        }
        wording.push(format!("{defaults:?}"));
        wording
    })
}

/// The `"..."` literals in Rust source, unescaped, each split at its
/// `{...}` format placeholders. Good enough for the `uri` module: no raw strings,
/// and a `'"'` char literal would only add a harmless extra piece.
fn string_literals(code: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => literal.push('\n'),
                    // A line continuation: skip the newline and indentation.
                    Some('\n') => {
                        while chars.peek().is_some_and(|c| c.is_whitespace()) {
                            chars.next();
                        }
                    }
                    Some(other) => literal.push(other),
                    None => break,
                },
                _ => literal.push(c),
            }
        }
        // "{x}" and "{x:?}" are arguments; "{{" never occurs in the `uri` module.
        let mut piece = String::new();
        let mut in_placeholder = false;
        for c in literal.chars() {
            match (in_placeholder, c) {
                (false, '{') => {
                    in_placeholder = true;
                    pieces.push(std::mem::take(&mut piece));
                }
                (true, '}') => in_placeholder = false,
                (true, _) => {}
                (false, c) => piece.push(c),
            }
        }
        pieces.push(piece);
    }
    pieces.retain(|p| p.len() >= MIN_PASSWORD);
    pieces
}

/// How many times `needle` occurs in `haystack`, overlaps included.
fn occurrences(haystack: &str, needle: &str) -> usize {
    let mut count = 0;
    let mut from = 0;
    while let Some(at) = haystack[from..].find(needle) {
        count += 1;
        // Step one character, not one byte: `from` must stay on a boundary.
        let start = from + at;
        from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
    }
    count
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let result = ConnectOptions::from_url(input);
    if let Some((start, secret)) = password(input) {
        for text in shown(&result) {
            assert!(
                !text.contains(secret) || shown_anyway(input, start, secret),
                "{input:?} shows the password {secret:?}: {text}"
            );
        }
    }
    if let Ok(options) = result {
        assert_ne!(options.port, 0, "port 0 from {input:?}");
        assert!(
            options.amqp.virtual_host.len() <= 255,
            "a vhost of {} bytes from {input:?}",
            options.amqp.virtual_host.len()
        );
    }
});
