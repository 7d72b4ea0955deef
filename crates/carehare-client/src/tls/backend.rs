//! TLS through rustls: the client configuration built from
//! [`TlsOptions`] (TLS 1.2 and 1.3, server certificate and host name always
//! verified) and the handshake.
//!
//! Which crypto provider and which default roots are used depends on the
//! cargo features: see [`provider`] and [`default_roots`].

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use carehare_core::error::Cause;

use super::error::{CertificateProblem, HandshakeError, TlsError};
use crate::options::TlsOptions;
use crate::runtime::Stream;

/// A TLS client, built once per connect (before any traffic) and used for
/// each address tried.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
}

impl Connector {
    /// Checks and loads everything `opts` names (files, roots, provider).
    pub(crate) fn new(opts: &TlsOptions) -> Result<Self, TlsError> {
        Ok(Self {
            config: client_config(opts)?,
        })
    }

    /// Runs the TLS handshake over `tcp`, verifying the server's
    /// certificate against `name`.
    pub(crate) async fn handshake(
        &self,
        name: ServerName<'static>,
        tcp: Box<dyn Stream>,
    ) -> Result<Box<dyn Stream>, HandshakeError> {
        match futures_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
        {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => Err(match certificate_problem(e) {
                Ok((problem, source)) => HandshakeError::Certificate { problem, source },
                Err(e) => HandshakeError::Io(e),
            }),
        }
    }
}

/// What a failed TLS handshake says about the server's certificate: the
/// problem, and rustls's error as the cause. `Err` gives `error` back when
/// it is not a certificate that failed verification (a refused connection,
/// a TLS alert...).
pub(crate) fn certificate_problem(
    error: std::io::Error,
) -> Result<
    (
        CertificateProblem,
        Cause<dyn std::error::Error + Send + Sync>,
    ),
    std::io::Error,
> {
    // futures-rustls hands rustls's error over inside an io::Error.
    let is_certificate = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if !is_certificate {
        return Err(error);
    }
    let Some(inner) = error.into_inner() else {
        return Err(std::io::Error::other("a TLS error lost its cause"));
    };
    let problem = match inner.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(e)) => problem_of(e),
        _ => CertificateProblem::Other(inner.to_string()),
    };
    Ok((problem, Cause::from_box(inner)))
}

fn problem_of(error: &rustls::CertificateError) -> CertificateProblem {
    use rustls::CertificateError as E;
    match error {
        E::Expired | E::ExpiredContext { .. } => CertificateProblem::Expired,
        E::NotValidYet | E::NotValidYetContext { .. } => CertificateProblem::NotYetValid,
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            CertificateProblem::NotValidForName
        }
        E::UnknownIssuer => CertificateProblem::UnknownIssuer,
        E::BadSignature => CertificateProblem::BadSignature,
        E::Revoked => CertificateProblem::Revoked,
        other => CertificateProblem::Other(other.to_string()),
    }
}

/// The rustls configuration for `opts`: `opts.config` when set, otherwise
/// one trusting `opts.ca_file` (or the platform's roots) and presenting
/// `opts.client_cert` if any.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    if let Some(config) = &opts.config {
        return Ok(Arc::clone(config));
    }
    let roots = match &opts.ca_file {
        Some(path) => ca_file_roots(path)?,
        None => default_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider()?)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_root_certificates(roots);
    let config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = read_certs("client certificate", &client.cert_file)?;
            let key = read_key(&client.key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(rustls_error)?
        }
    };
    Ok(Arc::new(config))
}

fn rustls_error(error: rustls::Error) -> TlsError {
    TlsError::Rustls(Cause::from_box(Box::new(error)))
}

fn ca_file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("CA certificate", path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::UnusableCaCertificate {
                path: path.to_owned(),
                source: Cause::from_box(Box::new(e)),
            })?;
    }
    tracing::debug!(path = %path.display(), count = roots.len(), "loaded CA certificates");
    Ok(roots)
}

/// The crypto provider: `aws-lc-rs` when that feature is on (someone
/// asked for it, as `ring` is on by default), else `ring`, else the
/// process-wide default the application installed.
fn provider() -> Result<Arc<CryptoProvider>, TlsError> {
    #[cfg(feature = "aws-lc-rs")]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    return CryptoProvider::get_default()
        .cloned()
        .ok_or(TlsError::NoCryptoProvider);
}

/// The roots trusted when no CA file is given: the platform's
/// (`native-roots`) and Mozilla's (`webpki-roots`), whichever are compiled
/// in.
fn default_roots() -> Result<RootCertStore, TlsError> {
    #[cfg_attr(
        not(any(feature = "native-roots", feature = "webpki-roots")),
        expect(unused_mut, reason = "no root store compiled in")
    )]
    let mut roots = RootCertStore::empty();
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(feature = "native-roots")]
    {
        let problem = add_native_roots(&mut roots);
        if roots.is_empty() {
            return Err(TlsError::NoNativeRoots(problem));
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRootStore);
    }
    Ok(roots)
}

/// Adds the platform's root certificates to `roots`; returns the first
/// problem met while loading them, as a parenthesised detail (or "").
#[cfg(feature = "native-roots")]
fn add_native_roots(roots: &mut RootCertStore) -> String {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "while loading the platform's root certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "ignored unparsable platform root certificates");
    }
    tracing::debug!(count = added, "loaded the platform's root certificates");
    match found.errors.first() {
        Some(error) => format!(" ({error})"),
        None => String::new(),
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::ReadFile {
        what,
        path: path.to_owned(),
        source: e.into(),
    })
}

fn invalid_pem(what: &'static str, path: &Path, error: pem::Error) -> TlsError {
    TlsError::InvalidPem {
        what,
        path: path.to_owned(),
        source: Cause::from_box(Box::new(error)),
    }
}

/// Every certificate in a PEM file (other sections are skipped).
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid_pem(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("client key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        e => invalid_pem("client key", path, e),
    })
}

#[cfg(test)]
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
mod no_provider_tests {
    use super::*;

    #[test]
    fn without_a_provider_feature_or_default_the_error_says_what_to_enable() {
        let opts = TlsOptions {
            ca_file: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-server/certs/ca.pem"),
            ),
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert_eq!(err, TlsError::NoCryptoProvider);
        assert!(err.to_string().contains("`ring` or `aws-lc-rs`"), "{err}");
    }
}

// These build configurations, so they need a provider compiled in.
#[cfg(test)]
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
mod tests {
    use std::io::{Read, Write};

    use std::path::PathBuf;

    use super::*;
    use crate::options::ClientCert;
    use crate::tls::server_name;

    fn certs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-server/certs")
    }

    fn cert(name: &str) -> PathBuf {
        let path = certs_dir().join(name);
        assert!(
            path.exists(),
            "{} is missing: run test-server/prepare-certs.sh",
            path.display()
        );
        path
    }

    fn test_options() -> TlsOptions {
        TlsOptions {
            ca_file: Some(cert("ca.pem")),
            client_cert: Some(ClientCert {
                cert_file: cert("client.pem"),
                key_file: cert("client.key"),
            }),
            ..TlsOptions::default()
        }
    }

    /// A file in the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("carehare-tls-test-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn builds_a_config_from_ca_file_and_client_cert() {
        let config = client_config(&test_options()).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn builds_a_config_without_client_cert() {
        let opts = TlsOptions {
            ca_file: Some(cert("ca.pem")),
            ..TlsOptions::default()
        };
        let config = client_config(&opts).unwrap();
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_given_config_is_used_as_is() {
        let config = client_config(&test_options()).unwrap();
        let opts = TlsOptions {
            config: Some(Arc::clone(&config)),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        assert!(Arc::ptr_eq(&client_config(&opts).unwrap(), &config));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let opts = TlsOptions {
            ca_file: Some("/nonexistent/carehare/ca.pem".into()),
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert!(
            matches!(&err, TlsError::ReadFile { what: "CA certificate", path, .. }
                if path == Path::new("/nonexistent/carehare/ca.pem")),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("/nonexistent/carehare/ca.pem"),
            "{err}"
        );

        let mut opts = test_options();
        opts.client_cert.as_mut().unwrap().key_file = "/nonexistent/carehare/client.key".into();
        let err = client_config(&opts).unwrap_err();
        assert!(
            err.to_string()
                .contains("client key file /nonexistent/carehare/client.key"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_an_error() {
        let empty = TempFile::new("no-certs.pem", b"just some text\n");
        let opts = TlsOptions {
            ca_file: Some(empty.0.clone()),
            ..TlsOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert_eq!(
            err,
            TlsError::NoCertificates {
                what: "CA certificate",
                path: empty.0.clone()
            }
        );
        // A key is not a certificate.
        let opts = TlsOptions {
            ca_file: Some(cert("client.key")),
            ..TlsOptions::default()
        };
        assert!(matches!(
            client_config(&opts).unwrap_err(),
            TlsError::NoCertificates { .. }
        ));
    }

    #[test]
    fn a_key_file_without_a_key_is_an_error() {
        let mut opts = test_options();
        opts.client_cert.as_mut().unwrap().key_file = cert("ca.pem");
        assert_eq!(
            client_config(&opts).unwrap_err(),
            TlsError::NoPrivateKey {
                path: cert("ca.pem")
            }
        );
    }

    #[test]
    fn broken_pem_is_an_error() {
        let broken = TempFile::new(
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n", // no END line
        );
        let opts = TlsOptions {
            ca_file: Some(broken.0.clone()),
            ..TlsOptions::default()
        };
        assert!(matches!(
            client_config(&opts).unwrap_err(),
            TlsError::InvalidPem { .. }
        ));
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_an_error() {
        let mut opts = test_options();
        opts.client_cert.as_mut().unwrap().key_file = cert("server.key");
        assert!(matches!(
            client_config(&opts).unwrap_err(),
            TlsError::Rustls(_)
        ));
    }

    #[test]
    fn default_roots_load_or_fail_clearly() {
        // With the platform's roots only, it depends on the machine: either
        // works, or says what to do.
        let any_roots = cfg!(any(feature = "native-roots", feature = "webpki-roots"));
        let native_only = cfg!(feature = "native-roots") && !cfg!(feature = "webpki-roots");
        match client_config(&TlsOptions::default()) {
            Ok(_) => assert!(any_roots),
            Err(err @ TlsError::NoNativeRoots(_)) => {
                assert!(native_only);
                assert!(err.to_string().contains("ca_file"), "{err}");
            }
            Err(err @ TlsError::NoRootStore) => {
                assert!(!any_roots);
                assert!(err.to_string().contains("`webpki-roots`"), "{err}");
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn certificate_problems_are_read_from_rustls_errors() {
        use rustls::CertificateError as E;
        let in_io = |e: E| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(e),
            )
        };
        let cases = [
            (E::Expired, CertificateProblem::Expired),
            (E::NotValidYet, CertificateProblem::NotYetValid),
            (E::NotValidForName, CertificateProblem::NotValidForName),
            (E::UnknownIssuer, CertificateProblem::UnknownIssuer),
            (E::BadSignature, CertificateProblem::BadSignature),
            (E::Revoked, CertificateProblem::Revoked),
        ];
        for (rustls_error, problem) in cases {
            let (got, source) = certificate_problem(in_io(rustls_error.clone())).unwrap();
            assert_eq!(got, problem);
            assert_eq!(
                source.downcast_ref::<rustls::Error>(),
                Some(&rustls::Error::InvalidCertificate(rustls_error))
            );
        }
        let (other, _) = certificate_problem(in_io(E::BadEncoding)).unwrap();
        assert!(
            matches!(&other, CertificateProblem::Other(text) if text.contains("BadEncoding")),
            "{other:?}"
        );
        // Not a certificate problem: the error comes back as it was.
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let back = certificate_problem(refused).unwrap_err();
        assert_eq!(back.kind(), std::io::ErrorKind::ConnectionRefused);
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        let back = certificate_problem(alert).unwrap_err();
        assert!(back.get_ref().is_some_and(|e| e.is::<rustls::Error>()));
    }

    /// The built config completes a real handshake (in memory) with a
    /// server that uses the test PKI and demands a client certificate.
    #[test]
    fn handshakes_with_the_test_server_certificate() {
        let provider = provider().unwrap();
        let mut client_roots = RootCertStore::empty();
        for c in read_certs("CA", &cert("ca.pem")).unwrap() {
            client_roots.add(c).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                read_certs("server", &cert("server.pem")).unwrap(),
                read_key(&cert("server.key")).unwrap(),
            )
            .unwrap();

        let opts = test_options();
        for host in ["localhost", "127.0.0.1"] {
            let mut client = rustls::ClientConnection::new(
                client_config(&opts).unwrap(),
                server_name(&opts, host).unwrap(),
            )
            .unwrap();
            let mut server =
                rustls::ServerConnection::new(Arc::new(server_config.clone())).unwrap();
            handshake(&mut client, &mut server).unwrap();
            assert!(server.peer_certificates().is_some_and(|c| !c.is_empty()));

            client.writer().write_all(b"ping").unwrap();
            transfer(&mut client, &mut server);
            server.process_new_packets().unwrap();
            let mut got = [0u8; 4];
            server.reader().read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
        }

        // A name the certificate does not cover fails verification.
        let mut client = rustls::ClientConnection::new(
            client_config(&opts).unwrap(),
            ServerName::try_from("rabbit.example").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let err = handshake(&mut client, &mut server).unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    fn handshake(
        client: &mut rustls::ClientConnection,
        server: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
            transfer(client, server);
            server.process_new_packets()?;
            transfer(server, client);
            client.process_new_packets()?;
        }
        panic!("the handshake did not finish");
    }

    /// Moves all pending TLS records from `from` to `to`.
    fn transfer<A, B>(
        from: &mut rustls::ConnectionCommon<A>,
        to: &mut rustls::ConnectionCommon<B>,
    ) {
        let mut records = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut records).unwrap();
        }
        let mut rest = &records[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
        }
    }
}
