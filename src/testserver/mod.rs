//! A faithful in-process dflockd server for tests, examples and the
//! quickstart: a test double with the real server's wire behaviour
//! (docs/protocol.md, the 2.x line), not a production server.
//!
//! Where things are:
//! - `options`: [`ServerOptions`] and [`TlsIdentity`], the real server's settings.
//! - `table`: the lock/semaphore table (FIFO queues, leases, fences, limits), pure.
//! - `conn`: the per-connection loop (framing, auth, blocking requests).
//! - `faults`: fault injection (pause, delay, hostile replies, refusal, follower).
//! - `cluster`: [`TestCluster`], N nodes sharing one table, one leader at a time.
//! - `tls`: rustls configuration and the plain/TLS transport.
//! - this file: [`TestServer`], the accept loop, the lease sweeper, and
//!   the controls that act on every connection (drop, drain, restart, stop).
//!
//! Known differences from the Go server, all on input no real client sends:
//! a request line that is not UTF-8 gets `error` (Go would take the bytes
//! as a key); a client that pipelines more than 64 KiB behind its own
//! blocked `l`/`w` is disconnected; `restart` keeps the listening socket
//! (no window of refused connections; it closes everything instead).
//!
//! ```no_run
//! use dflockd::testserver::{ServerOptions, TestServer};
//! let server = TestServer::start(ServerOptions::default()).unwrap();
//! println!("dflockd test server on {}", server.addr());
//! // ... run the client against server.port() ...
//! server.stop();
//! ```

mod cluster;
mod conn;
mod faults;
mod line;
mod options;
mod table;
mod tls;
mod wake;

pub use cluster::{ClusterOptions, NodeState, TestCluster};
pub use line::ServerLine;
pub use options::{ServerOptions, TlsIdentity};

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::random_u64;

use cluster::NodeLink;
use conn::ConnCtl;
use faults::Faults;
use line::Behaviour;
use table::{ConnId, Limits, Table};
use wake::Waker;

/// Stack of every server thread: the connection loop needs little, and
/// tests open thousands of connections.
const THREAD_STACK: usize = 256 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State behind these mutexes stays consistent even if a thread
    // panicked while holding one; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fence seed: wall-clock nanoseconds, as the Go server without a
/// fence state file.
fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// An empty table with `opts`' limits and line.
fn table_for(opts: &ServerOptions, first_fence: u64) -> Table {
    let limits = Limits {
        max_locks: opts.max_locks,
        max_waiters: opts.max_waiters,
    };
    Table::new(limits, first_fence, random_u64).for_line(opts.line)
}

/// State shared by the accept loop, the sweeper, every connection thread
/// and the controls.
struct Shared {
    opts: ServerOptions,
    /// `opts.line`'s behaviour where the lines differ.
    behaviour: Behaviour,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The node's own table, or the one every node of a cluster shares.
    table: Arc<Mutex<Table>>,
    faults: Faults,
    conns: Mutex<HashMap<ConnId, Arc<ConnCtl>>>,
    conn_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Connection numbers (shared by a cluster's nodes: one table).
    next_conn: Arc<AtomicU64>,
    /// A cluster node's place in its cluster.
    node: Option<NodeLink>,
    /// Set when a cluster node is killed or drained: its connections end
    /// without disconnect cleanup.
    severed: AtomicBool,
    /// Requests blocked waiting for a grant now (see `blocked_requests`).
    blocked: AtomicU64,
    stopping: AtomicBool,
    draining: AtomicBool,
    /// Set during restart: connections arriving meanwhile are closed.
    restarting: AtomicBool,
    /// Wakes the accept loop (stop, drain).
    accept_waker: Waker,
    /// Wakes the sweeper on stop.
    sweeper_stop: (Mutex<bool>, Condvar),
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn severed(&self) -> bool {
        self.severed.load(Ordering::SeqCst)
    }

    /// `Some(leader hint)` when mutating commands must get
    /// `error_not_leader`: a cluster follower, or follower mode.
    fn not_leader(&self) -> Option<Option<String>> {
        match &self.node {
            Some(n) => n.refusal(),
            None => self.faults.follower(),
        }
    }

    fn new_table(&self, first_fence: u64) -> Table {
        table_for(&self.opts, first_fence)
    }

    /// Run `f` on the table, then wake the connections it granted to.
    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        let (r, woken) = {
            let mut t = lock(&self.table);
            let r = f(&mut t);
            (r, t.take_woken())
        };
        if !woken.is_empty() {
            match &self.node {
                // Granted waiters may be connections of any node.
                Some(n) => n.wake(&woken),
                None => self.wake_ids(&woken),
            }
        }
        r
    }

    /// Wake these connections if they are this server's.
    fn wake_ids(&self, ids: &[ConnId]) {
        let conns = lock(&self.conns);
        for id in ids {
            if let Some(c) = conns.get(id) {
                c.waker.wake();
            }
        }
    }

    fn connection_count(&self) -> u64 {
        lock(&self.conns).len() as u64
    }

    fn deregister(&self, id: ConnId) {
        lock(&self.conns).remove(&id);
    }

    /// Close every connection; each thread then releases what its
    /// connection held, as on a client disconnect.
    fn close_all(&self) -> Vec<ConnId> {
        let ids = {
            let conns = lock(&self.conns);
            for c in conns.values() {
                c.close();
            }
            conns.keys().copied().collect()
        };
        self.faults.wake_all();
        ids
    }

    fn wake_all_connections(&self) {
        for c in lock(&self.conns).values() {
            c.waker.wake();
        }
        self.faults.wake_all();
    }

    /// Join every connection thread that has finished (all of them, when
    /// `all`, waiting for the rest).
    fn reap_threads(&self, all: bool) {
        let handles: Vec<JoinHandle<()>> = {
            let mut threads = lock(&self.conn_threads);
            if all {
                std::mem::take(&mut *threads)
            } else {
                let (done, running) = std::mem::take(&mut *threads)
                    .into_iter()
                    .partition(|h| h.is_finished());
                *threads = running;
                done
            }
        };
        for h in handles {
            let _ = h.join();
        }
    }

    /// A new client connection: refuse it, reset it (over
    /// `max_connections`), or serve it on its own thread.
    fn admit(self: &Arc<Self>, stream: TcpStream) {
        if self.faults.refusing() || self.restarting.load(Ordering::SeqCst) || self.draining() {
            return; // dropped: closed at once
        }
        let _ = stream.set_nonblocking(false);
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        let ctl = match ConnCtl::new(id, &stream) {
            Ok(c) => Arc::new(c),
            Err(_) => return,
        };
        {
            let mut conns = lock(&self.conns);
            let max = self.opts.max_connections;
            if max > 0 && conns.len() >= max {
                drop(conns);
                reset(&stream);
                return;
            }
            conns.insert(id, ctl.clone());
        }
        self.reap_threads(false);
        let shared = self.clone();
        let spawned = spawn(&format!("dflockd-conn-{id}"), move || {
            conn::serve(shared, ctl, stream)
        });
        match spawned {
            Ok(h) => lock(&self.conn_threads).push(h),
            Err(_) => self.deregister(id),
        }
    }
}

/// Close with RST instead of FIN, as the Go server does to connections
/// over `--max-connections`.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a live `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let fd = listener.as_raw_fd();
    loop {
        if shared.stopping() || shared.draining() {
            return; // dropping the listener refuses new connections
        }
        let ready = wake::wait(fd, true, &shared.accept_waker, None);
        if !ready.readable {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => shared.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Out of descriptors or similar: back off, don't spin.
                    std::thread::sleep(Duration::from_millis(20));
                    break;
                }
            }
        }
    }
}

fn sweeper_loop(shared: Arc<Shared>) {
    let sweep = shared.opts.lease_sweep_interval;
    let gc = shared.opts.gc_interval;
    let (mut next_sweep, mut next_gc) = (Instant::now() + sweep, Instant::now() + gc);
    let (m, cv) = &shared.sweeper_stop;
    let mut stop = lock(m);
    loop {
        let now = Instant::now();
        if *stop {
            return;
        }
        if now >= next_sweep {
            shared.with_table(|t| t.sweep(now));
            next_sweep = now + sweep;
        }
        if now >= next_gc {
            let max_idle = shared.opts.gc_max_idle;
            shared.with_table(|t| t.collect_idle(now, max_idle));
            next_gc = now + gc;
        }
        let wait = next_sweep.min(next_gc).saturating_duration_since(Instant::now());
        stop = cv.wait_timeout(stop, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    // Boxed: one instantiation of the spawn machinery for every thread
    // (each closure type would add ~3 KB to the shipped library).
    let f: Box<dyn FnOnce() + Send> = Box::new(f);
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(THREAD_STACK)
        .spawn(f)
}

/// An in-process dflockd server on a real socket. Every method takes
/// `&self` (so a test can pause it from another thread) except
/// [`stop`](TestServer::stop); dropping it stops it too.
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    sweeper: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Bind `opts.host:opts.port` and start serving.
    pub fn start(opts: ServerOptions) -> io::Result<TestServer> {
        opts.validate()?;
        let table = Arc::new(Mutex::new(table_for(&opts, wall_clock_ns())));
        let listener = TcpListener::bind((opts.host.as_str(), opts.port))?;
        TestServer::start_with(opts, listener, table, Arc::new(AtomicU64::new(1)), None)
    }

    /// Start a server on `table`; a cluster node (`node`) runs no sweeper
    /// of its own (its cluster sweeps the shared table).
    fn start_with(
        opts: ServerOptions,
        listener: TcpListener,
        table: Arc<Mutex<Table>>,
        next_conn: Arc<AtomicU64>,
        node: Option<NodeLink>,
    ) -> io::Result<TestServer> {
        let tls = opts.tls.as_ref().map(tls::server_config).transpose()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            table,
            behaviour: opts.line.behaviour(),
            faults: Faults::new(opts.follower.clone()),
            opts,
            tls,
            conns: Mutex::new(HashMap::new()),
            conn_threads: Mutex::new(Vec::new()),
            next_conn,
            node,
            severed: AtomicBool::new(false),
            blocked: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            restarting: AtomicBool::new(false),
            accept_waker: Waker::new()?,
            sweeper_stop: (Mutex::new(false), Condvar::new()),
        });
        let sweeper = if let Some(node) = &shared.node {
            node.register(Arc::downgrade(&shared));
            None
        } else {
            let s = shared.clone();
            Some(spawn("dflockd-sweeper", move || sweeper_loop(s))?)
        };
        let mut server = TestServer {
            shared,
            addr,
            acceptor: Mutex::new(None),
            sweeper,
        };
        server.spawn_acceptor(listener)?;
        Ok(server)
    }

    fn spawn_acceptor(&mut self, listener: TcpListener) -> io::Result<()> {
        let s = self.shared.clone();
        let h = spawn("dflockd-accept", move || accept_loop(s, listener))?;
        *lock(&self.acceptor) = Some(h);
        Ok(())
    }

    /// The bound address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stop answering: requests are read but get no reply (and idle
    /// connections are not timed out) until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.shared.faults.set_paused(true);
    }

    /// Answer requests again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared.faults.set_paused(false);
    }

    /// Close every client connection now. Returns once each has released
    /// what it held and dropped its waiters, as on a client disconnect.
    pub fn drop_connections(&self) {
        let ids = self.shared.close_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let conns = lock(&self.shared.conns);
            if ids.iter().all(|id| !conns.contains_key(id)) {
                return;
            }
            drop(conns);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Write `raw` now, unsolicited, to every plaintext client connection,
    /// as a misbehaving server would (a reply with no request outstanding).
    /// Best effort: a connection whose socket buffer is full gets less.
    pub fn inject(&self, raw: &[u8]) {
        for c in lock(&self.shared.conns).values() {
            c.inject(raw);
        }
    }

    /// While `true`, new connections are accepted and closed at once.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.faults.set_refuse(refuse);
    }

    /// Delay every reply by `delay` (zero: no delay).
    pub fn set_reply_delay(&self, delay: Duration) {
        self.shared.faults.set_delay(delay);
    }

    /// Replace every reply by these raw bytes (`None`: normal replies).
    pub fn set_hostile_reply(&self, raw: Option<Vec<u8>>) {
        self.shared.faults.set_hostile(raw);
    }

    /// Switch follower mode (see [`ServerOptions::follower`]).
    pub fn set_follower(&self, leader: Option<Option<String>>) {
        self.shared.faults.set_follower(leader);
    }

    /// Simulate a server restart on the same port: every connection is
    /// closed, every lock and queue forgotten, pause and drain cleared;
    /// fences keep rising. Other fault settings stay as they are.
    pub fn restart(&self) -> io::Result<()> {
        let s = &self.shared;
        if s.node.is_some() {
            return Err(io::Error::other(
                "a cluster node restarts through its TestCluster",
            ));
        }
        s.restarting.store(true, Ordering::SeqCst);
        s.close_all();
        s.reap_threads(true);
        {
            let mut t = lock(&s.table);
            let first = t.next_fence().max(wall_clock_ns());
            *t = s.new_table(first);
        }
        s.faults.set_paused(false);
        let relisten = s.draining.swap(false, Ordering::SeqCst);
        let result = if relisten {
            if let Some(h) = lock(&self.acceptor).take() {
                let _ = h.join();
            }
            let listener = TcpListener::bind(self.addr)?;
            listener.set_nonblocking(true)?;
            let sh = s.clone();
            let h = spawn("dflockd-accept", move || accept_loop(sh, listener))?;
            *lock(&self.acceptor) = Some(h);
            Ok(())
        } else {
            Ok(())
        };
        s.restarting.store(false, Ordering::SeqCst);
        result
    }

    /// The 2.x SIGTERM behaviour: new connections are refused, waiting
    /// requests get `error`, the next request on any connection gets
    /// `error_draining` and a close.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.accept_waker.wake();
        if let Some(h) = lock(&self.acceptor).take() {
            let _ = h.join();
        }
        self.shared.wake_all_connections();
    }

    /// Acquires and waits blocked in the server now, waiting for a grant
    /// (a test can await a request being queued *and* blocked, not only
    /// enqueued).
    pub fn blocked_requests(&self) -> usize {
        self.shared.blocked.load(Ordering::SeqCst) as usize
    }

    /// Number of open client connections.
    pub fn connection_count(&self) -> usize {
        self.shared.connection_count() as usize
    }

    /// Stop: close the port and every connection and join every thread.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        s.accept_waker.wake();
        if let Some(h) = lock(&self.acceptor).take() {
            let _ = h.join();
        }
        {
            let (m, cv) = &s.sweeper_stop;
            *lock(m) = true;
            cv.notify_all();
        }
        if let Some(h) = self.sweeper.take() {
            let _ = h.join();
        }
        s.close_all();
        s.reap_threads(true);
    }
}

// Tests share one server across threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TestServer>();
};

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod table_tests;
