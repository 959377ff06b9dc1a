//! The command table: every wire command name in one place.
//!
//! Locks and semaphores differ only by the `s` prefix (and the limit their
//! acquire/enqueue carry), so a lease command is `(Kind, Op)`, not eleven
//! hand-written variants.

/// What a lease is held on: a lock (`l`, `r`, ...) or a counting semaphore
/// (`sl`, `sr`, ...). On 2.x servers the two live in separate key spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A lock: one holder at a time (`l`, `r`, `n`, `e`, `w`).
    Lock,
    /// A counting semaphore: up to its limit of holders (`sl`, `sr`, `sn`, `se`, `sw`).
    Semaphore,
}

impl Kind {
    /// The command prefix: `""` for locks, `"s"` for semaphores.
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Lock => "",
            Kind::Semaphore => "s",
        }
    }
}

/// The five lease operations shared by locks and semaphores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `l`: single-phase acquire with a timeout.
    Acquire,
    /// `r`: release by token.
    Release,
    /// `n`: renew by token.
    Renew,
    /// `e`: join the queue (two-phase, phase 1).
    Enqueue,
    /// `w`: wait for the queued grant (two-phase, phase 2).
    Wait,
}

/// One wire command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `auth <secret>`: authenticate the connection.
    Auth,
    /// `ping` (2.x): keep the connection alive.
    Ping,
    /// `stats`: the server's state as JSON.
    Stats,
    /// `stable-ref`: set the connection's session identity (cluster servers).
    StableRef,
    /// `barrier`: a linearizable read barrier (`ok` once the leader's
    /// no-op applied; single-node servers answer at once).
    Barrier,
    /// A lease operation on a lock or a semaphore.
    Lease(Kind, Op),
}

/// `(wire name, command)` for every command; the single source for both
/// directions of the mapping.
const TABLE: [(&str, Command); 15] = [
    ("auth", Command::Auth),
    ("ping", Command::Ping),
    ("stats", Command::Stats),
    ("stable-ref", Command::StableRef),
    ("barrier", Command::Barrier),
    ("l", Command::Lease(Kind::Lock, Op::Acquire)),
    ("r", Command::Lease(Kind::Lock, Op::Release)),
    ("n", Command::Lease(Kind::Lock, Op::Renew)),
    ("e", Command::Lease(Kind::Lock, Op::Enqueue)),
    ("w", Command::Lease(Kind::Lock, Op::Wait)),
    ("sl", Command::Lease(Kind::Semaphore, Op::Acquire)),
    ("sr", Command::Lease(Kind::Semaphore, Op::Release)),
    ("sn", Command::Lease(Kind::Semaphore, Op::Renew)),
    ("se", Command::Lease(Kind::Semaphore, Op::Enqueue)),
    ("sw", Command::Lease(Kind::Semaphore, Op::Wait)),
];

impl Command {
    /// Every command, in table order.
    pub fn all() -> impl Iterator<Item = Command> {
        TABLE.iter().map(|(_, c)| *c)
    }

    /// The exact command line sent on the wire (`"sl"`, `"ping"`...).
    pub fn wire_name(self) -> &'static str {
        TABLE
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .expect("every command is in TABLE")
    }

    /// The command for a wire name; case-sensitive, as the server is.
    pub fn from_wire(name: &str) -> Option<Command> {
        TABLE.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// The command in words, for messages: `"acquire"`, `"semaphore
    /// renew"`, `"stats"`. The one copy every layer uses.
    pub fn label(self) -> &'static str {
        const LOCK: [&str; 5] = ["acquire", "release", "renew", "enqueue", "wait"];
        const SEMAPHORE: [&str; 5] = [
            "semaphore acquire",
            "semaphore release",
            "semaphore renew",
            "semaphore enqueue",
            "semaphore wait",
        ];
        match self {
            Command::Lease(kind, op) => {
                let i = op as usize;
                match kind {
                    Kind::Lock => LOCK[i],
                    Kind::Semaphore => SEMAPHORE[i],
                }
            }
            other => other.wire_name(),
        }
    }

    /// Whether a cluster follower must refuse this command with
    /// `error_not_leader`: every lease command and `barrier` (not `auth`,
    /// `ping`, `stats`, `stable-ref`; docs/protocol.md "Cluster mode").
    pub fn is_mutating(self) -> bool {
        matches!(self, Command::Lease(..) | Command::Barrier)
    }

    /// Whether the server may hold the reply back (a blocking acquire/wait).
    pub fn may_block(self) -> bool {
        matches!(self, Command::Lease(_, Op::Acquire | Op::Wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Command::all() {
            assert!(seen.insert(c.wire_name()));
            assert_eq!(Command::from_wire(c.wire_name()), Some(c));
        }
        assert_eq!(seen.len(), 15);
    }

    #[test]
    fn followers_refuse_lease_commands_and_barrier_only() {
        let refused: Vec<&str> = Command::all()
            .filter(|c| c.is_mutating())
            .map(|c| c.wire_name())
            .collect();
        assert_eq!(
            refused,
            ["barrier", "l", "r", "n", "e", "w", "sl", "sr", "sn", "se", "sw"]
        );
        assert_eq!(Command::from_wire("stable-ref"), Some(Command::StableRef));
        assert_eq!(Command::StableRef.label(), "stable-ref");
        assert_eq!(Command::Barrier.label(), "barrier");
    }

    #[test]
    fn semaphore_names_are_lock_names_with_prefix() {
        for op in [Op::Acquire, Op::Release, Op::Renew, Op::Enqueue, Op::Wait] {
            let l = Command::Lease(Kind::Lock, op).wire_name();
            let s = Command::Lease(Kind::Semaphore, op).wire_name();
            assert_eq!(s, format!("s{l}"));
        }
    }

    #[test]
    fn labels_name_the_operation_and_kind() {
        assert_eq!(Command::Lease(Kind::Lock, Op::Acquire).label(), "acquire");
        assert_eq!(
            Command::Lease(Kind::Semaphore, Op::Renew).label(),
            "semaphore renew"
        );
        assert_eq!(Command::Lease(Kind::Lock, Op::Wait).label(), "wait");
        assert_eq!(Command::Stats.label(), "stats");
    }

    #[test]
    fn server_is_case_sensitive() {
        assert_eq!(Command::from_wire("L"), None);
        assert_eq!(Command::from_wire(" l"), None);
        assert_eq!(Command::from_wire("bogus"), None);
    }
}
