//! A lease handle's state, shared by the handle (src/lease.rs), the evented
//! operations (src/engine/) and the renewal policy (src/renewal.rs): the
//! pure lease machine (`machine.rs`: granted, released, doubted, confirmed,
//! lost, by generation) run under the handle's mutex, and the side effects
//! of its transitions here: wake-ups armed in the reactor, hang-up watches,
//! the home's ticket, watchers told, callbacks run, homes closed.
//!
//! A held lease pins the connection it was granted on (its *home*): the
//! server releases a lease when that connection closes, so the home stays
//! open while the lease is held and carries the renewals (which also keep
//! it from the server's idle timeout). After release the home goes back to
//! the client's pool.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

mod machine;

#[cfg(test)]
pub(crate) use machine::MIN_INTERVAL;
pub(crate) use machine::{Cadence, Due, Failure, HangUp, Life, Machine, after_failure, on_hang_up};

use crate::client::{ClientInner, Config};
use crate::clock::Stamp;
use crate::connection::{Connection, HomeTicket, Reservation};
use crate::events::{self, Queue};
use crate::log::{Level, log};
use crate::metrics::bump;
use crate::notify::on_notifier;
use crate::protocol::{Kind, Token};
use crate::reactor::{self, Timed, Watch, Watcher};
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

impl Cadence {
    /// The cadence `config` asks for.
    pub(crate) fn of(config: &Config) -> Cadence {
        Cadence::new(config.renew_ratio, config.effective_keepalive())
    }
}

/// Time between renewals of a lease of `lease_s` seconds under `config`.
pub(crate) fn interval(config: &Config, lease_s: u64) -> Duration {
    Cadence::of(config).interval(lease_s)
}

/// Ask the reactor to wake `lease` at `due`, when the lease machine says
/// so (a transition returned it).
pub(crate) fn arm(lease: &Arc<Shared>, due: Option<Instant>) {
    let Some(due) = due else { return };
    // Callers made sure the reactor runs before holding a lease.
    if let Some(reactor) = reactor::started(&lease.client.runtime) {
        let owner: Weak<dyn Timed> = Arc::downgrade(lease) as Weak<dyn Timed>;
        reactor.wake_at(owner, due);
    }
}

/// Run a lost-lease callback on the notifier thread of `client`'s
/// generation (inline, on the calling thread, if that thread cannot be
/// started or the generation is shutting down).
pub(crate) fn notify_lost(client: &ClientInner, callback: LostCallback, err: Error) {
    on_notifier(&client.runtime, Box::new(move || callback(&err)));
}

/// Called once when a held lease is lost, on a library thread.
pub type LostCallback = Arc<dyn Fn(&Error) + Send + Sync>;

/// Called on a library thread when a held lease falls in doubt (`false`)
/// and when a doubted one is confirmed (`true`).
pub type DoubtCallback = Arc<dyn Fn(bool) + Send + Sync>;

/// What `Lease::acquire_async` calls when done.
pub type DoneFn = Box<dyn FnOnce(Result<()>) + Send>;

/// The connection a lease lives on, and which server it is.
pub(crate) struct Home {
    pub(crate) conn: Arc<Connection>,
    pub(crate) server: usize,
}

/// Where a held lease lives, as the lease machine keeps it: its home, the
/// reactor's hang-up watch on it (removed when dropped: on release, loss or
/// a new home), and its ticket on the home (which may carry others).
pub(crate) struct Residence {
    pub(crate) home: Home,
    pub(crate) watch: Option<Watch>,
    pub(crate) ticket: HomeTicket,
}

/// A grant the handle holds.
pub(crate) type Held = machine::Holding<Residence>;

/// Everything a lease handle knows, under one mutex.
#[derive(Default)]
pub(crate) struct State {
    /// Requested lease for the next acquire/renew (`None`: client default).
    pub(crate) lease_ttl: Option<u64>,
    /// An acquire/enqueue/wait is running.
    pub(crate) busy: bool,
    /// cancel() was called for the running operation.
    pub(crate) cancel: bool,
    /// The connection the running operation is blocked on.
    pub(crate) in_flight: Option<Arc<Connection>>,
    /// The running operation is the engine's (`acquire_start`,
    /// `acquire_async`): its id, for cancel.
    pub(crate) evented: Option<u64>,
    /// After enqueue answered `queued`: where to send wait.
    pub(crate) queued: Option<Home>,
    /// The completion queue (and tag) to tell when the lease is lost.
    pub(crate) lost_watcher: Option<(Weak<Queue>, u64)>,
    /// cancel() ended a two-phase acquire between enqueue and wait: the
    /// next wait reports Cancelled (not NotEnqueued).
    pub(crate) queue_cancelled: bool,
    /// The grant, if any, and what ended the last one (src/held/machine.rs).
    pub(crate) lease: Machine<Residence>,
}

/// The state of one lease handle, shared with the library's threads (the
/// handle itself, `Lease`, is in src/lease.rs).
pub(crate) struct Shared {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) key: String,
    pub(crate) kind: Kind,
    pub(crate) limit: Option<u64>,
    pub(crate) server: usize,
    pub(crate) state: Mutex<State>,
    pub(crate) lost_cv: Condvar,
    pub(crate) on_lost: Mutex<Option<LostCallback>>,
    pub(crate) on_doubt: Mutex<Option<DoubtCallback>>,
    #[cfg(test)]
    pub(crate) panic_next_renewal: std::sync::atomic::AtomicBool,
}

/// Marks the handle busy for one operation; clears it on drop.
pub(crate) struct OpGuard(pub(crate) Arc<Shared>);

impl Drop for OpGuard {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.busy = false;
        st.cancel = false;
        st.in_flight = None;
        st.evented = None;
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

pub(crate) fn cancelled(what: &str) -> Error {
    Error::new(ErrorKind::Cancelled, format!("{what}: cancelled"))
}

impl Shared {
    pub(crate) fn requested_ttl(&self) -> Option<u64> {
        lock(&self.state)
            .lease_ttl
            .or(self.client.config.default_lease_ttl_s)
    }

    pub(crate) fn renew_ttl(&self) -> Option<u64> {
        self.requested_ttl()
    }

    /// Start an acquire/enqueue: refuses if one is running or the lease is
    /// held or queued.
    pub(crate) fn begin(self: &Arc<Self>, what: &str) -> Result<OpGuard> {
        let mut st = lock(&self.state);
        if st.busy {
            return Err(invalid(format!(
                "{what}: another operation is running on this handle"
            )));
        }
        if st.lease.grant().is_some() {
            return Err(invalid(format!("{what}: already held; release first")));
        }
        if st.queued.is_some() {
            return Err(invalid(format!(
                "{what}: already enqueued; wait or release first"
            )));
        }
        st.queue_cancelled = false;
        st.busy = true;
        st.cancel = false;
        Ok(OpGuard(Arc::clone(self)))
    }

    /// Start a wait: `None` if already held (enqueue acquired at once).
    pub(crate) fn begin_wait(self: &Arc<Self>) -> Result<Option<(OpGuard, Home)>> {
        let mut st = lock(&self.state);
        if st.busy {
            return Err(invalid("wait: another operation is running on this handle"));
        }
        if st.lease.grant().is_some() {
            return Ok(None);
        }
        let Some(home) = st.queued.take() else {
            if std::mem::take(&mut st.queue_cancelled) {
                return Err(cancelled("wait"));
            }
            return Err(Error::new(
                ErrorKind::NotEnqueued,
                "wait: not enqueued (call enqueue first)",
            ));
        };
        st.busy = true;
        st.cancel = false;
        Ok(Some((OpGuard(Arc::clone(self)), home)))
    }

    /// Whether cancel() was called for the running operation.
    pub(crate) fn cancel_requested(&self) -> bool {
        lock(&self.state).cancel
    }

    /// Record a trusted grant (anchored at `anchor`) as held and schedule
    /// its renewal; the blocking and the evented acquire end here. If the
    /// operation was cancelled meanwhile, the grant comes back for the
    /// caller to give up.
    #[allow(clippy::result_large_err)]
    pub(crate) fn hold(
        self: &Arc<Self>,
        token: Token,
        lease_s: u64,
        home: Home,
        anchor: Stamp,
        what: &str,
    ) -> std::result::Result<(), (Error, Token, Home)> {
        let mut st = lock(&self.state);
        if st.cancel {
            return Err((cancelled(what), token, home));
        }
        let st = &mut *st;
        bump(&self.client.metrics.acquires);
        let life = Life { lease_s, anchor };
        let watch = self.watch_home(&home.conn, st.lease.generation() + 1);
        let ticket = HomeTicket::new(&home.conn);
        self.client.add_home(home.server, &home.conn);
        let residence = Residence { home, watch, ticket };
        let due = st
            .lease
            .hold(token, life, residence, interval(&self.client.config, lease_s));
        arm(self, due);
        Ok(())
    }

    /// Take what a release lets go of off the handle: `None` after leaving
    /// the queue (a queued enqueue: closing its connection drops the
    /// waiter, nothing more to say), else the grant's token and home, its
    /// hang-up watch already removed, and its place on the home (kept
    /// while the release is in flight). `NotHeld` / `LeaseLost` if nothing is
    /// held.
    pub(crate) fn take_for_release(&self) -> Result<Option<(Token, Home, Reservation)>> {
        let mut st = lock(&self.state);
        if let Some(home) = st.queued.take() {
            drop(st);
            home.conn.abort();
            return Ok(None);
        }
        let held = st.lease.release().map_err(|lost| match lost {
            Some(e) => Error::new(ErrorKind::LeaseLost, format!("release: lease was lost: {e}")),
            None => Error::new(ErrorKind::NotHeld, "release: not held"),
        })?;
        drop(st);
        let Held {
            token,
            home: Residence { home, watch, ticket },
            ..
        } = held;
        // Unregister before the connection can go back to the pool or to
        // the engine's release (either may register the same socket).
        drop(watch);
        let room = Reservation::new(&home.conn);
        drop(ticket);
        Ok(Some((token, home, room)))
    }

    /// Ask the reactor to watch a home connection for hang-up.
    pub(crate) fn watch_home(self: &Arc<Self>, conn: &Arc<Connection>, generation: u64) -> Option<Watch> {
        let owner: Weak<dyn Watcher> = Arc::downgrade(self) as Weak<dyn Watcher>;
        reactor::started(&self.client.runtime)?.watch(owner, generation, conn)
    }

    /// The server hung up the home connection of grant `generation` (the
    /// engine saw EOF or a reset). With auto-release (the default, see
    /// `Config::auto_release_on_disconnect`) on a single server the lease
    /// is lost at once. Without it, or in cluster mode (a dead or draining
    /// node releases nothing, and a renewal elsewhere rebinds the lease to
    /// its connection), the server may still have it: the lease is doubted
    /// and a renewal on a fresh connection runs now, which confirms it or
    /// ends it as lost.
    pub(crate) fn hung_up(self: &Arc<Self>, generation: u64) {
        let config = &self.client.config;
        if on_hang_up(config.auto_release_on_disconnect, config.cluster) == HangUp::Lose {
            // The server releases the lease when it processes the close, and
            // a renewal on a fresh connection could reach it first and be
            // accepted (the Go server closes the socket, then cleans up).
            // (A no-op if grant `generation` is no longer held.)
            self.lose(
                generation,
                Error::new(
                    ErrorKind::Io,
                    "the server closed its connection, which releases the lease (auto-release on disconnect)",
                ),
            );
            return;
        }
        let why = Error::new(ErrorKind::Io, "the server closed the lease's connection");
        self.doubt_elsewhere(generation, why, Instant::now());
    }

    /// Doubt grant `generation` and renew it on a fresh connection at `at`
    /// (its home is given up: closed once the lease has a new one).
    pub(crate) fn doubt_elsewhere(self: &Arc<Self>, generation: u64, why: Error, at: Instant) {
        if !self.doubt(generation, &why) {
            return;
        }
        let mut st = lock(&self.state);
        let Some(held) = st.lease.grant_of(generation) else {
            return;
        };
        held.home.home.conn.mark_broken();
        let due = st.lease.reschedule(generation, at);
        drop(st);
        arm(self, due);
    }

    /// Grant `generation` is in doubt (`why`: what happened to its
    /// connection): stop reporting it held until a renewal confirms it, and
    /// tell the watchers the first time. `false` if that grant is no longer
    /// held.
    pub(crate) fn doubt(&self, generation: u64, why: &Error) -> bool {
        let mut st = lock(&self.state);
        match st.lease.doubt(generation) {
            None => return false,
            Some(false) => return true,
            Some(true) => {}
        }
        let watcher = st.lost_watcher.clone();
        drop(st);
        log!(
            Level::Warn,
            "lease on {:?} in doubt ({why}); confirming it on another connection",
            self.key
        );
        tell_watcher(watcher, |tag| events::doubted(tag, why));
        self.tell_doubt(false);
        true
    }

    /// A renewal elsewhere confirmed doubted grant `generation`: held
    /// again. Called with nothing locked, after the state says so.
    pub(crate) fn confirmed(&self) {
        bump(&self.client.metrics.leases_confirmed);
        log!(Level::Info, "lease on {:?} confirmed: held again", self.key);
        let watcher = lock(&self.state).lost_watcher.clone();
        tell_watcher(watcher, events::confirmed);
        self.tell_doubt(true);
    }

    fn tell_doubt(&self, confirmed: bool) {
        if let Some(cb) = lock(&self.on_doubt).clone() {
            on_notifier(&self.client.runtime, Box::new(move || cb(confirmed)));
        }
    }

    /// Queue a LOST event on `queue` when the lease held by this handle is
    /// lost (at once if it already was). One registration per lease: a new
    /// one replaces the last, so registering on every grant costs nothing.
    pub(crate) fn watch_lost(&self, queue: &Arc<Queue>, tag: u64) {
        let mut st = lock(&self.state);
        if let Some(err) = st.lease.lost().cloned() {
            drop(st);
            queue.push(events::lost(tag, &err));
            return;
        }
        st.lost_watcher = Some((Arc::downgrade(queue), tag));
    }

    /// Mark the lease of `generation` lost: drop it, close its connection
    /// (so the server frees it if it still had it) and notify.
    pub(crate) fn lose(&self, generation: u64, err: Error) {
        let mut st = lock(&self.state);
        if st.lease.grant_of(generation).is_none() {
            return;
        }
        let err = Error::new(
            ErrorKind::LeaseLost,
            format!("lease on {:?} lost: {err}", self.key),
        );
        // Counted before anyone can see the loss (is_lost, an event), so
        // the counter never lags it; logged before any event is queued.
        bump(&self.client.metrics.leases_lost);
        let held = st.lease.lose(generation, err.clone());
        let watcher = st.lost_watcher.take();
        drop(st);
        log!(Level::Error, "{err}");
        tell_watcher(watcher, |tag| events::lost(tag, &err));
        if let Some(h) = held {
            let conn = Arc::clone(&h.home.home.conn);
            drop(h);
            // A home shared with other leases stays: the server ends this
            // one at its expiry (it is no longer renewed).
            conn.abort_unless_shared();
        }
        self.lost_cv.notify_all();
        if let Some(cb) = lock(&self.on_lost).clone() {
            notify_lost(&self.client, cb, err);
        }
    }
}

/// Queue the event `make` builds for the lease's watch registration (its
/// queue and tag), if it has one and the queue still lives.
fn tell_watcher(watcher: Option<(Weak<Queue>, u64)>, make: impl FnOnce(u64) -> events::Event) {
    if let Some((queue, tag)) = watcher {
        if let Some(q) = queue.upgrade() {
            q.push(make(tag));
        }
    }
}

impl Watcher for Shared {
    fn hung_up(self: Arc<Self>, generation: u64) {
        Shared::hung_up(&self, generation);
    }
}
