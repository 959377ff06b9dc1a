//! Shared test helpers: the server under test (embedded, or the external
//! one named by `DFLOCKD_TEST_SERVER=host:port` + `DFLOCKD_TEST_AUTH_TOKEN`)
//! and a raw line client that sends exact bytes and reads exact reply lines.
//!
//! `DFLOCKD_TEST_SERVER_LINE=1.10` (with `DFLOCKD_TEST_SERVER`) says the
//! external server is a 1.10 one: 2.x-only tests skip ([`skip_unless_2x`])
//! and the 1.10 suites (`conformance_110.rs`, `client_110.rs`) run against
//! it. Unset (or `2`, `2.x`), the external server is 2.x and the 1.10
//! suites skip ([`skip_unless_1_10`]). Every skip prints its reason. Tests
//! needing the embedded server's options or fault controls skip against
//! any external server ([`skip_external`]).
//!
//! The cluster suite (`conformance_cluster.rs`) runs against an embedded
//! [`TestCluster`], or against the external cluster named by
//! `DFLOCKD_TEST_CLUSTER=host:port,host:port,...` (with
//! `DFLOCKD_TEST_AUTH_TOKEN`); its tests needing the embedded cluster's
//! controls skip against one ([`cluster_with`]).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dflockd::protocol::Stats;
use dflockd::testserver::{ClusterOptions, ServerLine, ServerOptions, TestCluster, TestServer};

/// Replies that take longer than this are a failure (a hung server).
pub const REPLY_DEADLINE: Duration = Duration::from_secs(10);

/// One request frame: `cmd\nkey\narg\n`.
pub fn frame(cmd: &str, key: &str, arg: &str) -> Vec<u8> {
    format!("{cmd}\n{key}\n{arg}\n").into_bytes()
}

/// The server a test talks to.
pub enum Target {
    Embedded(TestServer),
    External { addr: String, auth: Option<String> },
}

impl Target {
    pub fn addr(&self) -> String {
        match self {
            Target::Embedded(s) => s.addr().to_string(),
            Target::External { addr, .. } => addr.clone(),
        }
    }

    pub fn auth(&self) -> Option<&str> {
        match self {
            Target::Embedded(_) => None,
            Target::External { auth, .. } => auth.as_deref(),
        }
    }

    pub fn embedded(&self) -> Option<&TestServer> {
        match self {
            Target::Embedded(s) => Some(s),
            Target::External { .. } => None,
        }
    }

    pub fn is_external(&self) -> bool {
        matches!(self, Target::External { .. })
    }

    /// A connection, authenticated when the server needs it.
    pub fn connect(&self) -> Raw {
        let mut c = Raw::connect(&self.addr());
        if let Some(token) = self.auth() {
            assert_eq!(
                c.req(format!("auth\n_\n{token}\n").as_bytes()),
                "ok",
                "auth to {}",
                self.addr()
            );
        }
        c
    }
}

/// `host:port` and auth token of the external server, if one is configured.
pub fn external() -> Option<(String, Option<String>)> {
    let addr = std::env::var("DFLOCKD_TEST_SERVER")
        .ok()
        .filter(|s| !s.is_empty())?;
    let auth = std::env::var("DFLOCKD_TEST_AUTH_TOKEN")
        .ok()
        .filter(|s| !s.is_empty());
    Some((addr, auth))
}

/// The server under test with default options: the external one if
/// configured, else a fresh embedded server.
pub fn target() -> Target {
    match external() {
        Some((addr, auth)) => Target::External { addr, auth },
        None => Target::Embedded(TestServer::start(ServerOptions::default()).expect("start test server")),
    }
}

/// The release line of the server under test: the external server's from
/// `DFLOCKD_TEST_SERVER_LINE` (2.x when unset; panics on an unknown
/// value), else the embedded default (2.x). The 1.10 suites start their
/// embedded servers in 1.10 mode themselves.
pub fn server_line() -> ServerLine {
    if external().is_none() {
        return ServerLine::default();
    }
    match std::env::var("DFLOCKD_TEST_SERVER_LINE") {
        Ok(v) if !v.trim().is_empty() => v
            .parse()
            .unwrap_or_else(|e| panic!("DFLOCKD_TEST_SERVER_LINE: {e}")),
        _ => ServerLine::V2,
    }
}

/// True (and says so) when `test` checks 2.x behaviour but the external
/// server under test is a 1.10 one.
pub fn skip_unless_2x(test: &str) -> bool {
    if server_line() != ServerLine::V2 {
        eprintln!(
            "skipping {test}: 2.x-only behaviour, the external server is 1.10 (DFLOCKD_TEST_SERVER_LINE)"
        );
        return true;
    }
    false
}

/// True (and says so) when `test` checks 1.10 behaviour but the external
/// server under test is a 2.x one (`DFLOCKD_TEST_SERVER_LINE` unset or 2).
pub fn skip_unless_1_10(test: &str) -> bool {
    if external().is_some() && server_line() != ServerLine::V1_10 {
        eprintln!(
            "skipping {test}: 1.10-only behaviour, the external server is 2.x (set DFLOCKD_TEST_SERVER_LINE=1.10 for a 1.10 one)"
        );
        return true;
    }
    false
}

/// The 1.10 server under test: the external one when it is 1.10, else a
/// fresh embedded server in 1.10 mode; `None` (and a printed reason)
/// against an external 2.x server.
pub fn target_1_10(test: &str) -> Option<Target> {
    if skip_unless_1_10(test) {
        return None;
    }
    Some(match external() {
        Some((addr, auth)) => Target::External { addr, auth },
        None => Target::Embedded(
            TestServer::start(ServerOptions {
                line: ServerLine::V1_10,
                ..ServerOptions::default()
            })
            .expect("start 1.10 test server"),
        ),
    })
}

/// An embedded server with special options or fault controls; `None`
/// (and a printed reason) when the tests run against an external server.
pub fn embedded(opts: ServerOptions, test: &str) -> Option<TestServer> {
    if skip_external(test) {
        return None;
    }
    Some(TestServer::start(opts).expect("start test server"))
}

/// True (and says so) when `test` needs the embedded server's options or
/// fault controls but the tests run against an external server.
pub fn skip_external(test: &str) -> bool {
    if external().is_some() {
        eprintln!("skipping {test}: needs the embedded server (special options or fault controls)");
        return true;
    }
    false
}

/// The members of the external cluster (`DFLOCKD_TEST_CLUSTER`), if set.
pub fn external_cluster() -> Option<Vec<String>> {
    let v = std::env::var("DFLOCKD_TEST_CLUSTER").ok()?;
    let members: Vec<String> = v
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    (!members.is_empty()).then_some(members)
}

/// The cluster a cluster test talks to.
pub enum ClusterTarget {
    Embedded(TestCluster),
    External {
        members: Vec<String>,
        auth: Option<String>,
    },
}

/// How long a leader may take to appear (elections took 0.43-0.84 s on a
/// real cluster; generous for loaded machines).
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(5);

impl ClusterTarget {
    pub fn members(&self) -> Vec<String> {
        match self {
            ClusterTarget::Embedded(c) => c.addrs().iter().map(|a| a.to_string()).collect(),
            ClusterTarget::External { members, .. } => members.clone(),
        }
    }

    pub fn embedded(&self) -> Option<&TestCluster> {
        match self {
            ClusterTarget::Embedded(c) => Some(c),
            ClusterTarget::External { .. } => None,
        }
    }

    /// A connection to member `i`, authenticated when needed.
    pub fn connect(&self, i: usize) -> Raw {
        let addr = &self.members()[i];
        let mut c = Raw::connect(addr);
        if let ClusterTarget::External {
            auth: Some(token), ..
        } = self
        {
            assert_eq!(
                c.req(format!("auth\n_\n{token}\n").as_bytes()),
                "ok",
                "auth to {addr}"
            );
        }
        c
    }

    /// Member `i`'s `stats`, parsed.
    pub fn stats(&self, i: usize) -> Stats {
        stats_of(&mut self.connect(i))
    }

    /// The member that says it leads (waits for an election).
    pub fn leader(&self) -> usize {
        if let ClusterTarget::Embedded(c) = self {
            return c
                .await_leader(ELECTION_DEADLINE)
                .expect("a leader within the deadline");
        }
        let n = self.members().len();
        let mut found = None;
        assert!(
            eventually(ELECTION_DEADLINE, || {
                found = (0..n).find(|&i| {
                    // A member may be down: skip it.
                    Raw::try_connect(&self.members()[i]).is_some()
                        && self.stats(i).cluster.is_some_and(|c| c.role == "leader")
                });
                found.is_some()
            }),
            "no member says it leads"
        );
        found.unwrap()
    }
}

/// `stats` on `c`, parsed.
pub fn stats_of(c: &mut Raw) -> Stats {
    let reply = c.req(&frame("stats", "_", "_"));
    Stats::from_json(reply.strip_prefix("ok ").expect("ok <json>")).expect("stats JSON")
}

/// The cluster under test with default options: the external one if
/// configured, else a fresh embedded 3-node cluster.
pub fn cluster_target() -> ClusterTarget {
    let auth = std::env::var("DFLOCKD_TEST_AUTH_TOKEN")
        .ok()
        .filter(|s| !s.is_empty());
    match external_cluster() {
        Some(members) => ClusterTarget::External { members, auth },
        None => ClusterTarget::Embedded(
            TestCluster::start(ClusterOptions::default()).expect("start test cluster"),
        ),
    }
}

/// An embedded cluster with these options (for tests needing its controls
/// or options); `None` (and a printed reason) against an external cluster.
pub fn cluster_with(opts: ClusterOptions, test: &str) -> Option<TestCluster> {
    if external_cluster().is_some() {
        eprintln!("skipping {test}: needs the embedded cluster's controls (DFLOCKD_TEST_CLUSTER is set)");
        return None;
    }
    Some(TestCluster::start(opts).expect("start test cluster"))
}

/// A key unique to this test process, so runs against a shared external
/// server never collide.
pub fn key(name: &str) -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    if RUN.load(Ordering::Relaxed) == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let _ = RUN.compare_exchange(
            0,
            t ^ (std::process::id() as u64) << 40,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
    format!("t{:x}-{name}", RUN.load(Ordering::Relaxed))
}

/// The token in `ok <token> <lease>` / `acquired <token> <lease>`.
pub fn token(reply: &str) -> String {
    let parts: Vec<&str> = reply.split(' ').collect();
    assert!(
        parts.len() == 3 && (parts[0] == "ok" || parts[0] == "acquired"),
        "not a grant: {reply:?}"
    );
    assert_grant_token(parts[1]);
    parts[1].to_owned()
}

/// 32 lowercase hex characters.
pub fn assert_grant_token(t: &str) {
    assert_eq!(t.len(), 32, "token length: {t:?}");
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "token not lower hex: {t:?}"
    );
}

pub fn fence(token: &str) -> u64 {
    u64::from_str_radix(&token[..16], 16).unwrap()
}

/// Assert a grant reply with this lease; returns the token.
pub fn granted(reply: &str, lease_s: u64) -> String {
    let t = token(reply);
    assert!(
        reply.ends_with(&format!(" {lease_s}")),
        "expected lease {lease_s}: {reply:?}"
    );
    t
}

/// A raw protocol connection.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// A connection, or `None` when the address refuses it.
    pub fn try_connect(addr: &str) -> Option<Raw> {
        TcpStream::connect(addr).ok().map(|stream| Raw {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send request");
    }

    /// The next reply line (without `\n`) within `within`; `None` on
    /// timeout; panics on EOF.
    pub fn line_within(&mut self, within: Duration) -> Option<String> {
        match self.read_line(within) {
            Ok(l) => l,
            Err(e) => panic!("connection closed while waiting for a reply: {e}"),
        }
    }

    fn read_line(&mut self, within: Duration) -> Result<Option<String>, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..pos]).into_owned()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("EOF".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The next reply line; panics after [`REPLY_DEADLINE`].
    pub fn line(&mut self) -> String {
        self.line_within(REPLY_DEADLINE)
            .expect("no reply within the deadline")
    }

    /// Send one request and read its reply line.
    pub fn req(&mut self, bytes: &[u8]) -> String {
        self.send(bytes);
        self.line()
    }

    /// Whether the server closes (EOF or reset) within `within`, with no
    /// further reply line.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        match self.read_line(within) {
            Err(_) => true,
            Ok(None) => false,
            Ok(Some(l)) => panic!("expected a close, got the reply {l:?}"),
        }
    }

    /// Assert that nothing arrives for `d` (the server is blocked/paused).
    pub fn assert_silent(&mut self, d: Duration) {
        if let Some(l) = self.line_within(d) {
            panic!("expected no reply yet, got {l:?}");
        }
    }
}

/// Poll `cond` until true or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
