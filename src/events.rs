//! The completion queue: events for the application to pull, behind one
//! file descriptor its own event loop can poll (epoll, libevent, asyncio,
//! Go's netpoller, Ruby's `IO#wait_readable`).
//!
//! An eventfd is written once when the queue goes from empty to non-empty
//! and read (reset) when a poll empties it, both under the queue's lock, so
//! the fd is readable exactly while events are waiting: no lost wake-up
//! between a check and a wait, no counter overflow. No library thread ever
//! calls application code on this path: events are only pushed here.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

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

pub(crate) struct Queue {
    events: Mutex<VecDeque<Event>>,
    fd: OwnedFd,
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
        Ok(Events {
            queue: Arc::new(Queue {
                events: Mutex::new(VecDeque::new()),
                // SAFETY: just created, owned by nobody else.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                stamp: ForkStamp::now(),
            }),
        })
    }

    /// The descriptor that is readable while events are waiting. Only poll
    /// it (epoll/poll/select); never read it: [`Events::poll`] does.
    pub fn fd(&self) -> RawFd {
        self.queue.fd.as_raw_fd()
    }

    /// Take up to `max` waiting events, oldest first; never blocks. Call it
    /// until it returns fewer than `max` before waiting on the fd again.
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
    /// Queue an event; makes the fd readable if the queue was empty.
    pub(crate) fn push(&self, event: Event) {
        if !self.stamp.is_current() {
            return;
        }
        let mut q = lock(&self.events);
        if q.is_empty() {
            let one: u64 = 1;
            // SAFETY: 8 bytes from a live u64 to our eventfd (non-blocking;
            // it cannot be full: it is written only on empty → non-empty).
            unsafe {
                libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        }
        q.push_back(event);
    }

    pub(crate) fn take(&self, max: usize) -> Vec<Event> {
        if !self.stamp.is_current() {
            return Vec::new();
        }
        let mut q = lock(&self.events);
        let n = max.min(q.len());
        let out: Vec<Event> = q.drain(..n).collect();
        if n > 0 && q.is_empty() {
            let mut counter: u64 = 0;
            // SAFETY: reading 8 bytes into a live u64 from our eventfd.
            unsafe {
                libc::read(self.fd.as_raw_fd(), (&mut counter as *mut u64).cast(), 8);
            }
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
