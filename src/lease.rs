//! Lock and semaphore handles. One type for both: they differ only by
//! [`Kind`] and the semaphore's limit.
//!
//! The handle's public API, the blocking operations (run on the caller's
//! thread) and the starts of the evented ones (handed to src/engine/). The
//! lease's state and its transitions are in src/held.rs; `Client::lock` and
//! `Client::semaphore` are here, beside `Lease::new`, so the client module
//! below needs no lease type. Two-phase waits run on the connection that
//! enqueued. The starts of the evented operations are in src/lease/starts.rs.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientInner};
use crate::clock::Boot;
use crate::engine;
use crate::events::Events;
use crate::fork::bury;
use crate::held::{Cadence, Home, OpGuard, Shared, State, cancelled, invalid, notify_lost};
pub use crate::held::{DoneFn, DoubtCallback, LostCallback};
use crate::metrics::bump;
use crate::operation::Operation;
use crate::protocol::{Kind, MAX_SECONDS, Token, validate_key};
use crate::runtime::Users;
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

mod drive;
mod starts;

use drive::Ended;

/// What [`Lease::on_lost`] takes.
pub type LostFn = Box<dyn Fn(&Error) + Send + Sync>;

/// What [`Lease::on_doubt`] takes: called with `false` when a held lease
/// falls in doubt, `true` when it is confirmed again.
pub type DoubtFn = Box<dyn Fn(bool) + Send + Sync>;

/// A lock or semaphore on one key. All methods take `&self`, so another
/// thread can [`cancel`](Lease::cancel) a blocked acquire or wait, or watch
/// for loss. Dropping the handle cancels what is in flight and releases
/// what is held (best effort).
///
/// A lease keeps its client's library threads running (see
/// [`Client`]). Inherited through `fork()`, every
/// fallible method returns [`ErrorKind::Forked`], `is_held`/`is_lost` are
/// false, `wait_lost` returns `true` at once with `lost_error` saying why,
/// and dropping it sends nothing (it is leaked).
pub struct Lease {
    shared: Arc<Shared>,
    /// Keeps the library threads of this lease's generation running.
    _users: Arc<Users>,
}

impl Client {
    /// A lock handle for `key` (key validated; nothing acquired yet).
    pub fn lock(&self, key: &str) -> Result<Lease> {
        self.check_fork()?;
        Lease::new(
            Arc::clone(&self.inner),
            Arc::clone(&self.users),
            key,
            Kind::Lock,
            None,
        )
    }

    /// A semaphore handle for `key` allowing `limit` holders (1 or more;
    /// every user of the key must pass the same limit).
    pub fn semaphore(&self, key: &str, limit: u64) -> Result<Lease> {
        self.check_fork()?;
        if limit == 0 || limit > i64::MAX as u64 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("semaphore limit must be between 1 and {}, got {limit}", i64::MAX),
            ));
        }
        Lease::new(
            Arc::clone(&self.inner),
            Arc::clone(&self.users),
            key,
            Kind::Semaphore,
            Some(limit),
        )
    }
}

impl Lease {
    pub(crate) fn new(
        client: Arc<ClientInner>,
        users: Arc<Users>,
        key: &str,
        kind: Kind,
        limit: Option<u64>,
    ) -> Result<Lease> {
        validate_key(key)?;
        let server = client.server_for(key)?;
        Ok(Lease {
            _users: users,
            shared: Arc::new(Shared {
                client,
                key: key.to_owned(),
                kind,
                limit,
                server,
                state: Mutex::new(State::default()),
                lost_cv: Condvar::new(),
                on_lost: Mutex::new(None),
                on_doubt: Mutex::new(None),
                #[cfg(test)]
                panic_next_renewal: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// `Err(`[`ErrorKind::Forked`]`)` if this handle was inherited through
    /// `fork()`. Takes no lock.
    pub(crate) fn check_fork(&self) -> Result<()> {
        self.shared.client.stamp.check("lease")
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The key this handle locks.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// Lock or semaphore.
    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// The semaphore limit (`None` for a lock).
    pub fn limit(&self) -> Option<u64> {
        self.shared.limit
    }

    /// The lease to request from the next acquire and on every renewal
    /// (`None`: the client's `default_lease_ttl_s`, else the server's).
    pub fn set_lease_ttl(&self, lease_s: Option<u64>) -> Result<()> {
        self.check_fork()?;
        if let Some(l) = lease_s {
            if !(1..=MAX_SECONDS).contains(&l) {
                return Err(invalid(format!(
                    "lease must be 1..={MAX_SECONDS} seconds, got {l}"
                )));
            }
        }
        lock(&self.shared.state).lease_ttl = lease_s;
        Ok(())
    }

    /// Acquire, waiting up to `timeout_s` seconds (0 = try once).
    /// [`ErrorKind::Timeout`] when not granted in time,
    /// [`ErrorKind::Cancelled`] after [`cancel`](Lease::cancel).
    pub fn acquire(&self, timeout_s: u64) -> Result<()> {
        self.check_fork()?;
        let op = self.shared.begin("acquire")?;
        let r = self.shared.acquire(&op, timeout_s);
        self.shared.count_timeout(&r);
        r
    }

    /// Try once: `Ok(true)` if acquired, `Ok(false)` if taken.
    pub fn try_acquire(&self) -> Result<bool> {
        match self.acquire(0) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Timeout => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Two-phase, phase 1: join the queue. `Ok(true)`: acquired at once;
    /// `Ok(false)`: queued, call [`wait`](Lease::wait).
    pub fn enqueue(&self) -> Result<bool> {
        self.check_fork()?;
        let op = self.shared.begin("enqueue")?;
        self.shared.enqueue(&op)
    }

    /// Two-phase, phase 2: wait up to `timeout_s` for the grant. Returns at
    /// once if enqueue already acquired. [`ErrorKind::NotEnqueued`] without
    /// an enqueue; after [`ErrorKind::Timeout`] the place in the queue is
    /// gone.
    pub fn wait(&self, timeout_s: u64) -> Result<()> {
        self.check_fork()?;
        let op = self.shared.begin_wait()?;
        match op {
            None => Ok(()),
            Some((op, home)) => {
                let r = self.shared.wait(&op, home, timeout_s);
                self.shared.count_timeout(&r);
                r
            }
        }
    }

    /// Release the lease (or leave the queue after a `queued` enqueue).
    /// [`ErrorKind::NotHeld`] if nothing is held, [`ErrorKind::LeaseLost`]
    /// if it was lost.
    pub fn release(&self) -> Result<()> {
        self.check_fork()?;
        self.shared.release()
    }

    /// From any thread: make a blocked acquire, enqueue or wait return
    /// [`ErrorKind::Cancelled`] promptly, leaving nothing held. Between a
    /// `queued` enqueue and its wait (a two-phase acquire in progress) it
    /// leaves the queue, and the wait then returns `Cancelled`. Does
    /// nothing when no operation is running.
    pub fn cancel(&self) {
        if self.check_fork().is_err() {
            return; // never shut down a socket the parent still uses
        }
        let mut st = lock(&self.shared.state);
        if st.busy {
            st.cancel = true;
            if let Some(conn) = &st.in_flight {
                conn.abort();
            }
            if let Some(id) = st.evented {
                drop(st);
                engine::poke(&self.shared.client.runtime, id);
            }
        } else if let Some(home) = st.queued.take() {
            // Between enqueue and wait the two-phase acquire is still in
            // progress: leave the queue (closing the connection drops the
            // waiter) and let the wait that follows report it.
            st.queue_cancelled = true;
            home.conn.abort();
        }
    }

    /// The current token while held.
    pub fn token(&self) -> Option<Token> {
        self.check_fork().ok()?;
        lock(&self.shared.state).lease.grant().map(|h| h.token)
    }

    /// The fence (first 16 hex digits of the token) while held; it rises
    /// with every grant on 2.x servers.
    pub fn fence(&self) -> Option<u64> {
        self.token().map(|t| t.fence())
    }

    /// The lease length the server granted (or last renewed to), while held.
    pub fn lease_ttl_s(&self) -> Option<u64> {
        self.check_fork().ok()?;
        lock(&self.shared.state).lease.grant().map(|h| h.life.lease_s)
    }

    /// Whether the lease is held and, as far as the client knows, not
    /// expired. Never optimistic about the lease's own clock, but when the
    /// server lets go on its own (its idle timeout, a network that closes
    /// only one direction) the client learns it one network delay later at
    /// the earliest, so this may still be true for about one round trip
    /// after the server released it (and another client may hold it). Pass
    /// the fence ([`Lease::fence`]) with every write to the guarded
    /// resource and have it refuse older fences: that covers the window.
    pub fn is_held(&self) -> bool {
        self.check_fork().is_ok() && lock(&self.shared.state).lease.is_held(Boot::now())
    }

    /// Whether the handle has a grant in doubt: its connection went (in
    /// cluster mode, a leader failover) and a renewal elsewhere has not yet
    /// confirmed it. [`is_held`](Lease::is_held) is false meanwhile; it ends
    /// confirmed (held again) or lost.
    pub fn is_doubted(&self) -> bool {
        self.check_fork().is_ok() && lock(&self.shared.state).lease.grant().is_some_and(|h| h.doubted)
    }

    /// Set (or clear) the callback run when a held lease falls in doubt
    /// (`false`) and when it is confirmed (`true`). It runs on a library
    /// thread, outside every lock; keep it short. A doubt ends in a
    /// confirmation or a loss ([`on_lost`](Lease::on_lost)).
    pub fn on_doubt(&self, callback: Option<DoubtFn>) {
        if self.check_fork().is_err() {
            return;
        }
        *lock(&self.shared.on_doubt) = callback.map(Arc::from);
    }

    /// Whether the last held lease was lost (cleared by the next grant).
    pub fn is_lost(&self) -> bool {
        self.check_fork().is_ok() && lock(&self.shared.state).lease.lost().is_some()
    }

    /// The error the lease was lost with.
    pub fn lost_error(&self) -> Option<Error> {
        if let Err(e) = self.check_fork() {
            return Some(e);
        }
        lock(&self.shared.state).lease.lost().cloned()
    }

    /// Queue one [`EventKind::Lost`](crate::events::EventKind::Lost) event
    /// tagged `tag` on `events` when the lease held by this handle is lost
    /// (at once if it already was), for programs that wait on their own
    /// event loop: poll [`Events::fd`]. A release is not a loss and sends
    /// none. A handle has one registration: it stays (across releases and
    /// new acquires) until the next loss fires it, and a new call replaces
    /// it (its queue and tag), so registering after every grant keeps
    /// memory flat.
    pub fn watch_lost(&self, events: &Events, tag: u64) -> Result<()> {
        self.check_fork()?;
        self.shared.watch_lost(&events.queue, tag);
        Ok(())
    }

    /// Block until the lease is lost (`true`) or `timeout` passes
    /// (`false`); `None` waits without bound.
    pub fn wait_lost(&self, timeout: Option<Duration>) -> bool {
        if self.check_fork().is_err() {
            return true; // nothing will ever happen to it here: see lost_error
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = lock(&self.shared.state);
        while st.lease.lost().is_none() {
            st = match deadline {
                None => self.shared.lost_cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let Some(left) = d.checked_duration_since(Instant::now()) else {
                        return false;
                    };
                    self.shared
                        .lost_cv
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        true
    }

    /// Set (or clear) the callback run once when a held lease is lost. It
    /// runs on a library thread, outside every lock; keep it short. Set on
    /// an already lost lease, it runs at once (on that thread).
    pub fn on_lost(&self, callback: Option<LostFn>) {
        if self.check_fork().is_err() {
            return;
        }
        let callback: Option<LostCallback> = callback.map(Arc::from);
        *lock(&self.shared.on_lost) = callback.clone();
        let lost = lock(&self.shared.state).lease.lost().cloned();
        if let (Some(cb), Some(err)) = (callback, lost) {
            notify_lost(&self.shared.client, cb, err);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.check_fork().is_err() {
            // Inherited: its state may be locked by the parent's vanished
            // threads, and releasing would free the parent's lease.
            bury(Arc::clone(&self.shared));
            return;
        }
        self.cancel();
        let _ = self.shared.release();
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.shared.key)
            .field("kind", &self.shared.kind)
            .field("limit", &self.shared.limit)
            .field("held", &self.is_held())
            .finish()
    }
}

impl Shared {
    fn cadence(&self) -> Cadence {
        Cadence::of(&self.client.config)
    }

    fn acquire(self: &Arc<Self>, _op: &OpGuard, timeout_s: u64) -> Result<()> {
        if timeout_s > MAX_SECONDS {
            // Refused as its request would be (a try on a home goes first,
            // and carries no timeout).
            let (kind, key, limit) = (self.kind, self.key.as_str(), self.limit);
            crate::protocol::Request::Acquire {
                kind,
                key,
                timeout_s,
                limit,
                lease_s: None,
            }
            .encode(&mut Vec::new())?;
        }
        let cap = self.client.call_deadline(timeout_s);
        let op = Operation::acquire(self.kind, &self.key, timeout_s, false, self.cadence())
            .in_cluster(self.client.config.cluster)
            .sharing(self.client.config.max_leases_per_connection > 1);
        self.drive(op, None, cap, "acquire").map(drop)
    }

    fn enqueue(self: &Arc<Self>, _op: &OpGuard) -> Result<bool> {
        let cap = self.client.call_deadline(0);
        let op = Operation::enqueue(self.kind, &self.key, self.cadence());
        match self.drive(op, None, cap, "enqueue")? {
            Ended::Queued(home) => {
                let mut st = lock(&self.state);
                if st.cancel {
                    // Closing the connection drops our place in the queue.
                    home.conn.abort();
                    return Err(cancelled("enqueue"));
                }
                st.queued = Some(home);
                Ok(false)
            }
            Ended::Held | Ended::Released => Ok(true),
        }
    }

    fn wait(self: &Arc<Self>, _op: &OpGuard, home: Home, timeout_s: u64) -> Result<()> {
        // On timeout the server removed us from the queue; the connection
        // itself is still good unless broken (given back either way).
        let cap = self.client.call_deadline(timeout_s);
        let op = Operation::wait(self.kind, &self.key, timeout_s, self.cadence())
            .in_cluster(self.client.config.cluster);
        self.drive(op, Some(home), cap, "wait").map(drop)
    }

    /// Best-effort release of a grant nobody will hold (a cancel raced it):
    /// on its own connection if usable, else on a fresh one (a server
    /// without auto-release would otherwise keep it until it expires).
    fn release_grant(self: &Arc<Self>, token: Token, home: Home) {
        let cap = self.client.call_deadline(0);
        let op = Operation::release(self.kind, &self.key, token, !home.conn.is_broken());
        let _ = self.drive(op, Some(home), cap, "release");
    }

    /// Count a server `timeout` answer to an acquire or wait.
    fn count_timeout(&self, r: &Result<()>) {
        if r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Timeout) {
            bump(&self.client.metrics.acquire_timeouts);
        }
    }

    fn release(self: &Arc<Self>) -> Result<()> {
        let r = self.release_once();
        if r.is_ok() {
            bump(&self.client.metrics.releases);
        }
        r
    }

    fn release_once(self: &Arc<Self>) -> Result<()> {
        let Some((token, home, room)) = self.take_for_release()? else {
            return Ok(());
        };
        // (This thread holds the home for the release: its place there
        // can go now, so the home returns to the idle pool after it.)
        drop(room);
        let cap = self.client.call_deadline(0);
        let op = Operation::release(self.kind, &self.key, token, !home.conn.is_broken());
        self.drive(op, Some(home), cap, "release").map(drop)
    }
}
