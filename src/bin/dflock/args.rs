//! The command line: a small getopt-like parser (short options may be
//! grouped, `-w5`, `-w 5`, `--wait=5`, `--wait 5`; options end at the KEY,
//! as with util-linux flock(1)'s `+` getopt mode) and the help text.

use std::path::PathBuf;

/// What the child gets on a lost lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLost {
    /// SIGTERM at once, SIGKILL after `--kill-after`.
    Term,
    /// SIGKILL at once.
    Kill,
    /// Nothing (the message and the exit status still report it).
    Ignore,
}

/// Everything the command line says (the environment is read in main.rs).
#[derive(Debug)]
pub struct Args {
    pub key: String,
    /// The program and its arguments (`-c` becomes `sh -c CMD`).
    pub command: Vec<String>,
    /// `None`: wait as long as it takes; `Some(0)`: try once (-n).
    pub wait_s: Option<u64>,
    pub conflict_exit: i32,
    pub limit: Option<u64>,
    pub lease_s: Option<u64>,
    pub on_lost: OnLost,
    pub kill_after_s: f64,
    pub quiet: bool,
    pub verbose: bool,
    pub conn: ConnArgs,
}

/// How to reach the servers (shared by the lock and stats verbs).
#[derive(Debug, Default)]
pub struct ConnArgs {
    pub servers: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
    pub tls_server_name: Option<String>,
}

pub enum Parsed {
    Run(Box<Args>),
    Stats { conn: ConnArgs, json: bool },
    Help,
    Version,
}

pub const USAGE: &str = "\
Usage:
 dflock [options] <key> [--] <command> [<argument>...]
 dflock [options] <key> -c <command>
 dflock --stats [--json] [options]

Run a command while holding a dflockd lock (or semaphore slot) on <key>,
shared by every machine that talks to the same dflockd servers.

Options:
 -n, --nonblock               fail rather than wait if the lock is held
 -w, --wait, --timeout <secs> wait for at most <secs> (default: no limit)
 -E, --conflict-exit-code <n> exit status when not acquired (default 1)
 -c, --command <command>      run <command> with sh -c
 -l, --limit <n>              take one of <n> slots of a semaphore on <key>
     --lease <secs>           lease to ask for (renewed while the command runs)
     --on-lost <action>       on a lost lease: term (default), kill or ignore
     --kill-after <secs>      SIGKILL this long after that SIGTERM (default 10)
 -q, --quiet                  no warnings (errors, lost leases still reported)
 -v, --verbose                report waits, grants, conflicts and releases

Connection (defaults from the environment):
     --servers <list>         host:port,... (DFLOCKD_SERVERS); keys shard
     --auth-token-file <file> auth token from <file> (DFLOCKD_AUTH_TOKEN)
     --tls                    TLS, verified against the system CA bundle
     --tls-ca <file>          TLS, verified against <file> (DFLOCKD_TLS_CA)
     --tls-server-name <name> name to verify (DFLOCKD_TLS_SERVER_NAME)

Operators:
     --stats                  print the servers' stats (also: dflock stats)
     --json                   with --stats: JSON instead of a table

 -h, --help                   display this help
 -V, --version                display version

The command gets DFLOCKD_KEY, DFLOCKD_TOKEN and DFLOCKD_FENCE (a number that
rises with every grant: pass it to your store). Exit status: the command's
(128+N if killed by signal N); 1 (or -E) when not acquired; 75 when the
lease was lost while the command ran; 64-79 for errors. See dflock(1).";

/// Options that take a value: (short, long). No `-s` for --servers:
/// flock(1)'s `-s` is a shared lock, and must not be silently misread.
const WITH_VALUE: [(Option<char>, &str); 13] = [
    (Some('w'), "wait"),
    (None, "timeout"),
    (Some('E'), "conflict-exit-code"),
    (Some('c'), "command"),
    (Some('l'), "limit"),
    (None, "lease"),
    (None, "on-lost"),
    (None, "kill-after"),
    (None, "servers"),
    (None, "auth-token-file"),
    (None, "tls-ca"),
    (None, "tls-server-name"),
    (None, "auth-token"),
];

/// Flags without a value: (short, long).
const FLAGS: [(Option<char>, &str); 9] = [
    (Some('n'), "nonblock"),
    (None, "nb"),
    (Some('q'), "quiet"),
    (Some('v'), "verbose"),
    (None, "tls"),
    (None, "stats"),
    (None, "json"),
    (Some('h'), "help"),
    (Some('V'), "version"),
];

fn long_name(short: char) -> Option<&'static str> {
    WITH_VALUE
        .iter()
        .chain(FLAGS.iter())
        .find(|(s, _)| *s == Some(short))
        .map(|(_, l)| *l)
}

/// Whole seconds from `5`, `2.5` (rounded up: the protocol counts whole
/// seconds).
fn seconds(flag: &str, v: &str) -> Result<u64, String> {
    let bad = || format!("--{flag}: not a number of seconds: {v:?}");
    let f: f64 = v.parse().map_err(|_| bad())?;
    if !f.is_finite() || f < 0.0 {
        return Err(bad());
    }
    Ok(f.ceil() as u64)
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("--{flag}: not a valid number: {v:?}"))
}

/// Options seen, in order: (long name, value).
type Opts = Vec<(&'static str, Option<String>)>;

/// Parse `argv` (without the program name).
pub fn parse(argv: Vec<String>) -> Result<Parsed, String> {
    let (opts, rest) = split(argv)?;
    build(opts, rest)
}

/// The options, and the key with the command after them.
fn split(argv: Vec<String>) -> Result<(Opts, Vec<String>), String> {
    let mut opts: Opts = Vec::new();
    let mut rest = Vec::new();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            rest.extend(it.by_ref());
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (body.to_owned(), None),
            };
            if let Some((_, long)) = WITH_VALUE.iter().find(|(_, l)| *l == name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| format!("option '--{name}' requires an argument"))?,
                };
                opts.push((long, Some(v)));
            } else if let Some((_, long)) = FLAGS.iter().find(|(_, l)| *l == name) {
                if inline.is_some() {
                    return Err(format!("option '--{name}' doesn't allow an argument"));
                }
                opts.push((long, None));
            } else {
                return Err(format!("unrecognized option '--{name}'"));
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let chars: Vec<char> = arg[1..].chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let c = chars[i];
                let long = long_name(c).ok_or_else(|| format!("invalid option -- '{c}'"))?;
                if WITH_VALUE.iter().any(|(_, l)| *l == long) {
                    let tail: String = chars[i + 1..].iter().collect();
                    let v = if !tail.is_empty() {
                        tail
                    } else {
                        it.next()
                            .ok_or_else(|| format!("option requires an argument -- '{c}'"))?
                    };
                    opts.push((long, Some(v)));
                    break;
                }
                opts.push((long, None));
                i += 1;
            }
        } else {
            let after: Vec<String> = it.by_ref().collect();
            // `dflock stats [options]`: the verb, when only options follow.
            if arg == "stats" && !after.iter().any(|a| a == "--") {
                if let Ok((more, tail)) = split(after.clone()) {
                    if tail.is_empty() && !more.iter().any(|(n, _)| *n == "command") {
                        opts.push(("stats", None));
                        opts.extend(more);
                        return Ok((opts, rest));
                    }
                }
            }
            // The KEY: options end here (flock's `+`), except `-c CMD` right after it.
            rest.push(arg);
            match after.first().map(String::as_str) {
                Some("-c" | "--command") => {
                    if after.len() != 2 {
                        return Err("-c takes exactly one argument, the shell command".into());
                    }
                    opts.push(("command", Some(after[1].clone())));
                }
                Some("--") => rest.extend(after.into_iter().skip(1)),
                _ => rest.extend(after),
            }
            break;
        }
    }
    Ok((opts, rest))
}

fn build(opts: Opts, rest: Vec<String>) -> Result<Parsed, String> {
    let mut a = Args {
        key: String::new(),
        command: Vec::new(),
        wait_s: None,
        conflict_exit: 1,
        limit: None,
        lease_s: None,
        on_lost: OnLost::Term,
        kill_after_s: 10.0,
        quiet: false,
        verbose: false,
        conn: ConnArgs::default(),
    };
    let (mut stats, mut json, mut shell) = (false, false, None);
    for (name, value) in opts {
        let v = value.unwrap_or_default();
        match name {
            "help" => return Ok(Parsed::Help),
            "version" => return Ok(Parsed::Version),
            "nonblock" | "nb" => a.wait_s = Some(0),
            "wait" | "timeout" => a.wait_s = Some(seconds(name, &v)?),
            "conflict-exit-code" => {
                a.conflict_exit = number::<u8>(name, &v)
                    .map_err(|_| format!("--{name}: an exit status 0-255, got {v:?}"))?
                    .into()
            }
            "command" => shell = Some(v),
            "limit" => {
                let n: u64 = number(name, &v)?;
                if n == 0 {
                    return Err("--limit: must be at least 1".into());
                }
                a.limit = Some(n);
            }
            "lease" => {
                let s = seconds(name, &v)?;
                if s == 0 {
                    return Err("--lease: must be at least 1 second".into());
                }
                a.lease_s = Some(s);
            }
            "on-lost" => {
                a.on_lost = match v.as_str() {
                    "term" => OnLost::Term,
                    "kill" => OnLost::Kill,
                    "ignore" => OnLost::Ignore,
                    _ => return Err(format!("--on-lost: term, kill or ignore, got {v:?}")),
                }
            }
            "kill-after" => {
                a.kill_after_s = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e9)
                    .ok_or_else(|| format!("--kill-after: not a number of seconds: {v:?}"))?
            }
            "quiet" => a.quiet = true,
            "verbose" => a.verbose = true,
            "servers" => a.conn.servers = Some(v),
            "auth-token-file" => a.conn.auth_token_file = Some(PathBuf::from(v)),
            // Deliberately not echoed: the value is a secret.
            "auth-token" => {
                return Err("--auth-token is not accepted (it would show in ps): \
                            set DFLOCKD_AUTH_TOKEN or use --auth-token-file"
                    .into());
            }
            "tls" => a.conn.tls = true,
            "tls-ca" => a.conn.tls_ca = Some(PathBuf::from(v)),
            "tls-server-name" => a.conn.tls_server_name = Some(v),
            "stats" => stats = true,
            "json" => json = true,
            _ => unreachable!("option table and match disagree on --{name}"),
        }
    }
    if stats {
        if !rest.is_empty() || shell.is_some() {
            return Err("--stats takes no key or command".into());
        }
        return Ok(Parsed::Stats { conn: a.conn, json });
    }
    if json {
        return Err("--json goes with --stats".into());
    }
    let mut rest = rest.into_iter();
    a.key = rest.next().ok_or("no key given")?;
    a.command = rest.collect();
    match shell {
        Some(cmd) if a.command.is_empty() => a.command = vec!["/bin/sh".into(), "-c".into(), cmd],
        Some(_) => return Err("-c and a command: give one or the other".into()),
        None if a.command.is_empty() => {
            return Err(format!("no command given to run under the lock {:?}", a.key));
        }
        None => {}
    }
    Ok(Parsed::Run(Box::new(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse(args.iter().map(|s| s.to_string()).collect())? {
            Parsed::Run(a) => Ok(*a),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn flock_habits() {
        let a = run(&["-n", "-E", "0", "nightly", "--", "/bin/true", "-x"]).unwrap();
        assert_eq!(
            (a.key.as_str(), a.wait_s, a.conflict_exit),
            ("nightly", Some(0), 0)
        );
        assert_eq!(a.command, ["/bin/true", "-x"]);
        let a = run(&["-qw5", "k", "ls", "-l", "--", "x"]).unwrap();
        assert_eq!((a.wait_s, a.quiet), (Some(5), true));
        assert_eq!(a.command, ["ls", "-l", "--", "x"]);
        let a = run(&["--wait=0.5", "k", "-c", "echo hi"]).unwrap();
        assert_eq!(a.wait_s, Some(1));
        assert_eq!(a.command, ["/bin/sh", "-c", "echo hi"]);
        let a = run(&["-c", "echo hi", "--limit", "2", "k"]).unwrap();
        assert_eq!((a.limit, a.command.len()), (Some(2), 3));
        assert!(matches!(
            parse(vec!["stats".into()]),
            Ok(Parsed::Stats { json: false, .. })
        ));
        assert!(matches!(
            parse(vec!["--stats".into(), "--json".into()]),
            Ok(Parsed::Stats { json: true, .. })
        ));
        assert!(matches!(
            parse(["stats", "--json", "--servers", "h:1"].map(String::from).to_vec()),
            Ok(Parsed::Stats {
                json: true,
                conn: ConnArgs { servers: Some(_), .. }
            })
        ));
        assert_eq!(run(&["stats", "true"]).unwrap().key, "stats");
        assert_eq!(run(&["stats", "-c", "true"]).unwrap().key, "stats");
        assert_eq!(run(&["stats", "--", "-x"]).unwrap().command, ["-x"]);
    }

    #[test]
    fn refusals_never_echo_a_secret() {
        let e = run(&["--auth-token", "s3cret", "k", "true"]).unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("DFLOCKD_AUTH_TOKEN"), "{e}");
        let e = run(&["--auth-token=s3cret", "k", "true"]).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(
            run(&["-s", "k", "true"]).is_err(),
            "flock's -s (shared) must not be taken"
        );
        for bad in [
            &["k"][..],
            &["-x", "k", "true"],
            &["-E", "300", "k", "true"],
            &["--on-lost=x", "k", "true"],
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
    }
}
