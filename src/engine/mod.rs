//! Evented operations: acquires, waits, releases and renewals that the
//! reactor's thread (src/reactor.rs) drives from start to completion without
//! blocking anyone (`ops.rs`), over connections opened without blocking
//! (`dial.rs`). This module starts the reactor of a generation with these
//! operations as its tasks.

mod dial;
mod lanes;
pub(crate) mod op;
pub(crate) mod ops;

use std::sync::Arc;

use crate::client::ClientInner;
use crate::notify::notifier;
use crate::reactor::{self, Reactor};
use crate::runtime::Runtime;
use crate::{Error, ErrorKind};

/// The reactor of `rt`, started on first use with the evented operations
/// as its tasks; `None` if it cannot run.
pub(crate) fn engine(rt: &Arc<Runtime>) -> Option<&Arc<Reactor>> {
    reactor::start(rt, || Box::new(ops::Driver::default()))
}

/// Tell the engine of `rt` to look at operation `id` again (its handle was
/// cancelled).
pub(crate) fn poke(rt: &Runtime, id: u64) {
    if let Some(engine) = reactor::started(rt) {
        engine.post(Box::new(ops::Inbound::Poke(id)));
    }
}

/// Make sure `client`'s generation can renew leases (its engine runs) and
/// notify; an error if not.
pub(crate) fn ensure_running(client: &ClientInner) -> crate::Result<()> {
    if notifier(&client.runtime).is_some() && engine(&client.runtime).is_some() {
        return Ok(());
    }
    if client.runtime.is_stopped() {
        return Err(Error::new(
            ErrorKind::Closed,
            "the client was freed; refusing to hold a lease that would not be renewed",
        ));
    }
    Err(Error::new(
        ErrorKind::Io,
        "cannot start the renewal threads; refusing to hold a lease that would not be renewed",
    ))
}
