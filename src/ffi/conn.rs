//! `dflockd_conn`: the low-level connection, one function per wire command.
//! Lock and semaphore commands share one implementation per operation and
//! differ only by `Kind` (and the semaphore's limit).

use super::error::guard;
use super::error::{FfiError, dflockd_error};
use super::panic::guard_value;
use super::ptr::{Out, handle};
use super::status::dflockd_status;
use super::strings::{StrOut, str_in};
use super::tokens::DFLOCKD_TOKEN_SIZE;
use crate::connection::{Connection, Enqueued, Grant};
use crate::protocol::Kind;
use std::ffi::c_char;

/// One authenticated connection to one server, made by
/// `dflockd_client_connect()`, freed by `dflockd_conn_free()` (which closes
/// it: the server then releases everything it granted on it).
///
/// Leases acquired here are NOT renewed by the library: renew them yourself
/// (`dflockd_conn_lock_renew()`) and send something at least every 23 s or
/// the server drops the connection and its locks. Thread-safe: requests from
/// several threads are serialized; a blocking acquire or wait occupies the
/// connection until it answers. Two-phase `enqueue` and `wait` must use the
/// same connection.
#[allow(non_camel_case_types)]
pub struct dflockd_conn {
    conn: Connection,
}

impl dflockd_conn {
    pub(crate) fn new(conn: Connection) -> dflockd_conn {
        dflockd_conn { conn }
    }
}

/// A grant from the server: the token (NUL-terminated, 32 lowercase hex
/// characters), its lease in seconds, and the fence decoded from the token.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
pub struct dflockd_grant {
    /// The token, NUL-terminated. A credential: do not log it.
    pub token: [c_char; DFLOCKD_TOKEN_SIZE],
    /// The lease TTL in seconds the server granted.
    pub lease_s: u64,
    /// The fence (first 16 hex characters of the token as a number).
    pub fence: u64,
}

impl From<&Grant> for dflockd_grant {
    fn from(g: &Grant) -> dflockd_grant {
        let mut token = [0 as c_char; DFLOCKD_TOKEN_SIZE];
        for (dst, src) in token.iter_mut().zip(g.token.as_str().bytes()) {
            *dst = src as c_char;
        }
        dflockd_grant {
            token,
            lease_s: g.lease_s,
            fence: g.token.fence(),
        }
    }
}

/// Borrow the connection behind a handle pointer, refusing one inherited
/// through `fork()` (`DFLOCKD_STATUS_FORKED`) before touching its mutex.
fn conn<'a>(c: *const dflockd_conn) -> Result<&'a Connection, FfiError> {
    // SAFETY: NULL or a live connection handle (contract).
    let conn = unsafe { handle(c, "conn") }.map(|h| &h.conn)?;
    conn.check_fork()?;
    Ok(conn)
}

fn opt_lease(lease_s: u64) -> Option<u64> {
    (lease_s != 0).then_some(lease_s)
}

fn limit_for(kind: Kind, limit: u64) -> Result<Option<u64>, FfiError> {
    match kind {
        Kind::Lock => Ok(None),
        Kind::Semaphore if limit == 0 => Err(FfiError::invalid("semaphore limit must be at least 1")),
        Kind::Semaphore => Ok(Some(limit)),
    }
}

/// Key and token strings of one request, checked.
///
/// # Safety
/// Pointers valid for their lengths (C contract).
unsafe fn key_in<'a>(key: *const c_char, key_len: usize) -> Result<&'a str, FfiError> {
    // SAFETY: forwarded contract.
    unsafe { str_in(key, key_len, "key") }
}

fn acquire(
    kind: Kind,
    c: *const dflockd_conn,
    key: (*const c_char, usize),
    timeout_s: u64,
    limit: u64,
    lease_s: u64,
    grant_out: *mut dflockd_grant,
) -> Result<(), FfiError> {
    let out = Out::new(grant_out, "grant_out")?;
    let c = conn(c)?;
    // SAFETY: C contract.
    let key = unsafe { key_in(key.0, key.1) }?;
    let grant = c.acquire(kind, key, timeout_s, limit_for(kind, limit)?, opt_lease(lease_s))?;
    // SAFETY: checked out-pointer.
    unsafe { out.write((&grant).into()) };
    Ok(())
}

fn release(
    kind: Kind,
    c: *const dflockd_conn,
    key: (*const c_char, usize),
    token: (*const c_char, usize),
) -> Result<(), FfiError> {
    let c = conn(c)?;
    // SAFETY: C contract.
    let key = unsafe { key_in(key.0, key.1) }?;
    let token = unsafe { str_in(token.0, token.1, "token") }?;
    Ok(c.release(kind, key, token)?)
}

fn renew(
    kind: Kind,
    c: *const dflockd_conn,
    key: (*const c_char, usize),
    token: (*const c_char, usize),
    lease_s: u64,
    lease_out: *mut u64,
) -> Result<(), FfiError> {
    let out = Out::new(lease_out, "lease_out")?;
    let c = conn(c)?;
    // SAFETY: C contract.
    let key = unsafe { key_in(key.0, key.1) }?;
    let token = unsafe { str_in(token.0, token.1, "token") }?;
    let remaining = c.renew(kind, key, token, opt_lease(lease_s))?;
    // SAFETY: checked out-pointer.
    unsafe { out.write(remaining) };
    Ok(())
}

fn enqueue(
    kind: Kind,
    c: *const dflockd_conn,
    key: (*const c_char, usize),
    limit: u64,
    lease_s: u64,
    acquired_out: *mut bool,
    grant_out: *mut dflockd_grant,
) -> Result<(), FfiError> {
    let acquired = Out::new(acquired_out, "acquired_out")?;
    let grant = Out::new(grant_out, "grant_out")?;
    let c = conn(c)?;
    // SAFETY: C contract.
    let key = unsafe { key_in(key.0, key.1) }?;
    match c.enqueue(kind, key, limit_for(kind, limit)?, opt_lease(lease_s))? {
        // SAFETY: checked out-pointers.
        Enqueued::Acquired(g) => unsafe {
            grant.write((&g).into());
            acquired.write(true);
        },
        // SAFETY: checked out-pointer.
        Enqueued::Queued => unsafe { acquired.write(false) },
    }
    Ok(())
}

fn wait(
    kind: Kind,
    c: *const dflockd_conn,
    key: (*const c_char, usize),
    timeout_s: u64,
    grant_out: *mut dflockd_grant,
) -> Result<(), FfiError> {
    let out = Out::new(grant_out, "grant_out")?;
    let c = conn(c)?;
    // SAFETY: C contract.
    let key = unsafe { key_in(key.0, key.1) }?;
    let grant = c.wait(kind, key, timeout_s)?;
    // SAFETY: checked out-pointer.
    unsafe { out.write((&grant).into()) };
    Ok(())
}

/// Close and free a connection; the server releases what it granted on it.
/// NULL is a no-op. Must not be freed twice, used after free, or freed
/// while another thread uses it (use `dflockd_conn_abort()` first).
///
/// In a child process after fork(), freeing a connection inherited from
/// the parent only closes the child's descriptor: the parent's connection
/// and its leases are unaffected.
///
/// No network I/O (closes the socket); returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_free(conn: *mut dflockd_conn) {
    guard_value((), || {
        if conn.is_null() {
            return;
        }
        // SAFETY: a handle from dflockd_client_connect, freed once.
        let c = unsafe { Box::from_raw(conn) };
        if c.conn.check_fork().is_ok() {
            drop(c);
            return;
        }
        // Inherited through fork(): close the child's descriptor only (no
        // shutdown(2), no request: the socket is the parent's too) and
        // never drop the rest (its mutex may be held by a parent thread).
        // SAFETY: the fd is open and owned by `c`, which is never dropped,
        // so nothing closes it again.
        unsafe { libc::close(c.conn.raw_fd()) };
        crate::fork::bury(c);
    })
}

/// Shut the connection's socket from any thread: a call blocked on it
/// returns `DFLOCKD_STATUS_CANCELLED`; later calls fail. Still free it.
///
/// No network I/O (shuts the socket down); returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_abort(conn: *const dflockd_conn) -> dflockd_status {
    guard(std::ptr::null_mut(), || {
        self::conn(conn)?.abort();
        Ok(())
    })
}

/// `auth`: authenticate with `secret` (connections from a client with an
/// auth token are already authenticated; a second auth gets
/// `DFLOCKD_STATUS_SERVER_ERROR`). `DFLOCKD_STATUS_AUTH` on a wrong secret
/// (the server then closes the connection).
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_auth(
    conn: *const dflockd_conn,
    secret: *const c_char,
    secret_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let c = self::conn(conn)?;
        // SAFETY: C contract.
        let secret = unsafe { str_in(secret, secret_len, "secret") }?;
        Ok(c.auth(secret)?)
    })
}

/// `ping`: check the connection is alive (2.x servers; 1.10 answers
/// `error`, reported as `DFLOCKD_STATUS_SERVER_ERROR`).
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_ping(
    conn: *const dflockd_conn,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || Ok(self::conn(conn)?.ping()?))
}

/// `barrier`: answered once the server (a cluster leader) has applied
/// everything acknowledged before it, a linearizable read barrier; a
/// single-node 2.x server answers at once. A cluster follower refuses it
/// with `DFLOCKD_STATUS_NOT_LEADER` (the leader it names, if any, in the
/// error object); 1.10 servers answer `DFLOCKD_STATUS_SERVER_ERROR`.
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_barrier(
    conn: *const dflockd_conn,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || Ok(self::conn(conn)?.barrier()?))
}

/// `stable-ref`: name this connection's session `reference` (1 to 64
/// printable ASCII characters, no space; once per connection) on a cluster
/// server. A waiter queued on a connection with a ref keeps its place when
/// a new connection that sent the same ref repeats the `w` after a failover
/// (servers run with `--orphan-ttl`). A malformed ref is
/// `DFLOCKD_STATUS_INVALID_ARGUMENT` (nothing sent); the server's refusal
/// (a second ref, a server without the command) is
/// `DFLOCKD_STATUS_SERVER_ERROR`. Clients in cluster mode send a random
/// ref on every connection they open, including the ones of
/// `dflockd_client_connect()`.
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_stable_ref(
    conn: *const dflockd_conn,
    reference: *const c_char,
    reference_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let c = self::conn(conn)?;
        // SAFETY: C contract.
        let reference = unsafe { str_in(reference, reference_len, "reference") }?;
        Ok(c.stable_ref(reference)?)
    })
}

/// `stats`: the server's statistics as JSON into `buf` (as
/// `dflockd_client_stats()`).
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_stats(
    conn: *const dflockd_conn,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = StrOut::new(buf, cap, out_len)?;
        let json = self::conn(conn)?.stats()?.to_json();
        // SAFETY: checked caller buffer.
        unsafe { out.write(&json) }
    })
}

/// `l`: acquire the lock `key`, blocking up to `timeout_s` seconds (0 = try
/// once). `lease_s` 0 = server default. `*grant_out` on success;
/// `DFLOCKD_STATUS_TIMEOUT` when not granted in time.
///
/// Network I/O: one request; returns within `timeout_s` + the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_lock_acquire(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    timeout_s: u64,
    lease_s: u64,
    grant_out: *mut dflockd_grant,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        acquire(Kind::Lock, conn, (key, key_len), timeout_s, 0, lease_s, grant_out)
    })
}

/// `r`: release the lock `key` held with `token`.
/// `DFLOCKD_STATUS_SERVER_ERROR` for a wrong, expired or released token.
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_lock_release(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    token: *const c_char,
    token_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        release(Kind::Lock, conn, (key, key_len), (token, token_len))
    })
}

/// `n`: renew the lock `key` held with `token` for `lease_s` seconds (0 =
/// server default). `*lease_out` = the new remaining lease in seconds.
/// `DFLOCKD_STATUS_SERVER_ERROR` if not held or already expired.
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_lock_renew(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    token: *const c_char,
    token_len: usize,
    lease_s: u64,
    lease_out: *mut u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        renew(
            Kind::Lock,
            conn,
            (key, key_len),
            (token, token_len),
            lease_s,
            lease_out,
        )
    })
}

/// `e`: join the lock's queue without blocking. `*acquired_out` = true and
/// `*grant_out` filled if the key was free; false if queued (then call
/// `dflockd_conn_lock_wait()` on this same connection).
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_lock_enqueue(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    lease_s: u64,
    acquired_out: *mut bool,
    grant_out: *mut dflockd_grant,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        enqueue(
            Kind::Lock,
            conn,
            (key, key_len),
            0,
            lease_s,
            acquired_out,
            grant_out,
        )
    })
}

/// `w`: wait up to `timeout_s` seconds for the grant after an enqueue on
/// this connection. `DFLOCKD_STATUS_TIMEOUT` removes the waiter;
/// `DFLOCKD_STATUS_NOT_ENQUEUED` without an enqueue.
///
/// Network I/O: one request; returns within `timeout_s` + the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_lock_wait(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    timeout_s: u64,
    grant_out: *mut dflockd_grant,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        wait(Kind::Lock, conn, (key, key_len), timeout_s, grant_out)
    })
}

/// `sl`: acquire one slot of the semaphore `key` with `limit` (≥ 1) slots;
/// otherwise as `dflockd_conn_lock_acquire()`, plus
/// `DFLOCKD_STATUS_LIMIT_MISMATCH`.
///
/// Network I/O: one request; returns within `timeout_s` + the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_sem_acquire(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    timeout_s: u64,
    limit: u64,
    lease_s: u64,
    grant_out: *mut dflockd_grant,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        acquire(
            Kind::Semaphore,
            conn,
            (key, key_len),
            timeout_s,
            limit,
            lease_s,
            grant_out,
        )
    })
}

/// `sr`: release a semaphore slot; as `dflockd_conn_lock_release()`.
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_sem_release(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    token: *const c_char,
    token_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        release(Kind::Semaphore, conn, (key, key_len), (token, token_len))
    })
}

/// `sn`: renew a semaphore slot; as `dflockd_conn_lock_renew()`.
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_sem_renew(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    token: *const c_char,
    token_len: usize,
    lease_s: u64,
    lease_out: *mut u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        renew(
            Kind::Semaphore,
            conn,
            (key, key_len),
            (token, token_len),
            lease_s,
            lease_out,
        )
    })
}

/// `se`: join a semaphore's queue; as `dflockd_conn_lock_enqueue()` with
/// `limit` (≥ 1).
///
/// Network I/O: one request; returns within the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_sem_enqueue(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    limit: u64,
    lease_s: u64,
    acquired_out: *mut bool,
    grant_out: *mut dflockd_grant,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        enqueue(
            Kind::Semaphore,
            conn,
            (key, key_len),
            limit,
            lease_s,
            acquired_out,
            grant_out,
        )
    })
}

/// `sw`: wait for a semaphore slot after `se`; as `dflockd_conn_lock_wait()`.
///
/// Network I/O: one request; returns within `timeout_s` + the I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_conn_sem_wait(
    conn: *const dflockd_conn,
    key: *const c_char,
    key_len: usize,
    timeout_s: u64,
    grant_out: *mut dflockd_grant,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        wait(Kind::Semaphore, conn, (key, key_len), timeout_s, grant_out)
    })
}
