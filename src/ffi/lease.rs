//! `dflockd_lease`: one lock or semaphore handle. Locks and semaphores share
//! every function; they differ only in how the handle was made.

use super::error::guard;
use super::error::{FfiError, dflockd_error};
use super::panic::guard_value;
use super::ptr::{Out, free, handle};
use super::status::dflockd_status;
use super::strings::StrOut;
use crate::lease::Lease;
use std::ffi::{c_char, c_void};
use std::time::Duration;

/// A lock or semaphore handle on one key, made by `dflockd_client_lock()`
/// or `dflockd_client_semaphore()`.
///
/// A handle holds at most one lease at a time. While held, the library
/// renews it in the background (on the library's event engine); if renewal
/// fails until the lease would have expired, the lease is *lost*:
/// `dflockd_lease_is_held()` turns false, `dflockd_lease_wait_lost()`
/// returns, and the lost callback (if any) runs.
///
/// Thread-safe: every function taking `const dflockd_lease *` may be called
/// from several threads at once; in particular `dflockd_lease_cancel()` from
/// another thread interrupts a blocked acquire or wait.
#[allow(non_camel_case_types)]
pub struct dflockd_lease {
    lease: Lease,
}

impl dflockd_lease {
    pub(crate) fn new(lease: Lease) -> dflockd_lease {
        dflockd_lease { lease }
    }
}

/// Called once when an asynchronous acquire completes (or is cancelled).
/// `status` is `DFLOCKD_STATUS_OK` when the lease is now held; otherwise
/// `error` (NULL on success) holds the detail and is valid only during the
/// call (do not free it). Runs on a library thread: it must not block for
/// long and must not free the lease handle it reports on.
#[allow(non_camel_case_types)]
pub type dflockd_acquire_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, status: dflockd_status, error: *const dflockd_error)>;

/// Called once when a held lease is lost (renewal failed until the lease
/// would have expired, or the server refused the renewal). `error` holds
/// the reason and is valid only during the call (do not free it). Runs on
/// the library's notifier thread: it must be quick (hand the event to your own
/// thread), must not block and must not call into this lease handle.
#[allow(non_camel_case_types)]
pub type dflockd_lost_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, status: dflockd_status, error: *const dflockd_error)>;

/// Called when a held lease falls in doubt (`confirmed` false: its
/// connection went, e.g. a cluster leader failover; the lease is not
/// reported held meanwhile) and again when a renewal elsewhere confirms it
/// (`confirmed` true: held again). A doubt that ends in a loss calls the
/// lost callback instead of a second call here. Runs on the library's
/// notifier thread: it must be quick, must not block and must not call
/// into this lease handle.
#[allow(non_camel_case_types)]
pub type dflockd_doubt_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, confirmed: bool)>;

/// A C callback and its userdata, movable to a library thread.
struct Callback {
    cb: unsafe extern "C" fn(*mut c_void, dflockd_status, *const dflockd_error),
    userdata: *mut c_void,
}

// SAFETY: the callbacks' documented contract: they run on library threads.
unsafe impl Send for Callback {}
unsafe impl Sync for Callback {}

impl Callback {
    /// Call with the outcome; `None` = success.
    fn call(&self, outcome: Option<crate::Error>) {
        let obj = outcome.map(|e| dflockd_error::from(FfiError::from(e)));
        let (status, ptr) = match &obj {
            None => (dflockd_status::Ok, std::ptr::null()),
            Some(e) => (super::error::dflockd_error_status(e), e as *const dflockd_error),
        };
        // A panic must not unwind into the library thread's caller.
        guard_value((), || {
            // SAFETY: the C callback contract; ptr is valid for the call.
            unsafe { (self.cb)(self.userdata, status, ptr) }
        });
    }
}

/// A doubt callback and its userdata, movable to a library thread.
struct DoubtCallback {
    cb: unsafe extern "C" fn(*mut c_void, bool),
    userdata: *mut c_void,
}

// SAFETY: dflockd_doubt_fn's documented contract: it runs on a library thread.
unsafe impl Send for DoubtCallback {}
unsafe impl Sync for DoubtCallback {}

impl DoubtCallback {
    fn call(&self, confirmed: bool) {
        // A panic must not unwind into the library thread's caller.
        guard_value((), || {
            // SAFETY: the C callback contract.
            unsafe { (self.cb)(self.userdata, confirmed) }
        });
    }
}

/// Borrow the lease behind a handle pointer, refusing one inherited
/// through `fork()` (`DFLOCKD_STATUS_FORKED`) before touching its state.
pub(crate) fn lease<'a>(l: *const dflockd_lease) -> Result<&'a Lease, FfiError> {
    // SAFETY: NULL or a live lease handle (contract).
    let lease = unsafe { handle(l, "lease") }.map(|h| &h.lease)?;
    lease.check_fork()?;
    Ok(lease)
}

/// Free a lease handle, releasing the lease first if held (best effort,
/// bounded by the I/O deadline) and cancelling any asynchronous acquire.
/// NULL is a no-op. Must not be freed twice, used after free, or freed while
/// another thread uses it or from inside its own callbacks.
///
/// A lease keeps its client alive: if this was the last client or lease
/// handle, the library threads are stopped and joined before it returns
/// (see `dflockd_client_free()`: queued lost callbacks and completions
/// still run; queued log messages get at most 100 ms more).
///
/// In a child process after fork(), freeing a lease inherited from the
/// parent does not release it (it is the parent's lease) and sends
/// nothing: the handle is leaked.
///
/// Network I/O when held: releases first, within connect timeout + I/O timeout;
/// otherwise none.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_free(lease: *mut dflockd_lease) {
    guard_value((), || {
        // SAFETY: NULL or a handle from dflockd_client_lock/semaphore, freed once.
        unsafe { free(lease) }
    })
}

/// Acquire, blocking up to `timeout_s` seconds (0 = try once, never block;
/// at most 9223372036). `DFLOCKD_STATUS_TIMEOUT` if not granted in time;
/// `DFLOCKD_STATUS_CANCELLED` if `dflockd_lease_cancel()` interrupted it;
/// `INVALID_ARGUMENT` if the handle already holds or is queued for its
/// lease, or another operation is running on it.
///
/// Network I/O: returns within connect timeout + `timeout_s` + I/O timeout,
/// redirects and a confirming renewal included.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_acquire(
    lease: *const dflockd_lease,
    timeout_s: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || Ok(self::lease(lease)?.acquire(timeout_s)?))
}

/// Try once, without waiting for the key: `*acquired_out` = true if now held, false if
/// someone else holds it (that is not an error).
///
/// Network I/O: returns within connect timeout + I/O timeout (it never waits
/// for the key).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_try_acquire(
    lease: *const dflockd_lease,
    acquired_out: *mut bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(acquired_out, "acquired_out")?;
        let got = self::lease(lease)?.try_acquire()?;
        // SAFETY: checked out-pointer.
        unsafe { out.write(got) };
        Ok(())
    })
}

/// Two-phase acquire, phase 1: join the key's queue without waiting for the key.
/// `*acquired_out` = true if the key was free and is now held (then no wait
/// is needed), false if queued: call `dflockd_lease_wait()` next. Useful for
/// event loops: do other work between the phases.
///
/// Network I/O: returns within connect timeout + I/O timeout (it never waits
/// for the key).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_enqueue(
    lease: *const dflockd_lease,
    acquired_out: *mut bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(acquired_out, "acquired_out")?;
        let got = self::lease(lease)?.enqueue()?;
        // SAFETY: checked out-pointer.
        unsafe { out.write(got) };
        Ok(())
    })
}

/// Two-phase acquire, phase 2: wait up to `timeout_s` seconds for the grant
/// after `dflockd_lease_enqueue()` (returns at once if already acquired).
/// `DFLOCKD_STATUS_TIMEOUT` removes the handle from the queue;
/// `DFLOCKD_STATUS_NOT_ENQUEUED` without a prior enqueue.
///
/// Network I/O: returns within `timeout_s` + I/O timeout (at once if enqueue
/// already acquired).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_wait(
    lease: *const dflockd_lease,
    timeout_s: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || Ok(self::lease(lease)?.wait(timeout_s)?))
}

/// Release the lease (or leave the queue after a queued enqueue).
/// `DFLOCKD_STATUS_NOT_HELD` if nothing is held (never acquired or already
/// released), `DFLOCKD_STATUS_LEASE_LOST` if it was lost: a double release
/// is reported, never silently accepted.
///
/// Network I/O: returns within connect timeout + I/O timeout. On DEADLINE the
/// handle no longer holds the lease and its connection is closed, so the server
/// releases it (on disconnect, or at expiry).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_release(
    lease: *const dflockd_lease,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || Ok(self::lease(lease)?.release()?))
}

/// Cancel a blocked `dflockd_lease_acquire()` / `dflockd_lease_wait()` on
/// another thread or a pending asynchronous acquire: it returns (or calls
/// back) with `DFLOCKD_STATUS_CANCELLED` and nothing is left held. Between
/// a queued `dflockd_lease_enqueue()` and its `dflockd_lease_wait()` it
/// leaves the queue, and that wait returns CANCELLED. Does nothing when no
/// acquire is in progress. Callable from any thread. A
/// connection still being opened for the call is not interrupted: the call
/// returns CANCELLED as soon as that connect ends (within the connect
/// timeout), before sending anything. An evented operation whose request
/// was sent reports CANCELLED once the server has closed the half-closed
/// connection (so it dropped the waiter before a release sent next can
/// reach it), at most 250 ms after the cancel.
///
/// No network I/O (shuts the in-flight connection down); returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_cancel(lease: *const dflockd_lease) -> dflockd_status {
    guard(std::ptr::null_mut(), || {
        self::lease(lease)?.cancel();
        Ok(())
    })
}

/// Copy the current token (32 lowercase hex characters) into `buf` (33
/// bytes suffice: `DFLOCKD_TOKEN_SIZE`). `DFLOCKD_STATUS_NOT_HELD` if
/// nothing is held. The token is a credential: do not log it.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_token(
    lease: *const dflockd_lease,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = StrOut::new(buf, cap, out_len)?;
        let token = self::lease(lease)?.token().ok_or_else(not_held)?;
        // SAFETY: checked caller buffer.
        unsafe { out.write(token.as_str()) }
    })
}

/// The fence of the current token (`dflockd_fence_from_token()` of it):
/// pass it with every write to the guarded resource, which rejects fences
/// lower than the highest it saw. `DFLOCKD_STATUS_NOT_HELD` if not held.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_fence(
    lease: *const dflockd_lease,
    fence_out: *mut u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(fence_out, "fence_out")?;
        let fence = self::lease(lease)?.fence().ok_or_else(not_held)?;
        // SAFETY: checked out-pointer.
        unsafe { out.write(fence) };
        Ok(())
    })
}

/// The TTL in seconds the server granted for the current lease.
/// `DFLOCKD_STATUS_NOT_HELD` if not held.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_ttl(
    lease: *const dflockd_lease,
    ttl_s_out: *mut u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(ttl_s_out, "ttl_s_out")?;
        let ttl = self::lease(lease)?.lease_ttl_s().ok_or_else(not_held)?;
        // SAFETY: checked out-pointer.
        unsafe { out.write(ttl) };
        Ok(())
    })
}

/// Set the lease TTL in seconds requested by this handle's next acquires
/// (1 ..= 9223372036), overriding the client default; 0 = the client
/// default.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_set_ttl(
    lease: *const dflockd_lease,
    ttl_s: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        Ok(self::lease(lease)?.set_lease_ttl((ttl_s != 0).then_some(ttl_s))?)
    })
}

/// Copy the handle's key into `buf`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_key(
    lease: *const dflockd_lease,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = StrOut::new(buf, cap, out_len)?;
        let key = self::lease(lease)?.key();
        // SAFETY: checked caller buffer.
        unsafe { out.write(key) }
    })
}

/// Whether the handle holds its lease right now (false once released or
/// lost, and for NULL). A poll-friendly alternative to the lost callback.
///
/// Never optimistic about the lease's own expiry, but when the server
/// lets go on its own (its idle timeout, see
/// `dflockd_config_set_server_read_timeout_ms()`; a network that closes
/// only one direction) the client learns it one network delay later at the
/// earliest: this may still return true for about one round trip after
/// the server released the lease, while another client already holds it.
/// Guard writes with the fencing token (`dflockd_lease_fence()`): pass it
/// with every write and have the resource refuse fences older than the
/// newest it has seen.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_is_held(lease: *const dflockd_lease) -> bool {
    guard_value(false, || self::lease(lease).is_ok_and(Lease::is_held))
}

/// Whether the lease held by this handle was lost (renewal failed). Reset
/// by the next successful acquire. False for NULL.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_is_lost(lease: *const dflockd_lease) -> bool {
    guard_value(false, || self::lease(lease).is_ok_and(Lease::is_lost))
}

/// Whether the handle's lease is in doubt right now: its connection went
/// (in cluster mode, a leader failover; without auto-release on
/// disconnect, a dropped connection) and a renewal on another connection
/// has not yet confirmed it. `dflockd_lease_is_held()` is false meanwhile;
/// the doubt ends confirmed (held again) or lost. False for NULL.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_is_doubted(lease: *const dflockd_lease) -> bool {
    guard_value(false, || self::lease(lease).is_ok_and(Lease::is_doubted))
}

/// Why the lease was lost, without a callback: returns
/// `DFLOCKD_STATUS_OK` while the handle's last lease is not lost, else the
/// error that ended it, with its detail in `*err` (the same status and
/// message the lost callback receives: e.g. `SERVER_ERROR` when the server
/// no longer had the lease, `LEASE_LOST` when renewal ran out of time).
/// Lets bindings whose runtimes cannot take callbacks from library threads
/// (Ruby) report the cause after `dflockd_lease_wait_lost()`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_lost_error(
    lease: *const dflockd_lease,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || match self::lease(lease)?.lost_error() {
        None => Ok(()),
        Some(e) => Err(e.into()),
    })
}

/// Block the calling thread until the lease is lost or `timeout_ms` passes
/// (negative = no limit; 0 = just check). `*lost_out` = true if lost.
/// Returns at once with true if already lost. Releasing the lease does not
/// count as losing it.
///
/// No network I/O; returns within `timeout_ms` (never, if negative, until the
/// lease is lost).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_wait_lost(
    lease: *const dflockd_lease,
    timeout_ms: i64,
    lost_out: *mut bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(lost_out, "lost_out")?;
        let l = self::lease(lease)?;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let lost = l.wait_lost(timeout);
        // SAFETY: checked out-pointer.
        unsafe { out.write(lost) };
        Ok(())
    })
}

/// Install (or with `callback` NULL, remove) the lost callback: see
/// `dflockd_lost_fn` for which thread runs it. `userdata` is passed back
/// first and must stay valid until the callback is removed or the handle
/// freed. It runs at most once per lost lease.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_on_lost(
    lease: *const dflockd_lease,
    callback: dflockd_lost_fn,
    userdata: *mut c_void,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let l = self::lease(lease)?;
        // The loss itself is logged (ERROR) by the core, callback or not.
        l.on_lost(callback.map(|cb| {
            let cb = Callback { cb, userdata };
            Box::new(move |e: &crate::Error| cb.call(Some(e.clone())))
                as Box<dyn Fn(&crate::Error) + Send + Sync>
        }));
        Ok(())
    })
}

/// Install (or with `callback` NULL, remove) the doubt callback: see
/// `dflockd_doubt_fn` for when and on which thread it runs. `userdata` is
/// passed back first and must stay valid until the callback is removed or
/// the handle freed (a call already queued on the notifier may still run
/// after a removal: keep `userdata` valid until the handle is freed if
/// that matters). A polled alternative: `dflockd_lease_is_doubted()`, or
/// the `DFLOCKD_EVENT_KIND_DOUBTED` / `DFLOCKD_EVENT_KIND_CONFIRMED` events
/// of `dflockd_lease_watch_lost()`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_on_doubt(
    lease: *const dflockd_lease,
    callback: dflockd_doubt_fn,
    userdata: *mut c_void,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let l = self::lease(lease)?;
        l.on_doubt(callback.map(|cb| {
            let cb = DoubtCallback { cb, userdata };
            Box::new(move |confirmed: bool| cb.call(confirmed)) as Box<dyn Fn(bool) + Send + Sync>
        }));
        Ok(())
    })
}

/// Start an acquire that completes on a library thread (the generation's
/// notifier thread, shared by all; no thread per call), for event loops:
/// returns at once; `callback` (required) then runs exactly once with the
/// outcome (`OK`, `TIMEOUT` after `timeout_s` seconds, `CANCELLED` after
/// `dflockd_lease_cancel()` or `dflockd_lease_free()`, or another error).
/// `userdata` must stay valid until the callback has run. See
/// `dflockd_acquire_fn` for the callback's rules. If this function returns
/// an error, the callback is never called.
///
/// No network I/O on the calling thread; returns at once. The completion comes
/// within connect timeout + `timeout_s` + I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_lease_acquire_async(
    lease: *const dflockd_lease,
    timeout_s: u64,
    callback: dflockd_acquire_fn,
    userdata: *mut c_void,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let cb = callback.ok_or_else(|| FfiError::null("callback"))?;
        let l = self::lease(lease)?;
        let cb = Callback { cb, userdata };
        l.acquire_async(timeout_s, Box::new(move |r: crate::Result<()>| cb.call(r.err())));
        Ok(())
    })
}

fn not_held() -> FfiError {
    FfiError::new(dflockd_status::NotHeld, "the handle holds no lease")
}
