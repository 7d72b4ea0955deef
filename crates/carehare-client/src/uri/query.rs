//! A URL's query: parsed into [`Params`] by the table in `params.rs`, then
//! applied to the options.

use carehare_core::Auth;

use super::decode::{ENCODE_HINT, decode_query};
use super::error::UrlError;
use super::params::{Mechanism, PARAMS, Params, lookup};
use crate::options::{ClientCert, ConnectOptions};

/// User name and password used when the URL has none (RabbitMQ's defaults).
const DEFAULT_USER: &str = "guest";
const DEFAULT_PASSWORD: &str = "guest";

pub(super) fn parse(query: &str, tls: bool) -> Result<Params, UrlError> {
    let mut params = Params::default();
    let mut seen: Vec<usize> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_query(raw_name)
            .map_err(|why| UrlError::Parse(format!("a query parameter name {why}")))?;
        let Some((index, key)) = lookup(&name) else {
            if name.contains('@') {
                // Most likely the end of a password containing '?'.
                return Err(UrlError::Parse(format!(
                    "a query parameter name contains '@'; {ENCODE_HINT}"
                )));
            }
            return Err(UrlError::UnknownParameter(name));
        };
        let value = decode_query(raw_value).map_err(|why| {
            UrlError::Parse(format!("the value of query parameter \"{name}\" {why}"))
        })?;
        let param = &PARAMS[index];
        if !tls && param.tls {
            return Err(UrlError::TlsParamWithoutTls(key));
        }
        if seen.contains(&index) {
            return Err(UrlError::DuplicateParameter(name));
        }
        seen.push(index);
        (param.set)(&mut params, &value).map_err(|reason| UrlError::InvalidParameter {
            name,
            value,
            reason,
        })?;
    }
    Ok(params)
}

impl Params {
    pub(super) fn apply(
        self,
        opts: &mut ConnectOptions,
        user: Option<String>,
        password: Option<String>,
    ) -> Result<(), UrlError> {
        if let Some(heartbeat) = self.heartbeat {
            opts.amqp.heartbeat = heartbeat;
        }
        if let Some(frame_max) = self.frame_max {
            opts.amqp.frame_max = frame_max;
        }
        if let Some(channel_max) = self.channel_max {
            opts.amqp.channel_max = channel_max;
        }
        if let Some(timeout) = self.connection_timeout {
            opts.connection_timeout = timeout;
        }
        if self.connection_name.is_some() {
            opts.amqp.connection_name = self.connection_name;
        }

        let username = user.unwrap_or_else(|| DEFAULT_USER.into());
        let password = password.unwrap_or_else(|| DEFAULT_PASSWORD.into());
        opts.amqp.auth = match self.auth_mechanism.unwrap_or(Mechanism::Plain) {
            Mechanism::Plain => Auth::plain(username, password),
            Mechanism::AmqPlain => Auth::AmqPlain { username, password },
            // The certificate names the user; the URL's credentials go unused.
            Mechanism::External => Auth::External,
        };

        let client_cert = match (self.certfile, self.keyfile) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some(ClientCert {
                cert_file,
                key_file,
            }),
            (Some(_), None) => {
                return Err(UrlError::IncompleteClientCert {
                    present: "certfile",
                    missing: "keyfile",
                });
            }
            (None, Some(_)) => {
                return Err(UrlError::IncompleteClientCert {
                    present: "keyfile",
                    missing: "certfile",
                });
            }
        };
        // TLS parameters only get this far with amqps, so `tls` is set.
        if let Some(tls) = opts.tls.as_mut() {
            if self.cacertfile.is_some() {
                tls.ca_file = self.cacertfile;
            }
            if client_cert.is_some() {
                tls.client_cert = client_cert;
            }
            if self.server_name.is_some() {
                tls.server_name = self.server_name;
            }
        }
        Ok(())
    }
}
