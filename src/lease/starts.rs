//! The starts of the evented operations on a lease handle (and of a
//! client's stats): checked here, then started on the caller's thread
//! (`engine::Engine::start`: a pooled connection and a non-blocking send
//! when one is ready, never a wait); the event engine (src/engine/) carries
//! them on and reports the outcome on a completion queue (or, for
//! `acquire_async`, to a callback on the notifier thread).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use super::Lease;
use crate::client::Client;
use crate::engine::op::{Done, Mode, Op};
use crate::engine::{self, ensure_running};
use crate::events::{EventKind, Events};
use crate::held::{DoneFn, Shared};
use crate::protocol::Request;
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::thread::spawn_named;
use crate::{Error, ErrorKind, Result};

fn no_engine() -> Error {
    Error::new(ErrorKind::Io, "cannot start the event engine thread")
}

impl Client {
    /// Start `stats` of server `server` without blocking this thread: the
    /// request goes on a pooled connection (or one the event engine opens)
    /// and its outcome arrives on `events` as one event tagged `tag`:
    /// [`EventKind::Stats`](crate::events::EventKind) with the reply in
    /// [`Event::stats`](crate::events::Event), or `StatsFailed` with the
    /// error. Within connect timeout + I/O timeout, as [`Client::stats`].
    /// Nothing cancels it. Fails at once (no event) only for a server
    /// index out of range, after fork, or when the engine cannot start.
    pub fn stats_start(&self, server: usize, events: &Events, tag: u64) -> Result<()> {
        self.check_fork()?;
        self.inner.server(server)?;
        let engine = engine::evented(&self.inner.runtime).ok_or_else(no_engine)?;
        let done = Done::Event {
            queue: Arc::clone(&events.queue),
            tag,
        };
        let op = Op::stats(Arc::clone(&self.inner), server, done);
        engine.start(engine.next_id(), Box::new(op));
        Ok(())
    }
}

impl Lease {
    /// Acquire on the event engine and call `done` with the result on the
    /// notifier thread (a library thread; no thread per call).
    /// [`cancel`](Lease::cancel) works on it as on a blocking acquire.
    pub fn acquire_async(&self, timeout_s: u64, done: DoneFn) {
        let done = Arc::new(Mutex::new(Some(done)));
        let theirs = Arc::clone(&done);
        let started = self.check_fork().and_then(|()| {
            // The callback runs on the notifier, which belongs to the
            // renewal scheduler: start it now, not on the engine thread.
            ensure_running(&self.shared.client)?;
            self.shared.start_acquire(timeout_s, || {
                Done::Call(Box::new(move |r| {
                    if let Some(f) = lock(&theirs).take() {
                        let _ = catch_unwind(AssertUnwindSafe(|| f(r)));
                    }
                }))
            })
        });
        if let Err(e) = started {
            // Not on the caller's stack: it may hold a lock the callback takes.
            let rt = self.check_fork().is_ok().then_some(&*self.shared.client.runtime);
            if let Some(f) = lock(&done).take() {
                spawn_or_run(rt, move || f(Err(e)));
            }
        }
    }

    /// Start an acquire on the event engine, waiting up to `timeout_s`
    /// seconds (0 = try once) without blocking this thread: only
    /// non-blocking steps happen here (a send on a pooled connection, the
    /// start of a non-blocking connect; name resolution goes to a resolver
    /// thread). Its outcome arrives on
    /// `events` as one [`EventKind::Acquired`](crate::events::EventKind)
    /// or `AcquireFailed` event tagged `tag`. Acquires of one key started
    /// one after another are sent (and so granted) in that order.
    /// [`cancel`](Lease::cancel) ends it with `AcquireFailed`/`Cancelled`,
    /// leaving nothing held or queued on the server. Fails at once (no
    /// event) only when the handle cannot start one: busy, held, queued.
    pub fn acquire_start(&self, timeout_s: u64, events: &Events, tag: u64) -> Result<()> {
        self.check_fork()?;
        let queue = Arc::clone(&events.queue);
        self.shared
            .start_acquire(timeout_s, || Done::Event { queue, tag })
    }

    /// Try once without blocking this thread: one request (`l` with
    /// timeout 0, as [`try_acquire`](Lease::try_acquire) sends) on the event
    /// engine. Its outcome arrives on `events` as one event tagged `tag`:
    /// [`EventKind::Acquired`](crate::events::EventKind) (the handle holds
    /// the lease) or `AcquireFailed`, whose error is
    /// [`ErrorKind::Timeout`] when the key is taken (where `try_acquire`
    /// returns `Ok(false)`): the server answered at once and keeps nothing
    /// queued for it. Within connect timeout + I/O timeout. It keeps its
    /// place among the starts of its key: sent only after an earlier
    /// acquire of the key was queued, and a later one is sent only after
    /// it was answered. [`cancel`](Lease::cancel) ends it with
    /// `AcquireFailed`/`Cancelled`, leaving nothing held or queued. Fails
    /// at once (no event) only when the handle cannot start one: busy,
    /// held, queued.
    pub fn try_acquire_start(&self, events: &Events, tag: u64) -> Result<()> {
        self.check_fork()?;
        let queue = Arc::clone(&events.queue);
        self.shared.start_once(Mode::Try, Done::Event { queue, tag })
    }

    /// Two-phase, phase 1 without blocking this thread: join the key's
    /// queue (`e`) on the event engine. Its outcome arrives on `events` as
    /// one event tagged `tag`: `Acquired` (granted at once: the handle
    /// holds the lease; [`enqueue`](Lease::enqueue)'s `Ok(true)`),
    /// [`EventKind::Enqueued`](crate::events::EventKind) (queued:
    /// `Ok(false)`; follow with [`wait_start`](Lease::wait_start) or
    /// [`wait`](Lease::wait), which go on the same connection, or leave the
    /// queue with [`release_start`](Lease::release_start)) or
    /// `AcquireFailed`. Within connect timeout + I/O timeout. Ordered with
    /// the other starts of its key like [`acquire_start`](Lease::acquire_start).
    /// [`cancel`](Lease::cancel) ends it with `AcquireFailed`/`Cancelled`,
    /// leaving nothing held or queued (after `Enqueued`, cancel leaves the
    /// queue as after a blocking enqueue). Fails at once (no event) only
    /// when the handle cannot start one: busy, held, queued.
    pub fn enqueue_start(&self, events: &Events, tag: u64) -> Result<()> {
        self.check_fork()?;
        let queue = Arc::clone(&events.queue);
        self.shared.start_once(Mode::Enqueue, Done::Event { queue, tag })
    }

    /// Two-phase, phase 2 without blocking this thread: wait on the event
    /// engine up to `timeout_s` for the grant of an earlier `queued`
    /// [`enqueue`](Lease::enqueue); the outcome arrives on `events` as one
    /// `Acquired` or `AcquireFailed` event tagged `tag` (`Acquired` at once
    /// if enqueue already acquired). [`cancel`](Lease::cancel) ends it
    /// with `Cancelled`, leaving the queue. Fails at once (no event) with
    /// [`ErrorKind::NotEnqueued`] without an enqueue, or when busy.
    pub fn wait_start(&self, timeout_s: u64, events: &Events, tag: u64) -> Result<()> {
        self.check_fork()?;
        let done = Done::Event {
            queue: Arc::clone(&events.queue),
            tag,
        };
        self.shared.start_wait(timeout_s, done)
    }

    /// Start a release on the event engine without blocking this thread;
    /// its outcome arrives on `events` as one `Released` or
    /// `ReleaseFailed` event tagged `tag`. The handle stops holding the
    /// lease at once (it may acquire again right away). Leaving the queue
    /// after a `queued` enqueue needs no I/O: `Released` is queued at once.
    /// Fails at once (no event) with [`ErrorKind::NotHeld`] or
    /// [`ErrorKind::LeaseLost`] when there is nothing to release.
    pub fn release_start(&self, events: &Events, tag: u64) -> Result<()> {
        self.check_fork()?;
        self.shared.start_release(Done::Event {
            queue: Arc::clone(&events.queue),
            tag,
        })
    }
}

/// Run `f` on a new library thread of `rt` (joined when the runtime shuts
/// down; a plain thread without one); if no thread can be created, inline.
fn spawn_or_run(rt: Option<&Runtime>, f: impl FnOnce() + Send + 'static) {
    let slot = Arc::new(Mutex::new(Some(f)));
    let theirs = Arc::clone(&slot);
    let run = move || {
        if let Some(f) = lock(&theirs).take() {
            f();
        }
    };
    let spawned = match rt {
        Some(rt) => rt.spawn("dflockd-acquire", Box::new(run)),
        None => spawn_named("dflockd-acquire", Box::new(run)).is_ok(),
    };
    if !spawned {
        if let Some(f) = lock(&slot).take() {
            f();
        }
    }
}

impl Shared {
    /// Hand an acquire to the event engine; `done` says where its outcome
    /// goes.
    fn start_acquire(self: &Arc<Self>, timeout_s: u64, done: impl FnOnce() -> Done) -> Result<()> {
        // Refuse at once what a blocking acquire refuses at once: the engine
        // sends `e` then `w`, so check both as they will be encoded.
        let (kind, key) = (self.kind, self.key.as_str());
        Request::Enqueue {
            kind,
            key,
            limit: self.limit,
            lease_s: self.requested_ttl(),
        }
        .encode(&mut Vec::new())?;
        Request::Wait { kind, key, timeout_s }.encode(&mut Vec::new())?;
        let engine = engine::evented(&self.client.runtime).ok_or_else(no_engine)?;
        let guard = self.begin("acquire")?;
        let id = engine.next_id();
        lock(&self.state).evented = Some(id);
        let op = Op::acquire(Arc::clone(self), guard, timeout_s, done());
        engine.start(id, Box::new(op));
        Ok(())
    }

    /// Hand a try (`l` with timeout 0) or an enqueue (`e` alone) to the
    /// engine.
    fn start_once(self: &Arc<Self>, mode: Mode, done: Done) -> Result<()> {
        let (kind, key, limit, lease_s) = (self.kind, self.key.as_str(), self.limit, self.requested_ttl());
        let what = if mode == Mode::Try {
            "try acquire"
        } else {
            "enqueue"
        };
        if mode == Mode::Try {
            Request::Acquire {
                kind,
                key,
                timeout_s: 0,
                limit,
                lease_s,
            }
            .encode(&mut Vec::new())?;
        } else {
            Request::Enqueue {
                kind,
                key,
                limit,
                lease_s,
            }
            .encode(&mut Vec::new())?;
        }
        let engine = engine::evented(&self.client.runtime).ok_or_else(no_engine)?;
        let guard = self.begin(what)?;
        let id = engine.next_id();
        lock(&self.state).evented = Some(id);
        let op = Op::acquire_once(Arc::clone(self), guard, mode, done);
        engine.start(id, Box::new(op));
        Ok(())
    }

    /// Hand a two-phase wait to the engine.
    fn start_wait(self: &Arc<Self>, timeout_s: u64, done: Done) -> Result<()> {
        let (kind, key) = (self.kind, self.key.as_str());
        Request::Wait { kind, key, timeout_s }.encode(&mut Vec::new())?;
        let engine = engine::evented(&self.client.runtime).ok_or_else(no_engine)?;
        let Some((guard, home)) = self.begin_wait()? else {
            done.succeeded_at_once(EventKind::Acquired);
            return Ok(());
        };
        let id = engine.next_id();
        lock(&self.state).evented = Some(id);
        let op = Op::wait(Arc::clone(self), guard, home, timeout_s, done);
        engine.start(id, Box::new(op));
        Ok(())
    }

    /// Take the lease off the handle and hand its release to the engine.
    fn start_release(self: &Arc<Self>, done: Done) -> Result<()> {
        let engine = engine::evented(&self.client.runtime).ok_or_else(no_engine)?;
        let Some((token, home, room)) = self.take_for_release()? else {
            done.succeeded_at_once(EventKind::Released);
            return Ok(());
        };
        let op = Op::release(Arc::clone(self), token, home, room, done);
        engine.start(engine.next_id(), Box::new(op));
        Ok(())
    }
}
