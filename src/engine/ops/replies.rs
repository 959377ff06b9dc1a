//! Replies: reading an operation's reply when its socket (or the
//! application's poll) says so, arming for it, and acting on it through
//! the operation machine (`reply`).

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Instant;

use super::*;

impl Driver {
    pub(super) fn on_event_one(&mut self, engine: &Reactor, id: u64, bits: u32) {
        let hang_up = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        match self.tasks.remove(&id) {
            Some(Task::Dial(mut dial)) => {
                let step = dial.ready();
                self.dial_step(engine, id, dial, step);
            }
            // Its reply is the reactor's to read (a home): never this
            // task's (a stale registration firing, a kept line's nudge).
            Some(Task::Op(op)) if op.on_home => {
                self.tasks.insert(id, Task::Op(op));
            }
            Some(Task::Op(op)) => {
                if let Some((mut op, conn)) = self.read_reply(engine, id, op, hang_up) {
                    self.arm_reply(engine, id, &mut op, &conn);
                    self.tasks.insert(id, Task::Op(op));
                }
            }
            None => {}
        }
    }

    /// Read `op`'s reply if it came (and act on it); `op` and its
    /// connection back when nothing is there yet.
    pub(super) fn read_reply(
        &mut self,
        engine: &Reactor,
        id: u64,
        op: Box<Op>,
        hang_up: bool,
    ) -> Option<(Box<Op>, Arc<Connection>)> {
        let Some(conn) = op.conn().cloned() else {
            self.tasks.insert(id, Task::Op(op));
            return None;
        };
        if op.cancelling {
            // Whatever the server still says (a raced grant) is dropped;
            // its close (EOF, or an error) ends the operation.
            if !server_closed(&conn, id, op_command(&op), op.key()) {
                return Some((op, conn));
            }
            conn.abort();
            let e = cancelled(&op.what());
            self.fail(engine, id, op, e);
            return None;
        }
        let key = op.key().map(str::to_owned);
        match conn.poll_reply(id, op_command(&op), key.as_deref()) {
            Ok(None) if !hang_up => return Some((op, conn)),
            Ok(None) => {
                conn.mark_broken();
                let e = Error::new(
                    ErrorKind::Io,
                    format!("{}: connection closed by the server", op.what()),
                );
                self.reply(engine, id, op, Err(e));
            }
            Ok(Some(outcome)) => self.reply(engine, id, op, Ok(outcome)),
            Err(e) => self.reply(engine, id, op, Err(e)),
        }
        None
    }

    /// Others of its key now wait behind operation `id`'s ordered request:
    /// have its reply read when it comes (this thread), not when the
    /// application next drains its queue.
    pub(super) fn read_promptly(&mut self, engine: &Reactor, id: u64) {
        let conn = match self.tasks.get(&id) {
            // On a home the reactor reads it as soon as it comes.
            Some(Task::Op(op)) if op.on_home => return,
            Some(Task::Op(op)) => match &op.stage {
                Stage::Asked { conn, .. } => Arc::clone(conn),
                _ => return, // armed (by `arm_reply`) when it is sent
            },
            _ => return,
        };
        self.arm(engine, id, Some(&conn), conn.raw_fd(), true);
    }

    /// Await `op`'s reply on `conn`: on the fd of the completion queue it
    /// reports to, so the application's own poll wakes on the reply and
    /// reads it (no handoff through this thread), else (a callback, a
    /// renewal, a queue that cannot take it) in the reactor.
    pub(super) fn arm_reply(&mut self, engine: &Reactor, id: u64, op: &mut Op, conn: &Connection) {
        if op.cancelling {
            // Awaiting the server's close: the engine watches it.
            self.arm(engine, id, Some(conn), conn.raw_fd(), true);
            return;
        }
        let others_wait = op.enqueuing
            && op.ordered_key().is_some_and(|k| {
                self.lanes
                    .get(&lane_key(&op.client, op.server))
                    .is_some_and(|lane| lane.has_blocked(&k))
            });
        if let (Some(Done::Event { queue, .. }), Some(me), false) = (&op.done, &self.me, others_wait) {
            if queue.arm(me, conn.raw_fd(), id) {
                let weak = Arc::downgrade(queue);
                if !self.queues.iter().any(|q| Weak::ptr_eq(q, &weak)) {
                    self.queues.retain(|q| q.strong_count() > 0);
                    self.queues.push(weak);
                }
                if !self.sweeping {
                    self.sweeping = true;
                    self.timers.push(Reverse((Instant::now() + SWEEP, SWEEP_ID)));
                }
                // An `e` that may be answered `queued` leads to the `w`:
                // the engine reads it after NUDGE if nobody did.
                let acquiring = matches!(
                    op.purpose,
                    Purpose::Acquire {
                        mode: Mode::Acquire,
                        ..
                    }
                );
                // (So does the try a shared acquire starts with: `timeout`
                // leads to the `e`.)
                let leads_on = matches!(op.ask, Some((Ask::Enqueue | Ask::Acquire { timeout_s: 0 }, _)));
                // A nudge still ahead keeps its timer; one already due may
                // have fired while the operation was out of the task table
                // (a drain was acting on it), so it gets a fresh timer.
                let now = Instant::now();
                op.nudge = match op.nudge {
                    _ if !(leads_on && acquiring) => None,
                    Some(at) if at > now => Some(at),
                    _ => {
                        let at = nudge_slot(now);
                        self.timers.push(Reverse((at, id)));
                        Some(at)
                    }
                };
                if op.client.config.cluster
                    && matches!(op.ask, Some((Ask::Wait { .. } | Ask::Acquire { .. }, _)))
                {
                    // Cluster mode: a waiter whose member fails re-attaches
                    // on the leader at once (its FIFO place is kept only
                    // for the server's orphan TTL), drained or not.
                    self.arm(engine, id, Some(conn), conn.raw_fd(), true);
                }
                return;
            }
        }
        op.nudge = None;
        self.arm(engine, id, Some(conn), conn.raw_fd(), true);
    }

    /// The reply (or failure) of `op`'s request.
    pub(super) fn reply(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>, r: Result<Outcome>) {
        if op.is_renewal() {
            self.renewed(engine, id, op, r);
            return;
        }
        // (Dropped after this reply is acted on: a grant has made its
        // connection a home by then.)
        let homing = op.homing.take();
        if homing.is_some() {
            self.mark_dirty(lane_key(&op.client, op.server));
        }
        let conn = match std::mem::replace(&mut op.stage, Stage::Moving) {
            Stage::Asked { conn, .. } | Stage::Retry { conn } => conn,
            Stage::Waiting | Stage::Parked | Stage::Dialing | Stage::Moving => {
                if let Err(e) = r {
                    self.fail(engine, id, op, e);
                }
                return;
            }
        };
        let r = match r {
            // (A shared home is never closed for a cancel: closed, it failed.)
            Err(_) if conn.was_aborted() && !op.on_home => Err(cancelled(&op.what())),
            r => r,
        };
        // The answer to an `e` (or a try's `l`): the next acquire of the key
        // may go (a no-op for any other request). A try on a home that
        // found the key taken keeps the turn for the `e` that follows.
        op.on_home = false;
        if !keeps_turn(&op, &r) {
            self.enqueued(&mut op);
        }
        if op.machine.is_none() {
            // Stats.
            op.stage = Stage::Retry { conn };
            match r {
                Ok(Outcome::Stats(stats)) => self.succeed_with(engine, id, op, EventKind::Stats, Some(stats)),
                Ok(other) => {
                    let e = Error::new(
                        ErrorKind::Protocol,
                        format!("{}: unexpected reply {other:?}", op.what()),
                    );
                    self.fail(engine, id, op, e);
                }
                Err(e) => self.fail(engine, id, op, e),
            }
            return;
        }
        if let (Err(e), Some((_, Via::Server | Via::Reattach | Via::Home)), true) =
            (&r, op.ask, op.client.config.cluster)
        {
            if matches!(e.kind(), ErrorKind::NotLeader | ErrorKind::Draining) {
                // Cluster mode: the same request to the member the cluster
                // points at.
                self.disarm(engine, id);
                op.check_in(conn);
                let e = e.clone();
                self.elsewhere_or_fail(engine, id, op, e);
                return;
            }
        }
        if let (Err(e), Some((_, Via::Server | Via::Home))) = (&r, op.ask) {
            if e.kind() == ErrorKind::NotLeader {
                // Follow the leader with the same first request.
                self.disarm(engine, id);
                op.check_in(conn);
                match op.client.follow(e.clone(), op.server, &mut op.redirects) {
                    Ok(server) => {
                        op.server = server;
                        op.step_by = op.deadline;
                        op.stage = Stage::Waiting;
                        self.enqueue(id, op);
                    }
                    Err(e) => self.fail(engine, id, op, e),
                }
                return;
            }
        }
        if matches!(op.ask, Some((Ask::Renew { .. }, _))) && r.is_ok() {
            bump(&op.client.metrics.renewals);
        }
        let failed = conn.is_broken() && !conn.was_aborted();
        let next = match op.machine.as_mut() {
            Some(machine) => machine.reply(r, Stamp::now(), failed),
            None => return,
        };
        match next {
            OpNext::Send { ask, via } => {
                op.ask = Some((ask, via));
                if via == Via::Same {
                    self.send(engine, id, op, conn);
                    return;
                }
                if via == Via::Reattach {
                    // A waiter whose node failed: its own connection to
                    // the leader, under the failed connection's ref.
                    self.disarm(engine, id);
                    op.reference = conn.sent_ref().map(str::to_owned);
                    conn.abort();
                    drop(conn);
                    op.server = op.client.route(op.server);
                    self.dial_alone(engine, id, op);
                    return;
                }
                // A new connection (a release whose home failed), or one
                // of its own (a try on a home found the key taken).
                self.disarm(engine, id);
                if via == Via::Fresh {
                    bump(&op.client.metrics.reconnects);
                    drop(conn);
                } else {
                    // In step and reusable (a home stays a home).
                    op.check_in(conn);
                }
                op.stage = Stage::Waiting;
                self.enqueue(id, op);
            }
            OpNext::Hold {
                token,
                lease_s,
                anchor,
            } => {
                op.stage = Stage::Retry { conn };
                self.granted(engine, id, op, Grant { token, lease_s }, anchor);
            }
            OpNext::Queued => self.queued(engine, id, op, conn),
            OpNext::Released => {
                bump(&op.client.metrics.releases);
                op.stage = Stage::Retry { conn };
                self.succeed(engine, id, op);
            }
            OpNext::Failed(e) => {
                op.stage = Stage::Retry { conn };
                self.fail(engine, id, op, e);
            }
            OpNext::Abandon(e) => {
                // Closing it frees a grant nobody will hold.
                conn.abort();
                op.stage = Stage::Retry { conn };
                self.fail(engine, id, op, e);
            }
        }
    }

    /// `op`'s request `verb` went out on `conn` at `sent`: await its reply
    /// (readable, one-shot) until `reply_by` (capped by the operation's
    /// deadline).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn await_reply(
        &mut self,
        engine: &Reactor,
        id: u64,
        mut op: Box<Op>,
        conn: Arc<Connection>,
        reply_by: Instant,
        sent: Stamp,
        cmd: Command,
    ) {
        op.step_by = earliest(reply_by, Some(op.deadline));
        self.arm_reply(engine, id, &mut op, &conn);
        self.timers.push(Reverse((op.step_by, id)));
        if let Some(machine) = op.machine.as_mut() {
            machine.sent(sent);
        }
        op.stage = Stage::Asked { conn, sent, cmd };
        self.tasks.insert(id, Task::Op(op));
    }
}

/// When a nudge armed at `now` fires: `NUDGE` later, rounded up to the
/// next multiple of `NUDGE` (counted from the first nudge), so that the
/// nudges of acquires started within one `NUDGE` share one wake-up of the
/// engine thread (which takes the driver's lock from the threads that
/// drain their queues themselves).
fn nudge_slot(now: Instant) -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| now);
    let step = NUDGE.as_nanos();
    let since = (now + NUDGE).saturating_duration_since(base).as_nanos();
    let slots = since.div_ceil(step);
    base + Duration::from_nanos(u64::try_from(slots * step).unwrap_or(u64::MAX))
}
