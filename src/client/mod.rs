//! The shareable client: configuration, key → server routing (sharding and
//! leader following) and a pool of idle connections per server.

mod config;
mod leader;
mod pool;

use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::{Config, ShardFn};
use leader::{Leadership, Left};
use pool::Pool;

use crate::connection::{ConnectOptions, Connection, Connector, Reservation, Sending};
use crate::fork::{ForkStamp, bury};
use crate::log::{Level, log};
use crate::metrics::{Metrics, MetricsSnapshot, bump};
use crate::protocol::{MAX_SECONDS, Stats, crc32_shard, validate_key};
use crate::runtime::{Runtime, Users};
use crate::{Error, ErrorKind, Result};

/// A dflockd client: cheap to clone, `Send + Sync`; clones share the
/// connection pools.
///
/// Library threads (renewal, lost callbacks, async acquires) run while any
/// client or lease lives; dropping the last one stops and joins them
/// (`src/runtime.rs`).
///
/// After `fork()`, a client (and its leases and connections) inherited from
/// the parent fails every operation with [`ErrorKind::Forked`]; dropping it
/// in the child sends nothing and shuts no socket down (that would break
/// the parent's connections): it is leaked. Create a new client in the
/// child.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
    pub(crate) users: Arc<Users>,
}

pub(crate) struct ClientInner {
    pub(crate) config: Config,
    connector: Connector,
    pools: Vec<Pool>,
    pub(crate) metrics: Arc<Metrics>,
    /// The generation of library threads this client's leases use.
    pub(crate) runtime: Arc<Runtime>,
    /// When (fork epoch) the client was made.
    pub(crate) stamp: ForkStamp,
    /// Cluster mode: the leader cache (`None` when sharding).
    leadership: Option<Mutex<Leadership>>,
    /// Per server: when a renewal last set out to open a fresh connection
    /// (to move leases off a broken home), so the others wait for it.
    opening: Mutex<Vec<Option<Instant>>>,
}

/// How long the leases of a broken home wait for the fresh connection one
/// of them opens before another opens one too (a dial that failed).
const OPENING_WINDOW: Duration = Duration::from_millis(100);

impl Client {
    /// Validate `config` and build the TLS configuration (reads CA files;
    /// no network I/O: connections are opened on first use).
    pub fn new(config: Config) -> Result<Client> {
        config.validate()?;
        let connector = Connector::new(&ConnectOptions {
            connect_timeout: config.connect_timeout,
            io_timeout: config.io_timeout,
            auth_token: config.auth_token.clone(),
            tls: config.tls.clone(),
        })?
        .with_stable_refs(config.cluster);
        let metrics = Arc::new(Metrics::default());
        let connector = connector.with_metrics(Arc::clone(&metrics));
        let pools = config
            .servers
            .iter()
            .map(|_| Pool::new(config.max_idle_per_server, config.effective_keepalive()))
            .collect();
        let users = Users::join();
        let n_servers = config.servers.len();
        let leadership = config
            .cluster
            .then(|| Mutex::new(Leadership::new(config.servers.len())));
        Ok(Client {
            inner: Arc::new(ClientInner {
                config,
                connector,
                pools,
                metrics,
                runtime: Arc::clone(users.runtime()),
                stamp: ForkStamp::now(),
                opening: Mutex::new(vec![None; n_servers]),
                leadership,
            }),
            users,
        })
    }

    /// `Err(`[`ErrorKind::Forked`]`)` if this client was inherited through
    /// `fork()`.
    pub(crate) fn check_fork(&self) -> Result<()> {
        self.inner.check_fork()
    }

    // `lock` and `semaphore` (the lease handles of a key) are in
    // src/lease.rs, beside `Lease::new`.

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The index of the server that owns `key` (in cluster mode, the member
    /// the client takes for the leader now).
    pub fn server_for(&self, key: &str) -> Result<usize> {
        self.check_fork()?;
        let fixed = self.inner.server_for(key)?;
        Ok(self.inner.route(fixed))
    }

    /// A new authenticated connection to server `server` (not pooled; the
    /// low-level API). Within `connect_timeout`.
    pub fn connect(&self, server: usize) -> Result<Connection> {
        self.check_fork()?;
        self.inner.open(server, None)
    }

    /// `stats` of server `server`, over a pooled connection. Within
    /// `connect_timeout + io_timeout`.
    pub fn stats(&self, server: usize) -> Result<Stats> {
        self.check_fork()?;
        let cap = self.inner.call_deadline(0);
        let conn = self.inner.checkout(server, Some(cap))?;
        let r = conn.stats_until(Some(cap));
        self.inner.checkin(server, conn);
        r
    }

    /// `barrier`: returns once everything acknowledged before it is applied
    /// (a linearizable read barrier). In cluster mode it goes to the leader,
    /// following it through redirects and elections; otherwise to every
    /// server in turn (single-node 2.x servers answer at once; 1.10 has no
    /// `barrier` and answers [`ErrorKind::Server`]). Within
    /// `connect_timeout + io_timeout` (per server when sharding).
    pub fn barrier(&self) -> Result<()> {
        self.check_fork()?;
        let inner = &self.inner;
        if inner.leadership.is_none() {
            for server in 0..inner.config.servers.len() {
                let cap = inner.call_deadline(0);
                let conn = inner.checkout(server, Some(cap))?;
                let r = conn.barrier_until(Some(cap));
                inner.checkin(server, conn);
                r?;
            }
            return Ok(());
        }
        let cap = inner.call_deadline(0);
        let mut at = inner.route(0);
        let mut hops = 0;
        loop {
            let r = inner.checkout(at, Some(cap)).and_then(|conn| {
                let r = conn.barrier_until(Some(cap));
                inner.checkin(at, conn);
                r
            });
            match r {
                Ok(()) => {
                    inner.leader_answered(at);
                    return Ok(());
                }
                Err(e) => at = inner.reroute_blocking(e, at, &mut hops, cap)?,
            }
        }
    }

    /// The client's counters now (shared by its clones).
    pub fn metrics(&self) -> MetricsSnapshot {
        let idle = self.inner.pools.iter().map(Pool::idle_count).sum::<usize>();
        self.inner
            .metrics
            .snapshot(idle as u64, self.inner.home_count() as u64)
    }

    /// Idle pooled connections to `server` (diagnostics and tests).
    pub fn idle_connections(&self, server: usize) -> usize {
        if self.check_fork().is_err() {
            return 0;
        }
        self.inner.pools.get(server).map_or(0, Pool::idle_count)
    }

    /// Connections that carry held leases, over all servers (each carries
    /// up to `Config::max_leases_per_connection`).
    pub fn home_connections(&self) -> usize {
        if self.check_fork().is_err() {
            return 0;
        }
        self.inner.home_count()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.check_fork().is_err() {
            // Inherited: its pool's locks may be held by the parent's
            // vanished threads, and closing its sockets is the parent's job.
            bury(Arc::clone(&self.inner));
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl ClientInner {
    /// `Err(`[`ErrorKind::Forked`]`)` if the client was inherited through
    /// `fork()`. Takes no lock, so it is safe on an inherited client.
    pub(crate) fn check_fork(&self) -> Result<()> {
        self.stamp.check("client")
    }

    pub(crate) fn server_for(&self, key: &str) -> Result<usize> {
        validate_key(key)?;
        let n = self.config.servers.len();
        let Some(shard) = &self.config.shard else {
            return Ok(crc32_shard(key, n));
        };
        let idx = catch_unwind(AssertUnwindSafe(|| shard(key, n)))
            .map_err(|_| Error::new(ErrorKind::InvalidArgument, "shard function panicked"))?;
        if idx >= n {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("shard function returned {idx} for {n} servers"),
            ));
        }
        Ok(idx)
    }

    pub(crate) fn server(&self, idx: usize) -> Result<&(String, u16)> {
        self.config.servers.get(idx).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "server index {idx} out of range ({} servers)",
                    self.config.servers.len()
                ),
            )
        })
    }

    /// The server a request for a key routed to `fixed` goes to: `fixed`
    /// when sharding, the cached leader in cluster mode.
    pub(crate) fn route(&self, fixed: usize) -> usize {
        match &self.leadership {
            None => fixed,
            Some(l) => crate::sync::lock(l).leader(),
        }
    }

    /// Member `at` answered a mutating command (cluster mode): it is the
    /// leader; said in the log when that is news.
    pub(crate) fn leader_answered(&self, at: usize) {
        let Some(l) = &self.leadership else { return };
        if crate::sync::lock(l).confirm(at) {
            let (host, port) = &self.config.servers[at];
            log!(Level::Info, "cluster: member {at} ({host}:{port}) is the leader");
        }
    }

    /// Cluster mode: where to go after member `at` failed with `e`, if `e`
    /// says to look elsewhere (`error_not_leader`, `error_draining`, an
    /// unreachable, broken or silent member). `None` when sharding or for
    /// any other error.
    pub(crate) fn reroute(&self, e: &Error, at: usize) -> Option<usize> {
        let l = self.leadership.as_ref()?;
        let why = match e.kind() {
            ErrorKind::NotLeader => match e.leader().and_then(|a| self.find_server(a)) {
                Some(m) => Left::Hint(m),
                None => Left::NotLeader,
            },
            ErrorKind::Draining | ErrorKind::Io | ErrorKind::Deadline => Left::Down,
            _ => return None,
        };
        let (next, failover) = crate::sync::lock(l).leave(at, why, Instant::now());
        if e.kind() == ErrorKind::NotLeader {
            bump(&self.metrics.redirects);
        }
        if failover {
            bump(&self.metrics.failovers);
        }
        let (host, port) = &self.config.servers[next];
        log!(Level::Warn, "cluster: {e}; trying member {next} ({host}:{port})");
        Some(next)
    }

    /// [`reroute`](Self::reroute) for a call bounded by `cap`: the member to
    /// try next, and when to (`Some`: after a pause, once every member was
    /// tried since the last answer, which `hops` counts: an election is
    /// running). `Err(e)` when `e` is not a routing error, or when the
    /// pause would pass `cap`. Both drivers use it: the blocking one sleeps
    /// the pause, the engine parks the operation.
    pub(crate) fn reroute_within(
        &self,
        e: Error,
        at: usize,
        hops: &mut usize,
        cap: Instant,
    ) -> Result<(usize, Option<Instant>)> {
        let Some(next) = self.reroute(&e, at) else {
            return Err(e);
        };
        *hops += 1;
        if *hops % self.config.servers.len() != 0 {
            return Ok((next, None));
        }
        let resume = Instant::now() + leader::BACKOFF;
        if resume >= cap {
            return Err(e.context("no cluster leader answered before the deadline"));
        }
        Ok((next, Some(resume)))
    }

    /// [`reroute_within`](Self::reroute_within) on the caller's thread:
    /// sleeps the pause, if any.
    pub(crate) fn reroute_blocking(
        &self,
        e: Error,
        at: usize,
        hops: &mut usize,
        cap: Instant,
    ) -> Result<usize> {
        let (next, resume) = self.reroute_within(e, at, hops, cap)?;
        if let Some(resume) = resume {
            std::thread::sleep(resume.saturating_duration_since(Instant::now()));
        }
        Ok(next)
    }

    /// Pause between rounds of the cluster's members while no leader
    /// answers.
    pub(crate) fn election_backoff(&self) -> Duration {
        leader::BACKOFF
    }

    /// The deadline of a whole call that lets the server wait `wait_s`
    /// seconds: one connection setup and one reply, however many redirects
    /// or fresh connections the call takes on the way.
    pub(crate) fn call_deadline(&self, wait_s: u64) -> Instant {
        let c = &self.config;
        let budget = c
            .connect_timeout
            .saturating_add(c.io_timeout)
            .saturating_add(Duration::from_secs(wait_s.min(MAX_SECONDS)));
        let now = Instant::now();
        now.checked_add(budget)
            .unwrap_or(now + Duration::from_secs(MAX_SECONDS))
    }

    /// A fresh authenticated connection to server `idx`, opened within
    /// `connect_timeout` and before `cap`.
    pub(crate) fn open(&self, idx: usize, cap: Option<Instant>) -> Result<Connection> {
        self.open_as(idx, cap, None)
    }

    /// [`open`](Self::open), in cluster mode repeating `reference` (a
    /// replaced connection's `stable-ref`) instead of a new one.
    pub(crate) fn open_as(
        &self,
        idx: usize,
        cap: Option<Instant>,
        reference: Option<&str>,
    ) -> Result<Connection> {
        let (host, port) = self.server(idx)?;
        self.connector.open_as(host, *port, cap, reference)
    }

    /// A live pooled connection to server `idx`, or a new one (opened
    /// before `cap`). Taking from the pool never blocks.
    pub(crate) fn checkout(&self, idx: usize, cap: Option<Instant>) -> Result<Arc<Connection>> {
        self.server(idx)?;
        match self.pools[idx].take() {
            Some(conn) => Ok(conn),
            None => self.open(idx, cap).map(Arc::new),
        }
    }

    /// Give a connection back to server `idx`'s pool (broken ones are
    /// dropped).
    /// An idle connection of server `idx`'s pool, if one is alive; never
    /// blocks (the engine hands these to evented operations).
    pub(crate) fn pool_take(&self, idx: usize) -> Option<Arc<Connection>> {
        self.pools.get(idx)?.take()
    }

    /// A home of server `idx` with room for another lease that a request
    /// sent `how` can go on now (see `Config::max_leases_per_connection`);
    /// never blocks.
    pub(crate) fn home_with_room(&self, idx: usize, how: Sending) -> Option<Reservation> {
        self.pools
            .get(idx)?
            .home_with_room(self.config.max_leases_per_connection, how)
    }

    /// `conn`, of server `idx`, carries a held lease now.
    pub(crate) fn add_home(&self, idx: usize, conn: &Arc<Connection>) {
        if let Some(pool) = self.pools.get(idx) {
            pool.add_home(conn);
        }
    }

    /// Whether the caller is the one to open a fresh connection to server
    /// `idx` for leases whose home broke (none was set out to in the last
    /// [`OPENING_WINDOW`]); the others wait for it ([`Self::opened`]).
    pub(crate) fn claim_opening(&self, idx: usize) -> bool {
        let mut opening = crate::sync::lock(&self.opening);
        let Some(slot) = opening.get_mut(idx) else {
            return true;
        };
        let now = Instant::now();
        if slot.is_some_and(|t| now.duration_since(t) < OPENING_WINDOW) {
            return false;
        }
        *slot = Some(now);
        true
    }

    /// A fresh connection to server `idx` became a home.
    pub(crate) fn opened(&self, idx: usize) {
        if let Some(slot) = crate::sync::lock(&self.opening).get_mut(idx) {
            *slot = None;
        }
    }

    /// Connections carrying held leases, over all servers.
    pub(crate) fn home_count(&self) -> usize {
        self.pools.iter().map(Pool::home_count).sum()
    }

    /// Whether server `idx` has a home now (it answered, and holds leases
    /// of this client).
    pub(crate) fn has_home(&self, idx: usize) -> bool {
        self.pools.get(idx).is_some_and(|p| p.home_count() > 0)
    }

    /// How this client opens connections.
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    pub(crate) fn checkin(&self, idx: usize, conn: Arc<Connection>) {
        if let Some(pool) = self.pools.get(idx) {
            pool.put(conn);
        }
    }

    /// The configured server named by a leader hint (`host:port`).
    fn find_server(&self, addr: &str) -> Option<usize> {
        let sock: Option<SocketAddr> = addr.parse().ok();
        self.config.servers.iter().position(|(host, port)| {
            if format!("{host}:{port}") == addr || format!("[{host}]:{port}") == addr {
                return true;
            }
            match (sock, host.parse::<IpAddr>()) {
                (Some(s), Ok(ip)) => s.ip() == ip && s.port() == *port,
                _ => false,
            }
        })
    }

    /// Where to go after server `idx` answered `error_not_leader` (`e`): the
    /// hinted server when it is configured, else the next one; the error
    /// itself once `max_redirects` were followed. Shared by both drivers of
    /// the operation machine.
    pub(crate) fn follow(&self, e: Error, idx: usize, redirects: &mut u32) -> Result<usize> {
        if *redirects >= self.config.max_redirects {
            // Keep the leader hint: callers (and dflockd_error_leader) report it.
            return Err(e.context(&format!("gave up after {redirects} redirect(s)")));
        }
        *redirects += 1;
        bump(&self.metrics.redirects);
        let n = self.config.servers.len();
        let next = e
            .leader()
            .and_then(|a| self.find_server(a))
            .unwrap_or((idx + 1) % n);
        log!(
            Level::Warn,
            "{e}; following to server {} ({}:{})",
            next,
            self.config.servers[next].0,
            self.config.servers[next].1
        );
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Refusal;

    fn not_leader(hint: Option<&str>) -> Error {
        Error::from_refusal("acquire", Refusal::NotLeader(hint.map(str::to_owned)))
    }

    #[test]
    fn redirects_follow_configured_hints_else_the_next_server_and_a_loop_ends() {
        let mut cfg = Config::new(vec![
            ("127.0.0.1".into(), 7001),
            ("127.0.0.1".into(), 7002),
            ("127.0.0.1".into(), 7003),
        ]);
        cfg.max_redirects = 3;
        let client = Client::new(cfg).expect("client");
        let inner = &client.inner;
        let mut redirects = 0;
        // A hint that names a configured member is followed.
        assert_eq!(
            inner
                .follow(not_leader(Some("127.0.0.1:7003")), 0, &mut redirects)
                .unwrap(),
            2
        );
        // An unknown hint, or none, moves to the next member.
        assert_eq!(
            inner
                .follow(not_leader(Some("10.9.9.9:1")), 2, &mut redirects)
                .unwrap(),
            0
        );
        assert_eq!(inner.follow(not_leader(None), 0, &mut redirects).unwrap(), 1);
        // Two servers naming each other forever: the budget ends the loop,
        // and the error keeps the last hint.
        let e = inner
            .follow(not_leader(Some("127.0.0.1:7001")), 1, &mut redirects)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotLeader);
        assert_eq!(e.leader(), Some("127.0.0.1:7001"));
        assert!(e.message().contains("gave up after 3 redirect(s)"), "{e}");
    }
}
