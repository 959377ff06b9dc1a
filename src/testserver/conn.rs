//! The per-connection loop: read a three-line frame, answer it, repeat.
//!
//! One thread per connection with blocking I/O. A blocking `l`/`w` waits in
//! `poll(2)` on its socket and its [`Waker`], so it notices at once both a
//! grant (woken by whoever granted it) and the client going away (its
//! waiter is then dropped), without spinning.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Shared;
use super::line::Behaviour;
use super::table::{ConnId, Enqueue, Grant, Start, WaiterId};
use super::tls::Transport;
use super::wake::{self, Waker};
use crate::protocol::{
    LineBuffer, LineError, MAX_AUTH_LINE_BYTES, MAX_LINE_BYTES, Reply, Request, Stats, Status,
};

/// How long the server waits after `error_auth` before closing (as the
/// Go server does, to slow down guessing).
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(100);
/// A stuck client cannot hold a reply (and so `stop()`) for longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a blocked request buffers from a client that keeps sending
/// before the connection is closed.
const MAX_BUFFERED_WHILE_BLOCKED: usize = MAX_AUTH_LINE_BYTES + 4 * MAX_LINE_BYTES;

/// The server's handle on one connection.
pub(super) struct ConnCtl {
    pub id: ConnId,
    fd: RawFd,
    closed: AtomicBool,
    pub waker: Waker,
}

impl ConnCtl {
    pub fn new(id: ConnId, stream: &TcpStream) -> io::Result<ConnCtl> {
        Ok(ConnCtl {
            id,
            fd: stream.as_raw_fd(),
            closed: AtomicBool::new(false),
            waker: Waker::new()?,
        })
    }

    /// Close the connection from another thread. Call only while the
    /// connection is registered (under the registry lock): the connection
    /// thread deregisters before it closes the descriptor, so `fd` is
    /// still this connection's socket.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on a descriptor that is open (see above).
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        self.waker.wake();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Write `raw` to the socket from another thread, without waiting
    /// (a test fault: unsolicited bytes). Same registration rule as
    /// [`ConnCtl::close`].
    pub fn inject(&self, raw: &[u8]) {
        // SAFETY: send(2) from a live buffer on a descriptor that is open
        // (see `close`); MSG_NOSIGNAL: a closed peer must not kill the test.
        unsafe {
            libc::send(
                self.fd,
                raw.as_ptr().cast(),
                raw.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    }
}

/// Splits the byte stream into three-line frames. A line that is not UTF-8
/// is kept as `None` so the frame stays aligned and gets `error`.
///
/// An over-long line is answered as the 2.x server does (transcripts and
/// docs/protocol.md "Framing"): at once when its `\n` has arrived; with
/// no `\n` yet, only when the `\n` comes (at once) or the read timeout
/// passes. Meanwhile its bytes are discarded, so nothing is buffered
/// without bound. The 1.10 transcripts do not show the no-`\n` case, so
/// both lines behave the same here.
struct Framer {
    buf: LineBuffer,
    lines: Vec<Option<String>>,
    /// Longest `auth` argument line (the server line's).
    max_auth_line: usize,
    /// An over-long line with no `\n` yet: bytes are dropped until one.
    discarding: bool,
}

type Frame = [Option<String>; 3];

impl Framer {
    /// The next complete frame; `Err` when a line is over its limit (the
    /// stream can no longer be trusted).
    fn next(&mut self) -> Result<Option<Frame>, ()> {
        while self.lines.len() < 3 {
            let is_auth_arg = self.lines.len() == 2 && self.lines[0].as_deref() == Some("auth");
            let max = if is_auth_arg {
                self.max_auth_line
            } else {
                MAX_LINE_BYTES
            };
            let pending = self.buf.pending();
            match self.buf.next_line(max) {
                Ok(Some(line)) => self.lines.push(Some(line)),
                Ok(None) => return Ok(None),
                Err(LineError::NotUtf8) => self.lines.push(None),
                // The buffer consumed a complete over-long line: answer now.
                Err(LineError::TooLong) if self.buf.pending() < pending => return Err(()),
                Err(LineError::TooLong) => {
                    // No `\n` yet: every buffered byte belongs to this line.
                    self.buf = LineBuffer::default();
                    self.discarding = true;
                    return Ok(None);
                }
            }
        }
        let mut it = self.lines.drain(..);
        Ok(Some([
            it.next().flatten(),
            it.next().flatten(),
            it.next().flatten(),
        ]))
    }

    /// Take bytes read from the client. `Err` when they end an over-long
    /// line that was being discarded (answer it at once).
    fn feed(&mut self, data: &[u8]) -> Result<(), ()> {
        if !self.discarding {
            self.buf.extend(data);
            return Ok(());
        }
        if data.contains(&b'\n') { Err(()) } else { Ok(()) }
    }
}

enum Incoming {
    Frame(Frame),
    TooLong,
    IdleTimeout,
    Gone,
}

/// What to do after answering.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Close,
}

struct Conn {
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    io: Transport,
    framer: Framer,
    authed: bool,
    behaviour: Behaviour,
    /// This connection sent its `stable-ref` (a second one is refused).
    has_stable_ref: bool,
}

/// Serve one accepted connection until it closes, then release what it
/// held and deregister it.
pub(super) fn serve(shared: Arc<Shared>, ctl: Arc<ConnCtl>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_read_timeout(Some(shared.opts.read_timeout));
    let io = match &shared.tls {
        None => Some(Transport::Plain(stream)),
        Some(config) => Transport::accept_tls(config.clone(), stream).ok(),
    };
    if let Some(io) = io {
        let mut conn = Conn {
            authed: shared.opts.auth_token.is_none(),
            shared: shared.clone(),
            ctl: ctl.clone(),
            io,
            framer: Framer {
                buf: LineBuffer::default(),
                lines: Vec::new(),
                max_auth_line: shared.behaviour.max_auth_line,
                discarding: false,
            },
            behaviour: shared.behaviour,
            has_stable_ref: false,
        };
        conn.run();
        if shared.severed() {
            // A killed or drained cluster node: no disconnect cleanup.
            let ttl = shared.node.as_ref().and_then(|n| n.orphan_ttl());
            shared.with_table(|t| t.sever_connection(ctl.id, ttl, Instant::now()));
        } else {
            let release = shared.opts.auto_release_on_disconnect;
            shared.with_table(|t| t.drop_connection(ctl.id, release, Instant::now()));
        }
        shared.deregister(ctl.id);
        let _ = conn.io.tcp().shutdown(Shutdown::Both);
    } else {
        shared.deregister(ctl.id);
    }
}

impl Conn {
    fn cancelled(&self) -> bool {
        self.ctl.is_closed() || self.shared.stopping()
    }

    fn run(&mut self) {
        loop {
            let flow = match self.next_frame() {
                Incoming::Frame(frame) => self.handle(frame),
                Incoming::TooLong if !self.authed && self.behaviour.too_long_before_auth_is_auth_failure => {
                    self.auth_failed()
                }
                Incoming::TooLong | Incoming::IdleTimeout => {
                    let _ = self.send(&Reply::Status(Status::Error));
                    Flow::Close
                }
                Incoming::Gone => Flow::Close,
            };
            if flow == Flow::Close || self.cancelled() {
                return;
            }
        }
    }

    /// Read until a whole frame is buffered, the idle timeout passes (not
    /// counted while the server is paused) or the peer goes away. An
    /// over-long line without `\n` is answered when its `\n` arrives or
    /// at that same timeout, whichever comes first.
    fn next_frame(&mut self) -> Incoming {
        let mut deadline = Instant::now() + self.shared.opts.read_timeout;
        let mut buf = [0u8; 4096];
        loop {
            match self.framer.next() {
                Ok(Some(frame)) => return Incoming::Frame(frame),
                Err(()) => return Incoming::TooLong,
                Ok(None) => {}
            }
            if self.cancelled() {
                return Incoming::Gone;
            }
            let now = Instant::now();
            if now >= deadline {
                if !self.shared.faults.is_paused() {
                    return if self.framer.discarding {
                        Incoming::TooLong
                    } else {
                        Incoming::IdleTimeout
                    };
                }
                let (shared, ctl) = (&self.shared, &self.ctl);
                shared
                    .faults
                    .wait_unpaused(&|| ctl.is_closed() || shared.stopping());
                deadline = Instant::now() + self.shared.opts.read_timeout;
                continue;
            }
            let _ = self.io.tcp().set_read_timeout(Some(deadline - now));
            match self.io.read(&mut buf) {
                Ok(0) => return Incoming::Gone,
                Ok(n) => {
                    if self.framer.feed(&buf[..n]).is_err() {
                        return Incoming::TooLong;
                    }
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Incoming::Gone,
            }
        }
    }

    fn send(&mut self, reply: &Reply) -> io::Result<()> {
        let mut out = Vec::with_capacity(48);
        reply.encode(&mut out);
        let (shared, ctl) = (&self.shared, &self.ctl);
        if let Some(raw) = shared
            .faults
            .before_reply(&|| ctl.is_closed() || shared.stopping())
        {
            out = raw;
        }
        if self.cancelled() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        self.io.write_all(&out)?;
        self.io.flush()
    }

    /// Send and keep going, or close if the write failed.
    fn reply(&mut self, reply: Reply) -> Flow {
        match self.send(&reply) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    fn status(&mut self, s: Status) -> Flow {
        self.reply(Reply::Status(s))
    }

    fn handle(&mut self, frame: Frame) -> Flow {
        if self.shared.draining() && self.behaviour.error_draining {
            let _ = self.send(&Reply::Status(Status::ErrorDraining));
            return Flow::Close;
        }
        let [Some(cmd), Some(key), Some(arg)] = frame else {
            return if self.authed {
                self.status(Status::Error)
            } else {
                self.auth_failed()
            };
        };
        if !self.authed {
            return self.authenticate(&cmd, &arg);
        }
        let Ok(req) = Request::parse(&cmd, &key, &arg) else {
            return self.status(Status::Error);
        };
        if self.shared.node.is_some() {
            // A paused cluster node does nothing (as a stopped process),
            // so it may find itself a follower when it resumes.
            let (shared, ctl) = (&self.shared, &self.ctl);
            shared
                .faults
                .wait_unpaused(&|| ctl.is_closed() || shared.stopping());
            if self.cancelled() {
                return Flow::Close;
            }
        }
        if req.command().is_mutating() {
            if let Some(leader) = self.shared.not_leader() {
                return self.reply(Reply::NotLeader(leader.as_deref()));
            }
            if let Some(node) = &self.shared.node {
                node.append();
            }
        }
        let now = Instant::now();
        let default_ttl = self.shared.opts.default_lease_ttl_s;
        let ttl = move |lease: Option<u64>| Duration::from_secs(lease.unwrap_or(default_ttl));
        let id = self.ctl.id;
        match req {
            // Already authenticated, or the server has no token.
            Request::Auth { .. } => self.status(Status::Error),
            Request::Ping if self.behaviour.ping_ok => self.reply(Reply::Ok),
            Request::Ping => self.status(Status::Error),
            Request::Stats => {
                let conns = self.shared.connection_count();
                let mut stats: Stats = self.shared.with_table(|t| t.stats(conns, now));
                stats.cluster = self.shared.node.as_ref().map(|n| Box::new(n.info()));
                self.reply(Reply::Stats(&stats))
            }
            // Past the leader check: the leader answers once its no-op
            // applied (at once here); single-node 2.x servers answer at once.
            Request::Barrier if self.shared.node.is_some() || self.behaviour.barrier_ok => {
                self.reply(Reply::Ok)
            }
            Request::Barrier => self.status(Status::Error),
            // Any cluster node; once per connection. Single-node servers
            // have no such command (nothing observed says otherwise).
            Request::StableRef { reference } if self.shared.node.is_some() && !self.has_stable_ref => {
                self.has_stable_ref = true;
                self.shared.with_table(|t| t.set_stable_ref(id, reference));
                self.reply(Reply::Ok)
            }
            Request::StableRef { .. } => self.status(Status::Error),
            Request::Acquire {
                kind,
                key,
                timeout_s,
                limit,
                lease_s,
            } => {
                let start = self
                    .shared
                    .with_table(|t| t.acquire(kind, key, limit.unwrap_or(1), id, ttl(lease_s), now));
                self.finish(start, timeout_s)
            }
            Request::Wait { kind, key, timeout_s } => {
                let start = self.shared.with_table(|t| t.wait(kind, key, id, now));
                self.finish(start, timeout_s)
            }
            Request::Release { kind, key, token } => {
                if self.shared.with_table(|t| t.release(kind, key, token, now)) {
                    self.reply(Reply::Ok)
                } else {
                    self.status(Status::Error)
                }
            }
            Request::Renew {
                kind,
                key,
                token,
                lease_s,
            } => match self
                .shared
                .with_table(|t| t.renew(kind, key, token, id, ttl(lease_s), now))
            {
                Some(lease_s) => self.reply(Reply::Renewed { lease_s }),
                None => self.status(Status::Error),
            },
            Request::Enqueue {
                kind,
                key,
                limit,
                lease_s,
            } => match self
                .shared
                .with_table(|t| t.enqueue(kind, key, limit.unwrap_or(1), id, ttl(lease_s), now))
            {
                Enqueue::Acquired(Grant { token, lease_s }) => self.reply(Reply::Acquired { token, lease_s }),
                Enqueue::Queued => self.reply(Reply::Queued),
                Enqueue::Refused(s) => self.status(s),
            },
        }
    }

    /// The first request when the server wants `auth`.
    fn authenticate(&mut self, cmd: &str, arg: &str) -> Flow {
        let expected = self.shared.opts.auth_token.as_deref().unwrap_or_default();
        if cmd == "auth" && constant_time_eq(arg.trim().as_bytes(), expected.as_bytes()) {
            self.authed = true;
            return self.reply(Reply::Ok);
        }
        self.auth_failed()
    }

    fn auth_failed(&mut self) -> Flow {
        if self.send(&Reply::Status(Status::ErrorAuth)).is_ok() {
            std::thread::sleep(AUTH_FAILURE_DELAY);
        }
        Flow::Close
    }

    /// Answer an acquire or wait, blocking for a queued one.
    fn finish(&mut self, start: Start, timeout_s: u64) -> Flow {
        match start {
            Start::Granted(Grant { token, lease_s }) => self.reply(Reply::Granted { token, lease_s }),
            Start::Refused(s) => self.status(s),
            Start::Blocked(waiter) => match self.block(waiter, timeout_s) {
                Some(Ok(Grant { token, lease_s })) => self.reply(Reply::Granted { token, lease_s }),
                Some(Err(s)) => self.status(s),
                None => Flow::Close,
            },
        }
    }

    /// Wait for a queued request's grant until its timeout. `None` when
    /// the client went away (its waiter is dropped with the connection).
    fn block(&mut self, waiter: WaiterId, timeout_s: u64) -> Option<Result<Grant, Status>> {
        let deadline = Instant::now().checked_add(Duration::from_secs(timeout_s));
        self.shared.blocked.fetch_add(1, Ordering::SeqCst);
        let outcome = self.block_until(waiter, deadline);
        self.shared.blocked.fetch_sub(1, Ordering::SeqCst);
        if outcome.is_none() {
            // The client left: a line that keeps its waiter (1.10) does so
            // until the request's timeout.
            let release = self.shared.opts.auto_release_on_disconnect;
            self.shared
                .with_table(|t| t.orphan_wait(waiter, deadline, release, Instant::now()));
        }
        outcome
    }

    fn block_until(&mut self, waiter: WaiterId, deadline: Option<Instant>) -> Option<Result<Grant, Status>> {
        let mut buf = [0u8; 4096];
        loop {
            let now = Instant::now();
            if let Some(result) = self.shared.with_table(|t| t.take_grant(waiter, now)) {
                return Some(result);
            }
            if self.cancelled() {
                return None;
            }
            if self.shared.draining() {
                // Shutdown cuts off waiting requests with `error`. A
                // drained cluster node's waiter stays queued (orphaned
                // when its connection closes).
                if !self.shared.severed() {
                    self.shared.with_table(|t| t.abandon_wait(waiter, now));
                }
                return Some(Err(Status::Error));
            }
            if deadline.is_some_and(|d| now >= d) {
                return Some(self.shared.with_table(|t| t.cancel_wait(waiter, now)));
            }
            if self.framer.buf.pending() >= MAX_BUFFERED_WHILE_BLOCKED {
                // A flood of pipelined bytes behind a blocked request: we
                // must not buffer it without bound, and must keep reading
                // to see the client leave (its FIN queues behind the
                // data), so give up on this client.
                return None;
            }
            let fd = self.io.tcp().as_raw_fd();
            let ready = wake::wait(fd, true, &self.ctl.waker, deadline.map(|d| d - now));
            if ready.hangup {
                return None;
            }
            if ready.readable {
                // Buffer what a pipelining client sent; EOF means it left.
                let _ = self.io.tcp().set_read_timeout(Some(Duration::from_millis(200)));
                match self.io.read(&mut buf) {
                    Ok(0) => return None,
                    Ok(n) => self.framer.buf.extend(&buf[..n]),
                    Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Compare secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
