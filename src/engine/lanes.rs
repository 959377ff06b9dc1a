//! Lanes: one per (client, server), the FIFO of evented operations waiting
//! for a connection, and the connections opened for them.
//!
//! Requests leave in the order their operations were started (the server's
//! queue is FIFO; the library must not reorder on the way there), so the
//! head of the lane gets the next connection, whether it comes from the
//! client's idle pool or from a dial. Requests on different connections
//! reach a server in no particular order, so an operation that keeps its
//! key's order (an acquire's `e`, a try's `l`) is held back while an
//! earlier one of the same key has its request unanswered: the server has
//! queued (or answered) the earlier one before the next one is sent.
//!
//! Pure bookkeeping, owned by the engine thread: which operation is still
//! waiting is asked of the caller (`is_waiting`), so this file names no
//! operation type.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::ClientInner;
use crate::connection::{Connection, Reservation, Sending};

/// Connections a lane opens at once.
pub(super) const MAX_DIALS: usize = 16;

/// Which lane: (the client's address, server index).
pub(super) type LaneKey = (usize, usize);

pub(super) fn lane_key(client: &Arc<ClientInner>, server: usize) -> LaneKey {
    (Arc::as_ptr(client) as usize, server)
}

/// What a lane wants done next.
pub(super) enum Next {
    /// Send operation `id` on `conn`. `ordered`: it took its key's turn;
    /// call [`Lane::answered`] once its request is answered (or never will
    /// be).
    Go {
        id: u64,
        conn: Arc<Connection>,
        ordered: bool,
        /// A try that makes `conn` a home (keep it until answered).
        homing: Option<Homing>,
    },
    /// Open `n` more connections (already counted as dialing).
    Dial(usize),
    /// Send operation `id`'s first request (answered at once) on `conn`, a
    /// home other leases live on: no idle connection was left, and this
    /// spares opening one (`ordered` as for `Go`); `room`: its place there.
    Home {
        id: u64,
        room: Reservation,
        ordered: bool,
    },
    /// Nothing waits, nothing is dialed or in its key's turn: the lane can
    /// go (its spare connections back to the pool: [`Lane::into_spare`]).
    Empty,
    /// Operation `id` (at the front) waits for a connection becoming a
    /// home ([`Homing`]) until `until`; look again then.
    Held { id: u64, until: Instant },
    /// Nothing to do until a connection comes or a request is answered.
    Idle,
}

/// The lane of one (client, server): operations waiting for a connection,
/// oldest first, and connections opened for them.
pub(super) struct Lane {
    client: Arc<ClientInner>,
    server: usize,
    /// Operations that may go as soon as a connection is there (with the
    /// key whose order they keep).
    /// (id, the key whose order it keeps, whether it may go on a home).
    waiting: VecDeque<(u64, Option<String>, bool)>,
    /// Ordered operations held back because an earlier one of their key
    /// has its request in flight, oldest first.
    blocked: HashMap<String, VecDeque<u64>>,
    /// Keys with an ordered request in flight, and whose it is.
    enqueuing: HashMap<String, u64>,
    /// Operations whose ordered request others now wait behind (since the
    /// last [`Lane::take_blockers`]).
    blockers: Vec<u64>,
    conns: Vec<Arc<Connection>>,
    dialing: usize,
    /// Tries sent on connections that are no home yet: each becomes one
    /// with its grant ([`Homing`]).
    homing: Arc<AtomicUsize>,
    /// When the last of those went out.
    homing_since: Instant,
}

/// How long tries wait for a connection that is becoming a home before
/// they open their own. A reply normally comes within a round trip, but
/// on a loaded machine (or a slow link) one that takes longer must not
/// make every waiting try dial a connection; a waiting operation's own
/// deadline still bounds it.
const HOMING_GRACE: Duration = Duration::from_secs(1);

/// A try on a connection that becomes a home with its grant: while it is
/// unanswered, the lane's other tries wait to join that home instead of
/// opening connections of their own. Dropped when it is answered.
pub(crate) struct Homing(Arc<AtomicUsize>);

impl Drop for Homing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lane {
    pub(super) fn new(client: Arc<ClientInner>, server: usize) -> Lane {
        Lane {
            client,
            server,
            waiting: VecDeque::new(),
            blocked: HashMap::new(),
            enqueuing: HashMap::new(),
            blockers: Vec::new(),
            conns: Vec::new(),
            dialing: 0,
            homing: Arc::new(AtomicUsize::new(0)),
            homing_since: Instant::now(),
        }
    }

    /// Put operation `id` at the back; `ordered`: the key whose order it
    /// keeps; `homeable`: its request may go on a home (answered at once).
    pub(super) fn push(&mut self, id: u64, ordered: Option<String>, homeable: bool) {
        self.waiting.push_back((id, ordered, homeable));
    }

    /// Hand the next connection to the oldest operation that may go.
    pub(super) fn next(&mut self, is_waiting: &dyn Fn(u64) -> bool) -> Next {
        loop {
            let Some((id, ordered, homeable)) = self.waiting.front().cloned() else {
                if self.dialing == 0 && self.blocked.is_empty() && self.enqueuing.is_empty() {
                    return Next::Empty;
                }
                return Next::Idle;
            };
            if !is_waiting(id) {
                self.waiting.pop_front(); // ended meanwhile (deadline, cancel)
                if let Some(k) = ordered.filter(|k| !self.enqueuing.contains_key(k)) {
                    // It may have been the one let through for its key.
                    self.unblock(&k, is_waiting);
                }
                continue;
            }
            // (An operation whose try on a home found its key taken comes
            // back holding its key's turn: it goes on.)
            if let Some(k) = ordered
                .as_ref()
                .filter(|k| self.enqueuing.get(*k).is_some_and(|&owner| owner != id))
            {
                if !self.blocked.contains_key(k) {
                    self.blockers.extend(self.enqueuing.get(k));
                }
                self.waiting.pop_front();
                self.blocked.entry(k.clone()).or_default().push_back(id);
                continue;
            }
            let conn = match self.conns.pop() {
                Some(conn) => Some(conn),
                None => self.client.pool_take(self.server),
            };
            let home = match (&conn, homeable) {
                (None, true) => self.client.home_with_room(self.server, Sending::Posted),
                _ => None,
            };
            if let Some(room) = home {
                let ordered = self.take_turn(id, ordered);
                return Next::Home { id, room, ordered };
            }
            let Some(conn) = conn else {
                // Requests answered at once (tries) need one connection
                // between them: the first grant makes it a home the others
                // join, so they open one at a time; requests that wait on
                // their connection need one each.
                // Tries join homes only where the server has some, or a
                // try on a fresh connection is under way (it accepted a
                // connection); elsewhere (an unreachable server) each
                // waiting operation dials, so one hung dial never holds the
                // others back.
                let homing = self.homing.load(Ordering::Acquire) > 0;
                let joining = homeable && (homing || self.client.has_home(self.server));
                if joining && homing {
                    // (Not for long: a try that gets no answer soon must
                    // not hold the others back until its deadline.)
                    let until = self.homing_since + HOMING_GRACE;
                    if Instant::now() < until {
                        return Next::Held { id, until };
                    }
                }
                let most = if joining { 1 } else { MAX_DIALS };
                let wanted = self.waiting.len().min(most);
                let n = wanted.saturating_sub(self.dialing);
                if n == 0 {
                    return Next::Idle;
                }
                self.dialing += n;
                return Next::Dial(n);
            };
            let ordered = self.take_turn(id, ordered);
            let homing = homeable.then(|| {
                self.homing.fetch_add(1, Ordering::AcqRel);
                self.homing_since = Instant::now();
                Homing(Arc::clone(&self.homing))
            });
            return Next::Go {
                id,
                conn,
                ordered,
                homing,
            };
        }
    }

    /// Operation `id` (at the front) leaves the lane with a connection; an
    /// ordered one takes its key's turn. Whether it did.
    fn take_turn(&mut self, id: u64, ordered: Option<String>) -> bool {
        self.waiting.pop_front();
        let Some(k) = ordered else { return false };
        self.enqueuing.insert(k, id);
        true
    }

    /// The ordered request of key `key` was answered (or never will be):
    /// the next operation of that key may go.
    pub(super) fn answered(&mut self, key: &str, is_waiting: &dyn Fn(u64) -> bool) {
        self.enqueuing.remove(key);
        self.unblock(key, is_waiting);
    }

    /// Whether operations of key `key` wait behind its ordered request in
    /// flight (whose reply should then be read without delay).
    pub(super) fn has_blocked(&self, key: &str) -> bool {
        self.blocked.contains_key(key)
    }

    /// The operations others began to wait behind since the last call.
    pub(super) fn take_blockers(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.blockers)
    }

    /// A dial of this lane opened `conn`.
    pub(super) fn dialed(&mut self, conn: Arc<Connection>) {
        self.dialing -= 1;
        self.conns.push(conn);
    }

    /// A dial of this lane failed: the oldest waiting operation (returned)
    /// fails with it, as a blocking call would have; the others get their
    /// own attempt.
    pub(super) fn dial_failed(&mut self, is_waiting: &dyn Fn(u64) -> bool) -> Option<u64> {
        self.dialing -= 1;
        while let Some((id, _, _)) = self.waiting.pop_front() {
            if is_waiting(id) {
                return Some(id);
            }
        }
        None
    }

    /// The client and server this lane connects to.
    pub(super) fn target(&self) -> (Arc<ClientInner>, usize) {
        (Arc::clone(&self.client), self.server)
    }

    /// An empty lane's client, server and spare connections.
    pub(super) fn into_spare(self) -> (Arc<ClientInner>, usize, Vec<Arc<Connection>>) {
        (self.client, self.server, self.conns)
    }

    /// Let the oldest live operation held back for key `k` go next.
    fn unblock(&mut self, k: &str, is_waiting: &dyn Fn(u64) -> bool) {
        let Some(q) = self.blocked.get_mut(k) else {
            return;
        };
        while let Some(id) = q.pop_front() {
            if is_waiting(id) {
                self.waiting.push_front((id, Some(k.to_owned()), false));
                break;
            }
        }
        if q.is_empty() {
            self.blocked.remove(k);
        }
    }
}
