//! TLS for `amqps://`: errors that exist in every build, the name a
//! certificate is checked against, and the [`Connector`] of the build's
//! backend: rustls (the `rustls` feature, on by default) or none, in which
//! case TLS options are refused with [`TlsError::NotCompiledIn`].

#[cfg(feature = "rustls")]
mod backend;
#[cfg(not(feature = "rustls"))]
mod disabled;
mod error;
mod name;

#[cfg(feature = "rustls")]
pub(crate) use backend::Connector;
#[cfg(all(test, feature = "rustls"))]
pub(crate) use backend::certificate_problem;
#[cfg(not(feature = "rustls"))]
pub(crate) use disabled::Connector;
pub(crate) use error::HandshakeError;
pub use error::{CertificateProblem, TlsError};
pub(crate) use name::server_name;
