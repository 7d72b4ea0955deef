//! Helpers for the live-broker suite: where the test broker is, and a small
//! blocking driver that runs [`carehare_core::Connection`] over a
//! `std::net::TcpStream` (optionally through rustls).
//!
//! The driver is deliberately naive (one thread, blocking reads with a
//! timeout). It exists to check the sans-IO core against a real RabbitMQ
//! and shows how little an embedder needs to write.

#![deny(unreachable_pub)]

pub mod cluster;
pub mod consume;
pub mod fake_server;
pub mod faults;
pub mod hostile;
pub mod locks;
/// Log lines captured as text (the client's, shared with its own tests).
pub mod log_capture {
    pub use carehare_client::testing::Captured;
}
pub mod proxy;
pub mod publish;
pub mod python;
pub mod recovery;
pub mod runtimes;
pub mod scenarios;
pub mod secrets;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carehare_core::error::{ChannelError, ConnectionError, UsageError};
use carehare_core::types::OpId;
use carehare_core::{Connection, ConnectionConfig, Event, Reply, Tuning};

/// The test broker's AMQP address.
pub const AMQP_ADDR: &str = "127.0.0.1:5672";
/// The test broker's AMQPS address.
pub const AMQPS_ADDR: &str = "127.0.0.1:5671";

/// `test-server/certs/`, where `test-server/start.sh` puts the test CA,
/// server and client certificates.
pub fn certs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-server/certs")
}

/// Either transport.
pub enum Transport {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// A TLS client config trusting the test CA, with the client certificate
/// for EXTERNAL when `client_cert` is set.
pub fn tls_config(client_cert: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = certs_dir();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem"))
        .expect("test-server/certs/ca.pem: run test-server/start.sh")
    {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = if client_cert {
        let certs = CertificateDer::pem_file_iter(dir.join("client.pem"))
            .expect("client.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("client cert");
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).expect("client.key");
        builder
            .with_client_auth_cert(certs, key)
            .expect("client auth")
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// Why a blocking operation failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection ended.
    Connection(ConnectionError),
    /// The operation's channel failed.
    Channel(ChannelError),
    /// The core refused the command.
    Usage(UsageError),
    /// Nothing happened within the wait.
    Timeout,
}

/// The core over a blocking socket.
pub struct Blocking {
    /// The core. Tests may queue commands on it directly.
    pub conn: Connection,
    io: Transport,
    events: VecDeque<Event>,
    out: Vec<u8>,
    closed: Option<ConnectionError>,
}

impl Blocking {
    /// Connects over TCP and runs the handshake.
    pub fn connect(config: ConnectionConfig) -> Result<(Self, Tuning), Failure> {
        let sock =
            TcpStream::connect(AMQP_ADDR).expect("the test broker is up (test-server/start.sh)");
        Self::handshake(Transport::Tcp(sock), config)
    }

    /// Connects over TLS (server name `localhost`) and runs the handshake.
    pub fn connect_tls(
        config: ConnectionConfig,
        client_cert: bool,
    ) -> Result<(Self, Tuning), Failure> {
        let sock =
            TcpStream::connect(AMQPS_ADDR).expect("the test broker is up (test-server/start.sh)");
        let name = "localhost".try_into().expect("server name");
        let tls = rustls::ClientConnection::new(tls_config(client_cert), name).expect("tls");
        Self::handshake(
            Transport::Tls(Box::new(rustls::StreamOwned::new(tls, sock))),
            config,
        )
    }

    fn handshake(io: Transport, config: ConnectionConfig) -> Result<(Self, Tuning), Failure> {
        io.tcp().set_nodelay(true).ok();
        let mut me = Self {
            conn: Connection::new(config, Instant::now()),
            io,
            events: VecDeque::new(),
            out: Vec::new(),
            closed: None,
        };
        loop {
            match me.next_event(Duration::from_secs(30))? {
                Event::Connected(t) => return Ok((me, t)),
                Event::ConnectionClosed(e) => return Err(Failure::Connection(e)),
                // Nothing else can happen before `Connected`.
                _ => {}
            }
        }
    }

    /// Writes what the core queued.
    pub fn flush(&mut self) {
        self.out.clear();
        if self.conn.poll_transmit(&mut self.out) > 0
            && let Err(e) = self.io.write_all(&self.out).and_then(|_| self.io.flush())
        {
            self.conn.handle_transport_error(Instant::now(), e);
        }
    }

    /// Reads once (up to `wait`, or the core's next timer), feeding the core.
    fn pump(&mut self, wait: Duration) {
        self.flush();
        let now = Instant::now();
        let timer = self
            .conn
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now));
        let wait = timer
            .map_or(wait, |t| t.min(wait))
            .max(Duration::from_millis(1));
        self.io.tcp().set_read_timeout(Some(wait)).ok();
        let mut buf = [0u8; 65536];
        match self.io.read(&mut buf) {
            Ok(0) => self.conn.handle_eof(Instant::now()),
            Ok(n) => self.conn.handle_input(Instant::now(), &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => self.conn.handle_transport_error(Instant::now(), e),
        }
        self.conn.handle_timeout(Instant::now());
        self.flush();
        while let Some(e) = self.conn.poll_event() {
            if let Event::ConnectionClosed(err) = &e {
                self.closed = Some(err.clone());
            }
            self.events.push_back(e);
        }
    }

    /// The next event, waiting up to `wait`.
    pub fn next_event(&mut self, wait: Duration) -> Result<Event, Failure> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            if let Some(err) = &self.closed {
                return Err(Failure::Connection(err.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Timeout);
            }
            self.pump(deadline - now);
        }
    }

    /// Waits for one operation's completion, keeping other events queued.
    pub fn wait(&mut self, op: OpId) -> Result<Reply, Failure> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .events
                .iter()
                .position(|e| matches!(e, Event::Completed { op: o, .. } if *o == op));
            if let Some(i) = found
                && let Some(Event::Completed { result, .. }) = self.events.remove(i)
            {
                return result.map_err(Failure::Channel);
            }
            if let Some(err) = &self.closed {
                return Err(Failure::Connection(err.clone()));
            }
            if Instant::now() >= deadline {
                return Err(Failure::Timeout);
            }
            self.pump(Duration::from_millis(200));
        }
    }

    /// Takes the first queued event matching `pred`, waiting up to `wait`.
    pub fn wait_for(
        &mut self,
        wait: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, Failure> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.events.iter().position(&pred) {
                return Ok(self.events.remove(i).expect("index is valid"));
            }
            if let Some(err) = &self.closed {
                return Err(Failure::Connection(err.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Timeout);
            }
            self.pump(deadline - now);
        }
    }

    /// Opens a channel and waits for it.
    pub fn open_channel(&mut self) -> Result<u16, Failure> {
        let (ch, op) = self.conn.open_channel().map_err(Failure::Usage)?;
        self.wait(op)?;
        Ok(ch)
    }

    /// `call` then `wait`.
    pub fn call(
        &mut self,
        ch: u16,
        method: impl Into<carehare_core::method::Method>,
    ) -> Result<Reply, Failure> {
        let op = self.conn.call(ch, method.into()).map_err(Failure::Usage)?;
        self.wait(op)
    }

    /// Closes the connection and waits for the end.
    pub fn close(&mut self) -> Result<ConnectionError, Failure> {
        self.conn
            .close(Instant::now(), 200, "bye")
            .map_err(Failure::Usage)?;
        match self.wait_for(Duration::from_secs(15), |e| {
            matches!(e, Event::ConnectionClosed(_))
        }) {
            Ok(Event::ConnectionClosed(e)) => Ok(e),
            Err(Failure::Connection(e)) => Ok(e),
            Ok(_) => unreachable!("filtered"),
            Err(e) => Err(e),
        }
    }

    /// The local address of the socket (to find this connection in rabbitmqctl).
    pub fn local_port(&self) -> u16 {
        self.io.tcp().local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

/// Runs `rabbitmqctl ARGS` against the test node (through
/// `test-server/env.sh`) and returns its output.
///
/// # Panics
/// If the command fails: the test cannot go on.
pub fn rabbitmqctl(args: &str) -> String {
    try_rabbitmqctl(args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`rabbitmqctl`] that returns its failure instead of panicking (for
/// drop guards).
pub fn try_rabbitmqctl(args: &str) -> Result<String, String> {
    let script = format!(
        "source '{}/../test-server/env.sh' && rabbitmqctl {args}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .map_err(|e| format!("rabbitmqctl {args}: bash: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Force-closes the connection whose client-provided name is `name`.
///
/// # Panics
/// If no such connection exists.
pub fn close_connection_named(name: &str, reason: &str) {
    // RabbitMQ 3.10 has no `user_provided_name` info key: find the name in
    // the client properties.
    let list = rabbitmqctl("list_connections pid client_properties --no-table-headers -q");
    let needle = format!("\"{name}\"");
    let pid = list
        .lines()
        .find(|l| l.contains(&needle))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no connection named {name} in {list}"));
    rabbitmqctl(&format!("close_connection '{pid}' '{reason}'"));
}
