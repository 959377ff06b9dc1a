//! The completion queue: events for the application to pull, behind one
//! file descriptor its own event loop can poll (epoll, libevent, asyncio,
//! Go's netpoller, Ruby's `IO#wait_readable`).
//!
//! An eventfd is written once when the queue goes from empty to non-empty
//! and read (reset) when a poll empties it, both under the queue's lock, so
//! it is readable exactly while events are waiting: no lost wake-up
//! between a check and a wait, no counter overflow. No library thread ever
//! calls application code on this path: events are only pushed here.
//!
//! The fd the application polls is an epoll set holding that eventfd and,
//! one-shot, the sockets of the evented operations reporting here whose
//! replies are awaited (`Queue::arm`). A reply thus wakes the
//! application's own loop directly, and [`Events::poll`] reads it on the
//! caller's thread (non-blocking) and runs what follows through the engine
//! (`Ready`): the next request, or the event. No library thread hands
//! anything over in between; the engine's thread keeps the deadlines.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::fork::ForkStamp;
use crate::protocol::Stats;
use crate::sync::lock;
use crate::{Error, ErrorKind, Result};

/// What happened. Values are stable (the C enum mirrors them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// An acquire started with [`Lease::acquire_start`](crate::lease::Lease::acquire_start)
    /// (or `try_acquire_start`, `enqueue_start`, `wait_start`) was granted.
    Acquired = 1,
    /// That acquire ended without the lease (the event's error says why;
    /// [`ErrorKind::Timeout`] for a try that found the key taken).
    AcquireFailed = 2,
    /// A release started with [`Lease::release_start`](crate::lease::Lease::release_start) completed.
    Released = 3,
    /// That release failed.
    ReleaseFailed = 4,
    /// A watched lease was lost ([`crate::lease::Lease::watch_lost`]).
    Lost = 5,
    /// An enqueue started with [`Lease::enqueue_start`](crate::lease::Lease::enqueue_start)
    /// joined the queue: call [`Lease::wait_start`](crate::lease::Lease::wait_start)
    /// (or `wait`) next. (One that acquired at once reports `Acquired`.)
    Enqueued = 6,
    /// A stats request started with [`Client::stats_start`](crate::client::Client::stats_start)
    /// was answered: the event's `stats` holds the reply.
    Stats = 7,
    /// That stats request failed (the event's error says why).
    StatsFailed = 8,
    /// A watched held lease is in doubt: its connection went (in cluster
    /// mode, a failover) and it is not reported held until a renewal
    /// elsewhere confirms it (`Confirmed`) or the server refuses it
    /// (`Lost`). The event's error says what happened to the connection.
    Doubted = 9,
    /// A doubted lease was confirmed by the server: held again.
    Confirmed = 10,
}

/// One completion: the caller's tag, what happened, the error when it is a
/// failure or a loss, and the reply of a `Stats` event.
#[derive(Clone, Debug)]
pub struct Event {
    /// The tag the caller gave when starting the operation.
    pub tag: u64,
    /// What happened.
    pub kind: EventKind,
    /// The error of a failure or a loss; `None` on success.
    pub error: Option<Error>,
    /// The server's `stats` reply (`Some` exactly for [`EventKind::Stats`]).
    pub stats: Option<Stats>,
}

/// Who reads the replies a queue's fd reported ready: the engine, which
/// ignores ids it no longer knows (a task that ended meanwhile).
pub(crate) trait Ready: Send + Sync {
    /// Socket readiness `bits` for task `id`.
    fn ready(&self, id: u64, bits: u32);
}

/// The eventfd's token in the queue's epoll set (task tokens are
/// `driver index << DRIVER_SHIFT | id`, ids below 2^56).
const EVENTFD_TOKEN: u64 = u64::MAX;
const DRIVER_SHIFT: u32 = 56;
/// Socket events taken from the set per `epoll_wait`.
const READY_BATCH: usize = 16;
/// At most this many batches per poll.
const READY_ROUNDS: usize = 16;

/// The waiting events and whether the eventfd is signalled for them.
struct Waiting {
    events: VecDeque<Event>,
    signalled: bool,
    /// When the application last polled (for the engine's sweep).
    polled: Instant,
}

pub(crate) struct Queue {
    events: Mutex<Waiting>,
    /// Threads in [`Queue::read_ready`]: each takes the events afterwards,
    /// so a push meanwhile leaves the eventfd alone (two syscalls per event
    /// saved); `take` signals what it leaves behind.
    draining: AtomicUsize,
    fd: OwnedFd,
    /// The epoll set the application polls: `fd` and awaited sockets.
    epoll: OwnedFd,
    /// The engines that armed sockets here (one per library generation;
    /// an index into this list rides in the token's top bits).
    drivers: Mutex<Vec<Weak<dyn Ready>>>,
    /// Inherited through fork, a queue is inert: its eventfd is shared with
    /// the parent (resetting it would steal the parent's wake-up) and its
    /// lock may be held forever by a parent thread.
    stamp: ForkStamp,
}

/// A thread-safe completion queue (cheap to clone; clones share it).
#[derive(Clone)]
pub struct Events {
    pub(crate) queue: Arc<Queue>,
}

impl Events {
    /// A new, empty queue with its eventfd.
    pub fn new() -> Result<Events> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::io("events: eventfd", &std::io::Error::last_os_error()));
        }
        // SAFETY: just created, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscall; the fd is owned below.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(Error::io(
                "events: epoll_create1",
                &std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: just created, owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut e = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: EVENTFD_TOKEN,
        };
        // SAFETY: both fds are live and ours; valid event struct.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut e) } != 0 {
            return Err(Error::io("events: epoll_ctl", &std::io::Error::last_os_error()));
        }
        Ok(Events {
            queue: Arc::new(Queue {
                events: Mutex::new(Waiting {
                    events: VecDeque::new(),
                    signalled: false,
                    polled: Instant::now(),
                }),
                draining: AtomicUsize::new(0),
                fd,
                epoll,
                drivers: Mutex::new(Vec::new()),
                stamp: ForkStamp::now(),
            }),
        })
    }

    /// The descriptor that is readable while events are waiting (or a reply
    /// for one of them arrived: readiness is a hint). Only poll it
    /// (epoll/poll/select); never read it: [`Events::poll`] does.
    pub fn fd(&self) -> RawFd {
        self.queue.epoll.as_raw_fd()
    }

    /// Take up to `max` waiting events, oldest first; never blocks. Replies
    /// that arrived for operations reporting here are read first, on this
    /// thread (non-blocking), which may queue their events or send their
    /// next request. Call it until it returns fewer than `max` before
    /// waiting on the fd again.
    pub fn poll(&self, max: usize) -> Vec<Event> {
        self.queue.take(max)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("fd", &self.fd()).finish()
    }
}

impl Queue {
    /// Queue an event; makes the fd readable if it is not (unless a
    /// thread draining this queue will take it).
    pub(crate) fn push(&self, event: Event) {
        if !self.stamp.is_current() {
            return;
        }
        let mut w = lock(&self.events);
        w.events.push_back(event);
        if !w.signalled && self.draining.load(Ordering::SeqCst) == 0 {
            self.signal(&mut w, true);
        }
    }

    /// Make the eventfd readable (`on`) or not; under the events lock.
    fn signal(&self, w: &mut Waiting, on: bool) {
        if on {
            let one: u64 = 1;
            // SAFETY: 8 bytes from a live u64 to our eventfd (non-blocking;
            // it cannot be full: it is written only when not signalled).
            unsafe {
                libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        } else {
            let mut counter: u64 = 0;
            // SAFETY: reading 8 bytes into a live u64 from our eventfd.
            unsafe {
                libc::read(self.fd.as_raw_fd(), (&mut counter as *mut u64).cast(), 8);
            }
        }
        w.signalled = on;
    }

    /// Await a reply on socket `fd` for task `id` of `driver` here:
    /// readable (or hang-up), one-shot, so the application's poll of this
    /// queue wakes on it and [`Queue::take`] hands it to `driver`. False if
    /// it cannot be registered (the caller then has the engine watch it).
    pub(crate) fn arm(&self, driver: &Weak<dyn Ready>, fd: RawFd, id: u64) -> bool {
        if !self.stamp.is_current() || id >= 1 << DRIVER_SHIFT {
            return false;
        }
        let index = {
            let mut d = lock(&self.drivers);
            match d.iter().position(|w| Weak::ptr_eq(w, driver)) {
                Some(i) => i,
                None => match d.iter().position(|w| w.strong_count() == 0) {
                    Some(i) => {
                        d[i] = Weak::clone(driver);
                        i
                    }
                    None if d.len() < 64 => {
                        d.push(Weak::clone(driver));
                        d.len() - 1
                    }
                    None => return false,
                },
            }
        };
        let mut e = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: (index as u64) << DRIVER_SHIFT | id,
        };
        let ep = self.epoll.as_raw_fd();
        // SAFETY: valid epoll fd; `fd` is an open socket the caller keeps
        // alive; valid event struct. MOD first: a socket armed here before
        // stays registered (disabled after it fired); ENOENT means this
        // socket is new to the set (a closed one left it on its own).
        unsafe {
            if libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, &mut e) == 0 {
                return true;
            }
            std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT)
                && libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut e) == 0
        }
    }

    /// Hand the sockets that became ready to their engines (which read the
    /// replies, on this thread).
    fn read_ready(&self) {
        if lock(&self.drivers).is_empty() {
            return;
        }
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; READY_BATCH];
        // Bounded: replies that keep coming wait for the next poll.
        for _ in 0..READY_ROUNDS {
            // SAFETY: valid epoll fd; room for READY_BATCH events; no wait.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    ready.as_mut_ptr(),
                    READY_BATCH as libc::c_int,
                    0,
                )
            };
            if n <= 0 {
                return;
            }
            for e in &ready[..n as usize] {
                let (token, bits) = (e.u64, e.events);
                if token == EVENTFD_TOKEN {
                    continue;
                }
                let index = (token >> DRIVER_SHIFT) as usize;
                let driver = lock(&self.drivers).get(index).and_then(Weak::upgrade);
                if let Some(driver) = driver {
                    driver.ready(token & ((1 << DRIVER_SHIFT) - 1), bits);
                }
            }
            if (n as usize) < READY_BATCH {
                return;
            }
        }
    }

    /// For the engine: read the replies that wait here if the application
    /// has not polled for `idle` (their operations then go on as if it had;
    /// their events wait for its next poll).
    pub(crate) fn read_ready_if_idle(&self, idle: Duration, now: Instant) {
        if !self.stamp.is_current() {
            return;
        }
        let polled = lock(&self.events).polled;
        if now.saturating_duration_since(polled) >= idle {
            self.read_ready();
        }
    }

    pub(crate) fn take(&self, max: usize) -> Vec<Event> {
        if !self.stamp.is_current() {
            return Vec::new();
        }
        self.draining.fetch_add(1, Ordering::SeqCst);
        self.read_ready();
        self.draining.fetch_sub(1, Ordering::SeqCst);
        let mut w = lock(&self.events);
        w.polled = Instant::now();
        let n = max.min(w.events.len());
        let out: Vec<Event> = w.events.drain(..n).collect();
        // Readable exactly while events wait (pushes during read_ready
        // left the signal to this).
        let left = !w.events.is_empty();
        if left != w.signalled {
            self.signal(&mut w, left);
        }
        out
    }
}

/// The event for a loss, as a watcher receives it.
pub(crate) fn lost(tag: u64, error: &Error) -> Event {
    Event {
        tag,
        kind: EventKind::Lost,
        error: Some(if error.kind() == ErrorKind::LeaseLost {
            error.clone()
        } else {
            Error::new(ErrorKind::LeaseLost, error.message().to_owned())
        }),
        stats: None,
    }
}

/// The event for a watched lease falling in doubt.
pub(crate) fn doubted(tag: u64, why: &Error) -> Event {
    Event {
        tag,
        kind: EventKind::Doubted,
        error: Some(why.clone()),
        stats: None,
    }
}

/// The event for a doubted lease confirmed.
pub(crate) fn confirmed(tag: u64) -> Event {
    Event {
        tag,
        kind: EventKind::Confirmed,
        error: None,
        stats: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn the_fd_is_readable_exactly_while_events_wait() {
        let q = Events::new().unwrap();
        assert!(!readable(q.fd()));
        assert!(q.poll(8).is_empty());
        for tag in 1..=3 {
            q.queue.push(lost(tag, &Error::new(ErrorKind::Io, "gone")));
        }
        assert!(readable(q.fd()));
        let first = q.poll(2);
        assert_eq!(first.iter().map(|e| e.tag).collect::<Vec<_>>(), vec![1, 2]);
        assert!(readable(q.fd()), "one event still waits");
        let rest = q.poll(8);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].kind, EventKind::Lost);
        assert_eq!(
            rest[0].error.as_ref().map(Error::kind),
            Some(ErrorKind::LeaseLost)
        );
        assert!(!readable(q.fd()));
        q.queue.push(lost(9, &Error::new(ErrorKind::Io, "again")));
        assert!(readable(q.fd()));
    }
}
