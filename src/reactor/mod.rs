//! The reactor: one epoll thread per runtime generation, the place where
//! the library waits on many connections at once. It names no lease, client
//! or operation type: tokens are plain ids, and what an event means is the
//! business of the layers above, reached through three small traits:
//! - [`Watcher`]: the owner of a watched connection (a held lease's home),
//!   told when the server hangs up (EOF or reset: `EPOLLRDHUP`, `EPOLLHUP`,
//!   `EPOLLERR`), so a lease whose connection the server dropped stops being
//!   reported held at once instead of at its next renewal;
//! - [`Timed`]: woken at a time it asked for (a lease's renewal);
//! - [`Tasks`]: the evented operations (src/engine/), handed the messages
//!   other threads post, the events of the ids they registered, and their
//!   timers.
//!
//! A renewal's reply is awaited here too ([`Pending`]): the renewal sends
//! its request without waiting (`Connection::start_request`) and the
//! reactor reads the reply when the socket is readable, or gives up at the
//! deadline, then hands the outcome to the pending's own `settle`. A hung or
//! slow server so holds up no thread and delays no other renewal.
//!
//! The blocking paths keep owning the byte stream otherwise: the reactor
//! only ever `try_lock`s a connection and reads without waiting
//! (`MSG_DONTWAIT`).
//!
//! Watch registrations are one-shot (`EPOLLONESHOT`) and keyed by (slot,
//! generation) in the event's `u64`, so an event for a registration that
//! was removed (its lease released, lost or re-homed) or whose fd number
//! was reused is recognised as stale and ignored. Task ids carry
//! [`TASK_BIT`].
//!
//! A socket stays in the epoll set once watched: removing a watch frees its
//! slot but leaves the kernel registration (one-shot, with the dead slot's
//! token), and the next lease homed on the same pooled connection re-arms
//! it with `EPOLL_CTL_MOD` under its own token. An acquire+release pair so
//! costs one `epoll_ctl` instead of an ADD and a DEL (~0.3 µs instead of
//! ~1.7 µs, measured). What the leftover registration can do meanwhile is
//! fire once with a dead token (the pooled connection hung up, or a reply
//! arrived while it was armed for one): the reactor ignores it, and the
//! one-shot stays spent. The kernel drops the registration itself when the
//! connection closes its socket, so no late `EPOLL_CTL_DEL` can hit a
//! reused fd number.

use std::any::Any;
use std::cmp::Reverse;
use std::ffi::c_int;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::connection::{Connection, READ_ARMED, Started, WRITE_ARMED};
use crate::log::{self, Level, log};
use crate::notify;
use crate::protocol::Outcome;
use crate::runtime::{Runtime, Service, Slot};
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

mod awaited;
mod table;
use table::{Entry, Slots, WakeUp, WakeUps, Watched};
pub(crate) use table::{Pending, Timed, WatchKey, Watcher};

/// Epoll tokens of tasks carry this bit (hang-up watches never do).
pub(crate) const TASK_BIT: u64 = 1 << 62;

/// A message another thread posts to the tasks ([`Reactor::post`]).
pub(crate) type Message = Box<dyn Any + Send>;

/// The evented operations, driven on the reactor's thread.
pub(crate) trait Tasks: Send {
    /// A message posted with [`Reactor::post`].
    fn handle(&mut self, reactor: &Reactor, message: Message);
    /// An epoll event for task `id` (registered with `TASK_BIT | id`).
    fn on_event(&mut self, reactor: &Reactor, id: u64, bits: u32);
    /// Run the timers that are due; when the next one is.
    fn expire(&mut self, reactor: &Reactor) -> Option<Instant>;
}

/// The token of the engine's own wake-up eventfd.
const WAKER: u64 = u64::MAX;

thread_local! {
    /// Set on the engine thread: it needs no wake-up to see a new timer.
    static ON_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Connections with renewals queued during this round of wake-ups,
    /// written together when the round ends ([`corked`]).
    static CORKED: std::cell::RefCell<Vec<Arc<Connection>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Set while the reactor runs a round of wake-ups.
    static IN_ROUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// During a round of wake-ups ([`in_round`]): `conn` has a request
/// queued ([`Connection::queue_request`]) that the end of the round
/// writes, with the others queued there, in one write.
pub(crate) fn cork(conn: &Arc<Connection>) {
    CORKED.with(|c| {
        let mut c = c.borrow_mut();
        if !c.iter().any(|x| Arc::ptr_eq(x, conn)) {
            c.push(Arc::clone(conn));
        }
    });
}

/// Whether requests may be queued for the end of the round (on the
/// reactor's thread, in a round of wake-ups), see [`cork`].
pub(crate) fn in_round() -> bool {
    IN_ROUND.with(std::cell::Cell::get)
}

pub(crate) struct Reactor {
    /// Its generation: log messages go to that generation's notifier.
    rt: Weak<Runtime>,
    epoll: OwnedFd,
    inbox: Arc<Inbox>,
    stopped: AtomicBool,
    slots: Mutex<Slots>,
    /// Wake-ups (renewals of held leases).
    wake_ups: Mutex<WakeUps>,
    /// Ids of tasks.
    next_id: AtomicU64,
    /// The tasks, until the thread takes them.
    tasks: Mutex<Option<Box<dyn Tasks>>>,
}

/// What other threads hand the engine thread, and the eventfd that wakes
/// it (also written alone, when only a deadline changed).
pub(crate) struct Inbox {
    items: Mutex<Vec<Message>>,
    /// Connections where a blocking call read replies the reactor awaits
    /// (or held the connection while they came): their ids.
    nudged: Mutex<Vec<u64>>,
    waker: OwnedFd,
}

impl Inbox {
    fn nudge(&self, conn: u64) {
        {
            let mut nudged = lock(&self.nudged);
            if nudged.contains(&conn) {
                return; // woken already; not looked at yet
            }
            nudged.push(conn);
        }
        self.wake_unless_engine();
    }

    pub(crate) fn push(&self, item: Message) {
        lock(&self.items).push(item);
        self.wake_unless_engine();
    }

    /// The engine thread looks at its inbox before it sleeps (`Reactor::
    /// run`): what it posts to itself (a home's reply it read) needs no
    /// eventfd round trip.
    fn wake_unless_engine(&self) {
        if !ON_ENGINE.with(std::cell::Cell::get) {
            self.wake();
        }
    }

    /// Whether messages or nudges wait.
    fn has_work(&self) -> bool {
        !lock(&self.items).is_empty() || !lock(&self.nudged).is_empty()
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(self.waker.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

/// A watch; dropping it removes it (the registration stays).
pub(crate) struct Watch {
    engine: Weak<Reactor>,
    key: WatchKey,
    /// Keeps the socket open while the watch lives: the reactor re-arms
    /// the registration by fd number, which must not reach a new
    /// connection that got the same number after a close.
    _conn: Arc<Connection>,
}

impl Watch {
    pub(crate) fn key(&self) -> WatchKey {
        self.key
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.unwatch(self);
        }
    }
}

impl Reactor {
    fn new(rt: Weak<Runtime>, tasks: Box<dyn Tasks>) -> Option<Reactor> {
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
        (rc == 0).then_some(Reactor {
            rt,
            epoll,
            inbox: Arc::new(Inbox {
                items: Mutex::new(Vec::new()),
                nudged: Mutex::new(Vec::new()),
                waker,
            }),
            stopped: AtomicBool::new(false),
            slots: Mutex::new(Slots::default()),
            wake_ups: Mutex::new(WakeUps::default()),
            next_id: AtomicU64::new(1),
            tasks: Mutex::new(Some(tasks)),
        })
    }

    /// Call `owner.due(due)` at `due`.
    pub(crate) fn wake_at(&self, owner: Weak<dyn Timed>, due: Instant) {
        let mut w = lock(&self.wake_ups);
        w.seq += 1;
        let earliest = w.heap.peek().is_none_or(|Reverse(e)| due < e.due);
        let seq = w.seq;
        w.heap.push(Reverse(WakeUp { due, seq, owner }));
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
            IN_ROUND.with(|r| r.set(true));
            for e in due {
                if let Some(owner) = e.owner.upgrade() {
                    owner.due(e.due);
                }
            }
            IN_ROUND.with(|r| r.set(false));
            let corked = CORKED.with(|c| std::mem::take(&mut *c.borrow_mut()));
            for conn in &corked {
                self.flush(conn);
            }
        }
    }

    /// A fresh id for a task.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) & (TASK_BIT - 1)
    }

    pub(crate) fn inbox(&self) -> Arc<Inbox> {
        Arc::clone(&self.inbox)
    }

    /// Hand a message to the tasks, on the reactor's thread.
    pub(crate) fn post(&self, message: Message) {
        self.inbox.push(message);
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
    pub(crate) fn ctl(&self, fd: RawFd, token: u64, bits: u32, modify: bool) -> bool {
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

    /// Watch `conn` (for `owner`'s `generation`, e.g. a held lease's home)
    /// for hang-up. `None` if the fd cannot be registered. A connection
    /// watched before (a pooled home) is still registered: no syscall.
    pub(crate) fn watch(
        self: &Arc<Self>,
        owner: Weak<dyn Watcher>,
        generation: u64,
        conn: &Arc<Connection>,
    ) -> Option<Watch> {
        let inbox = Arc::clone(&self.inbox);
        conn.set_nudge(move || Arc::new(move |id| inbox.nudge(id)));
        let mut s = lock(&self.slots);
        s.sweep();
        s.next_id += 1;
        let seq = s.next_id;
        let entry = s.entries.entry(conn.id()).or_insert_with(|| Entry::new(conn));
        entry.watchers.push(Watched {
            owner,
            generation,
            seq,
        });
        let read = !entry.awaited.is_empty();
        s.watched += 1;
        let watch = Watch {
            engine: Arc::downgrade(self),
            key: WatchKey { conn: conn.id(), seq },
            _conn: Arc::clone(conn),
        };
        if !self.register(conn, read, conn.wants_write()) {
            drop(s);
            drop(watch); // removes the watcher
            return None;
        }
        Some(watch)
    }

    /// Register `conn`'s socket under its own id: hang-up always
    /// (edge-triggered and persistent: it fires once, when the server
    /// closes), readable too while a reply is awaited. No syscall when the
    /// registration already is so, which is the case for a pooled home
    /// connection: an acquire+release pair costs no `epoll_ctl`.
    fn register(&self, conn: &Connection, read: bool, write: bool) -> bool {
        let token = conn.id() | if read { READ_ARMED } else { 0 } | if write { WRITE_ARMED } else { 0 };
        let old = conn.set_registration(token);
        if old == token {
            return true;
        }
        let mut bits = libc::EPOLLRDHUP | libc::EPOLLET;
        if read {
            bits |= libc::EPOLLIN;
        }
        if write {
            bits |= libc::EPOLLOUT;
        }
        let ok = self.ctl(conn.raw_fd(), conn.id(), bits as u32, old != 0);
        if !ok {
            conn.set_registration(0);
        }
        ok
    }

    /// Register (or re-arm) task `id`'s interest in `fd` (readable or
    /// writable, and hang-up, one-shot). `conn`: the connection over that
    /// socket, whose registration record it updates (a dial has none yet:
    /// `known` then says whether this task registered `fd` before).
    pub(crate) fn arm_task(
        &self,
        conn: Option<&Connection>,
        fd: RawFd,
        id: u64,
        read: bool,
        known: bool,
    ) -> bool {
        let bits = if read { libc::EPOLLIN } else { libc::EPOLLOUT };
        let bits = (bits | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
        let modify = match conn {
            Some(c) => c.set_registration(TASK_BIT | id) != 0 || known,
            None => known,
        };
        self.ctl(fd, TASK_BIT | id, bits, modify)
    }

    /// Remove the watch. The socket stays registered under the
    /// connection's id, so the next watch of it (the next lease homed on
    /// the pooled connection) costs nothing.
    fn unwatch(&self, w: &Watch) {
        let mut s = lock(&self.slots);
        if let Some(entry) = s.entries.get_mut(&w.key.conn) {
            let before = entry.watchers.len();
            entry.watchers.retain(|x| x.seq != w.key.seq);
            if entry.watchers.len() < before {
                s.watched -= 1;
            }
        }
    }

    fn wake(&self) {
        self.inbox.wake();
    }

    /// Write the renewals queued on `conn` during a round of wake-ups (one
    /// write for all of them); arm writable for what the socket did not
    /// take.
    fn flush(&self, conn: &Arc<Connection>) {
        let _ = conn.flush_queued(); // a failure breaks it: the hang-up follows
        self.rearm(conn.id());
    }

    fn run(&self) {
        // No application code on this thread: log messages are handed to
        // the notifier thread after each round (a blocking logger must not
        // delay a renewal or a hang-up).
        log::defer_on_this_thread();
        ON_ENGINE.with(|f| f.set(true));
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
        let Some(mut tasks) = lock(&self.tasks).take() else {
            return;
        };
        while !self.stopped.load(Ordering::SeqCst) {
            let replies = self.expire_replies();
            let renewals = self.run_wake_ups();
            let ops = tasks.expire(self);
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
            // (Posted by this thread, so not woken for: look without sleeping.)
            let timeout = if self.inbox.has_work() { 0 } else { timeout };
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
                    continue; // the inbox is read below
                }
                if key & TASK_BIT != 0 {
                    tasks.on_event(self, key & !TASK_BIT, e.events);
                    continue;
                }
                self.on_event(key, e.events);
            }
            self.run_inbox(&mut *tasks);
        }
    }

    /// Act on the nudges and messages other threads (and this one) posted.
    fn run_inbox(&self, tasks: &mut dyn Tasks) {
        self.run_nudged(tasks);
        let items = std::mem::take(&mut *lock(&self.inbox.items));
        for item in items {
            tasks.handle(self, item);
        }
    }

    /// Hand the messages this thread logged to the notifier thread (as
    /// bounded log lines: see `notify::log_lines`).
    fn flush_log(&self) {
        let deferred = log::take_deferred();
        if let (false, Some(rt)) = (deferred.is_empty(), self.rt.upgrade()) {
            notify::log_lines(&rt, deferred);
        }
    }

    /// One event on a connection registered under its id (`bits` 0: a
    /// nudge, read what is there).
    fn on_event(&self, id: u64, bits: u32) {
        let hang_up = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        let conn = {
            let s = lock(&self.slots);
            let Some(entry) = s.entries.get(&id) else {
                return;
            };
            let conn = entry.conn.upgrade();
            if entry.watchers.is_empty() && entry.awaited.is_empty() {
                // Pooled: a close makes it broken, so it is not handed
                // out again; readable left armed goes back to hang-up
                // only. Unless a task has registered the socket since
                // (an evented release on the former home): then this
                // event is stale, and re-registering would take the
                // task's readiness away from it.
                if let Some(conn) = conn.filter(|c| c.hang_ups_watched()) {
                    if hang_up {
                        conn.mark_broken();
                    }
                    self.register(&conn, false, false);
                }
                return;
            }
            match conn {
                Some(conn) => conn,
                None => return,
            }
        };
        if bits & libc::EPOLLOUT as u32 != 0 {
            let _ = conn.flush_queued();
        }
        // Replies (possibly the last bytes before a close) first, outside
        // the lock: settling one may end its lease and so drop its watch.
        self.collect(id, &conn);
        if hang_up {
            // Edge-triggered: it fires once. Every lease on the connection
            // moves on (a fresh connection with a new watch, or lost); the
            // replies still awaited will not come.
            conn.mark_broken();
            let (owners, dropped) = {
                let mut s = lock(&self.slots);
                let Some(entry) = s.entries.get_mut(&id) else {
                    return;
                };
                let owners: Vec<_> = entry
                    .watchers
                    .iter()
                    .map(|w| (w.owner.upgrade(), w.generation))
                    .collect();
                let dropped = std::mem::take(&mut entry.awaited);
                s.awaited -= dropped.len();
                (owners, dropped)
            };
            drop(dropped);
            for (owner, generation) in owners {
                if let Some(owner) = owner {
                    owner.hung_up(generation);
                }
            }
            return;
        }
        self.rearm(id);
    }

    /// Put a connection's registration to what it needs now: hang-up,
    /// readable while replies are awaited, writable while queued bytes
    /// wait.
    fn rearm(&self, id: u64) {
        let s = lock(&self.slots);
        if let Some(entry) = s.entries.get(&id) {
            if let Some(conn) = entry.conn.upgrade() {
                if conn.hang_ups_watched() {
                    self.register(&conn, !entry.awaited.is_empty(), conn.wants_write());
                }
            }
        }
    }

    /// The connections nudged since the last round: read what they hold,
    /// and tell the tasks whose replies another reader kept for them
    /// (read as if their socket was readable).
    fn run_nudged(&self, tasks: &mut dyn Tasks) {
        let ids = std::mem::take(&mut *lock(&self.inbox.nudged));
        for id in ids {
            self.on_event(id, 0);
            let conn = lock(&self.slots).entries.get(&id).and_then(|e| e.conn.upgrade());
            for reader in conn.map(|c| c.kept_for()).unwrap_or_default() {
                tasks.on_event(self, reader, libc::EPOLLIN as u32);
            }
        }
    }
}

impl Service for Reactor {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// Start the reactor of `rt` with its `tasks` (on first use; later calls
/// return the running one). `None` if it cannot run.
pub(crate) fn start(rt: &Arc<Runtime>, tasks: impl FnOnce() -> Box<dyn Tasks>) -> Option<&Arc<Reactor>> {
    rt.service(Slot::Engine, || {
        let reactor = Arc::new(Reactor::new(Arc::downgrade(rt), tasks())?);
        if !rt.register(Arc::clone(&reactor) as Arc<dyn Service>) {
            return None;
        }
        let r = Arc::clone(&reactor);
        if !rt.spawn("dflockd-engine", Box::new(move || r.run())) {
            log!(
                Level::Warn,
                "cannot start the engine thread; hang-ups are noticed at renewal"
            );
            return None;
        }
        Some(reactor)
    })
}

/// The reactor of `rt` if it was started; never starts it.
pub(crate) fn started(rt: &Runtime) -> Option<&Arc<Reactor>> {
    rt.started(Slot::Engine)
}
