//! The stages of the engine's operations that settle a lease: holding a
//! grant, keeping a `queued` enqueue's connection for its wait, a cancel,
//! and a renewal's outcome (what follows each reply is the operation
//! machine's: src/operation.rs). Methods of the driver
//! (ops.rs), which calls them as replies come.

// Operations stay boxed from start to end (see ops.rs).
#![allow(clippy::boxed_local)]

use std::sync::Arc;

use super::Driver;
use super::Task;
use crate::clock::Stamp;
use crate::connection::{Connection, Grant, OWN_READER};
use crate::engine::op::{Op, Purpose, Stage};
use crate::events::EventKind;
use crate::held::{Home, Shared, cancelled};
use crate::operation::Ask;
use crate::protocol::{Outcome, Request, Token};
use crate::reactor::Reactor;
use crate::renewal;
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

impl Driver {
    /// A renewal's reply: settle it by the renewal policy; the connection
    /// it came on becomes (or stays) the lease's home.
    pub(super) fn renewed(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>, r: Result<Outcome>) {
        self.disarm(engine, id);
        let Purpose::Renew {
            generation,
            expires_at,
            ..
        } = op.purpose
        else {
            return;
        };
        let (conn, sent) = match std::mem::replace(&mut op.stage, Stage::Moving) {
            Stage::Asked { conn, sent, .. } => (Some(conn), sent),
            other => (other.conn_owned(), Stamp::now()),
        };
        let result = renewal::renewed(r);
        let home = conn.filter(|_| result.is_ok());
        if let Some(lease) = &op.lease {
            renewal::finish(lease, generation, sent, expires_at, result, home, op.server);
        }
    }

    /// Hold the grant (unless the acquire was cancelled meanwhile).
    pub(super) fn granted(
        &mut self,
        engine: &Reactor,
        id: u64,
        mut op: Box<Op>,
        grant: Grant,
        anchor: Stamp,
    ) {
        self.disarm(engine, id);
        let (Stage::Asked { conn, .. } | Stage::Retry { conn }) =
            std::mem::replace(&mut op.stage, Stage::Moving)
        else {
            return;
        };
        let Some(lease) = op.lease.clone() else {
            return;
        };
        let home = Home {
            conn,
            server: op.server,
        };
        if let Err(e) = crate::engine::ensure_running(&lease.client) {
            drop_grant(&lease, grant.token, &home.conn);
            self.fail(engine, id, op, e);
            return;
        }
        match lease.hold(grant.token, grant.lease_s, home, anchor, "acquire") {
            Ok(()) => self.succeed(engine, id, op),
            Err((e, token, home)) => {
                drop_grant(&lease, token, &home.conn);
                op.stage = Stage::Retry { conn: home.conn };
                self.fail(engine, id, op, e);
            }
        }
    }

    /// The handle of operation `id` was cancelled.
    pub(super) fn poke(&mut self, engine: &Reactor, id: u64) {
        let Some(Task::Op(op)) = self.tasks.get(&id) else {
            return;
        };
        if !op.is_acquire() || !op.lease.as_ref().is_some_and(|l| l.cancel_requested()) {
            return;
        }
        let on_home = op.on_home;
        let Some(Task::Op(mut op)) = self.tasks.remove(&id) else {
            return;
        };
        if on_home {
            // Its try on a shared home: closing the home would end the
            // leases on it, so the reply stays the reactor's to read (it
            // comes at once, unless the server stalls) and a grant in it
            // is given back there; the operation ends now.
            if let (Some(lease), Some(conn)) = (&op.lease, op.conn()) {
                self.abandon_on_home(id, lease, conn);
            }
            op.on_home = false;
            op.stage = Stage::Moving;
            self.fail(engine, id, op, cancelled("acquire"));
            return;
        }
        let confirming = match op.ask {
            // A late grant's confirming renewal is in flight: give it back.
            Some((Ask::Renew { token }, _)) => Some(token),
            _ => None,
        };
        if let (None, Stage::Asked { conn, .. }) = (confirming, &op.stage) {
            // Half-close and await the server's close (bounded): the event
            // then comes after the server dropped the waiter (or released a
            // grant that raced the cancel), so a release the application
            // sends next cannot hand the key to this waiter first.
            let conn = Arc::clone(conn);
            conn.half_close();
            let mut op = op;
            op.cancelling = true;
            op.nudge = None;
            op.step_by = std::cmp::min(op.step_by, std::time::Instant::now() + super::CANCEL_CLOSE_WAIT);
            self.timers.push(std::cmp::Reverse((op.step_by, id)));
            self.arm(engine, id, Some(&conn), conn.raw_fd(), true);
            self.tasks.insert(id, Task::Op(op));
            return;
        }
        if let (Some(token), Some(lease), Some(conn)) = (confirming, &op.lease, op.conn()) {
            drop_grant(lease, token, conn);
        } else if let Some(conn) = op.conn() {
            // Closing the connection takes the waiter out of the server's
            // queue (and frees a grant that raced the cancel).
            conn.abort();
        }
        let e = Error::new(ErrorKind::Cancelled, format!("{}: cancelled", op.what()));
        self.fail(engine, id, op, e);
    }

    /// An enqueue answered `queued`: its connection becomes the lease's
    /// queued home, where a later wait goes (as the blocking `enqueue`
    /// leaves it), unless the enqueue was cancelled meanwhile: then closing
    /// the connection leaves the queue.
    pub(super) fn queued(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>, conn: Arc<Connection>) {
        self.disarm(engine, id);
        op.stage = Stage::Moving;
        let Some(lease) = op.lease.clone() else {
            return;
        };
        let mut st = lock(&lease.state);
        if st.cancel {
            drop(st);
            conn.abort();
            self.fail(engine, id, op, cancelled("enqueue"));
            return;
        }
        st.queued = Some(Home {
            conn,
            server: op.server,
        });
        drop(st);
        self.succeed_with(engine, id, op, EventKind::Enqueued, None);
    }
}

/// Give back a grant nobody will hold, without waiting: the release goes
/// out if the socket takes it, and closing the connection frees the grant
/// on a server with auto-release either way.
fn drop_grant(lease: &Shared, token: Token, conn: &Connection) {
    let req = Request::Release {
        kind: lease.kind,
        key: &lease.key,
        token: token.as_str(),
    };
    if conn.homed() > 0 {
        // A home other leases live on: release it there, pipelined, and
        // leave the connection to them.
        let _ = conn.start_request_forget(&req);
        return;
    }
    let _ = conn.start_request_over(&req, OWN_READER);
    conn.abort();
}
