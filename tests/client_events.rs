//! Evented acquire and release (`acquire_start`, `release_start`) on the
//! completion queue: outcomes, FIFO order, cancel, deadlines against a
//! silent server, refused connects, TLS and auth through the engine's own
//! dial, and `acquire_async` on the engine. All over real sockets, with
//! default settings.

mod client_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use client_common::*;
use dflockd::ErrorKind;
use dflockd::events::{EventKind, Events};
use dflockd::testserver::{ServerOptions, TlsIdentity};
use dflockd::transport::TlsOptions;

#[test]
fn acquire_start_and_release_start_report_on_the_queue() {
    let srv = any_server();
    let client = srv.client();
    let q = Events::new().unwrap();
    let lease = client.lock(&key("ev")).unwrap();
    lease.acquire_start(5, &q, 7).unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (7, EventKind::Acquired), "{:?}", e.error);
    assert!(lease.is_held());
    assert!(lock_held_on_server(&client, 0, lease.key()));
    // A second start on a held handle is refused at once.
    let again = lease.acquire_start(5, &q, 8).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidArgument);
    lease.release_start(&q, 9).unwrap();
    assert!(!lease.is_held(), "not held once the release started");
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (9, EventKind::Released), "{:?}", e.error);
    assert!(!lock_held_on_server(&client, 0, lease.key()));
    assert_eq!(
        lease.release_start(&q, 10).unwrap_err().kind(),
        ErrorKind::NotHeld
    );
    assert!(q.poll(8).is_empty(), "exactly one event per start");
}

#[test]
fn a_contended_acquire_start_times_out_like_a_blocking_one() {
    let srv = any_server();
    let client = srv.client();
    let k = key("ev-busy");
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    let q = Events::new().unwrap();
    let lease = client.lock(&k).unwrap();
    let t0 = Instant::now();
    lease.acquire_start(1, &q, 1).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(50), "start returned at once");
    let e = event(&q);
    assert_eq!(e.kind, EventKind::AcquireFailed);
    assert_eq!(e.error.unwrap().kind(), ErrorKind::Timeout);
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(!lease.is_held());
    assert_eq!(client.metrics().acquire_timeouts, 1);
}

#[test]
fn acquires_started_one_after_another_are_granted_in_that_order() {
    let srv = any_server();
    let client = srv.client();
    let k = key("ev-fifo");
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    let q = Events::new().unwrap();
    let n = 40;
    let leases: Vec<_> = (0..n).map(|_| client.lock(&k).unwrap()).collect();
    for (i, l) in leases.iter().enumerate() {
        l.acquire_start(30, &q, i as u64).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&client, &k) == n as u64));
    holder.release().unwrap();
    let mut order = Vec::new();
    while order.len() < n {
        let e = event(&q);
        match e.kind {
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
fn cancel_ends_a_pending_start_and_leaves_nothing_queued() {
    let srv = any_server();
    let client = srv.client();
    let k = key("ev-cancel");
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    let q = Events::new().unwrap();
    let lease = client.lock(&k).unwrap();
    lease.acquire_start(60, &q, 3).unwrap();
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&client, &k) == 1));
    let t0 = Instant::now();
    lease.cancel();
    let e = event(&q);
    assert!(t0.elapsed() < Duration::from_secs(1), "cancelled promptly");
    assert_eq!((e.tag, e.kind), (3, EventKind::AcquireFailed));
    assert_eq!(e.error.unwrap().kind(), ErrorKind::Cancelled);
    // (On 1.10 the dropped waiter stays listed, but its grant is given back
    // at once: the next acquirer is not held up, checked below.)
    assert_waiter_gone(&client, &k);
    // The handle is usable again: the next start gets the lock once free.
    lease.acquire_start(10, &q, 4).unwrap();
    holder.release().unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (4, EventKind::Acquired), "{:?}", e.error);
}

#[test]
fn a_silent_server_fails_the_start_at_its_deadline() {
    if skip_external("pause") {
        return;
    }
    let srv = embedded(ServerOptions::default());
    let client = srv.client();
    let q = Events::new().unwrap();
    let lease = client.lock(&key("ev-silent")).unwrap();
    // Warm a pooled connection, then make the server silent.
    client.lock(&key("warm")).unwrap().acquire(1).unwrap();
    srv.ts().pause();
    let t0 = Instant::now();
    lease.acquire_start(1, &q, 5).unwrap();
    // The calling thread stays free: it can poll (and do other work).
    assert!(next_event(&q, Duration::from_millis(200)).is_none());
    let e = event(&q);
    let took = t0.elapsed();
    srv.ts().resume();
    assert_eq!(e.kind, EventKind::AcquireFailed);
    assert_eq!(
        e.error.as_ref().unwrap().kind(),
        ErrorKind::Deadline,
        "{:?}",
        e.error
    );
    // The bound of a blocking acquire: timeout + I/O timeout (+ connect).
    let cfg = client.config();
    let bound = Duration::from_secs(1) + cfg.io_timeout + cfg.connect_timeout;
    assert!(took <= bound + Duration::from_millis(100), "took {took:?}");
    // Not before the server had its I/O timeout to answer.
    assert!(
        took >= cfg.io_timeout - Duration::from_millis(50),
        "took {took:?}"
    );
}

#[test]
fn a_refused_connect_fails_the_start_quickly() {
    // A port nothing listens on (bound then closed).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client =
        dflockd::client::Client::new(dflockd::client::Config::new(vec![("127.0.0.1".into(), port)])).unwrap();
    let q = Events::new().unwrap();
    let lease = client.lock("refused").unwrap();
    lease.acquire_start(1, &q, 1).unwrap();
    let e = next_event(&q, Duration::from_secs(2)).expect("failed within 2 s");
    assert_eq!(e.kind, EventKind::AcquireFailed);
    assert_eq!(e.error.unwrap().kind(), ErrorKind::Io);
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

#[test]
fn the_engine_dials_tls_with_auth_and_resolves_host_names() {
    if skip_external("tls") {
        return;
    }
    let identity = TlsIdentity::from_files(&fixture("server.pem"), &fixture("server.key")).unwrap();
    let srv = embedded(ServerOptions {
        tls: Some(identity),
        auth_token: Some("s3cret-evented".into()),
        ..ServerOptions::default()
    });
    // The name verified is the host dialed unless overridden.
    for (host, name) in [
        ("127.0.0.1", Some("localhost")),
        ("localhost", None),
        ("127.0.0.1", None),
    ] {
        let client = srv.client_with(|c| {
            c.servers = vec![(host.into(), srv.port)];
            c.tls = Some(TlsOptions {
                ca_file: Some(fixture("ca.pem")),
                server_name: name.map(Into::into),
                ..TlsOptions::default()
            });
        });
        let q = Events::new().unwrap();
        let lease = client.lock(&key("ev-tls")).unwrap();
        lease.acquire_start(5, &q, 1).unwrap();
        let e = event(&q);
        assert_eq!(e.kind, EventKind::Acquired, "{host}: {:?}", e.error);
        lease.release_start(&q, 2).unwrap();
        assert_eq!(event(&q).kind, EventKind::Released);
    }
    // A wrong secret fails through the engine's dial too, without it.
    let client = srv.client_with(|c| {
        c.auth_token = Some("wrong".into());
        c.tls = Some(TlsOptions {
            ca_file: Some(fixture("ca.pem")),
            server_name: Some("localhost".into()),
            ..TlsOptions::default()
        });
    });
    let q = Events::new().unwrap();
    let lease = client.lock(&key("ev-auth")).unwrap();
    lease.acquire_start(5, &q, 1).unwrap();
    let e = event(&q);
    assert_eq!(e.kind, EventKind::AcquireFailed);
    let err = e.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(!err.to_string().contains("wrong"), "secret in message: {err}");
}

#[test]
fn acquire_async_runs_on_the_engine_and_calls_back_on_the_notifier() {
    let srv = any_server();
    let client = srv.client();
    let lease = client.lock(&key("ev-async")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    lease.acquire_async(
        5,
        Box::new(move |r| {
            let name = std::thread::current().name().map(str::to_owned);
            let _ = tx.send((r.map_err(|e| e.kind()), name));
        }),
    );
    let (r, thread) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(r, Ok(()));
    assert_eq!(thread.as_deref(), Some("dflockd-notify"));
    assert!(lease.is_held());
}

#[test]
fn wait_start_completes_a_two_phase_acquire_without_a_thread() {
    let srv = any_server();
    let client = srv.client();
    let k = key("ev-2phase");
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    let q = Events::new().unwrap();
    let lease = client.lock(&k).unwrap();
    assert_eq!(
        lease.wait_start(1, &q, 1).unwrap_err().kind(),
        ErrorKind::NotEnqueued
    );
    assert!(!lease.enqueue().unwrap(), "queued behind the holder");
    lease.wait_start(1, &q, 2).unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (2, EventKind::AcquireFailed));
    assert_eq!(e.error.unwrap().kind(), ErrorKind::Timeout);
    assert!(!lease.enqueue().unwrap());
    lease.wait_start(30, &q, 3).unwrap();
    holder.release().unwrap();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (3, EventKind::Acquired), "{:?}", e.error);
    assert!(lease.is_held());
    lease.release().unwrap();
    // Enqueue that acquires at once: wait_start reports it at once.
    assert!(lease.enqueue().unwrap());
    lease.wait_start(1, &q, 4).unwrap();
    assert_eq!(
        q.poll(4).iter().map(|e| (e.tag, e.kind)).collect::<Vec<_>>(),
        vec![(4, EventKind::Acquired)]
    );
    // Cancel of a pending wait leaves the queue.
    let other = client.lock(&k).unwrap();
    assert!(!other.enqueue().unwrap());
    other.wait_start(60, &q, 5).unwrap();
    other.cancel();
    let e = event(&q);
    assert_eq!((e.tag, e.kind), (5, EventKind::AcquireFailed));
    assert_eq!(e.error.unwrap().kind(), ErrorKind::Cancelled);
    assert_waiter_gone(&client, &k);
}

#[test]
fn cancelled_starts_leave_the_others_in_order() {
    let srv = any_server();
    let client = srv.client();
    let k = key("ev-fifo-cancel");
    let holder = client.lock(&k).unwrap();
    holder.acquire(5).unwrap();
    let q = Events::new().unwrap();
    let n = 30;
    let leases: Vec<_> = (0..n).map(|_| client.lock(&k).unwrap()).collect();
    for (i, l) in leases.iter().enumerate() {
        l.acquire_start(30, &q, i as u64).unwrap();
        if i % 3 == 1 {
            l.cancel(); // at once: some before their e was even sent
        }
    }
    let kept: Vec<u64> = (0..n as u64).filter(|i| i % 3 != 1).collect();
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&client, &k)
        == kept.len() as u64));
    holder.release().unwrap();
    let (mut order, mut cancelled) = (Vec::new(), 0);
    while order.len() < kept.len() || cancelled < n - kept.len() {
        let e = event(&q);
        match e.kind {
            EventKind::Acquired => {
                order.push(e.tag);
                leases[e.tag as usize].release_start(&q, 1000 + e.tag).unwrap();
            }
            EventKind::AcquireFailed => {
                assert_eq!(e.tag % 3, 1, "only the cancelled fail: {:?}", e.error);
                assert_eq!(e.error.unwrap().kind(), ErrorKind::Cancelled);
                cancelled += 1;
            }
            EventKind::Released => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(order, kept);
}

#[test]
fn a_start_refuses_at_once_what_a_blocking_acquire_refuses() {
    let srv = any_server();
    let client = srv.client();
    let q = Events::new().unwrap();
    let lease = client.lock(&key("ev-bad")).unwrap();
    let too_long = dflockd::protocol::MAX_SECONDS + 1;
    let blocking = lease.acquire(too_long).unwrap_err();
    let evented = lease.acquire_start(too_long, &q, 1).unwrap_err();
    assert_eq!(evented.kind(), ErrorKind::InvalidArgument);
    assert_eq!(evented.kind(), blocking.kind());
    assert!(lease.enqueue().unwrap());
    lease.release().unwrap();
    assert_eq!(
        lease.wait_start(too_long, &q, 2).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(q.poll(4).is_empty(), "no event for a refused start");
    // The handle is not left busy.
    lease.acquire_start(1, &q, 3).unwrap();
    assert_eq!(event(&q).kind, EventKind::Acquired);
}
