//! `make bench-scale` (issue 17, point 3): one client holds 100,000 leases
//! on one server (`dflockd-testserver --max-locks 200000`, default lease
//! 33 s, a separate process so only the client's threads, sockets and
//! memory are counted) for 120 s, and prints the numbers beside the
//! issue's targets. How each is measured: `benches/rust/scale/hold.rs`.
//!
//! Usage: `scale [LEASES [SECONDS]]`. The server: `DFLOCKD_SERVERS=host:port`,
//! else `target/release/dflockd-testserver` (or `DFLOCKD_TESTSERVER_BIN`)
//! started here. `DFLOCKD_MAX_LEASES_PER_CONNECTION=N`: the client's cap of
//! leases per connection. Exit status 1 when a target is missed.

#[path = "scale/hold.rs"]
mod hold;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MAX_SOCKETS: usize = 128;
const MAX_THREADS: usize = 4;
const MAX_RSS_MIB: f64 = 128.0;

fn start_server() -> (Child, String) {
    let bin = std::env::var("DFLOCKD_TESTSERVER_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/dflockd-testserver").into());
    let mut child = Command::new(&bin)
        .args([
            "--port",
            "0",
            "--max-locks",
            "200000",
            "--default-lease-ttl",
            "33",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server address");
    (child, line.trim().to_owned())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let leases: usize = args.next().map_or(100_000, |a| a.parse().expect("LEASES"));
    let seconds: u64 = args.next().map_or(120, |a| a.parse().expect("SECONDS"));
    let (mut server, addr) = match std::env::var("DFLOCKD_SERVERS") {
        Ok(s) => (None, s.split(',').next().unwrap_or_default().to_owned()),
        Err(_) => {
            let (c, a) = start_server();
            (Some(c), a)
        }
    };
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .expect("host:port");
    let plan = hold::Plan {
        host,
        port,
        leases,
        hold: Duration::from_secs(seconds),
        prefix: format!("scale-{}-", std::process::id()),
        lease_s: 33.0,
        sample_every: Duration::from_secs(5),
        blocking_threads: 0,
    };
    println!(
        "bench-scale: {leases} leases from one client on {addr} for {seconds} s (cap per connection: {})",
        std::env::var("DFLOCKD_MAX_LEASES_PER_CONNECTION").unwrap_or_else(|_| "client default".into())
    );
    let r = hold::run(&plan);
    println!("{}", r.line());
    if let Some(e) = &r.first_error {
        println!("  acquire stopped: {e}");
    }
    let ok = |b: bool| if b { "ok" } else { "MISSED" };
    let rss = r.max_rss_kib as f64 / 1024.0;
    let rows = [
        (
            format!("leases held       {:>9} / {leases}", r.acquired),
            "all",
            r.acquired == leases,
        ),
        (format!("leases lost       {:>9}", r.lost()), "0", r.lost() == 0),
        (
            format!("sockets (max)     {:>9}", r.max_sockets),
            "<= 128",
            r.max_sockets <= MAX_SOCKETS,
        ),
        (
            format!("library threads   {:>9}", r.max_threads),
            "<= 4",
            r.max_threads <= MAX_THREADS,
        ),
        (
            format!("RSS (max)         {rss:>7.1} MiB"),
            "<= 128 MiB",
            rss <= MAX_RSS_MIB,
        ),
    ];
    let mut all = true;
    for (what, target, met) in &rows {
        println!("  {what:<34} target {target:<11} {}", ok(*met));
        all &= met;
    }
    println!(
        "  worst renewal lateness {:.3} s (oldest renewal age seen by the server {:.3} s, interval {:.1} s, {} samples; printed, no target)",
        r.lateness_s(),
        r.max_age_s,
        r.renew_interval_s,
        r.samples
    );
    println!(
        "  threads: {:?}; renewals {}, connections opened {}",
        r.thread_names, r.renewals, r.connections_opened
    );
    if let Some(s) = server.as_mut() {
        let _ = s.kill();
        let _ = s.wait();
    }
    if !all {
        std::process::exit(1);
    }
}
