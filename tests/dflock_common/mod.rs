//! Helpers of tests/dflock.rs: scratch directories, the dflock command
//! aimed at an embedded server, bounded waits for processes and files.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dflockd::client::{Client, Config};
use dflockd::testserver::{ServerOptions, TestServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_dflock");
/// Bound on any wait for a process or file (the machine may be busy).
pub const BOUND: Duration = Duration::from_secs(20);
pub const LOST_STATUS: i32 = 75;

/// A scratch directory, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "dflock-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("scratch dir");
        Dir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn server() -> TestServer {
    TestServer::start(ServerOptions::default()).expect("start test server")
}

/// `dflock` aimed at `srv`, run in `dir`, with no inherited dflockd setting.
pub fn dflock(srv: &TestServer, dir: &Dir) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(&dir.0)
        .env("DFLOCKD_SERVERS", srv.addr().to_string())
        .env_remove("DFLOCKD_AUTH_TOKEN")
        .env_remove("DFLOCKD_TLS_CA")
        .env_remove("DFLOCKD_TLS_SERVER_NAME");
    c
}

pub fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dflock")
}

/// Wait (bounded) for `child` to exit.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dflock (pid {}) still running after {BOUND:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (bounded) for `child` and collect its output.
pub fn finish(mut child: Child) -> Output {
    let status = wait_exit(&mut child);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

pub fn run(c: Command) -> Output {
    finish(spawn(c))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Poll for `cond` until `limit`; whether it came true.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn await_file(p: &Path) {
    assert!(eventually(BOUND, || p.exists()), "{} never appeared", p.display());
}

pub fn client(srv: &TestServer) -> Client {
    Client::new(Config::new(vec![("127.0.0.1".into(), srv.port())])).expect("client")
}

pub fn key(name: &str) -> String {
    format!("dflock-{name}-{}", std::process::id())
}

/// Intervals `[start, end]` from lines `start NS` / `end NS` written by
/// children with `$$` as a tag: `TAG start NS`, `TAG end NS`.
pub fn intervals(log: &str) -> Vec<(u128, u128)> {
    let mut open = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let t: u128 = f[2].parse().expect("timestamp");
        match f[1] {
            "start" => {
                open.insert(f[0].to_owned(), t);
            }
            _ => out.push((open.remove(f[0]).expect("start before end"), t)),
        }
    }
    assert!(open.is_empty(), "a child never finished: {log}");
    out
}

/// The most intervals open at one instant.
pub fn max_overlap(iv: &[(u128, u128)]) -> usize {
    iv.iter()
        .map(|&(s, _)| iv.iter().filter(|&&(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

/// A child that logs its start and end around `secs` of work.
pub fn timed_child(secs: &str) -> String {
    format!("echo \"$$ start $(date +%s%N)\" >> log; sleep {secs}; echo \"$$ end $(date +%s%N)\" >> log")
}

/// A child that records SIGTERM (in `term`) and says it is ready.
pub const TERM_CHILD: &str = "trap 'echo $(date +%s%N) > term; kill $! 2>/dev/null; exit 9' TERM; \
                          sleep 60 & echo $$ > ready; wait";

/// A file of the TLS test fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}
