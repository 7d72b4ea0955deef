//! Connecting: TCP, then TLS, then the AMQP handshake, all under one timeout.

use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use futures_util::future::{Either, select};

use crate::connection::{Connection, Handle};
use crate::driver::Driver;
use crate::error::Error;
use crate::options::ConnectOptions;
use crate::runtime::{Runtime, Stream};
use crate::shared::Shared;
use crate::tls;

/// Connects with the given runtime. Adapter crates wrap this as their
/// `connect`; it is public so any runtime can be plugged in.
///
/// ```no_run
/// # async fn f(runtime: std::sync::Arc<dyn carehare_client::Runtime>) -> Result<(), carehare_client::Error> {
/// let options = carehare_client::ConnectOptions::from_url("amqp://guest:guest@localhost/")?;
/// let connection = carehare_client::connect_with_runtime(runtime, options).await?;
/// connection.close().await?;
/// # Ok(()) }
/// ```
pub async fn connect_with_runtime(
    runtime: Arc<dyn Runtime>,
    options: ConnectOptions,
) -> Result<Connection, Error> {
    let address = if options.host.contains(':') {
        format!("[{}]:{}", options.host, options.port)
    } else {
        format!("{}:{}", options.host, options.port)
    };
    let timeout = options.connection_timeout;
    let deadline = Instant::now() + timeout;
    let sleep = runtime.sleep_until(deadline);
    let attempt = Box::pin(connect_inner(
        runtime.clone(),
        options,
        address.clone(),
        deadline,
    ));
    match select(attempt, sleep).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => Err(Error::ConnectTimeout { address, timeout }),
    }
}

async fn connect_inner(
    runtime: Arc<dyn Runtime>,
    options: ConnectOptions,
    address: String,
    deadline: Instant,
) -> Result<Connection, Error> {
    let connect_error = |e: std::io::Error| Error::Connect {
        address: address.clone(),
        error: Arc::new(e),
    };
    // TLS settings are checked before any network traffic.
    let tls = match &options.tls {
        Some(t) => Some((tls::client_config(t)?, tls::server_name(t, &options.host)?)),
        None => None,
    };
    let tcp = runtime
        .connect_tcp(&options.host, options.port)
        .await
        .map_err(connect_error)?;
    let io: Box<dyn Stream> = match tls {
        None => tcp,
        Some((config, name)) => {
            let stream = futures_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(connect_error)?;
            Box::new(stream)
        }
    };
    let mut amqp = options.amqp;
    // The handshake gets what is left of the connection timeout.
    amqp.handshake_timeout = deadline.saturating_duration_since(Instant::now());
    let (tx, rx) = oneshot::channel();
    let shared = Shared::new(carehare_core::Connection::new(amqp, Instant::now()), tx);
    runtime.spawn(Box::pin(Driver::new(io, shared.clone(), runtime.clone())));
    match rx.await {
        Ok(Ok(tuning)) => Ok(Connection {
            handle: Arc::new(Handle {
                shared,
                tuning,
                runtime,
            }),
        }),
        Ok(Err(e)) => Err(Error::ConnectionClosed(e)),
        Err(_) => Err(Error::ConnectionClosed(
            carehare_core::error::ConnectionError::UnexpectedEof,
        )),
    }
}
