//! Shared homes, as a connection counts them: the held leases living on
//! it ([`HomeTicket`]) and the ones on their way there ([`Reservation`]),
//! which the pool weighs against `Config::max_leases_per_connection`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Connection;

/// How a request would go on a shared home ([`Connection::takes_more_now`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sending {
    /// By a call on this thread: it needs the connection now.
    Call,
    /// Without waiting (evented, renewals): while a call holds the
    /// connection it waits in the outbox, and that call writes it first
    /// when done.
    Posted,
}

/// One held lease living on a connection: counted while it lives, so the
/// pool knows which connections are homes and how full (src/client/pool.rs).
pub(crate) struct HomeTicket(Arc<Connection>);

impl HomeTicket {
    pub(crate) fn new(conn: &Arc<Connection>) -> HomeTicket {
        conn.homed.fetch_add(1, Ordering::AcqRel);
        HomeTicket(Arc::clone(conn))
    }
}

impl Drop for HomeTicket {
    fn drop(&mut self) {
        self.0.homed.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place on a shared home for a lease whose try is on its way there:
/// counted with the leases it holds, so a burst of tries never fills a
/// home beyond its cap. Dropped once the try is answered (a grant has its
/// [`HomeTicket`] by then).
pub(crate) struct Reservation(Arc<Connection>);

impl Reservation {
    pub(crate) fn new(conn: &Arc<Connection>) -> Reservation {
        conn.reserved.fetch_add(1, Ordering::AcqRel);
        Reservation(Arc::clone(conn))
    }

    /// The home it is on.
    pub(crate) fn conn(&self) -> &Arc<Connection> {
        &self.0
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.reserved.fetch_sub(1, Ordering::AcqRel);
    }
}
