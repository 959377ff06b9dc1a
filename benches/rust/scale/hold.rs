//! Issue 17, point 3: hold N leases from one client on one server for D
//! seconds and measure what it costs, against the public Rust API only.
//! Shared by `benches/rust/scale.rs` (`make bench-scale`) and
//! `tests/scale.rs` (20,000 leases under a descriptor limit of 1,024).
//!
//! What is measured, and how:
//! - lost: leases the client reports lost (`metrics().leases_lost`), leases
//!   not `is_held()` at any once-a-second check, and keys the server no
//!   longer lists as held at the end (its `stats`);
//! - sockets: entries of /proc/self/fd that are sockets (the most seen);
//! - library threads: /proc/self/task names starting with `dflockd` (the
//!   server runs in another process), the most seen;
//! - RSS: /proc/self/status VmRSS, the most seen;
//! - renewal lateness, from the server's side: every sample reads the
//!   server's `stats` on a raw socket of its own (the client caps replies
//!   at 1 MiB) and takes, for every held key, the time since its last
//!   renewal (`lease - lease_expires_in_s`); the worst lateness is the
//!   oldest seen minus the client's renewal interval (min(lease x 0.5,
//!   keepalive 10 s) with default settings). Samples every few seconds over
//!   every key: with the renewals' phases spread, the oldest seen is
//!   within a sample's error of the true worst; a single late renewal
//!   between samples can be missed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dflockd::client::{Client, Config};
use dflockd::events::{EventKind, Events};
use dflockd::lease::Lease;

/// What to hold, where, for how long.
pub struct Plan {
    pub host: String,
    pub port: u16,
    pub leases: usize,
    pub hold: Duration,
    /// Key prefix (unique per run).
    pub prefix: String,
    /// The server's lease (the client asks for the server default).
    pub lease_s: f64,
    /// Time between server-side lateness samples.
    pub sample_every: Duration,
    /// 0: acquire with `acquire_start` (at most 1,000 in flight); else with
    /// blocking `acquire` calls from this many threads. Evented acquires do
    /// not share homes yet (`EVENTED_HOMES` in src/engine/op.rs): each
    /// takes a connection of its own, more than a 1,024-descriptor limit
    /// allows for 20,000 leases; blocking ones try their key on a home.
    pub blocking_threads: usize,
}

/// The numbers.
#[derive(Debug, Default)]
pub struct Report {
    pub acquired: usize,
    pub acquire_s: f64,
    pub first_error: Option<String>,
    pub lost_metric: u64,
    pub not_held_seen: usize,
    pub missing_on_server: usize,
    pub max_sockets: usize,
    pub max_threads: usize,
    pub thread_names: Vec<String>,
    pub max_rss_kib: u64,
    pub renewals: u64,
    pub connections_opened: u64,
    /// Oldest time since a renewal the server showed, seconds.
    pub max_age_s: f64,
    pub renew_interval_s: f64,
    pub samples: usize,
    /// Why a `stats` sample failed (the last failure), if one did.
    pub stats_error: Option<String>,
}

impl Report {
    pub fn lost(&self) -> usize {
        (self.lost_metric as usize)
            .max(self.not_held_seen)
            .max(self.missing_on_server)
    }

    pub fn lateness_s(&self) -> f64 {
        (self.max_age_s - self.renew_interval_s).max(0.0)
    }

    /// One `SCALE key=value ...` line.
    pub fn line(&self) -> String {
        format!(
            "SCALE acquired={} acquire_s={:.2} lost={} lost_metric={} not_held_seen={} missing_on_server={} \
             sockets={} threads={} rss_mib={:.1} renewals={} connections_opened={} max_age_s={:.3} \
             interval_s={:.1} lateness_s={:.3} samples={} stats_error={:?}",
            self.acquired,
            self.acquire_s,
            self.lost(),
            self.lost_metric,
            self.not_held_seen,
            self.missing_on_server,
            self.max_sockets,
            self.max_threads,
            self.max_rss_kib as f64 / 1024.0,
            self.renewals,
            self.connections_opened,
            self.max_age_s,
            self.renew_interval_s,
            self.lateness_s(),
            self.samples,
            self.stats_error.as_deref().unwrap_or(""),
        )
    }
}

/// The client's configuration: defaults, plus the shared-homes cap from
/// `DFLOCKD_MAX_LEASES_PER_CONNECTION` when set.
/// Wait up to `ms` for `q` to have events (its fd readable).
pub fn await_events(q: &Events, ms: i32) {
    let mut p = libc::pollfd {
        fd: q.fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

pub fn config(plan: &Plan) -> Config {
    let mut config = Config::new(vec![(plan.host.clone(), plan.port)]);
    if let Ok(v) = std::env::var("DFLOCKD_MAX_LEASES_PER_CONNECTION") {
        config.max_leases_per_connection = v.parse().expect("DFLOCKD_MAX_LEASES_PER_CONNECTION: a number");
    }
    config
}

pub fn sockets() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
        .count()
}

pub fn library_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .filter(|n| n.starts_with("dflockd"))
        .collect()
}

pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The server's held keys under `prefix` with their seconds left, read
/// with a raw `stats` request (any size).
fn server_leases(plan: &Plan) -> std::io::Result<Vec<(String, f64)>> {
    let mut s = TcpStream::connect((plan.host.as_str(), plan.port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"stats\n_\n_\n")?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1 << 16];
    while !reply.ends_with(b"\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    let locks = text.split("\"locks\":[").nth(1).unwrap_or("");
    let locks = locks.split("],\"").next().unwrap_or("");
    let mut out = Vec::new();
    for entry in locks.split("{\"key\":\"").skip(1) {
        let Some((key, rest)) = entry.split_once('"') else {
            continue;
        };
        if !key.starts_with(&plan.prefix) {
            continue;
        }
        let left = rest
            .split("\"lease_expires_in_s\":")
            .nth(1)
            .and_then(|v| v.split([',', '}']).next())
            .and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(left) = left {
            out.push((key.to_owned(), left));
        }
    }
    Ok(out)
}

/// Acquire `plan.leases` leases (at most 1,000 acquires in flight), hold
/// them for `plan.hold` while sampling, then check them and release.
pub fn run(plan: &Plan) -> Report {
    let mut r = Report {
        renew_interval_s: (plan.lease_s * 0.5)
            .min(Config::new(Vec::new()).effective_keepalive().as_secs_f64()),
        ..Report::default()
    };
    let client = Client::new(config(plan)).expect("client");
    let leases: Vec<Lease> = (0..plan.leases)
        .map(|i| client.lock(&format!("{}{i}", plan.prefix)).expect("lease"))
        .collect();
    let q = Events::new().expect("events");
    let t0 = Instant::now();
    let (mut started, mut done) = (0usize, 0usize);
    if plan.blocking_threads > 0 {
        let chunk = plan.leases.div_ceil(plan.blocking_threads).max(1);
        let outcomes: Vec<(usize, Option<String>)> = std::thread::scope(|s| {
            let workers: Vec<_> = leases
                .chunks(chunk)
                .enumerate()
                .map(|(c, part)| {
                    s.spawn(move || {
                        let mut ok = 0;
                        for (i, l) in part.iter().enumerate() {
                            if let Err(e) = l.acquire(10) {
                                return (ok, Some(format!("acquire #{}: {e}", c * chunk + i)));
                            }
                            ok += 1;
                        }
                        (ok, None)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("acquiring thread"))
                .collect()
        });
        for (ok, e) in outcomes {
            r.acquired += ok;
            if r.first_error.is_none() {
                r.first_error = e;
            }
        }
        done = plan.leases; // (no evented acquires below)
    }
    while done < plan.leases && r.first_error.is_none() {
        while started < plan.leases && started - done < 1000 {
            if let Err(e) = leases[started].acquire_start(10, &q, started as u64) {
                r.first_error = Some(format!("acquire_start #{started}: {e}"));
                break;
            }
            started += 1;
        }
        await_events(&q, 100);
        for e in q.poll(4096) {
            done += 1;
            match e.kind {
                EventKind::Acquired => r.acquired += 1,
                _ if r.first_error.is_none() => {
                    r.first_error = Some(format!("acquire #{}: {:?} {:?}", e.tag, e.kind, e.error));
                }
                _ => {}
            }
        }
        if r.first_error.is_some() {
            break;
        }
    }
    r.acquire_s = t0.elapsed().as_secs_f64();
    let held: Vec<&Lease> = leases.iter().filter(|l| l.is_held()).collect();

    let observe = |r: &mut Report| {
        r.max_sockets = r.max_sockets.max(sockets());
        let t = library_threads();
        if t.len() >= r.max_threads {
            r.max_threads = t.len();
            r.thread_names = t;
        }
        r.max_rss_kib = r.max_rss_kib.max(rss_kib());
    };
    observe(&mut r);
    let end = Instant::now() + plan.hold;
    let mut next_sample = Instant::now() + plan.sample_every;
    while Instant::now() < end {
        let not_held = held.iter().filter(|l| !l.is_held()).count();
        r.not_held_seen = r.not_held_seen.max(not_held);
        observe(&mut r);
        if Instant::now() >= next_sample {
            match server_leases(plan) {
                Ok(keys) => {
                    r.samples += 1;
                    for (_, left) in keys {
                        r.max_age_s = r.max_age_s.max(plan.lease_s - left);
                    }
                }
                Err(e) => r.stats_error = Some(e.to_string()),
            }
            next_sample = Instant::now() + plan.sample_every;
        }
        std::thread::sleep(Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())));
    }
    observe(&mut r);
    match server_leases(plan) {
        Ok(keys) => r.missing_on_server = held.len().saturating_sub(keys.len()),
        Err(e) => r.stats_error = Some(format!("final stats: {e}")),
    }
    r.not_held_seen = r.not_held_seen.max(held.iter().filter(|l| !l.is_held()).count());
    let m = client.metrics();
    r.lost_metric = m.leases_lost;
    r.renewals = m.renewals;
    r.connections_opened = m.connections_opened;
    drop(held);
    drop(leases);
    drop(client);
    r
}
