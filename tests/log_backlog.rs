//! A slow log callback cannot grow an unbounded backlog nor hold up the
//! last free (src/notify.rs): the engine's DEBUG lines wait for the
//! notifier up to `log::BACKLOG_MAX`, beyond that they are dropped and one
//! WARN line says how many; `acquire_async` completions are never dropped;
//! and the last free emits queued lines for at most
//! `log::SHUTDOWN_LOG_DRAIN`. The logger is process-wide: ONE test here.
//! Default client settings; only the logger is slow (2 ms per message).
#![cfg(feature = "test-server")]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use dflockd::client::{Client, Config};
use dflockd::events::{EventKind, Events};
use dflockd::log::{self, BACKLOG_MAX, Level, SHUTDOWN_LOG_DRAIN};
use dflockd::testserver::{ServerOptions, TestServer};

/// The next event on `q`, polling its fd, at most 30 s.
fn event(q: &Events) -> EventKind {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = q.poll(1).pop() {
            return e.kind;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("an event within 30 s");
        let mut p = libc::pollfd {
            fd: q.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, left.as_millis().clamp(1, 1000) as i32) };
    }
}

/// "N log messages dropped: ..." -> N.
fn dropped_in(message: &str) -> Option<u64> {
    let (n, rest) = message.split_once(' ')?;
    rest.starts_with("log messages dropped").then(|| n.parse().ok())?
}

#[test]
fn a_slow_logger_gets_a_bounded_backlog_and_a_prompt_free() {
    let server = TestServer::start(ServerOptions::default()).expect("server");
    let client = Client::new(Config::new(vec![("127.0.0.1".into(), server.port())])).expect("client");
    let lease = client.lock("log-backlog").expect("lease");
    let other = client.lock("log-backlog-async").expect("lease");
    let q = Events::new().expect("events");

    let received = Arc::new(AtomicUsize::new(0));
    let reported = Arc::new(AtomicU64::new(0));
    let (r, d) = (Arc::clone(&received), Arc::clone(&reported));
    log::set_logger(
        Some(Arc::new(move |level, message: &str| {
            std::thread::sleep(Duration::from_millis(2));
            if let (Level::Warn, Some(n)) = (level, dropped_in(message)) {
                d.fetch_add(n, Ordering::SeqCst);
            }
            r.fetch_add(1, Ordering::SeqCst);
        })),
        Level::Debug,
    );

    // Evented acquire/release cycles: the engine logs each request and
    // reply (DEBUG), far faster than 2 ms per line.
    let mut peak = 0;
    let mut cycles = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while reported.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no drop reported within 60 s");
        lease.acquire_start(5, &q, 1).expect("acquire_start");
        assert_eq!(event(&q), EventKind::Acquired);
        lease.release_start(&q, 2).expect("release_start");
        assert_eq!(event(&q), EventKind::Released);
        cycles += 1;
        peak = peak.max(log::backlog());
        // A completion queued behind a full backlog still runs.
        if cycles % 500 == 0 {
            let (tx, rx) = mpsc::channel();
            other.acquire_async(5, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(30)),
                Ok(true),
                "completion ran"
            );
            other.release().expect("release");
        }
    }
    let dropped = reported.load(Ordering::SeqCst);
    eprintln!(
        "{cycles} cycles; backlog peak {peak}; {} lines received; {dropped} reported dropped",
        received.load(Ordering::SeqCst)
    );
    assert!(
        peak <= BACKLOG_MAX + 1,
        "backlog peak {peak} > {BACKLOG_MAX} + the report"
    );

    // Keep the backlog full, then free everything: the last free returns
    // within the drain bound, not after the whole backlog (2 ms a line).
    while log::backlog() < BACKLOG_MAX / 2 {
        assert!(Instant::now() < deadline, "backlog did not refill within 60 s");
        lease.acquire_start(5, &q, 1).expect("acquire_start");
        assert_eq!(event(&q), EventKind::Acquired);
        lease.release_start(&q, 2).expect("release_start");
        assert_eq!(event(&q), EventKind::Released);
    }
    drop((lease, other));
    let before = log::backlog();
    let t = Instant::now();
    drop(client);
    let took = t.elapsed();
    eprintln!("last free with {before} lines queued took {took:?}");
    assert!(
        before as u32 * Duration::from_millis(2) > SHUTDOWN_LOG_DRAIN * 4,
        "the backlog ({before} lines) would have outlasted the bound"
    );
    // The bound, one 2 ms call in progress and the client's own teardown,
    // with room for a loaded machine.
    assert!(
        took < SHUTDOWN_LOG_DRAIN + Duration::from_millis(300),
        "the last free took {took:?} with {before} log lines queued"
    );
    assert_eq!(log::backlog(), 0, "nothing left queued after the free");
    log::set_logger(None, Level::Error);
    server.stop();
}
