//! One byte stream to a server: TCP (with `TCP_NODELAY`) or rustls TLS over
//! TCP, a connect timeout, and reply lines read against an absolute
//! deadline with the 1 MiB bound of the protocol.
//!
//! Everything above this module sees only [`Transport::send`],
//! [`Transport::read_line`] and the raw fd (for `shutdown` from another
//! thread and the liveness peek of the pool).

mod tls;

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use tls::TlsOptions;
pub(crate) use tls::TlsSetup;

use crate::protocol::{LineBuffer, LineError, MAX_REPLY_LINE_BYTES};
use crate::{Error, ErrorKind, Result};

enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

/// A connected, handshaken stream plus the bytes read but not yet
/// returned as lines.
pub(crate) struct Transport {
    stream: Stream,
    lines: LineBuffer,
}

/// Read chunk size: replies are short; `stats` simply takes more reads.
const READ_CHUNK: usize = 4096;

/// Time left until `deadline`, or a [`ErrorKind::Deadline`] error.
fn remaining(deadline: Option<Instant>, what: &str) -> Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(Error::new(
                ErrorKind::Deadline,
                format!("{what}: no reply before the deadline"),
            )),
        },
    }
}

impl Transport {
    /// Resolve `host`, connect to the first address that accepts within
    /// `connect_timeout`, set `TCP_NODELAY`, and complete the TLS
    /// handshake when `tls` is given (so certificate errors surface here,
    /// as [`ErrorKind::Tls`]).
    pub(crate) fn connect(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        tls: Option<&TlsSetup>,
    ) -> Result<Transport> {
        let ctx = format!("connect to {host}:{port}");
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| Error::new(ErrorKind::Io, format!("{ctx}: cannot resolve: {e}")))?;
        let mut last = Error::new(ErrorKind::Io, format!("{ctx}: no address"));
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Error::io(&ctx, &e),
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_nodelay(true).map_err(|e| Error::io(&ctx, &e))?;
        let stream = match tls {
            None => Stream::Tcp(tcp),
            Some(setup) => Stream::Tls(Box::new(handshake(tcp, host, setup, connect_timeout)?)),
        };
        Ok(Transport {
            stream,
            lines: LineBuffer::new(),
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.stream.tcp().as_raw_fd()
    }

    /// Whether this is a TLS stream.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Write a whole frame before `deadline`.
    pub(crate) fn send(&mut self, frame: &[u8], deadline: Option<Instant>, what: &str) -> Result<()> {
        let left = remaining(deadline, what)?;
        let tcp = self.stream.tcp();
        tcp.set_write_timeout(left).map_err(|e| Error::io(what, &e))?;
        let r = match &mut self.stream {
            Stream::Tcp(s) => s.write_all(frame).and_then(|_| s.flush()),
            Stream::Tls(s) => s.write_all(frame).and_then(|_| s.flush()),
        };
        r.map_err(|e| Error::io(&format!("{what}: write"), &e))
    }

    /// The next reply line (at most [`MAX_REPLY_LINE_BYTES`]), read before
    /// `deadline`. EOF, an over-long or non-UTF-8 line are errors; after
    /// any error the stream is out of sync and must be dropped.
    pub(crate) fn read_line(&mut self, deadline: Option<Instant>, what: &str) -> Result<String> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.lines.next_line(MAX_REPLY_LINE_BYTES) {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => {}
                Err(LineError::TooLong) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("{what}: reply line longer than {MAX_REPLY_LINE_BYTES} bytes"),
                    ));
                }
                Err(LineError::NotUtf8) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("{what}: reply is not UTF-8"),
                    ));
                }
            }
            let left = remaining(deadline, what)?;
            self.stream
                .tcp()
                .set_read_timeout(left)
                .map_err(|e| Error::io(what, &e))?;
            let n = match &mut self.stream {
                Stream::Tcp(s) => s.read(&mut chunk),
                Stream::Tls(s) => s.read(&mut chunk),
            };
            match n {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{what}: server closed the connection"),
                    ));
                }
                Ok(n) => self.lines.extend(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(Error::new(
                        ErrorKind::Deadline,
                        format!("{what}: no reply before the deadline"),
                    ));
                }
                Err(e) => return Err(Error::io(&format!("{what}: read"), &e)),
            }
        }
    }

    /// Whether an idle stream still looks usable: no buffered bytes, and a
    /// non-blocking peek finds neither EOF nor unexpected bytes (a server
    /// that timed the connection out sends `error` and closes; a TLS peer
    /// sends close_notify).
    pub(crate) fn looks_alive(&self) -> bool {
        if self.lines.pending() > 0 {
            return false;
        }
        if let Stream::Tls(s) = &self.stream {
            if s.conn.wants_write() {
                return false;
            }
        }
        let mut byte = 0u8;
        // SAFETY: the fd is owned by self.stream and open; the buffer is one
        // valid byte.
        let n = unsafe {
            libc::recv(
                self.raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && {
            let err = io::Error::last_os_error();
            err.kind() == io::ErrorKind::WouldBlock
        }
    }
}

/// Shut both directions of a socket so a read blocked on it in another
/// thread returns at once. Safe on an fd that is already shut down.
pub(crate) fn shutdown_fd(fd: RawFd) {
    // SAFETY: shutdown on an fd has no memory effects; the caller keeps the
    // owning stream alive so the fd cannot have been reused.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

fn handshake(
    mut tcp: TcpStream,
    host: &str,
    setup: &TlsSetup,
    timeout: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let ctx = format!("TLS handshake with {host}");
    let name = setup.server_name(host)?;
    let mut conn = rustls::ClientConnection::new(Arc::clone(&setup.config), name)
        .map_err(|e| Error::new(ErrorKind::Tls, format!("{ctx}: {e}")))?;
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        let left = remaining(Some(deadline), &ctx)?;
        tcp.set_read_timeout(left).map_err(|e| Error::io(&ctx, &e))?;
        tcp.set_write_timeout(left).map_err(|e| Error::io(&ctx, &e))?;
        if let Err(e) = conn.complete_io(&mut tcp) {
            let tls_failure = e
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
            return Err(if tls_failure {
                Error::new(ErrorKind::Tls, format!("{ctx}: {e}"))
            } else {
                Error::io(&ctx, &e)
            });
        }
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}
