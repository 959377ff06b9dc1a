//! Conformance of the test server's 1.10 mode (`ServerLine::V1_10`): the
//! lines of `shared/transcripts/server-1.10*.log` that differ from 2.x,
//! byte for byte. Embedded server only (skipped against an external one).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Raw, embedded, fence, frame, granted, token};
use dflockd::protocol::Stats;
use dflockd::testserver::{ServerLine, ServerOptions, TestServer};

fn v110() -> ServerOptions {
    ServerOptions {
        line: ServerLine::V1_10,
        ..ServerOptions::default()
    }
}

fn stats(c: &mut Raw) -> Stats {
    let reply = c.req(b"stats\n_\n\n");
    let json = reply.strip_prefix("ok ").expect("stats reply");
    Stats::from_json(json).expect("stats JSON")
}

fn lock_waiters(c: &mut Raw, key: &str) -> u64 {
    stats(c)
        .locks
        .iter()
        .find(|l| l.key == key)
        .map_or(0, |l| l.waiters)
}

/// Wait until the server has handled the close of every connection but
/// `open` (so a dropped waiter would already be gone on 2.x).
fn await_closed(s: &TestServer, open: usize) {
    assert!(
        common::eventually(Duration::from_secs(3), || s.connection_count() == open),
        "server did not notice the close"
    );
}

#[test]
fn ping_answers_error_and_keeps_the_connection() {
    let Some(s) = embedded(v110(), "1.10 ping") else {
        return;
    };
    let mut a = Raw::connect(&s.addr().to_string());
    assert_eq!(a.req(b"ping\n_\n\n"), "error");
    assert_eq!(a.req(b"ping\n\n\n"), "error");
    token(&a.req(b"l\nk1\n5\n"));
    assert_eq!(a.req(b"ping\n_\n\n"), "error", "still alive after errors");
    // Pipelined: the lock is granted, the ping refused, both in order.
    a.send(b"l\npipe\n5\nping\n_\n\n");
    granted(&a.line(), 33);
    assert_eq!(a.line(), "error");
}

#[test]
fn tokens_are_random_hex_without_a_rising_fence() {
    let Some(s) = embedded(v110(), "1.10 tokens") else {
        return;
    };
    let addr = s.addr().to_string();
    let mut conns = [Raw::connect(&addr), Raw::connect(&addr)];
    let mut fences = Vec::new();
    for i in 0..10 {
        let c = &mut conns[i % 2];
        let k = format!("f{}", i % 3);
        let t = granted(&c.req(&frame("l", &k, "5")), 33);
        assert_eq!(c.req(&frame("r", &k, &t)), "ok");
        fences.push(fence(&t));
    }
    let consecutive = fences.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    assert!(!consecutive, "1.10 has no rising fence: {fences:x?}");
    let mut unique = fences.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), fences.len(), "tokens are random: {fences:x?}");
}

#[test]
fn locks_and_semaphores_share_one_namespace() {
    let Some(s) = embedded(v110(), "1.10 namespace") else {
        return;
    };
    let addr = s.addr().to_string();
    let (mut a, mut b) = (Raw::connect(&addr), Raw::connect(&addr));
    let shared = token(&a.req(b"l\nshared\n5\n"));
    assert_eq!(
        b.req(b"sl\nshared\n0 2\n"),
        "error_limit_mismatch",
        "sl on key held as lock"
    );
    assert_eq!(b.req(b"se\nshared\n2\n"), "error_limit_mismatch");
    // A lock is a semaphore of limit 1 (stats lists those as locks), so a
    // limit-1 `sl` contends for the same key.
    assert_eq!(b.req(b"sl\nshared\n0 1\n"), "timeout");
    token(&a.req(b"sl\ns1\n5 2\n"));
    assert_eq!(
        b.req(b"l\ns1\n0\n"),
        "error_limit_mismatch",
        "l on a semaphore key"
    );
    granted(&b.req(b"sl\ns3\n5 1 20\n"), 20);

    let st = stats(&mut a);
    let locks: Vec<&str> = st.locks.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(locks, ["s3", "shared"], "limit-1 semaphores are listed as locks");
    let sems: Vec<(&str, u64, u64)> = st
        .semaphores
        .iter()
        .map(|e| (e.key.as_str(), e.limit, e.holders))
        .collect();
    assert_eq!(sems, [("s1", 2, 1)]);

    assert_eq!(a.req(format!("r\nshared\n{shared}\n").as_bytes()), "ok");
    let st = stats(&mut a);
    assert!(st.semaphores.iter().all(|e| e.key != "shared"));
    assert!(st.idle_locks.iter().any(|e| e.key == "shared"));

    // Lock commands work on semaphore tokens (one table): n and r succeed,
    // then sr finds nothing (transcript server-1.10.extra.log).
    let sx = token(&a.req(b"sl\nsx\n5 3\n"));
    assert_eq!(a.req(format!("n\nsx\n{sx}\n").as_bytes()), "ok 33");
    assert_eq!(a.req(format!("r\nsx\n{sx}\n").as_bytes()), "ok");
    assert_eq!(a.req(format!("sr\nsx\n{sx}\n").as_bytes()), "error");
}

#[test]
fn a_dropped_waiter_is_kept_until_its_timeout() {
    let Some(s) = embedded(v110(), "1.10 dropped waiter") else {
        return;
    };
    let addr = s.addr().to_string();
    let (mut d, mut b) = (Raw::connect(&addr), Raw::connect(&addr));
    token(&d.req(b"l\ndk\n5\n"));
    {
        let mut e = Raw::connect(&addr);
        e.send(b"l\ndk\n1\n");
        e.assert_silent(Duration::from_millis(100));
    }
    // The transcript's stats: `"waiters":1` after E left.
    await_closed(&s, 2);
    assert_eq!(lock_waiters(&mut b, "dk"), 1, "the dropped waiter is kept");
    assert!(
        common::eventually(Duration::from_secs(4), || lock_waiters(&mut b, "dk") == 0),
        "the dropped waiter leaves at its timeout"
    );
}

#[test]
fn a_grant_to_a_dropped_waiter_is_released_at_once() {
    let Some(s) = embedded(v110(), "1.10 grant to dropped waiter") else {
        return;
    };
    let addr = s.addr().to_string();
    let (mut d, mut b) = (Raw::connect(&addr), Raw::connect(&addr));
    let held = token(&d.req(b"l\ndg\n5\n"));
    {
        let mut e = Raw::connect(&addr);
        e.send(b"l\ndg\n30\n");
        e.assert_silent(Duration::from_millis(100));
    }
    await_closed(&s, 2);
    assert_eq!(lock_waiters(&mut b, "dg"), 1);
    assert_eq!(d.req(format!("r\ndg\n{held}\n").as_bytes()), "ok");
    // Granted to the dead connection and auto-released: free again.
    granted(&b.req(b"l\ndg\n0\n"), 33);
    assert_eq!(lock_waiters(&mut b, "dg"), 0);
}

#[test]
fn auth_line_is_limited_to_256_bytes() {
    let secret = "T".repeat(1000);
    let Some(s) = embedded(
        ServerOptions {
            auth_token: Some(secret.clone()),
            ..v110()
        },
        "1.10 auth line",
    ) else {
        return;
    };
    let mut f = Raw::connect(&s.addr().to_string());
    assert_eq!(
        f.req(&frame("auth", "_", &secret)),
        "error_auth",
        "1000-byte auth token"
    );
    assert!(f.closed_within(Duration::from_secs(5)));

    let short = "s".repeat(256);
    let Some(s) = embedded(
        ServerOptions {
            auth_token: Some(short.clone()),
            ..v110()
        },
        "1.10 auth line",
    ) else {
        return;
    };
    let mut g = Raw::connect(&s.addr().to_string());
    assert_eq!(g.req(&frame("auth", "_", &short)), "ok", "256 bytes fit");
}

#[test]
fn drain_has_no_error_draining() {
    let Some(s) = embedded(v110(), "1.10 drain") else {
        return;
    };
    let addr = s.addr().to_string();
    let (mut a, mut b, mut c) = (Raw::connect(&addr), Raw::connect(&addr), Raw::connect(&addr));
    let tok = token(&a.req(b"l\ndr\n5\n"));
    b.send(b"l\ndr\n30\n");
    b.assert_silent(Duration::from_millis(100));
    s.drain();
    assert_eq!(b.line(), "error", "waiting request cut off");
    assert_eq!(c.req(b"ping\n_\n\n"), "error");
    c.assert_silent(Duration::from_millis(300));
    assert_eq!(
        a.req(format!("r\ndr\n{tok}\n").as_bytes()),
        "ok",
        "requests still served"
    );
    let refused = TcpStream::connect(&addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn the_default_line_is_2x() {
    assert_eq!(ServerOptions::default().line, ServerLine::V2);
    assert_eq!("1.10".parse(), Ok(ServerLine::V1_10));
    assert_eq!("2.x".parse(), Ok(ServerLine::V2));
    assert!("3".parse::<ServerLine>().is_err());
    let Some(s) = embedded(ServerOptions::default(), "2.x ping") else {
        return;
    };
    assert_eq!(Raw::connect(&s.addr().to_string()).req(b"ping\n_\n\n"), "ok");
}

#[test]
fn the_program_takes_server_line() {
    if common::external().is_some() {
        return;
    }
    let exe = env!("CARGO_BIN_EXE_dflockd-testserver");
    let mut child = Command::new(exe)
        .args(["--server-line", "1.10", "--exit-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dflockd-testserver");
    let mut addr = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut addr).expect("address line");
    let mut a = Raw::connect(addr.trim());
    assert_eq!(a.req(b"ping\n_\n\n"), "error");
    drop(child.stdin.take());
    assert!(child.wait().expect("exit").success());

    let bad = Command::new(exe)
        .args(["--server-line", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert!(!bad.success(), "an unknown line is refused");
}
