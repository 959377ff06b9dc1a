//! The embedded dflockd test server through C: start it with options, read
//! its port, drive every fault control, stop it. Built with the
//! `test-server` feature (on by default).

use super::error::guard;
use super::error::{FfiError, dflockd_error};
use super::panic::guard_value;
use super::ptr::{Out, free, give, handle};
use super::status::dflockd_status;
use super::strings::{StrOut, bytes_in, opt_str_in, str_in};
use crate::protocol::MAX_SECONDS;
use crate::testserver::{ServerOptions, TestServer, TlsIdentity};
use std::ffi::c_char;
use std::path::Path;
use std::time::Duration;

/// Options for `dflockd_testserver_start()`: defaults as the real server
/// (127.0.0.1, an ephemeral port, lease 33 s, read timeout 23 s, sweep 1 s,
/// 1024 keys, no auth, no TLS). `dflockd_testcluster_start()` takes them
/// too, for every node of a cluster, with the cluster's own settings
/// (`dflockd_testserver_options_set_election_delay_ms()`,
/// `dflockd_testserver_options_set_orphan_ttl_ms()`). Not thread-safe;
/// free with `dflockd_testserver_options_free()`.
#[allow(non_camel_case_types)]
pub struct dflockd_testserver_options {
    pub(super) opts: ServerOptions,
    /// A cluster's election delay (`None`: the cluster default).
    pub(super) election_delay: Option<Duration>,
    /// A cluster's `--orphan-ttl` (`None`: waiters are not kept).
    pub(super) orphan_ttl: Option<Duration>,
}

/// A running embedded dflockd server on loopback, for tests and demos.
/// Thread-safe: every `const dflockd_testserver *` function (fault
/// controls included) may be called from any thread. Stop and free it with
/// `dflockd_testserver_stop()`.
#[allow(non_camel_case_types)]
pub struct dflockd_testserver {
    server: TestServer,
}

fn with_opts(
    o: *mut dflockd_testserver_options,
    err: *mut *mut dflockd_error,
    f: impl FnOnce(&mut ServerOptions) -> Result<(), FfiError>,
) -> dflockd_status {
    with_all_opts(o, err, |o| f(&mut o.opts))
}

/// [`with_opts`] for the options beyond one server's (a cluster's).
fn with_all_opts(
    o: *mut dflockd_testserver_options,
    err: *mut *mut dflockd_error,
    f: impl FnOnce(&mut dflockd_testserver_options) -> Result<(), FfiError>,
) -> dflockd_status {
    guard(err, || {
        // SAFETY: NULL or live options, used by one thread (contract).
        let o = unsafe { o.as_mut() }.ok_or_else(|| FfiError::null("opts"))?;
        f(o)
    })
}

fn server<'a>(s: *const dflockd_testserver) -> Result<&'a TestServer, FfiError> {
    // SAFETY: NULL or a live server handle (contract).
    unsafe { handle(s, "server") }.map(|h| &h.server)
}

/// Run a fault control that cannot fail (beyond a NULL handle).
fn control(s: *const dflockd_testserver, f: impl FnOnce(&TestServer)) -> dflockd_status {
    guard(std::ptr::null_mut(), || {
        f(server(s)?);
        Ok(())
    })
}

pub(super) fn millis(ms: u64, what: &str) -> Result<Duration, FfiError> {
    if ms == 0 {
        return Err(FfiError::invalid(format!("{what} must be at least 1 ms")));
    }
    Ok(Duration::from_millis(ms))
}

pub(super) fn io_err(what: &str, e: std::io::Error) -> FfiError {
    FfiError::new(dflockd_status::Io, format!("{what}: {e}"))
}

/// Create test-server options with the defaults. `*opts_out` receives them.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_new(
    opts_out: *mut *mut dflockd_testserver_options,
) -> dflockd_status {
    guard(std::ptr::null_mut(), || {
        let out = Out::new(opts_out, "opts_out")?;
        // SAFETY: checked out-pointer.
        unsafe {
            give(
                out,
                dflockd_testserver_options {
                    opts: ServerOptions::default(),
                    election_delay: None,
                    orphan_ttl: None,
                },
            )
        };
        Ok(())
    })
}

/// Free test-server options. NULL is a no-op.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_free(opts: *mut dflockd_testserver_options) {
    // SAFETY: NULL or options from dflockd_testserver_options_new, freed once.
    guard_value((), || unsafe { free(opts) })
}

/// Listen address (default `"127.0.0.1"`).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_host(
    opts: *mut dflockd_testserver_options,
    host: *const c_char,
    host_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        // SAFETY: C contract.
        o.host = unsafe { str_in(host, host_len, "host") }?.to_owned();
        Ok(())
    })
}

/// Protocol line to emulate where 1.10 and 2.x differ: `"2.x"` (default)
/// or `"1.10"` (`ping` answers `error`, random tokens, one key namespace
/// for locks and semaphores, ...; see protocol.md).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_server_line(
    opts: *mut dflockd_testserver_options,
    line: *const c_char,
    line_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        // SAFETY: C contract.
        let line = unsafe { str_in(line, line_len, "line") }?;
        o.line = line.parse().map_err(FfiError::invalid)?;
        Ok(())
    })
}

/// Listen port (default 0: an ephemeral port, see `dflockd_testserver_port()`).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_port(
    opts: *mut dflockd_testserver_options,
    port: u16,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        o.port = port;
        Ok(())
    })
}

/// Lease TTL in seconds granted when a request names none (default 33).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_default_lease(
    opts: *mut dflockd_testserver_options,
    lease_s: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        if !(1..=MAX_SECONDS).contains(&lease_s) {
            return Err(FfiError::invalid(format!(
                "default lease {lease_s} s is not in 1..={MAX_SECONDS}"
            )));
        }
        o.default_lease_ttl_s = lease_s;
        Ok(())
    })
}

/// Idle connection timeout in milliseconds (default 23000).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_read_timeout_ms(
    opts: *mut dflockd_testserver_options,
    timeout_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        o.read_timeout = millis(timeout_ms, "read timeout")?;
        Ok(())
    })
}

/// How often expired leases are swept, in milliseconds (default 1000).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_lease_sweep_ms(
    opts: *mut dflockd_testserver_options,
    interval_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        o.lease_sweep_interval = millis(interval_ms, "lease sweep interval")?;
        Ok(())
    })
}

/// Require `auth` with this secret; NULL = no auth (the default).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_auth_token(
    opts: *mut dflockd_testserver_options,
    token: *const c_char,
    token_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        // SAFETY: C contract.
        let token = unsafe { opt_str_in(token, token_len, "token") }?;
        if token.is_some_and(str::is_empty) {
            return Err(FfiError::invalid("auth token is empty"));
        }
        o.auth_token = token.map(str::to_owned);
        Ok(())
    })
}

/// Serve TLS with this PEM certificate chain and private key (copied).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_tls_pem(
    opts: *mut dflockd_testserver_options,
    cert_pem: *const u8,
    cert_len: usize,
    key_pem: *const u8,
    key_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        // SAFETY: C contract.
        let cert = unsafe { bytes_in(cert_pem, cert_len, "cert_pem") }?;
        let key = unsafe { bytes_in(key_pem, key_len, "key_pem") }?;
        o.tls = Some(TlsIdentity {
            cert_pem: cert.to_vec(),
            key_pem: key.to_vec(),
        });
        Ok(())
    })
}

/// Serve TLS with the PEM certificate chain and key in these files (read
/// now). `DFLOCKD_STATUS_IO` if a file cannot be read.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_tls_files(
    opts: *mut dflockd_testserver_options,
    cert_path: *const c_char,
    cert_path_len: usize,
    key_path: *const c_char,
    key_path_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        // SAFETY: C contract.
        let cert = unsafe { str_in(cert_path, cert_path_len, "cert_path") }?;
        let key = unsafe { str_in(key_path, key_path_len, "key_path") }?;
        let id = TlsIdentity::from_files(Path::new(cert), Path::new(key))
            .map_err(|e| io_err("reading TLS certificate/key", e))?;
        o.tls = Some(id);
        Ok(())
    })
}

/// Cap on distinct keys, locks and semaphores together (default 1024).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_max_locks(
    opts: *mut dflockd_testserver_options,
    max_locks: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        o.max_locks = max_locks;
        Ok(())
    })
}

/// Cap on each key's wait queue.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_max_waiters(
    opts: *mut dflockd_testserver_options,
    max_waiters: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        o.max_waiters = max_waiters;
        Ok(())
    })
}

/// Cap on concurrent connections; extra ones are reset (0 = unlimited).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_max_connections(
    opts: *mut dflockd_testserver_options,
    max_connections: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        o.max_connections = max_connections;
        Ok(())
    })
}

/// Whether a closed connection's leases are released at once (default true).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_auto_release(
    opts: *mut dflockd_testserver_options,
    enabled: bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        o.auto_release_on_disconnect = enabled;
        Ok(())
    })
}

/// Follower-mode argument: `follower` false = leader (default); true =
/// refuse mutating commands with `error_not_leader`, naming `leader`
/// (`host:port`) or, when `leader` is NULL, no one.
///
/// # Safety
/// C contract for `leader`.
unsafe fn follower_arg(
    follower: bool,
    leader: *const c_char,
    leader_len: usize,
) -> Result<Option<Option<String>>, FfiError> {
    // SAFETY: forwarded contract.
    let leader = unsafe { opt_str_in(leader, leader_len, "leader") }?;
    Ok(follower.then(|| leader.map(str::to_owned)))
}

/// Start in follower mode (see `dflockd_testserver_set_follower()`).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_follower(
    opts: *mut dflockd_testserver_options,
    follower: bool,
    leader: *const c_char,
    leader_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_opts(opts, err, |o| {
        // SAFETY: C contract.
        o.follower = unsafe { follower_arg(follower, leader, leader_len) }?;
        Ok(())
    })
}

/// Cluster only (`dflockd_testcluster_start()`; a single server ignores
/// it): the time from a leader's loss (killed, paused, drained) or the cold
/// start to the next leader, in milliseconds (≥ 1; default 600).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_election_delay_ms(
    opts: *mut dflockd_testserver_options,
    delay_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_all_opts(opts, err, |o| {
        o.election_delay = Some(millis(delay_ms, "election delay")?);
        Ok(())
    })
}

/// Cluster only (`dflockd_testcluster_start()`; a single server ignores
/// it): dflockd's `--orphan-ttl` in milliseconds: how long a waiter queued
/// on a connection that went with a dead or draining leader keeps its
/// place for a new connection with the same `stable-ref`. 0 (the default)
/// keeps none.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_options_set_orphan_ttl_ms(
    opts: *mut dflockd_testserver_options,
    ttl_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_all_opts(opts, err, |o| {
        o.orphan_ttl = (ttl_ms != 0).then(|| Duration::from_millis(ttl_ms));
        Ok(())
    })
}

/// Start a server (`opts` NULL = defaults; options are copied). It serves
/// on its own threads until `dflockd_testserver_stop()`.
///
/// Binds and listens on the configured address; no other network I/O; returns
/// at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_start(
    opts: *const dflockd_testserver_options,
    server_out: *mut *mut dflockd_testserver,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = Out::new(server_out, "server_out")?;
        // SAFETY: NULL or live options (contract).
        let opts = unsafe { opts.as_ref() }.map_or_else(ServerOptions::default, |o| o.opts.clone());
        let server = TestServer::start(opts).map_err(|e| io_err("starting the test server", e))?;
        super::log::log(
            super::log::LogLevel::Info,
            &format!("test server listening on {}", server.addr()),
        );
        // SAFETY: checked out-pointer.
        unsafe { give(out, dflockd_testserver { server }) };
        Ok(())
    })
}

/// Stop the server (connections closed, port and threads freed) and free
/// the handle. NULL is a no-op. Not concurrently with other calls on it.
///
/// No I/O to other hosts; closes every connection and returns once the server's
/// threads, woken, have ended (promptly).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_stop(server: *mut dflockd_testserver) {
    guard_value((), || {
        if !server.is_null() {
            // SAFETY: a handle from dflockd_testserver_start, freed once.
            let s = unsafe { Box::from_raw(server) };
            s.server.stop();
        }
    })
}

/// The port the server listens on (0 for NULL).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_port(server: *const dflockd_testserver) -> u16 {
    guard_value(0, || self::server(server).map_or(0, TestServer::port))
}

/// The server's address as `host:port` (the `DFLOCKD_SERVERS` format).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_addr(
    server: *const dflockd_testserver,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let out = StrOut::new(buf, cap, out_len)?;
        let addr = self::server(server)?.addr().to_string();
        // SAFETY: checked caller buffer.
        unsafe { out.write(&addr) }
    })
}

/// Fault: stop answering (requests are read, no replies) until resumed.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_pause(server: *const dflockd_testserver) -> dflockd_status {
    control(server, TestServer::pause)
}

/// Answer again after `dflockd_testserver_pause()`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_resume(server: *const dflockd_testserver) -> dflockd_status {
    control(server, TestServer::resume)
}

/// Fault: close every client connection now (their leases are released as
/// on disconnect).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_drop_connections(server: *const dflockd_testserver) -> dflockd_status {
    control(server, TestServer::drop_connections)
}

/// Fault: while `refuse` is true, new connections are closed at once.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_refuse_connections(
    server: *const dflockd_testserver,
    refuse: bool,
) -> dflockd_status {
    control(server, |s| s.refuse_connections(refuse))
}

/// Fault: delay every reply by `delay_ms` milliseconds (0 = no delay).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_set_reply_delay_ms(
    server: *const dflockd_testserver,
    delay_ms: u64,
) -> dflockd_status {
    control(server, |s| s.set_reply_delay(Duration::from_millis(delay_ms)))
}

/// Fault: replace every reply by these raw bytes (copied), e.g.
/// `"ok ZZZ 5\n"`, to test how clients handle a hostile server; `raw` NULL
/// restores normal replies.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_set_hostile_reply(
    server: *const dflockd_testserver,
    raw: *const u8,
    raw_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let s = self::server(server)?;
        let raw = if raw.is_null() {
            None
        } else {
            // SAFETY: C contract.
            Some(unsafe { bytes_in(raw, raw_len, "raw") }?.to_vec())
        };
        s.set_hostile_reply(raw);
        Ok(())
    })
}

/// Fault: switch follower mode. `follower` true refuses mutating commands
/// with `error_not_leader <leader>` (bare when `leader` is NULL); false
/// makes it a leader again.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_set_follower(
    server: *const dflockd_testserver,
    follower: bool,
    leader: *const c_char,
    leader_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        let s = self::server(server)?;
        // SAFETY: C contract.
        s.set_follower(unsafe { follower_arg(follower, leader, leader_len) }?);
        Ok(())
    })
}

/// Fault: restart on the same port, dropping every connection and all
/// state (fences keep rising).
///
/// No I/O to other hosts; returns once the old connections' threads have ended
/// (promptly).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_restart(
    server: *const dflockd_testserver,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    guard(err, || {
        self::server(server)?
            .restart()
            .map_err(|e| io_err("restarting the test server", e))
    })
}

/// Fault: begin a graceful shutdown as on SIGTERM (waiters get `error`,
/// the next request gets `error_draining`, new connections are refused).
///
/// No I/O to other hosts; returns once the acceptor thread has ended
/// (promptly).
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_testserver_drain(server: *const dflockd_testserver) -> dflockd_status {
    control(server, TestServer::drain)
}
