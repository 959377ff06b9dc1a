//! Conformance tests written from docs/protocol.md (one per table row and
//! per "detail that matters"), over real sockets with exact bytes. They run
//! against the embedded test server, or unchanged against a real dflockd
//! with `DFLOCKD_TEST_SERVER=host:port` (+ `DFLOCKD_TEST_AUTH_TOKEN`).
//! Tests needing special options live in `conformance_options.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, Target, fence, frame, granted, key, skip_unless_2x, target, token};
use dflockd::protocol::Stats;
use dflockd::testserver::{ServerLine, ServerOptions, TestServer};

/// Whether tokens carry a rising fence (2.x; 1.10 tokens are random).
fn fenced() -> bool {
    common::server_line() == ServerLine::V2
}

#[test]
fn lock_acquire_renew_release() {
    let t = target();
    let mut a = t.connect();
    let k1 = key("k1");
    let tok = granted(&a.req(&frame("l", &k1, "5")), 33);
    granted(&a.req(&frame("l", &key("k1b"), "5 10")), 10);
    assert_eq!(a.req(&frame("n", &k1, &tok)), "ok 33");
    assert_eq!(a.req(&frame("n", &k1, &format!("{tok} 60"))), "ok 60");
    assert_eq!(
        a.req(&frame("n", &k1, "0000000000000000deadbeefdeadbeef")),
        "error"
    );
    assert_eq!(a.req(&frame("r", &k1, &tok)), "ok");
    assert_eq!(a.req(&frame("r", &k1, &tok)), "error", "double release");
    assert_eq!(a.req(&frame("r", &key("nokey"), "abc")), "error", "unknown key");
    assert_eq!(a.req(&frame("n", &k1, &tok)), "error", "renew after release");
}

#[test]
fn contention_timeout_and_handoff() {
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let k = key("k2");
    let tok = token(&a.req(&frame("l", &k, "5")));
    assert_eq!(b.req(&frame("l", &k, "0")), "timeout");
    let started = Instant::now();
    assert_eq!(b.req(&frame("l", &k, "1")), "timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "timeout 1 returned early"
    );
    b.send(&frame("l", &k, "5"));
    b.assert_silent(Duration::from_millis(200));
    assert_eq!(a.req(&frame("r", &k, &tok)), "ok");
    let tb = granted(&b.line(), 33);
    if fenced() {
        assert!(fence(&tb) > fence(&tok));
    }
    assert_eq!(b.req(&frame("r", &k, &tb)), "ok");
}

#[test]
fn waiters_are_served_in_fifo_order() {
    let t = target();
    let mut holder = t.connect();
    let k = key("fifo");
    let mut tok = token(&holder.req(&frame("l", &k, "10")));
    let mut waiters: Vec<Raw> = (0..4).map(|_| t.connect()).collect();
    for w in waiters.iter_mut() {
        w.send(&frame("l", &k, "10"));
        // Queue them in a known order: each request must reach the server
        // before the next one is sent.
        w.assert_silent(Duration::from_millis(100));
    }
    assert_eq!(holder.req(&frame("r", &k, &tok)), "ok");
    for (i, w) in waiters.iter_mut().enumerate() {
        let reply = w.line();
        let next = token(&reply);
        if fenced() {
            assert!(fence(&next) > fence(&tok), "waiter {i} got an older fence");
        }
        tok = next;
        assert_eq!(w.req(&frame("r", &k, &tok)), "ok");
    }
}

#[test]
fn two_phase_enqueue_wait() {
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let k = key("k3");
    let ta = token(&a.req(&frame("e", &k, "")));
    assert!(a.req(&frame("e", &k, "")).starts_with("error_already_enqueued"));
    // `w` right after `acquired` answers at once with the same token.
    assert_eq!(a.req(&frame("w", &k, "5")), format!("ok {ta} 33"));
    assert_eq!(b.req(&frame("e", &k, "10")), "queued");
    assert_eq!(b.req(&frame("w", &k, "1")), "timeout");
    assert_eq!(
        b.req(&frame("w", &k, "1")),
        "error_not_enqueued",
        "the timed-out waiter was removed"
    );
    assert_eq!(b.req(&frame("e", &k, "")), "queued");
    b.send(&frame("w", &k, "5"));
    b.assert_silent(Duration::from_millis(100));
    assert_eq!(a.req(&frame("r", &k, &ta)), "ok");
    let tb = granted(&b.line(), 33);
    assert_eq!(b.req(&frame("r", &k, &tb)), "ok");
    assert_eq!(a.req(&frame("w", &key("never"), "1")), "error_not_enqueued");
    assert_eq!(a.req(&frame("e", &key("k3x"), "30 junk")), "error");
}

#[test]
fn wait_is_bound_to_the_enqueuing_connection() {
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let k = key("bound");
    let ta = token(&a.req(&frame("e", &k, "")));
    assert_eq!(b.req(&frame("w", &k, "0")), "error_not_enqueued");
    assert_eq!(a.req(&frame("w", &k, "0")), format!("ok {ta} 33"));
}

#[test]
fn grant_via_wait_restarts_the_lease() {
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let k = key("wlease");
    let ta = token(&a.req(&frame("l", &k, "5")));
    assert_eq!(b.req(&frame("e", &k, "3")), "queued");
    assert_eq!(a.req(&frame("r", &k, &ta)), "ok"); // B is granted now...
    std::thread::sleep(Duration::from_millis(1500)); // ...but sees it later
    let tb = granted(&b.req(&frame("w", &k, "5")), 3);
    // Had the lease run from the grant, it would be gone by now + 2 s.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        b.req(&frame("n", &k, &format!("{tb} 3"))),
        "ok 3",
        "the lease restarted when `w` answered"
    );
}

#[test]
fn semaphores() {
    let t = target();
    let (mut a, mut b, mut c) = (t.connect(), t.connect(), t.connect());
    let s1 = key("s1");
    let ta = granted(&a.req(&frame("sl", &s1, "5 2")), 33);
    let tb = granted(&b.req(&frame("sl", &s1, "5 2")), 33);
    assert_eq!(c.req(&frame("sl", &s1, "0 2")), "timeout");
    assert_eq!(c.req(&frame("sl", &s1, "0 3")), "error_limit_mismatch");
    assert_eq!(a.req(&frame("sn", &s1, &ta)), "ok 33");
    assert_eq!(a.req(&frame("sn", &s1, &format!("{ta} 7"))), "ok 7");
    assert_eq!(a.req(&frame("sr", &s1, &ta)), "ok");
    assert_eq!(a.req(&frame("sr", &s1, &ta)), "error");
    assert_eq!(b.req(&frame("sr", &s1, &tb)), "ok");

    let s2 = key("s2");
    let t2 = token(&a.req(&frame("se", &s2, "1")));
    assert_eq!(a.req(&frame("sw", &s2, "5")), format!("ok {t2} 33"));
    assert_eq!(b.req(&frame("se", &s2, "1 15")), "queued");
    assert_eq!(b.req(&frame("sw", &s2, "1")), "timeout");
    assert_eq!(b.req(&frame("se", &s2, "2")), "error_limit_mismatch");
    assert_eq!(a.req(&frame("sr", &s2, &t2)), "ok");
    granted(&c.req(&frame("sl", &key("s3"), "5 1 20")), 20);
}

#[test]
fn semaphore_release_hands_over_in_fifo_order() {
    let t = target();
    let (mut a, mut b, mut c) = (t.connect(), t.connect(), t.connect());
    let s = key("semfifo");
    let ta = token(&a.req(&frame("sl", &s, "5 1")));
    assert_eq!(b.req(&frame("se", &s, "1")), "queued");
    c.send(&frame("sl", &s, "5 1"));
    c.assert_silent(Duration::from_millis(100));
    b.send(&frame("sw", &s, "5"));
    assert_eq!(a.req(&frame("sr", &s, &ta)), "ok");
    let tb = token(&b.line());
    c.assert_silent(Duration::from_millis(100));
    assert_eq!(b.req(&frame("sr", &s, &tb)), "ok");
    token(&c.line());
}

#[test]
fn lock_and_semaphore_keys_are_separate_namespaces() {
    if skip_unless_2x("lock_and_semaphore_keys_are_separate_namespaces") {
        return;
    }
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let k = key("shared");
    let tl = token(&a.req(&frame("l", &k, "5")));
    let ts = token(&b.req(&frame("sl", &k, "0 2")));
    // Lock commands do not see semaphore tokens and vice versa.
    assert_eq!(b.req(&frame("n", &k, &ts)), "error");
    assert_eq!(b.req(&frame("r", &k, &ts)), "error");
    assert_eq!(a.req(&frame("sr", &k, &tl)), "error");
    assert_eq!(a.req(&frame("r", &k, &tl)), "ok");
    assert_eq!(b.req(&frame("sr", &k, &ts)), "ok");
}

#[test]
fn values_at_their_limits() {
    if skip_unless_2x("values_at_their_limits") {
        return;
    }
    let t = target();
    let mut a = t.connect();
    granted(&a.req(&frame("l", &key("free"), "0")), 33);
    assert_eq!(a.req(&frame("l", &key("big"), "9223372037")), "error");
    granted(
        &a.req(&frame("l", &key("big"), "9223372036 9223372036")),
        9223372036,
    );
    granted(&a.req(&frame("sl", &key("biglim"), "0 1048577")), 33);
    granted(&a.req(&frame("l", &key("é-clé"), "0")), 33);
    granted(&a.req(&frame("l", &key("spaces"), " 5 ")), 33);
    let long = format!("{}{}", key(""), "x".repeat(256 - key("").len()));
    assert_eq!(long.len(), 256);
    granted(&a.req(&frame("l", &long, "5")), 33);
}

#[test]
fn tokens_are_hex_with_a_fence_rising_across_keys_and_connections() {
    if skip_unless_2x("tokens_are_hex_with_a_fence_rising_across_keys_and_connections") {
        return;
    }
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let mut fences = Vec::new();
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        let k = key(&format!("f{}", i % 3));
        let tok = token(&c.req(&frame("l", &k, "5")));
        fences.push(fence(&tok));
        assert_eq!(c.req(&frame("r", &k, &tok)), "ok");
    }
    for w in fences.windows(2) {
        if t.is_external() {
            assert!(w[1] > w[0], "fences must rise: {fences:x?}");
        } else {
            assert_eq!(w[1], w[0] + 1, "fences rise by one per grant: {fences:x?}");
        }
    }
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        fences[0] <= now_ns,
        "the fence is seeded from the wall clock (ns)"
    );
    assert!(
        fences[0] > now_ns - 3_600_000_000_000 * 24 * 365,
        "fence seed is wall-clock ns"
    );
}

#[test]
fn malformed_requests_get_error_and_keep_the_connection() {
    if skip_unless_2x("malformed_requests_get_error_and_keep_the_connection") {
        return;
    }
    let t = target();
    let mut a = t.connect();
    let cases: &[&[u8]] = &[
        b"bogus\nk\n\n",
        b"l\n\n5\n",
        b"l\na b\n5\n",
        b"l\nk\n-1\n",
        b"l\nk\nabc\n",
        b"l\nk\n5 0\n",
        b"l\nk\n5 1 2\n",
        b"l\nk\n\n",
        b"r\nk\n\n",
        b"n\nk\n\n",
        b"sl\nk\n5\n",
        b"sl\nk\n5 0\n",
        b"se\nk\n\n",
        b"se\nk\n0\n",
        b"w\nk\n\n",
        b"w\nk\n1.5\n",
        b"L\nk\n5\n",
        b" l\nk\n5\n",
        b"e\nk\n0\n",
    ];
    for case in cases {
        assert_eq!(
            a.req(case),
            "error",
            "request {:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(a.req(b"ping\n_\n\n"), "ok", "still open after errors");
}

#[test]
fn crlf_line_endings_are_accepted() {
    let t = target();
    let mut a = t.connect();
    let k = key("kcr");
    let tok = granted(&a.req(format!("l\r\n{k}\r\n5\r\n").as_bytes()), 33);
    assert_eq!(a.req(format!("r\r\n{k}\r\n{tok}\r\n").as_bytes()), "ok");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    if skip_unless_2x("pipelined_requests_are_answered_in_order") {
        return;
    }
    let t = target();
    let mut a = t.connect();
    let k = key("pipe");
    a.send(format!("l\n{k}\n5\nping\n_\n\nstats\n_\n\n").as_bytes());
    let tok = granted(&a.line(), 33);
    assert_eq!(a.line(), "ok");
    assert!(a.line().starts_with("ok {\"connections\":"));
    // Split across writes, byte by byte.
    for b in format!("r\n{k}\n{tok}\n").bytes() {
        a.send(&[b]);
    }
    assert_eq!(a.line(), "ok");
}

#[test]
fn a_blocking_request_holds_later_requests_on_its_connection() {
    if skip_unless_2x("a_blocking_request_holds_later_requests_on_its_connection") {
        return;
    }
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let k = key("occupy");
    let ta = token(&a.req(&frame("l", &k, "5")));
    b.send(format!("l\n{k}\n5\nping\n_\n\n").as_bytes());
    b.assert_silent(Duration::from_millis(300));
    assert_eq!(a.req(&frame("r", &k, &ta)), "ok");
    token(&b.line());
    assert_eq!(b.line(), "ok");
}

#[test]
fn line_of_256_bytes_is_fine_257_gets_error_and_close() {
    let t = target();
    let mut a = t.connect();
    let k256 = format!("{}{}", key(""), "x".repeat(256 - key("").len()));
    granted(&a.req(&frame("l", &k256, "5")), 33);
    let k257 = format!("{k256}x");
    assert_eq!(a.req(&frame("l", &k257, "5")), "error");
    a.send(b"ping\n_\n\n");
    assert!(
        a.closed_within(Duration::from_secs(5)),
        "the server closes after an over-long line"
    );
}

#[test]
fn over_long_line_with_newline_gets_error_at_once_and_close() {
    let t = target();
    let mut a = t.connect();
    let mut line = vec![b'l'; 4096];
    line.push(b'\n');
    a.send(&line);
    // At once: far sooner than any read timeout (23 s by default).
    assert_eq!(a.line_within(Duration::from_secs(3)).as_deref(), Some("error"));
    assert!(a.closed_within(Duration::from_secs(5)));
}

/// Over-long bytes with no `\n` (seen on 2.x): no answer until the
/// server's read timeout passes, then `error` and the close.
#[test]
fn over_long_line_without_newline_gets_error_and_close() {
    if skip_unless_2x("over_long_line_without_newline_gets_error_and_close") {
        return;
    }
    // The read timeout is the server setting under test: a short one on
    // the embedded server; an external server is assumed to run with the
    // real server's default (23 s).
    let (t, read_timeout) = if common::external().is_some() {
        (target(), Duration::from_secs(23))
    } else {
        let read_timeout = Duration::from_secs(3);
        let opts = ServerOptions {
            read_timeout,
            ..ServerOptions::default()
        };
        (
            Target::Embedded(TestServer::start(opts).expect("start test server")),
            read_timeout,
        )
    };
    let mut a = t.connect();
    let sent = Instant::now();
    a.send(&[b'l'; 4096]);
    let quiet = (read_timeout / 3).min(Duration::from_secs(2));
    a.assert_silent(quiet);
    let margin = Duration::from_secs(5);
    let reply = a.line_within(read_timeout + margin - sent.elapsed());
    assert_eq!(
        reply.as_deref(),
        Some("error"),
        "answered within the read timeout ({read_timeout:?}) + {margin:?}"
    );
    assert!(a.closed_within(Duration::from_secs(5)));
}

/// Both lines list a semaphore of limit 1 as a lock: held under `locks`
/// (with its owner, lease and waiters), idle under `idle_locks`; limit 2
/// stays a semaphore (transcript server-2.x.log line 52; 1.10 likewise).
#[test]
fn stats_lists_a_limit_1_semaphore_as_a_lock() {
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let (one, two, lock) = (key("stsem1"), key("stsem2"), key("stlock"));
    let stats = |c: &mut Raw| {
        let reply = c.req(b"stats\n_\n\n");
        Stats::from_json(reply.strip_prefix("ok ").expect("ok <json>")).expect("stats JSON")
    };
    let t1 = granted(&a.req(&frame("sl", &one, "5 1 20")), 20);
    let t2 = token(&a.req(&frame("sl", &two, "5 2")));
    let tl = token(&a.req(&frame("l", &lock, "5")));
    b.send(&frame("sl", &one, "5 1"));
    b.assert_silent(Duration::from_millis(100));

    let st = stats(&mut a);
    let owner = st
        .locks
        .iter()
        .find(|e| e.key == lock)
        .expect("lock")
        .owner_conn_id;
    let e = st
        .locks
        .iter()
        .find(|e| e.key == one)
        .expect("limit-1 semaphore under locks");
    assert_eq!((e.owner_conn_id, e.waiters), (owner, 1), "{e:?}");
    assert!(
        e.lease_expires_in_s > 15.0 && e.lease_expires_in_s <= 20.0,
        "{e:?}"
    );
    assert!(st.semaphores.iter().all(|e| e.key != one), "{st:?}");
    let e = st
        .semaphores
        .iter()
        .find(|e| e.key == two)
        .expect("limit-2 semaphore");
    assert_eq!((e.limit, e.holders, e.waiters), (2, 1, 0));
    assert!(st.locks.iter().all(|e| e.key != two), "{st:?}");

    assert_eq!(a.req(&frame("sr", &one, &t1)), "ok");
    let tb = token(&b.line());
    assert_eq!(b.req(&frame("sr", &one, &tb)), "ok");
    assert_eq!(a.req(&frame("sr", &two, &t2)), "ok");
    assert_eq!(a.req(&frame("r", &lock, &tl)), "ok");
    let st = stats(&mut a);
    let idle = |v: &[dflockd::protocol::IdleEntry], k: &str| v.iter().any(|e| e.key == k);
    assert!(
        idle(&st.idle_locks, &one) && !idle(&st.idle_semaphores, &one),
        "{st:?}"
    );
    assert!(
        idle(&st.idle_semaphores, &two) && !idle(&st.idle_locks, &two),
        "{st:?}"
    );
    assert!(st.locks.iter().all(|e| e.key != one), "{st:?}");
}

#[test]
fn ping_and_stats() {
    if skip_unless_2x("ping_and_stats") {
        return;
    }
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    assert_eq!(a.req(b"ping\n_\n\n"), "ok");
    assert_eq!(a.req(b"ping\n\n\n"), "ok");
    let kl = key("statlock");
    let ks = key("statsem");
    let ki = key("statidle");
    token(&a.req(&frame("l", &kl, "5 20")));
    token(&a.req(&frame("sl", &ks, "5 3")));
    let ti = token(&a.req(&frame("l", &ki, "5")));
    assert_eq!(a.req(&frame("r", &ki, &ti)), "ok");
    b.send(&frame("l", &kl, "5"));
    b.assert_silent(Duration::from_millis(100));
    for req in [
        &b"stats\n_\n\n"[..],
        b"stats\n\n\n",
        b"stats\nignored key\nignored arg\n",
    ] {
        let reply = a.req(req);
        let json = reply.strip_prefix("ok ").expect("ok <json>");
        let stats = dflockd::protocol::Stats::from_json(json).expect("stats JSON parses");
        assert!(stats.connections >= 2);
        let l = stats
            .locks
            .iter()
            .find(|e| e.key == kl)
            .expect("held lock listed");
        assert_eq!(l.waiters, 1);
        assert!(
            l.lease_expires_in_s > 15.0 && l.lease_expires_in_s <= 20.0,
            "{l:?}"
        );
        let s = stats
            .semaphores
            .iter()
            .find(|e| e.key == ks)
            .expect("semaphore listed");
        assert_eq!((s.limit, s.holders, s.waiters), (3, 1, 0));
        assert!(
            stats.idle_locks.iter().any(|e| e.key == ki),
            "released key is idle"
        );
        let json_keys = [
            "\"locks\":",
            "\"semaphores\":",
            "\"idle_locks\":",
            "\"idle_semaphores\":",
        ];
        assert!(json_keys.iter().all(|k| json.contains(k)));
    }
}

#[test]
fn disconnect_releases_everything_and_drops_waiters() {
    if skip_unless_2x("disconnect_releases_everything_and_drops_waiters") {
        return;
    }
    let t = target();
    let mut b = t.connect();
    let k = key("dk");
    {
        let mut d = t.connect();
        token(&d.req(&frame("l", &k, "5")));
        token(&d.req(&frame("sl", &key("dks"), "5 1")));
    }
    granted(&b.req(&frame("l", &k, "2")), 33);
    granted(&b.req(&frame("sl", &key("dks"), "2 1")), 33);

    // A blocked acquire whose client leaves is dropped from the queue.
    {
        let mut e = t.connect();
        e.send(&frame("l", &k, "30"));
        e.assert_silent(Duration::from_millis(100));
    }
    let mut waiters = u64::MAX;
    let gone = common::eventually(Duration::from_secs(3), || {
        let reply = b.req(b"stats\n_\n\n");
        let stats = dflockd::protocol::Stats::from_json(&reply[3..]).unwrap();
        waiters = stats.locks.iter().find(|e| e.key == k).map_or(0, |e| e.waiters);
        waiters == 0
    });
    assert!(
        gone,
        "the waiter of a closed connection is dropped ({waiters} left)"
    );
}

#[test]
fn expired_lease_passes_to_the_next_waiter() {
    let t = target();
    let (mut a, mut b) = (t.connect(), t.connect());
    let k = key("x3");
    let ta = granted(&a.req(&frame("l", &k, "5 1")), 1);
    let started = Instant::now();
    let tb = granted(&b.req(&frame("l", &k, "5")), 33);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "expired within the sweep interval"
    );
    assert_eq!(
        a.req(&frame("r", &k, &ta)),
        "error",
        "release of an expired token"
    );
    assert_eq!(a.req(&frame("n", &k, &ta)), "error", "renew never revives");
    assert_eq!(b.req(&frame("r", &k, &tb)), "ok");

    let k4 = key("x4");
    token(&a.req(&frame("e", &k4, "1")));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        a.req(&frame("w", &k4, "5")),
        "error_not_enqueued",
        "wait after the lease was swept"
    );
}

#[test]
fn enqueue_behind_own_lock_waits_like_anyone() {
    let t = target();
    let mut a = t.connect();
    let k = key("self");
    token(&a.req(&frame("l", &k, "5")));
    assert_eq!(a.req(&frame("e", &k, "")), "queued");
    assert_eq!(a.req(&frame("w", &k, "1")), "timeout");
}
