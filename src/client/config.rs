//! The client's configuration and its validation (no I/O).

use std::sync::Arc;
use std::time::Duration;

use crate::connection::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT};
use crate::protocol::{MAX_SECONDS, Request};
use crate::transport::TlsOptions;
use crate::{Error, ErrorKind, Result};

/// dflockd's default `--read-timeout`.
const DEFAULT_SERVER_READ_TIMEOUT: Duration = Duration::from_secs(23);
/// The shortest server read timeout a client can keep up with.
const MIN_SERVER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A caller-supplied shard function: `(key, number_of_servers) -> index`.
/// Its result is checked to be `< number_of_servers`.
pub type ShardFn = Arc<dyn Fn(&str, usize) -> usize + Send + Sync>;

/// Everything a [`Client`](super::Client) needs. Build with
/// [`Config::new`] and adjust the public fields.
#[derive(Clone)]
pub struct Config {
    /// `(host, port)` of every server. Keys are sharded across them
    /// (CRC-32 unless `shard` is set); in a cluster, the nodes to follow
    /// leader hints to.
    pub servers: Vec<(String, u16)>,
    /// Sent with `auth` on every new connection.
    pub auth_token: Option<String>,
    /// TLS for every connection when set.
    pub tls: Option<TlsOptions>,
    /// Bound on opening a connection: name resolution, TCP connect, TLS
    /// handshake and `auth` (default 10 s).
    pub connect_timeout: Duration,
    /// How long a server may take to answer any request beyond what the
    /// request lets it wait: a silent or hung server fails the call with
    /// `Deadline` after this (default 5 s). Every call's worst case is
    /// documented in terms of these two settings.
    pub io_timeout: Duration,
    /// Lease requested for handles that do not set their own; `None`:
    /// the server's default.
    pub default_lease_ttl_s: Option<u64>,
    /// Renew after this fraction of the lease (default 0.5, in (0, 1)).
    pub renew_ratio: f64,
    /// Longest silence on a held lease's connection, and the longest a
    /// pooled connection stays idle before being discarded (default 10 s).
    /// Capped at half of `server_read_timeout`: see
    /// [`Config::effective_keepalive`].
    pub keepalive: Duration,
    /// The servers' idle timeout (dflockd's `--read-timeout`, default
    /// 23 s): a server closes a connection on which no complete request
    /// arrives for this long, releasing the leases held on it. Set it when
    /// the servers run with another value: the keepalive is kept at or
    /// under half of it, so a held lease's renewal (and a pooled
    /// connection's reuse) always comes in time, with room for a slow
    /// reply or a retry. At least 1 s.
    pub server_read_timeout: Duration,
    /// Custom key → server routing; `None` = `crc32(key) % servers`.
    pub shard: Option<ShardFn>,
    /// How many `error_not_leader` redirects one operation follows
    /// (default 3).
    pub max_redirects: u32,
    /// Idle connections kept per server (default 16).
    pub max_idle_per_server: usize,
    /// Whether the servers release a lease when the connection holding it
    /// closes (dflockd's `--auto-release-on-disconnect`, on by default).
    /// When true (default), a lease whose connection the server closed is
    /// lost at once: the server releases it when it gets round to the
    /// close, and a renewal on a fresh connection could reach it first and
    /// be wrongly accepted. Set false for servers that keep leases across
    /// disconnects: such a lease is then confirmed on a fresh connection.
    pub auto_release_on_disconnect: bool,
    /// The servers are the members of one raft cluster, not shards
    /// (default false). Every key goes to the leader: the client caches
    /// it, follows `error_not_leader` hints that name a configured member
    /// (else the next member), and moves to the next member on a refused
    /// or broken connection or `error_draining`, backing off briefly while
    /// an election runs, within each call's deadline. Held leases survive
    /// a failover: doubted (not held) when their connection to the old
    /// leader goes, then confirmed by a renewal on the new one (or lost if
    /// it refuses). Each connection carries a random `stable-ref`, which a
    /// waiter's replacement connection repeats so it keeps its place in
    /// the queue (servers run with `--orphan-ttl`). Cannot be combined with
    /// `shard`.
    pub cluster: bool,
    /// Most held leases one connection carries (1..=65,536; default 1,024,
    /// which keeps 100,000 leases under 100 sockets while one dropped
    /// connection costs about 1 % of them; 1: a connection per lease, as
    /// the Python and Go clients do). Held leases share their *home*
    /// connections: their renewals go out together, pipelined, so a client
    /// holding 100,000 leases needs about a hundred sockets instead of
    /// 100,000 (most processes may open 1,024). The trade-off is the blast
    /// radius: a connection that drops takes every lease on it (each is
    /// reported lost, or doubted and confirmed elsewhere, as for one).
    /// A blocking acquire that must wait still gets a connection of its own
    /// (the server holds its reply back), which joins the homes once granted.
    pub max_leases_per_connection: usize,
}

impl Config {
    /// Default [`Config::max_leases_per_connection`]: 1,024 leases per
    /// connection keep 100,000 leases under 100 sockets, while one dropped
    /// connection costs at most about 1 % of them; a burst of 1,024
    /// renewals (~100 KB) fits a socket's send buffer once the kernel has
    /// grown it.
    pub(crate) const DEFAULT_MAX_LEASES_PER_CONNECTION: usize = 1024;

    /// Largest [`Config::max_leases_per_connection`].
    pub(crate) const MAX_LEASES_PER_CONNECTION: usize = 65_536;

    /// A configuration with the defaults documented on each field.
    pub fn new(servers: Vec<(String, u16)>) -> Config {
        Config {
            servers,
            auth_token: None,
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            default_lease_ttl_s: None,
            renew_ratio: 0.5,
            keepalive: Duration::from_secs(10),
            server_read_timeout: DEFAULT_SERVER_READ_TIMEOUT,
            shard: None,
            max_redirects: 3,
            max_idle_per_server: 16,
            auto_release_on_disconnect: true,
            cluster: false,
            max_leases_per_connection: Config::DEFAULT_MAX_LEASES_PER_CONNECTION,
        }
    }

    /// The keepalive in effect: `keepalive`, but at most half of
    /// `server_read_timeout`. Renewals of a held lease come at least this
    /// often, and a pooled connection idle for longer is discarded.
    pub fn effective_keepalive(&self) -> Duration {
        self.keepalive.min(self.server_read_timeout / 2)
    }

    /// Parse a server list, `host:port,host:port,...` (IPv6 as
    /// `[::1]:6388`; blanks around items ignored), as `DFLOCKD_SERVERS` and
    /// `dflockd_config_set_servers` take it. [`ErrorKind::InvalidArgument`]
    /// names the first bad item.
    pub fn parse_servers(list: &str) -> Result<Vec<(String, u16)>> {
        let servers = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(parse_server)
            .collect::<Result<Vec<_>>>()?;
        if servers.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "server list is empty"));
        }
        Ok(servers)
    }

    /// Check every field; the first problem is reported as
    /// [`ErrorKind::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidArgument, msg));
        if self.servers.is_empty() {
            return bad("at least one server is required".into());
        }
        for (host, port) in &self.servers {
            if host.is_empty() || host.contains(char::is_whitespace) {
                return bad(format!("server host {host:?} is empty or has whitespace"));
            }
            if *port == 0 {
                return bad(format!("server {host}: port 0"));
            }
        }
        if let Some(secret) = &self.auth_token {
            Request::Auth { secret }.encode(&mut Vec::new())?;
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be > 0".into());
        }
        if self.io_timeout.is_zero() {
            return bad("io_timeout must be > 0".into());
        }
        if let Some(l) = self.default_lease_ttl_s {
            if !(1..=MAX_SECONDS).contains(&l) {
                return bad(format!("default_lease_ttl_s must be 1..={MAX_SECONDS}, got {l}"));
            }
        }
        if !(self.renew_ratio > 0.0 && self.renew_ratio < 1.0) {
            return bad(format!("renew_ratio must be in (0, 1), got {}", self.renew_ratio));
        }
        if self.keepalive < Duration::from_millis(100) {
            return bad("keepalive must be at least 100 ms".into());
        }
        if self.server_read_timeout < MIN_SERVER_READ_TIMEOUT {
            return bad(format!(
                "server_read_timeout must be at least 1 s (renewals every half of it must keep up), got {:?}",
                self.server_read_timeout
            ));
        }
        if !(1..=Config::MAX_LEASES_PER_CONNECTION).contains(&self.max_leases_per_connection) {
            return bad(format!(
                "max_leases_per_connection must be 1..={}, got {}",
                Config::MAX_LEASES_PER_CONNECTION,
                self.max_leases_per_connection
            ));
        }
        if self.cluster && self.shard.is_some() {
            return bad("a shard function has no use in cluster mode (every key goes to the leader)".into());
        }
        Ok(())
    }
}

/// Parse `host:port` (IPv6 as `[::1]:6388`).
fn parse_server(s: &str) -> Result<(String, u16)> {
    let s = s.trim();
    let bad = || {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("server `{s}` is not host:port"),
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("server `{s}`: port 0 is not allowed"),
        ));
    }
    Ok((host.to_owned(), port))
}

impl std::fmt::Debug for Config {
    /// Never prints the auth token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("servers", &self.servers)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("default_lease_ttl_s", &self.default_lease_ttl_s)
            .field("renew_ratio", &self.renew_ratio)
            .field("keepalive", &self.keepalive)
            .field("server_read_timeout", &self.server_read_timeout)
            .field("shard", &self.shard.is_some())
            .field("max_redirects", &self.max_redirects)
            .field("cluster", &self.cluster)
            .field("max_leases_per_connection", &self.max_leases_per_connection)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_bad_field() {
        let ok = Config::new(vec![("127.0.0.1".into(), 6388)]);
        assert!(ok.validate().is_ok());
        let cases: [fn(&mut Config); 12] = [
            |c| c.servers.clear(),
            |c| c.servers[0].0 = String::new(),
            |c| c.servers[0].1 = 0,
            |c| c.auth_token = Some("a\nb".into()),
            |c| c.connect_timeout = Duration::ZERO,
            |c| c.io_timeout = Duration::ZERO,
            |c| c.default_lease_ttl_s = Some(0),
            |c| c.renew_ratio = 1.0,
            |c| c.renew_ratio = f64::NAN,
            |c| c.keepalive = Duration::ZERO,
            |c| c.server_read_timeout = Duration::ZERO,
            |c| c.server_read_timeout = Duration::from_millis(999),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut c = ok.clone();
            mutate(&mut c);
            let err = c.validate().expect_err(&format!("case {i}"));
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "case {i}");
        }
    }

    #[test]
    fn keepalive_stays_within_half_the_server_read_timeout() {
        let mut c = Config::new(vec![("127.0.0.1".into(), 6388)]);
        // Defaults: 10 s keepalive, 23 s server: unchanged.
        assert_eq!(c.effective_keepalive(), Duration::from_secs(10));
        c.server_read_timeout = Duration::from_secs(2);
        assert!(c.validate().is_ok());
        assert_eq!(c.effective_keepalive(), Duration::from_secs(1));
        c.keepalive = Duration::from_millis(300);
        assert_eq!(c.effective_keepalive(), Duration::from_millis(300));
        c.server_read_timeout = Duration::from_secs(1);
        assert!(c.validate().is_ok());
        c.keepalive = Duration::from_secs(10);
        assert_eq!(c.effective_keepalive(), Duration::from_millis(500));
    }
}
