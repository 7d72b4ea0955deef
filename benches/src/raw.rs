//! A raw AMQP connection on a blocking socket: carehare-core's codec and
//! nothing more, no runtime. The floor peer (`peer-raw`) and the scale
//! bench's heartbeat observers both open theirs with it.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use carehare_core::frame::{Frame, decode_frame, encode_method};
use carehare_core::method::{ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, Method};
use carehare_core::types::{FieldTable, Secret, ShortStr};

use crate::FRAME_MAX;
use crate::e2e::host_port;

/// One connection: its socket (for writes of the caller's own bytes) and
/// what was read but not yet decoded.
pub struct Raw {
    pub sock: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects to the broker of `url` (`TCP_NODELAY` set) and sends the
    /// protocol header.
    pub fn connect(url: &str) -> std::io::Result<Self> {
        let (host, port) = host_port(url);
        let mut sock = TcpStream::connect((host.as_str(), port))?;
        sock.set_nodelay(true)?;
        sock.write_all(b"AMQP\x00\x00\x09\x01")?;
        Ok(Raw {
            sock,
            buf: BytesMut::with_capacity(256 * 1024),
        })
    }

    /// The handshake as guest on vhost `/`, with `heartbeat` seconds.
    pub fn open(&mut self, heartbeat: u16) -> Result<(), String> {
        self.expect(|m| matches!(m, Method::ConnectionStart(_)), "start")?;
        self.send_on(
            0,
            ConnectionStartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortStr::from_static("PLAIN"),
                response: Secret(bytes::Bytes::from_static(b"\0guest\0guest")),
                locale: ShortStr::from_static("en_US"),
            },
        )?;
        let Method::ConnectionTune(tune) = self.next_method()? else {
            return Err("tune expected".into());
        };
        self.send_on(
            0,
            ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: FRAME_MAX,
                heartbeat,
            },
        )?;
        self.send_on(
            0,
            ConnectionOpen {
                virtual_host: ShortStr::from_static("/"),
                ..Default::default()
            },
        )?;
        self.expect(|m| matches!(m, Method::ConnectionOpenOk(_)), "open-ok")
    }

    /// Writes one method frame on `channel`.
    pub fn send_on(&mut self, channel: u16, method: impl Into<Method>) -> Result<(), String> {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method.into());
        self.sock.write_all(&out).map_err(|e| format!("write: {e}"))
    }

    /// The next frame, reading as needed.
    pub fn next_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(frame) =
                decode_frame(&mut self.buf, FRAME_MAX).map_err(|e| format!("decode: {e}"))?
            {
                return Ok(frame);
            }
            self.buf.reserve(64 * 1024);
            let start = self.buf.len();
            self.buf.resize(start + 64 * 1024, 0);
            let n = self
                .sock
                .read(&mut self.buf[start..])
                .map_err(|e| format!("read: {e}"))?;
            self.buf.truncate(start + n);
            if n == 0 {
                return Err("the broker closed the connection".into());
            }
        }
    }

    /// The next method frame; other frames are skipped.
    pub fn next_method(&mut self) -> Result<Method, String> {
        loop {
            if let Frame::Method { method, .. } = self.next_frame()? {
                return Ok(method);
            }
        }
    }

    /// The next method, an error unless `want` accepts it.
    pub fn expect(&mut self, want: impl Fn(&Method) -> bool, what: &str) -> Result<(), String> {
        let m = self.next_method()?;
        if want(&m) {
            Ok(())
        } else {
            Err(format!("{what} expected, got {m:?}"))
        }
    }
}
