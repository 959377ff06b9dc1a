//! Cluster mode in the engine: an operation whose member failed (dead,
//! draining, not the leader) goes to the member the client's leader cache
//! points at (`ClientInner::reroute_within`, the rule the blocking driver
//! uses too), after a pause once every member was tried (parked, in no
//! lane); a waiter re-attaching gets a connection of its own that repeats
//! its failed connection's `stable-ref` (`Dial::for_op`). Methods of the
//! driver (ops.rs).

// Operations stay boxed from start to end (see ops.rs).
#![allow(clippy::boxed_local)]

use std::cmp::Reverse;
use std::sync::Arc;

use super::{Driver, Task};
use crate::Error;
use crate::engine::dial::Dial;
use crate::engine::lanes::lane_key;
use crate::engine::op::{Op, Stage};
use crate::held::cancelled;
use crate::operation::Via;
use crate::reactor::Reactor;

impl Driver {
    /// Cluster mode: after `op`'s member failed with `e` (unreachable,
    /// refused, draining, not the leader), send it to the member the
    /// cluster points at, after a pause once every member was tried (an
    /// election). Anything else (or no time left) fails it; renewals
    /// settle by the renewal policy, which doubts the lease and reroutes
    /// itself.
    pub(super) fn elsewhere_or_fail(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>, e: Error) {
        if op.is_renewal() {
            self.fail(engine, id, op, e);
            return;
        }
        let (next, resume) = match op.client.reroute_within(e, op.server, &mut op.hops, op.deadline) {
            Ok(to) => to,
            Err(e) => {
                self.fail(engine, id, op, e);
                return;
            }
        };
        if op.is_acquire() && op.lease.as_ref().is_some_and(|l| l.cancel_requested()) {
            let e = cancelled(&op.what());
            self.fail(engine, id, op, e);
            return;
        }
        self.enqueued(&mut op);
        op.server = next;
        if let Some(at) = resume {
            op.stage = Stage::Parked;
            op.step_by = at;
            self.timers.push(Reverse((at, id)));
            self.tasks.insert(id, Task::Op(op));
            return;
        }
        op.step_by = op.deadline;
        self.go_to_server(engine, id, op);
    }

    /// Send `op` (again) to its server: its own connection for a waiter
    /// re-attaching, else its server's lane.
    pub(super) fn go_to_server(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>) {
        if matches!(op.ask, Some((_, Via::Reattach))) {
            self.dial_alone(engine, id, op);
        } else {
            op.stage = Stage::Waiting;
            self.enqueue(id, op);
        }
    }

    /// Open a connection for `op` alone (a re-attaching waiter, repeating
    /// its failed connection's `stable-ref`).
    pub(super) fn dial_alone(&mut self, engine: &Reactor, id: u64, mut op: Box<Op>) {
        let dial_id = engine.next_id();
        let key = lane_key(&op.client, op.server);
        let (mut dial, step) = Dial::start(dial_id, key, Arc::clone(&op.client), op.server, engine);
        dial.for_op(id, op.reference.clone());
        op.stage = Stage::Dialing;
        self.timers.push(Reverse((op.step_by, id)));
        self.tasks.insert(id, Task::Op(op));
        self.dial_step(engine, dial_id, Box::new(dial), step);
    }
}
