//! Secrets stay secret: a whole session with a password (connect, a
//! refused login, a lost link and its recovery, close) against the test
//! broker, whose every `Debug` and `Display` text is collected for
//! `tests/secrets.rs` to search, along with every log line; and the
//! EXTERNAL mechanism, whose bytes on the wire are searched for the
//! password the URL carried.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use carehare_client::{
    ConnectOptions, ConnectionError, Error, QueueOptions, RecoveryEvent, Runtime,
    connect_with_runtime,
};
use carehare_core::Auth;
use carehare_core::method::Method;
use carehare_core::testing::{self, ClientOutput};
use futures_util::StreamExt;

use crate::AMQP_ADDR;
use crate::fake_server::FakeServer;
use crate::proxy::Proxy;
use crate::recovery::{connect_with_queue, recovery_options};
use crate::scenarios::within;

/// The test broker's `carehare` user's password.
pub const PASSWORD: &str = "carehare-pw";
/// A wrong password, refused with 403.
pub const WRONG_PASSWORD: &str = "Wr0ng-s3cret-9f3";

/// Bound on each step.
const STEP: Duration = Duration::from_secs(30);

/// The test broker's URL with the `carehare` user's credentials, at `port`.
fn url(port: u16, password: &str) -> String {
    format!("amqp://carehare:{password}@127.0.0.1:{port}/carehare-test?name=secrets&heartbeat=5")
}

/// A session with a password, as a program lives it: a connection from a
/// URL with credentials; a login with a wrong password (403); a
/// recovering connection through a proxy whose link is reset, recovered;
/// everything closed. Returns every `Debug` and `Display` text of the
/// options, connections, errors and recovery events on the way, for the
/// caller to search for the passwords.
pub async fn a_session_with_a_password(rt: Arc<dyn Runtime>) -> Vec<String> {
    let mut seen = Vec::new();
    let direct_port = AMQP_ADDR.rsplit(':').next().unwrap().parse().unwrap();
    let options = ConnectOptions::from_url(&url(direct_port, PASSWORD)).unwrap();
    seen.push(format!("{options:?}"));
    let c = within(&rt, STEP, connect_with_runtime(rt.clone(), options))
        .await
        .unwrap();
    // Unroutable, and confirmed all the same.
    c.publish("hello", "", "").await.unwrap();
    seen.push(format!("{c:?}"));

    let wrong = ConnectOptions::from_url(&url(direct_port, WRONG_PASSWORD)).unwrap();
    seen.push(format!("{wrong:?}"));
    let refused = within(&rt, STEP, connect_with_runtime(rt.clone(), wrong)).await;
    match &refused {
        Err(e @ Error::ConnectionClosed(ConnectionError::AuthenticationFailed(r))) => {
            assert_eq!(r.code, 403, "{r}");
            seen.extend([format!("{e:?}"), e.to_string()]);
        }
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    let mut by_hand = ConnectOptions::from_url(&url(direct_port, PASSWORD)).unwrap();
    by_hand.amqp.auth = Auth::AmqPlain {
        username: "carehare".into(),
        password: WRONG_PASSWORD.into(),
    };
    seen.push(format!("{by_hand:?}"));

    let proxy = Proxy::start(AMQP_ADDR).unwrap();
    let through = ConnectOptions::from_url(&url(proxy.port(), PASSWORD)).unwrap();
    let rc = connect_with_queue(
        &rt,
        through,
        recovery_options(STEP),
        "",
        QueueOptions::exclusive(),
    )
    .await;
    let mut events = rc.events();
    proxy.reset();
    within(&rt, STEP, async {
        while let Some(event) = events.next().await {
            if let RecoveryEvent::Disconnected { cause } = &event {
                seen.push(cause.to_string());
            }
            seen.push(format!("{event:?}"));
            if matches!(event, RecoveryEvent::Recovered { .. }) {
                return;
            }
        }
        panic!("the events ended before Recovered");
    })
    .await;
    let after = within(&rt, STEP, rc.connection()).await.unwrap();
    after.publish("after recovery", "", "").await.unwrap();
    seen.push(format!("{after:?}"));
    within(&rt, STEP, rc.close()).await.unwrap();
    within(&rt, STEP, c.close()).await.unwrap();
    seen
}

/// Connects to a fake server with `auth_mechanism=external` in a URL that
/// also carries a password: no byte the client sends holds the password,
/// and `start-ok` names EXTERNAL with an empty response. The same URL
/// with PLAIN does send it, which shows the search would find it.
pub async fn external_never_sends_the_password(rt: Arc<dyn Runtime>) {
    const SECRET: &str = "ext-Pa55-never-sent";
    for (mechanism, sends_password) in [("external", false), ("plain", true)] {
        let server = FakeServer::start(|peer| {
            peer.handshake(testing::server_tune());
            peer.serve_until_close();
            peer.drain_until_eof();
            peer.client_bytes().to_vec()
        });
        let url = format!(
            "amqp://alice:{SECRET}@127.0.0.1:{}/?auth_mechanism={mechanism}",
            server.port()
        );
        let options = ConnectOptions::from_url(&url).unwrap();
        let c = within(&rt, STEP, connect_with_runtime(rt.clone(), options))
            .await
            .unwrap();
        within(&rt, STEP, c.close()).await.unwrap();
        let sent = server.join(&rt, STEP).await;
        let found = sent.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
        assert_eq!(found, sends_password, "{mechanism}: password on the wire");
        let mut from_client = ClientOutput::new();
        from_client.extend(&sent);
        from_client.expect_protocol_header();
        match from_client.next_method() {
            Some((0, Method::ConnectionStartOk(ok))) => {
                assert_eq!(ok.mechanism.as_str(), mechanism.to_uppercase());
                if !sends_password {
                    assert!(ok.response.0.is_empty(), "EXTERNAL's response is empty");
                }
            }
            other => panic!("expected start-ok first, got {other:?}"),
        }
    }
}
