//! The lanes' side of the driver: operations waiting for a connection
//! (`enqueue`), handing connections out to them in order (`pump`), and
//! dialing more (`dial`, `dial_step`).

use std::cmp::Reverse;
use std::sync::Arc;

use super::*;

impl Driver {
    /// Put `op` at the back of its server's lane.
    pub(super) fn enqueue(&mut self, id: u64, op: Box<Op>) {
        let key = lane_key(&op.client, op.server);
        self.lanes
            .entry(key)
            .or_insert_with(|| Lane::new(Arc::clone(&op.client), op.server))
            .push(id, op.ordered_key(), op.homeable());
        self.timers.push(Reverse((op.step_by, id)));
        self.tasks.insert(id, Task::Op(op));
        self.mark_dirty(key);
    }

    /// Hand connections to the lane's oldest waiting operations; open more
    /// when none is idle.
    pub(super) fn pump(&mut self, engine: &Reactor, key: LaneKey) {
        loop {
            let tasks = &self.tasks;
            let Some(lane) = self.lanes.get_mut(&key) else {
                return;
            };
            let next = lane.next(&|id| is_waiting(tasks, id));
            let blockers = lane.take_blockers();
            for blocker in blockers {
                self.read_promptly(engine, blocker);
            }
            match next {
                Next::Go {
                    id,
                    conn,
                    ordered,
                    homing,
                } => {
                    let Some(Task::Op(mut op)) = self.tasks.remove(&id) else {
                        continue;
                    };
                    op.enqueuing = ordered;
                    op.homing = homing;
                    op.on_own_connection();
                    self.send(engine, id, op, conn);
                }
                Next::Home { id, room, ordered } => {
                    let Some(Task::Op(mut op)) = self.tasks.remove(&id) else {
                        continue; // the home stays with its leases
                    };
                    op.enqueuing = ordered;
                    let conn = Arc::clone(room.conn());
                    op.room = Some(room);
                    self.try_on_home(engine, id, op, conn);
                }
                Next::Dial(n) => {
                    let Some((client, server)) = self.lanes.get(&key).map(Lane::target) else {
                        return;
                    };
                    for _ in 0..n {
                        self.dial(engine, key, Arc::clone(&client), server);
                    }
                    return;
                }
                Next::Empty => {
                    // Nobody waits: connections opened for ops that ended
                    // meanwhile go to the pool.
                    let lane = self.lanes.remove(&key).expect("lane present");
                    let (client, server, conns) = lane.into_spare();
                    for conn in conns {
                        client.checkin(server, conn);
                    }
                    return;
                }
                Next::Idle => return,
                Next::Held { id, until } => {
                    // Its timer pumps the lane again (see `expire_timers`).
                    self.timers.push(Reverse((until, id)));
                    return;
                }
            }
        }
    }

    /// `op`'s try that would make its connection a home was answered (or
    /// never will be): the lane's other tries go on.
    pub(super) fn homed_or_not(&mut self, op: &mut Op) {
        if op.homing.take().is_some() {
            self.mark_dirty(lane_key(&op.client, op.server));
        }
    }

    /// `op`'s ordered request (`e`, a try's `l`) was answered (or will
    /// never be): the next operation of its key may go.
    pub(super) fn enqueued(&mut self, op: &mut Op) {
        self.homed_or_not(op);
        if !std::mem::take(&mut op.enqueuing) {
            return;
        }
        let (key, Some(k)) = (lane_key(&op.client, op.server), op.ordered_key()) else {
            return;
        };
        let tasks = &self.tasks;
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        lane.answered(&k, &|id| is_waiting(tasks, id));
        self.mark_dirty(key);
    }

    pub(super) fn dial(&mut self, engine: &Reactor, key: LaneKey, client: Arc<ClientInner>, server: usize) {
        let id = engine.next_id();
        let (dial, step) = Dial::start(id, key, client, server, engine);
        self.dial_step(engine, id, Box::new(dial), step);
    }

    /// Act on what a dial step said.
    pub(super) fn dial_step(&mut self, engine: &Reactor, id: u64, dial: Box<Dial>, step: Step) {
        match step {
            Step::Wait { fd, read } => {
                self.arm(engine, id, None, fd, read);
                self.timers.push(Reverse((dial.deadline(), id)));
                self.tasks.insert(id, Task::Dial(dial));
            }
            Step::Resolving => {
                self.timers.push(Reverse((dial.deadline(), id)));
                self.tasks.insert(id, Task::Dial(dial));
            }
            Step::Connected(conn) => {
                self.disarm(engine, id);
                conn.set_registration(TASK_BIT | id); // the dial's registration stays
                if let Some(owner) = dial.owner() {
                    // A re-attaching waiter's own connection.
                    match self.tasks.remove(&owner) {
                        Some(Task::Op(mut op)) if matches!(op.stage, Stage::Dialing) => {
                            op.stage = Stage::Moving;
                            self.send(engine, owner, op, conn);
                        }
                        Some(task) => {
                            self.tasks.insert(owner, task);
                        }
                        None => {}
                    }
                    return;
                }
                let key = dial.lane();
                drop(dial);
                if let Some(lane) = self.lanes.get_mut(&key) {
                    lane.dialed(conn);
                }
                self.mark_dirty(key);
            }
            Step::Failed(e) => {
                self.disarm(engine, id);
                if let Some(owner) = dial.owner() {
                    if let Some(Task::Op(op)) = self.tasks.remove(&owner) {
                        self.elsewhere_or_fail(engine, owner, op, e);
                    }
                    return;
                }
                let key = dial.lane();
                drop(dial);
                // The oldest waiting operation fails with it, as a blocking
                // call would have; the others get their own attempt.
                let tasks = &self.tasks;
                let victim = self
                    .lanes
                    .get_mut(&key)
                    .and_then(|lane| lane.dial_failed(&|id| is_waiting(tasks, id)));
                if let Some(victim) = victim {
                    if let Some(Task::Op(op)) = self.tasks.remove(&victim) {
                        self.elsewhere_or_fail(engine, victim, op, e);
                    }
                }
                // Not pumped here: a dial failing at once (EMFILE) is
                // started by a pump, which would nest one more per failure.
                self.mark_dirty(key);
            }
        }
    }
}
