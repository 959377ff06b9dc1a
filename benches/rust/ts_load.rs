//! Load on the test server with raw sockets (no client library): what the
//! scale work of issue 17 asks of `dflockd-testserver`.
//!
//! Starts `target/release/dflockd-testserver --port 0 --max-locks 200000`
//! (or `DFLOCKD_TESTSERVER_BIN`) as its own process, then
//! 1. opens `--conns` connections and acquires `--keys` keys over them with
//!    pipelined `l` frames (bursts of `--burst`);
//! 2. renews every key `--rounds` times: each round writes one burst of
//!    `n` frames to every connection, then reads every reply (in order),
//!    and records each burst's latency (write to last reply);
//! 3. keeps the keys held for `--idle` seconds (the sweeper's cost);
//! 4. opens `--plain` more connections, one `ping` each, all kept open,
//!    then pings all of them once more and times it.
//!
//! After each phase it prints the server's CPU time (from /proc/PID/stat),
//! descriptors, threads and RSS. Usage:
//! `cargo run --release --example ts_load -- --conns 100 --keys 100000 --plain 10000`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    conns: usize,
    keys: usize,
    burst: usize,
    rounds: usize,
    idle_s: u64,
    plain: usize,
}

fn parse() -> Opts {
    let mut o = Opts {
        conns: 100,
        keys: 100_000,
        burst: 1000,
        rounds: 3,
        idle_s: 5,
        plain: 10_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v: usize = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .expect("a number after each flag");
        match pair[0].as_str() {
            "--conns" => o.conns = v,
            "--keys" => o.keys = v,
            "--burst" => o.burst = v,
            "--rounds" => o.rounds = v,
            "--idle" => o.idle_s = v as u64,
            "--plain" => o.plain = v,
            f => panic!("unknown flag {f}"),
        }
    }
    o
}

/// The server process's CPU seconds, descriptors, threads and RSS (KiB).
struct Probe {
    pid: u32,
    cpu_before: f64,
}

impl Probe {
    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after ')'.
        let ticks: f64 = f
            .get(11..13)
            .map_or(0.0, |t| t.iter().filter_map(|x| x.parse::<f64>().ok()).sum());
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    fn status(&self, field: &str) -> String {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .map(|l| l[field.len()..].trim().to_owned())
            .unwrap_or_default()
    }

    fn report(&mut self, phase: &str, extra: &str) {
        let cpu = self.cpu();
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count());
        println!(
            "{phase:<10} server cpu {:>6.2} s  fds {fds:>6}  threads {:>6}  rss {:>10}  {extra}",
            cpu - self.cpu_before,
            self.status("Threads:"),
            self.status("VmRSS:"),
        );
        self.cpu_before = cpu;
    }
}

fn start_server() -> (Child, String) {
    let bin = std::env::var("DFLOCKD_TESTSERVER_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/dflockd-testserver").into());
    let mut child = Command::new(&bin)
        .args(["--port", "0", "--max-locks", "200000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server address");
    (child, line.trim().to_owned())
}

/// Read exactly `n` reply lines; returns them.
struct Replies {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Replies {
    fn read_lines(&mut self, n: usize, mut each: impl FnMut(&str)) {
        let mut got = 0;
        let mut chunk = [0u8; 65536];
        while got < n {
            while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                each(std::str::from_utf8(&line[..i]).expect("utf-8 reply"));
                got += 1;
                if got == n {
                    return;
                }
            }
            let k = self.stream.read(&mut chunk).expect("read reply");
            assert!(k > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..k]);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn latencies(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "burst latency p50 {:?} p99 {:?} max {:?}",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or_default()
    )
}

fn main() {
    let o = parse();
    let (mut server, addr) = start_server();
    let mut probe = Probe {
        pid: server.id(),
        cpu_before: 0.0,
    };
    probe.cpu_before = probe.cpu();
    println!(
        "server {addr}: {} connections, {} keys, bursts of {}, {} rounds; then {} plain connections",
        o.conns, o.keys, o.burst, o.rounds, o.plain
    );

    // 1. Acquire every key, pipelined.
    let t0 = Instant::now();
    let mut conns: Vec<Replies> = (0..o.conns)
        .map(|_| {
            let s = TcpStream::connect(&addr).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            Replies {
                stream: s,
                buf: Vec::new(),
            }
        })
        .collect();
    let keys_of = |c: usize| (c..o.keys).step_by(o.conns);
    let mut tokens: Vec<String> = vec![String::new(); o.keys];
    for (c, conn) in conns.iter_mut().enumerate() {
        let keys: Vec<usize> = keys_of(c).collect();
        for chunk in keys.chunks(o.burst) {
            let mut out = Vec::with_capacity(chunk.len() * 32);
            for k in chunk {
                write!(out, "l\nscale-{k}\n0 33\n").expect("vec");
            }
            conn.stream.write_all(&out).expect("write");
            let mut it = chunk.iter();
            conn.read_lines(chunk.len(), |line| {
                let k = *it.next().expect("one reply per frame");
                let mut f = line.split(' ');
                assert_eq!(f.next(), Some("ok"), "acquire scale-{k}: {line}");
                tokens[k] = f.next().expect("token").to_owned();
            });
        }
    }
    probe.report(
        "acquire",
        &format!("{:.2} s for {} keys", t0.elapsed().as_secs_f64(), o.keys),
    );

    // 2. Renewal rounds: one burst per connection, all written, then all read.
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut renewed = 0usize;
    for _ in 0..o.rounds {
        let mut cursor: Vec<usize> = vec![0; o.conns];
        loop {
            let mut sent: Vec<(usize, usize, Instant)> = Vec::new();
            for (c, conn) in conns.iter_mut().enumerate() {
                let keys: Vec<usize> = keys_of(c).skip(cursor[c]).take(o.burst).collect();
                if keys.is_empty() {
                    continue;
                }
                let mut out = Vec::with_capacity(keys.len() * 64);
                for &k in &keys {
                    write!(out, "n\nscale-{k}\n{} 33\n", tokens[k]).expect("vec");
                }
                let at = Instant::now();
                conn.stream.write_all(&out).expect("write");
                cursor[c] += keys.len();
                sent.push((c, keys.len(), at));
            }
            if sent.is_empty() {
                break;
            }
            for (c, n, at) in sent {
                conns[c].read_lines(n, |line| assert_eq!(line, "ok 33", "renew"));
                lat.push(at.elapsed());
                renewed += n;
            }
        }
    }
    let el = t0.elapsed().as_secs_f64();
    probe.report(
        "renew",
        &format!(
            "{renewed} renewals in {el:.2} s ({:.0}/s), {}",
            renewed as f64 / el,
            latencies(lat)
        ),
    );

    // 3. Held and idle: what the sweeper costs.
    std::thread::sleep(Duration::from_secs(o.idle_s));
    probe.report("idle", &format!("{} s with {} keys held", o.idle_s, o.keys));

    // 4. Many plain connections.
    let t0 = Instant::now();
    let mut plain: Vec<Replies> = Vec::new();
    let mut failed = None;
    for i in 0..o.plain {
        let s = match TcpStream::connect(&addr) {
            Ok(s) => s,
            Err(e) => {
                failed = Some(format!("connect {i}: {e}"));
                break;
            }
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut r = Replies {
            stream: s,
            buf: Vec::new(),
        };
        if r.stream.write_all(b"ping\n_\n_\n").is_err() {
            failed = Some(format!("ping {i}: write failed"));
            break;
        }
        let mut ok = false;
        let mut chunk = [0u8; 64];
        match r.stream.read(&mut chunk) {
            Ok(k) if k > 0 && chunk[..k].starts_with(b"ok") => ok = true,
            other => failed = Some(format!("ping {i}: {other:?}")),
        }
        if !ok {
            break;
        }
        plain.push(r);
    }
    probe.report(
        "plain",
        &format!(
            "{} connections open in {:.2} s{}",
            plain.len(),
            t0.elapsed().as_secs_f64(),
            failed.map(|f| format!(" (stopped: {f})")).unwrap_or_default()
        ),
    );
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for r in &mut plain {
        let at = Instant::now();
        r.stream.write_all(b"ping\n_\n_\n").expect("write");
        r.read_lines(1, |l| assert_eq!(l, "ok"));
        lat.push(at.elapsed());
    }
    probe.report(
        "ping-all",
        &format!(
            "{} pings in {:.2} s, ping {}",
            plain.len(),
            t0.elapsed().as_secs_f64(),
            latencies(lat).replace("burst latency ", "")
        ),
    );
    drop(plain);
    drop(conns);
    let _ = server.kill();
    let _ = server.wait();
}
