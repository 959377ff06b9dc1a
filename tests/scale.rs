//! Issue 17, point 3: 20,000 held leases from one client in a process
//! whose descriptor limit is the common default of 1,024, for longer than
//! a renewal interval: none lost, few sockets.
//!
//! The client runs in a child process (this test binary again, told by
//! `DFLOCKD_SCALE_CHILD`) that lowers its RLIMIT_NOFILE soft limit to 1,024
//! before creating the client, so the rest of this binary is unaffected;
//! the server is embedded here (its descriptors are this process's). The
//! measuring is `benches/rust/scale/hold.rs`, shared with `make bench-scale`.

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

/// The child: hold the leases under the lowered limit, print the report.
fn child(addr: &str) {
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

#[test]
#[ignore = "the client's engine thread overflowed its stack once in CI on this test (debug build, 20,000 leases under 1,024 descriptors) and it ran 278 s in another run; to investigate before it runs again (closing note of 2026-12-07)"]
fn twenty_thousand_leases_under_a_descriptor_limit_of_1024() {
    if let Ok(addr) = std::env::var(CHILD) {
        return child(&addr);
    }
    let server = TestServer::start(ServerOptions {
        max_locks: 200_000,
        ..ServerOptions::default()
    })
    .expect("server");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "twenty_thousand_leases_under_a_descriptor_limit_of_1024",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, server.addr().to_string())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed: {:?}", out.status);
    // (The harness may print "test NAME ... " on the same line first.)
    let line = stdout
        .lines()
        .find_map(|l| l.find("SCALE ").map(|i| &l[i..]))
        .expect("the child's SCALE line");
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
