//! The process's library threads, their lifetime, and fork handling.
//!
//! **Lifetime.** Library threads (the renewal scheduler's timer, workers
//! and notifier, async acquires; later the event engine) belong to one
//! [`Runtime`]: a *generation* shared by every client and lease alive at
//! the same time. Each user-facing handle ([`crate::client::Client`],
//! [`crate::lease::Lease`]) holds an [`Arc<Users>`]; when the last one is
//! dropped the runtime stops its services ([`Service::stop`]) and joins
//! their threads before that drop returns, unless the drop runs on a
//! library thread (e.g. a client freed inside a lost callback): a thread
//! cannot join itself, so the threads are then detached and exit on their
//! own. The next client starts a new generation. Library threads hold
//! leases and clients only through `Arc<Shared>` / `Arc<ClientInner>`,
//! never through `Users`, so a renewal in flight never makes a worker the
//! last user (which could not join its siblings).
//!
//! A service registers itself with [`Runtime::register`] and starts its
//! threads with [`Runtime::spawn`]; that is all a new subsystem (an event
//! engine) needs to end with the last client and to be forgotten at fork.
//!
//! **Fork.** `pthread_atfork` handlers (registered once, before the first
//! [`ForkStamp`] is taken) bump a process-wide fork epoch in the child and
//! start the registry afresh there, without touching the parent's runtime:
//! its threads do not exist in the child and its mutexes may be held
//! forever by them, so it is leaked, never locked, never joined. Every
//! client and connection records its [`ForkStamp`]; any operation on one
//! from an older epoch fails with [`ErrorKind::Forked`] before locking
//! anything of it. Inherited objects freed in the child are *buried*: kept
//! reachable from a static (so leak checkers see them as reachable) and
//! never dropped, so no mutex of theirs is taken, no request is sent and no
//! socket shut down (which would break the parent's connection).
//!
//! The registry is guarded by a spin flag that the atfork *prepare* handler
//! takes and the *parent*/*child* handlers release, so no other thread can
//! hold it at the moment of fork.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::thread::JoinHandle;

use crate::lease::lock;
use crate::renewal::Scheduler;
use crate::{Error, ErrorKind, Result};

// ---- fork epoch ----------------------------------------------------------

/// Bumped in the child of every fork (by the atfork child handler).
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

/// When (which fork epoch, which process) an object was created.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForkStamp {
    epoch: u64,
    pid: u32,
}

impl ForkStamp {
    /// The current epoch (registering the atfork handlers first, so every
    /// later fork is seen).
    pub(crate) fn now() -> ForkStamp {
        register_atfork();
        ForkStamp {
            epoch: FORK_EPOCH.load(Ordering::Acquire),
            pid: std::process::id(),
        }
    }

    /// Whether the object was created in this process (not inherited
    /// through fork). One atomic load; takes no lock.
    pub(crate) fn is_current(&self) -> bool {
        FORK_EPOCH.load(Ordering::Acquire) == self.epoch
    }

    /// `Err(Forked)` for an object inherited through fork; `what` names it
    /// ("client", "lease", "connection").
    pub(crate) fn check(&self, what: &str) -> Result<()> {
        if self.is_current() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Forked,
            format!(
                "this {what} was created in process {} before fork(); create a new client in the child",
                self.pid
            ),
        ))
    }
}

fn register_atfork() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        // SAFETY: three plain `extern "C"` handlers that only touch atomics,
        // the registry and a thread-local Cell (no allocation, no locks
        // other than the registry's spin flag).
        unsafe {
            libc::pthread_atfork(Some(atfork_prepare), Some(atfork_parent), Some(atfork_child));
        }
    });
}

extern "C" fn atfork_prepare() {
    REGISTRY.acquire();
}

extern "C" fn atfork_parent() {
    REGISTRY.release();
}

extern "C" fn atfork_child() {
    // The only thread of the child; it took the registry in prepare.
    // The registry's `current` now names the parent's generation; the new
    // epoch makes Users::join start afresh (and bury that one: it is never
    // locked or joined here). Nothing is allocated or freed in this handler.
    FORK_EPOCH.fetch_add(1, Ordering::AcqRel);
    LIBRARY_THREAD.with(|f| f.set(false));
    REGISTRY.release();
}

// ---- the registry ----------------------------------------------------------

struct Registry {
    /// The generation new clients join, while any of its users lives and
    /// while `current_epoch` is this process's fork epoch.
    current: Option<Weak<Users>>,
    current_epoch: u64,
    /// Objects inherited through fork and freed here: never dropped.
    buried: Vec<Box<dyn Any + Send>>,
}

/// A spin flag around the registry: unlike a `std::sync::Mutex`, the atfork
/// handlers can take it before fork and release it in both processes.
/// Held only for a few instructions (and an allocation), never across user
/// code or a join.
struct SpinLocked {
    busy: AtomicBool,
    reg: UnsafeCell<Registry>,
}

// SAFETY: `reg` is only reached with `busy` held (or, in the atfork child
// handler, by the one thread left).
unsafe impl Sync for SpinLocked {}

static REGISTRY: SpinLocked = SpinLocked {
    busy: AtomicBool::new(false),
    reg: UnsafeCell::new(Registry {
        current: None,
        current_epoch: 0,
        buried: Vec::new(),
    }),
};

impl SpinLocked {
    fn acquire(&self) {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// # Safety
    /// The caller holds the flag.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_mut(&self) -> &mut Registry {
        // SAFETY: exclusive while the flag is held (caller's contract).
        unsafe { &mut *self.reg.get() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        self.acquire();
        // SAFETY: just acquired. `f` does not panic in practice (an
        // allocation failure aborts); the guard releases even if it does.
        struct Release<'a>(&'a SpinLocked);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let _release = Release(self);
        f(unsafe { self.get_mut() })
    }
}

/// Keep an object inherited through fork alive forever, reachable from a
/// static, without dropping it (its locks may be held by the parent's
/// vanished threads, its drop would send requests or shut sockets down).
pub(crate) fn bury<T: Send + 'static>(inherited: T) {
    REGISTRY.with(|r| r.buried.push(Box::new(inherited)));
}

// ---- generations ---------------------------------------------------------

/// A part of the library that runs threads of a [`Runtime`].
/// Start a named thread running `f`. Every thread of the crate (the test
/// server's too) is spawned with a `Box<dyn FnOnce() + Send>` body, so the
/// spawn machinery is instantiated once: each distinct closure type would
/// add ~3 KB to the shipped library.
pub(crate) fn spawn_named(name: &str, f: Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

pub(crate) trait Service: Send + Sync {
    /// Ask every thread of the service to return soon. Must not block: the
    /// runtime joins the threads afterwards. Work already queued that the
    /// user must see (lost callbacks) should still be done before exiting.
    fn stop(&self);
}

thread_local! {
    /// Set on every thread a runtime spawns.
    static LIBRARY_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs on a library thread (of any generation).
pub(crate) fn on_library_thread() -> bool {
    LIBRARY_THREAD.with(Cell::get)
}

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
    /// The renewal scheduler, started on the first held lease (`None`: its
    /// threads could not be created; then no lease may be held).
    pub(crate) renewal: OnceLock<Option<Arc<Scheduler>>>,
    /// The event engine (src/engine/), started on the first held lease.
    pub(crate) engine: OnceLock<Option<Arc<crate::engine::Engine>>>,
}

impl Runtime {
    fn new(stamp: ForkStamp) -> Runtime {
        Runtime {
            stamp,
            threads: Mutex::new(Threads::default()),
            renewal: OnceLock::new(),
            engine: OnceLock::new(),
        }
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
        // Forget threads that already ended (async acquires come and go).
        t.handles.retain(|h| !h.is_finished());
        let spawned = spawn_named(
            name,
            Box::new(move || {
                LIBRARY_THREAD.with(|flag| flag.set(true));
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
        REGISTRY.with(|r| {
            if r.current_epoch != stamp.epoch {
                // Forked since: the parent's generation is not ours to join
                // (kept reachable, never dropped here).
                if let Some(parent) = r.current.take() {
                    r.buried.push(Box::new(parent));
                }
                r.current_epoch = stamp.epoch;
            }
            if let Some(users) = r.current.as_ref().and_then(Weak::upgrade) {
                return users;
            }
            let users = Arc::new(Users {
                runtime: Arc::new(Runtime::new(stamp)),
            });
            r.current = Some(Arc::downgrade(&users));
            users
        })
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
    use std::sync::atomic::AtomicUsize;

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

    #[test]
    fn stamps_check_the_epoch() {
        let s = ForkStamp::now();
        assert!(s.is_current());
        assert!(s.check("client").is_ok());
        let old = ForkStamp {
            epoch: s.epoch.wrapping_sub(1),
            pid: 42,
        };
        let e = old.check("lease").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Forked);
        assert!(e.message().contains("process 42 before fork()"), "{e}");
    }
}
