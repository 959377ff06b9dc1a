//! The client against the test server's 1.10 mode (`ServerLine::V1_10`):
//! issue 3 requires libdflockd to work against release 1.10.0, which has
//! no `ping`, no fencing tokens, one key namespace for locks and
//! semaphores, and keeps the waiters of closed connections. They run
//! against an embedded server in 1.10 mode, or against an external 1.10
//! server (`DFLOCKD_TEST_SERVER` + `DFLOCKD_TEST_SERVER_LINE=1.10`);
//! against an external 2.x server they skip. Tests needing server options
//! or controls are embedded only.

mod client_common;

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use client_common::*;
use dflockd::ErrorKind;
use dflockd::protocol::fence_from_token;
use dflockd::testserver::{ServerLine, ServerOptions};

fn v110() -> ServerOptions {
    ServerOptions {
        line: ServerLine::V1_10,
        ..ServerOptions::default()
    }
}

/// The 1.10 server under test: the external one if it is 1.10, else an
/// embedded one in 1.10 mode; `None` (skipped) against an external 2.x.
fn server(test: &str) -> Option<Srv> {
    if skip_unless_1_10(test) {
        return None;
    }
    Some(match external() {
        Some(_) => any_server(),
        None => embedded(v110()),
    })
}

/// A 1.10 embedded server with options or controls, or `None` (skipped)
/// against an external one.
fn embedded_1_10(test: &str, tweak: impl FnOnce(&mut ServerOptions)) -> Option<Srv> {
    if skip_external(test) {
        return None;
    }
    let mut opts = v110();
    tweak(&mut opts);
    Some(embedded(opts))
}

#[test]
fn locks_and_semaphores_acquire_and_release() {
    let Some(srv) = server("1.10 acquire") else {
        return;
    };
    let client = srv.client();
    let k = key("k");
    let (a, b) = (client.lock(&k).expect("lease"), client.lock(&k).expect("lease"));
    a.acquire(5).expect("acquire");
    assert!(a.is_held());
    assert!(!b.try_acquire().expect("try"));
    assert_eq!(b.acquire(1).expect_err("held").kind(), ErrorKind::Timeout);
    a.release().expect("release");
    assert!(b.try_acquire().expect("free again"));
    b.release().expect("release");

    let s = key("s");
    let sems: Vec<_> = (0..3).map(|_| client.semaphore(&s, 2).expect("lease")).collect();
    assert!(sems[0].try_acquire().expect("try"));
    assert!(sems[1].try_acquire().expect("try"));
    assert!(!sems[2].try_acquire().expect("full"));
    sems[0].release().expect("release");
    sems[2].acquire(2).expect("a slot came free");
    for s in &sems[1..] {
        s.release().expect("release");
    }
}

#[test]
fn a_semaphore_on_a_held_lock_key_is_a_limit_mismatch() {
    let Some(srv) = server("1.10 namespace") else {
        return;
    };
    let client = srv.client();
    let shared = key("shared");
    let lock = client.lock(&shared).expect("lease");
    lock.acquire(1).expect("acquire");
    let sem = client.semaphore(&shared, 2).expect("lease");
    let err = sem.try_acquire().expect_err("one namespace on 1.10");
    assert_eq!(err.kind(), ErrorKind::LimitMismatch);
    assert!(!sem.is_held());
    lock.release().expect("release");
}

#[test]
fn two_phase_enqueue_then_wait() {
    let Some(srv) = server("1.10 two-phase") else {
        return;
    };
    let client = srv.client();
    let k = key("2p");
    let a = client.lock(&k).expect("lease");
    assert!(a.enqueue().expect("free: acquired at once"));
    a.wait(0).expect("wait after acquired");
    let b = client.lock(&k).expect("lease");
    assert!(!b.enqueue().expect("queued"));
    assert_eq!(b.wait(1).expect_err("still held").kind(), ErrorKind::Timeout);
    assert!(!b.enqueue().expect("queued again"));
    a.release().expect("release");
    b.wait(5).expect("granted");
    assert!(b.is_held());
    b.release().expect("release");

    let s = client.semaphore(&key("2ps"), 1).expect("lease");
    assert!(s.enqueue().expect("acquired at once"));
    s.wait(0).expect("wait");
    s.release().expect("release");
}

/// 1.10 answers `ping` with `error`, so only renewals can keep the home
/// connection inside the idle timeout: a 5 s lease held 7 s through a 2 s
/// idle timeout proves the client never needs `ping` for that.
#[test]
fn lease_is_kept_through_the_idle_timeout_without_ping() {
    let Some(srv) = embedded_1_10("1.10 keepalive", |o| o.read_timeout = Duration::from_secs(2)) else {
        return;
    };
    let client = srv.client_with(|c| c.keepalive = Duration::from_secs(1));
    let lease = client.lock("idle").expect("lease");
    lease.set_lease_ttl(Some(5)).expect("ttl");
    lease.acquire(1).expect("acquire");
    let token = lease.token();
    assert!(
        !lease.wait_lost(Some(Duration::from_secs(7))),
        "lost: {:?}",
        lease.lost_error()
    );
    assert!(lease.is_held());
    assert_eq!(lease.token(), token);
    let probe = srv.client();
    assert!(!probe.lock("idle").expect("lease").try_acquire().expect("try"));
    lease.release().expect("release with the original token");
}

#[test]
fn lost_lease_is_notified_when_the_server_drops_connections() {
    let Some(srv) = embedded_1_10("1.10 drop_connections", |_| {}) else {
        return;
    };
    let client = srv.client_with(|c| c.keepalive = Duration::from_millis(500));
    let lease = client.lock("lost").expect("lease");
    lease.set_lease_ttl(Some(3)).expect("ttl");
    lease.acquire(1).expect("acquire");
    let (tx, rx) = mpsc::channel();
    lease.on_lost(Some(Box::new(move |e| {
        let _ = tx.send(e.kind());
    })));
    let started = Instant::now();
    srv.ts().drop_connections();
    let bound = Duration::from_secs(3) + Duration::from_millis(700);
    assert!(lease.wait_lost(Some(bound)), "not lost within one lease");
    assert_eq!(rx.recv_timeout(Duration::from_secs(2)), Ok(ErrorKind::LeaseLost));
    assert!(started.elapsed() <= bound + Duration::from_millis(500));
    assert!(!lease.is_held() && lease.is_lost() && lease.token().is_none());
}

/// 1.10 tokens are 32 random hex characters: they still parse and give a
/// "fence", but nothing may assume those rise.
#[test]
fn fences_of_1_10_tokens_parse_without_ordering() {
    let Some(srv) = server("1.10 fences") else {
        return;
    };
    let client = srv.client();
    let mut fences = Vec::new();
    let keys: Vec<String> = (0..3).map(|i| key(&format!("f{i}"))).collect();
    for i in 0..6 {
        let lease = client.lock(&keys[i % 3]).expect("lease");
        lease.acquire(1).expect("acquire");
        let token = lease.token().expect("token");
        let fence = fence_from_token(token.as_str()).expect("1.10 token parses");
        assert_eq!(lease.fence(), Some(fence));
        assert_eq!(token.fence(), fence);
        fences.push(fence);
        lease.release().expect("release");
    }
    let consecutive = fences.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    assert!(!consecutive, "these came from a 1.10 server: {fences:x?}");
}

/// Nothing in the client pings: a pooled connection the server closed at
/// its idle timeout is replaced, not probed with `ping`; an explicit
/// `ping` is refused by 1.10 and leaves the connection usable.
#[test]
fn pool_reuse_after_idle_and_explicit_ping() {
    let Some(srv) = embedded_1_10("1.10 pool", |o| o.read_timeout = Duration::from_secs(1)) else {
        return;
    };
    let client = srv.client();
    client.stats(0).expect("stats");
    assert_eq!(client.idle_connections(0), 1);
    assert!(
        wait_until(Duration::from_secs(4), || srv.ts().connection_count() == 0),
        "the server should have closed the idle connection"
    );
    let lease = client.lock("after-idle").expect("lease");
    lease.acquire(1).expect("acquire on a fresh connection");
    lease.release().expect("release");

    let conn = client.connect(0).expect("connect");
    assert_eq!(
        conn.ping().expect_err("1.10 has no ping").kind(),
        ErrorKind::Server
    );
    conn.acquire(dflockd::protocol::Kind::Lock, "p", 0, None, None)
        .expect("connection still usable after the refused ping");
}

/// 1.10 keeps the waiter of a cancelled (closed) blocking acquire until its
/// timeout; the grant it gets is released at once, so the key is not wedged.
#[test]
fn a_cancelled_acquire_does_not_wedge_the_key() {
    let Some(srv) = server("1.10 cancel") else {
        return;
    };
    let client = srv.client();
    let k = key("c");
    let a = client.lock(&k).expect("lease");
    a.acquire(1).expect("acquire");
    let b = Arc::new(client.lock(&k).expect("lease"));
    let (tx, rx) = mpsc::channel();
    // The blocking acquire sends one `l 30`: once the server lists the
    // waiter it is blocked, which is what 1.10 keeps after a close. (An
    // evented acquire sends `e` then `w`; a cancel between the two leaves
    // a waiter 1.10 drops, and an external server cannot show which.)
    let waiter = Arc::clone(&b);
    let t = std::thread::spawn(move || {
        let _ = tx.send(waiter.acquire(30).map_err(|e| e.kind()));
    });
    assert!(
        wait_until(Duration::from_secs(3), || lock_waiters(&client, &k) == 1),
        "b queued"
    );
    if let Some(ts) = srv.embedded.as_ref() {
        assert!(
            wait_until(Duration::from_secs(3), || ts.blocked_requests() == 1),
            "b blocked in its `l`"
        );
    }
    let open = srv.embedded.as_ref().map(|s| s.connection_count());
    b.cancel();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(3)),
        Ok(Err(ErrorKind::Cancelled))
    );
    t.join().expect("acquire thread");
    match open {
        // The embedded server tells when it handled the close.
        Some(open) => {
            assert!(
                wait_until(Duration::from_secs(3), || srv.ts().connection_count() == open - 1),
                "the server should have seen b's connection close"
            );
            assert_eq!(lock_waiters(&client, &k), 1, "1.10 keeps the closed waiter");
        }
        // An external one cannot: the waiter must stay for 300 ms (2.x
        // drops it within milliseconds).
        None => assert!(
            !wait_until(Duration::from_millis(300), || lock_waiters(&client, &k) != 1),
            "1.10 keeps the closed waiter"
        ),
    }
    a.release().expect("release");
    let c = client.lock(&k).expect("lease");
    // The grant to the dead waiter is released at once on the embedded
    // server; a real one may take a moment.
    let within = if open.is_some() {
        Duration::ZERO
    } else {
        Duration::from_secs(3)
    };
    assert!(
        wait_until(within, || c.try_acquire().expect("try")),
        "the grant to the dead waiter was released"
    );
    c.release().expect("release");
}
