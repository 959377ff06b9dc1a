//! Evented operations: acquires, waits, releases and renewals that the
//! reactor's thread (src/reactor.rs) drives from start to completion without
//! blocking anyone (`ops.rs`), over connections opened without blocking
//! (`dial.rs`). This module starts the reactor of a generation with these
//! operations as its tasks.
//!
//! The operations' state (`ops::Driver`) sits behind one lock, so the
//! non-blocking steps run on whichever thread has something to do: the
//! thread that starts an operation sends its request (a pooled connection,
//! a non-blocking send), the thread that drains a completion queue reads
//! the replies its fd reported (`events::Ready`) and sends what follows,
//! and the reactor's thread keeps the deadlines, dials, cancels and the
//! operations that report to a callback. Each operation is in the driver's
//! task map or in the hands of the one thread holding the lock.

mod dial;
mod lanes;
pub(crate) mod op;
pub(crate) mod ops;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError, Weak};

use crate::client::ClientInner;
use crate::events::Ready;
use crate::log;
use crate::notify::{self, notifier};
use crate::reactor::{self, Reactor};
use crate::runtime::{Runtime, Slot};
use crate::sync::lock;
use crate::{Error, ErrorKind};

/// A generation's evented operations: their driver and its reactor.
pub(crate) struct Engine {
    reactor: Arc<Reactor>,
    driver: Arc<Mutex<ops::Driver>>,
    /// The driver's count of starts handed to the reactor and not run yet.
    deferred: Arc<AtomicUsize>,
}

impl Engine {
    /// A fresh id for an operation.
    pub(crate) fn next_id(&self) -> u64 {
        self.reactor.next_id()
    }

    /// Start operation `id` on this thread: it goes as far as it can
    /// without waiting (a pooled connection and a non-blocking send, or a
    /// place in its lane), then the reply or the reactor carries it on.
    /// When another thread holds the driver (or starts handed over earlier
    /// have not run yet), it goes to the reactor instead: this thread never
    /// waits for a lock here (a blocked cgo call costs Go an OS thread).
    pub(crate) fn start(&self, id: u64, op: Box<op::Op>) {
        if self.deferred.load(Ordering::SeqCst) == 0 {
            if let Some(mut d) = try_lock(&self.driver) {
                self.run_locked(&mut d, |d, r| d.start_here(r, id, op));
                return;
            }
        }
        self.deferred.fetch_add(1, Ordering::SeqCst);
        self.reactor.post(Box::new(ops::Inbound::Deferred(id, op)));
    }

    /// Run `f` on the locked driver on this thread. Log lines go to the
    /// notifier (no application code under the lock); the reactor is woken
    /// if a deadline earlier than its sleep was set.
    fn run_locked(&self, d: &mut ops::Driver, f: impl FnOnce(&mut ops::Driver, &Reactor)) {
        let deferring = log::begin_deferring();
        f(d, &self.reactor);
        let wake = d.settle_here(&self.reactor);
        if wake {
            self.reactor.post(Box::new(ops::Wake));
        }
        if deferring {
            let lines = log::end_deferring();
            if let (false, Some(rt)) = (lines.is_empty(), self.reactor.runtime()) {
                notify::log_lines(&rt, lines);
            }
        }
    }
}

impl Ready for Engine {
    fn ready(&self, id: u64, bits: u32) {
        match try_lock(&self.driver) {
            Some(mut d) => self.run_locked(&mut d, |d, r| d.ready_here(r, id, bits)),
            // Busy: the reactor reads it (the registration fired already).
            None => self.reactor.post(Box::new(ops::Inbound::Ready(id, bits))),
        }
    }
}

/// The lock if it is free now (a poisoned one too: the driver's state
/// stays consistent between steps).
fn try_lock<T>(m: &Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The evented operations of `rt` (their reactor started on first use);
/// `None` if they cannot run.
pub(crate) fn evented(rt: &Arc<Runtime>) -> Option<&Arc<Engine>> {
    rt.service(Slot::Evented, || {
        let driver = ops::Driver::default();
        let deferred = Arc::clone(&driver.deferred);
        let driver = Arc::new(Mutex::new(driver));
        let shell = ops::Shell(Arc::clone(&driver));
        let reactor = Arc::clone(reactor::start(rt, move || Box::new(shell))?);
        let engine = Arc::new(Engine {
            reactor,
            driver,
            deferred,
        });
        let me: Weak<dyn Ready> = Arc::downgrade(&(Arc::clone(&engine) as Arc<dyn Ready>));
        lock(&engine.driver).set_me(me);
        Some(engine)
    })
}

/// The reactor of `rt`, started on first use with the evented operations
/// as its tasks; `None` if it cannot run.
pub(crate) fn engine(rt: &Arc<Runtime>) -> Option<&Arc<Reactor>> {
    evented(rt).map(|e| &e.reactor)
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
