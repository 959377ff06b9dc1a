//! Cluster mode (`Config::cluster`) against the embedded raft cluster double
//! (`TestCluster`), with the client's default settings: requests follow the
//! leader, held leases survive failovers (doubted, then confirmed by the
//! new leader), waiters ride through elections, and nothing is reported
//! held that another client holds.

mod client_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use client_common::*;
use dflockd::ErrorKind;
use dflockd::client::{Client, Config};
use dflockd::events::{EventKind, Events};
use dflockd::lease::Lease;
use dflockd::testserver::{ClusterOptions, TestCluster};

/// Time for an election (0.6 s in the double) plus a renewal round (every
/// 10 s by default: a drained leader only says so to the next request).
const FAILOVER: Duration = Duration::from_secs(20);

fn start(opts: ClusterOptions) -> TestCluster {
    let c = TestCluster::start(opts).expect("cluster");
    c.await_leader(Duration::from_secs(5)).expect("a leader");
    c
}

/// A cluster-mode client of `c`, default settings, members in the order
/// given (`first`: the member listed first).
fn client_of(c: &TestCluster, first: usize) -> Client {
    let n = c.len();
    let members = (0..n)
        .map(|k| {
            let a = c.addr((first + k) % n);
            (a.ip().to_string(), a.port())
        })
        .collect();
    let mut cfg = Config::new(members);
    cfg.cluster = true;
    Client::new(cfg).expect("client")
}

/// Await `lease` confirmed after a failover: the client saw its home go
/// (right after a kill, `is_held` is still true until the hang-up is
/// read), doubted it and had the new leader confirm it.
fn assert_confirmed(client: &Client, lease: &Lease) {
    assert!(
        wait_until(FAILOVER, || client.metrics().leases_confirmed >= 1
            && lease.is_held()),
        "lease confirmed on the new leader: {:?}",
        client.metrics()
    );
}

/// A follower of `c`.
fn follower(c: &TestCluster) -> usize {
    (c.leader().expect("leader") + 1) % c.len()
}

/// Whether the cluster's leader lists lock `key` as held.
fn is_held_on_cluster(c: &TestCluster, key: &str) -> bool {
    let leader = c.leader().expect("leader");
    let a = c.addr(leader);
    let mut cfg = Config::new(vec![(a.ip().to_string(), a.port())]);
    cfg.cluster = true;
    let probe = Client::new(cfg).expect("probe");
    probe
        .stats(0)
        .map(|s| s.locks.iter().any(|l| l.key == key))
        .unwrap_or(false)
}

#[test]
fn requests_follow_the_leader_from_a_follower_listed_first() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, follower(&c));
    let k = key("follow");
    let l = client.lock(&k).expect("lease");
    l.acquire(5).expect("acquire through a follower listed first");
    assert!(l.is_held());
    assert!(is_held_on_cluster(&c, &k));
    client.barrier().expect("barrier on the leader");
    l.release().expect("release");
    assert!(!is_held_on_cluster(&c, &k));
    let m = client.metrics();
    assert!(m.redirects >= 1, "{m:?}");
    assert_eq!(m.failovers, 0, "{m:?}");
}

#[test]
fn cluster_mode_rejects_a_shard_function() {
    let mut cfg = Config::new(vec![("127.0.0.1".into(), 1), ("127.0.0.1".into(), 2)]);
    cfg.cluster = true;
    cfg.shard = Some(Arc::new(|_: &str, _: usize| 0));
    assert_eq!(
        Client::new(cfg).expect_err("invalid").kind(),
        ErrorKind::InvalidArgument
    );
}

/// Hold `n` locks; kill the leader; every lease is doubted, then
/// confirmed: none lost, each held again, each still the cluster's.
fn leases_survive(kill: impl FnOnce(&TestCluster, usize), n: usize) {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let events = Events::new().expect("events");
    let doubts = Arc::new(AtomicUsize::new(0));
    let confirms = Arc::new(AtomicUsize::new(0));
    let leases: Vec<Lease> = (0..n)
        .map(|i| {
            let l = client.lock(&key("survive")).expect("lease");
            l.acquire(5).expect("acquire");
            l.watch_lost(&events, i as u64).expect("watch");
            let (d, k) = (Arc::clone(&doubts), Arc::clone(&confirms));
            l.on_doubt(Some(Box::new(move |confirmed| {
                if confirmed {
                    k.fetch_add(1, Ordering::SeqCst);
                } else {
                    d.fetch_add(1, Ordering::SeqCst);
                }
            })));
            l
        })
        .collect();
    let tokens: Vec<_> = leases.iter().map(|l| l.token().expect("token")).collect();
    let leader = c.leader().expect("leader");
    let t0 = Instant::now();
    kill(&c, leader);
    assert!(
        wait_until(FAILOVER, || client.metrics().leases_confirmed >= n as u64
            && leases.iter().all(Lease::is_held)),
        "every lease confirmed after the failover: {} of {n} held, {} lost, metrics {:?}",
        leases.iter().filter(|l| l.is_held()).count(),
        leases.iter().filter(|l| l.is_lost()).count(),
        client.metrics()
    );
    let took = t0.elapsed();
    assert!(leases.iter().all(|l| !l.is_lost()), "none lost");
    for (l, t) in leases.iter().zip(&tokens) {
        assert_eq!(l.token().as_ref(), Some(t), "same grant");
    }
    let m = client.metrics();
    assert_eq!(m.leases_lost, 0, "{m:?}");
    assert!(m.failovers >= 1, "{m:?}");
    assert_eq!(m.leases_confirmed, n as u64, "{m:?}");
    // They moved together: onto a few connections to the new leader, not
    // one each (the old leader's connections close as their leases leave).
    assert!(
        wait_until(Duration::from_secs(5), || client.metrics().open_connections <= 4),
        "connections after the failover: {:?}",
        client.metrics()
    );
    assert!(
        wait_until(Duration::from_secs(5), || confirms.load(Ordering::SeqCst) == n),
        "a confirmation callback per lease"
    );
    assert_eq!(doubts.load(Ordering::SeqCst), n, "a doubt callback per lease");
    let seen = events.poll(4 * n);
    let count = |k: EventKind| seen.iter().filter(|e| e.kind == k).count();
    assert_eq!((count(EventKind::Doubted), count(EventKind::Confirmed)), (n, n));
    assert_eq!(count(EventKind::Lost), 0);
    // The new leader has them, and another client cannot take one.
    let rival = client_of(&c, 0);
    let r = rival.lock(leases[0].key()).expect("lease");
    assert!(!r.try_acquire().expect("try"), "still held by us");
    eprintln!("{n} leases confirmed {took:?} after the leader went");
    // Renewals go on, on the new leader.
    let renewals = client.metrics().renewals;
    assert!(
        wait_until(Duration::from_secs(20), || client.metrics().renewals > renewals),
        "renewals continue on the new leader"
    );
    for l in &leases {
        l.release().expect("release on the new leader");
    }
}

#[test]
fn two_hundred_held_leases_survive_a_leader_kill() {
    leases_survive(|c, leader| c.kill(leader), 200);
}

#[test]
fn held_leases_survive_a_leader_drain() {
    leases_survive(|c, leader| c.drain(leader), 20);
}

#[test]
fn a_blocked_acquire_rides_through_a_leader_kill() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let k = key("ride");
    let holder = client.lock(&k).expect("lease");
    holder.acquire(5).expect("acquire");
    let waiter = Arc::new(client.lock(&k).expect("lease"));
    let (tx, rx) = mpsc::channel();
    let w = Arc::clone(&waiter);
    std::thread::spawn(move || {
        let _ = tx.send(w.acquire(30).map_err(|e| e.to_string()));
    });
    let leader = c.leader().expect("leader");
    assert!(
        wait_until(Duration::from_secs(5), || c.blocked_requests(leader) == 1),
        "the waiter blocked on the leader"
    );
    c.kill(leader);
    // The holder is confirmed on the new leader, then lets go: the waiter,
    // re-queued there, gets the lock within its timeout.
    assert_confirmed(&client, &holder);
    holder.release().expect("release");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).expect("answered"),
        Ok(())
    );
    assert!(waiter.is_held());
}

#[test]
fn an_acquire_during_the_election_waits_for_the_new_leader() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let leader = c.leader().expect("leader");
    // The client knows the leader.
    let warm = client.lock(&key("warm")).expect("lease");
    warm.acquire(1).expect("acquire");
    warm.release().expect("release");
    c.kill(leader);
    let l = client.lock(&key("election")).expect("lease");
    let t0 = Instant::now();
    l.try_acquire()
        .expect("a try during the election is answered by the new leader");
    assert!(l.is_held());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(client.metrics().failovers >= 1);
}

#[test]
fn a_killed_follower_changes_nothing() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let l = client.lock(&key("follower")).expect("lease");
    l.acquire(5).expect("acquire");
    c.kill(follower(&c));
    let l2 = client.lock(&key("follower")).expect("lease");
    l2.acquire(5).expect("acquire with a follower down");
    assert!(l.is_held() && l2.is_held());
    assert_eq!(client.metrics().failovers, 0);
}

#[test]
fn leases_survive_two_failovers_in_a_row() {
    let c = start(ClusterOptions {
        nodes: 5,
        ..ClusterOptions::default()
    });
    let client = client_of(&c, 0);
    let leases: Vec<Lease> = (0..20)
        .map(|_| {
            let l = client.lock(&key("twice")).expect("lease");
            l.acquire(5).expect("acquire");
            l
        })
        .collect();
    for _ in 0..2 {
        let leader = c.leader().expect("leader");
        c.kill(leader);
        c.await_leader(Duration::from_secs(5)).expect("new leader");
        assert!(
            wait_until(FAILOVER, || leases.iter().all(Lease::is_held)),
            "held again after a failover"
        );
    }
    assert_eq!(client.metrics().leases_lost, 0);
    assert!(client.metrics().failovers >= 2);
}

#[test]
fn a_paused_leader_is_left_for_the_new_one() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let leases: Vec<Lease> = (0..10)
        .map(|_| {
            let l = client.lock(&key("pause")).expect("lease");
            l.acquire(5).expect("acquire");
            l
        })
        .collect();
    let leader = c.leader().expect("leader");
    c.pause(leader);
    let new = c.await_leader(Duration::from_secs(5)).expect("new leader");
    assert_ne!(new, leader);
    // Renewals to the paused node go unanswered: the leases are doubted
    // and confirmed on the new leader well before they run out (33 s).
    let deadline = Duration::from_secs(30);
    assert!(
        wait_until(deadline, || client.metrics().leases_confirmed >= 10),
        "confirmed on the new leader: {:?}",
        client.metrics()
    );
    assert!(leases.iter().all(Lease::is_held));
    c.resume(leader);
    // The old leader is a follower now: nothing it does takes a lease.
    assert!(leases.iter().all(|l| !l.is_lost()));
    for l in &leases {
        l.release().expect("release");
    }
}

#[test]
fn an_evented_acquire_rides_through_a_leader_kill() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let k = key("evented-ride");
    let holder = client.lock(&k).expect("lease");
    holder.acquire(5).expect("acquire");
    let events = Events::new().expect("events");
    let waiter = client.lock(&k).expect("lease");
    waiter.acquire_start(30, &events, 7).expect("start");
    let leader = c.leader().expect("leader");
    assert!(
        wait_until(Duration::from_secs(5), || c.blocked_requests(leader) == 1),
        "the waiter blocked in its `w` on the leader"
    );
    c.kill(leader);
    assert_confirmed(&client, &holder);
    holder.release().expect("release");
    let got = await_event(&events, Duration::from_secs(30));
    assert_eq!((got.tag, got.kind), (7, EventKind::Acquired), "{:?}", got.error);
    assert!(waiter.is_held());
}

#[test]
fn an_evented_acquire_started_during_the_election_is_granted_by_the_new_leader() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let warm = client.lock(&key("warm")).expect("lease");
    warm.acquire(1).expect("acquire");
    c.kill(c.leader().expect("leader"));
    let events = Events::new().expect("events");
    let l = client.lock(&key("evented-election")).expect("lease");
    l.acquire_start(10, &events, 1).expect("start");
    let got = await_event(&events, Duration::from_secs(20));
    assert_eq!(got.kind, EventKind::Acquired, "{:?}", got.error);
    assert_confirmed(&client, &warm);
}

/// The next event on `events`, within `within`.
fn await_event(events: &Events, within: Duration) -> dflockd::events::Event {
    let mut got = None;
    assert!(
        wait_until(within, || {
            got = events.poll(1).pop();
            got.is_some()
        }),
        "an event within {within:?}"
    );
    got.expect("event")
}

/// A cluster with `--orphan-ttl` and a lock held on it, for two waiters to
/// queue behind across a failover.
struct Fifo {
    c: TestCluster,
    client: Client,
    key: String,
    holder: Lease,
    leader: usize,
}

impl Fifo {
    fn new(name: &str) -> Fifo {
        let c = start(ClusterOptions {
            orphan_ttl: Some(Duration::from_secs(30)),
            ..ClusterOptions::default()
        });
        let client = client_of(&c, 0);
        let key = key(name);
        let holder = client.lock(&key).expect("lease");
        holder.acquire(5).expect("acquire");
        let leader = c.leader().expect("leader");
        Fifo {
            c,
            client,
            key,
            holder,
            leader,
        }
    }

    /// Await `n` waiters blocked on the leader.
    fn blocked(&self, n: usize) {
        assert!(
            wait_until(Duration::from_secs(5), || self.c.blocked_requests(self.leader)
                == n),
            "{n} waiter(s) blocked on the leader"
        );
    }

    /// Kill the leader; once the holder is confirmed and both waiters have
    /// re-attached on the new leader under their refs, let go.
    fn fail_over_and_release(&self) {
        self.c.kill(self.leader);
        assert_confirmed(&self.client, &self.holder);
        let new = self.c.leader().expect("leader");
        assert!(
            wait_until(FAILOVER, || self.c.blocked_requests(new) == 2),
            "both waiters re-attached on the new leader"
        );
        self.holder.release().expect("release");
    }
}

#[test]
fn waiters_keep_their_fifo_place_across_a_failover_with_orphan_ttl() {
    let f = Fifo::new("fifo");
    let (tx, rx) = mpsc::channel();
    let mut waiters = Vec::new();
    for name in ["first", "second"] {
        let w = Arc::new(f.client.lock(&f.key).expect("lease"));
        let (w2, tx) = (Arc::clone(&w), tx.clone());
        std::thread::spawn(move || {
            let r = w2.acquire(30).map_err(|e| e.to_string());
            let _ = tx.send((name, r));
        });
        waiters.push(w);
        f.blocked(waiters.len());
    }
    f.fail_over_and_release();
    let (name, r) = rx.recv_timeout(Duration::from_secs(10)).expect("one granted");
    assert_eq!((name, r), ("first", Ok(())), "FIFO kept across the failover");
    waiters[0].release().expect("release");
    let (name, r) = rx.recv_timeout(Duration::from_secs(10)).expect("then the other");
    assert_eq!((name, r), ("second", Ok(())));
}

#[test]
fn evented_waiters_keep_their_fifo_place_across_a_failover_with_orphan_ttl() {
    let f = Fifo::new("evented-fifo");
    let events = Events::new().expect("events");
    let waiters: Vec<Lease> = (0..2)
        .map(|i| {
            let w = f.client.lock(&f.key).expect("lease");
            w.acquire_start(30, &events, i).expect("start");
            f.blocked(i as usize + 1);
            w
        })
        .collect();
    f.fail_over_and_release();
    let got = await_event(&events, Duration::from_secs(10));
    assert_eq!(
        (got.tag, got.kind),
        (0, EventKind::Acquired),
        "FIFO kept: {:?}",
        got.error
    );
    waiters[0].release().expect("release");
    let got = await_event(&events, Duration::from_secs(10));
    assert_eq!((got.tag, got.kind), (1, EventKind::Acquired), "{:?}", got.error);
}

#[test]
fn calls_stay_bounded_when_no_member_leads() {
    let c = start(ClusterOptions::default());
    let client = client_of(&c, 0);
    let warm = client.lock(&key("bounded-warm")).expect("lease");
    warm.acquire(1).expect("acquire");
    warm.release().expect("release");
    // The leader freezes and no election follows: every member is silent
    // or refuses, for longer than any call may take.
    c.hold_elections(true);
    c.pause(c.leader().expect("leader"));
    let cfg = client.config();
    let bound = cfg.connect_timeout + cfg.io_timeout + Duration::from_millis(500);
    let b = client.clone();
    let barrier = std::thread::spawn(move || {
        let t0 = Instant::now();
        (b.barrier().map_err(|e| e.kind()), t0.elapsed())
    });
    let l = client.lock(&key("bounded")).expect("lease");
    let t0 = Instant::now();
    let tried = l.try_acquire();
    let took = t0.elapsed();
    assert!(tried.is_err(), "no leader, no grant: {tried:?}");
    assert!(took <= bound, "try_acquire took {took:?} (bound {bound:?})");
    let (r, took) = barrier.join().expect("barrier thread");
    assert!(r.is_err(), "{r:?}");
    assert!(took <= bound, "barrier took {took:?} (bound {bound:?})");
    c.hold_elections(false);
}
