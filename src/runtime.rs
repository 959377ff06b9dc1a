//! The library's threads and their lifetime: *generations*.
//!
//! **Lifetime.** Library threads (the event engine, the notifier, resolver
//! threads) belong to one [`Runtime`]: a *generation* shared by every client
//! and lease alive at the same time. Each user-facing handle
//! ([`crate::client::Client`], [`crate::lease::Lease`]) holds an
//! [`Arc<Users>`]; when the last one is dropped the runtime stops its
//! services ([`Service::stop`]) and joins their threads before that drop
//! returns, unless the drop runs on a library thread (e.g. a client freed
//! inside a lost callback): a thread cannot join itself, so the threads are
//! then detached and exit on their own. Resolver threads
//! ([`Runtime::spawn_bounded`], [`spawn_resolver`]) sit in `getaddrinfo`,
//! which cannot be interrupted: the last drop waits for them at most
//! [`BOUNDED_JOIN`] (from when it began), joins those that ended and
//! detaches the others, which then touch nothing but their own answer
//! channel and exit when the resolver returns. The next client starts a new
//! generation. Library threads hold leases and clients only through
//! `Arc<Shared>` / `Arc<ClientInner>`, never through `Users`, so a renewal
//! in flight never makes a library thread the last user (which could not
//! join its siblings).
//!
//! A service registers itself with [`Runtime::register`], starts its threads
//! with [`Runtime::spawn`] and keeps its per-generation instance in a
//! [`Slot`] of the runtime: that is all a new subsystem needs to end with
//! the last client and to be forgotten at fork. The runtime names no
//! service type (imports go one way: services sit above it).
//!
//! **Fork** (`src/fork.rs`): the registry of generations is a
//! [`ForkGuarded`] cell, so the atfork handlers can hold it across a fork.
//! In the child the parent's generation is leaked (buried), never locked,
//! never joined: its threads do not exist there.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fork::{ForkGuarded, ForkStamp, bury};
use crate::sync::lock;
use crate::thread::{on_library_thread, set_library_thread, spawn_named};

// ---- the registry ----------------------------------------------------------

struct Registry {
    /// The generation new clients join, while any of its users lives and
    /// while `current_epoch` is this process's fork epoch.
    current: Option<Weak<Users>>,
    /// Its runtime (upgrading this, unlike `current`, can never make the
    /// caller the generation's last user).
    current_runtime: Option<Weak<Runtime>>,
    current_epoch: u64,
}

static REGISTRY: ForkGuarded<Registry> = ForkGuarded::new(Registry {
    current: None,
    current_runtime: None,
    current_epoch: 0,
});

/// How long the last drop of a generation waits for its bounded threads
/// (resolvers) to end; stated in `dflockd_client_free`'s documentation.
pub(crate) const BOUNDED_JOIN: Duration = Duration::from_millis(100);

// ---- generations ---------------------------------------------------------

/// A part of the library that runs threads of a [`Runtime`].
pub(crate) trait Service: Send + Sync {
    /// Ask every thread of the service to return soon. Must not block: the
    /// runtime joins the threads afterwards. Work already queued that the
    /// user must see (lost callbacks) should still be done before exiting.
    fn stop(&self);
}

/// The per-generation services, each in its own slot.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    /// The notifier (`src/notify.rs`).
    Notifier = 0,
    /// The event engine's reactor (`src/reactor/`).
    Engine = 1,
    /// The evented operations' driver, shared by the reactor and the
    /// threads that start operations or drain their queues (`src/engine/`).
    Evented = 2,
}

const SLOTS: usize = 3;

#[derive(Default)]
struct Threads {
    stopped: bool,
    services: Vec<Arc<dyn Service>>,
    handles: Vec<JoinHandle<()>>,
    /// Threads joined with a bound at shutdown, each with its "body
    /// returned" flag.
    bounded: Vec<(JoinHandle<()>, Arc<AtomicBool>)>,
}

impl Threads {
    /// Join the threads that already ended (resolvers come and go): a
    /// finished thread's join returns at once, and joining instead of
    /// dropping its handle means it has left the process when it is
    /// forgotten.
    fn reap(&mut self) {
        for h in take_if(&mut self.handles, JoinHandle::is_finished) {
            let _ = h.join();
        }
        for (h, _) in take_if(&mut self.bounded, |(h, _)| h.is_finished()) {
            let _ = h.join();
        }
    }
}

/// Remove and return the items of `v` for which `f` holds.
fn take_if<T>(v: &mut Vec<T>, mut f: impl FnMut(&T) -> bool) -> Vec<T> {
    let (taken, kept) = std::mem::take(v).into_iter().partition(|x| f(x));
    *v = kept;
    taken
}

/// One generation of library threads.
pub(crate) struct Runtime {
    stamp: ForkStamp,
    threads: Mutex<Threads>,
    /// Signalled (under `threads`) when a bounded thread's body returns.
    bounded_ended: Arc<Condvar>,
    /// The services of this generation, started lazily (`None` inside: it
    /// could not be started, and will not be retried).
    slots: [OnceLock<Option<Box<dyn Any + Send + Sync>>>; SLOTS],
}

impl Runtime {
    fn new(stamp: ForkStamp) -> Runtime {
        Runtime {
            stamp,
            threads: Mutex::new(Threads::default()),
            bounded_ended: Arc::new(Condvar::new()),
            slots: Default::default(),
        }
    }

    /// The service in `slot`, started with `init` on first use. `None` if
    /// it could not be started. `T` is the same type for every call of one
    /// slot (its owning module's).
    pub(crate) fn service<T: Any + Send + Sync>(
        &self,
        slot: Slot,
        init: impl FnOnce() -> Option<T>,
    ) -> Option<&T> {
        self.slots[slot as usize]
            .get_or_init(|| init().map(|t| Box::new(t) as Box<dyn Any + Send + Sync>))
            .as_ref()
            .and_then(|b| b.downcast_ref::<T>())
    }

    /// The service in `slot` if it was started; never starts it.
    pub(crate) fn started<T: Any + Send + Sync>(&self, slot: Slot) -> Option<&T> {
        self.slots[slot as usize].get()?.as_ref()?.downcast_ref::<T>()
    }

    /// Whether this generation was shut down (its last user dropped).
    pub(crate) fn is_stopped(&self) -> bool {
        lock(&self.threads).stopped
    }

    /// Register a service to stop at shutdown; `false` if already shut down.
    pub(crate) fn register(&self, service: Arc<dyn Service>) -> bool {
        let mut t = lock(&self.threads);
        if t.stopped {
            return false;
        }
        t.services.push(service);
        true
    }

    /// Start a library thread of this generation (joined at shutdown);
    /// `false` if shut down already or the thread could not be created.
    pub(crate) fn spawn(&self, name: &str, f: Box<dyn FnOnce() + Send>) -> bool {
        let mut t = lock(&self.threads);
        if t.stopped {
            return false;
        }
        t.reap();
        let spawned = spawn_named(
            name,
            Box::new(move || {
                set_library_thread(true);
                f();
            }),
        );
        match spawned {
            Ok(h) => {
                t.handles.push(h);
                true
            }
            Err(_) => false,
        }
    }

    /// Start a short-lived library thread that may block in a call
    /// nothing can interrupt (`getaddrinfo`): shutdown waits for it at
    /// most [`BOUNDED_JOIN`], then detaches it. `f` must hold nothing that
    /// needs the generation alive. An error if shut down already or the
    /// thread could not be created.
    pub(crate) fn spawn_bounded(&self, name: &str, f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        let mut t = lock(&self.threads);
        if t.stopped {
            return Err(std::io::Error::other("the client was freed"));
        }
        t.reap();
        let done = Arc::new(AtomicBool::new(false));
        let (d, ended) = (Arc::clone(&done), Arc::clone(&self.bounded_ended));
        let h = spawn_named(
            name,
            Box::new(move || {
                set_library_thread(true);
                f();
                d.store(true, Ordering::SeqCst);
                ended.notify_all();
            }),
        )?;
        t.bounded.push((h, done));
        Ok(())
    }

    /// Stop every service and join every thread (detach them instead when
    /// called on a library thread, which cannot join itself); bounded
    /// threads still running [`BOUNDED_JOIN`] after the start are detached.
    fn shutdown(&self) {
        let bound = Instant::now() + BOUNDED_JOIN;
        let (services, handles) = {
            let mut t = lock(&self.threads);
            t.stopped = true;
            (std::mem::take(&mut t.services), std::mem::take(&mut t.handles))
        };
        for s in &services {
            s.stop();
        }
        if on_library_thread() {
            return; // dropping the handles detaches the threads
        }
        for h in handles {
            let _ = h.join();
        }
        let bounded = {
            let mut t = lock(&self.threads);
            loop {
                let left = bound.saturating_duration_since(Instant::now());
                if left.is_zero() || t.bounded.iter().all(|(_, d)| d.load(Ordering::SeqCst)) {
                    break std::mem::take(&mut t.bounded);
                }
                // The flag is set before the notify, both outside the lock:
                // re-check at least every 10 ms instead of relying on it.
                let wait = left.min(Duration::from_millis(10));
                t = self
                    .bounded_ended
                    .wait_timeout(t, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        for (h, done) in bounded {
            if done.load(Ordering::SeqCst) {
                let _ = h.join(); // its body returned: the join is prompt
            } // else dropped: detached, still inside the resolver
        }
    }
}

/// Start a bounded thread ([`Runtime::spawn_bounded`]) in the current
/// generation: for a blocking call's name resolution, which runs on the
/// caller's thread and has no handle of its runtime (its client belongs to
/// the current generation). Without a current generation (none, or a
/// forked child's inherited one) the thread is detached.
pub(crate) fn spawn_resolver(f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    const NAME: &str = "dflockd-resolve";
    let stamp = ForkStamp::now();
    let rt = REGISTRY.with(|r| {
        (r.current_epoch == stamp.epoch())
            .then(|| r.current_runtime.as_ref().and_then(Weak::upgrade))
            .flatten()
    });
    match rt {
        Some(rt) if !rt.is_stopped() => rt.spawn_bounded(NAME, f),
        _ => spawn_named(NAME, f).map(drop),
    }
}

/// Held by every user-facing handle of one generation (clients and
/// leases); dropping the last one shuts the generation down.
pub(crate) struct Users {
    runtime: Arc<Runtime>,
}

impl Users {
    /// Join the current generation, or start a new one.
    pub(crate) fn join() -> Arc<Users> {
        let stamp = ForkStamp::now(); // registers the atfork handlers first
        let (users, parent) = REGISTRY.with(|r| {
            let mut parent = None;
            if r.current_epoch != stamp.epoch() {
                // Forked since: the parent's generation is not ours to join
                // (kept reachable, never dropped here).
                parent = r.current.take();
                r.current_epoch = stamp.epoch();
            }
            if let Some(users) = r.current.as_ref().and_then(Weak::upgrade) {
                return (users, parent);
            }
            let users = Arc::new(Users {
                runtime: Arc::new(Runtime::new(stamp)),
            });
            r.current = Some(Arc::downgrade(&users));
            r.current_runtime = Some(Arc::downgrade(&users.runtime));
            (users, parent)
        });
        if let Some(parent) = parent {
            bury(parent);
        }
        users
    }

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        if self.runtime.stamp.is_current() {
            self.runtime.shutdown();
        } else {
            // The parent's generation, in a child: never lock or join it.
            bury(Arc::clone(&self.runtime));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Probe {
        stop: AtomicBool,
        stops: AtomicUsize,
    }
    impl Service for Probe {
        fn stop(&self) {
            self.stops.fetch_add(1, Ordering::SeqCst);
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn last_user_stops_and_joins() {
        // A private generation (the registry's is shared with other tests).
        let users = Arc::new(Users {
            runtime: Arc::new(Runtime::new(ForkStamp::now())),
        });
        let rt = Arc::clone(users.runtime());
        let probe = Arc::new(Probe {
            stop: AtomicBool::new(false),
            stops: AtomicUsize::new(0),
        });
        assert!(rt.register(probe.clone()));
        let ended = Arc::new(AtomicBool::new(false));
        let (p, e) = (Arc::clone(&probe), Arc::clone(&ended));
        assert!(rt.spawn(
            "dflockd-probe",
            Box::new(move || {
                assert!(on_library_thread());
                while !p.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                e.store(true, Ordering::SeqCst);
            })
        ));
        assert!(!on_library_thread());
        let second = Arc::clone(&users);
        drop(users);
        assert!(!rt.is_stopped());
        drop(second);
        assert!(rt.is_stopped());
        assert!(ended.load(Ordering::SeqCst), "joined before drop returned");
        assert_eq!(probe.stops.load(Ordering::SeqCst), 1);
        assert!(!rt.spawn("dflockd-late", Box::new(|| {})));
        assert!(!rt.register(probe.clone()));
    }

    #[test]
    fn a_stuck_bounded_thread_delays_the_last_drop_at_most_the_bound() {
        let users = Arc::new(Users {
            runtime: Arc::new(Runtime::new(ForkStamp::now())),
        });
        let rt = Arc::clone(users.runtime());
        // One resolver answers at once, one hangs (until the test lets go).
        let quick = Arc::new(AtomicBool::new(false));
        let q = Arc::clone(&quick);
        rt.spawn_bounded(
            "dflockd-resolve",
            Box::new(move || q.store(true, Ordering::SeqCst)),
        )
        .expect("spawn");
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        rt.spawn_bounded(
            "dflockd-resolve",
            Box::new(move || {
                let _ = stuck.recv_timeout(std::time::Duration::from_secs(30));
            }),
        )
        .expect("spawn");
        let until = Instant::now() + std::time::Duration::from_secs(10);
        while !quick.load(Ordering::SeqCst) {
            assert!(Instant::now() < until, "the quick thread did not run");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let t = Instant::now();
        drop(users);
        let took = t.elapsed();
        assert!(took >= BOUNDED_JOIN, "waited for the stuck thread: {took:?}");
        assert!(
            took < BOUNDED_JOIN * 4,
            "but not much longer than the bound: {took:?}"
        );
        assert!(lock(&rt.threads).bounded.is_empty(), "joined or detached");
        assert!(rt.spawn_bounded("dflockd-late", Box::new(|| {})).is_err());
        drop(release); // the detached thread ends
    }

    #[test]
    fn clients_of_one_time_share_a_generation() {
        let a = Users::join();
        let b = Users::join();
        assert!(Arc::ptr_eq(a.runtime(), b.runtime()));
    }
}
