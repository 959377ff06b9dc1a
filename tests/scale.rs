//! Issue 17, point 3: 20,000 held leases from one client in a process
//! whose descriptor limit is the common default of 1,024, for longer than
//! a renewal interval: none lost, few sockets.
//!
//! The client runs in a child process (this test binary again, told by
//! `DFLOCKD_SCALE_CHILD`) that lowers its RLIMIT_NOFILE soft limit to 1,024
//! before creating the client, so the rest of this binary is unaffected;
//! the server is embedded here (its descriptors are this process's). The
//! measuring is `benches/rust/scale/hold.rs`, shared with `make bench-scale`.
//!
//! The leases are acquired once with blocking calls from a few threads
//! (each tries its key on a shared home first) and once with evented
//! acquires (`acquire_start`, 1,000 in flight: their tries go on shared
//! homes through the reactor).

#[path = "../benches/rust/scale/hold.rs"]
mod hold;

use std::process::Command;
use std::time::Duration;

use dflockd::testserver::{ServerOptions, TestServer};

const LEASES: usize = 20_000;
/// Longer than the renewal interval (10 s with default settings), so
/// every lease is renewed at least once while held.
const HOLD: Duration = Duration::from_secs(15);
const NOFILE: u64 = 1024;
/// The bound for 100,000 leases; 20,000 need far fewer.
const MAX_SOCKETS: usize = 128;
const CHILD: &str = "DFLOCKD_SCALE_CHILD";
/// Threads making the blocking acquires.
const BLOCKING_THREADS: usize = 8;

/// Dials failing at once: acquires started together, each needing a
/// connection of its own, under this descriptor limit.
const DIALS_STARTED: usize = 1000;
const DIALS_NOFILE: u64 = 64;
/// The child's thread stacks (`RUST_MIN_STACK`): small, so a pump nested
/// per failed dial on the engine thread overflows at once instead of
/// only on a debug build with enough acquires waiting.
const DIALS_STACK: &str = "262144";

fn lower_nofile(to: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = to.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
    }
}

/// The child: hold the leases under the lowered limit (acquired with
/// blocking calls from `blocking_threads` threads, or evented when 0),
/// print the report.
fn child(addr: &str, blocking_threads: usize) {
    lower_nofile(NOFILE);
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let plan = hold::Plan {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        leases: LEASES,
        hold: HOLD,
        prefix: format!("nofile-{}-", std::process::id()),
        lease_s: 33.0,
        sample_every: Duration::from_secs(3),
        blocking_threads,
    };
    let r = hold::run(&plan);
    if let Some(e) = &r.first_error {
        println!("FIRST_ERROR {e}");
    }
    println!("{}", r.line());
}

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// Run `test` (this binary's test of that name) as a child process against
/// `server`, with `env` added; its line that starts with `tag` (the
/// harness may print "test NAME ... " on the same line first).
fn run_child(test: &str, server: &TestServer, env: &[(&str, &str)], tag: &str) -> String {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, server.addr().to_string())
        .envs(env.iter().copied())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed: {:?}", out.status);
    stdout
        .lines()
        .find_map(|l| l.find(tag).map(|i| l[i..].to_owned()))
        .unwrap_or_else(|| panic!("the child's {tag}line"))
}

/// Run `test` as the child against an embedded server; check its SCALE
/// line.
fn hold_in_child(test: &str) {
    let server = TestServer::start(ServerOptions {
        max_locks: 200_000,
        ..ServerOptions::default()
    })
    .expect("server");
    let line = run_child(test, &server, &[], "SCALE ");
    let line = line.as_str();
    assert_eq!(field(line, "acquired") as usize, LEASES, "{line}");
    assert_eq!(field(line, "lost") as usize, 0, "{line}");
    let sockets = field(line, "sockets") as usize;
    assert!(
        sockets <= MAX_SOCKETS,
        "{sockets} sockets > {MAX_SOCKETS}: {line}"
    );
    assert!(
        field(line, "renewals") as usize >= LEASES,
        "every lease renewed at least once: {line}"
    );
}

#[test]
fn twenty_thousand_leases_under_a_descriptor_limit_of_1024() {
    if let Ok(addr) = std::env::var(CHILD) {
        return child(&addr, BLOCKING_THREADS);
    }
    hold_in_child("twenty_thousand_leases_under_a_descriptor_limit_of_1024");
}

#[test]
fn twenty_thousand_evented_acquires_under_a_descriptor_limit_of_1024() {
    if let Ok(addr) = std::env::var(CHILD) {
        return child(&addr, 0);
    }
    hold_in_child("twenty_thousand_evented_acquires_under_a_descriptor_limit_of_1024");
}

/// The child of the test below: start `DIALS_STARTED` acquires at once on
/// one connection each (`max_leases_per_connection` 1) under a limit of
/// `DIALS_NOFILE` descriptors, so most of their dials fail at once
/// (`EMFILE`) while the others wait in the lane; every acquire must end
/// (granted, or failed with that error), and the engine thread live.
fn dials_child(addr: &str) {
    use dflockd::client::{Client, Config};
    use dflockd::events::{EventKind, Events};
    lower_nofile(DIALS_NOFILE);
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut config = Config::new(vec![(host.to_owned(), port.parse().expect("port"))]);
    config.max_leases_per_connection = 1;
    let client = Client::new(config).expect("client");
    let prefix = format!("dials-{}-", std::process::id());
    let leases: Vec<_> = (0..DIALS_STARTED)
        .map(|i| client.lock(&format!("{prefix}{i}")).expect("lease"))
        .collect();
    let q = Events::new().expect("events");
    for (i, l) in leases.iter().enumerate() {
        l.acquire_start(10, &q, i as u64).expect("acquire_start");
    }
    let (mut acquired, mut emfile, mut other) = (0usize, 0usize, Vec::new());
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while acquired + emfile + other.len() < DIALS_STARTED && std::time::Instant::now() < end {
        hold::await_events(&q, 100);
        for e in q.poll(4096) {
            match (e.kind, &e.error) {
                (EventKind::Acquired, _) => acquired += 1,
                (EventKind::AcquireFailed, Some(err)) if err.to_string().contains("os error 24") => {
                    emfile += 1
                }
                _ => other.push(format!("{:?} {:?}", e.kind, e.error)),
            }
        }
    }
    println!(
        "DIALS acquired={acquired} emfile={emfile} other={} first_other={:?}",
        other.len(),
        other.first()
    );
}

/// Acquires that each need a connection, started together under a low
/// descriptor limit: their dials fail at once (`EMFILE`), and each failure
/// pumps the lane again. That pump once nested inside the one that started
/// the dial (pump -> dial -> failed -> pump ...), one level per waiting
/// acquire, and overflowed the engine thread's stack (this is how
/// `twenty_thousand_leases_under_a_descriptor_limit_of_1024` crashed).
/// Run in a child for its own RLIMIT_NOFILE and small thread stacks.
#[test]
fn dials_failing_at_once_do_not_nest_on_the_engine_thread() {
    if let Ok(addr) = std::env::var(CHILD) {
        return dials_child(&addr);
    }
    let server = TestServer::start(ServerOptions::default()).expect("server");
    let line = run_child(
        "dials_failing_at_once_do_not_nest_on_the_engine_thread",
        &server,
        &[("RUST_MIN_STACK", DIALS_STACK)],
        "DIALS ",
    );
    let line = line.as_str();
    let (acquired, emfile) = (field(line, "acquired") as usize, field(line, "emfile") as usize);
    assert_eq!(field(line, "other") as usize, 0, "{line}");
    assert_eq!(acquired + emfile, DIALS_STARTED, "every acquire ended: {line}");
    assert!(acquired > 0 && emfile > 0, "{line}");
}
