//! `dflock`: run a command under a dflockd lock, like flock(1) across
//! machines (issue 19). Built on the crate's public Rust API only.
//!
//! - args.rs: the command line and help text
//! - run.rs: acquire, run the child with the lease's token and fence in its
//!   environment, forward signals, react to a lost lease, release
//! - stats.rs: `dflock --stats` as a table or JSON
//!
//! Exit statuses are the `exit` table below (documented in docs/dflock.1
//! and README.md).

mod args;
mod run;
mod stats;

use std::path::Path;

use dflockd::client::{Client, Config};
use dflockd::transport::TlsOptions;
use dflockd::{Error, ErrorKind};

use args::{ConnArgs, Parsed};

/// Exit statuses of dflock itself (the command's own status otherwise).
pub mod exit {
    /// Usage: bad option or value, missing key or command, invalid key.
    pub const USAGE: i32 = 64;
    /// The server refused the request (limit mismatch, too many locks or
    /// waiters, plain `error`).
    pub const REFUSED: i32 = 65;
    /// Cannot reach a server, connection lost, no answer in time,
    /// draining, no leader.
    pub const UNAVAILABLE: i32 = 69;
    /// A bug: something the library promised not to do.
    pub const SOFTWARE: i32 = 70;
    /// The operating system refused something (signalfd, waitpid).
    pub const OSERR: i32 = 71;
    /// The lease was lost while the command ran.
    pub const LOST: i32 = 75;
    /// The server's reply broke the protocol.
    pub const PROTOCOL: i32 = 76;
    /// Authentication refused.
    pub const NOPERM: i32 = 77;
    /// Configuration: no servers, bad server list, unreadable token or CA.
    pub const CONFIG: i32 = 78;
    /// TLS handshake or certificate verification failed.
    pub const TLS: i32 = 79;
    /// The command was found but could not be executed (as a shell does).
    pub const CANNOT_EXEC: i32 = 126;
    /// The command was not found (as a shell does).
    pub const NOT_FOUND: i32 = 127;
}

/// Print one line on stderr and exit with `code`.
pub fn die(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("dflock: {msg}");
    std::process::exit(code)
}

/// The exit status and a lead-in for a library error. Messages from the
/// library never contain a token or secret.
pub fn classify(e: &Error) -> (i32, &'static str) {
    match e.kind() {
        ErrorKind::InvalidArgument => (exit::USAGE, "invalid argument"),
        ErrorKind::Auth => (exit::NOPERM, "authentication refused"),
        ErrorKind::Tls => (exit::TLS, "TLS failure"),
        ErrorKind::Io | ErrorKind::Deadline | ErrorKind::Draining | ErrorKind::NotLeader => {
            (exit::UNAVAILABLE, "server unavailable")
        }
        ErrorKind::Protocol => (exit::PROTOCOL, "protocol error"),
        ErrorKind::MaxLocks
        | ErrorKind::MaxWaiters
        | ErrorKind::LimitMismatch
        | ErrorKind::Server
        | ErrorKind::LeaseExpired => (exit::REFUSED, "refused by the server"),
        ErrorKind::LeaseLost => (exit::LOST, "lease lost"),
        _ => (exit::SOFTWARE, "unexpected error"),
    }
}

/// Exit with the status and one line for a library error.
pub fn fail(e: &Error) -> ! {
    let (code, what) = classify(e);
    die(code, format_args!("{what}: {}", e.message()))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The auth token file's first line (surrounding blanks removed). Errors
/// name the file, never its content.
fn read_token(path: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(format!("--auth-token-file {}: empty", path.display()));
    }
    Ok(token)
}

/// The client from the command line and the environment; exits (with
/// `exit::CONFIG`) on any problem.
pub fn client(c: &ConnArgs) -> Client {
    let servers = c
        .servers
        .clone()
        .or_else(|| env("DFLOCKD_SERVERS"))
        .unwrap_or_else(|| {
            die(
                exit::CONFIG,
                "no servers: set DFLOCKD_SERVERS=host:port[,...] or pass --servers",
            )
        });
    let servers = Config::parse_servers(&servers).unwrap_or_else(|e| die(exit::CONFIG, e.message()));
    let mut cfg = Config::new(servers);
    cfg.auth_token = match &c.auth_token_file {
        Some(p) => Some(read_token(p).unwrap_or_else(|e| die(exit::CONFIG, e))),
        None => env("DFLOCKD_AUTH_TOKEN").map(|t| t.trim().to_owned()),
    };
    let ca = c.tls_ca.clone().or_else(|| env("DFLOCKD_TLS_CA").map(Into::into));
    let name = c
        .tls_server_name
        .clone()
        .or_else(|| env("DFLOCKD_TLS_SERVER_NAME"));
    if c.tls || ca.is_some() {
        cfg.tls = Some(TlsOptions {
            system_roots: ca.is_none(),
            ca_file: ca,
            server_name: name,
            ..TlsOptions::default()
        });
    } else if name.is_some() {
        die(exit::CONFIG, "--tls-server-name without --tls or --tls-ca");
    }
    Client::new(cfg).unwrap_or_else(|e| die(exit::CONFIG, format_args!("configuration: {}", e.message())))
}

fn main() {
    let parsed = args::parse(std::env::args().skip(1).collect()).unwrap_or_else(|msg| {
        eprintln!("dflock: {msg}");
        eprintln!("Try 'dflock --help' for more information.");
        std::process::exit(exit::USAGE)
    });
    match parsed {
        Parsed::Help => println!("{}", args::USAGE),
        Parsed::Version => println!("dflock from libdflockd {}", env!("CARGO_PKG_VERSION")),
        Parsed::Stats { conn, json } => stats::main(&conn, json),
        Parsed::Run(a) => run::main(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists() {
        assert_eq!(
            Config::parse_servers(" a:1, [::1]:6388 ,").unwrap(),
            [("a".to_owned(), 1), ("::1".to_owned(), 6388)]
        );
        for bad in ["", "a", "a:0", ":5", "a:x", "a:70000"] {
            assert!(Config::parse_servers(bad).is_err(), "{bad:?}");
        }
    }
}
