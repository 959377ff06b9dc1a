//! One byte stream to a server: TCP (with `TCP_NODELAY`) or rustls TLS over
//! TCP. Every operation takes an absolute deadline and never outlives it:
//! name resolution, connect, the TLS handshake, each write and each read
//! (the socket's `SO_SNDTIMEO`/`SO_RCVTIMEO` are kept at or below the time
//! left, and every loop checks the clock). Reply lines are read with the
//! 1 MiB bound of the protocol.
//!
//! The bytes themselves (TLS, framing, buffers) live in the sans-I/O
//! `Wire` (`wire.rs`), shared with the event engine; this module is its blocking
//! driver. TLS is driven record by record rather than through
//! `rustls::StreamOwned`, whose internal loops would wait once per record
//! and so could overshoot a deadline against a server that trickles bytes.
//!
//! Everything above this module sees only `Transport::send`,
//! `Transport::read_line` and the raw fd (for `shutdown` from another
//! thread and the liveness peek of the pool).

mod tls;
mod wire;

use std::fmt::Display;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use tls::TlsOptions;
pub(crate) use tls::TlsSetup;
pub(crate) use wire::{Received, Wire};

use crate::{Error, ErrorKind, Result};

/// A connected, handshaken socket and its [`Wire`].
pub(crate) struct Transport {
    sock: TcpStream,
    wire: Wire,
    /// The socket's current SO_RCVTIMEO / SO_SNDTIMEO (`None`: not set
    /// yet, i.e. infinite), so the common case (a budget like the
    /// previous request's) costs no `setsockopt`.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// When a non-blocking read last found the socket's buffer empty (it
    /// returned less than it was offered, or nothing).
    emptied_at: Option<Instant>,
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
/// gives up; its answer is then dropped). The thread belongs to the
/// current runtime generation, whose last free joins it within a bound
/// (`runtime::spawn_resolver`).
fn resolve(host: &str, port: u16, deadline: Instant, ctx: &str) -> Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let cannot = |e: &dyn Display| Error::new(ErrorKind::Io, format!("{ctx}: cannot resolve: {e}"));
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    crate::runtime::spawn_resolver(Box::new(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
    }))
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
        let wire = match tls {
            None => Wire::plain(),
            Some(setup) => Wire::tls(host, setup)?,
        };
        let mut t = Transport {
            sock,
            wire,
            read_timeout: None,
            write_timeout: None,
            emptied_at: None,
        };
        if t.wire.is_tls() {
            t.handshake(host, deadline)?;
        }
        Ok(t)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// For the event engine: a transport over a socket whose non-blocking
    /// connect completed (see [`connect_started`]). The socket is put back in
    /// blocking mode (the blocking path relies on socket timeouts; the
    /// engine passes `MSG_DONTWAIT` on every call). A TLS session still has
    /// to be driven with [`Transport::handshake_step`].
    pub(crate) fn from_connected(sock: TcpStream, host: &str, tls: Option<&TlsSetup>) -> Result<Transport> {
        let ctx = format!("connect to {host}");
        sock.set_nonblocking(false).map_err(|e| Error::io(&ctx, &e))?;
        sock.set_nodelay(true).map_err(|e| Error::io(&ctx, &e))?;
        let wire = match tls {
            None => Wire::plain(),
            Some(setup) => Wire::tls(host, setup)?,
        };
        Ok(Transport {
            sock,
            wire,
            read_timeout: None,
            write_timeout: None,
            emptied_at: None,
        })
    }

    /// For the event engine: drive the TLS handshake as far as the socket
    /// allows without waiting. `Ok(None)` when done (or plaintext), else
    /// what to wait for: `Some(true)` readable, `Some(false)` writable.
    pub(crate) fn handshake_step(&mut self, host: &str) -> Result<Option<bool>> {
        let ctx = format!("TLS handshake with {host}");
        let mut sock = NonBlocking(self.raw_fd());
        loop {
            while self.wire.wants_write() {
                if !self.wire.write_to(&mut sock, &ctx)? {
                    return Ok(Some(false));
                }
            }
            if !self.wire.is_handshaking() {
                return Ok(None);
            }
            match self.wire.read_from(&mut sock, &ctx)? {
                Received::Bytes => {}
                Received::Nothing => return Ok(Some(true)),
                Received::Closed => return Err(self.wire.closed(&ctx)),
            }
        }
    }

    /// The error for a TLS handshake cut short by its deadline (says
    /// whether the peer looks like a plaintext server).
    pub(crate) fn handshake_deadline(&self, host: &str) -> Error {
        self.wire
            .handshake_deadline(&format!("TLS handshake with {host}"))
    }

    /// Whether this is a TLS stream.
    pub(crate) fn is_tls(&self) -> bool {
        self.wire.is_tls()
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

    /// Write everything the wire has queued before `deadline`.
    fn flush(&mut self, deadline: Instant, what: &dyn Display) -> Result<()> {
        while self.wire.wants_write() {
            self.set_write_deadline(deadline, what)?;
            self.wire.write_to(&mut self.sock, what)?;
        }
        Ok(())
    }

    /// Write a whole frame before `deadline`. A plaintext frame is written
    /// from `frame` itself; only a rest the socket did not take is queued.
    pub(crate) fn send(&mut self, frame: &[u8], deadline: Instant, what: &dyn Display) -> Result<()> {
        self.set_write_deadline(deadline, what)?;
        if !self.wire.write_direct(frame, &mut self.sock, what)? {
            self.wire.queue(frame, what)?;
        }
        self.flush(deadline, what)
    }

    /// Without waiting (the event engine): queue `frame` and write what
    /// the socket takes now. `Ok(true)` when all of it went out; `Ok(false)`
    /// when some is left (the socket buffer is full: the stream can no
    /// longer be used, since a later write would interleave).
    pub(crate) fn try_send(&mut self, frame: &[u8], what: &dyn Display) -> Result<bool> {
        self.wire.queue(frame, what)?;
        self.try_flush(what)
    }

    /// Queue `frame` without writing it (one of a batch: the frames queued
    /// together go out in one write, [`Transport::try_flush`]).
    pub(crate) fn queue(&mut self, frame: &[u8], what: &dyn Display) -> Result<()> {
        self.wire.queue(frame, what)
    }

    /// Without waiting: write what the socket takes of the queued bytes.
    /// `Ok(false)`: some are left (write again once it is writable; a
    /// blocking send writes them first, so the order holds).
    pub(crate) fn try_flush(&mut self, what: &dyn Display) -> Result<bool> {
        let mut sock = NonBlocking(self.raw_fd());
        while self.wire.wants_write() {
            if !self.wire.write_to(&mut sock, what)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether queued bytes wait to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.wire.wants_write()
    }

    /// Without waiting (the event engine): the next reply line if it has
    /// arrived, reading what the socket holds now.
    pub(crate) fn try_read_line(&mut self, what: &dyn Display) -> Result<Option<String>> {
        let mut sock = Noting {
            inner: NonBlocking(self.raw_fd()),
            emptied: false,
        };
        loop {
            if let Some(line) = self.wire.next_line(what)? {
                self.note_emptied(sock.emptied);
                return Ok(Some(line));
            }
            match self.wire.read_from(&mut sock, what)? {
                Received::Bytes => {}
                Received::Nothing => {
                    self.note_emptied(true);
                    return Ok(None);
                }
                Received::Closed => return Err(self.wire.closed(what)),
            }
        }
    }

    fn note_emptied(&mut self, emptied: bool) {
        if emptied {
            self.emptied_at = Some(Instant::now());
        }
    }

    /// Nothing is buffered and a read found the socket empty less than
    /// `within` ago: a line that arrived while the connection sat idle
    /// cannot be waiting (what a read now would look for).
    pub(crate) fn read_dry_within(&self, within: Duration) -> bool {
        self.wire.pending_input() == 0 && self.emptied_at.is_some_and(|at| at.elapsed() < within)
    }

    /// Wait for bytes (at most until `deadline`) and process them.
    /// `Ok(false)` at EOF.
    fn receive(&mut self, deadline: Instant, what: &dyn Display) -> Result<bool> {
        self.set_read_deadline(deadline, what)?;
        Ok(self.wire.read_from(&mut self.sock, what)? != Received::Closed)
    }

    /// The next reply line (at most 1 MiB), read before `deadline`. EOF,
    /// an over-long or non-UTF-8 line are errors; after any error the
    /// stream is out of sync and must be dropped.
    pub(crate) fn read_line(&mut self, deadline: Instant, what: &dyn Display) -> Result<String> {
        loop {
            if let Some(line) = self.wire.next_line(what)? {
                return Ok(line);
            }
            if !self.receive(deadline, what)? {
                return Err(self.wire.closed(what));
            }
        }
    }

    /// The TLS handshake, bounded by `deadline`.
    fn handshake(&mut self, host: &str, deadline: Instant) -> Result<()> {
        let ctx = format!("TLS handshake with {host}");
        while self.wire.is_handshaking() {
            let flushed = self.flush(deadline, &ctx);
            let received = flushed.and_then(|()| {
                if self.wire.is_handshaking() {
                    self.receive(deadline, &ctx)
                } else {
                    Ok(true)
                }
            });
            match received {
                Ok(true) => {}
                Ok(false) => return Err(self.wire.closed(&ctx)),
                Err(e) if e.kind() == ErrorKind::Deadline => return Err(self.wire.handshake_deadline(&ctx)),
                Err(e) => {
                    if e.kind() == ErrorKind::Tls {
                        // Tell the server why (best effort).
                        let _ = self.flush(deadline, &ctx);
                    }
                    return Err(e);
                }
            }
        }
        self.flush(deadline, &ctx)
    }

    /// Bytes received but not yet returned as lines.
    pub(crate) fn pending_input(&self) -> usize {
        self.wire.pending_input()
    }

    /// Whether an idle stream still looks usable: no buffered bytes, and
    /// (with `peek`) a non-blocking peek finds neither EOF nor unexpected
    /// bytes (a server that timed the connection out sends `error` and
    /// closes; a TLS peer sends close_notify). Without `peek` the caller
    /// learns of a close otherwise (the reactor's hang-up watch).
    pub(crate) fn looks_alive(&self, peek: bool) -> bool {
        if self.wire.pending_input() > 0 || self.wire.wants_write() {
            return false;
        }
        if !peek {
            return true;
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

/// For the event engine: start a non-blocking TCP connect to `addr`. The
/// socket becomes writable when the connect completes or fails; then
/// [`connect_result`] tells which.
pub(crate) fn connect_started(addr: &SocketAddr) -> io::Result<TcpStream> {
    let (family, storage, len) = sockaddr(addr);
    // SAFETY: plain syscall; the fd is owned by the TcpStream below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let sock = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(sock)
}

/// Whether the non-blocking connect of `sock` succeeded (`SO_ERROR`).
pub(crate) fn connect_result(sock: &TcpStream) -> io::Result<()> {
    match sock.take_error()? {
        Some(e) => Err(e),
        None => sock.peer_addr().map(drop),
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    (family, storage, len as libc::socklen_t)
}

/// A socket used without blocking whatever its mode: `MSG_DONTWAIT` on
/// each call, so the event engine can drive a connection that the blocking
/// path uses with socket timeouts (no `fcntl` back and forth).
struct NonBlocking(RawFd);

/// A reader that notes whether its last read found the source's buffer
/// empty (it returned less than it was offered, or would block).
struct Noting<R> {
    inner: R,
    emptied: bool,
}

impl<R: io::Read> io::Read for Noting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        self.emptied = match &r {
            Ok(n) => *n < buf.len(),
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        r
    }
}

impl io::Read for NonBlocking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the fd is open (owned by the Transport borrowed for this
        // call); `buf` is valid for `buf.len()` writable bytes.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl io::Write for NonBlocking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: as above; `buf` is valid for `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
}
