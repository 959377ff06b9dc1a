//! `dflock --stats`: every configured server's `stats`, as a table for
//! people or JSON (`--json`) for scripts.

use dflockd::protocol::Stats;

use crate::args::ConnArgs;
use crate::classify;

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The table for one server.
pub fn table(server: &str, s: &Stats) -> String {
    let mut out = format!("server {server}: {} connection(s)\n", s.connections);
    let width =
        |keys: &mut dyn Iterator<Item = &String>| keys.map(|k| k.chars().count()).max().unwrap_or(0).max(3);
    if s.locks.is_empty() && s.semaphores.is_empty() {
        out.push_str("  nothing held\n");
    }
    if !s.locks.is_empty() {
        let w = width(&mut s.locks.iter().map(|l| &l.key));
        out.push_str(&format!(
            "  {:<w$}  {:>10}  {:>9}  {:>7}\n",
            "LOCK", "OWNER CONN", "EXPIRES", "WAITERS"
        ));
        for l in &s.locks {
            out.push_str(&format!(
                "  {:<w$}  {:>10}  {:>8.1}s  {:>7}\n",
                l.key, l.owner_conn_id, l.lease_expires_in_s, l.waiters
            ));
        }
    }
    if !s.semaphores.is_empty() {
        let w = width(&mut s.semaphores.iter().map(|l| &l.key));
        out.push_str(&format!(
            "  {:<w$}  {:>7}  {:>5}  {:>7}\n",
            "SEMAPHORE", "HOLDERS", "LIMIT", "WAITERS"
        ));
        for e in &s.semaphores {
            out.push_str(&format!(
                "  {:<w$}  {:>7}  {:>5}  {:>7}\n",
                e.key, e.holders, e.limit, e.waiters
            ));
        }
    }
    for (label, idle) in [
        ("idle locks", &s.idle_locks),
        ("idle semaphores", &s.idle_semaphores),
    ] {
        if !idle.is_empty() {
            let keys: Vec<String> = idle
                .iter()
                .map(|e| format!("{} ({:.0}s)", e.key, e.idle_s))
                .collect();
            out.push_str(&format!("  {label}: {}\n", keys.join(", ")));
        }
    }
    out
}

/// Every server's stats; a server that fails is reported on stderr (the
/// others are still printed) and the first failure sets the exit status.
pub fn main(conn: &ConnArgs, json: bool) -> ! {
    let client = crate::client(conn);
    let servers = client.config().servers.clone();
    let mut parts = Vec::new();
    let mut status = 0;
    for (i, (host, port)) in servers.iter().enumerate() {
        let name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        match client.stats(i) {
            Ok(s) => parts.push((name, s)),
            Err(e) => {
                let (code, what) = classify(&e);
                eprintln!("dflock: stats of {name}: {what}: {}", e.message());
                if status == 0 {
                    status = code;
                }
            }
        }
    }
    if json {
        // One object keyed by server, each value the server's own JSON.
        let items: Vec<String> = parts
            .iter()
            .map(|(n, s)| format!("{}:{}", quote(n), s.json.trim()))
            .collect();
        println!("{{{}}}", items.join(","));
    } else {
        let tables: Vec<String> = parts.iter().map(|(n, s)| table(n, s)).collect();
        print!("{}", tables.join("\n"));
    }
    std::process::exit(status)
}
