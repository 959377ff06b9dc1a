//! fork(): a child's NEW client renews and reports loss; handles inherited
//! from the parent refuse with `Forked` and freeing them in the child
//! leaves the parent's lease alone. ONE test (fork from a test binary with
//! parallel tests would copy their state mid-flight).
#![cfg(all(feature = "test-server", target_os = "linux"))]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use dflockd::ErrorKind;
use dflockd::client::{Client, Config};
use dflockd::testserver::{ServerOptions, TestServer};

fn client(port: u16) -> Client {
    Client::new(Config::new(vec![("127.0.0.1".into(), port)])).expect("client")
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($msg)+)));
        }
    };
}

fn forked<T: std::fmt::Debug>(r: dflockd::Result<T>) -> bool {
    matches!(&r, Err(e) if e.kind() == ErrorKind::Forked && e.message().contains("before fork()"))
}

/// The child's checks; `Err` = the verdict to report.
fn child(
    parent: Client,
    parent_lease: dflockd::lease::Lease,
    parent_conn: dflockd::connection::Connection,
    port: u16,
    mut sync: UnixStream,
) -> Result<(), String> {
    // (2) Inherited handles refuse, before touching anything of theirs.
    ensure!(forked(parent.lock("x")), "inherited client lock");
    ensure!(forked(parent.stats(0)), "inherited client stats");
    ensure!(forked(parent_lease.acquire(0)), "inherited lease acquire");
    ensure!(forked(parent_lease.release()), "inherited lease release");
    ensure!(
        !parent_lease.is_held() && parent_lease.token().is_none(),
        "inherited lease looks held"
    );
    ensure!(
        parent_lease.wait_lost(Some(Duration::from_secs(5))),
        "wait_lost returns at once"
    );
    ensure!(
        parent_lease
            .lost_error()
            .is_some_and(|e| e.kind() == ErrorKind::Forked),
        "lost_error says Forked"
    );
    ensure!(forked(parent_conn.ping()), "inherited connection ping");
    parent_conn.abort(); // must not shut the parent's socket down
    // Freeing them sends nothing: the parent keeps its lease.
    drop(parent_lease);
    drop(parent);
    drop(parent_conn);

    // (1) A new client renews: a 2 s lease held for 5 s.
    let c = client(port);
    let l = c.lock("fork-child").map_err(|e| e.to_string())?;
    l.set_lease_ttl(Some(2)).map_err(|e| e.to_string())?;
    l.acquire(5).map_err(|e| format!("child acquire: {e}"))?;
    sync.write_all(b"A").map_err(|e| e.to_string())?; // parent: try to take it now
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        ensure!(l.is_held(), "child lease not held after {:?}", until.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(!l.is_lost(), "child lease lost");
    // Release only once the parent has stopped trying: an attempt of its
    // in flight while we release would take the lease fairly.
    sync.write_all(b"D").map_err(|e| e.to_string())?;
    let mut ack = [0u8];
    sync.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    sync.read_exact(&mut ack)
        .map_err(|e| format!("parent's ack: {e}"))?;
    ensure!(&ack == b"K", "parent's ack {ack:?}");
    ensure!(l.is_held(), "child lease not held at the end");
    l.release().map_err(|e| format!("child release after 5 s: {e}"))?;

    // (3) Loss reporting: the child's own test server drops the connection.
    let server = TestServer::start(ServerOptions::default()).map_err(|e| e.to_string())?;
    let c2 = client(server.port());
    let l2 = c2.lock("fork-lost").map_err(|e| e.to_string())?;
    l2.set_lease_ttl(Some(2)).map_err(|e| e.to_string())?;
    l2.acquire(5).map_err(|e| e.to_string())?;
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let n = Arc::clone(&calls);
    l2.on_lost(Some(Box::new(move |_| {
        n.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(());
    })));
    server.drop_connections();
    ensure!(
        l2.wait_lost(Some(Duration::from_secs(10))),
        "child lease not reported lost"
    );
    ensure!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "lost callback did not run"
    );
    ensure!(
        calls.load(Ordering::SeqCst) == 1,
        "lost callback ran {} times",
        calls.load(Ordering::SeqCst)
    );
    drop((l2, c2, l, c));
    server.stop();
    Ok(())
}

#[test]
fn a_child_after_fork_gets_a_working_client_and_inherited_handles_refuse() {
    let server = TestServer::start(ServerOptions::default()).expect("server");
    let port = server.port();
    let parent = client(port);
    let lease = parent.lock("fork-parent").expect("lease");
    lease.acquire(5).expect("parent acquire");
    let conn = parent.connect(0).expect("conn");
    conn.ping().expect("ping");
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");

    // SAFETY: the child only runs this test's code and then _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(ours);
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            child(parent, lease, conn, port, theirs)
        }));
        let code = match verdict {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                eprintln!("child: {msg}");
                1
            }
            Err(_) => {
                eprintln!("child: panicked");
                2
            }
        };
        // SAFETY: end the child without running the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);

    // While the child holds "fork-child" (renewed by its own threads),
    // nobody else gets it. The child says "D" when its 5 s are over and
    // releases only after our "K", so every attempt below precedes its
    // release.
    let mut byte = [0u8];
    ours.read_exact(&mut byte).expect("child acquired");
    assert_eq!(&byte, b"A");
    let other = client(port);
    let rival = other.lock("fork-child").expect("lease");
    ours.set_nonblocking(true).expect("nonblocking");
    loop {
        match ours.read(&mut byte) {
            Ok(1) => break,
            Ok(_) => panic!("child went away while holding"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            !rival.try_acquire().expect("try"),
            "took the child's renewed lease"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(&byte, b"D");
    ours.set_nonblocking(false).expect("blocking");
    ours.write_all(b"K").expect("ack");

    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x}"
    );

    // The child released its lease; the parent's survived the child.
    assert!(rival.try_acquire().expect("try"), "child's lease released");
    assert!(
        lease.is_held(),
        "parent's lease still held after the child freed its copy"
    );
    let steal = other.lock("fork-parent").expect("lease");
    assert!(
        !steal.try_acquire().expect("try"),
        "the child released the parent's lease"
    );
    conn.ping().expect("parent's connection unharmed");
    lease.release().expect("parent release");
    drop((steal, rival, other, lease, conn, parent));
    server.stop();
}
