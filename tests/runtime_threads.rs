//! Library threads end with the last client (src/runtime.rs): counted in
//! /proc/self/task, so this file holds ONE test (a test binary is one
//! process; parallel tests would share its threads).
#![cfg(all(feature = "test-server", target_os = "linux"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use dflockd::client::{Client, Config};
use dflockd::events::{EventKind, Events};
use dflockd::lease::Lease;
use dflockd::testserver::{ServerOptions, TestServer};

/// Names of this process's threads that start with `prefix`.
fn threads(prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        if let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) {
            let comm = comm.trim_end().to_owned();
            if comm.starts_with(prefix) {
                names.push(comm);
            }
        }
    }
    names.sort();
    names
}

/// The client library's threads (the test server's are `dflockd-conn-*`,
/// `dflockd-accept`, `dflockd-sweeper`). `dflockd-timer`, `dflockd-renew`
/// and `dflockd-acquire` are former ones, still counted should they return.
fn client_threads() -> Vec<String> {
    let mut t = threads("dflockd-");
    t.retain(|n| {
        [
            "dflockd-timer",
            "dflockd-renew",
            "dflockd-notify",
            "dflockd-acquire",
            "dflockd-engine",
            "dflockd-resolve",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    });
    t
}

fn client(server: &TestServer) -> Client {
    Client::new(Config::new(vec![("127.0.0.1".into(), server.port())])).expect("client")
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn threads_end_with_the_last_client_and_start_again() {
    assert_eq!(
        client_threads(),
        Vec::<String>::new(),
        "no library thread before any client"
    );
    let server = TestServer::start(ServerOptions::default()).expect("server");

    // 1. A held lease starts the scheduler; freeing the lease and then the
    //    client joins it before the drop returns.
    let c = client(&server);
    assert!(
        client_threads().is_empty(),
        "threads start with the first held lease"
    );
    let l = c.lock("rt-a").expect("lease");
    l.set_lease_ttl(Some(2)).expect("ttl");
    l.acquire(5).expect("acquire");
    // A new thread names itself once it runs: wait for the names.
    // One thread times and sends the renewals: the engine.
    wait_until("the engine thread", Duration::from_secs(10), || {
        client_threads() == ["dflockd-engine"]
    });
    let c2 = c.clone();
    drop(c);
    drop(l);
    assert_eq!(client_threads().len(), 1, "a client clone still lives");
    drop(c2);
    assert_eq!(
        client_threads(),
        Vec::<String>::new(),
        "joined before the last drop returned"
    );

    // 2. Lost callbacks queued at shutdown still run before it returns.
    let c = client(&server);
    let ran = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = mpsc::channel();
    let leases: Vec<Lease> = (0..2)
        .map(|i| {
            let l = c.lock(&format!("rt-lost-{i}")).expect("lease");
            l.set_lease_ttl(Some(2)).expect("ttl");
            l.acquire(5).expect("acquire");
            let (ran, tx) = (Arc::clone(&ran), started_tx.clone());
            l.on_lost(Some(Box::new(move |_| {
                let _ = tx.send(());
                std::thread::sleep(Duration::from_millis(300));
                ran.fetch_add(1, Ordering::SeqCst);
            })));
            l
        })
        .collect();
    server.drop_connections(); // the server frees both leases: renewals are refused
    for l in &leases {
        assert!(l.wait_lost(Some(Duration::from_secs(10))), "lost");
    }
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("first callback started");
    wait_until("the notifier", Duration::from_secs(10), || {
        client_threads().contains(&"dflockd-notify".to_owned())
    });
    drop(leases);
    drop(c);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "both callbacks ran before the last drop returned"
    );
    assert_eq!(client_threads(), Vec::<String>::new());

    // 3. The last client freed inside a lost callback (on a library
    //    thread): no self-join; the threads detach and exit by themselves.
    let c = client(&server);
    let l = c.lock("rt-self").expect("lease");
    l.set_lease_ttl(Some(2)).expect("ttl");
    l.acquire(5).expect("acquire");
    let slot: Arc<Mutex<Option<(Client, Lease)>>> = Arc::new(Mutex::new(None));
    let theirs = Arc::clone(&slot);
    let (done_tx, done) = mpsc::channel();
    l.on_lost(Some(Box::new(move |_| {
        let handles = theirs.lock().unwrap().take();
        drop(handles); // the last client and lease, dropped on the notifier
        let _ = done_tx.send(());
    })));
    *slot.lock().unwrap() = Some((c, l));
    server.drop_connections();
    done.recv_timeout(Duration::from_secs(10))
        .expect("callback dropped the last handles");
    wait_until("detached threads to exit", Duration::from_secs(10), || {
        client_threads().is_empty()
    });
    drop(slot);

    server.stop();
    assert_eq!(
        threads("dflockd-"),
        Vec::<String>::new(),
        "no dflockd- thread at all"
    );

    // 4. A new client afterwards renews normally: a 2 s lease held > 3 s
    //    stays held, and another client cannot take it meanwhile.
    let server = TestServer::start(ServerOptions::default()).expect("server");
    let c = client(&server);
    let other = client(&server);
    let l = c.lock("rt-again").expect("lease");
    l.set_lease_ttl(Some(2)).expect("ttl");
    l.acquire(5).expect("acquire");
    let token = l.token();
    let rival = other.lock("rt-again").expect("lease");
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        assert!(l.is_held(), "renewed");
        assert!(
            !rival.try_acquire().expect("try"),
            "another client took a held lock"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(l.is_held() && !l.is_lost() && l.token() == token);
    l.release().expect("release after > 3 s: it was renewed");
    assert!(rival.try_acquire().expect("try"), "free after release");
    drop((l, rival, c, other));
    assert_eq!(client_threads(), Vec::<String>::new());

    // 5. A host name is resolved on a resolver thread, for a blocking call
    //    (on the caller's behalf) and for the engine's own dial: both are
    //    threads of the generation, joined by the last free (here the
    //    resolver answered long before, so the join is immediate).
    let c = Client::new(Config::new(vec![("localhost".into(), server.port())])).expect("client");
    let held = c.lock("rt-resolve-a").expect("lease");
    held.acquire(5)
        .expect("blocking acquire: resolves localhost on a thread");
    let evented = c.lock("rt-resolve-b").expect("lease");
    let q = Events::new().expect("events");
    evented
        .acquire_start(5, &q, 1)
        .expect("evented acquire: the engine dials, resolving on a thread");
    wait_until("the evented acquire", Duration::from_secs(10), || {
        q.poll(1).pop().map(|e| e.kind) == Some(EventKind::Acquired) || evented.is_held()
    });
    assert!(held.is_held() && evented.is_held());
    drop((held, evented, c));
    assert_eq!(
        client_threads(),
        Vec::<String>::new(),
        "every thread, resolvers included, joined before the last drop returned"
    );
    server.stop();
    assert_eq!(threads("dflockd-"), Vec::<String>::new());
}
