//! Fork: the process's fork epoch, the stamp every handle carries, and the
//! one spin flag the `pthread_atfork` handlers hold across a fork (a leaf
//! above `thread`).
//!
//! `pthread_atfork` handlers (registered once, before the first
//! [`ForkStamp`] is taken) bump a process-wide fork epoch in the child.
//! Every client, lease, connection and queue records its [`ForkStamp`]; an
//! operation on one from an older epoch fails with [`ErrorKind::Forked`]
//! before locking anything of it. Inherited objects freed in the child are
//! *buried* ([`bury`]): kept reachable from a static (so leak checkers see
//! them as reachable) and never dropped, so no mutex of theirs is taken, no
//! request is sent and no socket shut down (which would break the parent's
//! connection).
//!
//! State that must stay consistent across a fork (the runtime's registry of
//! generations, the buried objects) lives in a [`ForkGuarded`] cell: all of
//! them share one spin flag that the atfork *prepare* handler takes and the
//! *parent*/*child* handlers release, so no other thread can hold it at the
//! moment of fork (a `Mutex` held by a parent thread would stay locked in
//! the child forever).

use std::any::Any;
use std::cell::UnsafeCell;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::thread::set_library_thread;
use crate::{Error, ErrorKind, Result};

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

    /// The fork epoch this stamp was taken in.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
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
        // SAFETY: three plain `extern "C"` handlers that only touch atomics
        // and a thread-local Cell (no allocation, no locks other than the
        // spin flag).
        unsafe {
            libc::pthread_atfork(Some(atfork_prepare), Some(atfork_parent), Some(atfork_child));
        }
    });
}

/// The one flag every [`ForkGuarded`] cell is locked with.
static FLAG: AtomicBool = AtomicBool::new(false);

fn acquire() {
    while FLAG
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn release() {
    FLAG.store(false, Ordering::Release);
}

extern "C" fn atfork_prepare() {
    acquire();
}

extern "C" fn atfork_parent() {
    release();
}

extern "C" fn atfork_child() {
    // The only thread of the child; it took the flag in prepare. The new
    // epoch makes every inherited handle refuse work (and the runtime start
    // a fresh generation). Nothing is allocated or freed in this handler.
    FORK_EPOCH.fetch_add(1, Ordering::AcqRel);
    set_library_thread(false);
    release();
}

/// Data that stays consistent across fork: reached only with the shared
/// spin flag held, which no thread holds at the moment of fork. Held only
/// for a few instructions (and an allocation), never across user code or a
/// join; not reentrant (no `with` inside another `with`).
pub(crate) struct ForkGuarded<T> {
    cell: UnsafeCell<T>,
}

// SAFETY: `cell` is only reached with FLAG held (or, in the atfork child
// handler, by the one thread left).
unsafe impl<T: Send> Sync for ForkGuarded<T> {}

impl<T> ForkGuarded<T> {
    pub(crate) const fn new(value: T) -> ForkGuarded<T> {
        ForkGuarded {
            cell: UnsafeCell::new(value),
        }
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        acquire();
        // The guard releases even if `f` panics (it does not in practice:
        // an allocation failure aborts).
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                release();
            }
        }
        let _release = Release;
        // SAFETY: exclusive while the flag is held.
        f(unsafe { &mut *self.cell.get() })
    }
}

/// Objects inherited through fork and freed here: never dropped.
static BURIED: ForkGuarded<Vec<Box<dyn Any + Send>>> = ForkGuarded::new(Vec::new());

/// Keep an object inherited through fork alive forever, reachable from a
/// static, without dropping it (its locks may be held by the parent's
/// vanished threads, its drop would send requests or shut sockets down).
pub(crate) fn bury<T: Send + 'static>(inherited: T) {
    let boxed: Box<dyn Any + Send> = Box::new(inherited);
    BURIED.with(|b| b.push(boxed));
}

#[cfg(test)]
mod tests {
    use super::*;

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
