//! Throughput and footprint of the client core, side by side with a raw
//! socket floor. Run with `cargo bench --bench throughput`.
//!
//! The server is the `dflockd-testserver` binary run as a separate process
//! (so its threads and memory are not counted as ours); it exits when our
//! end of its stdin closes.
//!
//! Prints:
//! - acquire+release pairs per second and p50/p99 latency through the
//!   high-level `Lease` API (`try_acquire` + `release`, as the C ABI bench
//!   `benches/c/abi_bench.c` does) at 1 and 10 threads, the same two round
//!   trips on a raw `TcpStream` (the floor), and their ratio, also as
//!   `RATIO bench=rust threads=N value=R se=E` lines for `make bench` (E:
//!   standard error from the spread of the per-round ratios);
//! - threads and resident memory of this process while 10,000 leases are
//!   held and renewed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dflockd::client::{Client, Config};
use dflockd::lease::Lease;

const SLICE: Duration = Duration::from_millis(500);
const ROUNDS: usize = 6;
const HELD: usize = 10_000;
const HELD_LEASE_S: u64 = 6;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dflockd-testserver"))
            .args(["--port", "0", "--max-locks", "100000", "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dflockd-testserver");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("address line");
        let port = line
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("127.0.0.1:PORT");
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn raise_nofile(want: u64) -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = want.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// Pairs per second and latencies (ns) gathered over several slices.
#[derive(Default)]
struct Tally {
    samples: Vec<u64>,
    secs: f64,
    /// Pairs per second of each slice, to see how much the ratio wanders.
    slice_rates: Vec<f64>,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.secs
    }

    /// Standard error of the mean of the per-round ratios `self / other`
    /// (round i = slice i of each): the noise left after alternation.
    fn ratio_se(&self, other: &Tally) -> f64 {
        let r: Vec<f64> = self
            .slice_rates
            .iter()
            .zip(&other.slice_rates)
            .map(|(a, b)| a / b)
            .collect();
        let n = r.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let mean = r.iter().sum::<f64>() / n;
        let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (var / n).sqrt()
    }

    fn pct(&mut self, p: f64) -> f64 {
        self.samples.sort_unstable();
        let i = ((self.samples.len() as f64 * p) as usize).min(self.samples.len().saturating_sub(1));
        self.samples.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// Run every worker (one pair per call) on its own thread for `slice`,
/// then hand the workers back for the next slice.
fn slice<W: FnMut() + Send + 'static>(workers: Vec<W>, slice: Duration, tally: &mut Tally) -> Vec<W> {
    let barrier = Arc::new(Barrier::new(workers.len() + 1));
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut pair| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let end = Instant::now() + slice;
                let mut samples = Vec::with_capacity(100_000);
                while Instant::now() < end {
                    let t = Instant::now();
                    pair();
                    samples.push(t.elapsed().as_nanos() as u64);
                }
                (pair, samples)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut back = Vec::new();
    let mut pairs = 0;
    for h in handles {
        let (pair, samples) = h.join().expect("worker");
        pairs += samples.len();
        tally.samples.extend(samples);
        back.push(pair);
    }
    let secs = started.elapsed().as_secs_f64();
    tally.secs += secs;
    tally.slice_rates.push(pairs as f64 / secs);
    back
}

/// Raw and high-level workers alternate in short slices, so both see the
/// same machine noise (the build machine is shared).
fn compare<R, L>(mut raw: Vec<R>, mut lease: Vec<L>) -> (Tally, Tally)
where
    R: FnMut() + Send + 'static,
    L: FnMut() + Send + 'static,
{
    for w in raw.iter_mut() {
        for _ in 0..200 {
            w();
        }
    }
    for w in lease.iter_mut() {
        for _ in 0..200 {
            w();
        }
    }
    let (mut r, mut l) = (Tally::default(), Tally::default());
    for _ in 0..ROUNDS {
        raw = slice(raw, SLICE, &mut r);
        lease = slice(lease, SLICE, &mut l);
    }
    (r, l)
}

/// The floor: the same two round trips, hand-written on a raw socket.
fn raw_pair(port: u16, key: String) -> impl FnMut() + Send + 'static {
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::new(sock.try_clone().expect("clone"));
    let mut writer = sock;
    let acquire = format!("l\n{key}\n0\n").into_bytes();
    let mut line = String::new();
    move || {
        writer.write_all(&acquire).expect("write");
        line.clear();
        reader.read_line(&mut line).expect("read");
        let token = line.split(' ').nth(1).expect("granted").to_owned();
        writer
            .write_all(format!("r\n{key}\n{token}\n").as_bytes())
            .expect("write");
        line.clear();
        reader.read_line(&mut line).expect("read");
        assert_eq!(line, "ok\n");
    }
}

fn lease_pair(client: &Client, key: String) -> impl FnMut() + Send + 'static {
    let lease = client.lock(&key).expect("lease");
    move || {
        assert!(lease.try_acquire().expect("acquire"), "uncontended key was taken");
        lease.release().expect("release");
    }
}

fn status_field(name: &str) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open("/proc/self/status").and_then(|mut f| f.read_to_string(&mut s));
    s.lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

fn rss_kib() -> u64 {
    status_field("VmRSS:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

fn threads() -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let library = names.iter().filter(|n| n.starts_with("dflockd-")).count();
    (names.len(), library)
}

fn held_leases(ports: &[u16]) {
    let rss_before = rss_kib();
    let (threads_before, _) = threads();
    let mut cfg = Config::new(ports.iter().map(|&p| ("127.0.0.1".to_owned(), p)).collect());
    cfg.default_lease_ttl_s = Some(HELD_LEASE_S);
    let client = Client::new(cfg).expect("client");
    let started = Instant::now();
    let leases: Vec<Lease> = (0..HELD)
        .map(|i| {
            let l = client.lock(&format!("held-{i}")).expect("lease");
            l.acquire(5).expect("acquire");
            l
        })
        .collect();
    let took = started.elapsed();
    // Hold past a whole lease so every one of them has been renewed.
    std::thread::sleep(Duration::from_secs(HELD_LEASE_S) + Duration::from_secs(1));
    let still = leases.iter().filter(|l| l.is_held()).count();
    let (total, library) = threads();
    let rss = rss_kib();
    println!();
    println!(
        "## {HELD} leases held and renewed ({HELD_LEASE_S} s leases, renewed every 3 s; sharded over {} server processes)",
        ports.len()
    );
    println!(
        "acquired in {:.2} s; still held after {} s: {still}/{HELD}",
        took.as_secs_f64(),
        HELD_LEASE_S + 1
    );
    println!(
        "threads in this process: {total} (before: {threads_before}); library threads: {library}   goal: <= 4 library threads -> {}",
        if library <= 4 { "MET" } else { "MISSED" }
    );
    println!(
        "VmRSS: {:.1} MiB (before: {:.1} MiB)   goal: < 64 MiB -> {}",
        rss as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        if rss < 64 * 1024 { "MET" } else { "MISSED" }
    );
    let started = Instant::now();
    drop(leases);
    println!("released all in {:.2} s", started.elapsed().as_secs_f64());
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore arguments.
    let nofile = raise_nofile(2 * HELD as u64 + 1024);
    let server = Server::start();
    println!(
        "# dflockd client throughput (server: dflockd-testserver process on 127.0.0.1:{}; RLIMIT_NOFILE {nofile})",
        server.port
    );

    // Footprint first, so its RSS is not inflated by the throughput phases.
    // A held lease pins one connection, and the test server spends about
    // three fds per connection (socket + wake pipe), so under a 20,000 fd
    // limit one server process cannot take 10,000 connections: shard the
    // leases over two (which also exercises sharding).
    let second = Server::start();
    held_leases(&[server.port, second.port]);
    drop(second);

    let client = Client::new(Config::new(vec![("127.0.0.1".into(), server.port)])).expect("client");
    println!();
    println!(
        "## acquire+release pairs (try-lock on uncontended keys; raw and lease alternate in {} x {} ms slices)",
        ROUNDS,
        SLICE.as_millis()
    );
    println!(
        "{:<8} {:>12} {:>10} {:>10}   {:>12} {:>10} {:>10}   {:>8}",
        "threads", "lease/s", "p50 us", "p99 us", "raw/s", "p50 us", "p99 us", "raw/lease"
    );
    let mut ratio_one = 0.0;
    let mut ratios = Vec::new();
    for threads in [1usize, 10] {
        let raw = (0..threads)
            .map(|i| raw_pair(server.port, format!("raw-{threads}-{i}")))
            .collect();
        let lease = (0..threads)
            .map(|i| lease_pair(&client, format!("lease-{threads}-{i}")))
            .collect();
        let (mut raw, mut high) = compare(raw, lease);
        let ratio = raw.rate() / high.rate();
        if threads == 1 {
            ratio_one = ratio;
        }
        ratios.push((threads, ratio, raw.ratio_se(&high)));
        println!(
            "{:<8} {:>12.0} {:>10.1} {:>10.1}   {:>12.0} {:>10.1} {:>10.1}   {:>8.3}",
            threads,
            high.rate(),
            high.pct(0.50),
            high.pct(0.99),
            raw.rate(),
            raw.pct(0.50),
            raw.pct(0.99),
            ratio
        );
    }
    println!(
        "goal: high-level within 1.15x of the raw floor at 1 thread -> {:.3}x {}",
        ratio_one,
        if ratio_one <= 1.15 { "MET" } else { "MISSED" }
    );
    // Machine-readable, for `make bench` to set beside the C ABI's ratio.
    for (threads, ratio, se) in ratios {
        println!("RATIO bench=rust threads={threads} value={ratio:.4} se={se:.4}");
    }
}
