//! Helpers for the `client_*` integration tests, on top of the shared
//! `tests/common` (external server, keys, bounded waits): a server handle
//! that builds `Client`s, and stats probes.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dflockd::client::{Client, Config};
use dflockd::events::{Event, Events};
use dflockd::testserver::{ServerOptions, TestServer};

/// A server under test: embedded (with fault controls) or external.
pub struct Srv {
    pub embedded: Option<TestServer>,
    pub host: String,
    pub port: u16,
    pub auth: Option<String>,
}

impl Srv {
    /// The embedded server; panics for an external one (callers check
    /// [`external`] first and skip).
    pub fn ts(&self) -> &TestServer {
        self.embedded.as_ref().expect("embedded server")
    }

    pub fn config(&self) -> Config {
        let mut c = Config::new(vec![(self.host.clone(), self.port)]);
        c.auth_token = self.auth.clone();
        c
    }

    pub fn client(&self) -> Client {
        Client::new(self.config()).expect("client")
    }

    pub fn client_with(&self, tweak: impl FnOnce(&mut Config)) -> Client {
        let mut c = self.config();
        tweak(&mut c);
        Client::new(c).expect("client")
    }
}

/// `DFLOCKD_TEST_SERVER=host:port`, if set (parsed from the shared
/// helpers' `external()`).
pub fn external() -> Option<(String, u16)> {
    let (addr, _auth) = common::external()?;
    let (h, p) = addr.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?))
}

/// The external server if configured, else an embedded default one.
pub fn any_server() -> Srv {
    match (common::external(), external()) {
        (Some((_, auth)), Some((host, port))) => Srv {
            embedded: None,
            host,
            port,
            auth,
        },
        _ => embedded(ServerOptions::default()),
    }
}

/// An embedded server with `opts` (callers run [`skip_external`] first).
pub fn embedded(opts: ServerOptions) -> Srv {
    let auth = opts.auth_token.clone();
    let ts = TestServer::start(opts).expect("start test server");
    Srv {
        host: "127.0.0.1".into(),
        port: ts.port(),
        embedded: Some(ts),
        auth,
    }
}

#[allow(unused_imports)]
pub use common::{skip_external, skip_unless_1_10, skip_unless_2x};

/// A key no other test (or earlier run on an external server) uses: the
/// shared helpers' per-run key plus a per-call counter.
pub fn key(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    common::key(&format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed)))
}

/// Await `cond` with a bounded deadline (the shared helper).
pub fn wait_until(within: Duration, cond: impl FnMut() -> bool) -> bool {
    common::eventually(within, cond)
}

/// Waiters the server reports for lock `key`.
pub fn lock_waiters(client: &Client, key: &str) -> u64 {
    client
        .stats(0)
        .ok()
        .and_then(|s| s.locks.iter().find(|l| l.key == key).map(|l| l.waiters))
        .unwrap_or(0)
}

/// A cancelled waiter of lock `key` has left the server's queue: within 5 s
/// on 2.x. A 1.10 server lists a dropped blocked waiter until its timeout
/// (and gives back the grant it then gets at once), so there at most that
/// one may remain.
pub fn assert_waiter_gone(client: &Client, key: &str) {
    if common::server_line() == dflockd::testserver::ServerLine::V1_10 {
        assert!(
            lock_waiters(client, key) <= 1,
            "1.10 keeps at most the dropped waiter"
        );
    } else {
        assert!(
            wait_until(Duration::from_secs(5), || lock_waiters(client, key) == 0),
            "the cancelled waiter left the queue"
        );
    }
}

/// Whether the server reports lock `key` as held.
pub fn lock_held_on_server(client: &Client, server: usize, key: &str) -> bool {
    client
        .stats(server)
        .map(|s| s.locks.iter().any(|l| l.key == key))
        .unwrap_or(false)
}

/// Wait on the queue's fd (as an event loop would) for the next event,
/// at most `within`.
pub fn next_event(q: &Events, within: Duration) -> Option<Event> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = q.poll(1).pop() {
            return Some(e);
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        let mut p = libc::pollfd {
            fd: q.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms.max(1)) };
    }
}

pub fn event(q: &Events) -> Event {
    next_event(q, Duration::from_secs(30)).expect("an event within 30 s")
}
