//! Idle connections of each client, opened the way each one's docs do it,
//! with a heartbeat and a connection name the broker can be asked about.

use std::future::Future;

use amqprs::callbacks::DefaultConnectionCallback;
use amqprs::connection::{Connection as AmqprsConnection, OpenConnectionArguments};
use carehare_benches::e2e::host_port;
use futures::FutureExt;
use futures::future::join_all;
use lapin::{Connection as LapinConnection, ConnectionProperties};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Carehare,
    Amqprs,
    Lapin,
}

impl std::str::FromStr for Client {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "carehare" => Ok(Self::Carehare),
            "amqprs" => Ok(Self::Amqprs),
            "lapin" => Ok(Self::Lapin),
            other => Err(format!("unknown client {other} (carehare, amqprs, lapin)")),
        }
    }
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Self::Carehare => "carehare",
            Self::Amqprs => "amqprs",
            Self::Lapin => "lapin",
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    /// `amqp://user:pass@host:port/vhost`, no query.
    pub url: String,
    pub heartbeat: u16,
    /// Connection `i` is named `{prefix}{i}` (the client-provided name).
    pub prefix: String,
}

/// Open connections of one client.
pub enum Idle {
    Carehare(Vec<carehare_tokio::Connection>),
    Amqprs(Vec<AmqprsConnection>),
    Lapin(Vec<LapinConnection>),
}

/// Runs `make(i)` for `i` in `0..n`, `batch` at a time (a batch finishes
/// before the next starts, so the broker's accept queue never holds more
/// than a batch of handshakes); every outcome, in order.
pub async fn each_in_batches<T, F, Fut>(n: usize, batch: usize, make: F) -> Vec<Result<T, String>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut all = Vec::with_capacity(n);
    let batch = batch.max(1);
    for start in (0..n).step_by(batch) {
        all.extend(join_all((start..(start + batch).min(n)).map(&make)).await);
    }
    all
}

/// [`each_in_batches`], failing on the first error.
pub async fn in_batches<T, F, Fut>(n: usize, batch: usize, make: F) -> Result<Vec<T>, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    each_in_batches(n, batch, make).await.into_iter().collect()
}

/// Opens `n` connections of `client`, `batch` at a time.
pub async fn open(client: Client, t: &Target, n: usize, batch: usize) -> Result<Idle, String> {
    Ok(match client {
        Client::Carehare => Idle::Carehare(in_batches(n, batch, |i| carehare(t, i)).await?),
        Client::Amqprs => Idle::Amqprs(in_batches(n, batch, |i| amqprs(t, i)).await?),
        Client::Lapin => Idle::Lapin(in_batches(n, batch, |i| lapin(t, i)).await?),
    })
}

/// The plain client as a user calls it: options from the URL, a name.
pub async fn carehare(t: &Target, i: usize) -> Result<carehare_tokio::Connection, String> {
    carehare_unnamed_error(t, i)
        .await
        .map_err(|e| format!("carehare connection {i}: {e}"))
}

/// [`carehare`], its error without the connection's number (so that
/// errors can be counted by kind).
pub async fn carehare_unnamed_error(
    t: &Target,
    i: usize,
) -> Result<carehare_tokio::Connection, String> {
    let url = format!("{}?heartbeat={}", t.url, t.heartbeat);
    let mut options = carehare_tokio::ConnectOptions::from_url(&url).map_err(|e| e.to_string())?;
    options.amqp.connection_name = Some(format!("{}{i}", t.prefix));
    carehare_tokio::connect_with(options)
        .await
        .map_err(|e| e.to_string())
}

async fn amqprs(t: &Target, i: usize) -> Result<AmqprsConnection, String> {
    let (host, port) = host_port(&t.url);
    let mut args = OpenConnectionArguments::new(&host, port, "guest", "guest");
    args.heartbeat(t.heartbeat)
        .connection_name(&format!("{}{i}", t.prefix));
    let c = AmqprsConnection::open(&args)
        .await
        .map_err(|e| format!("amqprs connection {i}: {e}"))?;
    c.register_callback(DefaultConnectionCallback)
        .await
        .map_err(|e| format!("amqprs connection {i}: {e}"))?;
    Ok(c)
}

async fn lapin(t: &Target, i: usize) -> Result<LapinConnection, String> {
    let url = format!("{}?heartbeat={}", t.url, t.heartbeat);
    let props =
        ConnectionProperties::default().with_connection_name(format!("{}{i}", t.prefix).into());
    LapinConnection::connect(&url, props)
        .await
        .map_err(|e| format!("lapin connection {i}: {e}"))
}

impl Idle {
    /// How many are still open, asked without waiting: carehare's
    /// `closed()` future polled once (pending while the connection
    /// lives), the others' status flags.
    pub fn still_open(&self) -> usize {
        match self {
            Self::Carehare(v) => v
                .iter()
                .filter(|c| c.closed().now_or_never().is_none())
                .count(),
            Self::Amqprs(v) => v.iter().filter(|c| c.is_open()).count(),
            Self::Lapin(v) => v.iter().filter(|c| c.status().connected()).count(),
        }
    }

    /// Closes every connection cleanly, `batch` at a time; how many closed
    /// without an error.
    pub async fn close(self, batch: usize) -> usize {
        let ok = |r: Result<(), String>| r.is_ok();
        match self {
            Self::Carehare(v) => {
                let v = &v;
                let closes = in_batches(v.len(), batch, |i| async move {
                    Ok(ok(v[i].close().await.map_err(|e| e.to_string())))
                });
                count(closes.await)
            }
            Self::Amqprs(v) => {
                let mut cells: Vec<_> = v.into_iter().map(Some).collect();
                let mut closed = 0;
                for chunk in cells.chunks_mut(batch.max(1)) {
                    let closes = chunk.iter_mut().filter_map(Option::take).map(|c| c.close());
                    closed += join_all(closes).await.iter().filter(|r| r.is_ok()).count();
                }
                closed
            }
            Self::Lapin(v) => {
                let v = &v;
                let closes = in_batches(v.len(), batch, |i| async move {
                    Ok(ok(v[i]
                        .close(200, "bye".into())
                        .await
                        .map_err(|e| e.to_string())))
                });
                count(closes.await)
            }
        }
    }
}

fn count(r: Result<Vec<bool>, String>) -> usize {
    r.map_or(0, |v| v.into_iter().filter(|ok| *ok).count())
}
