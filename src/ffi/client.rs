//! `dflockd_client`: the thread-safe entry point (servers, pool, sharding)
//! from which locks, semaphores and connections are made.

use super::config::{Draft, dflockd_config};
use super::conn::dflockd_conn;
use super::error::guard;
use super::error::{FfiError, dflockd_error};
use super::lease::dflockd_lease;
use super::log::{LogLevel, log};
use super::panic::guard_value;
use super::ptr::{Out, free, give, handle};
use super::status::dflockd_status;
use super::strings::{StrOut, str_in};
use crate::client::{Client, Config};
use crate::transport::TlsOptions;
use std::ffi::c_char;
use std::sync::Arc;

/// A dflockd client: the configured servers, a pool of authenticated
/// connections per server, and the key → server routing.
///
/// Made by `dflockd_client_new()`, freed by `dflockd_client_free()`.
/// Thread-safe: every function taking `const dflockd_client *` may be called
/// from any number of threads at once. Lease and connection handles made
/// from a client keep what they need alive, so they may be freed before or
/// after the client.
#[allow(non_camel_case_types)]
pub struct dflockd_client {
    client: Client,
    servers: usize,
}

/// Build and validate the core configuration from the C builder.
fn core_config(d: &Draft) -> Result<Config, FfiError> {
    if d.servers.is_empty() {
        return Err(FfiError::invalid(
            "no servers configured: call dflockd_config_set_servers or dflockd_config_add_server",
        ));
    }
    let mut c = Config::new(d.servers.clone());
    c.auth_token = d.auth_token.clone();
    if d.tls {
        c.tls = Some(TlsOptions {
            ca_pem: d.tls_ca_pem.clone(),
            ca_file: d.tls_ca_file.clone(),
            system_roots: d.tls_system_roots,
            server_name: d.tls_server_name.clone(),
        });
    } else if d.tls_server_name.is_some() {
        return Err(FfiError::invalid(
            "a TLS server name is set but TLS is off: also set a CA (file, PEM or system roots)",
        ));
    }
    if let Some(t) = d.io_timeout {
        c.io_timeout = t;
    }
    if let Some(t) = d.connect_timeout {
        c.connect_timeout = t;
    }
    if let Some(k) = d.keepalive {
        c.keepalive = k;
    }
    if let Some(t) = d.server_read_timeout {
        c.server_read_timeout = t;
    }
    if let Some(r) = d.renew_ratio {
        c.renew_ratio = r;
    }
    if let Some(a) = d.auto_release_on_disconnect {
        c.auto_release_on_disconnect = a;
    }
    c.default_lease_ttl_s = d.default_lease_s;
    c.cluster = d.cluster;
    if let Some(n) = d.max_leases_per_connection {
        c.max_leases_per_connection = n;
    }
    if let Some(s) = d.shard {
        c.shard = Some(Arc::new(move |key: &str, n: usize| s.call(key, n)));
    }
    Ok(c)
}

/// Create a client from `cfg` (copied: `cfg` may be freed afterwards).
/// Validates the configuration without any network I/O (servers are
/// contacted on first use). `*client_out` receives the handle; free it with
/// `dflockd_client_free()`. Errors: `INVALID_ARGUMENT` (no servers, TLS
/// settings inconsistent, ...), `TLS` (unreadable CA).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_new(
    cfg: *const dflockd_config,
    client_out: *mut *mut dflockd_client,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(client_out, "client_out")?;
        // SAFETY: NULL or a live config (contract).
        let cfg = unsafe { handle(cfg, "cfg") }?;
        let servers = cfg.draft.servers.len();
        let client = Client::new(core_config(&cfg.draft)?)?;
        log(LogLevel::Info, &format!("client created for {servers} server(s)"));
        // SAFETY: checked out-pointer.
        unsafe { give(out, dflockd_client { client, servers }) };
        Ok(())
    })
}

/// Free a client. NULL is a no-op. Idle pooled connections are closed;
/// leases and connections made from it stay usable. Must not be freed twice
/// or used after free, and no other thread may be using it.
///
/// Library threads: leases keep their client alive, so the event engine
/// (renewals, evented operations) and the notifier (callbacks, the
/// engine's log messages) run while any client or lease lives. When this
/// frees the last of them, the threads are stopped and joined before it
/// returns: lost callbacks and async completions already queued still run
/// first, but queued log messages are delivered for at most 100 ms more
/// and the rest dropped, so a slow log callback cannot hold up the free.
/// Host names are resolved on short-lived threads (`getaddrinfo`, which
/// cannot be interrupted): one still inside the system resolver 100 ms
/// after the free began is detached instead of joined; it holds nothing
/// of the freed client and exits when the resolver returns (IP-literal
/// servers never start one). Called on a library thread (inside a callback) the threads are
/// detached instead and exit by themselves. The next
/// `dflockd_client_new()` starts them again.
///
/// In a child process after fork(), freeing a client inherited from the
/// parent sends nothing, closes no connection of the parent's and never
/// blocks: it is leaked.
///
/// No network I/O. Returns at once, except when it stops the library
/// threads: then it waits for a renewal in flight (at most the smaller of
/// 5 s and the I/O timeout), for queued lost callbacks and completions to
/// return, and at most 100 ms (plus the one log callback call running)
/// for queued log messages and resolver threads together.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_free(client: *mut dflockd_client) {
    guard_value((), || {
        // SAFETY: NULL or a client from dflockd_client_new, freed once.
        unsafe { free(client) }
    })
}

/// The number of configured servers (valid indexes for
/// `dflockd_client_connect()` and `dflockd_client_stats()` are below it).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_server_count(
    client: *const dflockd_client,
    count_out: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(count_out, "count_out")?;
        // SAFETY: NULL or a live client (contract).
        let c = unsafe { self::client(client) }?;
        // SAFETY: checked out-pointer.
        unsafe { out.write(c.servers) };
        Ok(())
    })
}

/// The index of the server that owns `key` (CRC-32 shard, or the shard
/// callback of the config, its result checked).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_server_for(
    client: *const dflockd_client,
    key: *const c_char,
    key_len: usize,
    index_out: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(index_out, "index_out")?;
        // SAFETY: NULL or a live client; key valid for key_len (contract).
        let c = unsafe { self::client(client) }?;
        let key = unsafe { str_in(key, key_len, "key") }?;
        let index = c.client.server_for(key)?;
        // SAFETY: checked out-pointer.
        unsafe { out.write(index) };
        Ok(())
    })
}

/// Create a lock handle for `key` (validated: non-empty, at most 256 bytes,
/// no space, tab, CR or LF). Nothing is acquired yet. `*lease_out` receives
/// the handle; free it with `dflockd_lease_free()` (which releases the lock
/// if held).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_lock(
    client: *const dflockd_client,
    key: *const c_char,
    key_len: usize,
    lease_out: *mut *mut dflockd_lease,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(lease_out, "lease_out")?;
        // SAFETY: NULL or a live client; key valid for key_len (contract).
        let c = unsafe { self::client(client) }?;
        let key = unsafe { str_in(key, key_len, "key") }?;
        let lease = c.client.lock(key)?;
        // SAFETY: checked out-pointer.
        unsafe { give(out, dflockd_lease::new(lease)) };
        Ok(())
    })
}

/// Create a counting-semaphore handle for `key` allowing `limit` (≥ 1)
/// concurrent holders. The first acquirer of a key fixes its limit; a
/// different limit later gets `DFLOCKD_STATUS_LIMIT_MISMATCH`. Nothing is
/// acquired yet. Free with `dflockd_lease_free()`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_semaphore(
    client: *const dflockd_client,
    key: *const c_char,
    key_len: usize,
    limit: u64,
    lease_out: *mut *mut dflockd_lease,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(lease_out, "lease_out")?;
        // SAFETY: NULL or a live client; key valid for key_len (contract).
        let c = unsafe { self::client(client) }?;
        let key = unsafe { str_in(key, key_len, "key") }?;
        if limit == 0 {
            return Err(FfiError::invalid("semaphore limit must be at least 1"));
        }
        let lease = c.client.semaphore(key, limit)?;
        // SAFETY: checked out-pointer.
        unsafe { give(out, dflockd_lease::new(lease)) };
        Ok(())
    })
}

/// Open a new authenticated low-level connection to server `server` (an
/// index below `dflockd_client_server_count()`), for the one-function-per-
/// command API (`dflockd_conn_*`). Free it with `dflockd_conn_free()`.
///
/// Network I/O: opens a connection (resolve, connect, TLS, auth); returns
/// within the connect timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_connect(
    client: *const dflockd_client,
    server: usize,
    conn_out: *mut *mut dflockd_conn,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(conn_out, "conn_out")?;
        // SAFETY: NULL or a live client (contract).
        let c = unsafe { self::client(client) }?;
        check_index(c, server)?;
        let conn = c.client.connect(server)?;
        // SAFETY: checked out-pointer.
        unsafe { give(out, dflockd_conn::new(conn)) };
        Ok(())
    })
}

/// Fetch server `server`'s statistics as a JSON object (the `stats` reply:
/// connections, locks, semaphores, idle keys) into `buf` (see the output
/// string conventions at the top of this header; a too-small buffer gives
/// `BUFFER_TOO_SMALL` with the size needed, but the next call fetches fresh
/// figures, whose size may differ).
///
/// Network I/O: one request, on a pooled connection or a new one; returns
/// within connect timeout + I/O timeout.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_stats(
    client: *const dflockd_client,
    server: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = StrOut::new(buf, cap, out_len)?;
        // SAFETY: NULL or a live client (contract).
        let c = unsafe { self::client(client) }?;
        check_index(c, server)?;
        let json = c.client.stats(server)?.to_json();
        // SAFETY: checked caller buffer.
        unsafe { out.write(&json) }
    })
}

/// `barrier`: return once everything the servers acknowledged before it is
/// applied (a linearizable read barrier: a read made after it sees every
/// write acknowledged before it). In cluster mode
/// (`dflockd_config_set_cluster()`) it goes to the leader, following
/// redirects and waiting out an election; otherwise it goes to every
/// configured server in turn (a single-node 2.x server answers at once;
/// 1.10 servers have no `barrier` and answer `DFLOCKD_STATUS_SERVER_ERROR`).
///
/// Network I/O: on a pooled connection or a new one; returns within
/// connect timeout + I/O timeout (cluster mode: redirects and elections
/// included), or that per server when sharding.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_barrier(
    client: *const dflockd_client,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        // SAFETY: NULL or a live client (contract).
        let c = unsafe { self::client(client) }?;
        Ok(c.client.barrier()?)
    })
}

/// Borrow the client behind a handle pointer, refusing one inherited
/// through `fork()` (`DFLOCKD_STATUS_FORKED`).
///
/// # Safety
/// `p` is NULL or a live client handle (contract).
unsafe fn client<'a>(p: *const dflockd_client) -> Result<&'a dflockd_client, FfiError> {
    // SAFETY: forwarded contract.
    let c = unsafe { handle(p, "client") }?;
    c.client.check_fork()?;
    Ok(c)
}

/// The `Client` behind a handle pointer (not inherited through `fork()`),
/// for the exports of other files (`dflockd_client_stats_start`).
///
/// # Safety
/// `p` is NULL or a live client handle (contract).
pub(crate) unsafe fn client_ref<'a>(p: *const dflockd_client) -> Result<&'a Client, FfiError> {
    // SAFETY: forwarded contract.
    let c = unsafe { client(p) }?;
    Ok(&c.client)
}

fn check_index(c: &dflockd_client, server: usize) -> Result<(), FfiError> {
    if server >= c.servers {
        return Err(FfiError::invalid(format!(
            "server index {server} is out of range: {} server(s) configured",
            c.servers
        )));
    }
    Ok(())
}

/// A client's counters, read with `dflockd_client_metrics()`. Counters
/// only grow (from the client's creation); `open_connections` and
/// `idle_connections` are current values. Fields are only ever appended.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct dflockd_metrics {
    /// Grants reported to the caller (acquire, an enqueue that acquired, wait).
    pub acquires: u64,
    /// Acquires and waits the server answered `timeout` (a try-acquire that
    /// found the key taken counts too).
    pub acquire_timeouts: u64,
    /// Successful releases.
    pub releases: u64,
    /// Successful renewals (background, and before reporting a late grant).
    pub renewals: u64,
    /// Renewal attempts that failed transiently (slow, paused or
    /// unreachable server) and were retried.
    pub renewal_retries: u64,
    /// Held leases lost.
    pub leases_lost: u64,
    /// Connections opened to replace one that broke (renewal or release
    /// on a fresh connection).
    pub reconnects: u64,
    /// `error_not_leader` redirects followed.
    pub redirects: u64,
    /// Requests and connection attempts that hit their deadline.
    pub deadline_hits: u64,
    /// Connections opened, reconnects included.
    pub connections_opened: u64,
    /// Connections open now: in use, holding leases, or idle in the pool.
    pub open_connections: u64,
    /// Of those, idle in the pool now.
    pub idle_connections: u64,
    /// Cluster mode: times the client's idea of the leader moved to another
    /// member (a refusal, a dead or draining leader, an election).
    pub failovers: u64,
    /// Held leases doubted (their connection went: not reported held) and
    /// then confirmed held again by a renewal elsewhere.
    pub leases_confirmed: u64,
    /// Connections carrying held leases now (each carries up to
    /// `dflockd_config_set_max_leases_per_connection()` of them).
    pub home_connections: u64,
    /// The latest a renewal went out after it was due, in microseconds
    /// (the worst since the client was made).
    pub renewal_lateness_max_us: u64,
}

/// Copy the client's counters into `*out`. Pass `out_size =
/// sizeof(dflockd_metrics)`: a program built against an older header (a
/// smaller struct) gets the fields it knows; fields a newer header adds
/// are left untouched by an older library. No network I/O; never blocks.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_client_metrics(
    client: *const dflockd_client,
    out: *mut dflockd_metrics,
    out_size: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        // SAFETY: NULL or a live client (contract).
        let c = unsafe { handle(client, "client") }?;
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        if out_size == 0 {
            return Err(FfiError::invalid("out_size is 0; pass sizeof(dflockd_metrics)"));
        }
        let m = c.client.metrics();
        let full = dflockd_metrics {
            acquires: m.acquires,
            acquire_timeouts: m.acquire_timeouts,
            releases: m.releases,
            renewals: m.renewals,
            renewal_retries: m.renewal_retries,
            leases_lost: m.leases_lost,
            reconnects: m.reconnects,
            redirects: m.redirects,
            deadline_hits: m.deadline_hits,
            connections_opened: m.connections_opened,
            open_connections: m.open_connections,
            idle_connections: m.idle_connections,
            failovers: m.failovers,
            leases_confirmed: m.leases_confirmed,
            home_connections: m.home_connections,
            renewal_lateness_max_us: m.renewal_lateness_max_us,
        };
        let n = out_size.min(std::mem::size_of::<dflockd_metrics>());
        // SAFETY: `out` is non-NULL and, by contract, valid for `out_size`
        // writable bytes; we copy at most that many from a local value.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&full as *const dflockd_metrics).cast::<u8>(),
                out.cast::<u8>(),
                n,
            )
        };
        Ok(())
    })
}
