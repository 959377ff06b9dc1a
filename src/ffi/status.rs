//! The one status enum every fallible export returns, and its names.
//!
//! Values are part of the ABI: they are only ever appended, never
//! renumbered or removed (Go and Ruby bindings switch on the numbers).

use crate::ErrorKind;
use std::ffi::c_char;

/// The result of every fallible `dflockd_*` call. `DFLOCKD_STATUS_OK` (0)
/// means success; every other value is a failure, and the optional
/// `dflockd_error **err` argument of the call then receives the detail.
///
/// The numeric values are stable: new statuses are only ever appended, never
/// renumbered or removed. `dflockd_status_str()` names each one.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum dflockd_status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullParameter = 1,
    /// An argument is out of range or breaks the protocol's rules (empty or
    /// over-long key, key with a space, limit 0, timeout too large, ...).
    InvalidArgument = 2,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 3,
    /// The caller's output buffer is too small; the length out-parameter
    /// holds the buffer size needed (terminating NUL included).
    BufferTooSmall = 4,
    /// The library panicked (a bug); the call had no effect beyond what the
    /// message says. Please report it.
    Panic = 5,
    /// The library was built without this feature (e.g. the test server).
    Unsupported = 6,
    /// The server answered `timeout`: not acquired within the timeout.
    Timeout = 7,
    /// The server answered plain `error` (wrong or expired token, unknown
    /// key, malformed request, a waiter cut off by shutdown).
    ServerError = 8,
    /// Authentication failed (`error_auth`), or the server demanded it.
    Auth = 9,
    /// `error_max_locks`: the server's key table is full.
    MaxLocks = 10,
    /// `error_max_waiters`: the key's wait queue is full.
    MaxWaiters = 11,
    /// `error_limit_mismatch`: the semaphore exists with another limit.
    LimitMismatch = 12,
    /// `error_not_enqueued`: wait without a prior enqueue on this connection.
    NotEnqueued = 13,
    /// `error_already_enqueued`: this connection is already queued on the key.
    AlreadyEnqueued = 14,
    /// `error_lease_expired`: the grant expired before it was delivered.
    LeaseExpired = 15,
    /// `error_draining`: the server is shutting down.
    Draining = 16,
    /// `error_not_leader`: a cluster follower refused a mutating command and
    /// no configured server accepted it. `dflockd_error_leader()` names the
    /// leader when the server did.
    NotLeader = 17,
    /// The server sent a reply no command may get (unknown status, bad
    /// field, over-long line, invalid UTF-8). The connection was closed.
    Protocol = 18,
    /// Connecting, reading or writing failed, or the server closed.
    Io = 19,
    /// No reply within the operation's deadline (a hung server).
    Deadline = 20,
    /// TLS setup or handshake failed (bad CA, name mismatch, ...).
    Tls = 21,
    /// Another thread cancelled the operation; nothing is left held.
    Cancelled = 22,
    /// The lease was lost: renewal failed until it would have expired.
    LeaseLost = 23,
    /// The handle holds nothing (released, never acquired, or lost).
    NotHeld = 24,
    /// The client or handle was closed.
    Closed = 25,
    /// The handle was inherited through `fork()`: it belongs to the parent
    /// process (whose library threads do not exist here) and refuses every
    /// call. Create a new client in the child.
    Forked = 26,
}

/// Every status with its name, in value order: the single source for
/// `dflockd_status_str` and the tests.
pub(crate) const STATUS_NAMES: [(dflockd_status, &std::ffi::CStr); 27] = {
    use dflockd_status::*;
    [
        (Ok, c"DFLOCKD_STATUS_OK"),
        (NullParameter, c"DFLOCKD_STATUS_NULL_PARAMETER"),
        (InvalidArgument, c"DFLOCKD_STATUS_INVALID_ARGUMENT"),
        (InvalidUtf8, c"DFLOCKD_STATUS_INVALID_UTF8"),
        (BufferTooSmall, c"DFLOCKD_STATUS_BUFFER_TOO_SMALL"),
        (Panic, c"DFLOCKD_STATUS_PANIC"),
        (Unsupported, c"DFLOCKD_STATUS_UNSUPPORTED"),
        (Timeout, c"DFLOCKD_STATUS_TIMEOUT"),
        (ServerError, c"DFLOCKD_STATUS_SERVER_ERROR"),
        (Auth, c"DFLOCKD_STATUS_AUTH"),
        (MaxLocks, c"DFLOCKD_STATUS_MAX_LOCKS"),
        (MaxWaiters, c"DFLOCKD_STATUS_MAX_WAITERS"),
        (LimitMismatch, c"DFLOCKD_STATUS_LIMIT_MISMATCH"),
        (NotEnqueued, c"DFLOCKD_STATUS_NOT_ENQUEUED"),
        (AlreadyEnqueued, c"DFLOCKD_STATUS_ALREADY_ENQUEUED"),
        (LeaseExpired, c"DFLOCKD_STATUS_LEASE_EXPIRED"),
        (Draining, c"DFLOCKD_STATUS_DRAINING"),
        (NotLeader, c"DFLOCKD_STATUS_NOT_LEADER"),
        (Protocol, c"DFLOCKD_STATUS_PROTOCOL"),
        (Io, c"DFLOCKD_STATUS_IO"),
        (Deadline, c"DFLOCKD_STATUS_DEADLINE"),
        (Tls, c"DFLOCKD_STATUS_TLS"),
        (Cancelled, c"DFLOCKD_STATUS_CANCELLED"),
        (LeaseLost, c"DFLOCKD_STATUS_LEASE_LOST"),
        (NotHeld, c"DFLOCKD_STATUS_NOT_HELD"),
        (Closed, c"DFLOCKD_STATUS_CLOSED"),
        (Forked, c"DFLOCKD_STATUS_FORKED"),
    ]
};

impl dflockd_status {
    /// The status for a core error kind (one kind, one status).
    pub(crate) fn from_kind(kind: ErrorKind) -> dflockd_status {
        use dflockd_status as S;
        match kind {
            ErrorKind::InvalidArgument => S::InvalidArgument,
            ErrorKind::Timeout => S::Timeout,
            ErrorKind::Server => S::ServerError,
            ErrorKind::Auth => S::Auth,
            ErrorKind::MaxLocks => S::MaxLocks,
            ErrorKind::MaxWaiters => S::MaxWaiters,
            ErrorKind::LimitMismatch => S::LimitMismatch,
            ErrorKind::NotEnqueued => S::NotEnqueued,
            ErrorKind::AlreadyEnqueued => S::AlreadyEnqueued,
            ErrorKind::LeaseExpired => S::LeaseExpired,
            ErrorKind::Draining => S::Draining,
            ErrorKind::NotLeader => S::NotLeader,
            ErrorKind::Protocol => S::Protocol,
            ErrorKind::Io => S::Io,
            ErrorKind::Deadline => S::Deadline,
            ErrorKind::Tls => S::Tls,
            ErrorKind::Cancelled => S::Cancelled,
            ErrorKind::LeaseLost => S::LeaseLost,
            ErrorKind::NotHeld => S::NotHeld,
            ErrorKind::Closed => S::Closed,
            ErrorKind::Forked => S::Forked,
        }
    }
}

/// The name of a status as a static NUL-terminated string, e.g.
/// `"DFLOCKD_STATUS_TIMEOUT"`; `"DFLOCKD_STATUS_UNKNOWN"` for a value this
/// version does not know. Never NULL; the string lives forever.
///
/// Takes an `int` rather than the enum so that any value a caller holds
/// (e.g. from a newer library) is safe to pass. Thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_status_str(status: i32) -> *const c_char {
    STATUS_NAMES
        .iter()
        .find(|(s, _)| *s as i32 == status)
        .map_or(c"DFLOCKD_STATUS_UNKNOWN".as_ptr(), |(_, n)| n.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_in_value_order_and_unique() {
        for (i, (s, name)) in STATUS_NAMES.iter().enumerate() {
            assert_eq!(*s as i32, i as i32, "{name:?} out of order");
            let n = unsafe { std::ffi::CStr::from_ptr(dflockd_status_str(i as i32)) };
            assert_eq!(n, *name);
        }
        let unknown = unsafe { std::ffi::CStr::from_ptr(dflockd_status_str(9999)) };
        assert_eq!(unknown, c"DFLOCKD_STATUS_UNKNOWN");
        assert_eq!(dflockd_status_str(-1), unknown.as_ptr());
    }

    #[test]
    fn each_error_kind_has_its_own_status() {
        use ErrorKind::*;
        let kinds = [
            InvalidArgument,
            Timeout,
            Server,
            Auth,
            MaxLocks,
            MaxWaiters,
            LimitMismatch,
            NotEnqueued,
            AlreadyEnqueued,
            LeaseExpired,
            Draining,
            NotLeader,
            Protocol,
            Io,
            Deadline,
            Tls,
            Cancelled,
            LeaseLost,
            NotHeld,
            Closed,
            Forked,
        ];
        let set: std::collections::HashSet<_> = kinds.iter().map(|k| dflockd_status::from_kind(*k)).collect();
        assert_eq!(set.len(), kinds.len());
        assert!(!set.contains(&dflockd_status::Ok));
    }
}
