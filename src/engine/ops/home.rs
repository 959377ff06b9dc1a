//! An evented acquire's try on a shared home: when no idle connection is
//! left, the first request of an acquire (`l` with timeout 0, answered at
//! once) goes on a connection that already carries held leases instead of
//! a new one, pipelined behind their renewals. The home's readiness and
//! replies are the reactor's (its renewals', hang-up), so this reply is
//! read there too, in order, and posted back (`Inbound::HomeReply`); the
//! operation machine then goes on as after any reply: held on that home, or
//! (the key taken) its wait on a connection of its own. A cancel never
//! closes the home: the reply, which comes at once, settles it.

use std::cmp::Reverse;
use std::sync::Arc;

use super::{Driver, Inbound, Task};
use crate::clock::Stamp;
use crate::connection::{Connection, Started, earliest};
use crate::engine::op::{Mode, Op, Purpose, Stage};
use crate::operation::{Ask, Via};
use crate::protocol::Outcome;
use crate::reactor::{Pending, Reactor};
use crate::{ErrorKind, Result};

impl Driver {
    /// Send `op`'s first request on `conn`, a home with room.
    pub(super) fn try_on_home(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>, conn: Arc<Connection>) {
        let (Some(lease), Some((ask, _))) = (op.lease.clone(), op.ask) else {
            op.stage = Stage::Waiting;
            self.enqueue(id, op);
            return;
        };
        let lease_s = match op.purpose {
            Purpose::Acquire { lease_s, .. } => lease_s,
            _ => lease.renew_ttl(),
        };
        let req = ask.request(lease.kind, &lease.key, lease.limit, lease_s);
        let sent = Stamp::now();
        let reply_by = earliest(conn.reply_deadline(&req), Some(op.deadline));
        let inbox = engine.inbox();
        let pending = Pending {
            command: req.command(),
            key: lease.key.clone(),
            deadline: reply_by,
            conn: Arc::clone(&conn),
            settle: Box::new(move |r| inbox.push(Box::new(Inbound::HomeReply(id, r)))),
        };
        match engine.send_awaited(|| conn.start_request_until(&req, reply_by), pending) {
            Ok(Started::Sent) => {
                op.on_home = true;
                op.step_by = reply_by;
                self.timers.push(Reverse((reply_by, id)));
                if let Some(machine) = op.machine.as_mut() {
                    machine.sent(sent);
                }
                op.stage = Stage::Asked {
                    conn,
                    sent,
                    cmd: req.command(),
                };
                self.tasks.insert(id, Task::Op(op));
            }
            Ok(Started::Busy) | Err(_) => {
                // The home broke meanwhile (or is not watched: nobody would
                // read the reply there): the usual way (an idle or a new
                // connection), as if no home had room.
                op.ask = Some((ask, Via::Server));
                op.stage = Stage::Waiting;
                self.enqueue(id, op);
            }
        }
    }

    /// The reactor read the reply of operation `id`'s request on a home.
    pub(super) fn home_reply(&mut self, engine: &Reactor, id: u64, r: Result<Outcome>) {
        match self.tasks.remove(&id) {
            Some(Task::Op(op)) if op.on_home => self.reply(engine, id, op, r),
            Some(other) => {
                self.tasks.insert(id, other);
            }
            None => {} // ended meanwhile (its deadline)
        }
    }
}

/// Whether `op`'s reply `r` leaves it its key's turn: an acquire's try that
/// found the key taken goes on to join the queue (`e`), and no later start
/// of the key may overtake it meanwhile.
pub(super) fn keeps_turn(op: &Op, r: &Result<Outcome>) -> bool {
    matches!(
        op.purpose,
        Purpose::Acquire {
            mode: Mode::Acquire,
            ..
        }
    ) && matches!(op.ask, Some((Ask::Acquire { timeout_s: 0 }, _)))
        && matches!(r, Err(e) if e.kind() == ErrorKind::Timeout)
}
