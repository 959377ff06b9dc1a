//! One byte stream to a server: TCP (with `TCP_NODELAY`) or rustls TLS over
//! TCP. Every operation takes an absolute deadline and never outlives it:
//! name resolution, connect, the TLS handshake, each write and each read
//! (the socket's `SO_SNDTIMEO`/`SO_RCVTIMEO` are kept at or below the time
//! left, and every loop checks the clock). Reply lines are read with the
//! 1 MiB bound of the protocol.
//!
//! TLS is driven by hand (`read_tls` / `process_new_packets` / `reader`,
//! `writer` / `write_tls`) rather than through `rustls::StreamOwned`, whose
//! internal loops would wait once per TLS record and so could overshoot a
//! deadline against a server that trickles bytes.
//!
//! Everything above this module sees only `Transport::send`,
//! `Transport::read_line` and the raw fd (for `shutdown` from another
//! thread and the liveness peek of the pool).

mod tls;

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use tls::TlsOptions;
pub(crate) use tls::TlsSetup;

use crate::protocol::{LineBuffer, LineError, MAX_REPLY_LINE_BYTES};
use crate::{Error, ErrorKind, Result};

/// A connected, handshaken stream plus the bytes read but not yet
/// returned as lines.
pub(crate) struct Transport {
    sock: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    lines: LineBuffer,
    /// The socket's current SO_RCVTIMEO / SO_SNDTIMEO (`None`: not set
    /// yet, i.e. infinite), so the common case (a budget like the
    /// previous request's) costs no `setsockopt`.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Whether any byte ever arrived: an EOF before the first reply is
    /// the signature of a TLS server refusing plaintext.
    received: bool,
    /// The first bytes a TLS handshake received, kept to tell a plaintext
    /// server's answer from a broken TLS one.
    head: Vec<u8>,
}

/// The socket as rustls reads it during the handshake: the first bytes
/// are copied to `head`.
struct Recording<'a> {
    sock: &'a mut TcpStream,
    head: &'a mut Vec<u8>,
}

impl Read for Recording<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        let keep = n.min(8usize.saturating_sub(self.head.len()));
        self.head.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}

/// Linux runs socket timeouts (`SO_RCVTIMEO`/`SO_SNDTIMEO`) on the coarse
/// timer wheel, which may fire up to 1/8 of the timeout late (a 5 s
/// timeout by up to 256 ms at HZ=250). So a socket timeout is set to 7/8 of
/// the time left: it fires early rather than late, and the read loop
/// waits out the remainder with a new, shorter timeout. The deadline is
/// then kept to within about one jiffy (4–10 ms).
fn socket_timeout(left: Duration) -> Duration {
    (left - left / 8).max(Duration::from_millis(1))
}

/// Whether a socket timeout of `current` may stand in for `left` (the
/// time left to the deadline): even firing 1/8 late it must not overshoot
/// (`current × 9/8 ≤ left`). One that is shorter is fine: a read that times
/// out early is retried with the exact remainder. So requests with the
/// same budget cost no `setsockopt` each.
fn timeout_fits(current: Option<Duration>, left: Duration) -> bool {
    current.is_some_and(|cur| cur + cur / 8 <= left)
}

/// Least free room offered to a read: replies are short (a grant is ~40
/// bytes) and every held lease keeps its connection's buffer, so it stays
/// small; a long `stats` reply grows it (see `LineBuffer::fill`).
const READ_ROOM: usize = 128;

/// Time left until `deadline`, or a [`ErrorKind::Deadline`] error.
fn remaining(deadline: Instant, what: &dyn Display) -> Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(Error::new(
            ErrorKind::Deadline,
            format!("{what}: no reply before the deadline"),
        )),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Resolve `host:port` before `deadline`. IP literals need no lookup;
/// names are resolved on a short-lived thread so a hung resolver cannot
/// hold the caller past the deadline (the thread ends when the resolver
/// gives up; its answer is then dropped).
fn resolve(host: &str, port: u16, deadline: Instant, ctx: &str) -> Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let cannot = |e: &dyn Display| Error::new(ErrorKind::Io, format!("{ctx}: cannot resolve: {e}"));
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("dflockd-resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })
        .map_err(|e| cannot(&e))?;
    let left = remaining(deadline, &format_args!("{ctx}: resolving"))?;
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(cannot(&e)),
        Err(_) => Err(Error::new(
            ErrorKind::Deadline,
            format!("{ctx}: name resolution did not finish before the deadline"),
        )),
    }
}

impl Transport {
    /// Resolve `host`, connect to the first address that accepts, set
    /// `TCP_NODELAY`, and complete the TLS handshake when `tls` is given
    /// (so certificate errors surface here, as [`ErrorKind::Tls`]), all
    /// before `deadline`.
    pub(crate) fn connect(
        host: &str,
        port: u16,
        deadline: Instant,
        tls: Option<&TlsSetup>,
    ) -> Result<Transport> {
        let ctx = format!("connect to {host}:{port}");
        let addrs = resolve(host, port, deadline, &ctx)?;
        let mut last = Error::new(ErrorKind::Io, format!("{ctx}: no address"));
        let mut sock = None;
        for addr in addrs {
            let left = remaining(deadline, &ctx)?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) if is_timeout(&e) => {
                    last = Error::new(
                        ErrorKind::Deadline,
                        format!("{ctx}: not accepted before the deadline (server down or its backlog full?)"),
                    );
                }
                Err(e) => last = Error::io(&ctx, &e),
            }
        }
        let sock = sock.ok_or(last)?;
        sock.set_nodelay(true).map_err(|e| Error::io(&ctx, &e))?;
        let mut t = Transport {
            sock,
            tls: None,
            lines: LineBuffer::new(),
            read_timeout: None,
            write_timeout: None,
            received: false,
            head: Vec::new(),
        };
        if let Some(setup) = tls {
            t.handshake(host, setup, deadline)?;
        }
        Ok(t)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Whether this is a TLS stream.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn set_read_deadline(&mut self, deadline: Instant, what: &dyn Display) -> Result<()> {
        let left = remaining(deadline, what)?;
        if !timeout_fits(self.read_timeout, left) {
            let t = socket_timeout(left);
            self.sock
                .set_read_timeout(Some(t))
                .map_err(|e| Error::io(&format!("{what}"), &e))?;
            self.read_timeout = Some(t);
        }
        Ok(())
    }

    fn set_write_deadline(&mut self, deadline: Instant, what: &dyn Display) -> Result<()> {
        let left = remaining(deadline, what)?;
        if !timeout_fits(self.write_timeout, left) {
            let t = socket_timeout(left);
            self.sock
                .set_write_timeout(Some(t))
                .map_err(|e| Error::io(&format!("{what}"), &e))?;
            self.write_timeout = Some(t);
        }
        Ok(())
    }

    /// Write all of `bytes` to the socket before `deadline`.
    fn write_raw(&mut self, mut bytes: &[u8], deadline: Instant, what: &dyn Display) -> Result<()> {
        while !bytes.is_empty() {
            self.set_write_deadline(deadline, what)?;
            match self.sock.write(bytes) {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{what}: write: connection closed"),
                    ));
                }
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                Err(e) => return Err(Error::io(&format!("{what}: write"), &e)),
            }
        }
        Ok(())
    }

    /// Send what rustls has queued (handshake records, alerts, data).
    fn flush_tls(&mut self, deadline: Instant, what: &dyn Display) -> Result<()> {
        let mut out = Vec::new();
        if let Some(conn) = self.tls.as_mut() {
            while conn.wants_write() {
                conn.write_tls(&mut out)
                    .map_err(|e| Error::io(&format!("{what}: TLS write"), &e))?;
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            self.write_raw(&out, deadline, what)
        }
    }

    /// Write a whole frame before `deadline`.
    pub(crate) fn send(&mut self, frame: &[u8], deadline: Instant, what: &dyn Display) -> Result<()> {
        match self.tls.as_mut() {
            None => self.write_raw(frame, deadline, what),
            Some(conn) => {
                conn.writer()
                    .write_all(frame)
                    .map_err(|e| Error::io(&format!("{what}: TLS write"), &e))?;
                self.flush_tls(deadline, what)
            }
        }
    }

    /// Read once from the socket into `lines` (plain) or into rustls
    /// (TLS), waiting at most until `deadline`. `Ok(false)` at EOF;
    /// `Ok(true)` when bytes arrived or the wait should simply be retried.
    fn read_some(&mut self, deadline: Instant, what: &dyn Display) -> Result<bool> {
        self.set_read_deadline(deadline, what)?;
        let sock = &mut self.sock;
        let r = match self.tls.as_mut() {
            None => self.lines.fill(READ_ROOM, |room| sock.read(room)),
            Some(conn) if conn.is_handshaking() => conn.read_tls(&mut Recording {
                sock,
                head: &mut self.head,
            }),
            Some(conn) => conn.read_tls(sock),
        };
        match r {
            Ok(0) => Ok(false),
            Ok(_) => {
                self.received = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => Ok(true),
            Err(e) => Err(Error::io(&format!("{what}: read"), &e)),
        }
    }

    /// Decrypt what rustls has buffered into `lines`. `Ok(false)` when the
    /// server closed the TLS session.
    fn drain_tls(&mut self, what: &dyn Display) -> Result<bool> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(true);
        };
        conn.process_new_packets()
            .map_err(|e| Error::new(ErrorKind::Tls, format!("{what}: {e}")))?;
        loop {
            match self.lines.fill(READ_ROOM, |room| conn.reader().read(room)) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(Error::io(&format!("{what}: TLS read"), &e)),
            }
        }
    }

    /// The next reply line (at most [`MAX_REPLY_LINE_BYTES`]), read before
    /// `deadline`. EOF, an over-long or non-UTF-8 line are errors; after
    /// any error the stream is out of sync and must be dropped.
    pub(crate) fn read_line(&mut self, deadline: Instant, what: &dyn Display) -> Result<String> {
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
                Err(LineError::NotUtf8) => return Err(self.not_utf8(what)),
            }
            let open = self.read_some(deadline, what)? && self.drain_tls(what)?;
            if !open {
                return Err(self.closed(what));
            }
        }
    }

    /// The error for a server that closed the stream.
    fn closed(&self, what: &dyn Display) -> Error {
        let hint = if self.tls.is_none() && !self.received {
            " before any reply (a TLS-only dflockd closes plaintext connections like this: \
             does the server need TLS?)"
        } else {
            ""
        };
        Error::new(
            ErrorKind::Io,
            format!("{what}: server closed the connection{hint}"),
        )
    }

    /// The error for a reply that is not UTF-8; a TLS record arriving on
    /// a plaintext connection is named as such.
    fn not_utf8(&self, what: &dyn Display) -> Error {
        let tls_record = self.tls.is_none() && looks_like_tls_record(self.lines.pending_bytes());
        let msg = if tls_record {
            format!("{what}: the server answered with TLS; configure TLS for it")
        } else {
            format!("{what}: reply is not UTF-8")
        };
        Error::new(ErrorKind::Protocol, msg)
    }

    /// The TLS handshake, bounded by `deadline`.
    fn handshake(&mut self, host: &str, setup: &TlsSetup, deadline: Instant) -> Result<()> {
        let ctx = format!("TLS handshake with {host}");
        let name = setup.server_name(host)?;
        let conn = rustls::ClientConnection::new(Arc::clone(&setup.config), name)
            .map_err(|e| Error::new(ErrorKind::Tls, format!("{ctx}: {e}")))?;
        self.tls = Some(Box::new(conn));
        while self.tls.as_ref().is_some_and(|c| c.is_handshaking()) {
            self.flush_tls(deadline, &ctx)?;
            if !self.tls.as_ref().is_some_and(|c| c.is_handshaking()) {
                break;
            }
            let open = match self.read_some(deadline, &ctx) {
                Ok(open) => open,
                Err(e) if e.kind() == ErrorKind::Deadline && !self.received => {
                    return Err(Error::new(
                        ErrorKind::Deadline,
                        format!(
                            "{ctx}: no TLS reply before the deadline (a plaintext dflockd waits silently \
                             for a request line: is TLS enabled on the server?)"
                        ),
                    ));
                }
                Err(e) => return Err(e),
            };
            if !open {
                return Err(Error::new(
                    ErrorKind::Tls,
                    format!("{ctx}: server closed the connection during the handshake"),
                ));
            }
            let processed = self.tls.as_mut().map(|c| c.process_new_packets());
            if let Some(Err(e)) = processed {
                // Tell the server why (best effort), then say it.
                let _ = self.flush_tls(deadline, &ctx);
                let plaintext = matches!(e, rustls::Error::InvalidMessage(_))
                    && !self.head.is_empty()
                    && !looks_like_tls_record(&self.head);
                let msg = if plaintext {
                    format!("{ctx}: the server answered in plaintext; it does not serve TLS")
                } else {
                    format!("{ctx}: {e}")
                };
                return Err(Error::new(ErrorKind::Tls, msg));
            }
        }
        self.head = Vec::new();
        self.flush_tls(deadline, &ctx)
    }

    /// Whether an idle stream still looks usable: no buffered bytes, and a
    /// non-blocking peek finds neither EOF nor unexpected bytes (a server
    /// that timed the connection out sends `error` and closes; a TLS peer
    /// sends close_notify).
    pub(crate) fn looks_alive(&self) -> bool {
        if self.lines.pending() > 0 {
            return false;
        }
        if let Some(conn) = &self.tls {
            if conn.wants_write() {
                return false;
            }
        }
        let mut byte = 0u8;
        // SAFETY: the fd is owned by self.sock and open; the buffer is one
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

/// A TLS record header: content type 20–23 (alert 21, handshake 22) and
/// major version 3.
fn looks_like_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, ..])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_socket_timeout_never_fits() {
        // The bug this guards: a socket whose timeout was never set blocks
        // forever, so "unset" must never pass for "short enough".
        assert!(!timeout_fits(None, Duration::from_secs(3600)));
        assert!(timeout_fits(Some(Duration::from_secs(1)), Duration::from_secs(2)));
        assert!(!timeout_fits(
            Some(Duration::from_secs(3)),
            Duration::from_secs(2)
        ));
    }

    #[test]
    fn tls_records_are_recognised() {
        assert!(looks_like_tls_record(&[0x15, 0x03, 0x03, 0x00, 0x02]));
        assert!(looks_like_tls_record(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls_record(b"error\n"));
        assert!(!looks_like_tls_record(b""));
    }
}
