//! The event engine: one epoll thread per runtime generation, the place
//! where the library waits on many connections at once. It never blocks
//! and never runs application code (its log lines go to the notifier).
//!
//! It watches the home connection of every held lease:
//! - for hang-up (EOF or reset: `EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`), so a
//!   lease whose connection the server dropped stops being reported held at
//!   once instead of at its next renewal (the server releases a lease when
//!   its connection closes): it is lost at once (auto-release, the default)
//!   or renewed at once on a fresh connection (`Op::renew`, an evented
//!   operation of this thread), which confirms it or ends it as lost;
//! - for the reply to a renewal: when a lease's wake-up in this thread's
//!   renewal heap is due, the renew request is sent without waiting
//!   (`Connection::start_request`) and the reply awaited here
//!   (`await_reply`): read when the socket is readable, or given up at the
//!   deadline, then the lease is settled (`renewal::finish`). A hung or slow
//!   server so holds up no thread, and delays no renewal of any other lease.
//!
//! It also drives the evented operations (`ops.rs`: acquire, wait, release,
//! renewals on a fresh connection, dials in `dial.rs`) and feeds the
//! completion queue of `events.rs`, through the same sans-I/O
//! `transport::Wire` as the blocking path. Blocking calls keep owning a
//! connection's byte stream while they use it: the engine only ever
//! `try_lock`s a connection and reads without waiting (`MSG_DONTWAIT`).
//!
//! Registrations are one-shot (`EPOLLONESHOT`) and keyed by (slot,
//! generation) in the event's `u64`, so an event for a registration that
//! was removed (its lease released, lost or re-homed) or whose fd number
//! was reused is recognised as stale and ignored.
//!
//! A socket stays in the epoll set once watched: removing a watch frees its
//! slot but leaves the kernel registration (one-shot, with the dead slot's
//! token), and the next lease homed on the same pooled connection re-arms
//! it with `EPOLL_CTL_MOD` under its own token. An acquire+release pair so
//! costs one `epoll_ctl` instead of an ADD and a DEL (~0.3 µs instead of
//! ~1.7 µs, measured). What the leftover registration can do meanwhile is
//! fire once with a dead token (the pooled connection hung up, or a reply
//! arrived while it was armed for one): the engine ignores it, and the
//! one-shot stays spent. The kernel drops the registration itself when the
//! connection closes its socket, so no late `EPOLL_CTL_DEL` can hit a
//! reused fd number.

mod dial;
pub mod events;
pub(crate) mod ops;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::c_int;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::connection::Connection;
use crate::lease::Shared;
use crate::log::{self, Level, log};
use crate::notify;
use crate::protocol::{Command, Kind, Op, Outcome};
use crate::renewal;
use crate::runtime::{Runtime, Service, Slot};
use crate::sync::lock;
use crate::{Error, ErrorKind};
use ops::{Driver, Inbound, OP_BIT};

/// The token of the engine's own wake-up eventfd.
const WAKER: u64 = u64::MAX;

/// What a registration is for: the lease (and which grant of it) whose
/// home connection is watched, and the renewal reply awaited on it.
struct Watched {
    lease: Weak<Shared>,
    generation: u64,
    /// The home connection's socket (open while this entry is: its Watch
    /// removes the entry before the connection can close).
    fd: RawFd,
    /// Boxed: only while a reply is awaited (every held lease has a slot).
    renewal: Option<(u64, Box<Pending>)>,
}

/// A renewal whose request was sent and whose reply the engine awaits.
pub(crate) struct Pending {
    pub(crate) lease: Weak<Shared>,
    pub(crate) generation: u64,
    pub(crate) sent: Instant,
    pub(crate) expires_at: Instant,
    pub(crate) deadline: Instant,
    pub(crate) conn: Arc<Connection>,
}

/// Where a watch is registered: its slot, the slot's generation, the fd.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchKey {
    slot: u32,
    gen_: u32,
    fd: RawFd,
}

/// Registrations by slot (a slot's generation changes on every reuse), and
/// the deadlines of awaited replies: (deadline, pending id, slot, slot gen).
#[derive(Default)]
struct Slots {
    entries: Vec<(u32, Option<Watched>)>,
    free: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u32, u32)>>,
    next_id: u64,
}

/// A lease's renewal wake-up. The renewal time itself lives in the lease
/// (`Held::renew_at`); an entry whose `due` is not the lease's `armed`
/// time any more is stale and ignored, so a lease has at most one live
/// entry however often it is acquired and released.
struct WakeUp {
    due: Instant,
    seq: u64,
    lease: Weak<Shared>,
}

impl PartialEq for WakeUp {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for WakeUp {}
impl PartialOrd for WakeUp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WakeUp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct WakeUps {
    heap: BinaryHeap<Reverse<WakeUp>>,
    seq: u64,
}

thread_local! {
    /// Set on the engine thread: it needs no wake-up to see a new timer.
    static ON_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub(crate) struct Engine {
    /// Its generation: log messages go to that generation's notifier.
    rt: Weak<Runtime>,
    epoll: OwnedFd,
    inbox: Arc<Inbox>,
    stopped: AtomicBool,
    slots: Mutex<Slots>,
    /// Renewal wake-ups of held leases (see `renewal::arm`).
    wake_ups: Mutex<WakeUps>,
    /// Ids of evented operations and dials (see `ops.rs`).
    next_id: AtomicU64,
}

/// What other threads hand the engine thread, and the eventfd that wakes
/// it (also written alone, when only a deadline changed).
pub(crate) struct Inbox {
    items: Mutex<Vec<Inbound>>,
    waker: OwnedFd,
}

impl Inbox {
    pub(crate) fn push(&self, item: Inbound) {
        lock(&self.items).push(item);
        self.wake();
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(self.waker.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

/// A registration; dropping it removes the watch.
pub(crate) struct Watch {
    engine: Weak<Engine>,
    fd: RawFd,
    slot: u32,
    gen_: u32,
    /// Keeps the socket open while the slot is live: the engine re-arms
    /// the registration by fd number (`arm`), which must not reach a new
    /// connection that got the same number after a close.
    _conn: Arc<Connection>,
}

impl Watch {
    pub(crate) fn key(&self) -> WatchKey {
        WatchKey {
            slot: self.slot,
            gen_: self.gen_,
            fd: self.fd,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.unwatch(self);
        }
    }
}

fn token(slot: u32, gen_: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(gen_)
}

impl Engine {
    fn new(rt: Weak<Runtime>) -> Option<Engine> {
        // SAFETY: plain syscalls; the returned fds are owned below.
        let (ep, ev) = unsafe {
            (
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK),
            )
        };
        if ep < 0 || ev < 0 {
            // SAFETY: closing only what was opened.
            unsafe {
                if ep >= 0 {
                    libc::close(ep);
                }
                if ev >= 0 {
                    libc::close(ev);
                }
            }
            return None;
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (epoll, waker) = unsafe { (OwnedFd::from_raw_fd(ep), OwnedFd::from_raw_fd(ev)) };
        let mut e = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKER,
        };
        // SAFETY: valid epoll fd, valid eventfd, valid event struct.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut e) };
        (rc == 0).then_some(Engine {
            rt,
            epoll,
            inbox: Arc::new(Inbox {
                items: Mutex::new(Vec::new()),
                waker,
            }),
            stopped: AtomicBool::new(false),
            slots: Mutex::new(Slots::default()),
            wake_ups: Mutex::new(WakeUps::default()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Call `renewal::due` for `lease` at `due`.
    pub(crate) fn wake_at(&self, lease: &Arc<Shared>, due: Instant) {
        let mut w = lock(&self.wake_ups);
        w.seq += 1;
        let earliest = w.heap.peek().is_none_or(|Reverse(e)| due < e.due);
        let seq = w.seq;
        w.heap.push(Reverse(WakeUp {
            due,
            seq,
            lease: Arc::downgrade(lease),
        }));
        drop(w);
        if earliest && !ON_ENGINE.with(std::cell::Cell::get) {
            self.wake();
        }
    }

    /// Run the renewal wake-ups that are due; when the next one is.
    fn run_wake_ups(&self) -> Option<Instant> {
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let next = {
                let mut w = lock(&self.wake_ups);
                while w.heap.peek().is_some_and(|Reverse(e)| e.due <= now) {
                    if let Some(Reverse(e)) = w.heap.pop() {
                        due.push(e);
                    }
                }
                w.heap.peek().map(|Reverse(e)| e.due)
            };
            if due.is_empty() {
                return next;
            }
            for e in due {
                if let Some(lease) = e.lease.upgrade() {
                    renewal::due(&lease, e.due);
                }
            }
        }
    }

    /// A fresh id for an evented operation or dial.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) & (OP_BIT - 1)
    }

    pub(crate) fn inbox(&self) -> Arc<Inbox> {
        Arc::clone(&self.inbox)
    }

    /// Hand an operation (or a cancel) to the engine thread.
    pub(crate) fn submit(&self, item: Inbound) {
        self.inbox.push(item);
    }

    /// The generation this engine belongs to, while it lives.
    pub(crate) fn runtime(&self) -> Option<Arc<Runtime>> {
        self.rt.upgrade()
    }

    /// Register `fd` for `bits` under `token`: re-arm it (`modify`) or add
    /// it. `modify` is only a guess, checked by the kernel: MOD on a socket
    /// this epoll set does not hold fails with ENOENT, ADD on one it holds
    /// (a watch leaves its socket registered, see the module notes) with
    /// EEXIST; either way the other operation follows.
    fn ctl(&self, fd: RawFd, token: u64, bits: u32, modify: bool) -> bool {
        let call = |op: c_int| {
            let mut e = libc::epoll_event {
                events: bits,
                u64: token,
            };
            // SAFETY: valid epoll fd; `fd` is an open socket whose owner
            // the caller keeps alive; valid event struct.
            let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut e) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error().raw_os_error())
            }
        };
        let (first, second, retry_on) = if modify {
            (libc::EPOLL_CTL_MOD, libc::EPOLL_CTL_ADD, libc::ENOENT)
        } else {
            (libc::EPOLL_CTL_ADD, libc::EPOLL_CTL_MOD, libc::EEXIST)
        };
        match call(first) {
            Ok(()) => true,
            Err(Some(errno)) if errno == retry_on => call(second).is_ok(),
            Err(_) => false,
        }
    }

    /// Watch `fd` (the home connection of `lease`'s grant `generation`)
    /// for hang-up. `None` if the fd cannot be registered.
    pub(crate) fn watch(
        self: &Arc<Self>,
        lease: &Arc<Shared>,
        generation: u64,
        conn: &Arc<Connection>,
    ) -> Option<Watch> {
        let fd = conn.raw_fd();
        let (slot, gen_) = {
            let mut s = lock(&self.slots);
            let slot = match s.free.pop() {
                Some(slot) => slot,
                None => {
                    s.entries.push((0, None));
                    u32::try_from(s.entries.len() - 1).ok()?
                }
            };
            let entry = &mut s.entries[slot as usize];
            entry.0 = entry.0.wrapping_add(1);
            entry.1 = Some(Watched {
                lease: Arc::downgrade(lease),
                generation,
                fd,
                renewal: None,
            });
            (slot, entry.0)
        };
        let watch = Watch {
            engine: Arc::downgrade(self),
            fd,
            slot,
            gen_,
            _conn: Arc::clone(conn),
        };
        if !self.register(conn, token(slot, gen_)) {
            drop(watch); // frees the slot
            return None;
        }
        Some(watch)
    }

    /// Arm `conn`'s socket for hang-up under `token`: re-arm its existing
    /// registration when it was watched before (see the module notes), else
    /// add it (the connection's flag is the guess for `ctl`).
    fn register(&self, conn: &Connection, token: u64) -> bool {
        let bits = (libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
        self.ctl(conn.raw_fd(), token, bits, conn.mark_registered())
    }

    /// Free the watch's slot. The socket's registration is left in place,
    /// spent or armed with this slot's dead token (see the module notes):
    /// the next watch of the same connection re-arms it.
    fn unwatch(&self, w: &Watch) {
        let mut s = lock(&self.slots);
        if let Some(entry) = s.entries.get_mut(w.slot as usize) {
            if entry.0 == w.gen_ {
                entry.1 = None;
                s.free.push(w.slot);
            }
        }
    }

    /// Register interest for `key`: hang-up always, readable while a
    /// reply is awaited (one-shot: re-armed after every event).
    fn arm(&self, key: WatchKey, read: bool) {
        let mut bits = libc::EPOLLRDHUP | libc::EPOLLONESHOT;
        if read {
            bits |= libc::EPOLLIN;
        }
        let mut e = libc::epoll_event {
            events: bits as u32,
            u64: token(key.slot, key.gen_),
        };
        // SAFETY: valid epoll fd and event struct; the fd is registered (the
        // Watch that owns the registration is alive while its slot is).
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, key.fd, &mut e) };
    }

    fn wake(&self) {
        self.inbox.wake();
    }

    /// Await the reply of a renewal sent on the watched connection `key`;
    /// `Err(pending)` back if that watch is gone (the lease was released,
    /// lost or re-homed meanwhile) or already awaits one.
    pub(crate) fn await_reply(&self, key: WatchKey, pending: Pending) -> Result<(), Pending> {
        {
            let mut s = lock(&self.slots);
            let s = &mut *s;
            let Some((gen_, Some(w))) = s.entries.get_mut(key.slot as usize) else {
                return Err(pending);
            };
            if *gen_ != key.gen_ || w.renewal.is_some() {
                return Err(pending);
            }
            s.next_id += 1;
            let id = s.next_id;
            w.renewal = Some((id, Box::new(pending)));
            let deadline = w.renewal.as_ref().map(|(_, p)| p.deadline);
            self.arm(key, true);
            if let Some(d) = deadline {
                s.deadlines.push(Reverse((d, id, key.slot, key.gen_)));
            }
            // Replies that came in time leave their deadline behind until
            // it passes; keep those from piling up (each watch has at most
            // one live deadline).
            let watches = s.entries.len() - s.free.len();
            if s.deadlines.len() > 2 * watches + 1024 {
                let entries = &s.entries;
                s.deadlines.retain(|Reverse((_, id, slot, gen_))| {
                    matches!(entries.get(*slot as usize),
                        Some((g, Some(w))) if g == gen_ && w.renewal.as_ref().is_some_and(|(i, _)| i == id))
                });
            }
        }
        self.wake(); // the earliest deadline may have changed
        Ok(())
    }

    fn run(&self) {
        // No application code on this thread: log messages are handed to
        // the notifier thread after each round (a blocking logger must not
        // delay a renewal or a hang-up).
        log::defer_on_this_thread();
        ON_ENGINE.with(|f| f.set(true));
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut driver = Driver::default();
        while !self.stopped.load(Ordering::SeqCst) {
            let replies = self.expire_replies();
            let renewals = self.run_wake_ups();
            let ops = driver.expire(self);
            let timeout = [renewals, ops]
                .into_iter()
                .flatten()
                .map(|when| {
                    let ms = when
                        .saturating_duration_since(Instant::now())
                        .as_micros()
                        .div_ceil(1000);
                    c_int::try_from(ms).unwrap_or(c_int::MAX)
                })
                .fold(replies, |t, ms| if t < 0 { ms } else { t.min(ms) });
            self.flush_log();
            // SAFETY: valid epoll fd; `events` has room for 64 entries.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, timeout) };
            if n < 0 {
                continue; // EINTR
            }
            for e in &events[..n as usize] {
                let key = e.u64;
                if key == WAKER {
                    let mut counter: u64 = 0;
                    // SAFETY: reading 8 bytes into a live u64 from our eventfd.
                    unsafe { libc::read(self.inbox.waker.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
                    let items = std::mem::take(&mut *lock(&self.inbox.items));
                    for item in items {
                        driver.handle(self, item);
                    }
                    continue;
                }
                if key & OP_BIT != 0 {
                    driver.on_event(self, key & !OP_BIT, e.events);
                    continue;
                }
                self.on_event((key >> 32) as u32, key as u32, e.events);
            }
        }
    }

    /// Hand the messages this thread logged to the notifier thread.
    fn flush_log(&self) {
        let deferred = log::take_deferred();
        if let (false, Some(rt)) = (deferred.is_empty(), self.rt.upgrade()) {
            notify::log_lines(&rt, deferred);
        }
    }

    /// One event on a watched home connection.
    fn on_event(&self, slot: u32, gen_: u32, bits: u32) {
        let hang_up = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        let awaited = {
            let mut s = lock(&self.slots);
            match s.entries.get_mut(slot as usize) {
                Some((g, Some(w))) if *g == gen_ => w.renewal.take(),
                _ => return, // stale: released, lost or re-homed
            }
        };
        // A reply (possibly the last bytes before a close) first, outside
        // the lock: settling it may end the lease and so drop its watch.
        let mut still_awaited = None;
        if let Some((id, p)) = awaited {
            let lease = p.lease.upgrade();
            let (kind, key) = lease
                .as_ref()
                .map_or((Kind::Lock, None), |l| (l.kind, Some(l.key.as_str())));
            match p.conn.poll_reply(Command::Lease(kind, Op::Renew), key) {
                Ok(None) if !hang_up => still_awaited = Some((id, p)),
                Ok(None) => {} // the hang-up path renews afresh
                Ok(Some(outcome)) => settle(*p, Ok(outcome)),
                Err(e) => settle(*p, Err(e)),
            }
        }
        let mut s = lock(&self.slots);
        let Some((g, Some(w))) = s.entries.get_mut(slot as usize) else {
            return;
        };
        if *g != gen_ {
            return;
        }
        if hang_up {
            // The one-shot registration stays spent: the lease moves on (a
            // fresh connection with a new watch, or lost).
            let (lease, generation) = (w.lease.upgrade(), w.generation);
            w.renewal = None;
            drop(s);
            if let Some(lease) = lease {
                lease.hung_up(generation);
            }
            return;
        }
        // A worker may have sent the next renewal and registered it while
        // this one was being settled: keep the newer one.
        if w.renewal.is_none() {
            w.renewal = still_awaited;
        }
        let read = w.renewal.is_some();
        // Under the lock: the Watch removes the entry (and the fd's
        // registration) under it too, so the fd is still this socket.
        self.arm(WatchKey { slot, gen_, fd: w.fd }, read);
    }

    /// Re-arm a slot's registration for hang-up only.
    fn rearm_slot(&self, slot: u32, gen_: u32) {
        let s = lock(&self.slots);
        if let Some((g, Some(w))) = s.entries.get(slot as usize) {
            if *g == gen_ {
                self.arm(WatchKey { slot, gen_, fd: w.fd }, w.renewal.is_some());
            }
        }
    }

    /// Give up the replies whose deadline passed; the time until the next
    /// deadline, in whole milliseconds rounded up (-1: none).
    fn expire_replies(&self) -> c_int {
        loop {
            let now = Instant::now();
            let mut s = lock(&self.slots);
            let Some(&Reverse((deadline, id, slot, gen_))) = s.deadlines.peek() else {
                return -1;
            };
            if deadline > now {
                let ms = (deadline - now).as_micros().div_ceil(1000);
                return c_int::try_from(ms).unwrap_or(c_int::MAX);
            }
            s.deadlines.pop();
            let expired = match s.entries.get_mut(slot as usize) {
                Some((g, Some(w))) if *g == gen_ && w.renewal.as_ref().is_some_and(|(i, _)| *i == id) => {
                    w.renewal.take()
                }
                _ => None,
            };
            drop(s);
            if let Some((_, p)) = expired {
                p.conn.abandon_reply();
                let what = format!(
                    "renew {:?}",
                    p.lease.upgrade().map(|l| l.key.clone()).unwrap_or_default()
                );
                let e = Error::new(
                    ErrorKind::Deadline,
                    format!("{what}: no reply before the deadline"),
                );
                log!(Level::Warn, "{e}");
                settle(*p, Err(e));
                self.rearm_slot(slot, gen_);
            }
        }
    }
}

/// Hand a renewal's outcome to the scheduler's policy.
fn settle(p: Pending, r: crate::Result<Outcome>) {
    let Some(lease) = p.lease.upgrade() else { return };
    let result = r.and_then(|o| match o {
        Outcome::Renewed { lease_s } => Ok(lease_s),
        _ => Err(Error::new(ErrorKind::Protocol, "renew: unexpected reply")),
    });
    renewal::finish(&lease, p.generation, p.sent, p.expires_at, result, None);
}

impl Service for Engine {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// The engine of `rt`, started on first use; `None` if it cannot run (then
/// hang-ups are noticed at the next renewal, as before).
pub(crate) fn engine(rt: &Arc<Runtime>) -> Option<&Arc<Engine>> {
    rt.service(Slot::Engine, || {
        let engine = Arc::new(Engine::new(Arc::downgrade(rt))?);
        if !rt.register(Arc::clone(&engine) as Arc<dyn Service>) {
            return None;
        }
        let e = Arc::clone(&engine);
        if !rt.spawn("dflockd-engine", move || e.run()) {
            log!(
                Level::Warn,
                "cannot start the engine thread; hang-ups are noticed at renewal"
            );
            return None;
        }
        Some(engine)
    })
}

/// The engine of `rt` if it was started; never starts it.
pub(crate) fn started(rt: &Runtime) -> Option<&Arc<Engine>> {
    rt.started(Slot::Engine)
}

/// Tell the engine of `rt` to look at operation `id` again (its handle was
/// cancelled).
pub(crate) fn poke(rt: &Runtime, id: u64) {
    if let Some(engine) = started(rt) {
        engine.submit(Inbound::Poke(id));
    }
}
