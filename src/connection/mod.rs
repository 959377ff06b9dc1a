//! One authenticated connection to one server, with one method per
//! command, and its two drivers over one `Session` (the FIFO of
//! outstanding requests, src/session.rs): `Connection::call` on the
//! caller's thread (encode, write, read lines against a deadline until its
//! reply, parse strictly, map refusals to [`Error`]s), and `start` /
//! `poll_reply` / `abandon_reply` for the reactor (never blocking, in
//! `evented.rs`); what makes it a shared home is counted in `homes.rs`. Both
//! match every reply line to the request at the head of the session, so a
//! reply is never taken for another request's answer. The socket and the
//! session are behind one mutex, so a connection can be shared between
//! threads (a blocking acquire holds it until the server answers).
//!
//! A connection that saw an I/O or protocol error, or a reply with nothing
//! outstanding, is marked broken and refuses further use: the byte stream
//! may be out of sync.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::fork::ForkStamp;
use crate::log::{Level, log};
use crate::metrics::{Metrics, bump};
use crate::protocol::{Command, MAX_SECONDS, Outcome, Refusal, Request, Token, parse_reply};
use crate::session::{Delivery, Session, Waiter};
use crate::sync::lock;
use crate::transport::{TlsOptions, TlsSetup, Transport, shutdown_fd};
use crate::{Error, ErrorKind, Result};

mod commands;
mod evented;
mod homes;

use evented::{HeldIo, Posted};
pub(crate) use homes::{HomeTicket, Reservation, Sending};

/// A granted lease: the token (release/renew credential, and fence on 2.x)
/// and its length in seconds as the server granted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Release/renew credential; on 2.x its first 16 hex digits are the fence.
    pub token: Token,
    /// Seconds until the lease expires unless renewed.
    pub lease_s: u64,
}

/// The answer to enqueue (`e`/`se`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The key was free: the lease is held now.
    Acquired(Grant),
    /// In the queue; call [`Connection::wait`] on this same connection.
    Queued,
}

/// How to open a connection.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Bound on opening a connection: name resolution, TCP connect, TLS
    /// handshake and `auth` together (default 10 s).
    pub connect_timeout: Duration,
    /// How long the server may take to answer a request, on top of the
    /// time the request itself lets it wait (an acquire's timeout): a hung
    /// or silent server fails the call with [`ErrorKind::Deadline`] after
    /// this, never hangs it (default [`DEFAULT_IO_TIMEOUT`]).
    pub io_timeout: Duration,
    /// Sent with `auth` right after connecting when set.
    pub auth_token: Option<String>,
    /// TLS (verification always on) when set; plaintext TCP otherwise.
    pub tls: Option<TlsOptions>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            auth_token: None,
            tls: None,
        }
    }
}

/// [`ConnectOptions`] with the TLS configuration already built, shared by
/// every connection a client opens.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    auth_token: Option<String>,
    tls: Option<TlsSetup>,
    /// The owning client's counters (none for a bare low-level connection).
    metrics: Option<Arc<Metrics>>,
    /// Cluster mode: every connection names its session with a
    /// `stable-ref` after `auth`.
    stable_refs: bool,
}

impl Connector {
    pub(crate) fn new(opts: &ConnectOptions) -> Result<Connector> {
        if opts.connect_timeout.is_zero() || opts.io_timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "connect_timeout and io_timeout must be > 0",
            ));
        }
        if let Some(secret) = &opts.auth_token {
            // Reject a bad secret before any I/O.
            Request::Auth { secret }.encode(&mut Vec::new())?;
        }
        Ok(Connector {
            connect_timeout: opts.connect_timeout,
            io_timeout: opts.io_timeout,
            auth_token: opts.auth_token.clone(),
            tls: opts.tls.as_ref().map(TlsSetup::new).transpose()?,
            metrics: None,
            stable_refs: false,
        })
    }

    /// Count this connector's connections and deadlines in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Connector {
        self.metrics = Some(metrics);
        self
    }

    /// Send a `stable-ref` (a new random one, or the one a waiter's
    /// replacement connection repeats) on every connection (cluster mode).
    pub(crate) fn with_stable_refs(mut self, on: bool) -> Connector {
        self.stable_refs = on;
        self
    }

    /// The `stable-ref` a new connection sends: `reference` (a replaced
    /// connection's), else a new one; `None` unless in cluster mode.
    pub(crate) fn stable_ref_for(&self, reference: Option<&str>) -> Option<String> {
        self.stable_refs
            .then(|| reference.map_or_else(crate::protocol::new_stable_ref, str::to_owned))
    }

    /// Connect, handshake and authenticate within `connect_timeout`, and
    /// before `cap` when given (the caller's overall deadline).
    pub(crate) fn open(&self, host: &str, port: u16, cap: Option<Instant>) -> Result<Connection> {
        self.open_as(host, port, cap, None)
    }

    /// [`open`](Self::open), in cluster mode naming the session
    /// `reference` (a replaced connection's) or a new random ref.
    pub(crate) fn open_as(
        &self,
        host: &str,
        port: u16,
        cap: Option<Instant>,
        reference: Option<&str>,
    ) -> Result<Connection> {
        let deadline = earliest(Instant::now() + self.connect_timeout, cap);
        let transport = match Transport::connect(host, port, deadline, self.tls.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                if e.kind() == ErrorKind::Deadline {
                    if let Some(m) = &self.metrics {
                        bump(&m.deadline_hits);
                    }
                    log!(Level::Warn, "{e}");
                } else {
                    log!(Level::Info, "{e}");
                }
                return Err(e);
            }
        };
        let conn = self.wrap(transport, host, port);
        if let Some(secret) = &self.auth_token {
            conn.call(&Request::Auth { secret }, Some(deadline))?;
        }
        if let Some(reference) = self.stable_ref_for(reference) {
            conn.call(
                &Request::StableRef {
                    reference: &reference,
                },
                Some(deadline),
            )?;
            conn.record_ref(reference);
        }
        Ok(conn)
    }

    /// A connection over a connected (and handshaken) transport, counted
    /// and logged; not yet authenticated (see [`Connector::auth_request`]).
    pub(crate) fn wrap(&self, transport: Transport, host: &str, port: u16) -> Connection {
        if let Some(m) = &self.metrics {
            bump(&m.connections_opened);
            bump(&m.open_connections);
        }
        let tls = if transport.is_tls() { " (TLS)" } else { "" };
        log!(Level::Info, "connected to {host}:{port}{tls}");
        Connection {
            peer: format!("{host}:{port}"),
            metrics: self.metrics.clone(),
            fd: transport.raw_fd(),
            tls: transport.is_tls(),
            io: Mutex::new(Io {
                transport,
                frame: Vec::with_capacity(64),
                session: Session::default(),
                for_reactor: VecDeque::new(),
            }),
            homed: AtomicUsize::new(0),
            nudge: OnceLock::new(),
            outbox: Mutex::new(Vec::new()),
            look_again: AtomicBool::new(false),
            reserved: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registration: AtomicU64::new(0),
            io_timeout: self.io_timeout,
            stamp: ForkStamp::now(),
            stable_ref: std::sync::OnceLock::new(),
        }
    }

    /// The `auth` request a new connection must send first, if any.
    pub(crate) fn auth_request(&self) -> Option<Request<'_>> {
        self.auth_token.as_deref().map(|secret| Request::Auth { secret })
    }

    /// The TLS setup new connections use (`None`: plaintext).
    pub(crate) fn tls(&self) -> Option<&TlsSetup> {
        self.tls.as_ref()
    }
}

struct Io {
    transport: Transport,
    /// Reused encode buffer.
    frame: Vec<u8>,
    /// What was sent and whose each coming reply is.
    session: Session,
    /// Reply lines for the reactor that a blocking call read on its way to
    /// its own (a shared home: the call was pipelined behind renewals),
    /// in order, each with its reader's id; each reader collects its own
    /// ([`Connection::poll_reply`]) when the reactor is nudged.
    for_reactor: VecDeque<(u64, String)>,
}

impl Io {
    /// After a reply: bytes already received beyond it while nothing is
    /// outstanding are a reply to no request (a protocol violation).
    fn stray_input(&self) -> bool {
        self.session.is_idle() && self.transport.pending_input() > 0
    }
}

/// The reader id of a connection's only user before anyone else can have
/// it (a dial's auth and `stable-ref`, a grant given back on a connection
/// about to close). Reactor ids start at 1.
pub(crate) const OWN_READER: u64 = 0;

/// What [`Connection::start_request`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Started {
    /// Sent; collect the reply with [`Connection::poll_reply`].
    Sent,
    /// A call is running on the connection now; try again shortly.
    Busy,
}

/// One connection to a dflockd server. `Send + Sync`.
pub struct Connection {
    /// `host:port`, for log messages.
    peer: String,
    metrics: Option<Arc<Metrics>>,
    io: Mutex<Io>,
    /// Copy of the socket fd, for [`Connection::abort`] without the mutex.
    /// Valid as long as `self` lives (the stream is owned by `io`).
    fd: RawFd,
    tls: bool,
    broken: AtomicBool,
    aborted: AtomicBool,
    /// Unique in the process (the reactor's token for its watch).
    id: u64,
    /// The token (and [`READ_ARMED`]) of the socket's registration in the
    /// reactor's epoll set, 0 when not registered (see src/reactor.rs).
    registration: AtomicU64,
    io_timeout: Duration,
    /// When (fork epoch) it was opened: inherited through fork(), it is
    /// refused before its mutex is touched (src/runtime.rs).
    stamp: ForkStamp,
    /// The session name it sent (`stable-ref`, cluster mode): a
    /// replacement repeats it so a queued waiter keeps its place.
    stable_ref: std::sync::OnceLock<String>,
    /// Held leases whose home this is ([`HomeTicket`]).
    homed: AtomicUsize,
    /// Tells the reactor that a blocking call read replies it awaits
    /// (set by the reactor when it first awaits one here).
    nudge: OnceLock<Nudge>,
    /// Renewals the reactor sent while a call held the connection: the
    /// next holder of `io` puts them on the wire, ahead of its own request
    /// (so a busy home never holds a renewal back for long).
    outbox: Mutex<Vec<Posted>>,
    /// The reactor came to read (replies it awaits, lines kept for its
    /// tasks) while another thread held `io`: that holder nudges it when it
    /// lets go ([`HeldIo`]). Its registration is edge-triggered, so the
    /// bytes left in the socket would fire nothing more.
    look_again: AtomicBool,
    /// Leases on their way here: tries sent, not answered yet
    /// ([`Reservation`]).
    reserved: AtomicUsize,
}

/// How a connection tells the reactor it holds replies for it (the
/// connection's id is the argument).
pub(crate) type Nudge = Arc<dyn Fn(u64) + Send + Sync>;

/// Ids of connections (see [`Connection::id`]).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The flag of a registration token that says readable is armed too.
pub(crate) const READ_ARMED: u64 = 1 << 63;
/// The flag of a registration token that says writable is armed too
/// (queued renewals the socket did not take at once). Connection ids never
/// reach bit 61.
pub(crate) const WRITE_ARMED: u64 = 1 << 61;

/// Default [`ConnectOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ConnectOptions::io_timeout`].
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// `a`, or `cap` when that comes first.
pub(crate) fn earliest(a: Instant, cap: Option<Instant>) -> Instant {
    cap.map_or(a, |c| c.min(a))
}

/// Names a request in error messages ("acquire \"k\""), formatted only
/// when an error is actually built.
struct What<'a> {
    cmd: Command,
    key: Option<&'a str>,
}

impl std::fmt::Display for What<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key {
            Some(key) => write!(f, "{} {key:?}", self.cmd.label()),
            None => f.write_str(self.cmd.label()),
        }
    }
}

/// The protocol timeout a request carries (what the server may wait).
fn protocol_wait(req: &Request) -> Duration {
    match req {
        Request::Acquire { timeout_s, .. } | Request::Wait { timeout_s, .. } => {
            Duration::from_secs(*timeout_s)
        }
        _ => Duration::ZERO,
    }
}

impl Connection {
    /// Connect to `host:port` (TCP or TLS), then authenticate when
    /// `opts.auth_token` is set.
    pub fn open(host: &str, port: u16, opts: &ConnectOptions) -> Result<Connection> {
        Connector::new(opts)?.open(host, port, None)
    }

    /// Whether the connection saw an I/O or protocol error (or was
    /// aborted) and will refuse every further call.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// From any thread: shut the socket down so a call blocked on it
    /// returns [`ErrorKind::Cancelled`]; the connection is broken after
    /// this, and the server releases what it held (auto-release).
    pub fn abort(&self) {
        if self.check_fork().is_err() {
            return; // the socket is the parent's too: never shut it down
        }
        self.aborted.store(true, Ordering::Release);
        self.broken.store(true, Ordering::Release);
        shutdown_fd(self.fd);
    }

    /// `Err(`[`ErrorKind::Forked`]`)` if opened before a `fork()` of this
    /// process. Takes no lock.
    pub(crate) fn check_fork(&self) -> Result<()> {
        self.stamp.check("connection")
    }

    /// Stop sending on the socket (`shutdown(SHUT_WR)`) and mark it broken:
    /// the server reads EOF and closes its side, which the event engine's
    /// hang-up watch then sees, so the caller learns when the server has
    /// processed the close (and released what it held, with auto-release).
    pub(crate) fn half_close(&self) {
        if self.check_fork().is_err() {
            return; // the socket is the parent's too
        }
        self.broken.store(true, Ordering::Release);
        // SAFETY: shutdown has no memory effects; `self` owns the open fd.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_WR);
        }
    }

    /// Mark the connection unusable without touching the socket (the event
    /// engine saw the server hang up; the next call opens a fresh one).
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }

    /// How many held leases live on this connection.
    pub(crate) fn homed(&self) -> usize {
        self.homed.load(Ordering::Acquire)
    }

    /// Its held leases and the ones on their way ([`Reservation`]).
    pub(crate) fn load(&self) -> usize {
        self.homed() + self.reserved.load(Ordering::Acquire)
    }

    /// Close the connection if no other held lease lives on it (a lease
    /// that is lost closes its home so the server frees it; a shared home
    /// stays for the others, and that lease ends with its TTL).
    pub(crate) fn abort_unless_shared(&self) {
        if self.homed() == 0 && self.is_quiet() {
            self.abort();
        }
    }

    /// Whether nothing but owed replies is outstanding (no request of
    /// anyone else in flight that closing it would fail). Never blocks:
    /// `false` while a call holds it.
    pub(crate) fn is_quiet(&self) -> bool {
        lock(&self.outbox).is_empty()
            && self.try_io().is_some_and(|io| {
                io.for_reactor.is_empty()
                    && !io.session.awaits_reactor()
                    && !io.session.awaits(Waiter::Caller)
            })
    }

    /// For the reactor: how to tell it that a blocking call read replies it
    /// awaits (set once).
    pub(crate) fn set_nudge(&self, nudge: impl FnOnce() -> Nudge) {
        if self.nudge.get().is_none() {
            let _ = self.nudge.set(nudge());
        }
    }

    /// This process's descriptor of the socket (for closing an inherited
    /// connection in a forked child without touching its mutex, and for the
    /// event engine's hang-up watch).
    /// The `stable-ref` this connection sent (cluster mode).
    pub(crate) fn sent_ref(&self) -> Option<&str> {
        self.stable_ref.get().map(String::as_str)
    }

    /// Record the `stable-ref` it sent (once).
    pub(crate) fn record_ref(&self, reference: String) {
        let _ = self.stable_ref.set(reference);
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Unique in the process; never has bit 62 or 63 set.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// For the reactor: record the token (with [`READ_ARMED`] if readable
    /// is armed) the socket's epoll registration now carries; returns the
    /// previous one (0: not registered).
    pub(crate) fn set_registration(&self, token: u64) -> u64 {
        self.registration.swap(token, Ordering::AcqRel)
    }

    /// Whether the reactor watches the socket for hang-up under this
    /// connection's own token: then a server's close marks it broken at
    /// once, and the pool needs no peek to know it is alive.
    pub(crate) fn hang_ups_watched(&self) -> bool {
        self.registration.load(Ordering::Acquire) & !(READ_ARMED | WRITE_ARMED) == self.id
    }

    pub(crate) fn was_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Whether an idle connection can be handed out again (see
    /// `Transport::looks_alive`). Never blocks.
    pub(crate) fn looks_alive(&self) -> bool {
        if self.is_broken() {
            return false;
        }
        match self.try_io() {
            Some(io) => io.session.is_idle() && io.transport.looks_alive(!self.hang_ups_watched()),
            None => false,
        }
    }

    /// Whether the reactor awaits a reply here (never blocks: `false`
    /// while a call holds the connection).
    fn reactor_awaits(&self) -> bool {
        self.try_io()
            .is_some_and(|io| io.session.awaits_reactor() || !io.for_reactor.is_empty())
    }

    /// Whether a non-blocking request could go on now, pipelined (a shared
    /// home): not broken, nothing blocking outstanding, and no call running
    /// on it, unless the request is `Sending::Posted` (the call writes it
    /// when done). Never blocks.
    pub(crate) fn takes_more_now(&self, how: Sending) -> bool {
        if self.is_broken() {
            return false;
        }
        match self.try_io() {
            Some(io) => io.session.admit(false).is_ok() && !io.session.awaits(Waiter::Caller),
            None => how == Sending::Posted,
        }
    }

    /// Whether this connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The time the server may take to answer `req` sent now: what the
    /// request lets it wait plus the I/O timeout.
    pub(crate) fn reply_deadline(&self, req: &Request) -> Instant {
        let now = Instant::now();
        now.checked_add(protocol_wait(req).saturating_add(self.io_timeout))
            .unwrap_or(now + Duration::from_secs(MAX_SECONDS))
    }

    /// Send one request and read its reply before its reply deadline, or
    /// before `cap` when that comes first. The single path every command
    /// takes; each is logged (DEBUG, WARN for a deadline) and deadlines
    /// are counted.
    pub(crate) fn call(&self, req: &Request, cap: Option<Instant>) -> Result<Outcome> {
        self.call_with(req, cap, true)
            .map(|r| r.expect("a call that waits for the connection"))
    }

    /// [`Connection::call`], or `Ok(None)` at once when another call holds
    /// the connection (a shared home: waiting behind that call would add its
    /// whole bound to this one's; the caller goes elsewhere).
    pub(crate) fn try_call(&self, req: &Request, cap: Option<Instant>) -> Result<Option<Outcome>> {
        self.call_with(req, cap, false)
    }

    fn call_with(&self, req: &Request, cap: Option<Instant>, wait: bool) -> Result<Option<Outcome>> {
        let mut stashed = false;
        let r = match self.exchange_checked(req, cap, &mut stashed, wait) {
            Ok(None) => return Ok(None),
            Ok(Some(outcome)) => Ok(outcome),
            Err(e) => Err(e),
        };
        stashed |= self.post_outbox();
        // The reactor gave up reading while this call held the connection:
        // tell it to look again (replies kept for it, or still to come).
        if stashed || self.reactor_awaits() {
            if let Some(nudge) = self.nudge.get() {
                nudge(self.id);
            }
        }
        let what = What {
            cmd: req.command(),
            key: req.key(),
        };
        self.observe(&what, &r);
        r.map(Some)
    }

    /// Log a request's outcome (DEBUG; WARN for a deadline, which is also
    /// counted): for the blocking calls and the engine's replies alike.
    fn observe(&self, what: &What, r: &Result<Outcome>) {
        match r {
            Ok(outcome) => log!(Level::Debug, "{what} on {}: {}", self.peer, describe(outcome)),
            Err(e) if e.kind() == ErrorKind::Deadline => {
                if let Some(m) = &self.metrics {
                    bump(&m.deadline_hits);
                }
                log!(Level::Warn, "{e} (server {})", self.peer);
            }
            Err(e) => log!(Level::Debug, "{e} (server {})", self.peer),
        }
    }

    fn exchange_checked(
        &self,
        req: &Request,
        cap: Option<Instant>,
        stashed: &mut bool,
        wait: bool,
    ) -> Result<Option<Outcome>> {
        let cmd = req.command();
        let what = What { cmd, key: req.key() };
        self.check_fork()?;
        let poisoned = || Error::new(ErrorKind::Io, format!("{what}: connection poisoned"));
        let io = if wait {
            self.io.lock().map_err(|_| poisoned())?
        } else {
            match self.io.try_lock() {
                Ok(io) => io,
                Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
            }
        };
        let mut io = HeldIo {
            conn: self,
            io: Some(io),
        };
        if self.was_aborted() {
            return Err(Error::new(ErrorKind::Cancelled, format!("{what}: cancelled")));
        }
        let io = &mut *io;
        let posted = self.take_outbox(io, &what)?;
        *stashed |= posted;
        // The reactor's requests were sent first: their replies come first.
        // A request the server may hold back goes only where nothing else
        // is awaited, so those become owed (dropped when read: the renewal
        // of a lease released meanwhile); behind any other request they are
        // read in turn and kept for the reactor (a shared home).
        if req.may_block() && io.session.awaits_reactor() && !io.session.give_up_reactor() {
            self.broken.store(true, Ordering::Release);
        }
        if self.is_broken() || io.session.admit(req.may_block()).is_err() {
            return Err(Error::new(ErrorKind::Io, format!("{what}: connection is broken")));
        }
        io.frame.clear();
        req.encode(&mut io.frame)?;
        let deadline = earliest(self.reply_deadline(req), cap);
        if let Err(e) = io.transport.send(&io.frame, deadline, &what) {
            // Part of the frame may have gone: the stream is out of step.
            io.session.break_off();
            self.broken.store(true, Ordering::Release);
            return Err(self.cancelled_or(e, &what));
        }
        io.session.sent(cmd, req.may_block(), Waiter::Caller, deadline);
        let line = loop {
            let line = match io.transport.read_line(deadline, &what) {
                Ok(line) => line,
                Err(e) => {
                    // Only a reply that is merely late and harmless keeps
                    // the stream in step (it stays owed).
                    let late = e.kind() == ErrorKind::Deadline;
                    if late {
                        // The session's rule: this request (the last) and
                        // any earlier one past its deadline give up.
                        io.session.expire(Instant::now());
                    }
                    if !late || !io.session.give_up(Waiter::Caller) {
                        io.session.break_off();
                        self.broken.store(true, Ordering::Release);
                    }
                    return Err(self.cancelled_or(e, &what));
                }
            };
            match io.session.on_line() {
                Delivery::Owed => continue,
                Delivery::Reply {
                    waiter: Waiter::Caller,
                    ..
                } => break line,
                Delivery::Reply {
                    waiter: Waiter::Reactor(reader),
                    ..
                } => {
                    io.for_reactor.push_back((reader, line));
                    *stashed = true;
                    continue;
                }
                Delivery::Reply { .. } | Delivery::Stray => {
                    self.broken.store(true, Ordering::Release);
                    return Err(stray(&what));
                }
            }
        };
        if io.stray_input() {
            // More arrived than was asked for: which line answered this
            // request cannot be known.
            io.session.break_off();
            self.broken.store(true, Ordering::Release);
            return Err(stray(&what));
        }
        self.interpret(cmd, &what, &line).map(Some)
    }

    /// `e`, or `Cancelled` if the connection was aborted meanwhile (cancel).
    fn cancelled_or(&self, e: Error, what: &What) -> Error {
        if self.was_aborted() {
            Error::new(ErrorKind::Cancelled, format!("{what}: cancelled"))
        } else {
            e
        }
    }

    /// A reply line as the outcome of `cmd`: anything but a success reply
    /// for it is an error, and one that leaves the stream unusable (a
    /// malformed reply, auth refused, draining) breaks the connection.
    fn interpret(&self, cmd: Command, what: &What, line: &str) -> Result<Outcome> {
        match parse_reply(cmd, line) {
            Ok(outcome) => Ok(outcome),
            Err(refusal) => {
                let closes = matches!(refusal, Refusal::Malformed(_))
                    || matches!(
                        refusal,
                        Refusal::Status(
                            crate::protocol::Status::ErrorAuth | crate::protocol::Status::ErrorDraining
                        )
                    );
                if closes {
                    self.broken.store(true, Ordering::Release);
                }
                Err(Error::from_refusal(&what.to_string(), refusal))
            }
        }
    }
}

/// The error for a reply line that answers no outstanding request.
fn stray(what: &What) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{what}: the server sent a reply with no request outstanding; the connection is out of step"),
    )
}

/// A reply's shape in words, without its token.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done => "ok".into(),
        Outcome::Granted { lease_s, .. } => format!("granted, lease {lease_s} s"),
        Outcome::Queued => "queued".into(),
        Outcome::Renewed { lease_s } => format!("renewed, lease {lease_s} s"),
        Outcome::Stats(_) => "stats".into(),
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connection_closed();
        }
        log!(Level::Info, "closed connection to {}", self.peer);
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd)
            .field("broken", &self.is_broken())
            .finish()
    }
}
