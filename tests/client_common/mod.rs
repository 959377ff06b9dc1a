//! Helpers shared by the `client_*` integration tests: which server to
//! talk to (embedded, or external via `DFLOCKD_TEST_SERVER`), unique keys,
//! and bounded waits for conditions.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dflockd::client::{Client, Config};
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
        c.io_slack = Duration::from_secs(5);
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

/// `DFLOCKD_TEST_SERVER=host:port`, if set.
pub fn external() -> Option<(String, u16)> {
    let v = std::env::var("DFLOCKD_TEST_SERVER").ok()?;
    let (h, p) = v.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?))
}

/// The external server if configured, else an embedded default one.
pub fn any_server() -> Srv {
    match external() {
        Some((host, port)) => Srv {
            embedded: None,
            host,
            port,
            auth: std::env::var("DFLOCKD_TEST_AUTH_TOKEN").ok(),
        },
        None => embedded(ServerOptions::default()),
    }
}

/// An embedded server with `opts`.
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

/// True (and says so) when the test needs the embedded server's controls
/// or options but runs against an external one.
pub fn skip_external(test: &str) -> bool {
    if external().is_some() {
        eprintln!("{test}: skipped: needs the embedded server's fault controls or options");
        return true;
    }
    false
}

/// A key no other test (or earlier run on an external server) uses.
pub fn key(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Poll `cond` every 10 ms until it holds (`true`) or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

/// Waiters the server reports for lock `key`.
pub fn lock_waiters(client: &Client, key: &str) -> u64 {
    client
        .stats(0)
        .ok()
        .and_then(|s| s.locks.iter().find(|l| l.key == key).map(|l| l.waiters))
        .unwrap_or(0)
}

/// Whether the server reports lock `key` as held.
pub fn lock_held_on_server(client: &Client, server: usize, key: &str) -> bool {
    client
        .stats(server)
        .map(|s| s.locks.iter().any(|l| l.key == key))
        .unwrap_or(false)
}
