//! `amqp://` and `amqps://` URLs, after the RabbitMQ URI specification
//! (<https://www.rabbitmq.com/docs/uri-spec>) and its query parameters
//! (<https://www.rabbitmq.com/docs/uri-query-parameters>).
//!
//! The parser is written by hand rather than on top of the `url` crate: the
//! spec allows an empty host with user info or a port (`amqp://user@`,
//! `amqp://:10000`), which `url` rejects, and it distinguishes an empty user
//! info (`amqp://:@/`) from an absent one, which `url` does not.
//!
//! Nothing here ever puts the URL, the user name or the password into an
//! error message: a URL may carry a password.

mod decode;
mod error;
mod params;
mod query;

use std::net::Ipv6Addr;
use std::str::FromStr;

use self::decode::{DecodeError, ENCODE_HINT, decode};
// Siblings name `error::UrlError` directly: going through this re-export
// would make them depend on this module, which depends on them.
pub use self::error::UrlError;
use crate::options::{ConnectOptions, TlsOptions};

/// Default port of `amqp://`.
const AMQP_PORT: u16 = 5672;
/// Default port of `amqps://`.
const AMQPS_PORT: u16 = 5671;
/// A vhost name is an AMQP short string.
const MAX_VHOST_LEN: usize = 255;

impl ConnectOptions {
    /// Parses an `amqp://` or `amqps://` URL:
    ///
    /// ```text
    /// amqp[s]://[user[:password]@][host][:port][/vhost][?param=value&...]
    /// ```
    ///
    /// - `amqp` uses port 5672, `amqps` port 5671 and TLS (with
    ///   [`TlsOptions::default`]: the platform's root certificates).
    /// - User name, password, host and vhost are percent-decoded. Without
    ///   user info the user is `guest`, and so is a missing password
    ///   (`amqp://user@host`); an empty one (`amqp://:@host`) stays empty.
    /// - An empty host means `localhost`. An IPv6 address goes in brackets
    ///   (`amqp://[::1]:5672`) and is stored without them.
    /// - The vhost is the path without its leading `/`; a `/` in the name
    ///   must be encoded as `%2F` (`amqp://host/%2F` is the vhost `/`,
    ///   `amqp://host/a%2Fb` is `a/b`, `amqp://host/a/b` is an error).
    ///   Both `amqp://host` and `amqp://host/` mean the default vhost `/`.
    ///   (This departs from the spec, which reads `amqp://host/` as the
    ///   vhost with the empty name; RabbitMQ has no such vhost by default.)
    ///
    /// Query parameters, each at most once (unknown ones are errors, to
    /// catch typos; `+` means a space, encode a literal `+` as `%2B`):
    ///
    #[doc = params::doc_table!()]
    ///
    /// Everything else keeps its value from [`ConnectOptions::default`].
    ///
    /// ```
    /// use carehare_client::ConnectOptions;
    /// let options = ConnectOptions::from_url("amqp://app:s3cret@[::1]:5673/staging?heartbeat=10&name=billing")?;
    /// assert_eq!((options.host.as_str(), options.port), ("::1", 5673));
    /// assert_eq!(options.amqp.virtual_host, "staging");
    /// assert_eq!(options.amqp.heartbeat, 10);
    /// assert_eq!(options.amqp.connection_name.as_deref(), Some("billing"));
    /// # Ok::<(), carehare_client::UrlError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<ConnectOptions, UrlError> {
        parse(url)
    }
}

impl ConnectOptions {
    /// Parses several URLs naming nodes of one cluster, e.g. from a config
    /// file's list: their hosts and ports become the addresses (the first
    /// URL's in `host` and `port`, the others in
    /// [`extra_addresses`](ConnectOptions::extra_addresses)), tried in
    /// order unless [`address_order`](ConnectOptions::address_order) says
    /// otherwise. Everything else (scheme, credentials, vhost, query
    /// options) must be the same in every URL, else
    /// [`UrlError::ClusterUrlsDisagree`]; each URL is parsed as by
    /// [`from_url`](ConnectOptions::from_url).
    ///
    /// ```
    /// use carehare_client::{Address, ConnectOptions, UrlError};
    /// let options = ConnectOptions::from_urls([
    ///     "amqp://app:secret@rabbit-1/prod?heartbeat=10",
    ///     "amqp://app:secret@rabbit-2/prod?heartbeat=10",
    ///     "amqp://app:secret@rabbit-3:5673/prod?heartbeat=10",
    /// ])?;
    /// assert_eq!(options.addresses().len(), 3);
    /// assert_eq!(options.extra_addresses[1], Address::new("rabbit-3", 5673));
    ///
    /// let mixed = ConnectOptions::from_urls(["amqp://rabbit-1/prod", "amqp://rabbit-2/test"]);
    /// assert!(matches!(mixed, Err(UrlError::ClusterUrlsDisagree { part: "vhost", index: 1 })));
    /// # Ok::<(), UrlError>(())
    /// ```
    pub fn from_urls<I, S>(urls: I) -> Result<ConnectOptions, UrlError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut urls = urls.into_iter();
        let first = urls.next().ok_or(UrlError::NoUrls)?;
        let mut options = parse(first.as_ref())?;
        for (i, url) in urls.enumerate() {
            let other = parse(url.as_ref())?;
            if let Some(part) = cluster_difference(&options, &other) {
                return Err(UrlError::ClusterUrlsDisagree { part, index: i + 1 });
            }
            options
                .extra_addresses
                .push(crate::Address::new(other.host, other.port));
        }
        Ok(options)
    }
}

/// What, besides host and port, differs between two parsed URLs.
fn cluster_difference(a: &ConnectOptions, b: &ConnectOptions) -> Option<&'static str> {
    if a.tls.is_some() != b.tls.is_some() {
        return Some("scheme");
    }
    if a.amqp.auth != b.amqp.auth {
        return Some("credentials");
    }
    if a.amqp.virtual_host != b.amqp.virtual_host {
        return Some("vhost");
    }
    let tls_params = |o: &ConnectOptions| {
        o.tls.as_ref().map(|t| {
            (
                t.ca_file.clone(),
                t.client_cert.clone(),
                t.server_name.clone(),
            )
        })
    };
    if a.amqp != b.amqp
        || a.connection_timeout != b.connection_timeout
        || tls_params(a) != tls_params(b)
    {
        return Some("query options");
    }
    None
}

impl FromStr for ConnectOptions {
    type Err = UrlError;

    /// Same as [`ConnectOptions::from_url`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnectOptions::from_url(s)
    }
}

fn parse(input: &str) -> Result<ConnectOptions, UrlError> {
    let input = input.trim();
    let colon = input
        .find(':')
        .ok_or_else(|| UrlError::Parse("no scheme: expected amqp:// or amqps://".into()))?;
    let scheme = &input[..colon];
    if !is_scheme(scheme) {
        return Err(UrlError::Parse(
            "no scheme: expected amqp:// or amqps://".into(),
        ));
    }
    let tls = if scheme.eq_ignore_ascii_case("amqp") {
        false
    } else if scheme.eq_ignore_ascii_case("amqps") {
        true
    } else {
        return Err(UrlError::UnsupportedScheme(scheme.to_owned()));
    };
    let rest = input[colon + 1..]
        .strip_prefix("//")
        .ok_or_else(|| UrlError::Parse(format!("expected \"//\" after \"{scheme}:\"")))?;

    // authority [ "/" vhost ] [ "?" query ], and no fragment.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((before, after)) => (before, Some(after)),
        None => (rest, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (before_fragment, None),
    };

    let mut opts = ConnectOptions::default();

    let authority = parse_authority(authority)?;
    if fragment.is_some() {
        // The text after '#' may be the end of a password: don't show it.
        return Err(UrlError::Parse(format!(
            "a fragment ('#...') is not allowed; {ENCODE_HINT}"
        )));
    }
    opts.host = authority.host;
    opts.port = authority
        .port
        .unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT });
    if tls {
        opts.tls = Some(TlsOptions::default());
    }
    opts.amqp.virtual_host = parse_vhost(path)?;

    let params = match query {
        Some(query) => query::parse(query, tls)?,
        None => params::Params::default(),
    };
    params.apply(&mut opts, authority.user, authority.password)?;
    Ok(opts)
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

struct Authority {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_authority(authority: &str) -> Result<Authority, UrlError> {
    // The last '@' ends the user info: a raw '@' in a password is forgiven.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user = decode(user)
                .map_err(|why| UrlError::Parse(format!("the user name {why}; {ENCODE_HINT}")))?;
            let password = password
                .map(decode)
                .transpose()
                .map_err(|why| UrlError::Parse(format!("the password {why}; {ENCODE_HINT}")))?;
            (Some(user), password)
        }
    };

    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::Parse("an IPv6 address has no closing ']'".into()))?;
        let addr: Ipv6Addr = inside
            .parse()
            .map_err(|_| UrlError::Parse(format!("\"[{inside}]\" is not a valid IPv6 address")))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                UrlError::Parse("expected ':' and a port after the IPv6 address".into())
            })?),
        };
        (addr.to_string(), port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        };
        if port.is_some_and(|port| port.contains(':')) {
            return Err(UrlError::Parse(
                "an IPv6 address must be in brackets, as in amqp://[::1]:5672; \
                 otherwise there is more than one ':' after the host"
                    .into(),
            ));
        }
        (parse_host(host)?, port)
    };
    let port = match port {
        None | Some("") => None,
        // Never show the port text: with a '/', '?' or '#' in a password,
        // it is the start of the password.
        Some(port) => Some(
            Some(port)
                .filter(|port| port.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|port| port.parse::<u16>().ok())
                .filter(|&port| port != 0)
                .ok_or_else(|| {
                    UrlError::Parse(format!(
                        "invalid port: expected a number from 1 to 65535; {ENCODE_HINT}"
                    ))
                })?,
        ),
    };
    Ok(Authority {
        user,
        password,
        host,
        port,
    })
}

/// A reg-name (RFC 3986), percent-decoded; empty means `localhost`.
fn parse_host(raw: &str) -> Result<String, UrlError> {
    if raw.is_empty() {
        return Ok("localhost".into());
    }
    let allowed = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    if let Some(bad) = raw.chars().find(|c| !u8::try_from(*c).is_ok_and(allowed)) {
        return Err(UrlError::Parse(format!(
            "invalid character {bad:?} in host \"{raw}\""
        )));
    }
    decode(raw).map_err(|why| UrlError::Parse(format!("the host \"{raw}\" {why}")))
}

fn parse_vhost(path: &str) -> Result<String, UrlError> {
    // The value is never shown: with a '/' in a password, it would be the
    // end of the password.
    let raw = match path {
        "" | "/" => return Ok("/".into()),
        _ => &path[1..], // a path here always starts with '/'
    };
    if raw.contains('/') {
        return Err(UrlError::InvalidVhost(
            "the path contains more than one '/': encode a '/' in a vhost name as %2F",
        ));
    }
    if raw.contains('@') {
        return Err(UrlError::InvalidVhost(
            "the path contains a raw '@': encode it as %40 (or, if the user name or password \
             contains '/', encode that as %2F)",
        ));
    }
    let vhost = decode(raw).map_err(|why| {
        UrlError::InvalidVhost(match why {
            DecodeError::BadEscape => "the path has a '%' not followed by two hex digits",
            DecodeError::NotUtf8 => "the path is not valid UTF-8 after percent-decoding",
        })
    })?;
    if vhost.len() > MAX_VHOST_LEN {
        return Err(UrlError::InvalidVhost("the name is longer than 255 bytes"));
    }
    Ok(vhost)
}

#[cfg(test)]
mod tests;
