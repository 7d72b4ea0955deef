//! Connecting: for each address in turn, resolve, then TCP, TLS and the AMQP
//! handshake, each attempt under its own limit and all under one timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use tracing::{Instrument, debug};

use crate::address::{Address, attempt_limit};
use crate::driver::Driver;
use crate::error::{ConnectionError, Error};
use crate::handles::connection::Connection;
use crate::metrics::Meter;
use crate::options::ConnectOptions;
use crate::runtime::{BoxFuture, Runtime, Stream};
use crate::state::Shared;
use crate::tls;

/// Numbers the connections of this process, for their log spans.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Connects with the given runtime. Adapter crates wrap this as their
/// `connect`; it is public so any runtime can be plugged in.
///
/// With several addresses (see [`ConnectOptions`]) it tries each in turn
/// until one connects. When all fail, the error is
/// [`Error::AllAddressesFailed`], listing every attempt; with a single
/// address it is that attempt's own error. A refusal that every node of a
/// cluster would repeat stops at once, with its own error: bad credentials
/// (403), a vhost the user may not open (530), a SASL mechanism the server
/// does not offer, bad TLS settings, a server certificate that does not
/// verify ([`Error::TlsVerification`]).
///
/// ```no_run
/// # async fn f(runtime: std::sync::Arc<dyn carehare_client::Runtime>) -> Result<(), carehare_client::Error> {
/// let options = carehare_client::ConnectOptions::from_url("amqp://guest:guest@localhost/")?;
/// let connection = carehare_client::connect_with_runtime(runtime, options).await?;
/// connection.close().await?;
/// # Ok(()) }
/// ```
pub fn connect_with_runtime(runtime: Arc<dyn Runtime>, options: ConnectOptions) -> Connecting {
    connect_with_runtime_of(move || runtime, options)
}

/// [`connect_with_runtime`], with the runtime made when the future is
/// first polled. An adapter's `connect_with` may be called outside its
/// runtime (as the argument of a `block_on`, say), and some runtimes
/// (tokio's) can only be found from inside one.
#[doc(hidden)]
pub fn connect_with_runtime_of(
    runtime: impl FnOnce() -> Arc<dyn Runtime> + Send + 'static,
    options: ConnectOptions,
) -> Connecting {
    Connecting(Box::pin(async move {
        connect_observed(runtime(), options, &|_| {}).await
    }))
}

/// A connection being opened: the future [`connect_with_runtime`] (and
/// each adapter's `connect_with`) returns; it resolves to the
/// [`Connection`] or to the error that ended every attempt.
///
/// Its state is on the heap, and it is two words. Connecting holds a few
/// KiB (the options, each attempt's TCP, TLS and handshake state), and
/// unboxed that would be part of the future of every task that awaits a
/// connection, for that task's whole life: an async block is as large as
/// the largest future it awaits.
#[must_use = "a connection is opened only while this future is polled"]
pub struct Connecting(BoxFuture<'static, Result<Connection, Error>>);

impl Future for Connecting {
    type Output = Result<Connection, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Connecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connecting").finish_non_exhaustive()
    }
}

/// [`connect_with_runtime`], calling `trying` with each address before it
/// is tried (recovery reports it as an event).
pub(crate) async fn connect_observed(
    runtime: Arc<dyn Runtime>,
    options: ConnectOptions,
    trying: &(dyn Fn(&Address) + Sync),
) -> Result<Connection, Error> {
    let deadline = runtime.now() + options.connection_timeout;
    // TLS settings are checked before any network traffic.
    let tls_settings = match &options.tls {
        Some(t) => Some((tls::Connector::new(t)?, t)),
        None => None,
    };
    let mut addresses = options.addresses();
    options.address_order.arrange(&mut addresses);

    let mut attempts: Vec<(Address, Error)> = Vec::new();
    let count = addresses.len();
    for (i, address) in addresses.into_iter().enumerate() {
        let last_address = i + 1 == count;
        let remaining = deadline.saturating_duration_since(runtime.now());
        if remaining.is_zero() {
            let error = Error::ConnectTimeout {
                address: address.to_string(),
                timeout: options.connection_timeout,
            };
            attempts.push((address, error));
            continue;
        }
        trying(&address);
        // The certificate is checked against this address's host name.
        let tls = match &tls_settings {
            Some((connector, t)) => Some((connector.clone(), tls::server_name(t, &address.host)?)),
            None => None,
        };
        let mut targets = match resolve(
            &runtime,
            &address,
            attempt_limit(options.address_timeout, remaining, last_address),
        )
        .await
        {
            Ok(targets) => targets,
            Err(error) => {
                debug!(%address, %error, "could not resolve");
                attempts.push((address, error));
                continue;
            }
        };
        options.address_order.arrange(&mut targets);
        let n = targets.len();
        for (j, target) in targets.into_iter().enumerate() {
            let label = if address.ip_literal().is_some() {
                address.to_string()
            } else {
                format!("{address} ({target})")
            };
            let now = runtime.now();
            let remaining = deadline.saturating_duration_since(now);
            let limit = attempt_limit(
                options.address_timeout,
                remaining,
                last_address && j + 1 == n,
            );
            // One instant for both ends of this attempt: the handshake's
            // own timer and the sleep below. Either may fire first; both
            // give this error.
            let attempt_deadline = now + limit;
            let timed_out = Error::ConnectTimeout {
                address: label.clone(),
                timeout: if count == 1 && n == 1 {
                    options.connection_timeout
                } else {
                    limit
                },
            };
            let attempt = Box::pin(connect_one(
                runtime.clone(),
                &options,
                tls.clone(),
                address.clone(),
                target,
                label,
                attempt_deadline,
            ));
            let result = match select(attempt, runtime.sleep_until(attempt_deadline)).await {
                // The handshake's timeout is this attempt's deadline (see
                // `connect_one`): the same run-out as the sleep's.
                Either::Left((
                    Err(Error::ConnectionClosed(ConnectionError::HandshakeTimeout(_))),
                    _,
                )) => Err(timed_out),
                Either::Left((result, _)) => result,
                Either::Right(((), _)) => Err(timed_out),
            };
            match result {
                Ok(connection) => return Ok(connection),
                // A refusal every node of a cluster would repeat: trying
                // the next node only delays the error (and repeats a bad
                // password to every node).
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => {
                    debug!(%address, %error, "connect attempt failed");
                    attempts.push((address.clone(), error));
                }
            }
        }
    }
    Err(all_failed(attempts))
}

/// Resolves a host name, within `limit`; an IP address needs no resolver.
async fn resolve(
    runtime: &Arc<dyn Runtime>,
    address: &Address,
    limit: Duration,
) -> Result<Vec<SocketAddr>, Error> {
    if let Some(ip) = address.ip_literal() {
        return Ok(vec![ip]);
    }
    let lookup = runtime.resolve(&address.host, address.port);
    let result = match select(lookup, runtime.sleep_until(runtime.now() + limit)).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => {
            return Err(Error::ConnectTimeout {
                address: address.to_string(),
                timeout: limit,
            });
        }
    };
    match result {
        Ok(targets) if !targets.is_empty() => Ok(targets),
        Ok(_) => Err(Error::Connect {
            address: address.to_string(),
            error: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host name resolved to no address",
            )
            .into(),
        }),
        Err(e) => Err(Error::Connect {
            address: address.to_string(),
            error: e.into(),
        }),
    }
}

/// One attempt keeps its own error; several are listed.
fn all_failed(mut attempts: Vec<(Address, Error)>) -> Error {
    if attempts.len() == 1
        && let Some((_, error)) = attempts.pop()
    {
        return error;
    }
    Error::AllAddressesFailed { attempts }
}

async fn connect_one(
    runtime: Arc<dyn Runtime>,
    options: &ConnectOptions,
    tls: Option<(tls::Connector, rustls_pki_types::ServerName<'static>)>,
    address: Address,
    target: SocketAddr,
    label: String,
    deadline: Instant,
) -> Result<Connection, Error> {
    let connect_error = |e: std::io::Error| Error::Connect {
        address: label.clone(),
        error: e.into(),
    };
    let (tcp, low_water) = runtime.connect_tcp(target).await.map_err(connect_error)?;
    let io: Box<dyn Stream> = match tls {
        None => tcp,
        Some((connector, name)) => {
            let server_name = name.to_str().into_owned();
            connector.handshake(name, tcp).await.map_err(|e| match e {
                tls::HandshakeError::Certificate { problem, source } => Error::TlsVerification {
                    address: label.clone(),
                    server_name,
                    problem,
                    source,
                },
                tls::HandshakeError::Io(e) => connect_error(e),
            })?
        }
    };
    let mut amqp = options.amqp.clone();
    // The handshake gets what is left of this attempt's time, so that its
    // timeout is this attempt's deadline, never an earlier one: the caller
    // reports it as `ConnectTimeout`.
    amqp.handshake_timeout = deadline.saturating_duration_since(runtime.now());
    // One span per connection: everything its driver (and the core under
    // it) logs carries the connection's id, name and address.
    let span = tracing::info_span!(
        "amqp_connection",
        id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
        name = amqp.connection_name.as_deref().unwrap_or(""),
        address = %label,
    );
    let (shared, connected) = Shared::new(
        carehare_core::Connection::new(amqp, runtime.now()),
        Meter::new(options.metrics.clone()),
        span.clone(),
    );
    let driver = Driver::new(io, shared.clone(), runtime.clone()).with_low_water(low_water);
    runtime.spawn(Box::pin(driver.instrument(span)));
    match connected.await {
        Ok(Ok(tuning)) => Ok(Connection::new(shared, tuning, runtime, address, target)),
        Ok(Err(e)) => Err(Error::ConnectionClosed(e)),
        // The state answers the handshake's waiter when the connection
        // ends, the driver's end included: this is a bug of ours.
        Err(_) => Err(shared.lock().lost()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io;
    use std::sync::Mutex;

    use super::*;
    use crate::address::AddressOrder;
    use crate::error::ConnectionError;
    use crate::sim::{Connector, SimRuntime};
    use crate::uri::UrlError;

    /// What the fake network does for one socket address.
    #[derive(Clone, Copy)]
    enum Behaviour {
        Refuse,
        Hang,
        /// Accept, then speak no AMQP and close: the handshake ends with
        /// UnexpectedEof.
        CloseAtOnce,
    }

    /// A fake network on simulated time: a resolver table and a behaviour
    /// per socket address. It records every connect, in order.
    struct FakeNet {
        names: Vec<(String, Vec<SocketAddr>)>,
        behaviour: HashMap<SocketAddr, Behaviour>,
        connects: Arc<Mutex<Vec<SocketAddr>>>,
        /// Simulated time the last `run` took.
        took: Mutex<Duration>,
    }

    impl FakeNet {
        fn new() -> Self {
            Self {
                names: Vec::new(),
                behaviour: HashMap::new(),
                connects: Arc::default(),
                took: Mutex::default(),
            }
        }
        fn with(mut self, addr: &str, b: Behaviour) -> Self {
            self.behaviour.insert(addr.parse().unwrap(), b);
            self
        }
        fn name(mut self, host: &str, addrs: &[&str]) -> Self {
            let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
            self.names.push((host.into(), addrs));
            self
        }
        fn connects(&self) -> Vec<String> {
            self.connects
                .lock()
                .unwrap()
                .iter()
                .map(|a| a.to_string())
                .collect()
        }
        fn took(&self) -> Duration {
            *self.took.lock().unwrap()
        }
    }

    fn run(net: &Arc<FakeNet>, options: ConnectOptions) -> Error {
        let connects = net.connects.clone();
        let behaviour = net.behaviour.clone();
        let connector: Connector = Box::new(move |address| {
            connects.lock().unwrap().push(address);
            match behaviour
                .get(&address)
                .copied()
                .unwrap_or(Behaviour::Refuse)
            {
                Behaviour::Refuse => Err(io::ErrorKind::ConnectionRefused.into()),
                // The simulated runtime never completes this connect.
                Behaviour::Hang => Err(io::ErrorKind::WouldBlock.into()),
                Behaviour::CloseAtOnce => {
                    Ok(Box::new(futures_util::io::Cursor::new(Vec::new())) as Box<dyn Stream>)
                }
            }
        });
        let sim = Arc::new(SimRuntime::with_names(connector, net.names.clone()));
        let runtime: Arc<dyn Runtime> = sim.clone();
        let result = sim.block_on(connect_with_runtime(runtime, options));
        *net.took.lock().unwrap() = sim.elapsed();
        match result {
            Ok(_) => panic!("connected to a fake network"),
            Err(e) => e,
        }
    }

    fn options(urls: &[&str]) -> ConnectOptions {
        let mut options = ConnectOptions::from_urls(urls).unwrap();
        options.connection_timeout = Duration::from_secs(5);
        options.address_timeout = Duration::from_millis(200);
        options
    }

    fn attempts(e: Error) -> Vec<(String, Error)> {
        match e {
            Error::AllAddressesFailed { attempts } => attempts
                .into_iter()
                .map(|(a, e)| (a.to_string(), e))
                .collect(),
            other => panic!("not AllAddressesFailed: {other:?}"),
        }
    }

    #[test]
    fn every_address_is_tried_in_order_and_each_failure_is_listed() {
        let net = Arc::new(
            FakeNet::new()
                .with("10.0.0.2:5672", Behaviour::Hang)
                .with("10.0.0.3:5672", Behaviour::CloseAtOnce),
        );
        let e = run(
            &net,
            options(&["amqp://10.0.0.1", "amqp://10.0.0.2", "amqp://10.0.0.3"]),
        );
        assert_eq!(
            net.connects(),
            ["10.0.0.1:5672", "10.0.0.2:5672", "10.0.0.3:5672"]
        );
        let shown = e.to_string();
        let attempts = attempts(e);
        assert_eq!(attempts.len(), 3, "{shown}");
        assert!(matches!(&attempts[0], (a, Error::Connect { error, .. })
            if a == "10.0.0.1:5672" && error.kind() == io::ErrorKind::ConnectionRefused));
        // The hanging node costs address_timeout, not connection_timeout.
        assert!(
            matches!(&attempts[1], (a, Error::ConnectTimeout { timeout, .. })
            if a == "10.0.0.2:5672" && *timeout == Duration::from_millis(200))
        );
        assert!(matches!(
            &attempts[2],
            (a, Error::ConnectionClosed(ConnectionError::UnexpectedEof)) if a == "10.0.0.3:5672"
        ));
        assert!(
            shown.starts_with(
                "could not connect to any of 3 addresses: could not connect to 10.0.0.1:5672"
            ),
            "{shown}"
        );
        // On simulated time: exactly the hanging node's address_timeout.
        assert_eq!(net.took(), Duration::from_millis(200));
    }

    #[test]
    fn a_name_with_several_ips_counts_as_several_addresses() {
        let net = Arc::new(FakeNet::new().name("rabbit", &["10.0.0.7:5672", "[fd00::7]:5672"]));
        let attempts = attempts(run(&net, options(&["amqp://rabbit", "amqp://nowhere"])));
        assert_eq!(net.connects(), ["10.0.0.7:5672", "[fd00::7]:5672"]);
        let labels: Vec<String> = attempts
            .iter()
            .map(|(a, e)| match e {
                Error::Connect { address, .. } => format!("{a} / {address}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            labels,
            [
                "rabbit:5672 / rabbit:5672 (10.0.0.7:5672)",
                "rabbit:5672 / rabbit:5672 ([fd00::7]:5672)",
                // Resolution failed: nothing to connect to.
                "nowhere:5672 / nowhere:5672",
            ]
        );
    }

    #[test]
    fn a_single_address_keeps_its_own_error_and_the_whole_timeout() {
        let net = Arc::new(FakeNet::new().with("10.0.0.1:5672", Behaviour::Hang));
        let mut opts = options(&["amqp://10.0.0.1"]);
        opts.connection_timeout = Duration::from_millis(300);
        opts.address_timeout = Duration::from_millis(50);
        match run(&net, opts) {
            Error::ConnectTimeout { address, timeout } => {
                assert_eq!(address, "10.0.0.1:5672");
                assert_eq!(timeout, Duration::from_millis(300));
                assert_eq!(net.took(), Duration::from_millis(300));
            }
            other => panic!("{other:?}"),
        }
        let net = Arc::new(FakeNet::new());
        assert!(matches!(
            run(&net, options(&["amqp://[::1]:1"])),
            Error::Connect { address, .. } if address == "[::1]:1"
        ));
    }

    #[test]
    fn addresses_past_the_overall_deadline_are_listed_as_timed_out() {
        let net = Arc::new(
            FakeNet::new()
                .with("10.0.0.1:5672", Behaviour::Hang)
                .with("10.0.0.2:5672", Behaviour::Hang),
        );
        let mut opts = options(&["amqp://10.0.0.1", "amqp://10.0.0.2", "amqp://10.0.0.3"]);
        opts.connection_timeout = Duration::from_millis(150);
        opts.address_timeout = Duration::from_secs(10);
        let attempts = attempts(run(&net, opts));
        // The first hang used the whole budget: the others were never tried.
        assert_eq!(net.connects(), ["10.0.0.1:5672"]);
        assert_eq!(attempts.len(), 3);
        assert!(
            attempts
                .iter()
                .all(|(_, e)| matches!(e, Error::ConnectTimeout { .. }))
        );
        assert_eq!(attempts[2].0, "10.0.0.3:5672");
    }

    #[test]
    fn shuffled_tries_every_address_once_in_varying_orders() {
        let mut orders = std::collections::HashSet::new();
        for _ in 0..30 {
            let net = Arc::new(FakeNet::new());
            let mut opts = options(&["amqp://10.0.0.1", "amqp://10.0.0.2", "amqp://10.0.0.3"]);
            opts.address_order = AddressOrder::Shuffled;
            let tried: Vec<String> = attempts(run(&net, opts))
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            assert_eq!(
                tried,
                net.connects(),
                "attempts are listed in the order tried"
            );
            let mut sorted = tried.clone();
            sorted.sort();
            assert_eq!(sorted, ["10.0.0.1:5672", "10.0.0.2:5672", "10.0.0.3:5672"]);
            orders.insert(tried);
        }
        assert!(
            orders.len() > 1,
            "30 shuffles of 3 addresses gave one order"
        );
    }

    #[test]
    fn refusals_every_node_would_repeat_are_not_transient() {
        use carehare_core::error::CloseReason;
        let reason = |code| CloseReason {
            code,
            text: "x".into(),
            class_id: 0,
            method_id: 0,
        };
        let closed = |e| Error::ConnectionClosed(e);
        let permanent = [
            closed(ConnectionError::AuthenticationFailed(reason(403))),
            closed(ConnectionError::ClosedByServer(reason(403))),
            closed(ConnectionError::ClosedByServer(reason(530))),
            closed(ConnectionError::InvalidVirtualHost(300)),
            closed(ConnectionError::ClosedByClient),
            closed(ConnectionError::DriverStopped),
            Error::Url(UrlError::NoUrls),
            Error::ChannelClosedByServer(reason(404)),
            Error::ServerSentNack,
            // A certificate problem is mended by configuration, not by
            // waiting.
            Error::TlsVerification {
                address: "a:1".into(),
                server_name: "a".into(),
                problem: crate::tls::CertificateProblem::UnknownIssuer,
                source: crate::Cause::from_box("unknown issuer".into()),
            },
        ];
        for e in &permanent {
            assert!(!e.is_transient(), "{e:?}");
        }
        // A node shutting down, a dead node, a slow node: try the next one.
        let transient = [
            closed(ConnectionError::ClosedByServer(reason(320))),
            closed(ConnectionError::UnexpectedEof),
            closed(ConnectionError::ClosedByHeartbeatMonitor(
                Duration::from_secs(4),
            )),
            Error::ConnectTimeout {
                address: "a:1".into(),
                timeout: Duration::from_secs(1),
            },
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e:?}");
        }
    }

    #[test]
    fn bad_tls_settings_fail_before_any_connect() {
        let net = Arc::new(FakeNet::new());
        let mut opts = options(&["amqps://10.0.0.1", "amqps://10.0.0.2"]);
        if let Some(tls) = opts.tls.as_mut() {
            tls.ca_file = Some("/nonexistent/ca.pem".into());
        }
        assert!(matches!(run(&net, opts), Error::Tls(_)));
        assert!(net.connects().is_empty());
    }

    /// Without TLS compiled in, `amqps://` is refused before any connect,
    /// with an error that names the feature.
    #[cfg(not(feature = "rustls"))]
    #[test]
    fn amqps_without_tls_compiled_in_names_the_feature() {
        let net = Arc::new(FakeNet::new());
        let opts = options(&["amqps://10.0.0.1"]);
        let err = run(&net, opts);
        assert!(
            matches!(err, Error::Tls(crate::TlsError::NotCompiledIn)),
            "{err:?}"
        );
        assert!(err.to_string().contains("`rustls` feature"), "{err}");
        assert!(net.connects().is_empty());
    }
}
