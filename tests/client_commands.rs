//! Every command and every status through the low-level `Connection`,
//! over real sockets.

mod client_common;

use std::time::{Duration, Instant};

use client_common::*;
use dflockd::ErrorKind;
use dflockd::connection::{ConnectOptions, Connection, Enqueued};
use dflockd::protocol::Kind;
use dflockd::testserver::ServerOptions;

const KINDS: [(Kind, Option<u64>); 2] = [(Kind::Lock, None), (Kind::Semaphore, Some(1))];

fn open(srv: &Srv) -> Connection {
    open_with(srv, |_| {})
}

fn open_with(srv: &Srv, tweak: impl FnOnce(&mut ConnectOptions)) -> Connection {
    let mut o = ConnectOptions {
        auth_token: srv.auth.clone(),
        ..ConnectOptions::default()
    };
    tweak(&mut o);
    Connection::open(&srv.host, srv.port, &o).expect("connect")
}

#[test]
fn lease_commands_for_locks_and_semaphores() {
    if skip_unless_2x("lease_commands_for_locks_and_semaphores") {
        return;
    }
    let srv = any_server();
    let a = open(&srv);
    let b = open(&srv);
    for (kind, limit) in KINDS {
        let k = key("cmd");
        // l / sl: grant, then timeout for a second holder.
        let g = a.acquire(kind, &k, 0, limit, Some(7)).expect("acquire");
        assert_eq!(g.lease_s, 7);
        let e = b.acquire(kind, &k, 0, limit, None).expect_err("taken");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        // n / sn: renew returns the new lease.
        assert_eq!(a.renew(kind, &k, g.token.as_str(), Some(9)).expect("renew"), 9);
        // e / se on a held key: queued; w / sw times out (0 = no block).
        assert_eq!(
            b.enqueue(kind, &k, limit, None).expect("enqueue"),
            Enqueued::Queued
        );
        let e = b.enqueue(kind, &k, limit, None).expect_err("twice");
        assert_eq!(e.kind(), ErrorKind::AlreadyEnqueued);
        // r / sr: release hands the key to the queued waiter.
        a.release(kind, &k, g.token.as_str()).expect("release");
        let w = b.wait(kind, &k, 5).expect("wait granted");
        assert_ne!(w.token, g.token);
        // Old token: renew and release now get plain `error`.
        let e = a
            .renew(kind, &k, g.token.as_str(), None)
            .expect_err("stale renew");
        assert_eq!(e.kind(), ErrorKind::Server);
        let e = a.release(kind, &k, g.token.as_str()).expect_err("stale release");
        assert_eq!(e.kind(), ErrorKind::Server);
        b.release(kind, &k, w.token.as_str()).expect("release waiter");
        // e on a free key: acquired, and w after it answers at once.
        let Enqueued::Acquired(g2) = a.enqueue(kind, &k, limit, None).expect("enqueue") else {
            panic!("free key must be acquired at once");
        };
        assert_eq!(a.wait(kind, &k, 0).expect("wait after acquired").token, g2.token);
        a.release(kind, &k, g2.token.as_str()).expect("release");
        // w without e.
        let e = b.wait(kind, &k, 0).expect_err("not enqueued");
        assert_eq!(e.kind(), ErrorKind::NotEnqueued);
    }
    // Connections stay usable after every refusal above.
    a.ping().expect("ping");
    b.ping().expect("ping");
}

#[test]
fn wait_timeout_removes_the_waiter() {
    let srv = any_server();
    let (a, b) = (open(&srv), open(&srv));
    let k = key("wt");
    let g = a.acquire(Kind::Lock, &k, 0, None, None).expect("acquire");
    assert_eq!(
        b.enqueue(Kind::Lock, &k, None, None).expect("e"),
        Enqueued::Queued
    );
    let started = Instant::now();
    assert_eq!(
        b.wait(Kind::Lock, &k, 1).expect_err("timeout").kind(),
        ErrorKind::Timeout
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        b.wait(Kind::Lock, &k, 0).expect_err("gone").kind(),
        ErrorKind::NotEnqueued
    );
    a.release(Kind::Lock, &k, g.token.as_str()).expect("release");
}

#[test]
fn semaphore_limit_and_mismatch() {
    let srv = any_server();
    let conns: Vec<Connection> = (0..4).map(|_| open(&srv)).collect();
    let k = key("sem");
    let grants: Vec<_> = conns[..3]
        .iter()
        .map(|c| {
            c.acquire(Kind::Semaphore, &k, 0, Some(3), None)
                .expect("under limit")
        })
        .collect();
    let e = conns[3]
        .acquire(Kind::Semaphore, &k, 0, Some(3), None)
        .expect_err("full");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let e = conns[3]
        .acquire(Kind::Semaphore, &k, 0, Some(2), None)
        .expect_err("mismatch");
    assert_eq!(e.kind(), ErrorKind::LimitMismatch);
    let e = conns[3]
        .enqueue(Kind::Semaphore, &k, Some(5), None)
        .expect_err("mismatch");
    assert_eq!(e.kind(), ErrorKind::LimitMismatch);
    let stats = conns[0].stats().expect("stats");
    let entry = stats.semaphores.iter().find(|s| s.key == k).expect("listed");
    assert_eq!((entry.limit, entry.holders), (3, 3));
    for (c, g) in conns.iter().zip(&grants) {
        c.release(Kind::Semaphore, &k, g.token.as_str()).expect("release");
    }
}

#[test]
fn invalid_requests_never_reach_the_wire() {
    if skip_unless_2x("invalid_requests_never_reach_the_wire") {
        return;
    }
    let srv = any_server();
    let c = open(&srv);
    let cases = [
        c.acquire(Kind::Lock, "", 0, None, None).map(drop),
        c.acquire(Kind::Lock, "a b", 0, None, None).map(drop),
        c.acquire(Kind::Lock, "k", 0, Some(1), None).map(drop),
        c.acquire(Kind::Semaphore, "k", 0, None, None).map(drop),
        c.acquire(Kind::Lock, "k", 0, None, Some(0)).map(drop),
        c.acquire(Kind::Lock, "k", 9_223_372_037, None, None).map(drop),
        c.release(Kind::Lock, "k", "").map(drop),
        c.release(Kind::Lock, "k", "a\nb").map(drop),
    ];
    for (i, r) in cases.into_iter().enumerate() {
        assert_eq!(
            r.expect_err("invalid").kind(),
            ErrorKind::InvalidArgument,
            "case {i}"
        );
    }
    assert!(!c.is_broken());
    c.ping().expect("still usable");
}

#[test]
fn stats_lists_held_locks() {
    let srv = any_server();
    let c = open(&srv);
    let k = key("stats");
    let g = c.acquire(Kind::Lock, &k, 0, None, Some(30)).expect("acquire");
    let s = c.stats().expect("stats");
    assert!(s.connections >= 1);
    let l = s.locks.iter().find(|l| l.key == k).expect("listed");
    assert!(l.lease_expires_in_s > 25.0 && l.lease_expires_in_s <= 30.0);
    c.release(Kind::Lock, &k, g.token.as_str()).expect("release");
}

#[test]
fn server_limits_max_locks_and_max_waiters() {
    if skip_external("server_limits") {
        return;
    }
    let srv = embedded(ServerOptions {
        max_locks: 1,
        max_waiters: 1,
        ..ServerOptions::default()
    });
    let (a, b, c) = (open(&srv), open(&srv), open(&srv));
    let g = a.acquire(Kind::Lock, "one", 0, None, None).expect("acquire");
    let e = a
        .acquire(Kind::Lock, "two", 0, None, None)
        .expect_err("max locks");
    assert_eq!(e.kind(), ErrorKind::MaxLocks);
    assert_eq!(
        b.enqueue(Kind::Lock, "one", None, None).expect("e"),
        Enqueued::Queued
    );
    let e = c.enqueue(Kind::Lock, "one", None, None).expect_err("max waiters");
    assert_eq!(e.kind(), ErrorKind::MaxWaiters);
    a.release(Kind::Lock, "one", g.token.as_str()).expect("release");
}

#[test]
fn hung_server_hits_the_deadline_and_hostile_replies_are_protocol_errors() {
    if skip_external("hung_server") {
        return;
    }
    let srv = embedded(ServerOptions::default());
    // Default settings: the I/O timeout (5 s) bounds the call.
    let c = open(&srv);
    srv.ts().set_reply_delay(Duration::from_secs(8));
    let started = Instant::now();
    let e = c.acquire(Kind::Lock, "k", 0, None, None).expect_err("deadline");
    assert_eq!(e.kind(), ErrorKind::Deadline);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_millis(6000),
        "{took:?}"
    );
    assert!(c.is_broken(), "a late grant must never be read as another reply");
    srv.ts().set_reply_delay(Duration::ZERO);

    let c = open(&srv);
    srv.ts().set_hostile_reply(Some(b"ok not-a-token 33\n".to_vec()));
    let e = c.acquire(Kind::Lock, "k2", 0, None, None).expect_err("hostile");
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(c.is_broken());
    let c = open(&srv);
    srv.ts().set_hostile_reply(Some(b"weird_status\n".to_vec()));
    assert_eq!(c.ping().expect_err("unknown").kind(), ErrorKind::Protocol);
    let c = open(&srv);
    let mut huge = vec![b'x'; 2 * 1024 * 1024];
    huge.push(b'\n');
    srv.ts().set_hostile_reply(Some(huge));
    assert_eq!(c.stats().expect_err("too long").kind(), ErrorKind::Protocol);
    srv.ts().set_hostile_reply(None);
}

#[test]
fn abort_from_another_thread_cancels_a_blocked_acquire() {
    if skip_unless_2x("abort_from_another_thread_cancels_a_blocked_acquire") {
        return;
    }
    let srv = any_server();
    let holder = open(&srv);
    let k = key("abort");
    let g = holder.acquire(Kind::Lock, &k, 0, None, None).expect("acquire");
    let blocked = std::sync::Arc::new(open(&srv));
    let b2 = std::sync::Arc::clone(&blocked);
    let k2 = k.clone();
    let t = std::thread::spawn(move || b2.acquire(Kind::Lock, &k2, 30, None, None));
    let probe = srv.client();
    assert!(wait_until(Duration::from_secs(5), || lock_waiters(&probe, &k) == 1));
    let started = Instant::now();
    blocked.abort();
    let r = t.join().expect("thread");
    assert_eq!(r.expect_err("cancelled").kind(), ErrorKind::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(blocked.is_broken());
    // The server dropped the waiter with its connection.
    assert!(wait_until(Duration::from_secs(5), || lock_waiters(&probe, &k) == 0));
    holder.release(Kind::Lock, &k, g.token.as_str()).expect("release");
}

#[test]
fn ping_and_draining() {
    if skip_external("draining") {
        return;
    }
    let srv = embedded(ServerOptions::default());
    let c = open(&srv);
    c.ping().expect("ping");
    srv.ts().drain();
    let e = c.ping().expect_err("draining");
    assert_eq!(e.kind(), ErrorKind::Draining);
    assert!(c.is_broken());
}

#[test]
fn follower_refuses_lease_commands_but_answers_ping_and_stats() {
    if skip_external("follower") {
        return;
    }
    let srv = embedded(ServerOptions {
        follower: Some(Some("10.9.9.9:6388".into())),
        ..ServerOptions::default()
    });
    let c = open(&srv);
    let e = c.acquire(Kind::Lock, "k", 0, None, None).expect_err("not leader");
    assert_eq!(
        (e.kind(), e.leader()),
        (ErrorKind::NotLeader, Some("10.9.9.9:6388"))
    );
    srv.ts().set_follower(Some(None));
    let e = c
        .enqueue(Kind::Lock, "k", None, None)
        .expect_err("bare not leader");
    assert_eq!((e.kind(), e.leader()), (ErrorKind::NotLeader, None));
    c.ping().expect("ping on follower");
    c.stats().expect("stats on follower");
}

#[test]
fn a_late_renew_reply_is_skipped_and_the_connection_stays_in_sync() {
    if skip_external("late renew") {
        return;
    }
    let srv = embedded(ServerOptions::default());
    let c = open(&srv);
    let g = c.acquire(Kind::Lock, "late", 0, None, Some(30)).expect("acquire");
    // Later than the default I/O timeout (5 s).
    srv.ts().set_reply_delay(Duration::from_millis(5500));
    let e = c
        .renew(Kind::Lock, "late", g.token.as_str(), Some(20))
        .expect_err("late");
    assert_eq!(e.kind(), ErrorKind::Deadline);
    assert!(
        !c.is_broken(),
        "closing the home connection would release the lease"
    );
    srv.ts().set_reply_delay(Duration::ZERO);
    // Retry as the renewal scheduler does: each attempt first reads and
    // drops the replies still owed, then gets its own (`ok 25`, never a
    // stale `ok 20`).
    let mut renewed = None;
    assert!(wait_until(Duration::from_secs(8), || {
        renewed = c.renew(Kind::Lock, "late", g.token.as_str(), Some(25)).ok();
        renewed.is_some()
    }));
    assert_eq!(renewed, Some(25));
    assert!(!c.is_broken());
    c.ping().expect("ping in sync");
    c.release(Kind::Lock, "late", g.token.as_str()).expect("release");
}
