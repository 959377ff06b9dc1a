//! A binding that registers `watch_lost` after every grant (the natural
//! thing for one that hands out a "lost" future per acquire) must not grow
//! without bound: a handle keeps one registration, a new one replaces it.
//! Its own test binary, so no other test moves this process's RSS.

mod client_common;

use client_common::*;
use dflockd::events::{EventKind, Events};
use dflockd::testserver::ServerOptions;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no memory effects.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn watch_lost_after_every_grant_keeps_memory_flat_over_100k_cycles() {
    if skip_external("RSS of many cycles against the embedded server") {
        return;
    }
    let srv = embedded(ServerOptions::default());
    let client = srv.client();
    let lease = client.lock(&key("watch-flat")).expect("lease");
    let q = Events::new().expect("queue");
    let cycle = |i: u64| {
        assert!(lease.try_acquire().expect("try"), "uncontended");
        lease.watch_lost(&q, i).expect("watch");
        lease.release().expect("release");
    };
    for i in 0..10_000 {
        cycle(i);
    }
    let warm = rss();
    for i in 10_000..110_000 {
        cycle(i);
    }
    let grown = rss().saturating_sub(warm);
    // 100,000 kept registrations would be 2.4 MB or more.
    assert!(
        grown < 1 << 20,
        "RSS grew {grown} bytes over 100,000 grant/release cycles"
    );
    assert!(q.poll(16).is_empty(), "a release is not a loss");
    // The one registration left still works: a loss fires it, once.
    lease.try_acquire().expect("try");
    lease.watch_lost(&q, 7).expect("watch");
    srv.ts().drop_connections();
    assert!(wait_until(std::time::Duration::from_secs(5), || lease.is_lost()));
    let events = q.poll(16);
    assert_eq!(
        events.iter().map(|e| (e.tag, e.kind)).collect::<Vec<_>>(),
        vec![(7, EventKind::Lost)]
    );
}
