//! Replies the reactor awaits on watched connections (renewals, and the
//! evented operations' requests on shared homes): registered in send order
//! (`send_awaited`), read in that order when the socket is readable
//! (`collect`), and given up at their deadlines by the session's rule
//! (`expire_replies`).

use std::cmp::Reverse;
use std::ffi::c_int;
use std::time::Instant;

use super::*;

impl Reactor {
    /// Send a request with `send` on `pending.conn` (registered here) and
    /// await its reply, behind the replies already awaited there (a shared
    /// home pipelines its leases' renewals and other starts' tries: the
    /// server answers them in order). Sending and registering happen under
    /// this reactor's lock, so requests from several threads on one
    /// connection are awaited in the order they went out. `send` gets the
    /// reply's reader id (unique among this reactor's tasks and awaited
    /// replies). `Ok(Busy)` and errors from `send` come back as they are
    /// (nothing awaited); `Err(None)`: the connection is not registered
    /// (nothing sent).
    pub(crate) fn send_awaited(
        &self,
        send: impl FnOnce(u64) -> Result<Started>,
        pending: Pending,
    ) -> std::result::Result<Started, Option<Error>> {
        {
            let mut s = lock(&self.slots);
            let s = &mut *s;
            let conn_id = pending.conn.id();
            if !s.entries.contains_key(&conn_id) {
                return Err(None);
            }
            let id = self.next_id();
            match send(id) {
                Ok(Started::Sent) => {}
                Ok(Started::Busy) => return Ok(Started::Busy),
                Err(e) => return Err(Some(e)),
            }
            let Some(entry) = s.entries.get_mut(&conn_id) else {
                return Ok(Started::Sent); // cannot happen: checked above
            };
            let (deadline, conn) = (pending.deadline, Arc::clone(&pending.conn));
            entry.awaited.push_back((id, Box::new(pending)));
            s.awaited += 1;
            // Under the lock: the entry (and so the connection) lives.
            self.register(&conn, true, conn.wants_write());
            s.deadlines.push(Reverse((deadline, conn_id)));
            // Replies that came in time leave their deadline behind until
            // it passes; keep those from piling up.
            if s.deadlines.len() > 2 * s.awaited + 1024 {
                let entries = &s.entries;
                s.deadlines
                    .retain(|Reverse((_, conn))| entries.get(conn).is_some_and(|e| !e.awaited.is_empty()));
            }
        }
        self.wake(); // the earliest deadline may have changed
        Ok(Started::Sent)
    }

    /// Read the replies awaited on `conn` (registered as `id`) that have
    /// arrived, in order, and settle each.
    pub(super) fn collect(&self, id: u64, conn: &Connection) {
        loop {
            let head = {
                let s = lock(&self.slots);
                let Some(entry) = s.entries.get(&id) else { return };
                match entry.awaited.front() {
                    Some((pid, p)) => (*pid, p.command, p.key.clone()),
                    None => return,
                }
            };
            let (pid, command, key) = head;
            let r = match conn.poll_reply(pid, command, Some(&key)) {
                Ok(None) => return, // not yet (or a call holds it: it nudges)
                Ok(Some(outcome)) => Ok(outcome),
                Err(e) => Err(e),
            };
            let p = {
                let mut s = lock(&self.slots);
                let s = &mut *s;
                let Some(entry) = s.entries.get_mut(&id) else {
                    return;
                };
                if entry.awaited.front().is_none_or(|(i, _)| *i != pid) {
                    continue;
                }
                s.awaited -= 1;
                entry.awaited.pop_front().map(|(_, p)| p)
            };
            if let Some(p) = p {
                settle(*p, r);
            }
        }
    }

    /// Give up the replies whose deadline passed; the time until the next
    /// deadline, in whole milliseconds rounded up (-1: none). Which ones
    /// give up is the session's rule (`Session::expire`: a late request
    /// and every one behind it on its connection); they are the last ones
    /// this connection's entry awaits.
    pub(super) fn expire_replies(&self) -> c_int {
        loop {
            let now = Instant::now();
            let mut guard = lock(&self.slots);
            let s = &mut *guard;
            let Some(&Reverse((deadline, conn_id))) = s.deadlines.peek() else {
                return -1;
            };
            if deadline > now {
                let ms = (deadline - now).as_micros().div_ceil(1000);
                return c_int::try_from(ms).unwrap_or(c_int::MAX);
            }
            s.deadlines.pop();
            let Some(entry) = s.entries.get_mut(&conn_id) else {
                continue;
            };
            if entry.awaited.is_empty() {
                continue;
            }
            let Some(conn) = entry.conn.upgrade() else {
                continue;
            };
            let Some((late, next)) = conn.expire_replies(now) else {
                // A call holds the connection: look again shortly.
                s.deadlines.push(Reverse((now + BUSY_LOOK_AGAIN, conn_id)));
                continue;
            };
            // (Also those past their deadline that a blocking call on the
            // connection gave up already, at its own deadline.)
            let (expired, kept): (std::collections::VecDeque<_>, std::collections::VecDeque<_>) =
                std::mem::take(&mut entry.awaited)
                    .into_iter()
                    .partition(|(i, p)| late.contains(i) || p.deadline <= now);
            entry.awaited = kept;
            s.awaited -= expired.len();
            let counted = expired.iter().filter(|(_, p)| p.counted_here).count();
            if counted > 0 {
                conn.count_deadline_hits(counted);
            }
            if let Some(next) = next {
                s.deadlines.push(Reverse((next, conn_id)));
            }
            drop(guard);
            for (_, p) in expired {
                let e = Error::new(
                    ErrorKind::Deadline,
                    format!("{} {:?}: no reply before the deadline", p.command.label(), p.key),
                );
                log!(Level::Warn, "{e}");
                settle(*p, Err(e));
            }
            self.rearm(conn_id);
        }
    }
}

/// How soon to look again at a connection whose replies are overdue while
/// a call holds it.
pub(super) const BUSY_LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(5);

/// Hand an awaited reply's outcome to its owner.
pub(super) fn settle(p: Pending, r: Result<Outcome>) {
    (p.settle)(r);
}
