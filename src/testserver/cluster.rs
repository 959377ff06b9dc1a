//! [`TestCluster`]: an embedded dflockd cluster of N in-process nodes, each
//! on its own loopback port, sharing one lock table (replicated in fact)
//! with one leader at a time. Every rule it follows is an observed fact of
//! a real raft cluster (docs/protocol.md, "Cluster mode"):
//! - followers answer `l sl e se w sw r sr n sn barrier` with
//!   `error_not_leader <leader client address>`, bare from a node that
//!   never knew a leader; `ping`, `stable-ref` and `stats` (with its
//!   `cluster` object) are answered by every node;
//! - a killed leader (SIGKILL: listener and connections closed at once, no
//!   disconnect cleanup) is replaced after the election delay (observed
//!   0.43-0.84 s; default 0.6 s); meanwhile survivors keep naming the dead
//!   leader (stale hint) with role `pre-candidate` and no `leader_id`; no
//!   majority, no leader;
//! - a paused leader is replaced after the election delay and comes back a
//!   follower; a drained node refuses new connections, answers
//!   `error_draining` then closes, and a drained leader hands over about
//!   12 ms after its last client closed;
//! - fences start at 1 and rise by one per grant, across failovers; leases
//!   and queues survive a failover (one table); the table's cluster rules
//!   (renewal rebinds the holder, orphaned waiters re-attach by stable ref
//!   within the orphan TTL) are in `table/cluster_rules.rs`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::table::{ConnId, Table};
use super::{ServerOptions, Shared, TestServer, lock, spawn, table_for};
use crate::protocol::ClusterInfo;

/// A drained leader hands over this long after its last client closed
/// (observed: 11 ms).
const HANDOVER_AFTER_LAST_CLOSE: Duration = Duration::from_millis(12);
/// How often the cluster's own thread looks at elections, drains and leases.
const TICK: Duration = Duration::from_millis(5);

/// How to run a [`TestCluster`]; `Default` is a 3-node cluster with the
/// real server's defaults.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (ids `n1`, `n2`, ...).
    pub nodes: usize,
    /// Every node's settings (`port` and `follower` are ignored).
    pub server: ServerOptions,
    /// Fixed client ports, one per node; empty picks free ones.
    pub ports: Vec<u16>,
    /// From the leader's loss (or the cold start) to the new leader.
    pub election_delay: Duration,
    /// `--orphan-ttl`: how long a waiter of a dead leader's connection
    /// keeps its place for a connection with the same stable ref.
    pub orphan_ttl: Option<Duration>,
    /// `--shutdown-timeout`: the longest a drain waits for its clients.
    pub shutdown_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            server: ServerOptions::default(),
            ports: Vec::new(),
            election_delay: Duration::from_millis(600),
            orphan_ttl: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// What a node is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Serving (as leader or follower).
    Up,
    /// Stopped: reads requests, answers nothing, takes no part in elections.
    Paused,
    /// Draining: `error_draining` to each connection, then gone.
    Draining,
    /// Killed, or drained away: nothing listens on its port.
    Down,
}

struct State {
    term: u64,
    /// The node serving mutating commands.
    leader: Option<usize>,
    last_leader: Option<usize>,
    /// The leader each node names in `error_not_leader` (stale after a
    /// loss); `None`: never knew one.
    hint: Vec<Option<usize>>,
    life: Vec<NodeState>,
    ever_led: bool,
    election_at: Option<Instant>,
    election_delay: Duration,
    hold: bool,
    log_index: u64,
}

impl State {
    /// Elect the next member that is up, if a majority is up.
    fn elect(&mut self) -> bool {
        let n = self.life.len();
        let up = |s: &State, i: usize| s.life[i] == NodeState::Up;
        if (0..n).filter(|&i| up(self, i)).count() * 2 <= n {
            return false;
        }
        let from = self.last_leader.map_or(0, |l| l + 1);
        let Some(c) = (0..n).map(|k| (from + k) % n).find(|&i| up(self, i)) else {
            return false;
        };
        self.term += 1;
        self.log_index += 1; // the new leader's no-op
        self.leader = Some(c);
        self.last_leader = Some(c);
        self.ever_led = true;
        self.election_at = None;
        for i in 0..n {
            if up(self, i) {
                self.hint[i] = Some(c);
            }
        }
        true
    }

    /// The leader is lost (killed, paused, drained away): elect after `after`.
    fn lose_leader(&mut self, after: Duration, now: Instant) {
        self.election_at = Some(now + after);
    }
}

/// What every node of one cluster shares.
pub(super) struct Hub {
    ids: Vec<String>,
    addrs: Vec<String>,
    orphan_ttl: Option<Duration>,
    state: Mutex<State>,
    table: Arc<Mutex<Table>>,
    nodes: Mutex<Vec<Option<Weak<Shared>>>>,
}

impl Hub {
    fn wake(&self, ids: &[ConnId]) {
        let nodes: Vec<Arc<Shared>> = lock(&self.nodes)
            .iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .collect();
        for n in nodes {
            n.wake_ids(ids);
        }
    }

    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        let (r, woken) = {
            let mut t = lock(&self.table);
            let r = f(&mut t);
            (r, t.take_woken())
        };
        if !woken.is_empty() {
            self.wake(&woken);
        }
        r
    }
}

/// A node's place in its cluster (held by the node's `Shared`).
pub(super) struct NodeLink {
    hub: Arc<Hub>,
    index: usize,
}

impl NodeLink {
    pub fn register(&self, shared: Weak<Shared>) {
        lock(&self.hub.nodes)[self.index] = Some(shared);
    }

    /// `None` on the leader; else the hint for `error_not_leader`.
    pub fn refusal(&self) -> Option<Option<String>> {
        let st = lock(&self.hub.state);
        if st.leader == Some(self.index) && st.life[self.index] == NodeState::Up {
            return None;
        }
        Some(st.hint[self.index].map(|l| self.hub.addrs[l].clone()))
    }

    /// A mutating command reached the leader: one more log entry.
    pub fn append(&self) {
        lock(&self.hub.state).log_index += 1;
    }

    pub fn wake(&self, ids: &[ConnId]) {
        self.hub.wake(ids);
    }

    pub fn orphan_ttl(&self) -> Option<Duration> {
        self.hub.orphan_ttl
    }

    /// The `cluster` object of this node's `stats`.
    pub fn info(&self) -> ClusterInfo {
        let st = lock(&self.hub.state);
        let (role, leader) = match st.leader {
            Some(l) if l == self.index => ("leader", Some(l)),
            Some(l) => ("follower", Some(l)),
            None if st.ever_led => ("pre-candidate", None),
            None => ("follower", None),
        };
        let name = |l: Option<usize>, v: &[String]| l.map(|l| v[l].clone()).unwrap_or_default();
        ClusterInfo {
            node_id: self.hub.ids[self.index].clone(),
            role: role.into(),
            term: st.term,
            leader_id: name(leader, &self.hub.ids),
            leader_addr: name(leader, &self.hub.addrs),
            commit_index: st.log_index,
            last_log_index: st.log_index,
            snapshot_index: 0,
            voters: self.hub.ids.clone(),
        }
    }
}

struct Drain {
    node: usize,
    started: Instant,
    last_closed: Option<Instant>,
}

struct Inner {
    hub: Arc<Hub>,
    opts: ClusterOptions,
    next_conn: Arc<AtomicU64>,
    servers: Mutex<Vec<Option<TestServer>>>,
    drains: Mutex<Vec<Drain>>,
    stop: (Mutex<bool>, Condvar),
}

impl Inner {
    fn start_node(self: &Arc<Self>, i: usize, listener: TcpListener) -> io::Result<TestServer> {
        let opts = ServerOptions {
            port: listener.local_addr()?.port(),
            follower: None,
            ..self.opts.server.clone()
        };
        let link = NodeLink {
            hub: self.hub.clone(),
            index: i,
        };
        TestServer::start_with(
            opts,
            listener,
            self.hub.table.clone(),
            self.next_conn.clone(),
            Some(link),
        )
    }

    /// Take node `i`'s server out (to drop it outside the lock).
    fn take(&self, i: usize) -> Option<TestServer> {
        lock(&self.servers).get_mut(i).and_then(Option::take)
    }

    fn with_server<R>(&self, i: usize, f: impl FnOnce(&TestServer) -> R) -> Option<R> {
        lock(&self.servers).get(i).and_then(Option::as_ref).map(f)
    }

    /// Node `i` is gone (killed or drained away).
    fn down(&self, i: usize, now: Instant, handover: bool) {
        let mut st = lock(&self.hub.state);
        st.life[i] = NodeState::Down;
        if st.leader == Some(i) {
            st.leader = None;
            st.last_leader = Some(i);
            // A drained leader hands over at once; a dead one is missed
            // only after the election timeout.
            let after = if handover {
                Duration::ZERO
            } else {
                st.election_delay
            };
            st.lose_leader(after, now);
            if handover && !st.hold {
                st.elect();
            }
        }
    }

    fn tick(&self, now: Instant) {
        {
            let mut st = lock(&self.hub.state);
            if st.election_at.is_some_and(|at| now >= at) && !st.hold {
                st.elect();
            }
        }
        let mut done = Vec::new();
        {
            let mut drains = lock(&self.drains);
            for d in drains.iter_mut() {
                let open = self.with_server(d.node, |s| s.connection_count()).unwrap_or(0);
                if open > 0 {
                    d.last_closed = None;
                } else if d.last_closed.is_none() {
                    d.last_closed = Some(now);
                }
                let quiet = d
                    .last_closed
                    .is_some_and(|t| now >= t + HANDOVER_AFTER_LAST_CLOSE);
                if quiet || now >= d.started + self.opts.shutdown_timeout {
                    done.push(d.node);
                }
            }
            drains.retain(|d| !done.contains(&d.node));
        }
        for i in done {
            let server = self.take(i);
            self.down(i, now, true);
            drop(server);
        }
    }

    fn ticker(self: Arc<Self>) {
        let sweep = self.opts.server.lease_sweep_interval;
        let gc = self.opts.server.gc_interval;
        let (mut next_sweep, mut next_gc) = (Instant::now() + sweep, Instant::now() + gc);
        let (m, cv) = &self.stop;
        loop {
            {
                let stop = lock(m);
                if *stop {
                    return;
                }
                let stop = cv.wait_timeout(stop, TICK).unwrap_or_else(|e| e.into_inner()).0;
                if *stop {
                    return;
                }
            }
            let now = Instant::now();
            self.tick(now);
            if now >= next_sweep {
                self.hub.with_table(|t| t.sweep(now));
                next_sweep = now + sweep;
            }
            if now >= next_gc {
                let max_idle = self.opts.server.gc_max_idle;
                self.hub.with_table(|t| t.collect_idle(now, max_idle));
                next_gc = now + gc;
            }
        }
    }
}

/// An in-process cluster of dflockd nodes (see the module documentation).
/// Every method takes `&self`; dropping it stops every node.
pub struct TestCluster {
    inner: Arc<Inner>,
    addrs: Vec<SocketAddr>,
    ticker: Option<JoinHandle<()>>,
}

impl TestCluster {
    /// Bind every node and start serving; the first leader is elected
    /// after `election_delay` (see [`await_leader`](Self::await_leader)).
    pub fn start(opts: ClusterOptions) -> io::Result<TestCluster> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_owned()));
        if opts.nodes == 0 {
            return bad("a cluster needs at least one node");
        }
        if !opts.ports.is_empty() && opts.ports.len() != opts.nodes {
            return bad("give one port per node, or none");
        }
        opts.server.validate()?;
        let host = opts.server.host.clone();
        let mut listeners = Vec::new();
        for i in 0..opts.nodes {
            let port = opts.ports.get(i).copied().unwrap_or(0);
            listeners.push(TcpListener::bind((host.as_str(), port))?);
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<io::Result<_>>()?;
        let n = opts.nodes;
        let table = table_for(&opts.server, 1).in_cluster();
        let hub = Arc::new(Hub {
            ids: (1..=n).map(|i| format!("n{i}")).collect(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            orphan_ttl: opts.orphan_ttl,
            state: Mutex::new(State {
                term: 0,
                leader: None,
                last_leader: None,
                hint: vec![None; n],
                life: vec![NodeState::Up; n],
                ever_led: false,
                election_at: Some(Instant::now() + opts.election_delay),
                election_delay: opts.election_delay,
                hold: false,
                // The bootstrap configuration entry: with the first
                // leader's no-op, a fresh cluster shows commit_index 2
                // (transcript cluster.log line 4).
                log_index: 1,
            }),
            table: Arc::new(Mutex::new(table)),
            nodes: Mutex::new(vec![None; n]),
        });
        let inner = Arc::new(Inner {
            hub,
            opts,
            next_conn: Arc::new(AtomicU64::new(1)),
            servers: Mutex::new(Vec::new()),
            drains: Mutex::new(Vec::new()),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let mut cluster = TestCluster {
            inner: inner.clone(),
            addrs,
            ticker: None,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let server = inner.start_node(i, l)?;
            lock(&inner.servers).push(Some(server));
        }
        let t = inner.clone();
        cluster.ticker = Some(spawn("dflockd-cluster", move || t.ticker())?);
        Ok(cluster)
    }

    /// Every node's client address, node `i` at index `i` (id `n{i+1}`).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Node `i`'s client address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the cluster has no node (never: at least one is started).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The node serving mutating commands now (a paused leader still
    /// counts until it is replaced).
    pub fn leader(&self) -> Option<usize> {
        lock(&self.inner.hub.state).leader
    }

    /// Wait (at most `within`) for a leader that is up.
    pub fn await_leader(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            {
                let st = lock(&self.inner.hub.state);
                if let Some(l) = st.leader.filter(|&l| st.life[l] == NodeState::Up) {
                    return Some(l);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The current raft term (1 after the first election).
    pub fn term(&self) -> u64 {
        lock(&self.inner.hub.state).term
    }

    /// What node `i` is doing.
    pub fn node_state(&self, i: usize) -> NodeState {
        lock(&self.inner.hub.state).life[i]
    }

    /// SIGKILL node `i`: its port refuses connections, every connection
    /// closes at once, nothing it held or queued is cleaned up. A killed
    /// leader is replaced after the election delay (with a majority up).
    pub fn kill(&self, i: usize) {
        let Some(server) = self.inner.take(i) else { return };
        lock(&self.inner.drains).retain(|d| d.node != i);
        server.shared.severed.store(true, Ordering::SeqCst);
        drop(server);
        self.inner.down(i, Instant::now(), false);
    }

    /// Stop node `i` (SIGSTOP): it answers nothing. A leader paused for
    /// longer than the election delay is replaced and, resumed, follows.
    pub fn pause(&self, i: usize) {
        if self.inner.with_server(i, |s| s.pause()).is_none() {
            return;
        }
        let mut st = lock(&self.inner.hub.state);
        st.life[i] = NodeState::Paused;
        if st.leader == Some(i) {
            let d = st.election_delay;
            st.lose_leader(d, Instant::now());
        }
    }

    /// Let paused node `i` go on (as a follower if it was replaced).
    pub fn resume(&self, i: usize) {
        {
            let mut st = lock(&self.inner.hub.state);
            if st.life[i] != NodeState::Paused {
                return;
            }
            st.life[i] = NodeState::Up;
            if st.leader == Some(i) {
                st.election_at = None; // back before it was missed
            } else {
                st.hint[i] = st.leader.or(st.hint[i]);
            }
        }
        self.inner.with_server(i, |s| s.resume());
    }

    /// SIGTERM node `i`: new connections are refused, each connection gets
    /// `error_draining` on its next request and is closed (releasing
    /// nothing), waiting requests get `error`; about 12 ms after its last
    /// client closed (or after `shutdown_timeout`) it is gone and, if it
    /// led, the next member leads at once.
    pub fn drain(&self, i: usize) {
        let started = self.inner.with_server(i, |s| {
            s.shared.severed.store(true, Ordering::SeqCst);
            s.drain();
        });
        if started.is_none() {
            return;
        }
        lock(&self.inner.hub.state).life[i] = NodeState::Draining;
        lock(&self.inner.drains).push(Drain {
            node: i,
            started: Instant::now(),
            last_closed: None,
        });
    }

    /// Start a node that is down again, on its port, as a follower (of the
    /// current leader if there is one; else it knows none).
    pub fn restart(&self, i: usize) -> io::Result<()> {
        if lock(&self.inner.servers)[i].is_some() {
            return Err(io::Error::other(format!("node {i} is running")));
        }
        let listener = TcpListener::bind(self.addrs[i])?;
        let server = self.inner.start_node(i, listener)?;
        {
            let mut st = lock(&self.inner.hub.state);
            st.life[i] = NodeState::Up;
            st.hint[i] = st.leader;
        }
        lock(&self.inner.servers)[i] = Some(server);
        Ok(())
    }

    /// While `true`, no election completes (a cluster that cannot form a
    /// majority); elections due meanwhile run when it is released.
    pub fn hold_elections(&self, hold: bool) {
        lock(&self.inner.hub.state).hold = hold;
    }

    /// The delay from a leader's loss to its successor, for later losses.
    pub fn set_election_delay(&self, delay: Duration) {
        lock(&self.inner.hub.state).election_delay = delay;
    }

    /// Open client connections on node `i` (0 when down).
    pub fn connection_count(&self, i: usize) -> usize {
        self.inner.with_server(i, |s| s.connection_count()).unwrap_or(0)
    }

    /// Acquires and waits blocked on node `i` now.
    pub fn blocked_requests(&self, i: usize) -> usize {
        self.inner.with_server(i, |s| s.blocked_requests()).unwrap_or(0)
    }

    /// Stop every node and the cluster's thread.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        {
            let (m, cv) = &self.inner.stop;
            *lock(m) = true;
            cv.notify_all();
        }
        if let Some(h) = self.ticker.take() {
            let _ = h.join();
        }
        let servers: Vec<TestServer> = std::mem::take(&mut *lock(&self.inner.servers))
            .into_iter()
            .flatten()
            .collect();
        for s in &servers {
            s.shared.severed.store(true, Ordering::SeqCst);
        }
        drop(servers);
    }
}

const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TestCluster>();
};
