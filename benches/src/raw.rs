//! A raw AMQP connection on a blocking socket: carehare-core's codec and
//! nothing more, no runtime. The floor peer (`peer-raw`) and the scale
//! bench's heartbeat observers both open theirs with it.
//!
//! Reads go into one scratch block, allocated once, and only the bytes read
//! are copied on: zeroing a fresh 64 KiB before each read cost the floor
//! peer about a twentieth of its CPU per message. [`Raw::take_read`] looks
//! at a frame's bytes without decoding it, which is all the floor peer
//! needs while it measures.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BytesMut};
use carehare_core::frame::{
    FRAME_END, FRAME_METHOD, FRAME_OVERHEAD, Frame, decode_frame, encode_method,
};
use carehare_core::method::{ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, Method};
use carehare_core::types::{FieldTable, Secret, ShortStr};

use crate::FRAME_MAX;
use crate::e2e::host_port;

/// One connection: its socket (for writes of the caller's own bytes) and
/// what was read but not yet decoded.
pub struct Raw {
    pub sock: TcpStream,
    buf: BytesMut,
    scratch: Box<[u8]>,
}

/// What the floor peer needs to know of a frame, read off its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// `basic.ack` from the broker: a confirm, `multiple` or not.
    Ack { delivery_tag: u64 },
    /// `basic.deliver`, whose header and body frames follow as `Other`.
    Deliver { delivery_tag: u64 },
    /// Any other frame.
    Other,
}

/// Type, channel, size: the part of a frame before its payload.
const BEFORE_PAYLOAD: usize = FRAME_OVERHEAD - 1;

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
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
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
            self.fill()?;
        }
    }

    /// Hands `each` the next frame, reading as needed, then every frame
    /// already read behind it: one read's worth, after which the caller
    /// writes once.
    pub fn take_read(&mut self, mut each: impl FnMut(Seen)) -> Result<(), String> {
        let first = loop {
            if let Some(seen) = self.seen_buffered()? {
                break seen;
            }
            self.fill()?;
        };
        each(first);
        while let Some(seen) = self.seen_buffered()? {
            each(seen);
        }
        Ok(())
    }

    /// The next frame seen, if it is whole in what was already read. A
    /// frame that can't be right, a `channel.close`, `connection.close` or
    /// `basic.nack` is an error: the floor peer stops at any of them.
    fn seen_buffered(&mut self) -> Result<Option<Seen>, String> {
        let b = &self.buf[..];
        if b.len() < BEFORE_PAYLOAD {
            return Ok(None);
        }
        let size = u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize;
        if size > FRAME_MAX as usize {
            return Err(format!("a frame of {size} B"));
        }
        let whole = FRAME_OVERHEAD + size;
        if b.len() < whole {
            return Ok(None);
        }
        if b[whole - 1] != FRAME_END {
            return Err("a frame without its end byte".into());
        }
        let payload = &b[BEFORE_PAYLOAD..whole - 1];
        let u64_at = |at: usize| -> Result<u64, String> {
            payload
                .get(at..at + 8)
                .and_then(|t| t.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| "a short method frame".to_string())
        };
        let seen = match (b[0], payload.get(..4)) {
            (FRAME_METHOD, Some(&[0, 60, 0, 80])) => Seen::Ack {
                delivery_tag: u64_at(4)?,
            },
            (FRAME_METHOD, Some(&[0, 60, 0, 60])) => {
                // consumer-tag (a short string), then the delivery tag.
                let tag_len = *payload.get(4).ok_or("a short basic.deliver")? as usize;
                Seen::Deliver {
                    delivery_tag: u64_at(5 + tag_len)?,
                }
            }
            (FRAME_METHOD, Some(&[0, 60, 0, 120])) => return Err("basic.nack".into()),
            (FRAME_METHOD, Some(&[0, 20, 0, 40])) => return Err("channel.close".into()),
            (FRAME_METHOD, Some(&[0, 10, 0, 50])) => return Err("connection.close".into()),
            _ => Seen::Other,
        };
        self.buf.advance(whole);
        Ok(Some(seen))
    }

    /// Reads once (blocking) and appends what came to what is unread.
    fn fill(&mut self) -> Result<(), String> {
        let n = self
            .sock
            .read(&mut self.scratch)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the broker closed the connection".into());
        }
        self.buf.extend_from_slice(&self.scratch[..n]);
        Ok(())
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
