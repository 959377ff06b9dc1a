//! Per-client counters: what a user watches to see faults the API hides by
//! design (retried renewals, redirects, reconnects, deadlines). Plain
//! relaxed atomics: each is an independent count, read as a snapshot that
//! is consistent per field, not across fields.

use std::sync::atomic::{AtomicU64, Ordering};

/// A client's counters at one moment ([`crate::client::Client::metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Grants reported to the caller (acquire, enqueue that acquired, wait).
    pub acquires: u64,
    /// Acquires and waits that ended with the server's `timeout` (a
    /// try-acquire that found the key taken counts too).
    pub acquire_timeouts: u64,
    /// Successful releases.
    pub releases: u64,
    /// Successful renewals.
    pub renewals: u64,
    /// Renewal attempts that failed transiently and were retried.
    pub renewal_retries: u64,
    /// Held leases lost (renewal refused, or not renewed in time).
    pub leases_lost: u64,
    /// Connections opened to replace one that broke (renewal or release
    /// on a fresh connection).
    pub reconnects: u64,
    /// `error_not_leader` redirects followed.
    pub redirects: u64,
    /// Calls or connection attempts that hit their deadline.
    pub deadline_hits: u64,
    /// Connections opened (including reconnects).
    pub connections_opened: u64,
    /// Connections open now (in use, holding leases, or idle in the pool).
    pub open_connections: u64,
    /// Of those, idle in the pool now.
    pub idle_connections: u64,
    /// Cluster mode: times the client's cached leader moved to another
    /// member (a refusal, a dead or draining leader, an election).
    pub failovers: u64,
    /// Held leases doubted (their connection went; not reported held)
    /// and then confirmed by a renewal elsewhere.
    pub leases_confirmed: u64,
    /// Connections carrying held leases now (each up to
    /// `Config::max_leases_per_connection`).
    pub home_connections: u64,
    /// The latest a renewal went out after it was due, in microseconds
    /// (worst since the client was made): how far the reactor fell behind.
    pub renewal_lateness_max_us: u64,
}

/// The live counters (gauges are derived when a snapshot is taken, except
/// open connections, counted up and down as they open and close).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) acquires: AtomicU64,
    pub(crate) acquire_timeouts: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) renewals: AtomicU64,
    pub(crate) renewal_retries: AtomicU64,
    pub(crate) leases_lost: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) redirects: AtomicU64,
    pub(crate) deadline_hits: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) open_connections: AtomicU64,
    pub(crate) failovers: AtomicU64,
    pub(crate) leases_confirmed: AtomicU64,
    pub(crate) renewal_lateness_max_us: AtomicU64,
}

/// Add one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// A renewal went out `late` after it was due.
    pub(crate) fn renewal_late(&self, late: std::time::Duration) {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        self.renewal_lateness_max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, idle_connections: u64, home_connections: u64) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            acquires: get(&self.acquires),
            acquire_timeouts: get(&self.acquire_timeouts),
            releases: get(&self.releases),
            renewals: get(&self.renewals),
            renewal_retries: get(&self.renewal_retries),
            leases_lost: get(&self.leases_lost),
            reconnects: get(&self.reconnects),
            redirects: get(&self.redirects),
            deadline_hits: get(&self.deadline_hits),
            connections_opened: get(&self.connections_opened),
            open_connections: get(&self.open_connections),
            idle_connections,
            failovers: get(&self.failovers),
            leases_confirmed: get(&self.leases_confirmed),
            home_connections,
            renewal_lateness_max_us: get(&self.renewal_lateness_max_us),
        }
    }
}
