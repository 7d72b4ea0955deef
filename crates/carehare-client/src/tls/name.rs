//! The name a server certificate is checked against.

use rustls_pki_types::ServerName;

use super::error::TlsError;
use crate::options::TlsOptions;

/// The name to verify the server certificate against (and to send as
/// SNI): `opts.server_name`, or else `host`. IP addresses (IPv6 with or
/// without brackets) are verified against the certificate's IP SANs.
pub(crate) fn server_name(opts: &TlsOptions, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = opts.server_name.as_deref().unwrap_or(host);
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(unbracketed.to_owned())
        .map_err(|_| TlsError::InvalidServerName(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::IpAddr;

    use super::*;

    #[test]
    fn server_names() {
        let opts = TlsOptions::default();
        assert_eq!(
            server_name(&opts, "127.0.0.1").unwrap(),
            ServerName::IpAddress(IpAddr::from(std::net::Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            server_name(&opts, "::1").unwrap(),
            ServerName::IpAddress(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            server_name(&opts, "[::1]").unwrap(),
            ServerName::IpAddress(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            server_name(&opts, "localhost").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert_eq!(
            server_name(&opts, "bad name!").unwrap_err(),
            TlsError::InvalidServerName("bad name!".into())
        );
        assert!(server_name(&opts, "").is_err());

        let opts = TlsOptions {
            server_name: Some("rabbit.example".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            server_name(&opts, "10.0.0.1").unwrap(),
            ServerName::try_from("rabbit.example").unwrap()
        );
    }
}
