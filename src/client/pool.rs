//! The connections of one server that the client keeps: idle ones, reused
//! across leases so a lock does not cost a TCP (and TLS) handshake, and
//! *homes*, the connections that carry held leases, which take more of
//! them up to `Config::max_leases_per_connection`.
//!
//! The server closes a connection that stays silent for its read timeout,
//! so an idle connection is only handed out again if it has been idle for
//! less than `keepalive` and a non-blocking peek finds it neither closed
//! nor carrying unexpected bytes. Homes are kept alive by their leases'
//! renewals and watched by the reactor, which marks them broken on a
//! hang-up.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::connection::{Connection, Reservation, Sending};

thread_local! {
    /// The id of the home this thread last put a lease on.
    static LAST_HOME: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

pub(crate) struct Pool {
    idle: Mutex<Vec<(Arc<Connection>, Instant)>>,
    /// Connections with held leases (held alive by those leases).
    homes: Mutex<Vec<Weak<Connection>>>,
    max_idle: usize,
    max_idle_time: Duration,
}

impl Pool {
    pub(crate) fn new(max_idle: usize, max_idle_time: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            homes: Mutex::new(Vec::new()),
            max_idle,
            max_idle_time,
        }
    }

    /// The most recently used live idle connection, if any, for one
    /// caller alone. Stale ones met on the way are dropped (closing them).
    pub(crate) fn take(&self) -> Option<Arc<Connection>> {
        loop {
            let (conn, since) = self.idle.lock().ok()?.pop()?;
            if since.elapsed() < self.max_idle_time && conn.looks_alive() {
                return Some(conn);
            }
        }
    }

    /// A home with room for another lease (fewer than `max_leases` on it
    /// or on their way there) that a request sent `how` can go on now, and
    /// a place reserved on it for the lease; `None` if there is none. Homes whose leases are all gone, or that broke,
    /// leave the list.
    pub(crate) fn home_with_room(&self, max_leases: usize, how: Sending) -> Option<Reservation> {
        let mut homes = self.homes.lock().ok()?;
        let hint = LAST_HOME.with(std::cell::Cell::get);
        let mut found: Option<Arc<Connection>> = None;
        homes.retain(|w| {
            let Some(conn) = w.upgrade() else { return false };
            let n = conn.homed();
            if n == 0 || conn.is_broken() {
                return false;
            }
            let better = match &found {
                None => true,
                // The home this thread used last, if it can take one more:
                // threads that acquire and release in turn then keep to
                // their own home and seldom wait for another's call.
                Some(f) => f.id() != hint && conn.id() == hint,
            };
            if better && conn.load() < max_leases && conn.takes_more_now(how) {
                found = Some(conn);
            }
            true
        });
        let found = found?;
        LAST_HOME.with(|h| h.set(found.id()));
        // (Under the list's lock: two takers never both get the last place.)
        Some(Reservation::new(&found))
    }

    /// `conn` carries a held lease now: list it among the homes (once).
    pub(crate) fn add_home(&self, conn: &Arc<Connection>) {
        let Ok(mut homes) = self.homes.lock() else { return };
        let ptr = Arc::as_ptr(conn);
        if !homes.iter().any(|w| w.as_ptr() == ptr) {
            homes.push(Arc::downgrade(conn));
        }
    }

    /// Return a connection after use. Broken ones, and ones beyond the
    /// idle cap, are dropped; a home with leases left stays a home.
    pub(crate) fn put(&self, conn: Arc<Connection>) {
        if conn.is_broken() {
            return;
        }
        if conn.homed() > 0 {
            self.add_home(&conn);
            return;
        }
        if conn.load() > 0 || !conn.is_quiet() {
            // Others' requests are still in flight there (releases and
            // tries on what was a shared home a moment ago): whoever takes
            // it from the idle list expects it to itself (a blocking `l`
            // could not go, nor anything behind one). It closes once they
            // are answered.
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        // Oldest first: drop the ones that went stale meanwhile.
        let fresh = idle.partition_point(|(_, since)| since.elapsed() >= self.max_idle_time);
        idle.drain(..fresh);
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    /// Number of idle connections held (for tests and diagnostics).
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Number of homes (connections carrying held leases).
    pub(crate) fn home_count(&self) -> usize {
        self.homes
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|w| w.upgrade().is_some_and(|c| c.homed() > 0))
                    .count()
            })
            .unwrap_or(0)
    }
}
