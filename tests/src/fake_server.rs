//! A fake AMQP server on 127.0.0.1: a std thread that plays a script over a
//! real TCP socket with carehare-core's scripted-broker pieces
//! (`carehare_core::testing`), to send what RabbitMQ never would. The
//! client under test is the real one: its driver, reads, buffers and
//! timers all run.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use carehare_client::Runtime;
use carehare_core::method::{ConnectionClose, ConnectionCloseOk, ConnectionTune, Method};
use carehare_core::testing::{self, ClientOutput};
use carehare_core::types::ChannelId;

use crate::scenarios::sleep;

/// How long the server waits for the client to say anything: a client
/// that went quiet for this long fails the script instead of hanging it.
const IDLE: Duration = Duration::from_secs(30);

/// A fake server listening on an ephemeral port of 127.0.0.1, playing its
/// script on the first connection. The script's result comes back from
/// [`join`](Self::join).
pub struct FakeServer<T> {
    port: u16,
    thread: JoinHandle<T>,
}

impl<T: Send + 'static> FakeServer<T> {
    /// Listens, and plays `script` on the first connection accepted.
    pub fn start(script: impl FnOnce(&mut Peer) -> T + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(IDLE)).unwrap();
            let mut peer = Peer {
                io: Tap {
                    sock,
                    seen: Vec::new(),
                },
                from_client: ClientOutput::new(),
            };
            script(&mut peer)
        });
        Self { port, thread }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits (on `rt`, without blocking it) for the script to end, at most
    /// `limit`, and returns its result; the script's panic is re-raised.
    pub async fn join(self, rt: &Arc<dyn Runtime>, limit: Duration) -> T {
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() {
            assert!(Instant::now() < deadline, "the fake server is stuck");
            sleep(rt, Duration::from_millis(10)).await;
        }
        match self.thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The server's end of the connection, as a script sees it.
pub struct Peer {
    io: Tap,
    from_client: ClientOutput,
}

/// The socket, keeping a copy of every byte the client wrote.
struct Tap {
    sock: TcpStream,
    seen: Vec<u8>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl Peer {
    /// Takes the client's protocol header.
    pub fn expect_protocol_header(&mut self) {
        while self.from_client.partial().len() < 8 {
            let n = self.from_client.read_from(&mut self.io).unwrap();
            assert!(n > 0, "the client left before its protocol header");
        }
        self.from_client.expect_protocol_header();
    }

    /// Plays the server's side of the handshake, proposing `tune`.
    pub fn handshake(&mut self, tune: ConnectionTune) {
        testing::serve_handshake(&mut self.io, &mut self.from_client, tune).unwrap();
    }

    /// Writes `bytes` to the client; `false` once the client is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).is_ok()
    }

    /// The client's next method and its channel (content and heartbeats
    /// are skipped); `None` once the client closed the socket.
    pub fn next_method(&mut self) -> Option<(ChannelId, Method)> {
        self.from_client.read_method(&mut self.io).ok()
    }

    /// Answers every method as a well-behaved server would
    /// ([`testing::polite_reply`]) until one that `stop` picks, which is
    /// answered too and returned. Panics if the client leaves first.
    pub fn answer_until(&mut self, stop: impl Fn(&Method) -> bool) -> (ChannelId, Method) {
        loop {
            let (channel, method) = self
                .next_method()
                .expect("the client left before the script's turn");
            if let Some(reply) = testing::polite_reply(&method) {
                self.send(&testing::method_bytes(channel, reply));
            }
            if stop(&method) {
                return (channel, method);
            }
        }
    }

    /// Answers politely until the client's `connection.close`, answers
    /// that with `close-ok` and returns it.
    pub fn serve_until_close(&mut self) -> ConnectionClose {
        match self.answer_until(|m| matches!(m, Method::ConnectionClose(_))) {
            (_, Method::ConnectionClose(close)) => close,
            _ => unreachable!("answer_until returns what it stopped at"),
        }
    }

    /// Reads and ignores everything until the client closes the socket.
    pub fn drain_until_eof(&mut self) {
        let mut chunk = [0u8; 4096];
        while matches!(self.io.read(&mut chunk), Ok(n) if n > 0) {}
    }

    /// Every byte the client wrote so far.
    pub fn client_bytes(&self) -> &[u8] {
        &self.io.seen
    }

    /// Sends `connection.close-ok`, for a script that answers a close itself.
    pub fn close_ok(&mut self) -> bool {
        self.send(&testing::method_bytes(0, ConnectionCloseOk {}))
    }
}
