//! `dflockd_config`: a mutable builder the caller fills, then hands (by
//! const pointer, copied) to `dflockd_client_new`.

use super::error::guard;
use super::error::{FfiError, dflockd_error};
use super::ptr::{Out, free, give};
use super::status::dflockd_status;
use super::strings::{bytes_in, opt_str_in, str_in};
use crate::client::Config;
use crate::protocol::MAX_SECONDS;
use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::time::Duration;

/// Chooses the server for a key: returns an index in `[0, n_servers)`.
/// `key` points to `key_len` bytes of UTF-8 and is NOT NUL-terminated; it
/// is valid only during the call. Called on the thread that creates a lock
/// or semaphore handle (or asks `dflockd_client_server_for`), possibly on
/// several threads at once: it must be thread-safe, fast, must not block
/// and must not call into libdflockd. An index out of range makes the call
/// fail with `DFLOCKD_STATUS_INVALID_ARGUMENT`.
#[allow(non_camel_case_types)]
pub type dflockd_shard_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        key: *const c_char,
        key_len: usize,
        n_servers: usize,
    ) -> usize,
>;

#[derive(Clone, Copy)]
pub(crate) struct ShardCallback {
    pub cb: unsafe extern "C" fn(*mut c_void, *const c_char, usize, usize) -> usize,
    pub userdata: *mut c_void,
}

// SAFETY: dflockd_config_set_shard's contract makes the callback and its
// userdata usable from any thread.
unsafe impl Send for ShardCallback {}
unsafe impl Sync for ShardCallback {}

impl ShardCallback {
    pub fn call(&self, key: &str, n_servers: usize) -> usize {
        // SAFETY: dflockd_shard_fn's contract; key is valid for the call.
        unsafe { (self.cb)(self.userdata, key.as_ptr().cast(), key.len(), n_servers) }
    }
}

/// Client settings before validation. Unset fields take the core defaults.
#[derive(Clone, Default)]
pub(crate) struct Draft {
    pub servers: Vec<(String, u16)>,
    pub auth_token: Option<String>,
    pub tls: bool,
    pub tls_ca_pem: Vec<u8>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_system_roots: bool,
    pub tls_server_name: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub io_timeout: Option<Duration>,
    pub keepalive: Option<Duration>,
    pub server_read_timeout: Option<Duration>,
    pub default_lease_s: Option<u64>,
    pub renew_ratio: Option<f64>,
    pub shard: Option<ShardCallback>,
    pub auto_release_on_disconnect: Option<bool>,
    pub cluster: bool,
    pub max_leases_per_connection: Option<usize>,
}

/// Client configuration: servers, auth, TLS, timings, sharding.
///
/// Created with `dflockd_config_new()`, filled with the `dflockd_config_set_*`
/// functions, read (copied) by `dflockd_client_new()`, freed with
/// `dflockd_config_free()`; it may be freed right after the client is made.
/// Not thread-safe: do not modify one config from two threads at once.
#[allow(non_camel_case_types)]
pub struct dflockd_config {
    pub(crate) draft: Draft,
}

fn seconds(value: u64, what: &str) -> Result<Option<u64>, FfiError> {
    match value {
        0 => Ok(None),
        1..=MAX_SECONDS => Ok(Some(value)),
        _ => Err(FfiError::invalid(format!(
            "{what} {value} s is above the maximum {MAX_SECONDS} s"
        ))),
    }
}

fn millis(value: u64, what: &str) -> Result<Duration, FfiError> {
    if value == 0 {
        return Err(FfiError::invalid(format!("{what} must be at least 1 ms")));
    }
    Ok(Duration::from_millis(value))
}

/// Run `f` on the config behind `cfg` (NULL → NULL_PARAMETER).
fn with_config(
    cfg: *mut dflockd_config,
    err: *mut *mut dflockd_error,
    f: impl FnOnce(&mut Draft) -> Result<(), FfiError>,
) -> dflockd_status {
    guard(err, || {
        // SAFETY: NULL or a live config, not used concurrently (contract).
        let cfg = unsafe { cfg.as_mut() }.ok_or_else(|| FfiError::null("cfg"))?;
        f(&mut cfg.draft)
    })
}

/// Create an empty configuration (no servers; defaults for the rest:
/// connect timeout 10 s, server-default lease, renew ratio 0.5, keepalive
/// 10 s, server read timeout 23 s, CRC-32 sharding, no auth, no TLS). `*cfg_out` receives the new
/// handle; free it with `dflockd_config_free()`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_new(cfg_out: *mut *mut dflockd_config) -> dflockd_status {
    guard(std::ptr::null_mut(), || {
        let out = Out::new(cfg_out, "cfg_out")?;
        // SAFETY: checked out-pointer.
        unsafe {
            give(
                out,
                dflockd_config {
                    draft: Draft::default(),
                },
            )
        };
        Ok(())
    })
}

/// Free a configuration. NULL is a no-op. Must not be freed twice or used
/// after free. Clients made from it are unaffected.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_free(cfg: *mut dflockd_config) {
    super::panic::guard_value((), || {
        // SAFETY: NULL or a config from dflockd_config_new, freed once.
        unsafe { free(cfg) }
    })
}

/// Replace the server list with `servers`: `host:port` items separated by
/// commas (`"10.0.0.1:6388,10.0.0.2:6388"`, IPv6 as `[::1]:6388`), the
/// format of the `DFLOCKD_SERVERS` environment variable. The order matters:
/// keys are sharded by index.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_servers(
    cfg: *mut dflockd_config,
    servers: *const c_char,
    servers_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        // SAFETY: caller contract: servers valid for servers_len bytes.
        let list = unsafe { str_in(servers, servers_len, "servers") }?;
        d.servers = Config::parse_servers(list)?;
        Ok(())
    })
}

/// Append one server (`host` without port, e.g. `"127.0.0.1"`, `"::1"`).
/// `port` must not be 0.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_add_server(
    cfg: *mut dflockd_config,
    host: *const c_char,
    host_len: usize,
    port: u16,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        // SAFETY: caller contract: host valid for host_len bytes.
        let host = unsafe { str_in(host, host_len, "host") }?;
        if host.is_empty() || host.contains(char::is_whitespace) || port == 0 {
            return Err(FfiError::invalid(format!(
                "server `{host}` port {port} is not a valid address"
            )));
        }
        d.servers.push((host.to_owned(), port));
        Ok(())
    })
}

/// Set the shared secret sent with `auth` on every new connection; NULL
/// removes it. The library never logs it.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_auth_token(
    cfg: *mut dflockd_config,
    token: *const c_char,
    token_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        // SAFETY: caller contract: token NULL or valid for token_len bytes.
        let token = unsafe { opt_str_in(token, token_len, "token") }?;
        if token.is_some_and(|t| t.is_empty() || t.contains(['\r', '\n'])) {
            return Err(FfiError::invalid(
                "auth token must be non-empty and hold no line break",
            ));
        }
        d.auth_token = token.map(str::to_owned);
        Ok(())
    })
}

/// Use TLS and trust the PEM CA certificates in the file at `path` (read
/// when the client is created). Certificate verification is always on.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_tls_ca_file(
    cfg: *mut dflockd_config,
    path: *const c_char,
    path_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        // SAFETY: caller contract: path valid for path_len bytes.
        let path = unsafe { str_in(path, path_len, "path") }?;
        if path.is_empty() {
            return Err(FfiError::invalid("CA file path is empty"));
        }
        d.tls = true;
        d.tls_ca_file = Some(PathBuf::from(path));
        Ok(())
    })
}

/// Use TLS and trust the PEM CA certificates in `pem` (copied; may be freed
/// after the call). Adds to any earlier PEM bytes.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_tls_ca_pem(
    cfg: *mut dflockd_config,
    pem: *const u8,
    pem_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        // SAFETY: caller contract: pem valid for pem_len bytes.
        let pem = unsafe { bytes_in(pem, pem_len, "pem") }?;
        if pem.is_empty() {
            return Err(FfiError::invalid("CA PEM is empty"));
        }
        d.tls = true;
        d.tls_ca_pem.extend_from_slice(pem);
        d.tls_ca_pem.push(b'\n');
        Ok(())
    })
}

/// Use TLS and (when `enabled`) also trust the operating system's root
/// certificates. With `enabled` false the system roots are not trusted
/// (the default), but TLS stays on if a CA was set.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_tls_system_roots(
    cfg: *mut dflockd_config,
    enabled: bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.tls_system_roots = enabled;
        d.tls |= enabled;
        Ok(())
    })
}

/// Set the name checked against the server certificate (default: the host
/// of each server address); NULL restores the default. Does not by itself
/// turn TLS on.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_tls_server_name(
    cfg: *mut dflockd_config,
    name: *const c_char,
    name_len: usize,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        // SAFETY: caller contract: name NULL or valid for name_len bytes.
        let name = unsafe { opt_str_in(name, name_len, "name") }?;
        if name.is_some_and(str::is_empty) {
            return Err(FfiError::invalid("TLS server name is empty"));
        }
        d.tls_server_name = name.map(str::to_owned);
        Ok(())
    })
}

/// Set the connect timeout in milliseconds (≥ 1; default 10000): the bound
/// on opening one connection, name resolution + TCP connect + TLS handshake
/// + `auth` together.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_connect_timeout_ms(
    cfg: *mut dflockd_config,
    timeout_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.connect_timeout = Some(millis(timeout_ms, "connect timeout")?);
        Ok(())
    })
}

/// Set the I/O timeout in milliseconds (≥ 1; default 5000): how long a
/// server may take to answer a request beyond the time the request itself
/// lets it wait (an acquire's `timeout_s`). A server that accepts but never
/// answers, stalls halfway through a reply, or is paused fails the call
/// with `DFLOCKD_STATUS_DEADLINE` after this instead of blocking it. Every
/// call's worst case in this header is stated with this and the connect
/// timeout.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_io_timeout_ms(
    cfg: *mut dflockd_config,
    timeout_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.io_timeout = Some(millis(timeout_ms, "I/O timeout")?);
        Ok(())
    })
}

/// Set the lease TTL in seconds requested for every acquire (1 ..=
/// 9223372036); 0 means the server's default (33 s unless configured).
/// Each handle can override it with `dflockd_lease_set_ttl()`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_default_lease(
    cfg: *mut dflockd_config,
    lease_s: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.default_lease_s = seconds(lease_s, "lease")?;
        Ok(())
    })
}

/// Set when a held lease is renewed, as a fraction of its TTL, strictly
/// between 0 and 1 (default 0.5: a 30 s lease is renewed every 15 s).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_renew_ratio(
    cfg: *mut dflockd_config,
    ratio: f64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(FfiError::invalid(format!("renew ratio {ratio} is not in (0, 1)")));
        }
        d.renew_ratio = Some(ratio);
        Ok(())
    })
}

/// Set the longest silence on a connection holding a lease, in milliseconds
/// (≥ 100, checked when the client is made; default 10000), and the
/// longest a pooled connection stays idle. Servers close connections idle
/// for their read timeout (23 s by default), so renewals happen at least
/// this often whatever the lease; the value in effect is at most half the
/// server read timeout (`dflockd_config_set_server_read_timeout_ms()`).
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_keepalive_ms(
    cfg: *mut dflockd_config,
    keepalive_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.keepalive = Some(millis(keepalive_ms, "keepalive")?);
        Ok(())
    })
}

/// Set the servers' idle timeout in milliseconds (dflockd's
/// `--read-timeout`; ≥ 1000, default 23000): a server closes a connection
/// on which no complete request arrives for this long, releasing the
/// leases held on it. Set it when the servers run with another value: the
/// keepalive in effect is at most half of it (a 2000 ms read timeout
/// renews held leases at least every second whatever their TTL and the
/// keepalive), leaving room for a slow reply or a retry. Shorter than
/// 1000 ms is `DFLOCKD_STATUS_INVALID_ARGUMENT`: renewals could not keep
/// up.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_server_read_timeout_ms(
    cfg: *mut dflockd_config,
    timeout_ms: u64,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        if timeout_ms < 1000 {
            return Err(FfiError::invalid(format!(
                "server read timeout must be at least 1000 ms (renewals every half of it must keep up), \
                 got {timeout_ms}"
            )));
        }
        d.server_read_timeout = Some(Duration::from_millis(timeout_ms));
        Ok(())
    })
}

/// Say whether the servers release a lease when the connection holding it
/// closes (dflockd's `--auto-release-on-disconnect`; default true, as on
/// the server). True: a lease whose connection the server closed is lost
/// at once (`is_held()` false within milliseconds, then the lost
/// callback / LOST event). False (servers run with auto-release off): such
/// a lease is not reported held until a renewal on a fresh connection
/// confirms it, else it is lost.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_auto_release_on_disconnect(
    cfg: *mut dflockd_config,
    enabled: bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.auto_release_on_disconnect = Some(enabled);
        Ok(())
    })
}

/// Set the most held leases one connection carries (1..=65536; default
/// 1024; 1: one connection per lease, as the Python and Go clients do).
/// Held leases share their connections: their renewals go out together,
/// pipelined, so 100,000 leases need about a hundred sockets, not 100,000.
/// The trade-off is the blast radius: when a connection drops, every lease
/// on it is reported lost (or, with auto-release off or in cluster mode,
/// doubted and confirmed elsewhere), each as for a single one. An acquire
/// that must wait still gets a connection of its own while it waits.
/// Out of range: `DFLOCKD_STATUS_INVALID_ARGUMENT`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_max_leases_per_connection(
    cfg: *mut dflockd_config,
    max_leases: u32,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        let n = max_leases as usize;
        if !(1..=crate::client::Config::MAX_LEASES_PER_CONNECTION).contains(&n) {
            return Err(FfiError::invalid(format!(
                "max_leases_per_connection must be 1..={}, got {n}",
                crate::client::Config::MAX_LEASES_PER_CONNECTION
            )));
        }
        d.max_leases_per_connection = Some(n);
        Ok(())
    })
}

/// Say whether the servers are the members of one raft cluster (`enabled`
/// true) rather than shards (false, the default). In cluster mode every key
/// goes to the leader: the client remembers which member leads, follows
/// `error_not_leader` hints that name a configured member (else tries the
/// next member), and moves on to the next member when one refuses the
/// connection, breaks it, stays silent or answers `error_draining`,
/// pausing briefly between rounds while an election runs; each call stays
/// within its usual bound. Held leases survive a failover: when the
/// connection to the old leader goes they are *doubted*
/// (`dflockd_lease_is_doubted()` true, `dflockd_lease_is_held()` false,
/// `DFLOCKD_EVENT_KIND_DOUBTED`, the doubt callback with `false`), then
/// confirmed by a renewal on the new leader (held again,
/// `DFLOCKD_EVENT_KIND_CONFIRMED`, the callback with `true`) or lost if it
/// refuses. Each connection names its session with a random `stable-ref`,
/// so a waiter keeps its place in the queue across a failover (servers run
/// with `--orphan-ttl`). Cannot be combined with a shard callback
/// (`dflockd_config_set_shard()`): `dflockd_client_new()` then fails with
/// `DFLOCKD_STATUS_INVALID_ARGUMENT`.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_cluster(
    cfg: *mut dflockd_config,
    enabled: bool,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.cluster = enabled;
        Ok(())
    })
}

/// Route keys with `callback` instead of the standard CRC-32 shard (see
/// `dflockd_shard_fn` for when and where it runs); NULL restores CRC-32.
/// `userdata` is passed back first on every call and must stay valid until
/// every client made from this config is freed.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_config_set_shard(
    cfg: *mut dflockd_config,
    callback: dflockd_shard_fn,
    userdata: *mut c_void,
    err: *mut *mut dflockd_error,
) -> dflockd_status {
    with_config(cfg, err, |d| {
        d.shard = callback.map(|cb| ShardCallback { cb, userdata });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists() {
        assert_eq!(
            Config::parse_servers(" a:1, [::1]:6388 ,").unwrap(),
            vec![("a".into(), 1), ("::1".into(), 6388)]
        );
        for bad in ["", ",", "a", "a:", ":1", "a:0", "a:70000", "a b:1", "a:x"] {
            let e = FfiError::from(Config::parse_servers(bad).unwrap_err());
            assert_eq!(e.status, dflockd_status::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn setters_validate() {
        let mut cfg = std::ptr::null_mut();
        assert_eq!(dflockd_config_new(&mut cfg), dflockd_status::Ok);
        let null = std::ptr::null_mut();
        assert_eq!(
            dflockd_config_set_renew_ratio(cfg, 1.0, null),
            dflockd_status::InvalidArgument
        );
        assert_eq!(
            dflockd_config_set_renew_ratio(cfg, f64::NAN, null),
            dflockd_status::InvalidArgument
        );
        assert_eq!(dflockd_config_set_renew_ratio(cfg, 0.3, null), dflockd_status::Ok);
        assert_eq!(
            dflockd_config_set_default_lease(cfg, MAX_SECONDS + 1, null),
            dflockd_status::InvalidArgument
        );
        assert_eq!(
            dflockd_config_set_keepalive_ms(cfg, 0, null),
            dflockd_status::InvalidArgument
        );
        assert_eq!(
            dflockd_config_set_server_read_timeout_ms(cfg, 999, null),
            dflockd_status::InvalidArgument
        );
        assert_eq!(
            dflockd_config_set_server_read_timeout_ms(cfg, 2000, null),
            dflockd_status::Ok
        );
        assert_eq!(
            unsafe { &*cfg }.draft.server_read_timeout,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            dflockd_config_set_renew_ratio(std::ptr::null_mut(), 0.5, null),
            dflockd_status::NullParameter
        );
        assert_eq!(
            dflockd_config_set_tls_system_roots(cfg, true, null),
            dflockd_status::Ok
        );
        assert!(unsafe { &*cfg }.draft.tls);
        assert_eq!(dflockd_config_set_cluster(cfg, true, null), dflockd_status::Ok);
        assert!(unsafe { &*cfg }.draft.cluster);
        assert_eq!(
            dflockd_config_set_cluster(std::ptr::null_mut(), true, null),
            dflockd_status::NullParameter
        );
        for bad in [0, 65_537] {
            assert_eq!(
                dflockd_config_set_max_leases_per_connection(cfg, bad, null),
                dflockd_status::InvalidArgument
            );
        }
        assert_eq!(
            dflockd_config_set_max_leases_per_connection(cfg, 1, null),
            dflockd_status::Ok
        );
        assert_eq!(unsafe { &*cfg }.draft.max_leases_per_connection, Some(1));
        dflockd_config_free(cfg);
        dflockd_config_free(std::ptr::null_mut());
    }
}
