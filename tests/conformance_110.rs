//! Conformance of the test server's 1.10 mode (`ServerLine::V1_10`): the
//! lines of `docs/transcripts/server-1.10*.log` that differ from 2.x,
//! byte for byte. They run against an embedded server in 1.10 mode, or
//! against an external 1.10 server (`DFLOCKD_TEST_SERVER` with
//! `DFLOCKD_TEST_SERVER_LINE=1.10`); against an external 2.x server they
//! skip. Tests needing server options or controls are embedded only.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Raw, Target, embedded, fence, frame, granted, key, target_1_10, token};
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

/// After a blocked waiter's connection closed: its waiter is still queued
/// on `key`. The embedded server tells when it handled the close; an
/// external one cannot, so there the waiter must stay for 300 ms (2.x
/// drops it within milliseconds).
fn assert_closed_waiter_kept(t: &Target, c: &mut Raw, key: &str, open: usize) {
    match t.embedded() {
        Some(s) => {
            await_closed(s, open);
            assert_eq!(lock_waiters(c, key), 1, "the dropped waiter is kept");
        }
        None => assert!(
            !common::eventually(Duration::from_millis(300), || lock_waiters(c, key) != 1),
            "the dropped waiter is kept"
        ),
    }
}

#[test]
fn ping_answers_error_and_keeps_the_connection() {
    let Some(t) = target_1_10("1.10 ping") else {
        return;
    };
    let mut a = t.connect();
    assert_eq!(a.req(b"ping\n_\n\n"), "error");
    assert_eq!(a.req(b"ping\n\n\n"), "error");
    token(&a.req(&frame("l", &key("k1"), "5")));
    assert_eq!(a.req(b"ping\n_\n\n"), "error", "still alive after errors");
    // Pipelined: the lock is granted, the ping refused, both in order.
    a.send(format!("l\n{}\n5\nping\n_\n\n", key("pipe")).as_bytes());
    granted(&a.line(), 33);
    assert_eq!(a.line(), "error");
}

#[test]
fn tokens_are_random_hex_without_a_rising_fence() {
    let Some(t) = target_1_10("1.10 tokens") else {
        return;
    };
    let mut conns = [t.connect(), t.connect()];
    let mut fences = Vec::new();
    for i in 0..10 {
        let c = &mut conns[i % 2];
        let k = key(&format!("f{}", i % 3));
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
    let Some(t) = target_1_10("1.10 namespace") else {
        return;
    };
    let (mut a, mut b) = (t.connect(), t.connect());
    let (shared, s1, s3) = (key("shared"), key("s1"), key("s3"));
    let held = token(&a.req(&frame("l", &shared, "5")));
    assert_eq!(
        b.req(&frame("sl", &shared, "0 2")),
        "error_limit_mismatch",
        "sl on key held as lock"
    );
    assert_eq!(b.req(&frame("se", &shared, "2")), "error_limit_mismatch");
    // A lock is a semaphore of limit 1, so a limit-1 `sl` contends for the
    // same key.
    assert_eq!(b.req(&frame("sl", &shared, "0 1")), "timeout");
    token(&a.req(&frame("sl", &s1, "5 2")));
    assert_eq!(
        b.req(&frame("l", &s1, "0")),
        "error_limit_mismatch",
        "l on a semaphore key"
    );
    granted(&b.req(&frame("sl", &s3, "5 1 20")), 20);

    let mine = [&shared, &s1, &s3];
    let st = stats(&mut a);
    let mut locks: Vec<&str> = st
        .locks
        .iter()
        .map(|l| l.key.as_str())
        .filter(|k| mine.iter().any(|m| m == k))
        .collect();
    locks.sort_unstable();
    let mut expected = [s3.as_str(), shared.as_str()];
    expected.sort_unstable();
    assert_eq!(locks, expected, "limit-1 semaphores are listed as locks");
    let sems: Vec<(&str, u64, u64)> = st
        .semaphores
        .iter()
        .filter(|e| mine.iter().any(|m| **m == e.key))
        .map(|e| (e.key.as_str(), e.limit, e.holders))
        .collect();
    assert_eq!(sems, [(s1.as_str(), 2, 1)]);

    assert_eq!(a.req(&frame("r", &shared, &held)), "ok");
    let st = stats(&mut a);
    assert!(st.semaphores.iter().all(|e| e.key != shared));
    assert!(st.idle_locks.iter().any(|e| e.key == shared));

    // Lock commands work on semaphore tokens (one table): n and r succeed,
    // then sr finds nothing (transcript server-1.10.extra.log).
    let sx = key("sx");
    let tx = token(&a.req(&frame("sl", &sx, "5 3")));
    assert_eq!(a.req(&frame("n", &sx, &tx)), "ok 33");
    assert_eq!(a.req(&frame("r", &sx, &tx)), "ok");
    assert_eq!(a.req(&frame("sr", &sx, &tx)), "error");
}

#[test]
fn a_dropped_waiter_is_kept_until_its_timeout() {
    let Some(t) = target_1_10("1.10 dropped waiter") else {
        return;
    };
    let (mut d, mut b) = (t.connect(), t.connect());
    let dk = key("dk");
    token(&d.req(&frame("l", &dk, "5")));
    {
        let mut e = t.connect();
        e.send(&frame("l", &dk, "2"));
        e.assert_silent(Duration::from_millis(100));
    }
    // The transcript's stats: `"waiters":1` after E left.
    assert_closed_waiter_kept(&t, &mut b, &dk, 2);
    assert!(
        common::eventually(Duration::from_secs(5), || lock_waiters(&mut b, &dk) == 0),
        "the dropped waiter leaves at its timeout"
    );
}

#[test]
fn a_grant_to_a_dropped_waiter_is_released_at_once() {
    let Some(t) = target_1_10("1.10 grant to dropped waiter") else {
        return;
    };
    let (mut d, mut b) = (t.connect(), t.connect());
    let dg = key("dg");
    let held = token(&d.req(&frame("l", &dg, "5")));
    {
        let mut e = t.connect();
        e.send(&frame("l", &dg, "30"));
        e.assert_silent(Duration::from_millis(100));
    }
    assert_closed_waiter_kept(&t, &mut b, &dg, 2);
    assert_eq!(d.req(&frame("r", &dg, &held)), "ok");
    // Granted to the dead connection and auto-released: free again (at
    // once on the embedded server; a real one may take a moment).
    if t.is_external() {
        assert!(
            common::eventually(Duration::from_secs(3), || b
                .req(&frame("l", &dg, "0"))
                .starts_with("ok ")),
            "the grant to the dead waiter was released"
        );
    } else {
        granted(&b.req(&frame("l", &dg, "0")), 33);
    }
    assert_eq!(lock_waiters(&mut b, &dg), 0);
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
    if common::skip_external("the_program_takes_server_line") {
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
