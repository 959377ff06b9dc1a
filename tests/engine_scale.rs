//! Scale of the event engine (issue 9, point 3): 10,000 pending
//! `acquire_start` calls on contended keys cost at most 4 library threads
//! and at most 64 MiB of resident memory, and the acquires of one key,
//! started one after another from one thread, are granted in the order of
//! their start calls.
//!
//! Every pending acquire holds its own connection (the server queues a
//! waiter per connection), so the servers take 10,000 connections. They run
//! as separate processes (`dflockd-testserver`), so their thread per
//! connection and their memory are not counted as ours. Two of them, half
//! the keys on each: the test server spends three descriptors per
//! connection (the socket and its wake-up pipe), so one server would need
//! 30,000, more than a common hard limit of 20,000 (it then stops
//! accepting, and the acquires queued behind the backlog time out); two
//! need 15,000 each. Default client settings; the waits are awaited (server
//! stats, the completion queue's fd), never slept.

mod client_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client_common::key;
use dflockd::client::{Client, Config};
use dflockd::events::{Event, EventKind, Events};
use dflockd::lease::Lease;

/// Pending acquires.
const PENDING: usize = 10_000;
/// Contended keys, half on each server; acquire `i` goes to key
/// `i % KEYS`.
const KEYS: usize = 100;
/// Server processes.
const SERVERS: usize = 2;
/// Library threads allowed while they are pending (issue 9).
const MAX_THREADS: usize = 4;
/// Resident memory allowed while they are pending (issue 9).
const MAX_RSS: u64 = 64 << 20;
/// Descriptors needed by this process (one connection per pending
/// acquire, the holders', the queue's eventfd, the engine's epoll and
/// waker, the test harness) and by each server (three per connection).
const NOFILE_NEEDED: u64 = {
    let ours = PENDING + KEYS + 256;
    let each_server = 3 * (PENDING + KEYS) / SERVERS + 256;
    (if ours > each_server { ours } else { each_server }) as u64
};
/// Tags of releases (acquires are tagged with their start index).
const RELEASE: u64 = 1 << 32;

/// A standalone test server, limits raised for 10,000 connections and
/// waiters; it exits when our end of its stdin closes.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let n = (2 * PENDING).to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dflockd-testserver"))
            .args(["--port", "0", "--max-locks", "100000", "--exit-on-stdin-eof"])
            .args(["--max-connections", &n, "--max-waiters", &n])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dflockd-testserver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address line");
        let port = line
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("expected 127.0.0.1:PORT, got {line:?}"));
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Raise the soft descriptor limit to the hard one (inherited by the
/// server process started afterwards); the new soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// This process's threads whose name says they are the library's.
fn library_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .filter(|n| n.starts_with("dflockd"))
        .collect()
}

/// This process's resident memory (VmRSS), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Wait on the queue's fd (as an event loop would) up to `ms`, then take
/// what is there.
fn poll_events(q: &Events, ms: i32) -> Vec<Event> {
    let mut p = libc::pollfd {
        fd: q.fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
    q.poll(256)
}

/// Waiters the servers report on `keys`, summed.
fn waiters(client: &Client, keys: &[String]) -> u64 {
    (0..SERVERS)
        .filter_map(|s| client.stats(s).ok())
        .flat_map(|stats| stats.locks)
        .filter(|l| keys.contains(&l.key))
        .map(|l| l.waiters)
        .sum()
}

/// `KEYS` fresh keys, `KEYS / SERVERS` on each server.
fn keys_spread(client: &Client) -> Vec<String> {
    let mut per_server = [0; SERVERS];
    let mut keys = Vec::new();
    while keys.len() < KEYS {
        let k = key("scale");
        let s = client.server_for(&k).expect("shard");
        if per_server[s] < KEYS / SERVERS {
            per_server[s] += 1;
            keys.push(k);
        }
    }
    keys
}

#[test]
fn ten_thousand_pending_acquire_starts_cost_few_threads_and_keep_their_order() {
    let nofile = raise_nofile();
    if nofile < NOFILE_NEEDED {
        eprintln!(
            "SKIPPED: {PENDING} pending acquires need {NOFILE_NEEDED} descriptors; the hard RLIMIT_NOFILE is {nofile} (raise it with ulimit -Hn)"
        );
        return;
    }
    let servers: Vec<Server> = (0..SERVERS).map(|_| Server::start()).collect();
    let addrs = servers.iter().map(|s| ("127.0.0.1".into(), s.port)).collect();
    let client = Client::new(Config::new(addrs)).expect("client");
    let keys = keys_spread(&client);
    let holders: Vec<Lease> = keys
        .iter()
        .map(|k| {
            let l = client.lock(k).expect("lease");
            l.acquire(5).expect("holder acquires a free key");
            l
        })
        .collect();

    let q = Events::new().expect("queue");
    let leases: Vec<Lease> = (0..PENDING)
        .map(|i| client.lock(&keys[i % KEYS]).expect("lease"))
        .collect();
    let t0 = Instant::now();
    for (i, l) in leases.iter().enumerate() {
        l.acquire_start(120, &q, i as u64).expect("start");
    }
    let started = t0.elapsed();

    // Await the server's queues holding every one of them (no event may
    // arrive meanwhile: nothing is granted or fails).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(e) = poll_events(&q, 20).first() {
            panic!("unexpected event while pending: {e:?}");
        }
        let w = waiters(&client, &keys);
        if w == PENDING as u64 {
            break;
        }
        assert!(
            Instant::now() < until,
            "only {w} of {PENDING} queued on the server after 60 s"
        );
    }
    let queued = t0.elapsed();
    let threads = library_threads();
    let resident = rss();
    println!(
        "{PENDING} acquire_start on {KEYS} keys ({SERVERS} servers): started in {started:?}, all queued on the server after {queued:?}; \
         library threads {} {threads:?}, VmRSS {:.1} MiB",
        threads.len(),
        resident as f64 / f64::from(1 << 20)
    );
    assert!(
        threads.len() <= MAX_THREADS,
        "{} library threads while {PENDING} acquires are pending: {threads:?}",
        threads.len()
    );
    assert!(
        resident <= MAX_RSS,
        "VmRSS {resident} bytes > {MAX_RSS} while {PENDING} acquires are pending"
    );

    // Hand every key down its queue: each grant is released at once, which
    // grants the next waiter of that key. Acquire i of key k must come
    // after every earlier start on k.
    let t1 = Instant::now();
    for h in &holders {
        h.release().expect("holder releases");
    }
    let mut next: Vec<usize> = (0..KEYS).collect(); // the next start index due per key
    let (mut granted, mut released) = (0, 0);
    let until = Instant::now() + Duration::from_secs(60);
    while granted < PENDING || released < PENDING {
        assert!(
            Instant::now() < until,
            "after 60 s: {granted} granted, {released} released of {PENDING}"
        );
        for e in poll_events(&q, 100) {
            match e.kind {
                EventKind::Acquired => {
                    let i = e.tag as usize;
                    let k = i % KEYS;
                    assert_eq!(
                        i, next[k],
                        "key {k}: start #{i} granted while #{} (started earlier) still waits",
                        next[k]
                    );
                    next[k] += KEYS;
                    granted += 1;
                    leases[i]
                        .release_start(&q, RELEASE | e.tag)
                        .expect("release_start");
                }
                EventKind::Released => released += 1,
                other => panic!("{other:?} for tag {:#x}: {:?}", e.tag, e.error),
            }
        }
    }
    let handoffs = t1.elapsed();
    println!(
        "all {PENDING} granted in start order per key and released in {handoffs:?} \
         ({:.0} handoffs/s over {KEYS} keys)",
        PENDING as f64 / handoffs.as_secs_f64()
    );

    // Everything ends cleanly: nothing left on the server or the queue,
    // nothing lost or timed out, and the library's threads end with the
    // last handle.
    assert!(q.poll(8).is_empty(), "one event per start");
    for s in 0..SERVERS {
        let stats = client.stats(s).expect("stats");
        assert!(
            stats.locks.iter().all(|l| !keys.contains(&l.key)),
            "locks left on server {s}: {:?}",
            stats.locks
        );
    }
    assert!(leases.iter().all(|l| !l.is_held() && !l.is_lost()));
    let m = client.metrics();
    assert_eq!(
        (m.leases_lost, m.acquire_timeouts, m.deadline_hits),
        (0, 0, 0),
        "{m:?}"
    );
    assert_eq!(m.releases as usize, PENDING + KEYS, "{m:?}");
    drop(leases);
    drop(holders);
    drop(client);
    let left = library_threads();
    assert!(left.is_empty(), "library threads after the last handle: {left:?}");
    drop(servers);
}
