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
use crate::held::Shared;
use crate::metrics::bump;
use crate::operation::{Ask, Via};
use crate::protocol::{Kind, Outcome, Request};
use crate::reactor::{Pending, Reactor};
use crate::{Error, ErrorKind, Result};

/// An operation that ended while its reply on a home was awaited: what a
/// grant in that reply is given back as.
pub(crate) struct Abandoned {
    kind: Kind,
    key: String,
    conn: Arc<Connection>,
}

/// What became of a request offered to a home's reader (the reactor).
pub(super) enum OnHome {
    /// Sent; the reactor reads the reply and posts it back.
    Sent,
    /// The connection has no reactor entry (nobody watches it): it is the
    /// operation's own, read the usual way.
    NotWatched(Box<Op>),
    /// A blocking call holds the connection now.
    Busy(Box<Op>),
    /// The send failed (the home broke).
    Failed(Box<Op>, Error),
}

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
        match self.send_on_home(engine, id, op, conn, &req) {
            OnHome::Sent => {}
            OnHome::NotWatched(mut op) | OnHome::Busy(mut op) | OnHome::Failed(mut op, _) => {
                op.room = None;
                // The home broke meanwhile (or is not watched: nobody would
                // read the reply there): the usual way (an idle or a new
                // connection), as if no home had room.
                op.ask = Some((ask, Via::Server));
                op.stage = Stage::Waiting;
                self.enqueue(id, op);
            }
        }
    }

    /// Send `req` for `op` on `conn` as one more of the requests the
    /// reactor awaits there (a home: its leases' renewals, other starts'
    /// tries, releases), pipelined and read in order by the reactor, which
    /// posts the reply back (`Inbound::HomeReply`). The operation is back
    /// unless it was sent.
    pub(super) fn send_on_home(
        &mut self,
        engine: &Reactor,
        id: u64,
        mut op: Box<Op>,
        conn: Arc<Connection>,
        req: &Request,
    ) -> OnHome {
        let sent = Stamp::now();
        let reply_by = earliest(conn.reply_deadline(req), Some(op.deadline));
        let inbox = engine.inbox();
        let pending = Pending {
            command: req.command(),
            key: req.key().unwrap_or_default().to_owned(),
            deadline: reply_by,
            conn: Arc::clone(&conn),
            counted_here: false,
            settle: Box::new(move |r| inbox.push(Box::new(Inbound::HomeReply(id, r)))),
        };
        match engine.send_awaited(|reader| conn.start_request_until(req, reply_by, reader), pending) {
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
                OnHome::Sent
            }
            Err(None) => OnHome::NotWatched(op),
            Ok(Started::Busy) => OnHome::Busy(op),
            Err(Some(e)) => OnHome::Failed(op, e),
        }
    }

    /// The reactor read the reply of operation `id`'s request on a home.
    pub(super) fn home_reply(&mut self, engine: &Reactor, id: u64, r: Result<Outcome>) {
        if let Some(left) = self.abandoned.remove(&id) {
            // Cancelled while its reply was awaited: a grant goes back.
            if let Ok(Outcome::Granted { token, .. }) = r {
                let req = Request::Release {
                    kind: left.kind,
                    key: &left.key,
                    token: token.as_str(),
                };
                let _ = left.conn.start_request_forget(&req);
            }
            return;
        }
        match self.tasks.remove(&id) {
            Some(Task::Op(mut op)) if op.on_home => {
                if matches!(&r, Err(e) if e.kind() == ErrorKind::Deadline) {
                    bump(&op.client.metrics.deadline_hits);
                }
                // Its place on the home is given up once the reply is
                // acted on (a grant holds its own ticket there by then).
                let room = op.room.take();
                self.reply(engine, id, op, r);
                drop(room);
            }
            Some(other) => {
                self.tasks.insert(id, other);
            }
            None => {} // ended meanwhile (its deadline)
        }
    }

    /// Operation `id`, whose request on home `conn` is awaited, ends
    /// without its reply (cancelled): the reply is still read there, and a
    /// grant in it released ([`Driver::home_reply`]).
    pub(super) fn abandon_on_home(&mut self, id: u64, lease: &Shared, conn: &Arc<Connection>) {
        // Replies on a home that broke are dropped with it (never settled).
        self.abandoned.retain(|_, a| !a.conn.is_broken());
        self.abandoned.insert(
            id,
            Abandoned {
                kind: lease.kind,
                key: lease.key.clone(),
                conn: Arc::clone(conn),
            },
        );
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
