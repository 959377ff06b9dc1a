//! Instructions per acquire+release through the Rust `Lease` API: the
//! client-side half of `make bench-instructions`, twin of
//! `benches/c/abi_pairs.c` (same key, same calls, same loop). Runs a warm-up
//! (connection, pools and library threads set up), then N pairs inside
//! `measured_pairs`, the one function callgrind counts
//! (`--toggle-collect='*measured_pairs'`).
//!
//! Usage: `DFLOCKD_SERVERS=host:port lease_pairs N`

use dflockd::client::{Client, Config};
use dflockd::lease::Lease;

const WARMUP: usize = 100;

/// One `try_acquire` + `release` on an uncontended key.
fn pair(lease: &Lease) {
    assert!(lease.try_acquire().expect("acquire"), "uncontended key was taken");
    lease.release().expect("release");
}

/// The counted loop: not inlined, so callgrind can toggle on it.
#[inline(never)]
fn measured_pairs(lease: &Lease, n: u64) {
    for _ in 0..n {
        pair(lease);
    }
}

fn main() {
    let usage = "usage: DFLOCKD_SERVERS=host:port lease_pairs N";
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).expect(usage);
    let servers = std::env::var("DFLOCKD_SERVERS").expect(usage);
    let (host, port) = servers
        .split(',')
        .next()
        .and_then(|s| s.rsplit_once(':'))
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .expect(usage);
    let client = Client::new(Config::new(vec![(host, port)])).expect("client");
    let lease = client.lock("instr-0").expect("lease");
    for _ in 0..WARMUP {
        pair(&lease);
    }
    measured_pairs(&lease, n);
    println!("lease_pairs: {n} pairs");
}
