//! A small client for RabbitMQ's management HTTP API: where it is (from
//! the AMQP URL, or `--management-url`), and GET requests that return
//! JSON.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use carehare_tokio::carehare_core::Auth;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;

use crate::common::ConnArgs;
use crate::error::{CliError, ManagementError};

/// What a path segment escapes: all but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The management plugin's default port over HTTP.
const HTTP_PORT: u16 = 15672;
/// ... and over HTTPS.
const HTTPS_PORT: u16 = 15671;

/// Where the management API is and how to log in.
#[derive(Debug, Clone)]
pub(crate) struct Management {
    /// `http[s]://host:port` and any path prefix, without a trailing `/`.
    base: String,
    /// `Basic ...`.
    authorization: String,
    /// The AMQP URL's vhost, which listings are scoped to.
    vhost: String,
    agent: ureq::Agent,
}

impl Management {
    /// The management API of the broker `conn` points at: same host, port
    /// 15672 (15671 for `amqps`), the URL's user and password, unless
    /// `url` says otherwise (its user and password, if it has them, win).
    pub(crate) fn new(conn: &ConnArgs, url: Option<&str>) -> Result<Self, CliError> {
        let options = conn.options("carehare list")?;
        let mut credentials = match &options.amqp.auth {
            Auth::Plain { username, password } | Auth::AmqPlain { username, password } => {
                Some((username.clone(), password.clone()))
            }
            _ => None,
        };
        let base = match url {
            Some(url) => {
                let (base, userinfo) = split_userinfo(url)?;
                if let Some(userinfo) = userinfo {
                    credentials = Some(userinfo);
                }
                base
            }
            None => {
                let (scheme, port) = if options.tls.is_some() {
                    ("https", HTTPS_PORT)
                } else {
                    ("http", HTTP_PORT)
                };
                let host = if options.host.contains(':') {
                    format!("[{}]", options.host)
                } else {
                    options.host.clone()
                };
                format!("{scheme}://{host}:{port}")
            }
        };
        // The API takes no client certificate login (EXTERNAL).
        let Some((user, password)) = credentials else {
            return Err(CliError::usage(
                "the management API needs a user and password, and the AMQP URL has none: give them in --management-url",
            ));
        };
        let authorization = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
        Ok(Self {
            base,
            authorization,
            vhost: options.amqp.virtual_host.clone(),
            agent: agent(conn.connect_timeout, conn)?,
        })
    }

    /// `/api/{what}/{vhost}`: the vhost's queues, exchanges...
    pub(crate) fn in_vhost(&self, what: &str) -> String {
        format!("/api/{what}/{}", self.vhost_segment())
    }

    /// `/api/vhosts/{vhost}/{what}` (connections, channels).
    pub(crate) fn of_vhost(&self, what: &str) -> String {
        format!("/api/vhosts/{}/{what}", self.vhost_segment())
    }

    fn vhost_segment(&self) -> String {
        utf8_percent_encode(&self.vhost, SEGMENT).to_string()
    }

    /// GETs `path` (from `/api/...`) and parses the JSON answer.
    pub(crate) fn get(&self, path: &str) -> Result<Value, ManagementError> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .header("accept", "application/json")
            .header("authorization", &self.authorization)
            .call()
            .map_err(|error| ManagementError::Unreachable {
                url: url.clone(),
                error,
            })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| ManagementError::Other {
                url: url.clone(),
                what: format!("status {status} and an unreadable body: {e}"),
            })?;
        let json: Option<Value> = serde_json::from_str(&body).ok();
        if !(200..300).contains(&status) {
            let reason = json
                .as_ref()
                .and_then(|j| j.get("reason"))
                .and_then(Value::as_str)
                .map_or_else(|| body.trim().to_owned(), str::to_owned);
            return Err(match status {
                401 | 403 => ManagementError::Unauthorized { status, reason },
                404 => ManagementError::NotFound { url, reason },
                _ => ManagementError::Other {
                    url,
                    what: format!("status {status}: {reason}"),
                },
            });
        }
        json.ok_or_else(|| ManagementError::Other {
            url,
            what: "a body that is not JSON".into(),
        })
    }
}

/// An agent that reports failure statuses as responses (to read their
/// reason), with the connect timeout, and `--cacert` as the trusted CAs
/// for HTTPS.
fn agent(timeout: Duration, conn: &ConnArgs) -> Result<ureq::Agent, CliError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout));
    if let Some(ca) = &conn.cacert {
        let pem = std::fs::read(ca).map_err(CliError::io(format!("reading {}", ca.display())))?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CliError::usage(format!("{}: {e}", ca.display())))?;
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(config.build().new_agent())
}

/// Splits `http://user:pass@host:port/prefix` into the URL without its
/// user and password (and without a trailing `/`), and them, decoded.
fn split_userinfo(url: &str) -> Result<(String, Option<(String, String)>), CliError> {
    let bad = || {
        CliError::usage(format!(
            "--management-url {url:?}: expected http[s]://[user:password@]host[:port][/prefix]"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let credentials = userinfo.map(|u| match u.split_once(':') {
        Some((user, password)) => (decode(user), decode(password)),
        None => (decode(u), String::new()),
    });
    let base = format!("{scheme}://{host}{}", path.trim_end_matches('/'));
    Ok((base, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(url: &str) -> ConnArgs {
        ConnArgs {
            url: url.into(),
            cacert: None,
            cert: None,
            key: None,
            server_name: None,
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn derived_from_the_amqp_url() {
        let m = Management::new(&conn("amqp://u:p%40ss@rabbit:5673/v%2Fh"), None).unwrap();
        assert_eq!(m.base, "http://rabbit:15672");
        assert_eq!(m.in_vhost("queues"), "/api/queues/v%2Fh");
        assert_eq!(m.of_vhost("connections"), "/api/vhosts/v%2Fh/connections");
        let basic = format!("Basic {}", BASE64.encode("u:p@ss"));
        assert_eq!(m.authorization, basic);
        let m = Management::new(&conn("amqps://u:p@[::1]/"), None).unwrap();
        assert_eq!(m.base, "https://[::1]:15671");
        assert_eq!(m.in_vhost("queues"), "/api/queues/%2F");
    }

    #[test]
    fn the_management_url_wins() {
        let m = Management::new(
            &conn("amqp://u:p@rabbit/"),
            Some("https://admin:s%3Acret@mgmt.example:8443/rabbit/"),
        )
        .unwrap();
        assert_eq!(m.base, "https://mgmt.example:8443/rabbit");
        let basic = format!("Basic {}", BASE64.encode("admin:s:cret"));
        assert_eq!(m.authorization, basic);
        let m = Management::new(&conn("amqp://u:p@rabbit/"), Some("http://mgmt:1234")).unwrap();
        assert_eq!(m.base, "http://mgmt:1234");
        let basic = format!("Basic {}", BASE64.encode("u:p"));
        assert_eq!(m.authorization, basic);
        let external = "amqps://rabbit/?auth_mechanism=external";
        assert!(Management::new(&conn(external), None).is_err());
        assert!(Management::new(&conn(external), Some("https://u:p@rabbit:15671")).is_ok());
        for bad in ["mgmt:1234", "ftp://mgmt", "http://"] {
            assert!(
                Management::new(&conn("amqp://rabbit/"), Some(bad)).is_err(),
                "{bad}"
            );
        }
    }
}
