//! The query parameters of a URL. Each one is written once, in the
//! `params!` table below; the parser (`query.rs`), the list in
//! [`UrlError::UnknownParameter`](crate::UrlError::UnknownParameter) and the
//! table in the documentation of
//! [`ConnectOptions::from_url`](crate::ConnectOptions::from_url) all read
//! that table. It uses no other module of `uri`, so that the error type can
//! read the table and the parser the error type without a cycle.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One query parameter.
pub(super) struct Param {
    /// Its spellings. Two of them in one URL count as a repeat.
    pub(super) names: &'static [&'static str],
    /// Only allowed in `amqps://` URLs.
    pub(super) tls: bool,
    /// Checks the (percent-decoded) value and stores it; the error is the
    /// reason for [`UrlError::InvalidParameter`](crate::UrlError::InvalidParameter).
    pub(super) set: fn(&mut Params, &str) -> Result<(), String>,
}

/// Builds `PARAMS` and `doc_table!`, which expands to the Markdown table
/// of the parameters for `from_url`'s documentation (a doc attribute takes
/// a macro, not a constant). The TLS parameters come last, in a group of
/// their own, so that their rows get the `amqps` note without a helper
/// macro (which the expansion in `mod.rs` could not name).
macro_rules! params {
    (
        any { $([$name:literal $(, $alias:literal)*] $set:ident: $doc:literal;)+ }
        amqps_only { $([$tls_name:literal $(, $tls_alias:literal)*] $tls_set:ident: $tls_doc:literal;)+ }
    ) => {
        pub(super) const PARAMS: &[Param] = &[
            $(Param { names: &[$name $(, $alias)*], tls: false, set: $set },)+
            $(Param { names: &[$tls_name $(, $tls_alias)*], tls: true, set: $tls_set },)+
        ];

        macro_rules! doc_table {
            () => {
                concat!(
                    "| parameter | meaning |\n|---|---|\n",
                    $("| `", $name, "`", $(", `", $alias, "`",)* " | ", $doc, " |\n",)+
                    $(
                        "| `", $tls_name, "`", $(", `", $tls_alias, "`",)* " | ", $tls_doc,
                        " (`amqps` only) |\n",
                    )+
                )
            };
        }
        pub(super) use doc_table;
    };
}

params! {
    any {
        ["heartbeat"] heartbeat: "heartbeat proposal in seconds (0 disables)";
        ["frame_max"] frame_max: "largest frame, 0 (no limit) or at least 4096";
        ["channel_max"] channel_max: "highest channel number (0: no limit)";
        ["connection_timeout"] connection_timeout: "in **milliseconds**, at least 1";
        ["auth_mechanism"] auth_mechanism: "`plain` (default), `amqplain` or `external`";
        ["name", "connection_name"] connection_name: "connection name shown in the management UI";
    }
    amqps_only {
        ["cacertfile"] cacertfile: "PEM file of CA certificates";
        ["certfile"] certfile: "client certificate chain, PEM; needs `keyfile`";
        ["keyfile"] keyfile: "the client certificate's private key, PEM; needs `certfile`";
        ["server_name_indication"] server_name: "name to verify the server certificate against";
        ["verify"] verify: "only `verify_peer`, which is always on";
    }
}

/// Every spelling of every parameter, for
/// [`UrlError::UnknownParameter`](crate::UrlError::UnknownParameter).
pub(super) fn supported() -> String {
    let names: Vec<&str> = PARAMS.iter().flat_map(|p| p.names).copied().collect();
    names.join(", ")
}

/// The query parameters, as given.
#[derive(Default)]
pub(super) struct Params {
    pub(super) heartbeat: Option<u16>,
    pub(super) frame_max: Option<u32>,
    pub(super) channel_max: Option<u16>,
    pub(super) connection_timeout: Option<Duration>,
    pub(super) auth_mechanism: Option<Mechanism>,
    pub(super) connection_name: Option<String>,
    pub(super) cacertfile: Option<PathBuf>,
    pub(super) certfile: Option<PathBuf>,
    pub(super) keyfile: Option<PathBuf>,
    pub(super) server_name: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) enum Mechanism {
    Plain,
    AmqPlain,
    External,
}

fn heartbeat(params: &mut Params, value: &str) -> Result<(), String> {
    params.heartbeat = Some(number(value, u16::MAX)?);
    Ok(())
}

fn channel_max(params: &mut Params, value: &str) -> Result<(), String> {
    params.channel_max = Some(number(value, u16::MAX)?);
    Ok(())
}

fn frame_max(params: &mut Params, value: &str) -> Result<(), String> {
    let frame_max = number(value, u32::MAX)?;
    if frame_max != 0 && frame_max < 4096 {
        return Err("must be 0 (no limit) or at least 4096".into());
    }
    params.frame_max = Some(frame_max);
    Ok(())
}

fn connection_timeout(params: &mut Params, value: &str) -> Result<(), String> {
    let ms = number(value, u64::MAX)?;
    if ms == 0 {
        return Err("must be at least 1 (milliseconds)".into());
    }
    params.connection_timeout = Some(Duration::from_millis(ms));
    Ok(())
}

fn auth_mechanism(params: &mut Params, value: &str) -> Result<(), String> {
    let mechanism = if value.eq_ignore_ascii_case("plain") {
        Mechanism::Plain
    } else if value.eq_ignore_ascii_case("amqplain") {
        Mechanism::AmqPlain
    } else if value.eq_ignore_ascii_case("external") {
        Mechanism::External
    } else {
        return Err("expected plain, amqplain or external".into());
    };
    params.auth_mechanism = Some(mechanism);
    Ok(())
}

fn connection_name(params: &mut Params, value: &str) -> Result<(), String> {
    params.connection_name = Some(value.to_owned());
    Ok(())
}

fn cacertfile(params: &mut Params, value: &str) -> Result<(), String> {
    params.cacertfile = Some(file_path(value)?);
    Ok(())
}

fn certfile(params: &mut Params, value: &str) -> Result<(), String> {
    params.certfile = Some(file_path(value)?);
    Ok(())
}

fn keyfile(params: &mut Params, value: &str) -> Result<(), String> {
    params.keyfile = Some(file_path(value)?);
    Ok(())
}

fn server_name(params: &mut Params, value: &str) -> Result<(), String> {
    if value.eq_ignore_ascii_case("disable") {
        return Err(
            "disabling SNI is not supported; the server certificate is always verified".into(),
        );
    }
    if rustls_pki_types::ServerName::try_from(value).is_err() {
        return Err("not a valid DNS name or IP address".into());
    }
    params.server_name = Some(value.to_owned());
    Ok(())
}

fn verify(_: &mut Params, value: &str) -> Result<(), String> {
    if value != "verify_peer" {
        return Err(
            "only verify_peer is supported: carehare always verifies the server certificate".into(),
        );
    }
    Ok(())
}

fn file_path(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("expected a file path".into());
    }
    Ok(PathBuf::from(value))
}

/// A decimal number from 0 to `max`, digits only.
fn number<T>(value: &str, max: T) -> Result<T, String>
where
    T: FromStr + std::fmt::Display,
{
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number".into());
    }
    // Only digits: parsing fails only when the number is too large.
    value
        .parse::<T>()
        .map_err(|_| format!("too large (at most {max})"))
}

/// The parameter spelled `name`: its index in `PARAMS` and the spelling.
pub(super) fn lookup(name: &str) -> Option<(usize, &'static str)> {
    PARAMS.iter().enumerate().find_map(|(index, param)| {
        let spelling = param.names.iter().find(|known| **known == name)?;
        Some((index, *spelling))
    })
}
