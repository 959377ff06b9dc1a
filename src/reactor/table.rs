//! The reactor's tables, as plain data (no syscalls): the connections it
//! has registered and who watches each, the replies it awaits, and the
//! wake-ups it owes; and the two traits through which it reaches the layers
//! above without naming their types.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::Result;
use crate::connection::Connection;
use crate::protocol::{Command, Outcome};

/// The owner of a watched connection (see [`Reactor::watch`]).
pub(crate) trait Watcher: Send + Sync {
    /// The server hung up the connection watched for `generation`.
    fn hung_up(self: Arc<Self>, generation: u64);
}

/// Something woken at a time it asked for ([`Reactor::wake_at`]).
pub(crate) trait Timed: Send + Sync {
    /// The wake-up at `due` came (it may be stale: the callee checks).
    fn due(self: Arc<Self>, due: Instant);
}

/// Who watches a connection: the owner (and which grant of it).
pub(super) struct Watched {
    pub(super) owner: Weak<dyn Watcher>,
    pub(super) generation: u64,
    /// Tells this watch from the connection's other and earlier ones.
    pub(super) seq: u64,
}

/// A connection the reactor has registered under its own id: kept while
/// the connection lives (swept when it is gone), watched or not, so a
/// hang-up of a pooled connection marks it broken. A home shared by many
/// leases has a watch for each, and their renewals' replies awaited in the
/// order the requests went out (the order the server answers them).
#[derive(Default)]
pub(super) struct Entry {
    pub(super) conn: Weak<Connection>,
    pub(super) watchers: Vec<Watched>,
    /// (pending id, the request awaited), oldest first.
    pub(super) awaited: VecDeque<(u64, Box<Pending>)>,
}

impl Entry {
    pub(super) fn new(conn: &Arc<Connection>) -> Entry {
        Entry {
            conn: Arc::downgrade(conn),
            ..Entry::default()
        }
    }
}

/// A request sent on a watched connection whose reply the reactor awaits
/// (a renewal): read when the socket is readable, or given up at
/// `deadline` (it stays owed on the connection); either way `settle` gets
/// the outcome, once, on the reactor's thread.
pub(crate) struct Pending {
    pub(crate) command: Command,
    /// The key, for messages.
    pub(crate) key: String,
    pub(crate) deadline: Instant,
    pub(crate) conn: Arc<Connection>,
    /// Whether the reactor counts it in `deadline_hits` when it gives it
    /// up (a renewal); an evented operation counts its own deadline.
    pub(crate) counted_here: bool,
    pub(crate) settle: Box<dyn FnOnce(Result<Outcome>) + Send>,
}

/// A watch: its connection's id and its sequence number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchKey {
    pub(super) conn: u64,
    pub(super) seq: u64,
}

/// Registered connections by id, and the deadlines of awaited replies:
/// (deadline, connection id).
#[derive(Default)]
pub(super) struct Slots {
    pub(super) entries: HashMap<u64, Entry>,
    /// Watches over all entries.
    pub(super) watched: usize,
    /// Replies awaited over all entries.
    pub(super) awaited: usize,
    pub(super) deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    pub(super) next_id: u64,
}

impl Slots {
    /// Forget connections that are gone, once they outnumber the watched
    /// ones by a margin (amortised: no work per acquire).
    pub(super) fn sweep(&mut self) {
        if self.entries.len() > 2 * self.watched + 1024 {
            self.entries
                .retain(|_, e| !e.watchers.is_empty() || e.conn.strong_count() > 0);
        }
    }
}

/// A wake-up (a lease's renewal). The owner decides whether it is still
/// current (a lease keeps the time it armed and ignores others), so an
/// owner has at most one live entry however often it re-arms.
pub(super) struct WakeUp {
    pub(super) due: Instant,
    pub(super) seq: u64,
    pub(super) owner: Weak<dyn Timed>,
}

impl PartialEq for WakeUp {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for WakeUp {}
impl PartialOrd for WakeUp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WakeUp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
pub(super) struct WakeUps {
    pub(super) heap: BinaryHeap<Reverse<WakeUp>>,
    pub(super) seq: u64,
}
