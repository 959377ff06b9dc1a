//! Idle authenticated connections of one server, reused across leases so
//! a lock does not cost a TCP (and TLS) handshake.
//!
//! The server closes a connection that stays silent for its read timeout,
//! so an idle connection is only handed out again if it has been idle for
//! less than `keepalive` and a non-blocking peek finds it neither closed
//! nor carrying unexpected bytes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;

pub(crate) struct Pool {
    idle: Mutex<Vec<(Arc<Connection>, Instant)>>,
    max_idle: usize,
    max_idle_time: Duration,
}

impl Pool {
    pub(crate) fn new(max_idle: usize, max_idle_time: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            max_idle_time,
        }
    }

    /// The most recently used live idle connection, if any. Stale ones
    /// met on the way are dropped (closing them).
    pub(crate) fn take(&self) -> Option<Arc<Connection>> {
        loop {
            let (conn, since) = self.idle.lock().ok()?.pop()?;
            if since.elapsed() < self.max_idle_time && conn.looks_alive() {
                return Some(conn);
            }
        }
    }

    /// Return a connection after use. Broken ones, and ones beyond the
    /// idle cap, are dropped.
    pub(crate) fn put(&self, conn: Arc<Connection>) {
        if conn.is_broken() {
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
}
