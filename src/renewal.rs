//! The renewal scheduler: a timer thread with a min-heap of due times,
//! two I/O workers that send the renewals, and a notifier thread for
//! lost-lease callbacks (started on first loss). One per runtime
//! generation (`src/runtime.rs`: started on the first held lease, stopped
//! and joined with the last client), shared by all its leases, so 10,000
//! held leases cost 3–4 threads, not 10,000.
//!
//! Policy, per lease: renew every `min(lease × renew_ratio, keepalive)` on
//! the lease's home connection (which keeps that connection from the
//! server's idle timeout whatever the lease). Each attempt has a deadline
//! of `min(5 s, io_timeout, time left on the lease)`. A deadline or transient failure
//! is retried after a short backoff until the lease would have expired; a
//! closed home connection is replaced by a fresh one and the token tried
//! there (a server without auto-release still has the lease). A refusal
//! from the server (`error`: it no longer has the lease) or running out of
//! time marks the lease lost.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::client::{ClientInner, Config};
use crate::connection::{Connection, Started};
use crate::engine::{self, Pending, Watch};
use crate::lease::{LostCallback, Shared, lock};
use crate::log::{Level, log};
use crate::metrics::bump;
use crate::protocol::Request;
use crate::runtime::{Runtime, Service};
use crate::{Error, ErrorKind};

/// Deadline of one renew attempt (capped by the time left on the lease).
const RENEW_DEADLINE: Duration = Duration::from_secs(5);
/// Pause before retrying a failed renew.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Pause before trying again a renewal whose connection a call was using.
const BUSY_RETRY: Duration = Duration::from_millis(20);
/// Shortest renew interval, whatever the lease and ratio.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// I/O worker threads.
const WORKERS: usize = 2;

/// Time between renewals of a lease of `lease_s` seconds.
pub(crate) fn interval(config: &Config, lease_s: u64) -> Duration {
    let by_ratio = Duration::from_secs(lease_s).mul_f64(config.renew_ratio);
    by_ratio.min(config.keepalive).max(MIN_INTERVAL)
}

/// A wake-up for one lease. The renewal time itself lives in the lease
/// (`Held::renew_at`); an entry whose `due` is not the lease's `armed`
/// time any more is stale and ignored. So a lease has at most one live
/// entry however often it is acquired and released.
struct Entry {
    due: Instant,
    seq: u64,
    lease: Weak<Shared>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

pub(crate) struct Scheduler {
    timers: Mutex<Timers>,
    timer_cv: Condvar,
    jobs: Mutex<VecDeque<(Weak<Shared>, Instant)>>,
    jobs_cv: Condvar,
    /// Application code to run on the notifier thread: lost callbacks, and
    /// log messages the engine thread deferred.
    notes: Mutex<VecDeque<Note>>,
    notes_cv: Condvar,
    /// Whether the notifier thread started (lazily, on the first loss).
    notifier: OnceLock<bool>,
    /// Set by [`Service::stop`]: every thread returns (the notifier after
    /// running the callbacks already queued).
    stopped: AtomicBool,
}

impl Service for Scheduler {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Taking each lock after setting the flag means a thread is either
        // before its check of the flag or already waiting: no lost wake-up.
        drop(lock(&self.timers));
        self.timer_cv.notify_all();
        drop(lock(&self.jobs));
        self.jobs_cv.notify_all();
        drop(lock(&self.notes));
        self.notes_cv.notify_all();
    }
}

/// The scheduler of `rt`, its timer and worker threads started on first
/// use. `None` if the threads could not be created or the generation is
/// shut down (then no lease can be held safely, and acquiring says so).
fn scheduler(rt: &Runtime) -> Option<&Arc<Scheduler>> {
    rt.renewal
        .get_or_init(|| {
            let s = Arc::new(Scheduler {
                timers: Mutex::new(Timers {
                    heap: BinaryHeap::new(),
                    seq: 0,
                }),
                timer_cv: Condvar::new(),
                jobs: Mutex::new(VecDeque::new()),
                jobs_cv: Condvar::new(),
                notes: Mutex::new(VecDeque::new()),
                notes_cv: Condvar::new(),
                notifier: OnceLock::new(),
                stopped: AtomicBool::new(false),
            });
            if !rt.register(s.clone()) {
                return None;
            }
            let t = Arc::clone(&s);
            let mut ok = rt.spawn("dflockd-timer", move || t.run_timer());
            for i in 0..WORKERS {
                let w = Arc::clone(&s);
                ok &= rt.spawn(&format!("dflockd-renew-{i}"), move || w.run_worker());
            }
            if !ok {
                // The threads that did start end now (joined at shutdown).
                s.stop();
            }
            ok.then_some(s)
        })
        .as_ref()
        .filter(|s| !s.stopped.load(Ordering::SeqCst))
}

/// Start the client's scheduler if needed; an error if its threads cannot
/// run.
pub(crate) fn ensure_running(client: &ClientInner) -> crate::Result<()> {
    if scheduler(&client.runtime).is_some() {
        return Ok(());
    }
    if client.runtime.is_stopped() {
        return Err(Error::new(
            ErrorKind::Closed,
            "the client was freed; refusing to hold a lease that would not be renewed",
        ));
    }
    Err(Error::new(
        ErrorKind::Io,
        "cannot start the renewal threads; refusing to hold a lease that would not be renewed",
    ))
}

/// Make sure `lease` is woken at `due` (or earlier). Called with its state
/// locked; `armed` is that state's pending wake-up.
pub(crate) fn arm(lease: &Arc<Shared>, armed: &mut Option<Instant>, due: Instant) {
    if armed.is_some_and(|a| a <= due) {
        return;
    }
    // Callers ran ensure_running() before holding a lease.
    let Some(s) = lease.client.runtime.renewal.get().and_then(Option::as_ref) else {
        return;
    };
    *armed = Some(due);
    let mut t = lock(&s.timers);
    t.seq += 1;
    let entry = Entry {
        due,
        seq: t.seq,
        lease: Arc::downgrade(lease),
    };
    let earliest = t.heap.peek().is_none_or(|Reverse(e)| due < e.due);
    t.heap.push(Reverse(entry));
    drop(t);
    if earliest {
        s.timer_cv.notify_one();
    }
}

/// Set the next renewal of `generation` (if still current) to `at`.
fn reschedule(lease: &Arc<Shared>, generation: u64, at: Instant) {
    let mut st = lock(&lease.state);
    let st = &mut *st;
    if st.generation != generation {
        return;
    }
    if let Some(held) = st.held.as_mut() {
        held.renew_at = at;
        arm(lease, &mut st.armed, at);
    }
}

/// Application code queued for the notifier thread.
type Note = Box<dyn FnOnce() + Send>;

/// Run a lost-lease callback on the notifier thread of `client`'s
/// generation (inline, on the calling thread, if that thread cannot be
/// started or the generation is shutting down).
pub(crate) fn notify(client: &ClientInner, callback: LostCallback, err: Error) {
    on_notifier(&client.runtime, Box::new(move || callback(&err)));
}

/// Run `note` on the notifier thread of generation `rt` (inline if that
/// thread cannot be started or the generation is shutting down).
pub(crate) fn on_notifier(rt: &Runtime, note: Note) {
    let started = rt.renewal.get().and_then(Option::as_ref).filter(|s| {
        *s.notifier.get_or_init(|| {
            let n = Arc::clone(s);
            rt.spawn("dflockd-notify", move || n.run_notifier())
        })
    });
    let inline = match started {
        Some(s) => {
            let mut q = lock(&s.notes);
            // After stop the notifier may have drained and gone.
            if s.stopped.load(Ordering::SeqCst) {
                Some(note)
            } else {
                q.push_back(note);
                drop(q);
                s.notes_cv.notify_one();
                None
            }
        }
        None => Some(note),
    };
    if let Some(note) = inline {
        let _ = catch_unwind(AssertUnwindSafe(note));
    }
}

impl Scheduler {
    fn run_timer(&self) {
        let mut t = lock(&self.timers);
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while t.heap.peek().is_some_and(|Reverse(e)| e.due <= now) {
                if let Some(Reverse(e)) = t.heap.pop() {
                    due.push((e.lease, e.due));
                }
            }
            if !due.is_empty() {
                lock(&self.jobs).extend(due);
                self.jobs_cv.notify_all();
            }
            let wait = t
                .heap
                .peek()
                .map(|Reverse(e)| e.due.saturating_duration_since(now));
            t = match wait {
                None => self.timer_cv.wait(t).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    self.timer_cv
                        .wait_timeout(t, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    fn run_worker(&self) {
        loop {
            let job = {
                let mut q = lock(&self.jobs);
                loop {
                    // Once stopped, queued jobs are for leases nobody holds.
                    if self.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    match q.pop_front() {
                        Some(job) => break job,
                        None => q = self.jobs_cv.wait(q).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            let (weak, due) = job;
            let Some(lease) = weak.upgrade() else { continue };
            let Some(generation) = due_generation(&lease, due) else {
                continue;
            };
            let r = catch_unwind(AssertUnwindSafe(|| renew_once(&lease, generation)));
            if r.is_err() {
                lease.lose(generation, Error::new(ErrorKind::LeaseLost, "renewal panicked"));
            }
        }
    }

    fn run_notifier(&self) {
        loop {
            let note = {
                let mut q = lock(&self.notes);
                loop {
                    // Callbacks queued before stop still run.
                    match q.pop_front() {
                        Some(n) => break n,
                        None if self.stopped.load(Ordering::SeqCst) => return,
                        None => q = self.notes_cv.wait(q).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            let _ = catch_unwind(AssertUnwindSafe(note));
        }
    }
}

/// For a wake-up at `due`: the generation to renew now, or `None` (stale
/// wake-up, nothing held, or not due yet: then re-armed for `renew_at`).
fn due_generation(lease: &Arc<Shared>, due: Instant) -> Option<u64> {
    let mut st = lock(&lease.state);
    let st = &mut *st;
    if st.armed != Some(due) {
        return None;
    }
    st.armed = None;
    let renew_at = st.held.as_ref()?.renew_at;
    if Instant::now() < renew_at {
        arm(lease, &mut st.armed, renew_at);
        return None;
    }
    Some(st.generation)
}

/// Whether a renew failure may go away by itself (retry) rather than mean
/// the server no longer has the lease (lost).
fn transient(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io | ErrorKind::Deadline | ErrorKind::Protocol | ErrorKind::Tls | ErrorKind::Cancelled
    )
}

/// One renewal of `lease`'s `generation` (a worker runs it).
/// One renewal of `lease`'s `generation` (a worker runs it). On a live
/// home connection watched by the event engine, the renew request is sent
/// without waiting and the engine collects the reply (or gives up at the
/// deadline) and calls [`finish`]: a hung or slow server then holds up no
/// worker, so it delays no other lease's renewal. A broken home (or no
/// engine) takes the blocking path: a fresh connection, then the reply.
fn renew_once(lease: &Arc<Shared>, generation: u64) {
    let (token, conn, server, expires_at, watch) = {
        let st = lock(&lease.state);
        match &st.held {
            Some(h) if st.generation == generation => (
                h.token,
                Arc::clone(&h.home.conn),
                h.home.server,
                h.expires_at,
                h.watch.as_ref().map(Watch::key),
            ),
            _ => return,
        }
    };
    #[cfg(test)]
    if lease
        .panic_next_renewal
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        panic!("injected renewal panic");
    }
    let sent = Instant::now();
    let Some(left) = expires_at.checked_duration_since(sent).filter(|d| !d.is_zero()) else {
        lease.lose(
            generation,
            Error::new(ErrorKind::Deadline, "not renewed before it expired"),
        );
        return;
    };
    let deadline = sent + RENEW_DEADLINE.min(lease.client.config.io_timeout).min(left);
    let ttl = lease.renew_ttl();
    let request = Request::Renew {
        kind: lease.kind,
        key: &lease.key,
        token: token.as_str(),
        lease_s: ttl,
    };
    let engine = watch.and_then(|w| Some((engine::engine(&lease.client.runtime)?, w)));
    if let (false, Some((engine, watch))) = (conn.is_broken(), engine) {
        match conn.start_request(&request) {
            Ok(Started::Sent) => {
                let pending = Pending {
                    lease: Arc::downgrade(lease),
                    generation,
                    sent,
                    expires_at,
                    deadline,
                    conn: Arc::clone(&conn),
                };
                if let Err(pending) = engine.await_reply(watch, pending) {
                    // The watch went away meanwhile (released, lost or
                    // re-homed) or is busy: give the reply up and try again
                    // shortly (a no-op if the grant is gone). Never leave a
                    // held lease without a renewal on its way.
                    pending.conn.abandon_reply();
                    reschedule(lease, generation, Instant::now() + BUSY_RETRY);
                }
            }
            Ok(Started::Busy) => reschedule(lease, generation, Instant::now() + BUSY_RETRY),
            Err(e) => finish(lease, generation, sent, expires_at, Err(e), None),
        }
        return;
    }
    let cap = Some(deadline);
    let renew = |c: &Connection| c.renew_until(lease.kind, &lease.key, token.as_str(), ttl, cap);
    // A closed home: try the token on a fresh connection.
    let (result, new_home) = if conn.is_broken() {
        log!(
            Level::Warn,
            "renew {:?}: its connection broke; renewing on a fresh connection",
            lease.key
        );
        match lease.client.open(server, cap) {
            Ok(fresh) => {
                bump(&lease.client.metrics.reconnects);
                (renew(&fresh), Some(Arc::new(fresh)))
            }
            Err(e) => (Err(e), None),
        }
    } else {
        (renew(&conn), None)
    };
    finish(lease, generation, sent, expires_at, result, new_home);
}

/// What a renewal came to (from a worker, or from the engine thread): on
/// success the lease is counted from `sent` and the next renewal armed; a
/// transient failure is retried while the lease lasts; anything else (the
/// server no longer has it) loses it. Never blocks.
pub(crate) fn finish(
    lease: &Arc<Shared>,
    generation: u64,
    sent: Instant,
    expires_at: Instant,
    result: crate::Result<u64>,
    new_home: Option<Arc<Connection>>,
) {
    match result {
        Ok(lease_s) => {
            bump(&lease.client.metrics.renewals);
            let mut st = lock(&lease.state);
            if st.generation != generation {
                return;
            }
            let Some(held) = st.held.as_mut() else { return };
            held.lease_s = lease_s;
            held.expires_at = sent + Duration::from_secs(lease_s);
            held.hung_up = false;
            if let Some(fresh) = new_home {
                held.watch = lease.watch_home(&fresh, generation);
                held.home.conn = fresh;
            }
            drop(st);
            let next = sent + interval(&lease.client.config, lease_s);
            reschedule(lease, generation, next);
        }
        Err(e) if transient(&e) => {
            let retry = Instant::now() + RETRY_BACKOFF;
            if retry < expires_at {
                bump(&lease.client.metrics.renewal_retries);
                log!(
                    Level::Warn,
                    "{e}; retrying the renewal in {} ms ({} ms left on the lease)",
                    RETRY_BACKOFF.as_millis(),
                    expires_at.saturating_duration_since(Instant::now()).as_millis()
                );
                reschedule(lease, generation, retry);
            } else {
                lease.lose(generation, e);
            }
        }
        Err(e) => lease.lose(generation, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "test-server")]
    use crate::client::Client;

    #[test]
    fn interval_is_capped_by_keepalive_and_floored() {
        let mut c = Config::new(vec![("h".into(), 1)]);
        c.keepalive = Duration::from_secs(10);
        c.renew_ratio = 0.5;
        assert_eq!(interval(&c, 4), Duration::from_secs(2));
        assert_eq!(interval(&c, 60), Duration::from_secs(10));
        c.renew_ratio = 0.01;
        assert_eq!(interval(&c, 1), MIN_INTERVAL);
    }

    #[cfg(feature = "test-server")]
    #[test]
    fn a_panicking_renewal_marks_the_lease_lost() {
        use crate::testserver::{ServerOptions, TestServer};
        let server = TestServer::start(ServerOptions::default()).expect("server");
        let mut cfg = Config::new(vec![("127.0.0.1".into(), server.port())]);
        cfg.keepalive = Duration::from_millis(200);
        let client = Client::new(cfg).expect("client");
        let lease = client.lock("panic-key").expect("lease");
        lease.acquire(1).expect("acquire");
        lease
            .shared()
            .panic_next_renewal
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(lease.wait_lost(Some(Duration::from_secs(5))));
        assert!(!lease.is_held());
        let err = lease.lost_error().expect("lost error");
        assert!(err.message().contains("panicked"), "{err}");
        // Its connection was closed, so the server freed the lock.
        let other = client.lock("panic-key").expect("lease");
        other.acquire(5).expect("free again");
    }
}
