//! The live-broker scenarios for the client API, written once over
//! [`carehare_client::Runtime`] and instantiated per runtime by
//! [`scenarios!`](macro@crate::scenarios).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carehare_client::{
    AMQPValue, Address, CertificateProblem, ConnectOptions, Connection, ConnectionError, Counters,
    Error, FieldTable, QueueOptions, Runtime, TlsOptions, connect_with_runtime,
};
use carehare_core::Auth;
use futures_util::future::{Either, join_all, select};

use crate::certs_dir;
use crate::proxy::{Mode, Proxy};

/// Options for the test broker's plain port.
pub fn options() -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".into(),
        port: 5672,
        ..Default::default()
    }
}

/// A queue name no other test uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Connects to the test broker's plain port.
pub async fn connect(rt: &Arc<dyn Runtime>) -> Connection {
    connect_with_runtime(rt.clone(), options())
        .await
        .expect("connect to the test broker")
}

/// Connects to the test broker's plain port with a metrics hook that
/// counts into the returned totals.
pub async fn connect_counted(rt: &Arc<dyn Runtime>) -> (Connection, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let mut opts = options();
    opts.metrics = Some(counters.clone());
    let c = connect_with_runtime(rt.clone(), opts)
        .await
        .expect("connect to the test broker");
    (c, counters)
}

/// Connects to the test broker's plain port under a connection name made
/// from `prefix`, which `rabbitmqctl` can find it by; returns the name too.
pub async fn connect_named(rt: &Arc<dyn Runtime>, prefix: &str) -> (Connection, String) {
    let mut opts = options();
    let name = unique(prefix);
    opts.amqp.connection_name = Some(name.clone());
    let c = connect_with_runtime(rt.clone(), opts)
        .await
        .expect("connect to the test broker");
    (c, name)
}

/// Sleeps on the scenario's runtime.
pub async fn sleep(rt: &Arc<dyn Runtime>, d: Duration) {
    rt.sleep_until(Instant::now() + d).await
}

/// Fails the test instead of hanging when `fut` takes longer than `limit`.
pub async fn within<T>(
    rt: &Arc<dyn Runtime>,
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let fut = std::pin::pin!(fut);
    match select(fut, rt.sleep_until(Instant::now() + limit)).await {
        Either::Left((v, _)) => v,
        Either::Right(_) => panic!("timed out after {limit:?}"),
    }
}

/// The ready-message count of `queue`, from a passive declare.
pub async fn ready(c: &Connection, queue: &str) -> u32 {
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    c.queue_declare(queue, passive).await.unwrap().message_count
}

/// A field table from pairs.
pub fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Expands to one `#[test]` per scenario. `$block_on` runs a future to
/// completion; `$runtime` makes an `Arc<dyn Runtime>` inside it.
#[macro_export]
macro_rules! scenarios {
    ($block_on:path, $runtime:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $block_on(async {
                    let rt: std::sync::Arc<dyn carehare_client::Runtime> = $runtime;
                    let limit = std::time::Duration::from_secs(90);
                    $crate::scenarios::within(&rt, limit, $crate::$module::$name(rt.clone())).await
                })
            }
        )*
    };
    ($block_on:path, $runtime:expr) => {
        $crate::scenarios!($block_on, $runtime;
            scenarios::wrong_password,
            scenarios::wrong_vhost,
            scenarios::tls_client_certificate_and_external_auth,
            scenarios::tls_with_a_wrong_ca_fails_verification,
            scenarios::tls_with_the_default_roots_fails_verification,
            scenarios::tls_with_a_wrong_server_name_fails_verification,
            scenarios::connect_timeout_covers_a_silent_server,
            scenarios::url_connect,
            scenarios::a_dead_address_is_skipped,
            scenarios::all_dead_addresses_are_each_listed,
            scenarios::a_wrong_password_is_not_tried_on_the_next_node,
            scenarios::a_host_name_is_tried_at_each_of_its_ips,
            scenarios::heartbeat_loss_ends_everything_with_the_heartbeat_error,
            scenarios::garbage_bytes_make_the_server_close_with_501,
            scenarios::exclusive_queue_from_a_second_connection_is_405,
            scenarios::concurrent_publishes_are_consumed_in_order,
            scenarios::nack_from_a_full_queue,
            scenarios::missing_exchange_fails_its_publishes_then_recovers,
            scenarios::closing_a_consumer_in_the_loop_redelivers,
            scenarios::next_delivery_ends_when_the_consumer_closes,
            scenarios::deleted_queue_ends_the_consumer_with_a_typed_error,
            scenarios::empty_and_large_bodies_arrive_intact,
            scenarios::publishing_after_close_fails,
            scenarios::server_closing_the_connection_fails_pending_futures,
            scenarios::declare_bind_unbind_on_short_lived_channels,
            scenarios::consumer_stream_yields_messages,
            scenarios::metrics_count_a_known_workload,
            scenarios::a_trace_context_travels_in_headers_through_the_broker,
        );
        $crate::publish_scenarios!($block_on, $runtime);
        $crate::consume_scenarios!($block_on, $runtime);
        $crate::fault_scenarios!($block_on, $runtime);
        $crate::recovery_scenarios!($block_on, $runtime);
    };
}

// ---- Connect -------------------------------------------------------------------

/// A wrong password is `ConnectionClosed(AuthenticationFailed)` with 403.
pub async fn wrong_password(rt: Arc<dyn Runtime>) {
    let mut opts = options();
    opts.amqp.auth = Auth::plain("carehare", "wrong-password");
    match connect_with_runtime(rt, opts).await {
        Err(Error::ConnectionClosed(ConnectionError::AuthenticationFailed(r))) => {
            assert_eq!(r.code, 403);
            assert!(r.to_string().starts_with("403 ACCESS_REFUSED"), "{r}");
        }
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
}

/// A dead address first (nothing listens on port 1), then the broker: the
/// connection is made to the second, and says so.
pub async fn a_dead_address_is_skipped(rt: Arc<dyn Runtime>) {
    let opts = ConnectOptions::from_urls([
        "amqp://guest:guest@127.0.0.1:1/",
        "amqp://guest:guest@127.0.0.1:5672/",
    ])
    .unwrap();
    let connection = connect_with_runtime(rt, opts).await.unwrap();
    assert_eq!(connection.address(), &Address::new("127.0.0.1", 5672));
    assert_eq!(connection.peer_addr(), "127.0.0.1:5672".parse().unwrap());
    let queue = unique("dead-first");
    connection
        .queue_declare(&queue, QueueOptions::exclusive())
        .await
        .unwrap();
    connection.publish("hi", "", &queue).await.unwrap();
    connection.close().await.unwrap();
}

/// Every address dead: one typed error listing each address and its reason.
pub async fn all_dead_addresses_are_each_listed(rt: Arc<dyn Runtime>) {
    let opts = ConnectOptions::from_urls(["amqp://127.0.0.1:1", "amqp://127.0.0.1:2"]).unwrap();
    match connect_with_runtime(rt, opts).await {
        Err(Error::AllAddressesFailed { attempts }) => {
            let tried: Vec<&Address> = attempts.iter().map(|(a, _)| a).collect();
            assert_eq!(
                tried,
                [&Address::new("127.0.0.1", 1), &Address::new("127.0.0.1", 2)]
            );
            for (address, error) in &attempts {
                match error {
                    Error::Connect { error, .. } => {
                        assert_eq!(
                            error.kind(),
                            std::io::ErrorKind::ConnectionRefused,
                            "{address}"
                        )
                    }
                    other => panic!("{address}: expected Connect, got {other:?}"),
                }
            }
        }
        other => panic!("expected AllAddressesFailed, got {other:?}"),
    }
}

/// Credentials are cluster-wide: a 403 ends the connect at once, and the
/// next address is never contacted.
pub async fn a_wrong_password_is_not_tried_on_the_next_node(rt: Arc<dyn Runtime>) {
    let next = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let next_port = next.local_addr().unwrap().port();
    let opts = ConnectOptions::from_urls([
        "amqp://carehare:wrong@127.0.0.1:5672/".to_string(),
        format!("amqp://carehare:wrong@127.0.0.1:{next_port}/"),
    ])
    .unwrap();
    match connect_with_runtime(rt, opts).await {
        Err(Error::ConnectionClosed(ConnectionError::AuthenticationFailed(r))) => {
            assert_eq!(r.code, 403)
        }
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    next.set_nonblocking(true).unwrap();
    assert_eq!(
        next.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the second address was contacted"
    );
}

/// `localhost` may resolve to `::1` and `127.0.0.1`; the broker listens on
/// the latter only. The connection reports the configured name and the IP
/// it reached.
pub async fn a_host_name_is_tried_at_each_of_its_ips(rt: Arc<dyn Runtime>) {
    let mut opts = options();
    opts.host = "localhost".into();
    let connection = connect_with_runtime(rt, opts).await.unwrap();
    assert_eq!(connection.address(), &Address::new("localhost", 5672));
    assert_eq!(connection.peer_addr(), "127.0.0.1:5672".parse().unwrap());
    connection.close().await.unwrap();
}

/// A vhost that doesn't exist is 530 NOT_ALLOWED.
pub async fn wrong_vhost(rt: Arc<dyn Runtime>) {
    let mut opts = options();
    opts.amqp.virtual_host = "no-such-vhost".into();
    let err = connect_with_runtime(rt, opts).await.unwrap_err();
    assert_eq!(err.reply_code(), Some(530), "{err}");
    assert!(err.to_string().contains("530 NOT_ALLOWED"), "{err}");
}

fn tls_options(client_cert: bool) -> ConnectOptions {
    let dir = certs_dir();
    let mut opts = options();
    opts.host = "localhost".into();
    opts.port = 5671;
    opts.tls = Some(TlsOptions {
        ca_file: Some(dir.join("ca.pem")),
        client_cert: client_cert.then(|| carehare_client::ClientCert {
            cert_file: dir.join("client.pem"),
            key_file: dir.join("client.key"),
        }),
        ..Default::default()
    });
    opts
}

/// TLS with the test CA and a client certificate; EXTERNAL auth logs in as
/// the certificate's CN.
pub async fn tls_client_certificate_and_external_auth(rt: Arc<dyn Runtime>) {
    let c = connect_with_runtime(rt.clone(), tls_options(false))
        .await
        .expect("TLS with PLAIN");
    c.queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut opts = tls_options(true);
    opts.amqp.auth = Auth::External;
    let c = connect_with_runtime(rt, opts)
        .await
        .expect("TLS with EXTERNAL");
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.publish("over TLS", "", &q.queue).await.unwrap();
    c.close().await.unwrap();
}

/// The certificate problem of a connect that must fail verification.
fn certificate_problem(result: Result<Connection, Error>) -> CertificateProblem {
    match result {
        Err(Error::TlsVerification {
            address,
            problem,
            source,
            ..
        }) => {
            // With the IP it resolved to, e.g. "localhost:5671 (127.0.0.1:5671)".
            assert!(address.starts_with("localhost:5671"), "{address}");
            // rustls's error is the source, for whoever depends on rustls.
            assert!(source.is::<rustls::Error>(), "{source:?}");
            problem
        }
        other => panic!("expected a TLS verification failure, got {other:?}"),
    }
}

/// A CA that did not sign the server's certificate: `UnknownIssuer`, which
/// is not transient, so a second address is not tried.
pub async fn tls_with_a_wrong_ca_fails_verification(rt: Arc<dyn Runtime>) {
    let mut opts = tls_options(false);
    if let Some(tls) = &mut opts.tls {
        // The client certificate is no CA, and did not sign the server's.
        tls.ca_file = Some(certs_dir().join("client.pem"));
    }
    let problem = certificate_problem(connect_with_runtime(rt.clone(), opts.clone()).await);
    assert_eq!(problem, CertificateProblem::UnknownIssuer);
    // The same with a second address: the loop stops at the first.
    opts.extra_addresses = vec![Address::new("localhost", 5671)];
    let result = connect_with_runtime(rt, opts).await;
    assert!(
        matches!(
            &result,
            Err(e @ Error::TlsVerification { .. }) if !e.is_transient()
        ),
        "{result:?}"
    );
}

/// The platform's roots don't know the test CA: `UnknownIssuer`. The same
/// from a bare `amqps://` URL: verification is on by default.
pub async fn tls_with_the_default_roots_fails_verification(rt: Arc<dyn Runtime>) {
    let mut opts = tls_options(false);
    opts.tls = Some(TlsOptions::default());
    let problem = certificate_problem(connect_with_runtime(rt.clone(), opts).await);
    assert_eq!(problem, CertificateProblem::UnknownIssuer);
    let from_url = ConnectOptions::from_url("amqps://localhost:5671/").unwrap();
    let problem = certificate_problem(connect_with_runtime(rt, from_url).await);
    assert_eq!(problem, CertificateProblem::UnknownIssuer);
}

/// A name the server's certificate does not carry: `NotValidForName`,
/// with the name that was checked.
pub async fn tls_with_a_wrong_server_name_fails_verification(rt: Arc<dyn Runtime>) {
    let mut opts = tls_options(false);
    if let Some(tls) = &mut opts.tls {
        tls.server_name = Some("rabbit.example.com".into());
    }
    let result = connect_with_runtime(rt, opts).await;
    if let Err(Error::TlsVerification { server_name, .. }) = &result {
        assert_eq!(server_name, "rabbit.example.com");
    }
    let shown = result.as_ref().err().map(ToString::to_string);
    let problem = certificate_problem(result);
    assert_eq!(problem, CertificateProblem::NotValidForName);
    let shown = shown.unwrap();
    assert!(shown.contains("rabbit.example.com"), "{shown}");
}

/// A server that accepts TCP but never speaks is a timeout, not a hang.
pub async fn connect_timeout_covers_a_silent_server(rt: Arc<dyn Runtime>) {
    let proxy = Proxy::start("127.0.0.1:5672").unwrap();
    proxy.set_mode(Mode::BlackHole);
    let mut opts = options();
    opts.port = proxy.port();
    opts.connection_timeout = Duration::from_millis(500);
    let started = Instant::now();
    match connect_with_runtime(rt, opts).await {
        Err(Error::ConnectTimeout { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(500))
        }
        other => panic!("expected ConnectTimeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `connect(url)` with user, password, vhost and query parameters.
pub async fn url_connect(rt: Arc<dyn Runtime>) {
    let opts = ConnectOptions::from_url("amqp://carehare:carehare-pw@127.0.0.1:5672/carehare-test?heartbeat=5&channel_max=10&frame_max=8192").unwrap();
    let c = connect_with_runtime(rt, opts).await.unwrap();
    let t = c.tuning();
    assert_eq!((t.heartbeat, t.channel_max, t.frame_max), (5, 10, 8192));
    c.queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.close().await.unwrap();
}

// ---- Failures of a live connection -------------------------------------------

/// With a black-holed link, the heartbeat monitor ends the connection
/// within 2×heartbeat and every pending future fails.
pub async fn heartbeat_loss_ends_everything_with_the_heartbeat_error(rt: Arc<dyn Runtime>) {
    let proxy = Proxy::start("127.0.0.1:5672").unwrap();
    let mut opts = options();
    opts.port = proxy.port();
    opts.amqp.heartbeat = 1;
    let c = connect_with_runtime(rt.clone(), opts).await.unwrap();
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    let consumer = c.acking_consumer(&q.queue, 10).await.unwrap();
    proxy.set_mode(Mode::BlackHole);
    let lost_at = Instant::now();
    let publish = c.publish("into the void", "", &q.queue);
    let (published, delivered, outcome) =
        futures_util::join!(publish, consumer.next_delivery(), c.closed());
    let elapsed = lost_at.elapsed();
    assert!(
        matches!(outcome, ConnectionError::ClosedByHeartbeatMonitor(_)),
        "{outcome:?}"
    );
    assert!(elapsed <= Duration::from_millis(2_500), "took {elapsed:?}");
    assert!(
        matches!(
            published,
            Err(Error::ConnectionClosed(
                ConnectionError::ClosedByHeartbeatMonitor(_)
            ))
        ),
        "{published:?}"
    );
    assert!(
        matches!(delivered, Err(Error::ConnectionClosed(_))),
        "{delivered:?}"
    );
    assert!(matches!(
        c.queue_declare("", QueueOptions::exclusive()).await,
        Err(Error::ConnectionClosed(_))
    ));
}

/// Garbage on the wire makes RabbitMQ close the connection with 501.
pub async fn garbage_bytes_make_the_server_close_with_501(rt: Arc<dyn Runtime>) {
    let proxy = Proxy::start("127.0.0.1:5672").unwrap();
    let mut opts = options();
    opts.port = proxy.port();
    let c = connect_with_runtime(rt, opts).await.unwrap();
    proxy.inject_to_server(b"\x01\x00\x00\xff\xff\xff\xffgarbage");
    match c.closed().await {
        ConnectionError::ClosedByServer(r) => {
            assert_eq!(r.code, 501, "{r}");
            assert!(r.text.starts_with("FRAME_ERROR"), "{r}");
        }
        other => panic!("expected a 501 close, got {other:?}"),
    }
}

/// Another connection's exclusive queue is 405 RESOURCE_LOCKED, and the
/// connection stays usable.
pub async fn exclusive_queue_from_a_second_connection_is_405(rt: Arc<dyn Runtime>) {
    let a = connect(&rt).await;
    let b = connect(&rt).await;
    let name = unique("exclusive");
    a.queue_declare(&name, QueueOptions::exclusive())
        .await
        .unwrap();
    let err = b
        .queue_declare(&name, QueueOptions::exclusive())
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(405), "{err}");
    assert!(
        err.to_string()
            .starts_with("RabbitMQ closed the channel: 405 RESOURCE_LOCKED"),
        "{err}"
    );
    b.queue_declare("", QueueOptions::exclusive())
        .await
        .expect("b is still usable");
}

// ---- Publishing ------------------------------------------------------------------

/// Many publishes in flight at once are all confirmed, and consumed in order.
pub async fn concurrent_publishes_are_consumed_in_order(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    let confirms: Vec<_> = (0..2000u32)
        .map(|i| c.publish(i.to_string(), "", &q.queue))
        .collect();
    for r in join_all(confirms).await {
        r.unwrap();
    }
    let consumer = c.acking_consumer(&q.queue, 100).await.unwrap();
    for i in 0..2000u32 {
        let (body, tag) = consumer.next_delivery().await.unwrap();
        assert_eq!(body, Bytes::from(i.to_string()));
        consumer.ack(tag);
    }
}

/// A full queue with `reject-publish` nacks: `ServerSentNack`.
pub async fn nack_from_a_full_queue(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let opts = QueueOptions {
        exclusive: true,
        arguments: args(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            (
                "x-overflow",
                AMQPValue::LongString(b"reject-publish".to_vec().into()),
            ),
        ]),
        ..Default::default()
    };
    let q = c.queue_declare("", opts).await.unwrap();
    c.publish("fits", "", &q.queue).await.unwrap();
    assert!(matches!(
        c.publish("full", "", &q.queue).await,
        Err(Error::ServerSentNack)
    ));
    // A nack fails only that message.
    let c2 = c.publish("still full", "", &q.queue);
    assert!(matches!(c2.await, Err(Error::ServerSentNack)));
}

/// A publish to a missing exchange fails with 404; once it exists, the next
/// publish works on a fresh channel.
pub async fn missing_exchange_fails_its_publishes_then_recovers(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let exchange = unique("missing-ex");
    let (a, b) = futures_util::join!(
        c.publish("a", &exchange, "rk"),
        c.publish("b", &exchange, "rk")
    );
    for r in [a, b] {
        match r {
            Err(Error::ChannelClosedByServer(r)) => {
                assert_eq!(r.code, 404);
                assert!(r.text.starts_with("NOT_FOUND"), "{}", r.text);
            }
            other => panic!("expected 404, got {other:?}"),
        }
    }
    c.exchange_declare(
        &exchange,
        "fanout",
        carehare_client::ExchangeOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.queue_bind(&q.queue, &exchange, "", FieldTable::default())
        .await
        .unwrap();
    c.publish("c", &exchange, "rk")
        .await
        .expect("a fresh channel");
    let consumer = c.acking_consumer(&q.queue, 1).await.unwrap();
    assert_eq!(
        consumer.next_delivery().await.unwrap().0,
        Bytes::from_static(b"c")
    );
}

// ---- Consuming --------------------------------------------------------------------

/// Closing a consumer inside the loop, without acking, leaves the message
/// for a new consumer.
pub async fn closing_a_consumer_in_the_loop_redelivers(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.publish("only once?", "", &q.queue).await.unwrap();
    let consumer = c.acking_consumer(&q.queue, 1).await.unwrap();
    let (body, _tag) = consumer.next_delivery().await.unwrap();
    assert_eq!(body, Bytes::from_static(b"only once?"));
    consumer.close().await;
    consumer.close().await; // idempotent
    let again = c.acking_consumer(&q.queue, 1).await.unwrap();
    let m = again.next().await.unwrap();
    assert_eq!(m.body, Bytes::from_static(b"only once?"));
    assert!(m.redelivered);
    again.ack(m.delivery_tag);
}

/// A pending `next_delivery` ends with `ConsumerClosed` when the consumer
/// is closed from elsewhere.
pub async fn next_delivery_ends_when_the_consumer_closes(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    let consumer = c.acking_consumer(&q.queue, 1).await.unwrap();
    let closer = async {
        sleep(&rt, Duration::from_millis(200)).await;
        consumer.close().await;
    };
    let (next, ()) = futures_util::join!(consumer.next_delivery(), closer);
    assert!(matches!(next, Err(Error::ConsumerClosed)), "{next:?}");
    assert!(matches!(
        consumer.next_delivery().await,
        Err(Error::ConsumerClosed)
    ));
}

/// A queue deleted under a live consumer ends it with a typed error
/// instead of stalling forever.
pub async fn deleted_queue_ends_the_consumer_with_a_typed_error(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let name = unique("deleted");
    c.queue_declare(
        &name,
        QueueOptions {
            auto_delete: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let consumer = c.acking_consumer(&name, 1).await.unwrap();
    let deleter = async {
        sleep(&rt, Duration::from_millis(200)).await;
        crate::rabbitmqctl(&format!("delete_queue '{name}'"));
    };
    let (next, ()) = futures_util::join!(consumer.next_delivery(), deleter);
    assert!(
        matches!(next, Err(Error::ConsumerCancelledByServer)),
        "{next:?}"
    );
    c.queue_declare("", QueueOptions::exclusive())
        .await
        .expect("connection still usable");
}

/// An empty body and a 3 MiB body (many frames) arrive intact.
pub async fn empty_and_large_bodies_arrive_intact(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    let big: Bytes = (0..3 * 1024 * 1024u32)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let (a, b) = futures_util::join!(
        c.publish(Bytes::new(), "", &q.queue),
        c.publish(big.clone(), "", &q.queue)
    );
    a.unwrap();
    b.unwrap();
    let consumer = c.acking_consumer(&q.queue, 2).await.unwrap();
    let (first, t1) = consumer.next_delivery().await.unwrap();
    assert!(first.is_empty());
    let (second, t2) = consumer.next_delivery().await.unwrap();
    assert_eq!(second.len(), big.len());
    assert!(second == big);
    consumer.ack(t1);
    consumer.ack(t2);
}

/// After `close()`, publishing fails with `ConnectionClosed(ClosedByClient)`.
pub async fn publishing_after_close_fails(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    c.close().await.unwrap();
    c.close().await.unwrap(); // idempotent
    match c.publish("late", "", "q").await {
        Err(Error::ConnectionClosed(ConnectionError::ClosedByClient)) => {}
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    assert_eq!(c.closed().await, ConnectionError::ClosedByClient);
}

/// `rabbitmqctl close_connection`: `closed()` says 320 CONNECTION_FORCED
/// and pending futures fail with `ConnectionClosed`.
pub async fn server_closing_the_connection_fails_pending_futures(rt: Arc<dyn Runtime>) {
    let (c, name) = connect_named(&rt, "force-closed").await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    let consumer = c.acking_consumer(&q.queue, 1).await.unwrap();
    let closer = async {
        sleep(&rt, Duration::from_millis(200)).await;
        crate::close_connection_named(&name, "carehare test closes you");
    };
    let (next, (), outcome) = futures_util::join!(consumer.next_delivery(), closer, c.closed());
    match &outcome {
        ConnectionError::ClosedByServer(r) => {
            assert_eq!(r.code, 320);
            assert!(r.text.contains("carehare test closes you"), "{}", r.text);
        }
        other => panic!("expected 320, got {other:?}"),
    }
    assert!(
        matches!(
            next,
            Err(Error::ConnectionClosed(ConnectionError::ClosedByServer(_)))
        ),
        "{next:?}"
    );
    assert!(c.close().await.is_ok());
}

/// Declares, binds and unbinds each run on their own channel; a failure is
/// that call's error only.
pub async fn declare_bind_unbind_on_short_lived_channels(rt: Arc<dyn Runtime>) {
    let c = connect(&rt).await;
    let ex = unique("topic");
    c.exchange_declare(
        &ex,
        "topic",
        carehare_client::ExchangeOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.queue_bind(&q.queue, &ex, "a.*", FieldTable::default())
        .await
        .unwrap();
    c.publish("routed", &ex, "a.b").await.unwrap();
    let err = c
        .queue_bind(&q.queue, &unique("nope"), "", FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(404));
    let err = c
        .exchange_declare(&ex, "fanout", Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.reply_code(), Some(406), "redeclare with another type");
    // The exchange auto-deletes with its last binding: unbind last.
    c.queue_unbind(&q.queue, &ex, "a.*", FieldTable::default())
        .await
        .unwrap();
    assert_eq!(ready(&c, &q.queue).await, 1);
    let too_long = "x".repeat(256);
    assert!(matches!(
        c.queue_declare(&too_long, QueueOptions::default()).await,
        Err(Error::Usage(_))
    ));
}

/// The consumer is a `Stream` of messages.
pub async fn consumer_stream_yields_messages(rt: Arc<dyn Runtime>) {
    use futures_util::StreamExt;
    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    for i in 0..3 {
        c.publish(format!("m{i}"), "", &q.queue).await.unwrap();
    }
    let mut consumer = c.acking_consumer(&q.queue, 3).await.unwrap();
    for i in 0..3 {
        let m = consumer.next().await.unwrap();
        assert_eq!(m.body, Bytes::from(format!("m{i}")));
        consumer.ack(m.delivery_tag);
    }
    let stream_next = async { StreamExt::next(&mut consumer).await };
    let published = c.publish("via stream", "", &q.queue);
    let (item, ok) = futures_util::join!(stream_next, published);
    ok.unwrap();
    assert_eq!(
        item.unwrap().unwrap().body,
        Bytes::from_static(b"via stream")
    );
}

/// The metrics hook counts a known workload exactly, in messages (an
/// `ack_multiple` settling 30 deliveries counts 30).
pub async fn metrics_count_a_known_workload(rt: Arc<dyn Runtime>) {
    use carehare_client::Counter;
    let (c, counters) = connect_counted(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    let confirms: Vec<_> = (0..100u32)
        .map(|i| c.publish(i.to_string(), "", &q.queue))
        .collect();
    for r in join_all(confirms).await {
        r.unwrap();
    }
    // Unroutable and mandatory: returned, and still confirmed.
    let returned = c
        .publish_mandatory("lost", "", &unique("no-such-queue"), &Default::default())
        .await;
    assert!(matches!(returned, Err(Error::Returned(_))), "{returned:?}");
    assert_eq!(counters.get(Counter::Published), 101);
    assert_eq!(counters.get(Counter::Confirmed), 101);
    assert_eq!(counters.get(Counter::Returned), 1);
    assert_eq!(counters.get(Counter::PublishNacked), 0);

    // 100 deliveries: 40 acked one by one, 30 by one ack_multiple, 10
    // nacked (two by a nack_multiple), 10 rejected, 10 left to a basic.get
    // after the consumer closes (requeued, redelivered: counted again).
    let consumer = c.acking_consumer(&q.queue, 100).await.unwrap();
    let mut tags = Vec::new();
    for _ in 0..90 {
        tags.push(consumer.next_delivery().await.unwrap().1);
    }
    for &t in &tags[..40] {
        consumer.ack(t);
    }
    consumer.ack_multiple(tags[69]);
    for &t in &tags[70..78] {
        consumer.nack(t, false);
    }
    consumer.nack_multiple(tags[79], false);
    for &t in &tags[80..90] {
        consumer.reject(t, false);
    }
    // The ten not read are buffered or in flight: closing requeues them.
    consumer.close().await;
    let mut got = 0;
    while let Some(m) = c.get(&q.queue).await.unwrap() {
        m.ack();
        got += 1;
    }
    assert_eq!(got, 10);
    let delivered = counters.get(Counter::Delivered);
    assert!(
        (100..=110).contains(&delivered),
        "90 read, up to 10 more buffered, then 10 got: {delivered}"
    );
    assert_eq!(counters.get(Counter::Acked), 40 + 30 + 10);
    assert_eq!(counters.get(Counter::Nacked), 10);
    assert_eq!(counters.get(Counter::Rejected), 10);
    assert!(counters.get(Counter::BytesReceived) > 100 * 8);
    assert!(counters.get(Counter::BytesSent) > 100 * 8);
    assert_eq!(counters.get(Counter::Reconnects), 0);
    assert_eq!(counters.get(Counter::BlockedMicros), 0);
    c.close().await.unwrap();
}

/// A W3C trace context injected into a message's headers comes out of
/// RabbitMQ intact, and the consumer's extracted context is its remote
/// parent (the `otel` feature).
pub async fn a_trace_context_travels_in_headers_through_the_broker(rt: Arc<dyn Runtime>) {
    use carehare_client::otel::{extract_context_with, inject_context_with};
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    let propagator = TraceContextPropagator::new();
    let sent = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "value")]).unwrap(),
    );
    let cx = Context::new().with_remote_span_context(sent.clone());
    let mut properties = carehare_client::BasicProperties::builder()
        .header("app", "kept")
        .build()
        .unwrap();
    inject_context_with(&propagator, &cx, &mut properties);

    let c = connect(&rt).await;
    let q = c
        .queue_declare("", QueueOptions::exclusive())
        .await
        .unwrap();
    c.publish_with("traced", "", &q.queue, &properties)
        .await
        .unwrap();
    let consumer = c.acking_consumer(&q.queue, 10).await.unwrap();
    let message = consumer.next().await.unwrap();
    let headers = message.properties.headers.clone().unwrap();
    let text = |key: &str| match headers.inner().get(key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(
        text("traceparent"),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(text("tracestate"), "vendor=value");
    assert_eq!(text("app"), "kept");

    let got = extract_context_with(&propagator, &message.properties);
    let got = got.span().span_context().clone();
    assert_eq!(got.trace_id(), sent.trace_id());
    assert_eq!(got.span_id(), sent.span_id());
    assert_eq!(got.trace_flags(), TraceFlags::SAMPLED);
    assert!(got.is_remote());
    assert_eq!(got.trace_state().get("vendor"), Some("value"));
    consumer.ack(message.delivery_tag);

    // A message without headers carries no context.
    let empty = extract_context_with(&propagator, &Default::default());
    assert!(!empty.span().span_context().is_valid());
    c.close().await.unwrap();
}
