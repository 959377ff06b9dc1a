//! `dflockd-testserver`: the embeddable test server as a program, for C,
//! C++, Go and Ruby tests and the README's demo. Takes the real dflockd's
//! flag names (and `DFLOCKD_*` variables are NOT read: flags only), prints
//! `127.0.0.1:PORT` on one line, and serves until SIGTERM/SIGINT (then
//! drains like the 2.x server and exits 0) or, with `--exit-on-stdin-eof`,
//! until its stdin closes (so it dies with the test that started it).
//! With `--cluster N` it runs an embedded cluster of N nodes instead
//! (`TestCluster`: one leader, follower hints, stable-ref, barrier) and
//! prints each node's address on its own line once a leader is elected.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dflockd::testserver::{ClusterOptions, ServerOptions, TestCluster, TestServer, TlsIdentity};

const USAGE: &str = "usage: dflockd-testserver [--host H] [--port P] [--default-lease-ttl S]
  [--read-timeout S] [--lease-sweep-interval S] [--gc-interval S] [--gc-max-idle S]
  [--auth-token T | --auth-token-file F] [--tls-cert F --tls-key F]
  [--max-locks N] [--max-waiters N] [--max-connections N]
  [--auto-release-on-disconnect=true|false] [--shutdown-timeout S]
  [--follower [LEADER_HOST:PORT]] [--server-line 2.x|1.10] [--exit-on-stdin-eof]
  [--cluster N [--orphan-ttl S]] [--help] [--version]
Prints the bound address (127.0.0.1:PORT) on one stdout line; with --cluster N,
N nodes on ports PORT..PORT+N-1 (free ones without --port), one address a line.";

/// What the command line asks for.
enum Parsed {
    Run(Box<Args>),
    Help,
    Version,
}

struct Args {
    opts: ServerOptions,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    auth_token_file: Option<PathBuf>,
    shutdown_timeout: Duration,
    exit_on_stdin_eof: bool,
    cluster: Option<usize>,
    orphan_ttl: Option<Duration>,
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: not a valid number: {v:?}"))
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    number::<u64>(flag, v).map(Duration::from_secs)
}

/// Parse Go-style flags: `--flag value`, `--flag=value`, one or two dashes.
fn parse(argv: Vec<String>) -> Result<Parsed, String> {
    let mut a = Args {
        opts: ServerOptions::default(),
        tls_cert: None,
        tls_key: None,
        auth_token_file: None,
        shutdown_timeout: Duration::from_secs(2),
        exit_on_stdin_eof: false,
        cluster: None,
        orphan_ttl: None,
    };
    let mut it = argv.into_iter().peekable();
    while let Some(arg) = it.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (flag, inline) = match body.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (body.to_owned(), None),
        };
        match flag.as_str() {
            "h" | "help" => return Ok(Parsed::Help),
            "version" => return Ok(Parsed::Version),
            "exit-on-stdin-eof" => {
                a.exit_on_stdin_eof = true;
                continue;
            }
            "auto-release-on-disconnect" => {
                a.opts.auto_release_on_disconnect = match inline.as_deref() {
                    None | Some("true" | "1") => true,
                    Some("false" | "0") => false,
                    Some(v) => return Err(format!("--{flag}: expected true or false, got {v:?}")),
                };
                continue;
            }
            "follower" => {
                let leader = inline.or_else(|| it.next_if(|v| !v.starts_with('-')));
                a.opts.follower = Some(leader);
                continue;
            }
            _ => {}
        }
        const VALUE_FLAGS: [&str; 18] = [
            "cluster",
            "orphan-ttl",
            "host",
            "port",
            "default-lease-ttl",
            "read-timeout",
            "lease-sweep-interval",
            "gc-interval",
            "gc-max-idle",
            "auth-token",
            "auth-token-file",
            "tls-cert",
            "tls-key",
            "max-locks",
            "max-waiters",
            "max-connections",
            "shutdown-timeout",
            "server-line",
        ];
        if !VALUE_FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown flag --{flag}"));
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("--{flag} needs a value"))?,
        };
        let o = &mut a.opts;
        match flag.as_str() {
            "host" => o.host = value,
            "port" => o.port = number(&flag, &value)?,
            "default-lease-ttl" => o.default_lease_ttl_s = number(&flag, &value)?,
            "read-timeout" => o.read_timeout = seconds(&flag, &value)?,
            "lease-sweep-interval" => o.lease_sweep_interval = seconds(&flag, &value)?,
            "gc-interval" => o.gc_interval = seconds(&flag, &value)?,
            "gc-max-idle" => o.gc_max_idle = seconds(&flag, &value)?,
            "auth-token" => o.auth_token = Some(value),
            "auth-token-file" => a.auth_token_file = Some(value.into()),
            "tls-cert" => a.tls_cert = Some(value.into()),
            "tls-key" => a.tls_key = Some(value.into()),
            "max-locks" => o.max_locks = number(&flag, &value)?,
            "max-waiters" => o.max_waiters = number(&flag, &value)?,
            "max-connections" => o.max_connections = number(&flag, &value)?,
            "shutdown-timeout" => a.shutdown_timeout = seconds(&flag, &value)?,
            "server-line" => o.line = value.parse()?,
            "cluster" => a.cluster = Some(number(&flag, &value)?),
            "orphan-ttl" => a.orphan_ttl = Some(seconds(&flag, &value)?),
            _ => return Err(format!("unknown flag --{flag}")),
        }
    }
    if let Some(path) = &a.auth_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        if token.is_empty() {
            return Err(format!("--auth-token-file {}: empty", path.display()));
        }
        a.opts.auth_token = Some(token);
    }
    match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => a.opts.tls = Some(TlsIdentity::from_files(c, k).map_err(|e| e.to_string())?),
        (None, None) => {}
        _ => return Err("both --tls-cert and --tls-key must be provided together".into()),
    }
    Ok(Parsed::Run(Box::new(a)))
}

/// Block SIGTERM and SIGINT in every thread (call before any spawn), so
/// that `sigwait` in main receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a local, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(Parsed::Run(a)) => *a,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(Parsed::Version) => {
            println!("dflockd-testserver {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(msg) => {
            eprintln!("dflockd-testserver: {msg}");
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let signals = block_signals();
    if let Some(nodes) = args.cluster {
        run_cluster(nodes, &args, &signals);
        return;
    }
    let server = match TestServer::start(args.opts.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dflockd-testserver: cannot start: {e}");
            std::process::exit(1);
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", server.addr());
        let _ = out.flush();
    }
    wait_for_the_end(&args, &signals);
    server.drain();
    let deadline = Instant::now() + args.shutdown_timeout;
    while server.connection_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.stop();
}

/// Block until SIGTERM/SIGINT (or stdin EOF with `--exit-on-stdin-eof`).
fn wait_for_the_end(args: &Args, signals: &libc::sigset_t) {
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            // SAFETY: signalling our own process; main's sigwait gets it.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        });
    }
    let mut sig: libc::c_int = 0;
    // SAFETY: waits for one of the blocked signals in `signals`.
    unsafe { libc::sigwait(signals, &mut sig) };
}

/// `--cluster N`: serve an embedded cluster until the end, then stop it.
fn run_cluster(nodes: usize, args: &Args, signals: &libc::sigset_t) {
    let first = args.opts.port;
    let ports = if first == 0 {
        Vec::new()
    } else {
        (0..nodes).map(|i| first.saturating_add(i as u16)).collect()
    };
    let opts = ClusterOptions {
        nodes,
        server: args.opts.clone(),
        ports,
        orphan_ttl: args.orphan_ttl,
        shutdown_timeout: args.shutdown_timeout,
        ..ClusterOptions::default()
    };
    let cluster = match TestCluster::start(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dflockd-testserver: cannot start the cluster: {e}");
            std::process::exit(1);
        }
    };
    if cluster.await_leader(Duration::from_secs(10)).is_none() {
        eprintln!("dflockd-testserver: no leader elected");
        std::process::exit(1);
    }
    {
        let mut out = std::io::stdout().lock();
        for a in cluster.addrs() {
            let _ = writeln!(out, "{a}");
        }
        let _ = out.flush();
    }
    wait_for_the_end(args, signals);
    cluster.stop();
}
