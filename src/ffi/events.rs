//! `dflockd_events`: the completion queue, polled through one file
//! descriptor on the application's own event loop (see src/engine/events.rs).

use std::ffi::{c_char, c_int};

use super::client::dflockd_client;
use super::error::guard;
use super::error::{FfiError, dflockd_error};
use super::lease::dflockd_lease;
use super::panic::guard_value;
use super::ptr::{Out, free, give, handle};
use super::status::dflockd_status;
use super::strings::StrOut;
use crate::events::{Event, EventKind, Events};

/// A completion queue: events (`dflockd_event`) the library queues for the
/// application to take with `dflockd_events_poll()`, and a file descriptor
/// (`dflockd_events_fd()`) that is readable while events wait (or a reply
/// for one of its operations arrived, which `dflockd_events_poll()` then
/// reads), for epoll, poll, select, libevent, libuv, asyncio or Go's
/// netpoller. No library thread ever calls application code on this path.
///
/// Made by `dflockd_events_new()`, freed by `dflockd_events_free()`.
/// Thread-safe: every function may be called from any thread, also while
/// another thread polls (but not concurrently with `dflockd_events_free()`).
/// A queue made before fork() is empty and inert in the child.
#[allow(non_camel_case_types)]
pub struct dflockd_events {
    events: Events,
}

/// What an event reports. Values are stable and only appended.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dflockd_event_kind {
    /// An acquire started with `dflockd_lease_acquire_start()` (or
    /// `dflockd_lease_try_acquire_start()`, `dflockd_lease_enqueue_start()`,
    /// `dflockd_lease_wait_start()`) was granted: the handle holds the lease.
    Acquired = 1,
    /// An acquire started with one of those ended without the lease:
    /// `status` says why (`TIMEOUT`, also for a try that found the key
    /// taken; `CANCELLED`, `DEADLINE`, `IO`, ...), `error` has the message.
    AcquireFailed = 2,
    /// A release started with `dflockd_lease_release_start()` completed.
    Released = 3,
    /// A release started with `dflockd_lease_release_start()` failed (the
    /// handle no longer holds the lease either way; the server lets it go
    /// at the latest when it expires).
    ReleaseFailed = 4,
    /// A lease watched with `dflockd_lease_watch_lost()` was lost.
    Lost = 5,
    /// An enqueue started with `dflockd_lease_enqueue_start()` joined the
    /// key's queue (`dflockd_lease_enqueue()`'s `acquired = false`): follow
    /// with `dflockd_lease_wait_start()` (or `dflockd_lease_wait()`), or
    /// leave the queue with a release. An enqueue that acquired at once
    /// reports `ACQUIRED` instead, and one that failed `ACQUIRE_FAILED`.
    Enqueued = 6,
    /// A request started with `dflockd_client_stats_start()` was answered:
    /// `status` is `DFLOCKD_STATUS_OK` and `error` is not NULL: it carries
    /// the reply, read with `dflockd_event_stats()` (and freed with
    /// `dflockd_error_free()`, like every event's `error`).
    Stats = 7,
    /// A request started with `dflockd_client_stats_start()` failed:
    /// `status` says why, `error` has the message.
    StatsFailed = 8,
    /// A held lease watched with `dflockd_lease_watch_lost()` is in doubt:
    /// its connection went (in cluster mode, a leader failover) and it is
    /// not reported held until a renewal on another connection confirms it
    /// (`CONFIRMED`) or the server refuses it (`LOST`). `status` and
    /// `error` say what happened to the connection (e.g. `IO`,
    /// `DRAINING`). The registration stays: the outcome comes on the same
    /// queue and tag.
    Doubted = 9,
    /// A doubted lease watched with `dflockd_lease_watch_lost()` was
    /// confirmed by the server: held again (`status` OK, `error` NULL).
    Confirmed = 10,
}

/// One event taken from a queue.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct dflockd_event {
    /// The tag given when the event was asked for.
    pub tag: u64,
    /// What happened.
    pub kind: dflockd_event_kind,
    /// `DFLOCKD_STATUS_OK` for a success, else the failure's status (for
    /// `DFLOCKD_EVENT_KIND_LOST`: `DFLOCKD_STATUS_LEASE_LOST`).
    pub status: dflockd_status,
    /// The detail of a failure or loss; NULL on success, except for
    /// `DFLOCKD_EVENT_KIND_STATS`, where it carries the reply (status OK;
    /// read it with `dflockd_event_stats()`). The caller owns it: free it
    /// with `dflockd_error_free()`.
    pub error: *mut dflockd_error,
}

/// The body of every export that takes a lease and a queue: check both
/// handles, then run `f`.
fn on_lease_and_queue(
    lease: *const dflockd_lease,
    q: *mut dflockd_events,
    err: *mut *mut dflockd_error,
    f: impl FnOnce(&crate::lease::Lease, &Events) -> crate::Result<()>,
) -> dflockd_status {
    guard(err, || {
        let l = super::lease::lease(lease)?;
        // SAFETY: NULL or a live queue (contract).
        let q = unsafe { handle(q.cast_const(), "q") }?;
        f(l, &q.events)?;
        Ok(())
    })
}

fn kind(k: EventKind) -> dflockd_event_kind {
    match k {
        EventKind::Acquired => dflockd_event_kind::Acquired,
        EventKind::AcquireFailed => dflockd_event_kind::AcquireFailed,
        EventKind::Released => dflockd_event_kind::Released,
        EventKind::ReleaseFailed => dflockd_event_kind::ReleaseFailed,
        EventKind::Enqueued => dflockd_event_kind::Enqueued,
        EventKind::Stats => dflockd_event_kind::Stats,
        EventKind::StatsFailed => dflockd_event_kind::StatsFailed,
        EventKind::Doubted => dflockd_event_kind::Doubted,
        EventKind::Confirmed => dflockd_event_kind::Confirmed,
        EventKind::Lost => dflockd_event_kind::Lost,
    }
}

fn to_c(e: Event) -> dflockd_event {
    let (status, error) = match (e.error, e.stats) {
        (None, None) => (dflockd_status::Ok, std::ptr::null_mut()),
        (None, Some(stats)) => {
            let detail = dflockd_error::with_stats("stats".into(), stats.to_json());
            (dflockd_status::Ok, Box::into_raw(Box::new(detail)))
        }
        (Some(err), _) => {
            let f = FfiError::from(err);
            (f.status, Box::into_raw(Box::new(dflockd_error::from(f))))
        }
    };
    dflockd_event {
        tag: e.tag,
        kind: kind(e.kind),
        status,
        error,
    }
}

/// Make a completion queue.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_events_new(
    out: *mut *mut dflockd_events,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(out, "out")?;
        let events = Events::new()?;
        // SAFETY: checked out-pointer.
        unsafe { give(out, dflockd_events { events }) };
        Ok(())
    })
}

/// Free a queue and the events still in it (with their errors). NULL is a
/// no-op. Remove its fd from your event loop first. Leases watched with it
/// simply stop reporting to it.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_events_free(q: *mut dflockd_events) {
    guard_value((), || {
        // SAFETY: NULL or a queue from dflockd_events_new, freed once (contract).
        unsafe { free(q) }
    })
}

/// The descriptor that is readable while events wait (-1 for NULL): an
/// epoll descriptor that holds the queue's eventfd and the sockets of the
/// evented operations reporting to this queue whose replies are awaited,
/// so the application's own poll wakes when a reply arrives. Only poll it;
/// never read, write or close it: `dflockd_events_poll()` reads the
/// replies and resets it when it empties the queue. Treat readiness as a
/// hint (a reply may lead to the next request rather than to an event) and
/// poll until `dflockd_events_poll()` returns fewer than you asked for. A
/// queue left unpolled does not stall its operations: the library reads
/// replies that waited there for more than 250 ms itself (a grant is then
/// held and renewed; its event waits for the next poll).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_events_fd(q: *const dflockd_events) -> c_int {
    guard_value(-1, || {
        // SAFETY: NULL or a live queue (contract).
        unsafe { handle(q, "events") }.map_or(-1, |q| q.events.fd())
    })
}

/// Take up to `cap` waiting events into `out[0..n]`, oldest first, and
/// return `n`; never blocks (0 when none wait, or for NULL arguments). The
/// caller owns each event's `error` (free it with `dflockd_error_free()`).
/// First it reads, on this thread, the replies that arrived for operations
/// reporting to this queue and carries those operations on (their event,
/// or their next request, sent without waiting): that is how an evented
/// acquire or release needs no library thread in between.
///
/// Non-blocking reads and sends only (a bounded number of replies per
/// call); returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_events_poll(q: *mut dflockd_events, out: *mut dflockd_event, cap: usize) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or a live queue (contract).
        let Ok(q) = (unsafe { handle(q.cast_const(), "events") }) else {
            return 0;
        };
        if out.is_null() || cap == 0 {
            return 0;
        }
        let taken = q.events.poll(cap);
        let n = taken.len();
        for (i, e) in taken.into_iter().enumerate() {
            // SAFETY: the caller provides room for `cap` events; i < n <= cap.
            unsafe { out.add(i).write(to_c(e)) };
        }
        n
    })
}

/// Ask for one `DFLOCKD_EVENT_KIND_LOST` event tagged `tag` on `q` when the
/// lease held by this handle is lost (at once if it already was), so an
/// event loop learns of it without a callback or a waiting thread. A
/// release is not a loss and sends none. The same registration also gets a
/// `DFLOCKD_EVENT_KIND_DOUBTED` event when a held lease falls in doubt
/// and a `DFLOCKD_EVENT_KIND_CONFIRMED` event when it is confirmed again
/// (neither ends the registration). A lease handle has one
/// registration: it stays, across releases and new acquires on this handle,
/// until the next loss fires it (call again after each LOST event to keep
/// watching), and a new call replaces it (queue and tag), so calling after
/// every acquire costs no memory.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_watch_lost(
    lease: *const dflockd_lease,
    q: *mut dflockd_events,
    tag: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    on_lease_and_queue(lease, q, err, |l, q| l.watch_lost(q, tag))
}

/// Start acquiring the lease without blocking: the request goes out on
/// this thread when a pooled connection is idle (a non-blocking send);
/// what must wait (name resolution, connect, TLS, auth, the wait for the
/// grant, up to `timeout_s` seconds; 0 = try once) runs on the library's
/// event engine or is read by `dflockd_events_poll()` on `q`, and its
/// outcome arrives on `q` as one event tagged `tag`:
/// `DFLOCKD_EVENT_KIND_ACQUIRED` (the handle holds the lease) or
/// `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED` with the status and message. The
/// event comes within the same bound as a blocking acquire's (connect
/// timeout + I/O timeout + `timeout_s`). Acquires of one key started one
/// after another (from one thread) are sent in that order, so the server
/// grants them in that order. `dflockd_lease_cancel()` ends it with
/// `ACQUIRE_FAILED` / `DFLOCKD_STATUS_CANCELLED`, leaving nothing held or
/// queued on the server. The handle is busy until the event is queued.
///
/// Fails at once, with no event, only when the handle cannot start one
/// (another operation is running, already held or enqueued, or `timeout_s`
/// above `DFLOCKD_MAX_SECONDS`: `INVALID_ARGUMENT`) or after fork (`FORKED`).
///
/// Never blocks: non-blocking sends (and connect starts) only on this
/// thread; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_acquire_start(
    lease: *const dflockd_lease,
    timeout_s: u64,
    q: *mut dflockd_events,
    tag: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    on_lease_and_queue(lease, q, err, |l, q| l.acquire_start(timeout_s, q, tag))
}

/// Start releasing the lease without blocking: the handle stops holding it
/// at once (it may acquire again right away), and the release runs on the
/// event engine; its outcome arrives on `q` as one event tagged `tag`:
/// `DFLOCKD_EVENT_KIND_RELEASED` or `DFLOCKD_EVENT_KIND_RELEASE_FAILED`,
/// within connect timeout + I/O timeout. After a queued
/// `dflockd_lease_enqueue()` it leaves the queue, and `RELEASED` is queued
/// at once.
///
/// Fails at once, with no event, when nothing is held
/// (`DFLOCKD_STATUS_NOT_HELD`, or `DFLOCKD_STATUS_LEASE_LOST` if it was
/// lost) or after fork (`FORKED`).
///
/// Never blocks: non-blocking sends (and connect starts) only on this
/// thread; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_release_start(
    lease: *const dflockd_lease,
    q: *mut dflockd_events,
    tag: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    on_lease_and_queue(lease, q, err, |l, q| l.release_start(q, tag))
}

/// Two-phase acquire, phase 2, without blocking: after a
/// `dflockd_lease_enqueue()` that returned queued, wait on the event engine
/// up to `timeout_s` seconds for the grant; the outcome arrives on `q` as
/// one event tagged `tag`: `DFLOCKD_EVENT_KIND_ACQUIRED` (queued at once if
/// the enqueue already acquired) or `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED`
/// (`TIMEOUT`: the place in the queue is gone; `CANCELLED` after
/// `dflockd_lease_cancel()`, which also leaves the queue). The event comes
/// within I/O timeout + `timeout_s` (+ connect timeout).
///
/// Fails at once, with no event, without an enqueue
/// (`DFLOCKD_STATUS_NOT_ENQUEUED`), when another operation is running or
/// `timeout_s` is above `DFLOCKD_MAX_SECONDS` (`INVALID_ARGUMENT`) or after
/// fork (`FORKED`).
///
/// Never blocks: non-blocking sends (and connect starts) only on this
/// thread; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_wait_start(
    lease: *const dflockd_lease,
    timeout_s: u64,
    q: *mut dflockd_events,
    tag: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    on_lease_and_queue(lease, q, err, |l, q| l.wait_start(timeout_s, q, tag))
}

/// Start trying to acquire the lease once without blocking: one request
/// (the one `dflockd_lease_try_acquire()` sends: `l` with timeout 0) runs on
/// the library's event engine, and its outcome arrives on `q` as one event
/// tagged `tag`: `DFLOCKD_EVENT_KIND_ACQUIRED` (the handle holds the lease)
/// or `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED` with the status and message:
/// `DFLOCKD_STATUS_TIMEOUT` means the key is taken (where
/// `dflockd_lease_try_acquire()` reports `acquired = false`); the server
/// answered at once and keeps nothing queued for this handle. The event
/// comes within connect timeout + I/O timeout. It keeps its place among
/// the starts of its key: it is sent only after an acquire of the key
/// started before it was queued by the server, and one started after it
/// is sent only once it was answered. `dflockd_lease_cancel()` ends it
/// with `ACQUIRE_FAILED` / `DFLOCKD_STATUS_CANCELLED`, leaving nothing held
/// or queued. The handle is busy until the event is queued.
///
/// Fails at once, with no event, only when the handle cannot start one
/// (another operation is running, already held or enqueued) or after fork
/// (`FORKED`).
///
/// Never blocks: non-blocking sends (and connect starts) only on this
/// thread; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_try_acquire_start(
    lease: *const dflockd_lease,
    q: *mut dflockd_events,
    tag: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    on_lease_and_queue(lease, q, err, |l, q| l.try_acquire_start(q, tag))
}

/// Two-phase acquire, phase 1, without blocking: join the key's queue on
/// the event engine (the request `dflockd_lease_enqueue()` sends); the
/// outcome arrives on `q` as one event tagged `tag`:
/// `DFLOCKD_EVENT_KIND_ACQUIRED` (granted at once: the handle holds the
/// lease), `DFLOCKD_EVENT_KIND_ENQUEUED` (queued: follow with
/// `dflockd_lease_wait_start()` or `dflockd_lease_wait()`, which wait on
/// the same connection, or leave the queue with a release) or
/// `DFLOCKD_EVENT_KIND_ACQUIRE_FAILED` with the status and message. The
/// event comes within connect timeout + I/O timeout. Ordered with the
/// other starts of its key as `dflockd_lease_acquire_start()` is.
/// `dflockd_lease_cancel()` ends it with `ACQUIRE_FAILED` /
/// `DFLOCKD_STATUS_CANCELLED`, leaving nothing held or queued (after
/// `ENQUEUED` it leaves the queue, as after a blocking enqueue, and the
/// next wait reports `CANCELLED`). The handle is busy until the event is
/// queued.
///
/// Fails at once, with no event, only when the handle cannot start one
/// (another operation is running, already held or enqueued) or after fork
/// (`FORKED`).
///
/// Never blocks: non-blocking sends (and connect starts) only on this
/// thread; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_enqueue_start(
    lease: *const dflockd_lease,
    q: *mut dflockd_events,
    tag: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    on_lease_and_queue(lease, q, err, |l, q| l.enqueue_start(q, tag))
}

/// Start fetching server `server`'s statistics without blocking (an index
/// below `dflockd_client_server_count()`): the `stats` request goes on a
/// pooled connection, or one the event engine opens, and the outcome
/// arrives on `q` as one event tagged `tag`: `DFLOCKD_EVENT_KIND_STATS`,
/// whose reply `dflockd_event_stats()` reads (the JSON object that
/// `dflockd_client_stats()` returns), or `DFLOCKD_EVENT_KIND_STATS_FAILED`
/// with the status and message. The event comes within connect timeout +
/// I/O timeout, as long as the client (or a lease made from it) lives:
/// free them before it comes and it may never come. Nothing cancels it.
///
/// Fails at once, with no event, for a server index out of range
/// (`INVALID_ARGUMENT`) or after fork (`FORKED`).
///
/// Never blocks: non-blocking sends (and connect starts) only on this
/// thread; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_stats_start(
    client: *const dflockd_client,
    server: usize,
    q: *mut dflockd_events,
    tag: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        // SAFETY: NULL or a live client (contract).
        let c = unsafe { super::client::client_ref(client) }?;
        // SAFETY: NULL or a live queue (contract).
        let q = unsafe { handle(q.cast_const(), "q") }?;
        c.stats_start(server, &q.events, tag)?;
        Ok(())
    })
}

/// Copy the reply of a `DFLOCKD_EVENT_KIND_STATS` event (a JSON object:
/// connections, locks, semaphores, idle keys, as `dflockd_client_stats()`
/// gives it) into `buf` (see the output string conventions at the top of
/// this header). The reply stays in the event's `error` object until that
/// is freed, so after `BUFFER_TOO_SMALL` call again with the size needed
/// (the same figures). `INVALID_ARGUMENT` for any other event.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_event_stats(
    event: *const dflockd_event,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = StrOut::new(buf, cap, out_len)?;
        // SAFETY: NULL or a live event (contract).
        let event = unsafe { event.as_ref() }.ok_or_else(|| FfiError::null("event"))?;
        // SAFETY: an event's `error` is NULL or a live object the caller
        // has not freed yet (contract).
        let detail = unsafe { event.error.as_ref() };
        let json = detail
            .filter(|_| event.kind == dflockd_event_kind::Stats)
            .and_then(dflockd_error::stats)
            .ok_or_else(|| FfiError::invalid("not a DFLOCKD_EVENT_KIND_STATS event"))?;
        // SAFETY: checked caller buffer.
        unsafe { out.write(json) }
    })
}
