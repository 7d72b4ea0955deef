//! The guide's TLS claims, checked against the live test broker
//! (`test-server/start.sh`): the EXTERNAL URL it shows logs in as the
//! client certificate's user, and each failure is the error the guide
//! names.

use std::path::PathBuf;

use carehare_tokio::{ConnectOptions, ConnectionError, Error, QueueOptions};

fn certs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-server/certs")
}

/// The guide's URL, with absolute paths (tests run in `examples/`).
fn external_url(host: &str) -> String {
    let dir = certs();
    let dir = dir.display();
    format!(
        "amqps://{host}/?cacertfile={dir}/ca.pem&certfile={dir}/client.pem\
         &keyfile={dir}/client.key&auth_mechanism=external"
    )
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

#[test]
fn the_guides_external_url_logs_in_with_the_client_certificate() {
    block_on(async {
        let connection = carehare_tokio::connect(&external_url("localhost"))
            .await
            .expect("TLS + EXTERNAL with the test certificates");
        let queue = connection
            .queue_declare("", QueueOptions::exclusive())
            .await
            .expect("declare");
        connection
            .publish("over TLS", "", &queue.queue)
            .await
            .expect("confirmed");
        connection.close().await.expect("clean close");
    });
}

#[test]
fn the_guides_connect_options_form_is_the_same_connection() {
    block_on(async {
        let dir = certs();
        let mut options = ConnectOptions::from_url("amqps://localhost/").expect("URL");
        options.tls = Some(carehare_tokio::TlsOptions {
            ca_file: Some(dir.join("ca.pem")),
            client_cert: Some(carehare_tokio::ClientCert {
                cert_file: dir.join("client.pem"),
                key_file: dir.join("client.key"),
            }),
            ..Default::default()
        });
        options.amqp.auth = carehare_tokio::carehare_core::Auth::External;
        let connection = carehare_tokio::connect_with(options)
            .await
            .expect("TLS + EXTERNAL");
        connection.close().await.expect("clean close");
    });
}

#[test]
fn a_name_the_certificate_does_not_carry_fails_verification() {
    block_on(async {
        let mut options = ConnectOptions::from_url(&external_url("localhost")).expect("URL");
        if let Some(tls) = &mut options.tls {
            tls.server_name = Some("rabbit.example.com".into());
        }
        match carehare_tokio::connect_with(options).await {
            Err(Error::TlsVerification { problem, .. }) => {
                assert_eq!(problem, carehare_tokio::CertificateProblem::NotValidForName)
            }
            other => panic!("expected a verification failure, got {other:?}"),
        }
    });
}

#[test]
fn external_without_a_client_certificate_is_refused_by_rabbitmq() {
    block_on(async {
        let url = format!(
            "amqps://localhost/?cacertfile={}/ca.pem&auth_mechanism=external",
            certs().display()
        );
        match carehare_tokio::connect(&url).await {
            Err(Error::ConnectionClosed(ConnectionError::AuthenticationFailed(reason))) => {
                assert_eq!(reason.code, 403, "{reason}")
            }
            other => panic!("expected 403 ACCESS_REFUSED, got {other:?}"),
        }
    });
}

#[test]
fn an_unreadable_certificate_file_is_a_tls_error() {
    block_on(async {
        let url = "amqps://localhost/?cacertfile=/no/such/ca.pem";
        match carehare_tokio::connect(url).await {
            Err(Error::Tls(e)) => assert!(e.to_string().contains("/no/such/ca.pem"), "{e}"),
            other => panic!("expected Error::Tls, got {other:?}"),
        }
    });
}
