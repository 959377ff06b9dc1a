//! The event engine: one epoll thread per runtime generation, the place
//! where the library waits on many connections at once.
//!
//! Today it watches the home connection of every held lease for hang-up
//! (EOF or reset: `EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`), so a lease whose
//! connection the server dropped stops being reported held at once instead
//! of at its next renewal (the server releases a lease when its connection
//! closes). It never reads or writes those sockets: the blocking paths keep
//! owning the byte stream, and a hang-up only hands the lease to the
//! renewal scheduler for an immediate renewal on a fresh connection, which
//! either confirms the lease (a server without auto-release still has it)
//! or ends it as lost. Issue 9 grows this thread into the full engine
//! (renewals as timers, evented acquire and release, the completion queue
//! of `events.rs`), driving the same sans-I/O `transport::Wire`.
//!
//! Registrations are one-shot (`EPOLLONESHOT`) and keyed by (slot,
//! generation) in the event's `u64`, so an event for a registration that
//! was removed (its lease released, lost or re-homed) or whose fd number
//! was reused is recognised as stale and ignored.

pub mod events;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::lease::{Shared, lock};
use crate::log::{Level, log};
use crate::runtime::{Runtime, Service};

/// The token of the engine's own wake-up eventfd.
const WAKER: u64 = u64::MAX;

/// What a registration is for: the lease (and which grant of it) whose
/// home connection is watched.
struct Watched {
    lease: Weak<Shared>,
    generation: u64,
}

/// Registrations by slot; a slot's generation changes on every reuse.
#[derive(Default)]
struct Slots {
    entries: Vec<(u32, Option<Watched>)>,
    free: Vec<u32>,
}

pub(crate) struct Engine {
    epoll: OwnedFd,
    waker: OwnedFd,
    stopped: AtomicBool,
    slots: Mutex<Slots>,
}

/// A registration; dropping it removes the watch.
pub(crate) struct Watch {
    engine: Weak<Engine>,
    fd: RawFd,
    slot: u32,
    gen_: u32,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.unwatch(self);
        }
    }
}

fn token(slot: u32, gen_: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(gen_)
}

impl Engine {
    fn new() -> Option<Engine> {
        // SAFETY: plain syscalls; the returned fds are owned below.
        let (ep, ev) = unsafe {
            (
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK),
            )
        };
        if ep < 0 || ev < 0 {
            // SAFETY: closing only what was opened.
            unsafe {
                if ep >= 0 {
                    libc::close(ep);
                }
                if ev >= 0 {
                    libc::close(ev);
                }
            }
            return None;
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (epoll, waker) = unsafe { (OwnedFd::from_raw_fd(ep), OwnedFd::from_raw_fd(ev)) };
        let mut e = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKER,
        };
        // SAFETY: valid epoll fd, valid eventfd, valid event struct.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut e) };
        (rc == 0).then_some(Engine {
            epoll,
            waker,
            stopped: AtomicBool::new(false),
            slots: Mutex::new(Slots::default()),
        })
    }

    /// Watch `fd` (the home connection of `lease`'s grant `generation`)
    /// for hang-up. `None` if the fd cannot be registered.
    pub(crate) fn watch(self: &Arc<Self>, lease: &Arc<Shared>, generation: u64, fd: RawFd) -> Option<Watch> {
        let (slot, gen_) = {
            let mut s = lock(&self.slots);
            let slot = match s.free.pop() {
                Some(slot) => slot,
                None => {
                    s.entries.push((0, None));
                    u32::try_from(s.entries.len() - 1).ok()?
                }
            };
            let entry = &mut s.entries[slot as usize];
            entry.0 = entry.0.wrapping_add(1);
            entry.1 = Some(Watched {
                lease: Arc::downgrade(lease),
                generation,
            });
            (slot, entry.0)
        };
        let mut e = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token(slot, gen_),
        };
        // SAFETY: valid epoll fd; `fd` is an open socket owned by the
        // lease's home connection; valid event struct.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut e) };
        let watch = Watch {
            engine: Arc::downgrade(self),
            fd,
            slot,
            gen_,
        };
        if rc != 0 {
            drop(watch); // frees the slot (the DEL fails harmlessly)
            return None;
        }
        Some(watch)
    }

    fn unwatch(&self, w: &Watch) {
        {
            let mut s = lock(&self.slots);
            if let Some(entry) = s.entries.get_mut(w.slot as usize) {
                if entry.0 == w.gen_ {
                    entry.1 = None;
                    s.free.push(w.slot);
                }
            }
        }
        // SAFETY: valid epoll fd; the watched fd is still open (the Watch
        // is dropped before its connection); ENOENT after a one-shot fired
        // or EBADF are harmless.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                w.fd,
                std::ptr::null_mut(),
            );
        }
    }

    fn run(&self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
        while !self.stopped.load(Ordering::SeqCst) {
            // SAFETY: valid epoll fd; `events` has room for 64 entries.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, -1) };
            if n < 0 {
                continue; // EINTR
            }
            for e in &events[..n as usize] {
                let key = e.u64;
                if key == WAKER {
                    continue;
                }
                let (slot, gen_) = ((key >> 32) as u32, key as u32);
                let watched = {
                    let mut s = lock(&self.slots);
                    match s.entries.get_mut(slot as usize) {
                        Some(entry) if entry.0 == gen_ => entry.1.take(),
                        _ => None,
                    }
                };
                // One-shot: this registration is spent. The slot is freed
                // when its Watch is dropped (the lease is released, lost or
                // re-homed), so a late drop never frees a reused slot.
                if let Some(w) = watched {
                    if let Some(lease) = w.lease.upgrade() {
                        lease.hung_up(w.generation);
                    }
                }
            }
        }
    }
}

impl Service for Engine {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(
                self.waker.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// The engine of `rt`, started on first use; `None` if it cannot run (then
/// hang-ups are noticed at the next renewal, as before).
pub(crate) fn engine(rt: &Runtime) -> Option<&Arc<Engine>> {
    rt.engine
        .get_or_init(|| {
            let engine = Arc::new(Engine::new()?);
            if !rt.register(Arc::clone(&engine) as Arc<dyn Service>) {
                return None;
            }
            let e = Arc::clone(&engine);
            if !rt.spawn("dflockd-engine", move || e.run()) {
                log!(
                    Level::Warn,
                    "cannot start the engine thread; hang-ups are noticed at renewal"
                );
                return None;
            }
            Some(engine)
        })
        .as_ref()
}
