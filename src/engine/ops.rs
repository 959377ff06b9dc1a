//! Evented operations: acquires, releases and stats that the engine thread drives
//! from start to completion without blocking anyone, then reports on a
//! completion queue (or, for `acquire_async`, to a callback run on the
//! notifier thread: never on this one).
//!
//! The pieces, all owned by the engine thread (no locks of their own):
//! - a *lane* per (client, server) (`lanes.rs`): the FIFO of operations
//!   waiting for a connection, which also holds back an acquire while an
//!   earlier one of its key has its `e` unanswered;
//! - *dials* (`dial.rs`): connections being opened without blocking
//!   (resolve, TCP connect, TLS handshake, `auth`), at most
//!   `lanes::MAX_DIALS` per lane at once;
//! - *operations* (their data in `op.rs`; the stages that settle a lease in
//!   `ops/stages.rs`): requests on one connection, each reply awaited with a
//!   deadline, then settled through the same lease code as the blocking
//!   path (`Shared::hold`, including the rule that a grant read too late is
//!   renewed before it is reported). An acquire is `e` then, if `queued`,
//!   `w` on the same connection: the server answers `e` at once, so the
//!   next acquire of the same key is sent only after the server has queued
//!   this one. Requests on different connections reach a server in no
//!   particular order; this is what keeps starts of one key in FIFO order.
//!   A try is one `l` with timeout 0 (the server grants or answers
//!   `timeout` at once and keeps nothing queued), ordered like an `e`; an
//!   enqueue is `e` alone, which leaves a `queued` connection on the lease
//!   for a later wait. A release is `r`; stats is `stats` (no lease).
//!
//! Each task has an id; its socket is registered in the engine's epoll with
//! `TASK_BIT | id` (one-shot, re-armed after each event), and its deadline
//! sits in a heap of (when, id) entries (stale entries are skipped).

// Operations stay boxed from start to end: they move between the task map
// and the stage functions many times, a pointer each time.
#![allow(clippy::boxed_local)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::dial::{Dial, Resolved, Step};
use super::lanes::{Lane, LaneKey, Next, lane_key};
use super::op::{Done, Mode, Op, Purpose, Stage, op_command};

mod home;
mod pump;
mod replies;
mod reroute;
mod timers;

use home::{OnHome, keeps_turn};
mod stages;
use crate::client::ClientInner;
use crate::clock::Stamp;
use crate::connection::{Connection, Grant, Started, earliest};
use crate::events::{Event, EventKind, Queue, Ready};
use crate::held::cancelled;
use crate::log::{Level, log};
use crate::metrics::bump;
use crate::notify::on_notifier;
use crate::operation::{Ask, Next as OpNext, Via};
use crate::protocol::{Command, Outcome, Request, Stats};
use crate::reactor::{Message, Reactor, TASK_BIT, Tasks};
use crate::renewal::RenewElsewhere;
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

/// Pause before retrying a send on a connection another thread was using.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// How long an acquire's `e` reply may wait for the application to drain
/// its queue before the engine reads it (and sends the `w`) itself. The
/// nudges of all operations share the reactor's wake-ups: at most one per
/// `NUDGE` while acquires start.
const NUDGE: Duration = Duration::from_millis(5);

/// How long a reply may sit unread on a completion queue nobody drains
/// before the engine reads it (a grant is then held and renewed, as if
/// drained): the engine looks at such queues this often while operations
/// await replies on them.
const SWEEP: Duration = Duration::from_millis(250);

/// How long a cancelled operation awaits the server's close of its
/// half-closed connection before it reports `Cancelled` anyway.
const CANCEL_CLOSE_WAIT: Duration = Duration::from_millis(250);

/// The timer id of that look (task ids stay below `TASK_BIT`).
const SWEEP_ID: u64 = u64::MAX;

enum Task {
    Op(Box<Op>),
    Dial(Box<Dial>),
}

/// What other threads hand the engine thread.
pub(crate) enum Inbound {
    /// A new operation (its id was taken with `Reactor::next_id`).
    Start(u64, Box<Op>),
    /// Look at operation `id` again: its handle was cancelled.
    Poke(u64),
    /// A start another thread could not run itself (the driver was busy);
    /// `Driver::deferred` counts these until they have run.
    Deferred(u64, Box<Op>),
    /// Socket readiness a completion queue's drain could not hand over
    /// itself (the driver was busy).
    Ready(u64, u32),
    /// The reply to operation `id`'s request on a shared home, read by the
    /// reactor (`ops/home.rs`).
    HomeReply(u64, Result<Outcome>),
}

/// A message that only wakes the reactor (to see an earlier deadline).
pub(crate) struct Wake;

/// The reactor's side of the driver: each call takes the lock.
pub(crate) struct Shell(pub(crate) Arc<Mutex<Driver>>);

impl Tasks for Shell {
    fn handle(&mut self, engine: &Reactor, message: Message) {
        lock(&self.0).handle(engine, message);
    }

    fn on_event(&mut self, engine: &Reactor, id: u64, bits: u32) {
        lock(&self.0).on_event(engine, id, bits);
    }

    fn expire(&mut self, engine: &Reactor) -> Option<Instant> {
        let mut d = lock(&self.0);
        let next = d.expire(engine);
        d.planned = next;
        next
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // The reactor stopped (the generation is over): its operations go
        // now, as they did with its thread (they hold their clients).
        let old = std::mem::take(&mut *lock(&self.0));
        drop(old);
    }
}

/// The engine's operations, dials, lanes and their deadlines.
#[derive(Default)]
pub(crate) struct Driver {
    /// The engine, as the completion queues that read replies for it
    /// name it.
    me: Option<Weak<dyn Ready>>,
    /// When the reactor wakes next for these deadlines (it last asked);
    /// an earlier one set on another thread wakes it.
    planned: Option<Instant>,
    /// Starts posted to the reactor because the driver was busy and not run
    /// yet: while any are, later starts are posted too (start order).
    pub(super) deferred: Arc<AtomicUsize>,
    /// Queues replies were armed on, for the sweep (`SWEEP`).
    queues: Vec<Weak<Queue>>,
    /// The sweep's timer is set.
    sweeping: bool,
    tasks: HashMap<u64, Task>,
    registered: HashMap<u64, RawFd>,
    lanes: HashMap<LaneKey, Lane>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The heap's size at which ended operations' timers are dropped next.
    compact_above: usize,
    /// Operations that ended while their reply on a home was awaited.
    abandoned: HashMap<u64, home::Abandoned>,
    /// Lanes to pump once the current event is handled ([`Driver::pump_dirty`],
    /// a loop run by the entry points only). Nothing below them pumps a
    /// lane itself, so pumps never nest: a chain of cancelled acquires of
    /// one key, or dials that fail at once (`EMFILE` with hundreds of
    /// acquires waiting), would otherwise nest a pump per operation on the
    /// reactor's stack.
    dirty: Vec<LaneKey>,
}

impl Tasks for Driver {
    fn handle(&mut self, engine: &Reactor, message: Message) {
        let message = match message.downcast::<Inbound>() {
            Ok(inbound) => {
                self.handle_one(engine, *inbound);
                self.pump_dirty(engine);
                return;
            }
            Err(other) => other,
        };
        let message = match message.downcast::<Resolved>() {
            Ok(resolved) => {
                let Resolved(id, addrs) = *resolved;
                if let Some(Task::Dial(mut dial)) = self.tasks.remove(&id) {
                    let step = dial.resolved(addrs);
                    self.dial_step(engine, id, dial, step);
                }
                self.pump_dirty(engine);
                return;
            }
            Err(other) => other,
        };
        if let Ok(renew) = message.downcast::<RenewElsewhere>() {
            let RenewElsewhere {
                lease,
                generation,
                token,
                server,
                home,
                expires_at,
                deadline,
            } = *renew;
            let op = Op::renew(lease, generation, token, server, home, expires_at, deadline);
            self.handle_one(engine, Inbound::Start(engine.next_id(), Box::new(op)));
            self.pump_dirty(engine);
        }
    }

    fn on_event(&mut self, engine: &Reactor, id: u64, bits: u32) {
        self.on_event_one(engine, id, bits);
        self.pump_dirty(engine);
    }

    fn expire(&mut self, engine: &Reactor) -> Option<Instant> {
        self.expire_timers(engine)
    }
}

impl Driver {
    pub(super) fn set_me(&mut self, me: Weak<dyn Ready>) {
        self.me = Some(me);
    }

    /// Start operation `id` on the calling thread.
    pub(super) fn start_here(&mut self, engine: &Reactor, id: u64, op: Box<Op>) {
        self.handle_one(engine, Inbound::Start(id, op));
    }

    /// A completion queue's fd reported task `id`'s socket: read it here.
    pub(super) fn ready_here(&mut self, engine: &Reactor, id: u64, bits: u32) {
        self.on_event_one(engine, id, bits);
    }

    /// After work on another thread: pump the lanes it touched; whether the
    /// reactor must wake for a deadline earlier than its planned wake-up.
    pub(super) fn settle_here(&mut self, engine: &Reactor) -> bool {
        self.pump_dirty(engine);
        let Some(&Reverse((next, _))) = self.timers.peek() else {
            return false;
        };
        if self.planned.is_some_and(|p| p <= next) {
            return false;
        }
        self.planned = Some(next);
        true
    }

    /// Pump the lanes marked dirty until none is. Called by the entry
    /// points (`handle`, `on_event`, `expire_timers`, `settle_here`) only:
    /// work a pump starts may mark lanes again, and they are pumped here,
    /// in this loop, never from inside it.
    fn pump_dirty(&mut self, engine: &Reactor) {
        while let Some(key) = self.dirty.pop() {
            self.pump(engine, key);
        }
    }

    /// Mark lane `key` for the next [`Driver::pump_dirty`].
    fn mark_dirty(&mut self, key: LaneKey) {
        if !self.dirty.contains(&key) {
            self.dirty.push(key);
        }
    }

    fn handle_one(&mut self, engine: &Reactor, inbound: Inbound) {
        match inbound {
            Inbound::Start(id, op) => self.start(engine, id, op),
            Inbound::Poke(id) => self.poke(engine, id),
            Inbound::Deferred(id, op) => {
                self.start(engine, id, op);
                // Under the lock, after the start: a later start of the
                // same thread that sees 0 runs after this one.
                self.deferred.fetch_sub(1, Ordering::SeqCst);
            }
            Inbound::Ready(id, bits) => self.on_event_one(engine, id, bits),
            Inbound::HomeReply(id, r) => self.home_reply(engine, id, r),
        }
    }

    fn start(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>) {
        if let Stage::Retry { conn } = std::mem::replace(&mut op.stage, Stage::Moving) {
            // A wait on its enqueue's connection, a release on its home.
            self.send(engine, id, op, conn);
        } else {
            op.stage = Stage::Waiting;
            self.enqueue(id, op);
        }
    }

    /// Send `op`'s request on `conn` without waiting: the one its machine
    /// asked for (acquires, waits, releases), a renewal elsewhere, a stats.
    fn send(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>, conn: Arc<Connection>) {
        let Some(lease) = op.lease.clone() else {
            // Stats: no lease, nothing to cancel.
            self.send_request(engine, id, op, conn, &Request::Stats);
            return;
        };
        if op.is_acquire() && lease.cancel_requested() {
            if matches!(op.ask, Some((_, Via::Same))) {
                // The connection holds our place in the queue (a wait after
                // a queued `e`): closing it leaves the queue.
                conn.abort();
            }
            op.stage = Stage::Retry { conn };
            let e = cancelled(&op.what());
            self.fail(engine, id, op, e);
            return;
        }
        let ask = match (&op.purpose, op.ask) {
            (Purpose::Renew { token, .. }, _) => Ask::Renew { token: *token },
            (_, Some((ask, _))) => ask,
            (_, None) => {
                op.stage = Stage::Retry { conn };
                let e = Error::new(ErrorKind::Protocol, format!("{}: nothing to send", op.what()));
                self.fail(engine, id, op, e);
                return;
            }
        };
        let lease_s = match op.purpose {
            Purpose::Acquire { lease_s, .. } => lease_s,
            _ => lease.renew_ttl(),
        };
        let req = ask.request(lease.kind, &lease.key, lease.limit, lease_s);
        self.send_request(engine, id, op, conn, &req);
    }

    /// Send `req` for `op` on `conn` without waiting; await its reply: on
    /// a home the reactor watches, as one more of the requests it reads
    /// there in order (a release pipelined behind the other leases'
    /// renewals); on the operation's own connection, read by the task.
    fn send_request(&mut self, engine: &Reactor, id: u64, op: Box<Op>, conn: Arc<Connection>, req: &Request) {
        let sent = Stamp::now();
        // (A blocking request never goes on a home; a connection without
        // held leases is the operation's own, even if the reactor still
        // watches it from its last lease.)
        let mut op = if !req.may_block() && conn.homed() > 0 {
            match self.send_on_home(engine, id, op, Arc::clone(&conn), req) {
                OnHome::NotWatched(op) => op,
                other => return self.after_home(engine, id, other, conn, sent),
            }
        } else {
            op
        };
        match conn.start_request_over(req, id) {
            Ok(Started::Sent) => {
                let reply_by = conn.reply_deadline(req);
                self.await_reply(engine, id, op, conn, reply_by, sent, req.command());
            }
            Ok(Started::Busy) if !req.may_block() => {
                // A call holds the connection (a blocking release of a
                // lease that lived there too): the reactor's way queues
                // the request for that call to write when done, instead of
                // retrying until the call ends (and the connection with it,
                // if the call broke it).
                let r = self.send_on_home(engine, id, op, Arc::clone(&conn), req);
                self.after_home(engine, id, r, conn, sent);
            }
            Ok(Started::Busy) => self.retry_soon(id, op, conn, sent),
            Err(e) => {
                op.stage = Stage::Retry { conn };
                self.reply(engine, id, op, Err(e));
            }
        }
    }

    /// Go on after offering `op`'s request to the home's reader: nothing
    /// more to do if it was sent; else try again shortly, or fail.
    fn after_home(&mut self, engine: &Reactor, id: u64, r: OnHome, conn: Arc<Connection>, sent: Stamp) {
        match r {
            OnHome::Sent => {}
            OnHome::NotWatched(op) | OnHome::Busy(op) => self.retry_soon(id, op, conn, sent),
            OnHome::Failed(mut op, e) => {
                op.stage = Stage::Retry { conn };
                self.reply(engine, id, op, Err(e));
            }
        }
    }

    /// `conn` was busy for `op`'s request: send it again shortly.
    fn retry_soon(&mut self, id: u64, mut op: Box<Op>, conn: Arc<Connection>, sent: Stamp) {
        op.step_by = earliest(sent.mono + BUSY_RETRY, Some(op.deadline));
        self.timers.push(Reverse((op.step_by, id)));
        op.stage = Stage::Retry { conn };
        self.tasks.insert(id, Task::Op(op));
    }

    /// A grant held or a release done.
    fn succeed(&mut self, engine: &Reactor, id: u64, op: Box<Op>) {
        let kind = if op.is_acquire() {
            EventKind::Acquired
        } else {
            EventKind::Released
        };
        self.succeed_with(engine, id, op, kind, None);
    }

    fn succeed_with(
        &mut self,
        engine: &Reactor,
        id: u64,
        mut op: Box<Op>,
        kind: EventKind,
        stats: Option<Stats>,
    ) {
        self.disarm(engine, id);
        if let Some(conn) = std::mem::replace(&mut op.stage, Stage::Moving).conn_owned() {
            if !op.is_acquire() {
                op.check_in(conn);
            }
        }
        complete(engine, *op, kind, None, stats);
    }

    fn fail(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>, e: Error) {
        if op.is_renewal() {
            self.renewed(engine, id, op, Err(e));
            return;
        }
        self.disarm(engine, id);
        self.enqueued(&mut op);
        if let Some(conn) = std::mem::replace(&mut op.stage, Stage::Moving).conn_owned() {
            // Usable after a refusal (`timeout`, a wrong token); dropped
            // by the pool when broken.
            op.check_in(conn);
        }
        if op.is_acquire() && e.kind() == ErrorKind::Timeout {
            bump(&op.client.metrics.acquire_timeouts);
        }
        let kind = op.failed_kind();
        complete(engine, *op, kind, Some(e), None);
    }

    /// Register (or re-arm) `fd` for task `id`: readable or writable, and
    /// hang-up, one-shot (`conn`: the connection over it, if any yet).
    fn arm(&mut self, engine: &Reactor, id: u64, conn: Option<&Connection>, fd: RawFd, read: bool) {
        let old = self.registered.insert(id, fd);
        engine.arm_task(conn, fd, id, read, old == Some(fd));
    }

    /// Forget task `id`'s registration. The kernel registration stays (one
    /// syscall saved per operation; the next user of the socket re-arms
    /// it) and can fire once with this task's dead id, which is ignored.
    /// Never EPOLL_CTL_DEL: it goes by fd number, and a number whose socket
    /// closed may already belong to another thread's new connection.
    fn disarm(&mut self, _engine: &Reactor, id: u64) {
        self.registered.remove(&id);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The engine stops: the generation is over (every handle is gone),
        // nobody is left to tell. Sockets close with their tasks.
        self.registered.clear();
    }
}

/// Whether the server closed `conn` (after our half-close): pending replies
/// are read and dropped first; then EOF or an error is a close, nothing
/// yet (EAGAIN) is not.
fn server_closed(conn: &Connection, reader: u64, cmd: Command, key: Option<&str>) -> bool {
    loop {
        match conn.poll_reply(reader, cmd, key) {
            Ok(Some(_)) => continue,
            Ok(None) => return false,
            // EOF, or nothing awaited any more: look at the socket itself.
            Err(_) => break,
        }
    }
    let mut byte = 0u8;
    // SAFETY: a 1-byte peek into a live byte on the connection's open fd.
    let n = unsafe {
        libc::recv(
            conn.raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    !(n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN))
}

fn is_waiting(tasks: &HashMap<u64, Task>, id: u64) -> bool {
    matches!(tasks.get(&id), Some(Task::Op(op)) if matches!(op.stage, Stage::Waiting))
}

/// Deliver an operation's outcome. The handle is free again before anyone
/// can see the event (its guard is dropped first), so the application may
/// start the next operation as soon as it reads it.
fn complete(engine: &Reactor, op: Op, kind: EventKind, error: Option<Error>, stats: Option<Stats>) {
    let Op {
        lease, purpose, done, ..
    } = op;
    drop(purpose);
    match done {
        Some(Done::Event { queue, tag }) => queue.push(Event {
            tag,
            kind,
            error,
            stats,
        }),
        Some(Done::Call(f)) => {
            let r = match error {
                None => Ok(()),
                Some(e) => Err(e),
            };
            match engine.runtime() {
                Some(rt) => on_notifier(&rt, Box::new(move || f(r))),
                None => drop(f),
            }
        }
        None => {}
    }
    drop(lease);
}
