//! The evented forms of try-acquire, enqueue and stats
//! (`try_acquire_start`, `enqueue_start`, `Client::stats_start`) on the
//! completion queue: outcomes as the blocking calls report them, their
//! place in the FIFO order of a key's starts, cancel, nothing left queued
//! after a failed try. All over real sockets, with default settings.

mod client_common;

use std::time::{Duration, Instant};

use client_common::*;
use dflockd::ErrorKind;
use dflockd::events::{Event, EventKind, Events};
use dflockd::testserver::ServerOptions;

fn kind_of(e: &Event) -> Option<ErrorKind> {
    e.error.as_ref().map(|e| e.kind())
}

#[test]
fn try_acquire_start_reports_what_try_acquire_returns() {
    let srv = any_server();
    let client = srv.client();
    let k = key("try-ev");
    let q = Events::new().unwrap();
    let lease = client.lock(&k).unwrap();
    let t0 = Instant::now();
    lease.try_acquire_start(&q, 1).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(50), "start returned at once");
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (1, EventKind::Acquired), "{:?}", e.error);
    assert!(lease.is_held());
    assert!(lock_held_on_server(&client, 0, &k));
    assert_eq!(
        lease.try_acquire_start(&q, 2).unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "refused at once on a held handle"
    );
    // Taken: AcquireFailed / Timeout at once, where try_acquire says false,
    // and nothing stays queued on the server.
    let other = client.lock(&k).unwrap();
    assert!(!other.try_acquire().unwrap());
    let t0 = Instant::now();
    other.try_acquire_start(&q, 3).unwrap();
    let e = event(&q);
    assert!(t0.elapsed() < Duration::from_secs(1), "answered at once");
    assert_eq!((e.tag, e.kind), (3, EventKind::AcquireFailed));
    assert_eq!(kind_of(&e), Some(ErrorKind::Timeout));
    assert!(!other.is_held());
    assert_eq!(lock_waiters(&client, &k), 0, "a failed try leaves nothing queued");
    assert_eq!(
        client.metrics().acquire_timeouts,
        2,
        "counted as the blocking try is"
    );
    // Released: the same handle's next try gets it.
    lease.release().unwrap();
    other.try_acquire_start(&q, 4).unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (4, EventKind::Acquired), "{:?}", e.error);
    assert!(other.is_held());
    assert!(q.poll(8).is_empty(), "exactly one event per start");
}

#[test]
fn a_try_keeps_its_place_among_the_starts_of_its_key() {
    let srv = any_server();
    let client = srv.client();
    let q = Events::new().unwrap();
    for round in 0..10u64 {
        let k = key("try-fifo");
        // An acquire started before a try gets the free key; the try finds
        // it taken (it is sent only once the acquire was answered).
        let first = client.lock(&k).unwrap();
        let tryer = client.lock(&k).unwrap();
        first.acquire_start(30, &q, 10 * round).unwrap();
        tryer.try_acquire_start(&q, 10 * round + 1).unwrap();
        let (a, b) = (event(&q), event(&q));
        assert_eq!(
            (a.tag, a.kind),
            (10 * round, EventKind::Acquired),
            "{:?}",
            a.error
        );
        assert_eq!((b.tag, b.kind), (10 * round + 1, EventKind::AcquireFailed));
        assert_eq!(kind_of(&b), Some(ErrorKind::Timeout));
        // A try started before an acquire gets it; the acquire queues
        // behind it and gets the key when the try's holder lets go.
        first.release().unwrap();
        let later = client.lock(&k).unwrap();
        tryer.try_acquire_start(&q, 10 * round + 2).unwrap();
        later.acquire_start(30, &q, 10 * round + 3).unwrap();
        let c = event(&q);
        assert_eq!(
            (c.tag, c.kind),
            (10 * round + 2, EventKind::Acquired),
            "{:?}",
            c.error
        );
        assert!(wait_until(Duration::from_secs(10), || lock_waiters(&client, &k) == 1));
        tryer.release().unwrap();
        let d = event(&q);
        assert_eq!(
            (d.tag, d.kind),
            (10 * round + 3, EventKind::Acquired),
            "{:?}",
            d.error
        );
        later.release().unwrap();
    }
}

#[test]
fn cancel_ends_a_pending_try_or_enqueue_and_leaves_nothing_on_the_server() {
    if skip_external("pause") {
        return;
    }
    let srv = embedded(ServerOptions::default());
    let client = srv.client();
    let k = key("try-cancel");
    let q = Events::new().unwrap();
    // Warm a pooled connection, then make the server silent: the request
    // goes out and stays unanswered.
    client.lock(&key("warm")).unwrap().acquire(1).unwrap();
    let tryer = client.lock(&k).unwrap();
    let enq = client.lock(&k).unwrap();
    srv.ts().pause();
    tryer.try_acquire_start(&q, 1).unwrap();
    enq.enqueue_start(&q, 2).unwrap();
    assert!(next_event(&q, Duration::from_millis(200)).is_none(), "pending");
    let t0 = Instant::now();
    tryer.cancel();
    enq.cancel();
    let (a, b) = (event(&q), event(&q));
    assert!(t0.elapsed() < Duration::from_secs(1), "cancelled promptly");
    let mut got = [(a.tag, a.kind, kind_of(&a)), (b.tag, b.kind, kind_of(&b))];
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [
            (1, EventKind::AcquireFailed, Some(ErrorKind::Cancelled)),
            (2, EventKind::AcquireFailed, Some(ErrorKind::Cancelled)),
        ]
    );
    srv.ts().resume();
    // Whatever the server did with the requests, closing their connections
    // undid it: the key is free and nobody waits.
    assert!(wait_until(Duration::from_secs(5), || !lock_held_on_server(
        &client, 0, &k
    ) && lock_waiters(
        &client, &k
    ) == 0));
    assert!(!tryer.is_held() && !enq.is_held());
    // Both handles are usable again.
    tryer.try_acquire_start(&q, 3).unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (3, EventKind::Acquired), "{:?}", e.error);
}

#[test]
fn enqueue_start_then_wait_start_is_a_two_phase_acquire_without_a_thread() {
    let srv = any_server();
    let client = srv.client();
    let k = key("enq-ev");
    let q = Events::new().unwrap();
    // Free key: acquired at once (enqueue's Ok(true)).
    let lease = client.lock(&k).unwrap();
    lease.enqueue_start(&q, 1).unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (1, EventKind::Acquired), "{:?}", e.error);
    assert!(lease.is_held());
    // Taken: queued (Ok(false)); the wait goes on the same connection.
    let other = client.lock(&k).unwrap();
    other.enqueue_start(&q, 2).unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (2, EventKind::Enqueued), "{:?}", e.error);
    assert!(e.error.is_none());
    assert_eq!(lock_waiters(&client, &k), 1);
    assert_eq!(
        other.enqueue_start(&q, 3).unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "already enqueued"
    );
    other.wait_start(30, &q, 4).unwrap();
    lease.release().unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (4, EventKind::Acquired), "{:?}", e.error);
    assert!(other.is_held());
    // The blocking wait works after it too.
    let third = client.lock(&k).unwrap();
    third.enqueue_start(&q, 5).unwrap();
    assert_eq!(event(&q).kind, EventKind::Enqueued);
    other.release().unwrap();
    third.wait(10).unwrap();
    assert!(third.is_held());
    third.release().unwrap();
    // After Enqueued, cancel leaves the queue and the wait reports it.
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    third.enqueue_start(&q, 6).unwrap();
    assert_eq!(event(&q).kind, EventKind::Enqueued);
    third.cancel();
    assert!(wait_until(Duration::from_secs(5), || lock_waiters(&client, &k) == 0));
    assert_eq!(third.wait(1).unwrap_err().kind(), ErrorKind::Cancelled);
    // After Enqueued, release_start leaves the queue without I/O.
    third.enqueue_start(&q, 7).unwrap();
    assert_eq!(event(&q).kind, EventKind::Enqueued);
    third.release_start(&q, 8).unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (8, EventKind::Released));
    assert!(wait_until(Duration::from_secs(5), || lock_waiters(&client, &k) == 0));
    assert!(q.poll(8).is_empty(), "exactly one event per start");
}

#[test]
fn enqueues_and_acquires_started_one_after_another_keep_their_order() {
    let srv = any_server();
    let client = srv.client();
    let k = key("enq-fifo");
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    let q = Events::new().unwrap();
    let n = 30;
    let leases: Vec<_> = (0..n).map(|_| client.lock(&k).unwrap()).collect();
    for (i, l) in leases.iter().enumerate() {
        if i % 2 == 0 {
            l.enqueue_start(&q, i as u64).unwrap();
        } else {
            l.acquire_start(30, &q, i as u64).unwrap();
        }
    }
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&client, &k) == n as u64));
    holder.release().unwrap();
    let mut order = Vec::new();
    while order.len() < n {
        let e = event(&q);
        match e.kind {
            EventKind::Enqueued => leases[e.tag as usize].wait_start(30, &q, e.tag).unwrap(),
            EventKind::Acquired => {
                order.push(e.tag);
                leases[e.tag as usize].release_start(&q, 1000 + e.tag).unwrap();
            }
            EventKind::Released => {}
            other => panic!("unexpected {other:?}: {:?}", e.error),
        }
    }
    assert_eq!(order, (0..n as u64).collect::<Vec<_>>());
}

#[test]
fn stats_start_reports_the_reply_on_the_queue() {
    let srv = any_server();
    let client = srv.client();
    let k = key("stats-ev");
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    let q = Events::new().unwrap();
    let t0 = Instant::now();
    client.stats_start(0, &q, 9).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(50), "start returned at once");
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (9, EventKind::Stats), "{:?}", e.error);
    assert!(e.error.is_none());
    let stats = e.stats.expect("the reply");
    assert!(stats.locks.iter().any(|l| l.key == k), "{}", stats.json);
    assert!(stats.json.starts_with('{'));
    // A bad index is refused at once, with no event.
    assert_eq!(
        client.stats_start(5, &q, 10).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // Many at once: one event each, no thread parked per request.
    for tag in 0..50 {
        client.stats_start(0, &q, 100 + tag).unwrap();
    }
    let mut tags: Vec<u64> = (0..50)
        .map(|_| event(&q))
        .map(|e| {
            assert_eq!(e.kind, EventKind::Stats, "{:?}", e.error);
            e.tag
        })
        .collect();
    tags.sort();
    assert_eq!(tags, (100..150).collect::<Vec<_>>());
    assert!(q.poll(8).is_empty());
}

#[test]
fn a_stats_start_that_cannot_connect_reports_stats_failed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client =
        dflockd::client::Client::new(dflockd::client::Config::new(vec![("127.0.0.1".into(), port)])).unwrap();
    let q = Events::new().unwrap();
    client.stats_start(0, &q, 1).unwrap();
    let e = next_event(&q, Duration::from_secs(2)).expect("failed within 2 s");
    assert_eq!((e.tag, e.kind), (1, EventKind::StatsFailed));
    assert_eq!(kind_of(&e), Some(ErrorKind::Io));
    assert!(e.stats.is_none());
}

#[test]
fn replies_nobody_drains_are_still_read_by_the_engine() {
    // A reply is read by whoever drains the queue (the queue's fd holds the
    // awaited sockets); when nobody does, the engine reads it (its sweep of
    // queues not polled for 250 ms), so the try is granted and held, not
    // left unread until its deadline.
    let srv = any_server();
    let client = srv.client();
    let k = key("undrained");
    let q = Events::new().unwrap();
    let lease = client.lock(&k).unwrap();
    lease.try_acquire_start(&q, 1).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || lease.is_held()),
        "granted without a poll of the queue"
    );
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (1, EventKind::Acquired), "{:?}", e.error);
    assert_eq!(client.metrics().deadline_hits, 0, "read in time, not timed out");
    // An acquire's `w` goes out after a `queued` nobody drained: the waiter
    // is granted by the server once the holder lets go, and holds it.
    let waiter = client.lock(&k).unwrap();
    waiter.acquire_start(30, &q, 2).unwrap();
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&client, &k) == 1));
    lease.release().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || waiter.is_held()),
        "the grant was read without a poll of the queue"
    );
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (2, EventKind::Acquired), "{:?}", e.error);
}
