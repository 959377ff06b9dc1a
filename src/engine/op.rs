//! One evented operation: what it does (`Purpose`), where its outcome goes
//! (`Done`) and how far it got (`Stage`). The engine thread drives it
//! (`ops.rs`); this file is its data and the small facts derived from it.

// Operations stay boxed from start to end: they move between the task map
// and the stage functions many times, a pointer each time.
#![allow(clippy::boxed_local)]

use std::sync::Arc;
use std::time::Instant;

use crate::clock::{Boot, Stamp};
use crate::connection::Connection;
use crate::events::{Event, EventKind, Queue};
use crate::held::{DoneFn, Home, OpGuard, Shared};
use crate::protocol::{Command, Kind, Op as Verb, Token};

/// Where an operation's outcome goes.
pub(crate) enum Done {
    /// A completion queue: one event tagged `tag`.
    Event { queue: Arc<Queue>, tag: u64 },
    /// `acquire_async`'s callback, run on the notifier thread.
    Call(DoneFn),
}

impl Done {
    /// Report success of `kind` without any I/O (leaving a queue, a wait
    /// whose enqueue already acquired). Only queue-bound starts take this
    /// path; a callback would run on the caller's thread.
    pub(crate) fn succeeded_at_once(self, kind: EventKind) {
        match self {
            Done::Event { queue, tag } => queue.push(Event {
                tag,
                kind,
                error: None,
            }),
            Done::Call(f) => f(Ok(())),
        }
    }
}

/// What an operation does.
pub(crate) enum Purpose {
    /// `l`/`sl`; the guard keeps the handle busy until it ends.
    Acquire {
        timeout_s: u64,
        lease_s: Option<u64>,
        _guard: OpGuard,
    },
    /// `n`/`sn` of a held lease's grant `generation` whose home broke (on
    /// a fresh connection), or is not watched (on the home); settled by
    /// `renewal::finish`.
    Renew {
        generation: u64,
        token: Token,
        expires_at: Boot,
    },
    /// `r`/`sr` of a lease already taken off the handle.
    Release {
        token: Token,
        /// The home connection failed: the release went to a fresh one.
        retried: bool,
    },
}

pub(super) enum Stage {
    /// In its lane, waiting for a connection.
    Waiting,
    /// The request `verb` went out on `conn` at `sent`; its reply is
    /// awaited.
    Asked {
        conn: Arc<Connection>,
        sent: Stamp,
        verb: Verb,
    },
    /// A grant read too late to trust: a renewal went out at `sent` and
    /// must be confirmed before the grant is reported.
    Confirming {
        conn: Arc<Connection>,
        token: Token,
        sent: Stamp,
    },
    /// `conn` was busy (another thread's call): send again at the timer.
    Retry { conn: Arc<Connection> },
    /// Being worked on (the engine took it out of its stage).
    Moving,
}

/// An evented acquire or release.
pub(crate) struct Op {
    pub(super) lease: Arc<Shared>,
    pub(super) purpose: Purpose,
    pub(super) done: Option<Done>,
    pub(super) server: usize,
    pub(super) redirects: u32,
    /// The whole operation's bound (the call deadline of the blocking API).
    pub(super) deadline: Instant,
    /// The current step's bound (a reply's deadline), at most `deadline`.
    pub(super) step_by: Instant,
    pub(super) stage: Stage,
    /// Its `e` was sent and not answered yet: later acquires of the key
    /// wait in the lane (see `Lane::enqueuing`).
    pub(super) enqueuing: bool,
}

impl Op {
    /// An acquire of `lease` on its server.
    pub(crate) fn acquire(lease: Arc<Shared>, guard: OpGuard, timeout_s: u64, done: Done) -> Op {
        let deadline = lease.client.call_deadline(timeout_s);
        let lease_s = lease.renew_ttl();
        let server = lease.server;
        Op {
            lease,
            purpose: Purpose::Acquire {
                timeout_s,
                lease_s,
                _guard: guard,
            },
            done: Some(done),
            server,
            redirects: 0,
            deadline,
            step_by: deadline,
            stage: Stage::Waiting,
            enqueuing: false,
        }
    }

    /// A renewal of `lease`'s grant `generation` on `home`, or on a fresh
    /// connection when `None`, by `deadline`.
    pub(crate) fn renew(
        lease: Arc<Shared>,
        generation: u64,
        token: Token,
        server: usize,
        home: Option<Arc<Connection>>,
        expires_at: Boot,
        deadline: Instant,
    ) -> Op {
        Op {
            lease,
            purpose: Purpose::Renew {
                generation,
                token,
                expires_at,
            },
            done: None,
            server,
            redirects: 0,
            deadline,
            step_by: deadline,
            stage: home.map_or(Stage::Waiting, |conn| Stage::Retry { conn }),
            enqueuing: false,
        }
    }

    /// The second phase of a two-phase acquire: `w` on the connection that
    /// enqueued (`home`).
    pub(crate) fn wait(lease: Arc<Shared>, guard: OpGuard, home: Home, timeout_s: u64, done: Done) -> Op {
        let mut op = Op::acquire(lease, guard, timeout_s, done);
        op.server = home.server;
        op.stage = Stage::Retry { conn: home.conn };
        op
    }

    /// A release of `token`, said on `home` (or on a fresh connection if
    /// the home is broken).
    pub(crate) fn release(lease: Arc<Shared>, token: Token, home: Home, done: Done) -> Op {
        let deadline = lease.client.call_deadline(0);
        let mut op = Op {
            lease,
            purpose: Purpose::Release {
                token,
                retried: false,
            },
            done: Some(done),
            server: home.server,
            redirects: 0,
            deadline,
            step_by: deadline,
            stage: Stage::Waiting,
            enqueuing: false,
        };
        if home.conn.is_broken() {
            op.lease.client.checkin(home.server, home.conn); // dropped
            if let Purpose::Release { retried, .. } = &mut op.purpose {
                *retried = true;
            }
        } else {
            op.stage = Stage::Retry { conn: home.conn };
        }
        op
    }

    pub(super) fn is_acquire(&self) -> bool {
        matches!(self.purpose, Purpose::Acquire { .. })
    }

    pub(super) fn is_renewal(&self) -> bool {
        matches!(self.purpose, Purpose::Renew { .. })
    }

    /// The key whose acquires must keep their order (none for releases).
    pub(super) fn ordered_key(&self) -> Option<String> {
        self.is_acquire().then(|| self.lease.key.clone())
    }

    pub(super) fn conn(&self) -> Option<&Arc<Connection>> {
        match &self.stage {
            Stage::Asked { conn, .. } | Stage::Confirming { conn, .. } | Stage::Retry { conn } => Some(conn),
            Stage::Waiting | Stage::Moving => None,
        }
    }

    pub(super) fn failed_kind(&self) -> EventKind {
        if self.is_acquire() {
            EventKind::AcquireFailed
        } else {
            EventKind::ReleaseFailed
        }
    }
}

impl Stage {
    pub(super) fn conn_owned(self) -> Option<Arc<Connection>> {
        match self {
            Stage::Asked { conn, .. } | Stage::Confirming { conn, .. } | Stage::Retry { conn } => Some(conn),
            Stage::Waiting | Stage::Moving => None,
        }
    }
}

/// The command whose reply `op` awaits.
pub(super) fn op_command(op: &Op) -> Command {
    let verb = match op.stage {
        Stage::Confirming { .. } => Verb::Renew,
        Stage::Asked { verb, .. } => verb,
        _ if op.is_acquire() => Verb::Enqueue,
        _ => Verb::Release,
    };
    Command::Lease(op.lease.kind, verb)
}

pub(super) fn name(op: &Op) -> &'static str {
    if op.is_renewal() {
        return "renew";
    }
    match (op.is_acquire(), op.lease.kind) {
        (true, Kind::Lock) => "acquire",
        (true, Kind::Semaphore) => "semaphore acquire",
        (false, Kind::Lock) => "release",
        (false, Kind::Semaphore) => "semaphore release",
    }
}
