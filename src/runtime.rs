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
//! then detached and exit on their own. The next client starts a new
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
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;

use crate::fork::{ForkGuarded, ForkStamp, bury};
use crate::sync::lock;
use crate::thread::{on_library_thread, set_library_thread, spawn_named};

// ---- the registry ----------------------------------------------------------

struct Registry {
    /// The generation new clients join, while any of its users lives and
    /// while `current_epoch` is this process's fork epoch.
    current: Option<Weak<Users>>,
    current_epoch: u64,
}

static REGISTRY: ForkGuarded<Registry> = ForkGuarded::new(Registry {
    current: None,
    current_epoch: 0,
});

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
    /// The event engine (`src/engine/`).
    Engine = 1,
}

const SLOTS: usize = 2;

#[derive(Default)]
struct Threads {
    stopped: bool,
    services: Vec<Arc<dyn Service>>,
    handles: Vec<JoinHandle<()>>,
}

/// One generation of library threads.
pub(crate) struct Runtime {
    stamp: ForkStamp,
    threads: Mutex<Threads>,
    /// The services of this generation, started lazily (`None` inside: it
    /// could not be started, and will not be retried).
    slots: [OnceLock<Option<Box<dyn Any + Send + Sync>>>; SLOTS],
}

impl Runtime {
    fn new(stamp: ForkStamp) -> Runtime {
        Runtime {
            stamp,
            threads: Mutex::new(Threads::default()),
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
    pub(crate) fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> bool {
        let mut t = lock(&self.threads);
        if t.stopped {
            return false;
        }
        // Forget threads that already ended (resolvers come and go).
        t.handles.retain(|h| !h.is_finished());
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

    /// Stop every service and join every thread (detach them instead when
    /// called on a library thread, which cannot join itself).
    fn shutdown(&self) {
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
        assert!(rt.spawn("dflockd-probe", move || {
            assert!(on_library_thread());
            while !p.stop.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            e.store(true, Ordering::SeqCst);
        }));
        assert!(!on_library_thread());
        let second = Arc::clone(&users);
        drop(users);
        assert!(!rt.is_stopped());
        drop(second);
        assert!(rt.is_stopped());
        assert!(ended.load(Ordering::SeqCst), "joined before drop returned");
        assert_eq!(probe.stops.load(Ordering::SeqCst), 1);
        assert!(!rt.spawn("dflockd-late", || {}));
        assert!(!rt.register(probe.clone()));
    }

    #[test]
    fn clients_of_one_time_share_a_generation() {
        let a = Users::join();
        let b = Users::join();
        assert!(Arc::ptr_eq(a.runtime(), b.runtime()));
    }
}
