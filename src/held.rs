//! A lease's state and its transitions, shared by the handle (src/lease.rs),
//! the evented operations (src/engine/) and the renewal policy
//! (src/renewal.rs): granted (`hold`), released (`take_for_release`), hung
//! up, doubted, lost. Every transition bumps the grant *generation*, so a
//! renewal, a watch or a wake-up that belongs to an older grant does
//! nothing.
//!
//! A held lease pins the connection it was granted on (its *home*): the
//! server releases a lease when that connection closes, so the home stays
//! open while the lease is held and carries the renewals (which also keep
//! it from the server's idle timeout). After release the home goes back to
//! the client's pool.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::client::{ClientInner, Config};
use crate::clock::{Boot, Stamp};
use crate::connection::{Connection, HomeTicket};
use crate::events::{self, Queue};
use crate::log::{Level, log};
use crate::metrics::bump;
use crate::notify::on_notifier;
use crate::protocol::{Kind, Token};
use crate::reactor::{self, Timed, Watch, Watcher};
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

/// Shortest renew interval, whatever the lease and ratio.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// How often leases are renewed: every `min(lease × ratio, keepalive)`,
/// which also keeps a home from the server's idle timeout whatever the lease
/// (the keepalive in effect is at most half the server's read timeout).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cadence {
    ratio: f64,
    keepalive: Duration,
}

impl Cadence {
    pub(crate) fn new(ratio: f64, keepalive: Duration) -> Cadence {
        Cadence { ratio, keepalive }
    }

    /// The cadence `config` asks for.
    pub(crate) fn of(config: &Config) -> Cadence {
        Cadence::new(config.renew_ratio, config.effective_keepalive())
    }

    /// Time between renewals of a lease of `lease_s` seconds.
    pub(crate) fn interval(&self, lease_s: u64) -> Duration {
        let by_ratio = Duration::from_secs(lease_s).mul_f64(self.ratio);
        by_ratio.min(self.keepalive).max(MIN_INTERVAL)
    }
}

impl Default for Cadence {
    /// The library's defaults (renew at half the lease, at least every 10 s).
    fn default() -> Cadence {
        Cadence::new(0.5, Duration::from_secs(10))
    }
}

/// Time between renewals of a lease of `lease_s` seconds under `config`.
pub(crate) fn interval(config: &Config, lease_s: u64) -> Duration {
    Cadence::of(config).interval(lease_s)
}

/// Make sure `lease` is woken at `due` (or earlier). Called with its state
/// locked; `armed` is that state's pending wake-up.
pub(crate) fn arm(lease: &Arc<Shared>, armed: &mut Option<Instant>, due: Instant) {
    if armed.is_some_and(|a| a <= due) {
        return;
    }
    // Callers made sure the reactor runs before holding a lease.
    let Some(reactor) = reactor::started(&lease.client.runtime) else {
        return;
    };
    *armed = Some(due);
    let owner: Weak<dyn Timed> = Arc::downgrade(lease) as Weak<dyn Timed>;
    reactor.wake_at(owner, due);
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

/// How long a held lease lasts: counted from the send time of the request
/// that granted or last renewed it (the *anchor*: the server's lease clock
/// cannot have started earlier), so always on the safe side. Pure: `now` is
/// an argument, and expiry runs on CLOCK_BOOTTIME (src/clock.rs), so a
/// suspend of this machine counts against the lease as it does on the
/// server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Life {
    /// The lease the server granted (or last renewed to), in seconds.
    pub(crate) lease_s: u64,
    pub(crate) anchor: Stamp,
}

impl Life {
    /// When the server drops the lease unless renewed.
    pub(crate) fn expires_at(&self) -> Boot {
        self.anchor.boot + Duration::from_secs(self.lease_s)
    }

    /// Whether the lease can still be held at `now`.
    pub(crate) fn held_at(&self, now: Boot) -> bool {
        now < self.expires_at()
    }

    /// Time left on the lease at `now` (`None`: expired).
    pub(crate) fn left(&self, now: Boot) -> Option<Duration> {
        self.expires_at()
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    }

    /// When its renewal is due, renewing every `interval`.
    pub(crate) fn renew_at(&self, interval: Duration) -> Instant {
        self.anchor.mono + interval
    }

    /// Whether, read at `now`, the grant is so late that its renewal was
    /// already due (a long queue wait, this process frozen, the machine
    /// suspended): it must be confirmed by a renewal before it is reported
    /// held.
    pub(crate) fn is_late(&self, interval: Duration, now: Stamp) -> bool {
        now.mono >= self.anchor.mono + interval || now.boot >= self.anchor.boot + interval
    }
}

/// A grant the handle holds.
pub(crate) struct Held {
    pub(crate) token: Token,
    pub(crate) life: Life,
    pub(crate) home: Home,
    /// When the next renewal is due (moved by retries and hang-ups).
    pub(crate) renew_at: Instant,
    /// In doubt: the home connection went (the server hung up, it broke, or
    /// in cluster mode its node is no longer the leader), so the lease is
    /// not reported held until a renewal elsewhere confirms it.
    pub(crate) doubted: bool,
    /// The event engine's hang-up watch on the home connection (removed
    /// when dropped: on release, loss or a new home).
    pub(crate) watch: Option<Watch>,
    /// Counts this lease on its home (which may carry others).
    pub(crate) ticket: HomeTicket,
}

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
    pub(crate) held: Option<Held>,
    pub(crate) lost: Option<Error>,
    /// Bumped on every grant, release and loss; a renewal scheduled for an
    /// older generation does nothing.
    pub(crate) generation: u64,
    /// The pending scheduler wake-up for this lease, if any.
    pub(crate) armed: Option<Instant>,
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
        if st.held.is_some() {
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
        if st.held.is_some() {
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
        let renew_at = life.renew_at(interval(&self.client.config, lease_s));
        st.generation += 1;
        st.lost = None;
        let watch = self.watch_home(&home.conn, st.generation);
        let ticket = HomeTicket::new(&home.conn);
        self.client.add_home(home.server, &home.conn);
        st.held = Some(Held {
            token,
            life,
            home,
            renew_at,
            doubted: false,
            watch,
            ticket,
        });
        arm(self, &mut st.armed, renew_at);
        Ok(())
    }

    /// Take what a release lets go of off the handle: `None` after leaving
    /// the queue (a queued enqueue: closing its connection drops the
    /// waiter, nothing more to say), else the grant's token and home, its
    /// hang-up watch already removed. `NotHeld` / `LeaseLost` if nothing is
    /// held.
    pub(crate) fn take_for_release(&self) -> Result<Option<(Token, Home)>> {
        let mut st = lock(&self.state);
        if let Some(home) = st.queued.take() {
            drop(st);
            home.conn.abort();
            return Ok(None);
        }
        let Some(held) = st.held.take() else {
            return Err(match &st.lost {
                Some(e) => Error::new(ErrorKind::LeaseLost, format!("release: lease was lost: {e}")),
                None => Error::new(ErrorKind::NotHeld, "release: not held"),
            });
        };
        st.generation += 1;
        drop(st);
        let Held {
            token,
            home,
            watch,
            ticket,
            ..
        } = held;
        // Unregister before the connection can go back to the pool or to
        // the engine's release (either may register the same socket).
        drop(watch);
        drop(ticket);
        Ok(Some((token, home)))
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
        if config.auto_release_on_disconnect && !config.cluster {
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
        let st = &mut *st;
        if st.generation != generation {
            return;
        }
        let Some(held) = st.held.as_mut() else { return };
        held.home.conn.mark_broken();
        held.renew_at = at;
        arm(self, &mut st.armed, at);
    }

    /// Grant `generation` is in doubt (`why`: what happened to its
    /// connection): stop reporting it held until a renewal confirms it, and
    /// tell the watchers the first time. `false` if that grant is no longer
    /// held.
    pub(crate) fn doubt(&self, generation: u64, why: &Error) -> bool {
        let mut st = lock(&self.state);
        if st.generation != generation {
            return false;
        }
        let Some(held) = st.held.as_mut() else {
            return false;
        };
        if held.doubted {
            return true;
        }
        held.doubted = true;
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
        if let Some(err) = st.lost.clone() {
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
        if st.generation != generation || st.held.is_none() {
            return;
        }
        let held = st.held.take();
        st.generation += 1;
        let err = Error::new(
            ErrorKind::LeaseLost,
            format!("lease on {:?} lost: {err}", self.key),
        );
        // Counted before anyone can see the loss (is_lost, an event), so
        // the counter never lags it; logged before any event is queued.
        bump(&self.client.metrics.leases_lost);
        st.lost = Some(err.clone());
        let watcher = st.lost_watcher.take();
        drop(st);
        log!(Level::Error, "{err}");
        tell_watcher(watcher, |tag| events::lost(tag, &err));
        if let Some(h) = held {
            let conn = Arc::clone(&h.home.conn);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// A suspend of `d`: the boot clock runs on, the monotonic one does not.
    fn suspended(t: Stamp, d: Duration) -> Stamp {
        Stamp {
            mono: t.mono,
            boot: t.boot + d,
        }
    }

    #[test]
    fn a_lease_runs_from_the_send_time_of_its_grant() {
        let sent = Stamp::now();
        let life = Life {
            lease_s: 10,
            anchor: sent,
        };
        assert!(life.held_at(sent.after(9 * SEC).boot));
        assert!(!life.held_at(sent.after(10 * SEC).boot));
        assert_eq!(life.left(sent.after(4 * SEC).boot), Some(6 * SEC));
        assert_eq!(life.left(sent.after(11 * SEC).boot), None);
        assert_eq!(life.renew_at(5 * SEC), sent.mono + 5 * SEC);
    }

    #[test]
    fn a_suspend_longer_than_the_time_left_ends_the_lease() {
        let sent = Stamp::now();
        let life = Life {
            lease_s: 10,
            anchor: sent,
        };
        // 3 s in, the machine sleeps for 30 s: on the monotonic clock only 3 s
        // passed, but the server's lease ran out during the suspend.
        let resumed = suspended(sent.after(3 * SEC), 30 * SEC);
        assert!(!life.held_at(resumed.boot), "not held after the suspend");
        assert_eq!(life.left(resumed.boot), None, "nothing left to renew");
        // A suspend shorter than the time left keeps it, minus the suspend.
        let short = suspended(sent.after(3 * SEC), 2 * SEC);
        assert!(life.held_at(short.boot));
        assert_eq!(life.left(short.boot), Some(5 * SEC));
    }

    #[test]
    fn a_grant_read_after_a_suspend_or_a_freeze_is_late() {
        let sent = Stamp::now();
        let life = Life {
            lease_s: 10,
            anchor: sent,
        };
        let interval = 5 * SEC;
        assert!(!life.is_late(interval, sent.after(4 * SEC)));
        assert!(life.is_late(interval, sent.after(5 * SEC)), "frozen process");
        assert!(
            life.is_late(interval, suspended(sent.after(SEC), 6 * SEC)),
            "suspended machine"
        );
    }
}
