//! A build without TLS (the `rustls` feature off): TLS options are refused
//! with [`TlsError::NotCompiledIn`] before any traffic.

use std::convert::Infallible;

use rustls_pki_types::ServerName;

use super::error::{HandshakeError, TlsError};
use crate::options::TlsOptions;
use crate::runtime::Stream;

/// Never built: [`Connector::new`] always refuses.
#[derive(Clone)]
pub(crate) struct Connector(Infallible);

impl Connector {
    /// Always [`TlsError::NotCompiledIn`].
    pub(crate) fn new(_: &TlsOptions) -> Result<Self, TlsError> {
        Err(TlsError::NotCompiledIn)
    }

    /// Unreachable: there is no `Connector` to call it on.
    pub(crate) async fn handshake(
        &self,
        _: ServerName<'static>,
        _: Box<dyn Stream>,
    ) -> Result<Box<dyn Stream>, HandshakeError> {
        match self.0 {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_refused_naming_the_feature() {
        let err = match Connector::new(&TlsOptions::default()) {
            Err(e) => e,
            Ok(_) => panic!("a connector without TLS"),
        };
        assert_eq!(err, TlsError::NotCompiledIn);
        assert!(err.to_string().contains("`rustls` feature"), "{err}");
    }
}
