//! Deadlines: the timers of operations and dials (their deadlines,
//! retries, nudges) and the sweep of completion queues.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Instant;

use super::*;

impl Driver {
    /// Run the timers that are due; when the next one is.
    pub(super) fn expire_timers(&mut self, engine: &Reactor) -> Option<Instant> {
        loop {
            self.pump_dirty(engine);
            if self.timers.len() > self.compact_above.max(2 * self.tasks.len() + 1024) {
                // Most are deadlines of operations that ended (a timer is
                // never taken out when its operation ends): drop those, so
                // that a busy engine's heap stays the size of its work. Not
                // again before the heap doubles (live operations may have
                // several timers each: a pass per pop would be quadratic).
                let tasks = &self.tasks;
                self.timers
                    .retain(|Reverse((_, id))| *id == SWEEP_ID || tasks.contains_key(id));
                self.compact_above = 2 * self.timers.len();
            }
            let &Reverse((when, id)) = self.timers.peek()?;
            let now = Instant::now();
            if when > now {
                return Some(when);
            }
            self.timers.pop();
            if id == SWEEP_ID {
                self.sweep(now);
                continue;
            }
            match self.tasks.remove(&id) {
                Some(Task::Dial(mut dial)) => {
                    if now >= dial.deadline() {
                        let step = Step::Failed(dial.deadline_error());
                        self.dial_step(engine, id, dial, step);
                    } else {
                        self.tasks.insert(id, Task::Dial(dial));
                    }
                }
                Some(Task::Op(mut op)) => {
                    if op.nudge.is_some_and(|at| now >= at) && now < op.step_by {
                        // Its `e` reply was left for the application's
                        // drain: read it here, else watch for it here too.
                        op.nudge = None;
                        if matches!(op.stage, Stage::Asked { .. }) {
                            if let Some((op, conn)) = self.read_reply(engine, id, op, false) {
                                self.arm(engine, id, Some(&conn), conn.raw_fd(), true);
                                self.tasks.insert(id, Task::Op(op));
                            }
                            continue;
                        }
                    }
                    if now < op.step_by {
                        if matches!(op.stage, Stage::Waiting) {
                            // Held back in its lane for a while: look again.
                            self.mark_dirty(lane_key(&op.client, op.server));
                        }
                        self.tasks.insert(id, Task::Op(op));
                        continue;
                    }
                    if op.cancelling {
                        // The server did not close in time: report anyway.
                        if let Some(conn) = op.conn() {
                            conn.abort();
                        }
                        let e = cancelled(&op.what());
                        self.fail(engine, id, op, e);
                        continue;
                    }
                    if matches!(op.stage, Stage::Parked) && now < op.deadline {
                        op.step_by = op.deadline;
                        self.go_to_server(engine, id, op);
                        continue;
                    }
                    if let Stage::Retry { conn } = &op.stage {
                        if now < op.deadline {
                            let conn = Arc::clone(conn);
                            op.stage = Stage::Moving;
                            self.send(engine, id, op, conn);
                            continue;
                        }
                    }
                    if op.on_home {
                        // Its home's replies are the reactor's, which gives
                        // this one up at the same deadline (and logs it);
                        // the home stays for its leases.
                        op.on_home = false;
                        bump(&op.client.metrics.deadline_hits);
                        let e = Error::new(
                            ErrorKind::Deadline,
                            format!("{}: no reply before the deadline", op.what()),
                        );
                        self.fail(engine, id, op, e);
                        continue;
                    }
                    if matches!(op.stage, Stage::Asked { .. }) && !op.is_renewal() {
                        // A reply the application's poll has not read yet
                        // (its queue's fd was not drained) is still in time.
                        match self.read_reply(engine, id, op, false) {
                            Some((back, _)) => op = back,
                            None => continue,
                        }
                    }
                    match op.conn() {
                        // A late renew reply is harmless: owed, dropped
                        // when it comes (the home must stay open); counted
                        // there.
                        Some(conn) if op.is_renewal() => conn.abandon_reply(id),
                        other => {
                            // The stream is out of step now (a late grant
                            // must not be read as another answer): close it,
                            // which also frees whatever the server did for it.
                            if let Some(conn) = other {
                                conn.abort();
                            }
                            bump(&op.client.metrics.deadline_hits);
                        }
                    }
                    let what = if matches!(op.stage, Stage::Waiting | Stage::Parked | Stage::Dialing) {
                        "no connection to the server before the deadline"
                    } else {
                        "no reply before the deadline"
                    };
                    let e = Error::new(ErrorKind::Deadline, format!("{}: {what}", op.what()));
                    log!(Level::Warn, "{e}");
                    self.fail(engine, id, op, e);
                }
                None => {}
            }
        }
    }

    /// Read the replies waiting on queues nobody drained for `SWEEP` (the
    /// queue hands them back here, through the inbox: this thread holds
    /// the driver); again in `SWEEP` while replies are awaited on queues.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.queues.retain(|q| q.strong_count() > 0);
        for q in self.queues.iter().filter_map(Weak::upgrade) {
            q.read_ready_if_idle(SWEEP, now);
        }
        let awaited = self.tasks.values().any(|t| {
            matches!(t, Task::Op(op) if matches!(op.stage, Stage::Asked { .. })
                && matches!(op.done, Some(Done::Event { .. })))
        });
        self.sweeping = awaited;
        if awaited {
            self.timers.push(Reverse((now + SWEEP, SWEEP_ID)));
        } else {
            self.queues.clear();
        }
    }
}
