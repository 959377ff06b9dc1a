//! One evented operation: what it does (`Purpose`), where its outcome goes
//! (`Done`) and how far it got (`Stage`). The engine thread drives it
//! (`ops.rs`); this file is its data and the small facts derived from it.

// Operations stay boxed from start to end: they move between the task map
// and the stage functions many times, a pointer each time.
#![allow(clippy::boxed_local)]

use std::sync::Arc;
use std::time::Instant;

use crate::client::ClientInner;
use crate::clock::{Boot, Stamp};
use crate::connection::{Connection, Reservation};
use crate::engine::lanes::Homing;
use crate::events::{Event, EventKind, Queue};
use crate::held::{Cadence, DoneFn, Home, OpGuard, Shared};
use crate::operation::{Ask, Next, Operation, Via};
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
                stats: None,
            }),
            Done::Call(f) => f(Ok(())),
        }
    }
}

/// Which acquire an `Acquire` purpose is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `e`, then `w` up to the timeout if queued.
    Acquire,
    /// One `l` with timeout 0 (the blocking `try_acquire`'s request): the
    /// server grants or answers `timeout` at once and keeps nothing queued.
    /// Ordered like an `e`: later acquires of the key wait for its answer.
    Try,
    /// `e` only (two-phase, phase 1): if queued, the connection becomes the
    /// lease's `queued` home, for a later wait.
    Enqueue,
}

/// What an operation does.
pub(crate) enum Purpose {
    /// Acquire by `mode`; the guard keeps the handle busy until it ends.
    Acquire {
        mode: Mode,
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
    Release,
    /// `stats` of a server (no lease).
    Stats,
}

pub(super) enum Stage {
    /// In its lane, waiting for a connection.
    Waiting,
    /// The request `cmd` went out on `conn` at `sent`; its reply is
    /// awaited.
    Asked {
        conn: Arc<Connection>,
        sent: Stamp,
        cmd: Command,
    },
    /// `conn` was busy (another thread's call): send again at the timer.
    Retry { conn: Arc<Connection> },
    /// Cluster mode: waiting out a pause between rounds of the members
    /// (an election) until `step_by`, in no lane.
    Parked,
    /// Cluster mode: its own connection, repeating a failed connection's
    /// `stable-ref`, is being opened (a waiter re-attaching; no lane).
    Dialing,
    /// Being worked on (the engine took it out of its stage).
    Moving,
}

/// An evented acquire, release, renewal or stats.
pub(crate) struct Op {
    pub(super) client: Arc<ClientInner>,
    /// The lease it works on (every purpose but `Stats` has one).
    pub(super) lease: Option<Arc<Shared>>,
    pub(super) purpose: Purpose,
    pub(super) done: Option<Done>,
    pub(super) server: usize,
    pub(super) redirects: u32,
    /// Cluster mode: members tried since the last answer (a pause after
    /// each round).
    pub(super) hops: usize,
    /// Cluster mode: the `stable-ref` a re-attaching waiter's connection
    /// repeats.
    pub(super) reference: Option<String>,
    /// The whole operation's bound (the call deadline of the blocking API).
    pub(super) deadline: Instant,
    /// The current step's bound (a reply's deadline), at most `deadline`.
    pub(super) step_by: Instant,
    pub(super) stage: Stage,
    /// For acquires, waits and releases: the operation machine that
    /// decides what follows each reply (src/operation.rs, as on the
    /// blocking path), and the request it asked for last (and where).
    pub(super) machine: Option<Operation>,
    pub(super) ask: Option<(Ask, Via)>,
    /// Its `e` (or a try's `l`) was sent and not answered yet: later
    /// acquires of the key wait in the lane (see `lanes.rs`).
    pub(super) enqueuing: bool,
    /// Its request went on a shared home: the reactor reads the reply
    /// (`ops/home.rs`), and the home is never closed for it.
    pub(super) on_home: bool,
    /// Its place on that home while its try is unanswered.
    pub(super) room: Option<Reservation>,
    /// Its try may make its connection a home ([`super::lanes::Homing`]).
    pub(super) homing: Option<Homing>,
    /// An acquire's `e` awaited on its completion queue's fd: when the
    /// engine looks at it anyway (`ops::NUDGE` after the send), so the `w`
    /// that follows a `queued` goes out whether or not the application
    /// drains its queue meanwhile.
    pub(super) nudge: Option<Instant>,
    /// Cancelled while its request was awaited: its connection is
    /// half-closed and the server's close is awaited (bounded), so the
    /// `Cancelled` event comes after the server dropped the waiter.
    pub(super) cancelling: bool,
}

impl Op {
    /// An acquire of `lease` on its server.
    pub(crate) fn acquire(lease: Arc<Shared>, guard: OpGuard, timeout_s: u64, done: Done) -> Op {
        Op::acquiring(lease, guard, Mode::Acquire, timeout_s, done)
    }

    /// A try (one `l` with timeout 0) or an enqueue (`e` only) of `lease`.
    pub(crate) fn acquire_once(lease: Arc<Shared>, guard: OpGuard, mode: Mode, done: Done) -> Op {
        Op::acquiring(lease, guard, mode, 0, done)
    }

    /// An operation of `purpose` on `server`, bounded by `deadline`, in its
    /// lane (`Stage::Waiting`); `machine` (if any) asked for its first
    /// request already.
    fn new(
        client: Arc<ClientInner>,
        lease: Option<Arc<Shared>>,
        purpose: Purpose,
        done: Option<Done>,
        server: usize,
        deadline: Instant,
        machine: Option<Operation>,
    ) -> Op {
        let mut op = Op {
            client,
            lease,
            purpose,
            done,
            server,
            redirects: 0,
            hops: 0,
            reference: None,
            deadline,
            step_by: deadline,
            stage: Stage::Waiting,
            machine,
            ask: None,
            enqueuing: false,
            on_home: false,
            room: None,
            homing: None,
            nudge: None,
            cancelling: false,
        };
        if let Some(Next::Send { ask, via }) = op.machine.as_mut().map(Operation::first) {
            op.ask = Some((ask, via));
        }
        op
    }

    fn acquiring(lease: Arc<Shared>, guard: OpGuard, mode: Mode, timeout_s: u64, done: Done) -> Op {
        let deadline = lease.client.call_deadline(timeout_s);
        let lease_s = lease.renew_ttl();
        let (kind, key, cadence) = (lease.kind, lease.key.as_str(), Cadence::of(&lease.client.config));
        // Held leases share connections: an acquire tries its key on a home
        // first (ops/home.rs).
        let shared = lease.client.config.max_leases_per_connection > 1;
        let machine = match mode {
            // `e` then `w`: `e` is answered at once, which keeps starts of
            // one key in order (see lanes.rs).
            Mode::Acquire => Operation::acquire(kind, key, timeout_s, true, cadence)
                .in_cluster(lease.client.config.cluster)
                .sharing(shared),
            Mode::Try => Operation::acquire(kind, key, 0, false, cadence).sharing(shared),
            Mode::Enqueue => Operation::enqueue(kind, key, cadence),
        };
        let purpose = Purpose::Acquire {
            mode,
            lease_s,
            _guard: guard,
        };
        // In cluster mode, to the leader.
        let (client, server) = (Arc::clone(&lease.client), lease.client.route(lease.server));
        Op::new(
            client,
            Some(lease),
            purpose,
            Some(done),
            server,
            deadline,
            Some(machine),
        )
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
        let purpose = Purpose::Renew {
            generation,
            token,
            expires_at,
        };
        let client = Arc::clone(&lease.client);
        let mut op = Op::new(client, Some(lease), purpose, None, server, deadline, None);
        if let Some(conn) = home {
            op.stage = Stage::Retry { conn };
        }
        op
    }

    /// The second phase of a two-phase acquire: `w` on the connection that
    /// enqueued (`home`).
    pub(crate) fn wait(lease: Arc<Shared>, guard: OpGuard, home: Home, timeout_s: u64, done: Done) -> Op {
        let deadline = lease.client.call_deadline(timeout_s);
        let cadence = Cadence::of(&lease.client.config);
        let machine = Operation::wait(lease.kind, &lease.key, timeout_s, cadence)
            .in_cluster(lease.client.config.cluster);
        let purpose = Purpose::Acquire {
            mode: Mode::Acquire,
            lease_s: lease.renew_ttl(),
            _guard: guard,
        };
        let client = Arc::clone(&lease.client);
        let mut op = Op::new(
            client,
            Some(lease),
            purpose,
            Some(done),
            home.server,
            deadline,
            Some(machine),
        );
        op.stage = Stage::Retry { conn: home.conn };
        op
    }

    /// A release of `token`, said on `home` (or on a fresh connection if
    /// the home is broken).
    /// `room`: the released lease's place on its home, kept until the
    /// release is answered, so the home is nobody's idle connection while
    /// it is in flight.
    pub(crate) fn release(lease: Arc<Shared>, token: Token, home: Home, room: Reservation, done: Done) -> Op {
        let deadline = lease.client.call_deadline(0);
        // On a home other leases live on, the release is one more request
        // the reactor reads there, pipelined behind their renewals (see
        // ops/home.rs); a broken home is left for a fresh connection (any
        // connection may release a token).
        let usable = !home.conn.is_broken();
        let machine = Operation::release(lease.kind, &lease.key, token, usable);
        let client = Arc::clone(&lease.client);
        let mut op = Op::new(
            client,
            Some(lease),
            Purpose::Release,
            Some(done),
            home.server,
            deadline,
            Some(machine),
        );
        if usable {
            op.stage = Stage::Retry { conn: home.conn };
            op.room = Some(room);
        } else {
            drop(room);
            op.client.checkin(home.server, home.conn); // dropped
        }
        op
    }

    /// Give `conn` back to the pool, the place this operation kept on it
    /// first (else a home it just left would look taken).
    pub(super) fn check_in(&mut self, conn: Arc<Connection>) {
        self.room = None;
        self.client.checkin(self.server, conn);
    }

    /// `stats` of `client`'s server `server`, within connect + I/O timeout.
    pub(crate) fn stats(client: Arc<ClientInner>, server: usize, done: Done) -> Op {
        let deadline = client.call_deadline(0);
        Op::new(client, None, Purpose::Stats, Some(done), server, deadline, None)
    }

    /// The acquire's mode (`None`: not an acquire).
    pub(super) fn mode(&self) -> Option<Mode> {
        match self.purpose {
            Purpose::Acquire { mode, .. } => Some(mode),
            _ => None,
        }
    }

    /// The key it works on (none for stats).
    pub(super) fn key(&self) -> Option<&str> {
        self.lease.as_deref().map(|l| l.key.as_str())
    }

    /// What it is, for messages: `acquire "k"`, `stats of server 0`.
    pub(super) fn what(&self) -> String {
        match self.key() {
            Some(key) => format!("{} {key:?}", name(self)),
            None => format!("stats of server {}", self.server),
        }
    }

    pub(super) fn is_acquire(&self) -> bool {
        matches!(self.purpose, Purpose::Acquire { .. })
    }

    pub(super) fn is_renewal(&self) -> bool {
        matches!(self.purpose, Purpose::Renew { .. })
    }

    /// The key whose acquires must keep their order (none for releases
    /// and stats).
    /// Whether its next request may go on a home: the try an acquire
    /// starts with (answered at once).
    pub(super) fn homeable(&self) -> bool {
        matches!(self.ask, Some((_, crate::operation::Via::Home)))
    }

    /// It goes on a connection of its own (no home had room): a try
    /// becomes the acquire's own request (`Operation::no_home`).
    pub(super) fn on_own_connection(&mut self) {
        if !self.homeable() {
            return;
        }
        if let Some(crate::operation::Next::Send { ask, via }) = self.machine.as_mut().map(|m| m.no_home()) {
            self.ask = Some((ask, via));
        }
    }

    pub(super) fn ordered_key(&self) -> Option<String> {
        self.key().filter(|_| self.is_acquire()).map(str::to_owned)
    }

    pub(super) fn conn(&self) -> Option<&Arc<Connection>> {
        match &self.stage {
            Stage::Asked { conn, .. } | Stage::Retry { conn } => Some(conn),
            Stage::Waiting | Stage::Parked | Stage::Dialing | Stage::Moving => None,
        }
    }

    pub(super) fn failed_kind(&self) -> EventKind {
        match self.purpose {
            Purpose::Acquire { .. } => EventKind::AcquireFailed,
            Purpose::Stats => EventKind::StatsFailed,
            Purpose::Renew { .. } | Purpose::Release => EventKind::ReleaseFailed,
        }
    }
}

impl Stage {
    pub(super) fn conn_owned(self) -> Option<Arc<Connection>> {
        match self {
            Stage::Asked { conn, .. } | Stage::Retry { conn } => Some(conn),
            Stage::Waiting | Stage::Parked | Stage::Dialing | Stage::Moving => None,
        }
    }
}

/// The command whose reply `op` awaits.
pub(super) fn op_command(op: &Op) -> Command {
    let Some(lease) = &op.lease else {
        return Command::Stats;
    };
    let verb = match op.stage {
        Stage::Asked { cmd, .. } => return cmd,
        _ if op.is_acquire() => Verb::Enqueue,
        _ => Verb::Release,
    };
    Command::Lease(lease.kind, verb)
}

pub(super) fn name(op: &Op) -> &'static str {
    if op.is_renewal() {
        return "renew";
    }
    let Some(lease) = &op.lease else {
        return "stats";
    };
    match (op.mode(), lease.kind) {
        (Some(Mode::Try), Kind::Lock) => "try acquire",
        (Some(Mode::Try), Kind::Semaphore) => "semaphore try acquire",
        (Some(Mode::Enqueue), Kind::Lock) => "enqueue",
        (Some(Mode::Enqueue), Kind::Semaphore) => "semaphore enqueue",
        (Some(Mode::Acquire), Kind::Lock) => "acquire",
        (Some(Mode::Acquire), Kind::Semaphore) => "semaphore acquire",
        (None, Kind::Lock) => "release",
        (None, Kind::Semaphore) => "semaphore release",
    }
}
