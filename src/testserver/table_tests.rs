//! Unit tests of the pure lock table: the protocol's rules without sockets.

use std::time::{Duration, Instant};

use super::table::{Enqueue, Grant, Limits, Start, Table};
use crate::protocol::{Kind, Status};

const L: Kind = Kind::Lock;
const S: Kind = Kind::Semaphore;
const TTL: Duration = Duration::from_secs(33);

fn table(max_locks: usize, max_waiters: usize) -> Table {
    Table::new(
        Limits {
            max_locks,
            max_waiters,
        },
        0x18eb_813d_ca7f_84f6,
        || 0xdead_beef,
    )
}

fn granted(s: Start) -> Grant {
    match s {
        Start::Granted(g) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn blocked(s: Start) -> u64 {
    match s {
        Start::Blocked(id) => id,
        other => panic!("expected to queue, got {other:?}"),
    }
}

#[test]
fn fences_rise_by_one_per_grant_across_keys() {
    let mut t = table(10, 0);
    let now = Instant::now();
    let a = granted(t.acquire(L, "a", 1, 1, TTL, now));
    let b = granted(t.acquire(S, "b", 3, 1, TTL, now));
    assert!(t.release(L, "a", a.token.as_str(), now));
    let c = granted(t.acquire(L, "a", 1, 2, TTL, now));
    assert_eq!(a.token.fence(), 0x18eb_813d_ca7f_84f6);
    assert_eq!(b.token.fence(), a.token.fence() + 1);
    assert_eq!(c.token.fence(), a.token.fence() + 2);
    assert_eq!(&a.token.as_str()[16..], "00000000deadbeef");
}

#[test]
fn queue_is_fifo_and_release_hands_over() {
    let mut t = table(10, 0);
    let now = Instant::now();
    let held = granted(t.acquire(L, "k", 1, 1, TTL, now));
    let w2 = blocked(t.acquire(L, "k", 1, 2, TTL, now));
    let w3 = blocked(t.acquire(L, "k", 1, 3, TTL, now));
    assert!(t.take_grant(w2, now).is_none());
    assert!(t.release(L, "k", held.token.as_str(), now));
    assert_eq!(t.take_woken(), vec![2]);
    assert!(t.take_grant(w3, now).is_none());
    let g2 = t.take_grant(w2, now).unwrap().unwrap();
    assert!(t.release(L, "k", g2.token.as_str(), now));
    assert!(t.take_grant(w3, now).unwrap().is_ok());
    assert!(!t.release(L, "k", g2.token.as_str(), now), "double release");
}

#[test]
fn timeout_removes_waiter_and_second_wait_is_not_enqueued() {
    let mut t = table(10, 0);
    let now = Instant::now();
    granted(t.acquire(L, "k", 1, 1, TTL, now));
    assert_eq!(t.enqueue(L, "k", 1, 2, TTL, now), Enqueue::Queued);
    let id = blocked(t.wait(L, "k", 2, now));
    assert_eq!(t.cancel_wait(id, now), Err(Status::Timeout));
    assert_eq!(t.wait(L, "k", 2, now), Start::Refused(Status::ErrorNotEnqueued));
}

#[test]
fn enqueue_acquired_then_wait_returns_same_token() {
    let mut t = table(10, 0);
    let now = Instant::now();
    let Enqueue::Acquired(g) = t.enqueue(L, "k", 1, 1, TTL, now) else {
        panic!()
    };
    assert_eq!(
        t.enqueue(L, "k", 1, 1, TTL, now),
        Enqueue::Refused(Status::ErrorAlreadyEnqueued)
    );
    assert_eq!(granted(t.wait(L, "k", 1, now)), g);
    assert_eq!(t.wait(L, "k", 1, now), Start::Refused(Status::ErrorNotEnqueued));
}

#[test]
fn expired_leases() {
    let mut t = table(10, 0);
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(2);
    // Unswept: wait after an expired `acquired` is error_lease_expired.
    let Enqueue::Acquired(_) = t.enqueue(L, "x1", 1, 1, Duration::from_secs(1), t0) else {
        panic!()
    };
    assert_eq!(
        t.wait(L, "x1", 1, later),
        Start::Refused(Status::ErrorLeaseExpired)
    );
    // Renew never revives an expired lease.
    let g = granted(t.acquire(L, "x2", 1, 1, Duration::from_secs(1), t0));
    assert_eq!(t.renew(L, "x2", g.token.as_str(), 1, TTL, later), None);
    // Swept: the `acquired` state is forgotten, wait is error_not_enqueued,
    // and the waiter behind gets the key.
    let Enqueue::Acquired(_) = t.enqueue(L, "x4", 1, 1, Duration::from_secs(1), t0) else {
        panic!()
    };
    let w = blocked(t.acquire(L, "x4", 1, 2, TTL, t0));
    t.sweep(later);
    assert_eq!(t.take_woken(), vec![2]);
    assert_eq!(
        t.wait(L, "x4", 1, later),
        Start::Refused(Status::ErrorNotEnqueued)
    );
    assert!(t.take_grant(w, later).unwrap().is_ok());
}

#[test]
fn renew_sets_new_lease() {
    let mut t = table(10, 0);
    let now = Instant::now();
    let g = granted(t.acquire(S, "s", 2, 1, TTL, now));
    assert_eq!(
        t.renew(S, "s", g.token.as_str(), 1, Duration::from_secs(7), now),
        Some(7)
    );
    assert_eq!(
        t.renew(L, "s", g.token.as_str(), 1, TTL, now),
        None,
        "lock renew of a semaphore token"
    );
}

#[test]
fn limits_and_namespaces() {
    let mut t = table(2, 1);
    let now = Instant::now();
    granted(t.acquire(L, "m1", 1, 1, TTL, now));
    granted(t.acquire(L, "m2", 1, 1, TTL, now));
    assert_eq!(
        t.acquire(L, "m3", 1, 1, TTL, now),
        Start::Refused(Status::ErrorMaxLocks)
    );
    assert_eq!(
        t.acquire(S, "m1", 2, 1, TTL, now),
        Start::Refused(Status::ErrorMaxLocks)
    );
    blocked(t.acquire(L, "m1", 1, 2, TTL, now));
    assert_eq!(
        t.acquire(L, "m1", 1, 3, TTL, now),
        Start::Refused(Status::ErrorMaxWaiters)
    );

    let mut t = table(10, 0);
    granted(t.acquire(L, "shared", 1, 1, TTL, now));
    granted(t.acquire(S, "shared", 2, 2, TTL, now));
    assert_eq!(
        t.acquire(S, "shared", 3, 2, TTL, now),
        Start::Refused(Status::ErrorLimitMismatch)
    );
}

#[test]
fn idle_keys_count_until_collected() {
    let mut t = table(1, 0);
    let now = Instant::now();
    let g = granted(t.acquire(L, "a", 1, 1, TTL, now));
    assert!(t.release(L, "a", g.token.as_str(), now));
    assert_eq!(
        t.acquire(L, "b", 1, 1, TTL, now),
        Start::Refused(Status::ErrorMaxLocks)
    );
    t.collect_idle(now + Duration::from_secs(61), Duration::from_secs(60));
    granted(t.acquire(L, "b", 1, 1, TTL, now));
}

#[test]
fn disconnect_releases_and_drops_waiters() {
    let mut t = table(10, 0);
    let now = Instant::now();
    granted(t.acquire(L, "k", 1, 1, TTL, now));
    let w2 = blocked(t.acquire(L, "k", 1, 2, TTL, now));
    assert_eq!(t.enqueue(L, "k", 1, 3, TTL, now), Enqueue::Queued);
    t.drop_connection(2, true, now);
    assert!(!t.is_waiting(w2));
    t.drop_connection(1, true, now);
    assert_eq!(
        t.take_woken(),
        vec![3],
        "conn 3 is next once 1 left and 2 was dropped"
    );
    let s = t.stats(1, now);
    assert_eq!(s.locks.len(), 1);
    assert_eq!(s.locks[0].owner_conn_id, 3);
}

#[test]
fn grant_via_wait_restarts_the_lease() {
    let mut t = table(10, 0);
    let t0 = Instant::now();
    let g = granted(t.acquire(L, "k", 1, 1, TTL, t0));
    assert_eq!(
        t.enqueue(L, "k", 1, 2, Duration::from_secs(10), t0),
        Enqueue::Queued
    );
    assert!(t.release(L, "k", g.token.as_str(), t0));
    // Granted at t0, observed by `w` 9 s later: 10 s from then.
    let t9 = t0 + Duration::from_secs(9);
    let g2 = granted(t.wait(L, "k", 2, t9));
    assert_eq!(g2.lease_s, 10);
    let s = t.stats(1, t9);
    assert!((s.locks[0].lease_expires_in_s - 10.0).abs() < 0.001);
}

#[test]
fn stats_lists_a_limit_1_semaphore_as_a_lock() {
    // 2.x (transcript server-2.x.log line 52): held under `locks`, idle
    // under `idle_locks`; limit >= 2 stays a semaphore.
    let mut t = table(10, 0);
    let now = Instant::now();
    granted(t.acquire(S, "s2", 1, 7, TTL, now));
    granted(t.acquire(S, "s1", 2, 7, TTL, now));
    blocked(t.acquire(S, "s2", 1, 8, TTL, now));
    let s = t.stats(2, now);
    let locks: Vec<(&str, u64, u64)> = s
        .locks
        .iter()
        .map(|l| (l.key.as_str(), l.owner_conn_id, l.waiters))
        .collect();
    assert_eq!(locks, [("s2", 7, 1)]);
    assert!((s.locks[0].lease_expires_in_s - 33.0).abs() < 0.001);
    let sems: Vec<(&str, u64, u64)> = s
        .semaphores
        .iter()
        .map(|e| (e.key.as_str(), e.limit, e.holders))
        .collect();
    assert_eq!(sems, [("s1", 2, 1)]);

    let mut t = table(10, 0);
    let g1 = granted(t.acquire(S, "s2", 1, 7, TTL, now));
    let g2 = granted(t.acquire(S, "s1", 2, 7, TTL, now));
    assert!(t.release(S, "s2", g1.token.as_str(), now));
    assert!(t.release(S, "s1", g2.token.as_str(), now));
    let s = t.stats(1, now);
    let keys = |v: &[crate::protocol::IdleEntry]| v.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&s.idle_locks), ["s2"]);
    assert_eq!(keys(&s.idle_semaphores), ["s1"]);
    assert!(s.locks.is_empty() && s.semaphores.is_empty());
}

fn cluster_table() -> Table {
    table(10, 0).in_cluster()
}

fn owner(t: &Table, now: Instant) -> u64 {
    t.stats(0, now).locks[0].owner_conn_id
}

#[test]
fn cluster_renewal_rebinds_the_holder() {
    // docs/protocol.md "Which connection owns a lease": a single node keeps
    // the acquiring connection, a cluster rebinds to the renewing one.
    let now = Instant::now();
    for (mut t, want) in [(table(10, 0), 1), (cluster_table(), 2)] {
        let g = granted(t.acquire(L, "k", 1, 1, TTL, now));
        assert_eq!(t.renew(L, "k", g.token.as_str(), 2, TTL, now), Some(33));
        assert_eq!(owner(&t, now), want);
        t.drop_connection(3 - want, true, now);
        assert_eq!(t.stats(0, now).locks.len(), 1, "closing the other keeps it");
        t.drop_connection(want, true, now);
        assert!(t.stats(0, now).locks.is_empty(), "closing the owner releases it");
    }
}

#[test]
fn severed_connection_keeps_leases_and_drops_waiters_without_orphan_ttl() {
    let mut t = cluster_table();
    let now = Instant::now();
    let g = granted(t.acquire(L, "k", 1, 1, TTL, now));
    t.set_stable_ref(2, "refB");
    assert_eq!(t.enqueue(L, "k", 1, 2, TTL, now), Enqueue::Queued);
    t.sever_connection(1, None, now);
    t.sever_connection(2, None, now);
    let s = t.stats(0, now);
    assert_eq!((s.locks.len(), s.locks[0].waiters), (1, 0));
    t.set_stable_ref(3, "refB");
    assert_eq!(t.wait(L, "k", 3, now), Start::Refused(Status::ErrorNotEnqueued));
    assert!(t.release(L, "k", g.token.as_str(), now));
}

#[test]
fn orphaned_waiter_reattaches_by_stable_ref_in_fifo_order() {
    // Transcript cluster.log: B queued before C; after the failover B
    // (re-attached) gets the lock, C times out; the grant's lease runs
    // from the grant (`ok ... 58`).
    let mut t = cluster_table();
    let t0 = Instant::now();
    let ttl = Some(Duration::from_secs(30));
    let a = granted(t.acquire(L, "q", 1, 1, Duration::from_secs(60), t0));
    for (conn, r) in [(2, "refB"), (3, "refC")] {
        t.set_stable_ref(conn, r);
        assert_eq!(
            t.enqueue(L, "q", 1, conn, Duration::from_secs(60), t0),
            Enqueue::Queued
        );
    }
    for conn in [1, 2, 3] {
        t.sever_connection(conn, ttl, t0);
    }
    assert_eq!(t.stats(0, t0).locks[0].waiters, 2);
    t.set_stable_ref(13, "refC");
    let c = blocked(t.wait(L, "q", 13, t0));
    assert!(t.release(L, "q", a.token.as_str(), t0));
    assert!(t.take_grant(c, t0).is_none(), "B keeps its place ahead of C");
    let t1 = t0 + Duration::from_millis(1500);
    assert_eq!(t.cancel_wait(c, t1), Err(Status::Timeout));
    t.set_stable_ref(12, "refB");
    let g = granted(t.wait(L, "q", 12, t1));
    assert_eq!(g.lease_s, 58);
    assert_eq!(g.token.fence(), a.token.fence() + 1);
    assert_eq!(owner(&t, t1), 12, "the re-attached connection holds it");
}

#[test]
fn a_request_blocked_when_granted_answers_the_lease_it_asked_for() {
    // The real server's promotion replies with the waiter's lease; only a
    // `w` that comes after the grant gets the seconds left. Here the
    // blocked requests look at their grants 10 ms after it was made.
    let mut t = cluster_table();
    let t0 = Instant::now();
    let later = t0 + Duration::from_millis(10);
    let five = Duration::from_secs(5);
    let a = granted(t.acquire(L, "k", 1, 1, TTL, t0));
    let l = blocked(t.acquire(L, "k", 1, 2, five, t0));
    assert!(t.release(L, "k", a.token.as_str(), t0));
    assert_eq!(t.take_grant(l, later).unwrap().unwrap().lease_s, 5);
    // A `w` blocked on an `e`, and a grant that races a timeout.
    let b = granted(t.acquire(L, "j", 1, 1, TTL, t0));
    assert_eq!(t.enqueue(L, "j", 1, 3, five, t0), Enqueue::Queued);
    let w = blocked(t.wait(L, "j", 3, t0));
    assert!(t.release(L, "j", b.token.as_str(), t0));
    assert_eq!(t.cancel_wait(w, later).unwrap().lease_s, 5);
}

#[test]
fn orphaned_waiter_is_dropped_after_the_orphan_ttl() {
    let mut t = cluster_table();
    let t0 = Instant::now();
    granted(t.acquire(L, "k", 1, 1, TTL, t0));
    t.set_stable_ref(2, "r");
    assert_eq!(t.enqueue(L, "k", 1, 2, TTL, t0), Enqueue::Queued);
    t.sever_connection(2, Some(Duration::from_secs(5)), t0);
    t.sweep(t0 + Duration::from_secs(5));
    assert_eq!(t.stats(0, t0).locks[0].waiters, 0);
    t.set_stable_ref(3, "r");
    let later = t0 + Duration::from_secs(6);
    assert_eq!(t.wait(L, "k", 3, later), Start::Refused(Status::ErrorNotEnqueued));
}
