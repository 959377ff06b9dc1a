//! The lock and semaphore table: every key's holders, FIFO queue and lease,
//! the fence counter, and the per-connection two-phase (`e`/`w`) state.
//!
//! Pure: no sockets, no threads, no clock reads. Callers pass `now` and
//! collect [`Table::take_woken`] to wake the connections whose blocked
//! request was granted. That keeps every rule of docs/protocol.md testable
//! here without a socket, and the connection loop free of lock logic.
//!
//! Mirrors the Go server's lock manager: locks are semaphores of limit 1 in
//! their own key space; expired leases are evicted lazily on acquire,
//! enqueue and renew as well as by the periodic sweep; a grant is
//! "committed" (its lease restarted) when the waiting request observes it.
//!
//! The 1.10 line's differences (one key namespace, random tokens, waiters
//! kept after their client left) come from [`Behaviour`] flags. The cluster
//! rules (one table shared by every node of a `TestCluster`) are in
//! `table/cluster_rules.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::line::{Behaviour, ServerLine};
use crate::protocol::{Kind, Status, Token};

/// A server-assigned connection number (`owner_conn_id` in `stats`).
pub type ConnId = u64;
/// A queued request, single-phase (`l`) or two-phase (`e` then `w`).
pub type WaiterId = u64;

/// A grant as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub token: Token,
    pub lease_s: u64,
}

/// Result of starting an acquire or a wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Granted at once.
    Granted(Grant),
    /// Queued: poll [`Table::take_grant`] until granted, or give up with
    /// [`Table::cancel_wait`].
    Blocked(WaiterId),
    /// Refused with this status (`error_max_locks`, `error_not_enqueued`...).
    Refused(Status),
}

/// Result of `e` / `se`.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueue {
    Acquired(Grant),
    Queued,
    Refused(Status),
}

/// Limits from the server options (`--max-locks`, `--max-waiters`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Distinct keys, locks and semaphores together, idle ones included.
    pub max_locks: usize,
    /// Queue length per key; 0 = unlimited (the Go server's default).
    pub max_waiters: usize,
}

struct Holder {
    conn: ConnId,
    lease: Duration,
    renewed_at: Instant,
}

impl Holder {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.renewed_at) >= self.lease
    }
}

struct Resource {
    /// 1 for locks; fixed by the first acquirer for semaphores.
    limit: u64,
    /// token → holder; a BTreeMap so `stats` and eviction are deterministic.
    holders: BTreeMap<String, Holder>,
    queue: VecDeque<WaiterId>,
    last_activity: Instant,
}

struct Waiter {
    kind: Kind,
    key: String,
    conn: ConnId,
    lease: Duration,
    /// Queued by `e` (its `w` finds it through `enqueued`).
    two_phase: bool,
    /// Set when the head of the queue was granted, until observed.
    granted: Option<String>,
    /// Its client left while it was blocked, and the line keeps such
    /// waiters (1.10): queued until its timeout, a grant to it is wasted.
    orphan: Option<Orphan>,
}

#[derive(Clone)]
struct Orphan {
    /// `None`: a timeout too far away to represent; kept until granted.
    deadline: Option<Instant>,
    /// Release a grant at once (auto-release on disconnect) rather than
    /// let its lease run out.
    release_grant: bool,
    /// Cluster: the stable ref a new connection may re-attach with (`w`),
    /// keeping the waiter's place; grants to it are kept for it.
    reattach: Option<String>,
}

/// A connection's pending two-phase state for one key.
enum Enqueued {
    /// `e` answered `acquired`: the next `w` returns this token at once.
    Acquired { token: String, lease: Duration },
    /// `e` answered `queued`.
    Queued(WaiterId),
}

type SpaceKey = (Kind, String);

pub struct Table {
    limits: Limits,
    resources: HashMap<SpaceKey, Resource>,
    waiters: HashMap<WaiterId, Waiter>,
    enqueued: HashMap<(ConnId, Kind, String), Enqueued>,
    next_waiter: WaiterId,
    next_fence: u64,
    random: fn() -> u64,
    woken: Vec<ConnId>,
    behaviour: Behaviour,
    /// Cluster rules (see `cluster_rules`): a successful renew rebinds the
    /// holder; a queued grant's lease runs from the grant.
    cluster: bool,
    /// Each connection's `stable-ref` (cluster nodes).
    refs: HashMap<ConnId, String>,
}

mod cluster_rules;
mod view;

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

impl Table {
    /// `first_fence` is the fence of the first grant; `random` fills the
    /// token's last 16 hex characters.
    pub fn new(limits: Limits, first_fence: u64, random: fn() -> u64) -> Table {
        Table {
            limits,
            resources: HashMap::new(),
            waiters: HashMap::new(),
            enqueued: HashMap::new(),
            next_waiter: 1,
            next_fence: first_fence,
            random,
            woken: Vec::new(),
            behaviour: ServerLine::V2.behaviour(),
            cluster: false,
            refs: HashMap::new(),
        }
    }

    /// Behave as `line` (2.x by default).
    pub fn for_line(mut self, line: ServerLine) -> Table {
        self.behaviour = line.behaviour();
        self
    }

    /// The namespace `kind`'s keys live in: their own on 2.x, the lock one
    /// for both kinds on 1.10.
    fn space(&self, kind: Kind) -> Kind {
        if self.behaviour.shared_namespace {
            Kind::Lock
        } else {
            kind
        }
    }

    /// The fence the next grant will carry (a restarted server continues
    /// from here so fences keep rising).
    pub fn next_fence(&self) -> u64 {
        self.next_fence
    }

    /// Connections whose blocked request was granted since the last call.
    pub fn take_woken(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.woken)
    }

    fn mint(&mut self) -> Token {
        let head = if self.behaviour.fenced_tokens {
            self.next_fence
        } else {
            (self.random)()
        };
        let t = Token::from_parts(head, (self.random)());
        self.next_fence = self.next_fence.wrapping_add(1);
        t
    }

    /// Find or create a key's state: `error_max_locks` when creating would
    /// exceed the cap, `error_limit_mismatch` on a different limit.
    fn resource(&mut self, kind: Kind, key: &str, limit: u64, now: Instant) -> Result<(), Status> {
        let sk = (kind, key.to_owned());
        if let Some(r) = self.resources.get_mut(&sk) {
            if r.limit != limit {
                return Err(Status::ErrorLimitMismatch);
            }
            r.last_activity = now;
            return Ok(());
        }
        if self.resources.len() >= self.limits.max_locks {
            return Err(Status::ErrorMaxLocks);
        }
        self.resources.insert(
            sk,
            Resource {
                limit,
                holders: BTreeMap::new(),
                queue: VecDeque::new(),
                last_activity: now,
            },
        );
        Ok(())
    }

    /// Remove expired holders of one key and hand their slots on.
    fn evict_expired(&mut self, kind: Kind, key: &str, now: Instant) {
        let sk = (kind, key.to_owned());
        let Some(r) = self.resources.get_mut(&sk) else {
            return;
        };
        let expired: Vec<(String, ConnId)> = r
            .holders
            .iter()
            .filter(|(_, h)| h.expired(now))
            .map(|(t, h)| (t.clone(), h.conn))
            .collect();
        if expired.is_empty() {
            return;
        }
        for (token, _) in &expired {
            r.holders.remove(token);
        }
        r.last_activity = now;
        for (token, conn) in &expired {
            self.forget_acquired(*conn, kind, key, token);
        }
        self.grant_next(kind, key, now);
    }

    /// Drop a connection's `e`→`acquired` state that refers to `token`.
    fn forget_acquired(&mut self, conn: ConnId, kind: Kind, key: &str, token: &str) {
        let ek = (conn, kind, key.to_owned());
        if matches!(self.enqueued.get(&ek), Some(Enqueued::Acquired { token: t, .. }) if t == token) {
            self.enqueued.remove(&ek);
        }
    }

    /// Grant free slots to the head of the queue, in FIFO order.
    fn grant_next(&mut self, kind: Kind, key: &str, now: Instant) {
        let sk = (kind, key.to_owned());
        loop {
            let Some(r) = self.resources.get(&sk) else { return };
            if r.holders.len() as u64 >= r.limit {
                return;
            }
            let Some(&id) = r.queue.front() else { return };
            let token = self.mint().as_str().to_owned();
            let Some(r) = self.resources.get_mut(&sk) else {
                return;
            };
            r.queue.pop_front();
            r.last_activity = now;
            let Some(w) = self.waiters.get_mut(&id) else {
                continue;
            };
            let holder = Holder {
                conn: w.conn,
                lease: w.lease,
                renewed_at: now,
            };
            if let Some(release_grant) = w
                .orphan
                .as_ref()
                .filter(|o| o.reattach.is_none())
                .map(|o| o.release_grant)
            {
                // Granted to a connection that is gone (1.10): the grant is
                // auto-released at once, or held until its lease runs out.
                self.waiters.remove(&id);
                if !release_grant {
                    r.holders.insert(token, holder);
                }
                continue;
            }
            r.holders.insert(token.clone(), holder);
            w.granted = Some(token);
            self.woken.push(w.conn);
        }
    }

    fn queue_waiter(
        &mut self,
        kind: Kind,
        key: &str,
        conn: ConnId,
        lease: Duration,
        two_phase: bool,
    ) -> Result<WaiterId, Status> {
        let sk = (kind, key.to_owned());
        let max = self.limits.max_waiters;
        let r = self.resources.get_mut(&sk).ok_or(Status::Error)?;
        if max > 0 && r.queue.len() >= max {
            return Err(Status::ErrorMaxWaiters);
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        r.queue.push_back(id);
        self.waiters.insert(
            id,
            Waiter {
                kind,
                key: key.to_owned(),
                conn,
                lease,
                two_phase,
                granted: None,
                orphan: None,
            },
        );
        Ok(id)
    }

    /// Take a free slot for `conn` if nobody is queued.
    fn try_fast(
        &mut self,
        kind: Kind,
        key: &str,
        conn: ConnId,
        lease: Duration,
        now: Instant,
    ) -> Option<Token> {
        let sk = (kind, key.to_owned());
        let r = self.resources.get(&sk)?;
        if r.holders.len() as u64 >= r.limit || !r.queue.is_empty() {
            return None;
        }
        let token = self.mint();
        let r = self.resources.get_mut(&sk)?;
        r.holders.insert(
            token.as_str().to_owned(),
            Holder {
                conn,
                lease,
                renewed_at: now,
            },
        );
        Some(token)
    }

    /// `l` / `sl`. `limit` is 1 for locks.
    pub fn acquire(
        &mut self,
        kind: Kind,
        key: &str,
        limit: u64,
        conn: ConnId,
        lease: Duration,
        now: Instant,
    ) -> Start {
        let kind = self.space(kind);
        if let Err(s) = self.resource(kind, key, limit, now) {
            return Start::Refused(s);
        }
        self.evict_expired(kind, key, now);
        if let Some(token) = self.try_fast(kind, key, conn, lease, now) {
            return Start::Granted(Grant {
                token,
                lease_s: secs(lease),
            });
        }
        match self.queue_waiter(kind, key, conn, lease, false) {
            Ok(id) => Start::Blocked(id),
            Err(s) => Start::Refused(s),
        }
    }

    /// `e` / `se`.
    pub fn enqueue(
        &mut self,
        kind: Kind,
        key: &str,
        limit: u64,
        conn: ConnId,
        lease: Duration,
        now: Instant,
    ) -> Enqueue {
        let kind = self.space(kind);
        let ek = (conn, kind, key.to_owned());
        if self.enqueued.contains_key(&ek) {
            return Enqueue::Refused(Status::ErrorAlreadyEnqueued);
        }
        if let Err(s) = self.resource(kind, key, limit, now) {
            return Enqueue::Refused(s);
        }
        self.evict_expired(kind, key, now);
        if let Some(token) = self.try_fast(kind, key, conn, lease, now) {
            let token_s = token.as_str().to_owned();
            self.enqueued.insert(
                ek,
                Enqueued::Acquired {
                    token: token_s,
                    lease,
                },
            );
            return Enqueue::Acquired(Grant {
                token,
                lease_s: secs(lease),
            });
        }
        match self.queue_waiter(kind, key, conn, lease, true) {
            Ok(id) => {
                self.enqueued.insert(ek, Enqueued::Queued(id));
                Enqueue::Queued
            }
            Err(s) => Enqueue::Refused(s),
        }
    }

    /// `w` / `sw`: must follow `e` on the same connection.
    pub fn wait(&mut self, kind: Kind, key: &str, conn: ConnId, now: Instant) -> Start {
        let kind = self.space(kind);
        let ek = (conn, kind, key.to_owned());
        let id = match self.enqueued.get(&ek) {
            Some(Enqueued::Queued(id)) => *id,
            None => match self.reattach(kind, key, conn) {
                Start::Blocked(id) => id,
                other => return other,
            },
            Some(Enqueued::Acquired { .. }) => {
                let Some(Enqueued::Acquired { token, lease }) = self.enqueued.remove(&ek) else {
                    return Start::Refused(Status::ErrorNotEnqueued);
                };
                return match self.commit(kind, key, &token, lease, true, now) {
                    Ok(g) => Start::Granted(g),
                    Err(s) => Start::Refused(s),
                };
            }
        };
        // A grant made before this `w` came is picked up now (in a cluster
        // with the seconds left of it); else the `w` blocks.
        match self.take_grant_as(id, true, now) {
            Some(Ok(g)) => Start::Granted(g),
            Some(Err(s)) => Start::Refused(s),
            None => Start::Blocked(id),
        }
    }

    /// A granted token is observed by its requester: restart its lease
    /// (a grant via `w` runs a full TTL from now). `error_lease_expired` if
    /// it expired in between. In a cluster the lease runs from the grant:
    /// a request blocked on it when it was granted (`later` false) answers
    /// with the lease it asked for, like the real server's promotion; one
    /// that picks up an earlier grant (`later`) with the whole seconds left.
    fn commit(
        &mut self,
        kind: Kind,
        key: &str,
        token: &str,
        lease: Duration,
        later: bool,
        now: Instant,
    ) -> Result<Grant, Status> {
        let sk = (kind, key.to_owned());
        let Some(r) = self.resources.get_mut(&sk) else {
            return Err(Status::ErrorLeaseExpired);
        };
        let Some(h) = r.holders.get_mut(token) else {
            return Err(Status::ErrorLeaseExpired);
        };
        if h.expired(now) {
            r.holders.remove(token);
            r.last_activity = now;
            self.grant_next(kind, key, now);
            return Err(Status::ErrorLeaseExpired);
        }
        r.last_activity = now;
        let lease_s = if self.cluster && later {
            cluster_rules::lease_left_s(h, now)
        } else if self.cluster {
            secs(h.lease)
        } else {
            h.renewed_at = now;
            h.lease = lease;
            secs(lease)
        };
        let token = Token::parse(token).map_err(|_| Status::Error)?;
        Ok(Grant { token, lease_s })
    }

    /// Remove a waiter and its two-phase state. Returns it.
    fn remove_waiter(&mut self, id: WaiterId, now: Instant) -> Option<Waiter> {
        let w = self.waiters.remove(&id)?;
        let sk = (w.kind, w.key.clone());
        if let Some(r) = self.resources.get_mut(&sk) {
            r.queue.retain(|&q| q != id);
            r.last_activity = now;
        }
        if w.two_phase {
            let ek = (w.conn, w.kind, w.key.clone());
            if matches!(self.enqueued.get(&ek), Some(Enqueued::Queued(q)) if *q == id) {
                self.enqueued.remove(&ek);
            }
        }
        Some(w)
    }

    /// The outcome of a blocked request if it was granted: `Some(Ok)` with
    /// its lease restarted, `Some(Err(error_lease_expired))` if the grant
    /// expired before it was observed, `None` while still queued.
    pub fn take_grant(&mut self, id: WaiterId, now: Instant) -> Option<Result<Grant, Status>> {
        self.take_grant_as(id, false, now)
    }

    /// [`take_grant`](Self::take_grant); `later`: by a `w` that came after
    /// the grant (see [`commit`](Self::commit)).
    fn take_grant_as(&mut self, id: WaiterId, later: bool, now: Instant) -> Option<Result<Grant, Status>> {
        self.waiters.get(&id)?.granted.as_ref()?;
        let w = self.remove_waiter(id, now)?;
        let token = w.granted?;
        if let Some(h) = self
            .resources
            .get_mut(&(w.kind, w.key.clone()))
            .and_then(|r| r.holders.get_mut(&token))
        {
            // The waiter's connection (a re-attached one, in a cluster) owns it.
            h.conn = w.conn;
        }
        Some(self.commit(w.kind, &w.key, &token, w.lease, later, now))
    }

    /// The blocked request's timeout ran out: a grant that raced it wins,
    /// otherwise the waiter leaves the queue (a later `w` gets
    /// `error_not_enqueued`).
    pub fn cancel_wait(&mut self, id: WaiterId, now: Instant) -> Result<Grant, Status> {
        if let Some(result) = self.take_grant(id, now) {
            return result;
        }
        let w = self.remove_waiter(id, now);
        if let Some(w) = w {
            self.grant_next(w.kind, &w.key, now);
        }
        Err(Status::Timeout)
    }

    /// The blocked request is cut off (shutdown): leave the queue and give
    /// back a grant that raced it.
    pub fn abandon_wait(&mut self, id: WaiterId, now: Instant) {
        if let Some(w) = self.remove_waiter(id, now) {
            if let Some(token) = &w.granted {
                if let Some(r) = self.resources.get_mut(&(w.kind, w.key.clone())) {
                    r.holders.remove(token);
                }
            }
            self.grant_next(w.kind, &w.key, now);
        }
    }

    /// The client of a blocked request went away. On a line that keeps
    /// such waiters (1.10) it stays queued until `deadline` (its request's
    /// timeout); a grant that already raced it is given back. Otherwise
    /// nothing: [`drop_connection`](Self::drop_connection) removes it.
    pub fn orphan_wait(
        &mut self,
        id: WaiterId,
        deadline: Option<Instant>,
        release_grant: bool,
        now: Instant,
    ) {
        if !self.behaviour.keep_dropped_waiters {
            return;
        }
        let Some(w) = self.waiters.get_mut(&id) else {
            return;
        };
        if w.granted.is_some() {
            self.abandon_wait(id, now);
            return;
        }
        w.orphan = Some(Orphan {
            deadline,
            release_grant,
            reattach: None,
        });
    }

    /// Remove kept waiters (see [`orphan_wait`](Self::orphan_wait)) whose
    /// timeout passed.
    fn expire_orphans(&mut self, now: Instant) {
        let due: Vec<WaiterId> = self
            .waiters
            .iter()
            .filter(|(_, w)| {
                w.orphan
                    .as_ref()
                    .is_some_and(|o| o.deadline.is_some_and(|d| now >= d))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(w) = self.remove_waiter(id, now) {
                self.grant_next(w.kind, &w.key, now);
            }
        }
    }

    /// `r` / `sr`. Like the Go server, a held token is released even if its
    /// lease ran out but was not swept yet.
    pub fn release(&mut self, kind: Kind, key: &str, token: &str, now: Instant) -> bool {
        let kind = self.space(kind);
        let sk = (kind, key.to_owned());
        let Some(r) = self.resources.get_mut(&sk) else {
            return false;
        };
        let Some(h) = r.holders.remove(token) else {
            return false;
        };
        r.last_activity = now;
        self.forget_acquired(h.conn, kind, key, token);
        self.grant_next(kind, key, now);
        true
    }

    /// `n` / `sn` from connection `conn`: the new lease in seconds, or
    /// `None` (`error`) when the token is not held or already expired: an
    /// expired lease is never revived. In a cluster the renewing
    /// connection becomes the holder (docs/protocol.md, "Which connection
    /// owns a lease"); a single node keeps the acquiring one.
    pub fn renew(
        &mut self,
        kind: Kind,
        key: &str,
        token: &str,
        conn: ConnId,
        lease: Duration,
        now: Instant,
    ) -> Option<u64> {
        let kind = self.space(kind);
        let sk = (kind, key.to_owned());
        let r = self.resources.get_mut(&sk)?;
        let h = r.holders.get_mut(token)?;
        if h.expired(now) {
            let conn = h.conn;
            r.holders.remove(token);
            r.last_activity = now;
            self.forget_acquired(conn, kind, key, token);
            self.grant_next(kind, key, now);
            return None;
        }
        h.renewed_at = now;
        h.lease = lease;
        if self.cluster {
            h.conn = conn;
        }
        r.last_activity = now;
        Some(secs(lease))
    }

    /// The periodic lease sweep: evict every expired lease and pass its
    /// slot to the next waiter.
    pub fn sweep(&mut self, now: Instant) {
        self.expire_orphans(now);
        let keys: Vec<SpaceKey> = self
            .resources
            .iter()
            .filter(|(_, r)| r.holders.values().any(|h| h.expired(now)))
            .map(|(k, _)| k.clone())
            .collect();
        for (kind, key) in keys {
            self.evict_expired(kind, &key, now);
        }
    }

    /// Garbage-collect keys idle (no holder, no waiter) for `max_idle`;
    /// until then they count towards `max_locks`.
    pub fn collect_idle(&mut self, now: Instant, max_idle: Duration) {
        self.resources.retain(|_, r| {
            !(r.holders.is_empty()
                && r.queue.is_empty()
                && now.saturating_duration_since(r.last_activity) >= max_idle)
        });
    }

    /// The waiters connection `conn` has queued now (not orphans it left
    /// behind earlier).
    fn waiters_of(&self, conn: ConnId) -> Vec<WaiterId> {
        self.waiters
            .iter()
            .filter(|(_, w)| w.conn == conn && w.orphan.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// A connection closed: drop its waiters and two-phase state and, when
    /// `release_held`, release everything it holds.
    pub fn drop_connection(&mut self, conn: ConnId, release_held: bool, now: Instant) {
        let ids = self.waiters_of(conn);
        let mut touched: Vec<SpaceKey> = Vec::new();
        for id in ids {
            if let Some(w) = self.remove_waiter(id, now) {
                if let Some(token) = &w.granted {
                    if let Some(r) = self.resources.get_mut(&(w.kind, w.key.clone())) {
                        r.holders.remove(token);
                    }
                }
                touched.push((w.kind, w.key));
            }
        }
        self.enqueued.retain(|(c, _, _), _| *c != conn);
        self.refs.remove(&conn);
        if release_held {
            for (sk, r) in self.resources.iter_mut() {
                let before = r.holders.len();
                r.holders.retain(|_, h| h.conn != conn);
                if r.holders.len() != before {
                    r.last_activity = now;
                    touched.push(sk.clone());
                }
            }
        }
        for (kind, key) in touched {
            self.grant_next(kind, &key, now);
        }
    }

    /// Whether a queued request is still queued (not granted, not removed).
    #[cfg(test)]
    pub fn is_waiting(&self, id: WaiterId) -> bool {
        self.waiters.get(&id).is_some_and(|w| w.granted.is_none())
    }
}
