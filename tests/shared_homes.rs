//! Held leases share connections (`Config::max_leases_per_connection`,
//! default 1,024): a few sockets carry thousands of leases, their renewals
//! pipelined; a dropped home reports every lease on it at once; FIFO and
//! cancel stay exact; hostile replies on a shared home give no lease
//! another's outcome. Default client settings throughout (a lease length
//! is the user's choice, set per lock where a test must see renewals).

mod client_common;

use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use client_common::*;
use dflockd::ErrorKind;
use dflockd::client::Client;
use dflockd::lease::Lease;
use dflockd::testserver::ServerOptions;

fn roomy() -> ServerOptions {
    ServerOptions {
        max_locks: 20_000,
        ..ServerOptions::default()
    }
}

/// `n` held locks of `lease_s` seconds (`None`: the server's default).
fn hold_many(client: &Client, prefix: &str, n: usize, lease_s: Option<u64>) -> Vec<Lease> {
    (0..n)
        .map(|_| {
            let lease = client.lock(&key(prefix)).expect("lease");
            lease.set_lease_ttl(lease_s).expect("ttl");
            lease.acquire(10).expect("acquire");
            lease
        })
        .collect()
}

/// None of `leases` can be taken by another client.
fn rivals_cannot_take(srv: &Srv, leases: &[Lease]) {
    let rival = srv.client();
    for lease in leases.iter().step_by(leases.len().div_ceil(50).max(1)) {
        let r = rival.lock(lease.key()).expect("lease");
        assert!(!r.try_acquire().expect("try"), "{} is still held", lease.key());
    }
}

#[test]
fn thousands_of_held_leases_share_a_few_connections_and_stay_renewed() {
    if skip_external("thousands_of_held_leases_share_a_few_connections_and_stay_renewed") {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client();
    let leases = hold_many(&client, "share", 3_000, Some(2));
    let m = client.metrics();
    assert!(
        client.home_connections() <= 3,
        "3,000 leases on {} homes",
        client.home_connections()
    );
    assert!(m.open_connections <= 4, "{} sockets", m.open_connections);
    // Two rounds of renewals (every second for a 2 s lease), pipelined.
    let start = m.renewals;
    assert!(
        wait_until(Duration::from_secs(20), || client.metrics().renewals
            >= start + 6_000),
        "renewals: {}",
        client.metrics().renewals - start
    );
    let m = client.metrics();
    assert_eq!(m.leases_lost, 0);
    assert_eq!(m.home_connections, client.home_connections() as u64);
    eprintln!("worst renewal lateness: {} us", m.renewal_lateness_max_us);
    assert!(leases.iter().all(Lease::is_held));
    rivals_cannot_take(&srv, &leases);
    for lease in &leases {
        lease.release().expect("release");
    }
    assert_eq!(client.home_connections(), 0);
    assert_eq!(client.metrics().leases_lost, 0);
}

#[test]
fn a_cap_of_one_gives_every_lease_its_own_connection() {
    if skip_external("a_cap_of_one_gives_every_lease_its_own_connection") {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client_with(|c| c.max_leases_per_connection = 1);
    let leases = hold_many(&client, "cap1", 40, None);
    assert_eq!(client.home_connections(), 40);
    for lease in &leases {
        lease.release().expect("release");
    }
    assert_eq!(client.home_connections(), 0);
}

/// Threads acquiring at once never fill a home past its cap: each try on a
/// home reserves its place there until it is answered.
#[test]
fn threads_acquiring_at_once_never_fill_a_home_past_its_cap() {
    if skip_external("threads_acquiring_at_once_never_fill_a_home_past_its_cap") {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client_with(|c| c.max_leases_per_connection = 10);
    let leases: Vec<Lease> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let client = &client;
                s.spawn(move || hold_many(client, &format!("cap10-{t}"), 25, None))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(leases.len(), 200);
    // 200 leases, at most 10 a home: at least 20 homes (more when a busy
    // home sent an acquire to a connection of its own).
    let homes = client.home_connections();
    assert!(homes >= 20, "{homes} homes for 200 leases at 10 a home");
    assert!(leases.iter().all(Lease::is_held));
}

#[test]
fn a_dropped_shared_home_reports_every_lease_on_it_lost_within_50_ms() {
    if skip_external("a_dropped_shared_home_reports_every_lease_on_it_lost_within_50_ms") {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client();
    let leases = hold_many(&client, "drop", 500, None);
    assert_eq!(client.home_connections(), 1);
    let lost_at = Arc::new(Mutex::new(Vec::new()));
    for lease in &leases {
        let lost_at = Arc::clone(&lost_at);
        lease.on_lost(Some(Box::new(move |e| {
            lost_at.lock().unwrap().push((e.kind(), Instant::now()));
        })));
    }
    let dropped = Instant::now();
    srv.ts().drop_connections();
    assert!(
        wait_until(Duration::from_secs(5), || lost_at.lock().unwrap().len() == 500),
        "{} of 500 reported lost",
        lost_at.lock().unwrap().len()
    );
    // is_held() turns false before the callback runs.
    assert!(leases.iter().all(|l| !l.is_held()));
    let lost_at = lost_at.lock().unwrap();
    assert!(lost_at.iter().all(|(k, _)| *k == ErrorKind::LeaseLost));
    let last = lost_at.iter().map(|(_, t)| *t - dropped).max().unwrap();
    assert!(
        last <= Duration::from_millis(50),
        "the last loss came after {last:?}"
    );
    // New work reconnects.
    let fresh = client.lock(&key("drop-after")).expect("lease");
    fresh.acquire(5).expect("acquire after the drop");
    fresh.release().expect("release");
}

#[test]
fn without_auto_release_the_leases_of_a_dropped_home_are_confirmed_elsewhere() {
    if skip_external("without_auto_release_the_leases_of_a_dropped_home_are_confirmed_elsewhere") {
        return;
    }
    let srv = embedded(ServerOptions {
        auto_release_on_disconnect: false,
        ..roomy()
    });
    let client = srv.client_with(|c| c.auto_release_on_disconnect = false);
    let leases = hold_many(&client, "confirm", 200, None);
    let tokens: Vec<_> = leases.iter().map(|l| l.token().expect("token")).collect();
    srv.ts().drop_connections();
    assert!(
        wait_until(Duration::from_secs(10), || client.metrics().leases_confirmed
            >= 200),
        "{} of 200 confirmed",
        client.metrics().leases_confirmed
    );
    assert_eq!(client.metrics().leases_lost, 0);
    assert!(leases.iter().all(Lease::is_held));
    let now: Vec<_> = leases.iter().map(|l| l.token().expect("token")).collect();
    assert_eq!(tokens, now, "the same grants, confirmed");
    // Confirmed together on a few fresh connections, not one each.
    assert!(
        client.home_connections() <= 3,
        "{} homes after the confirmations",
        client.home_connections()
    );
    rivals_cannot_take(&srv, &leases);
}

/// 100 leases on one home, then the server misbehaves on it with `fault`:
/// every lease on the home ends lost (none keeps a reply meant for
/// another), and closing the home freed them on the server.
fn a_misbehaving_home_loses_every_lease(name: &str, fault: impl FnOnce(&dflockd::testserver::TestServer)) {
    if skip_external(name) {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client();
    let leases = hold_many(&client, name, 100, Some(2));
    assert_eq!(client.home_connections(), 1);
    fault(srv.ts());
    assert!(
        wait_until(Duration::from_secs(10), || leases.iter().all(Lease::is_lost)),
        "{} of 100 lost",
        leases.iter().filter(|l| l.is_lost()).count()
    );
    srv.ts().set_hostile_reply(None);
    assert!(leases.iter().all(|l| !l.is_held()));
    let rival = srv.client();
    for lease in leases.iter().step_by(10) {
        let r = rival.lock(lease.key()).expect("lease");
        assert!(
            wait_until(Duration::from_secs(5), || r.try_acquire().unwrap_or(false)),
            "{} was freed",
            lease.key()
        );
    }
}

#[test]
fn hostile_replies_on_a_shared_home_lose_every_lease_on_it() {
    // Renewals answered with a reply no renewal may get.
    a_misbehaving_home_loses_every_lease("hostile", |ts| ts.set_hostile_reply(Some(b"queued\n".to_vec())));
}

#[test]
fn a_stray_line_on_a_shared_home_is_never_a_renewal_and_breaks_it() {
    // A line nobody asked for: the next renewal on the home finds it
    // before sending (or, landing among replies in flight, the last real
    // reply is left over): either way the home is out of step and dropped.
    a_misbehaving_home_loses_every_lease("stray", |ts| ts.inject(b"ok 30\n"));
}

#[test]
fn starts_on_one_key_are_granted_in_start_order_with_shared_homes() {
    let srv = any_server();
    let client = srv.client();
    let k = key("fifo");
    let holder = srv.client().lock(&k).expect("lease");
    holder.acquire(5).expect("holder");
    // Leases held on the client's home while others wait.
    let _held = hold_many(&client, "fifo-other", 20, None);
    let (tx, rx) = mpsc::channel();
    let mut waiters = Vec::new();
    for i in 0..3 {
        let lease = client.lock(&k).expect("lease");
        let tx = tx.clone();
        waiters.push(thread::spawn(move || {
            lease.acquire(30).expect("acquire");
            tx.send(i).unwrap();
            lease.release().expect("release");
        }));
        assert!(
            wait_until(Duration::from_secs(5), || lock_waiters(&client, &k) == i + 1),
            "waiter {i} queued"
        );
    }
    holder.release().expect("release");
    let order: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(order, vec![0, 1, 2]);
    for w in waiters {
        w.join().unwrap();
    }
}

#[test]
fn a_cancelled_acquire_leaves_the_shared_home_and_its_leases_alone() {
    let srv = any_server();
    let client = srv.client();
    let held = hold_many(&client, "cancel-home", 10, None);
    let homes = client.home_connections();
    let k = key("cancel");
    let holder = srv.client().lock(&k).expect("lease");
    holder.acquire(5).expect("holder");
    let lease = Arc::new(client.lock(&k).expect("lease"));
    let waiting = Arc::clone(&lease);
    let t = thread::spawn(move || waiting.acquire(30));
    assert!(wait_until(Duration::from_secs(5), || lock_waiters(&client, &k) == 1));
    lease.cancel();
    let r = t.join().unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
    assert_waiter_gone(&client, &k);
    assert!(!lease.is_held());
    assert!(held.iter().all(Lease::is_held));
    assert_eq!(client.home_connections(), homes);
    assert_eq!(client.metrics().leases_lost, 0);
    rivals_cannot_take(&srv, &held);
}

#[test]
fn busy_callers_on_shared_homes_do_not_starve_renewals() {
    if skip_external("busy_callers_on_shared_homes_do_not_starve_renewals") {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client();
    let held = hold_many(&client, "busy-held", 500, Some(2));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let lease = client.lock(&key(&format!("busy-{i}"))).expect("lease");
                let mut pairs = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    lease.acquire(5).expect("acquire");
                    lease.release().expect("release");
                    pairs += 1;
                }
                pairs
            })
        })
        .collect();
    // Three rounds of renewals under load.
    let start = client.metrics().renewals;
    let renewed = wait_until(Duration::from_secs(20), || {
        client.metrics().renewals >= start + 1_500
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pairs: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(renewed, "renewals: {}", client.metrics().renewals - start);
    assert!(pairs > 0);
    if let Some(l) = held.iter().find(|l| l.is_lost()) {
        panic!("lost under load: {:?}", l.lost_error());
    }
    assert_eq!(client.metrics().leases_lost, 0);
    assert!(held.iter().all(Lease::is_held));
}

#[test]
fn a_short_pause_of_the_server_loses_no_lease_of_a_shared_home() {
    if skip_external("a_short_pause_of_the_server_loses_no_lease_of_a_shared_home") {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client();
    let leases = hold_many(&client, "pause", 300, Some(3));
    // Through two rounds of renewals, a pause each time some are in flight.
    for _ in 0..2 {
        let start = client.metrics().renewals;
        assert!(wait_until(Duration::from_secs(5), || client.metrics().renewals > start));
        srv.ts().pause();
        thread::sleep(Duration::from_millis(600)); // the fault itself: a frozen server
        srv.ts().resume();
    }
    let start = client.metrics().renewals;
    assert!(
        wait_until(Duration::from_secs(10), || client.metrics().renewals
            >= start + 600),
        "renewals resumed"
    );
    assert_eq!(client.metrics().leases_lost, 0, "{:?}", client.metrics());
    assert!(leases.iter().all(Lease::is_held));
    rivals_cannot_take(&srv, &leases);
}

#[test]
fn evented_acquires_share_homes_too() {
    use dflockd::events::{EventKind, Events};
    if skip_external("evented_acquires_share_homes_too") {
        return;
    }
    let srv = embedded(roomy());
    let client = srv.client();
    let q = Events::new().expect("events");
    // One after another: every lease joins the first one's connection.
    let mut leases = Vec::new();
    for i in 0..300u64 {
        let lease = client.lock(&key("ev-share")).expect("lease");
        lease.acquire_start(10, &q, i).expect("start");
        assert_eq!(event(&q).kind, EventKind::Acquired);
        leases.push(lease);
    }
    assert_eq!(client.home_connections(), 1);
    // 1,000 started at once: the first ones open connections (at most a
    // lane's dials), the rest join them.
    for i in 0..1_000u64 {
        let lease = client.lock(&key("ev-burst")).expect("lease");
        lease.acquire_start(10, &q, 1_000 + i).expect("start");
        leases.push(lease);
    }
    for _ in 0..1_000 {
        let e = event(&q);
        assert_eq!(e.kind, EventKind::Acquired, "{:?}", e.error);
    }
    let m = client.metrics();
    assert!(m.home_connections <= 20, "{m:?}");
    assert!(m.open_connections <= 24, "{m:?}");
    // A taken key: the try on a home finds it taken, the wait goes on a
    // connection of its own, and the grant comes in order.
    let k = key("ev-taken");
    let holder = srv.client().lock(&k).expect("lease");
    holder.acquire(5).expect("holder");
    let waiter = client.lock(&k).expect("lease");
    waiter.acquire_start(10, &q, 9_999).expect("start");
    assert!(wait_until(Duration::from_secs(5), || lock_waiters(&client, &k) == 1));
    holder.release().expect("release");
    assert_eq!(event(&q).tag, 9_999);
    assert!(waiter.is_held());
    assert!(leases.iter().all(Lease::is_held));
    assert_eq!(client.metrics().leases_lost, 0);
}

/// Ten threads, each with a lease on its own key, each acquiring and
/// releasing in a loop through one completion queue that another thread
/// drains (what the Go binding does with ten goroutines): the tries and
/// releases meet on shared homes, and every one is answered.
#[test]
fn evented_acquire_release_cycles_on_shared_homes_are_all_answered() {
    use dflockd::events::{Event, EventKind, Events};
    if skip_external("evented_acquire_release_cycles_on_shared_homes_are_all_answered") {
        return;
    }
    const THREADS: usize = 10;
    let srv = embedded(roomy());
    let client = srv.client();
    let q = Arc::new(Events::new().expect("events"));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Event>()).unzip();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drain = {
        let (q, stop) = (Arc::clone(&q), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(e) = next_event(&q, Duration::from_millis(100)) {
                    txs[e.tag as usize].send(e).expect("dispatch");
                }
            }
        })
    };
    let end = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let (client, q) = (client.clone(), Arc::clone(&q));
            thread::spawn(move || {
                let lease = client.lock(&key("ev-cycle")).expect("lease");
                let mut pairs = 0u64;
                while Instant::now() < end {
                    for (start, want) in [(true, EventKind::Acquired), (false, EventKind::Released)] {
                        if start {
                            lease.acquire_start(30, &q, i as u64).expect("start");
                        } else {
                            lease.release_start(&q, i as u64).expect("release");
                        }
                        let e = rx
                            .recv_timeout(Duration::from_secs(30))
                            .expect("an event within 30 s");
                        assert_eq!(e.kind, want, "lease {i} after {pairs} pairs: {:?}", e.error);
                    }
                    pairs += 1;
                }
                pairs
            })
        })
        .collect();
    let pairs: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drain.join().expect("drain");
    assert!(pairs > 100, "{pairs} pairs");
    assert_eq!(client.metrics().leases_lost, 0);
}
