//! A TCP socket's receive low-water mark (`SO_RCVLOWAT`): the driver sets
//! it to what the core's `read_low_water` asks, so that while publishes
//! are held back it is woken once for many confirms rather than for each
//! ack frame (see the core's `Coalescing`).
//!
//! No crate the client already depends on sets this option, so this
//! module holds the workspace's one `unsafe` block: a `setsockopt` of an
//! `int` on Linux, where the kernel also leaves a sleeping reader asleep
//! until the mark is reached and signals it at once when the mark is
//! lowered below what is waiting. Elsewhere the mark is never set.
//!
//! Invariant: `fd` is the socket of the stream the driver was given with
//! it, which owns the socket for as long as the driver holds both.

#![allow(unsafe_code)]

use std::io;

/// A handle on a connected TCP socket's receive low-water mark, handed to
/// the driver with the socket's stream by
/// [`Runtime::connect_tcp`](crate::Runtime::connect_tcp).
/// The driver sets it while publishes are held back, so that it sleeps
/// through many confirms at a time; it is set back to 1 (wake for any
/// byte) whenever they are not. It only changes how often the driver is
/// woken, never what it reads.
#[derive(Debug)]
pub struct LowWater {
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
}

impl LowWater {
    /// The low-water mark of `socket`. Return it with the stream that owns
    /// `socket`, which must keep it open as long as that stream lives: the
    /// driver drops both together. A stale one would only set the option
    /// on whatever the number names by then, never touch memory.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let tcp = std::net::TcpStream::connect("127.0.0.1:5672")?;
    /// let low_water = carehare_client::LowWater::of(&tcp);
    /// # drop(low_water); Ok(()) }
    /// ```
    #[cfg(unix)]
    pub fn of(socket: &impl std::os::fd::AsRawFd) -> Self {
        Self {
            fd: socket.as_raw_fd(),
        }
    }

    /// Sets the mark to `bytes` (at least 1). `Unsupported` off Linux.
    pub(crate) fn set(&self, bytes: usize) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `setsockopt` reads `size_of::<c_int>()` bytes from a
            // pointer to a live local `c_int`, and keeps no pointer. The fd
            // is a plain number here: were it stale, the call would fail
            // or set the option on another socket, not touch memory.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    std::ptr::from_ref(&value).cast::<libc::c_void>(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = bytes;
            Err(io::ErrorKind::Unsupported.into())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::LowWater;

    /// Whether `s` polls readable now, without waiting: what epoll tells
    /// a runtime's reactor.
    fn readable(s: &TcpStream) -> bool {
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live `pollfd`, a count of 1, no timeout.
        let n = unsafe { libc::poll(&raw mut p, 1, 0) };
        n == 1 && p.revents & libc::POLLIN != 0
    }

    /// Sends `n` bytes and gives loopback a moment to deliver them.
    fn send(writer: &mut TcpStream, n: usize) {
        writer.write_all(&vec![0; n]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }

    /// A socket with the mark set polls readable only once that many bytes
    /// wait, a non-blocking read still takes fewer, and lowering the mark
    /// below what waits makes it readable at once: what the driver relies
    /// on.
    #[test]
    fn the_mark_holds_readiness_back_until_reached_or_lowered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut reader, _) = listener.accept().unwrap();
        reader.set_nonblocking(true).unwrap();
        let low_water = LowWater::of(&reader);
        let mut buf = [0; 200];

        low_water.set(100).unwrap();
        send(&mut writer, 60);
        assert!(!readable(&reader), "60 bytes of 100");
        assert_eq!(reader.read(&mut buf).unwrap(), 60, "read all the same");
        send(&mut writer, 60);
        assert!(!readable(&reader));
        send(&mut writer, 60);
        assert!(readable(&reader), "120 bytes reach the mark");
        assert_eq!(reader.read(&mut buf).unwrap(), 120);

        send(&mut writer, 10);
        assert!(!readable(&reader));
        low_water.set(1).unwrap();
        assert!(readable(&reader), "the mark lowered below what waits");
        assert_eq!(reader.read(&mut buf).unwrap(), 10);
    }
}
