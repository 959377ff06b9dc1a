//! Server options: the real dflockd's settings, with its defaults.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::line::ServerLine;

/// A server certificate chain and private key, PEM-encoded.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first (PEM).
    pub cert_pem: Vec<u8>,
    /// The private key (PEM).
    pub key_pem: Vec<u8>,
}

impl TlsIdentity {
    /// Read `--tls-cert` and `--tls-key` files.
    pub fn from_files(cert: &Path, key: &Path) -> io::Result<TlsIdentity> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", p.display())))
        };
        Ok(TlsIdentity {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

impl std::fmt::Debug for TlsIdentity {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity { .. }")
    }
}

/// Everything `TestServer::start` can be told; `Default` gives the Go
/// server's defaults on an ephemeral loopback port.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Bind address (`--host`).
    pub host: String,
    /// Bind port (`--port`); 0 picks a free one.
    pub port: u16,
    /// Lease of a request that names none (`--default-lease-ttl`).
    pub default_lease_ttl_s: u64,
    /// A connection with no complete request for this long gets `error`
    /// and is closed (`--read-timeout`). A blocking `l`/`w` may last longer.
    pub read_timeout: Duration,
    /// How often expired leases are evicted (`--lease-sweep-interval`).
    pub lease_sweep_interval: Duration,
    /// Idle keys are forgotten (and stop counting towards `max_locks`)
    /// after this long (`--gc-max-idle`, checked every `--gc-interval`).
    pub gc_max_idle: Duration,
    /// How often idle keys are collected (`--gc-interval`).
    pub gc_interval: Duration,
    /// Secret every connection must send first with `auth`.
    pub auth_token: Option<String>,
    /// Serve TLS only (1.2 and 1.3).
    pub tls: Option<TlsIdentity>,
    /// Distinct keys, locks and semaphores together (`--max-locks`).
    pub max_locks: usize,
    /// Queue length per key; 0 = unlimited (`--max-waiters`).
    pub max_waiters: usize,
    /// Concurrent connections; 0 = unlimited (`--max-connections`).
    pub max_connections: usize,
    /// Release what a connection holds when it closes.
    pub auto_release_on_disconnect: bool,
    /// `Some(Some("h:p"))`: a cluster follower that knows its leader;
    /// `Some(None)`: a follower without a known leader; `None`: a leader.
    pub follower: Option<Option<String>>,
    /// The release line to emulate where 1.10 and 2.x differ
    /// (`--server-line`; see [`ServerLine`]).
    pub line: ServerLine,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            host: "127.0.0.1".into(),
            port: 0,
            default_lease_ttl_s: 33,
            read_timeout: Duration::from_secs(23),
            lease_sweep_interval: Duration::from_secs(1),
            gc_max_idle: Duration::from_secs(60),
            gc_interval: Duration::from_secs(5),
            auth_token: None,
            tls: None,
            max_locks: 1024,
            max_waiters: 0,
            max_connections: 0,
            auto_release_on_disconnect: true,
            follower: None,
            line: ServerLine::V2,
        }
    }
}

impl ServerOptions {
    /// Reject settings the Go server refuses to start with.
    pub(crate) fn validate(&self) -> io::Result<()> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_owned()));
        if self.default_lease_ttl_s == 0 || self.default_lease_ttl_s > crate::protocol::MAX_SECONDS {
            return bad("default lease TTL must be between 1 and 9223372036 seconds");
        }
        if self.read_timeout.is_zero() {
            return bad("read timeout must be > 0");
        }
        if self.lease_sweep_interval.is_zero() || self.gc_interval.is_zero() {
            return bad("lease sweep and GC intervals must be > 0");
        }
        if self.max_locks == 0 {
            return bad("max locks must be > 0");
        }
        if let Some(t) = &self.auth_token {
            if t.is_empty() || t.contains(['\r', '\n']) || t.len() > crate::protocol::MAX_AUTH_LINE_BYTES {
                return bad("auth token must be non-empty, one line, at most 64 KiB");
            }
        }
        Ok(())
    }
}
