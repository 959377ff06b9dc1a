//! Requests: encoded (and checked) by the client, parsed by the test server.

use super::{Command, InvalidRequest, Kind, MAX_AUTH_LINE_BYTES, MAX_LINE_BYTES, MAX_SECONDS, Op};

/// One request frame. Lease requests carry their [`Kind`]; `limit` is set
/// exactly when `kind` is [`Kind::Semaphore`] on acquire and enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `auth <secret>`: must be the first request when the server has an auth token.
    Auth {
        /// The shared secret.
        secret: &'a str,
    },
    /// `ping` (2.x): keeps the connection alive.
    Ping,
    /// `stats`: the server's state as JSON.
    Stats,
    /// `stable-ref` / `<ref>` / `_`: the connection's session identity.
    StableRef {
        /// 1-64 printable ASCII characters.
        reference: &'a str,
    },
    /// `barrier` / `_` / `_`.
    Barrier,
    /// `l`/`sl`: acquire, waiting up to `timeout_s` in the key's FIFO queue.
    Acquire {
        /// Lock or semaphore.
        kind: Kind,
        /// The key.
        key: &'a str,
        /// Seconds to wait for the grant (0: try once).
        timeout_s: u64,
        /// The semaphore's limit (semaphores only).
        limit: Option<u64>,
        /// The lease to ask for, in seconds (`None`: the server's default).
        lease_s: Option<u64>,
    },
    /// `r`/`sr`: release the lease `token` names.
    Release {
        /// Lock or semaphore.
        kind: Kind,
        /// The key.
        key: &'a str,
        /// The lease's token.
        token: &'a str,
    },
    /// `n`/`sn`: renew the lease `token` names.
    Renew {
        /// Lock or semaphore.
        kind: Kind,
        /// The key.
        key: &'a str,
        /// The lease's token.
        token: &'a str,
        /// The new lease, in seconds (`None`: the server's default).
        lease_s: Option<u64>,
    },
    /// `e`/`se`: join the key's queue without blocking (two-phase, phase 1).
    Enqueue {
        /// Lock or semaphore.
        kind: Kind,
        /// The key.
        key: &'a str,
        /// The semaphore's limit (semaphores only).
        limit: Option<u64>,
        /// The lease to ask for, in seconds (`None`: the server's default).
        lease_s: Option<u64>,
    },
    /// `w`/`sw`: wait up to `timeout_s` for the grant of an earlier enqueue (phase 2).
    Wait {
        /// Lock or semaphore.
        kind: Kind,
        /// The key.
        key: &'a str,
        /// Seconds to wait for the grant.
        timeout_s: u64,
    },
}

/// Longest `stable-ref` (cluster servers: 1 to 64 printable ASCII characters).
const MAX_STABLE_REF_BYTES: usize = 64;

/// Largest semaphore limit: the Go server parses it as an `int`.
const MAX_LIMIT: u64 = i64::MAX as u64;

/// Check a key as the server will: non-empty, at most 256 bytes, no space,
/// tab, CR or LF. (The caller's `&str` is UTF-8 already.)
pub fn validate_key(key: &str) -> Result<(), InvalidRequest> {
    if key.is_empty() {
        return Err(InvalidRequest("key must not be empty".into()));
    }
    if key.len() > MAX_LINE_BYTES {
        return Err(InvalidRequest(format!(
            "key is {} bytes, longer than the protocol's {MAX_LINE_BYTES}",
            key.len()
        )));
    }
    if key.contains([' ', '\t', '\r', '\n']) {
        return Err(InvalidRequest("key must not contain space, tab, CR or LF".into()));
    }
    Ok(())
}

/// Check a `stable-ref` as cluster servers do: 1 to 64 printable ASCII
/// characters (`!` to `~`: the ref travels on the key line, which takes
/// no space).
pub fn validate_stable_ref(reference: &str) -> Result<(), InvalidRequest> {
    if reference.is_empty()
        || reference.len() > MAX_STABLE_REF_BYTES
        || !reference.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(InvalidRequest(format!(
            "stable ref must be 1 to {MAX_STABLE_REF_BYTES} printable ASCII characters"
        )));
    }
    Ok(())
}

fn validate_token(token: &str) -> Result<(), InvalidRequest> {
    // Lenient on purpose (not "32 hex"): the low-level API lets a caller
    // send any token and see the server's answer.
    if token.is_empty() || token.len() > MAX_LINE_BYTES || token.contains([' ', '\t', '\r', '\n']) {
        return Err(InvalidRequest(
            "token must be non-empty, at most 256 bytes, without whitespace".into(),
        ));
    }
    Ok(())
}

fn validate_seconds(name: &str, v: u64, min: u64) -> Result<(), InvalidRequest> {
    if v < min || v > MAX_SECONDS {
        return Err(InvalidRequest(format!(
            "{name} must be between {min} and {MAX_SECONDS} seconds, got {v}"
        )));
    }
    Ok(())
}

fn validate_lease(lease_s: Option<u64>) -> Result<(), InvalidRequest> {
    lease_s.map_or(Ok(()), |l| validate_seconds("lease", l, 1))
}

fn validate_limit(kind: Kind, limit: Option<u64>) -> Result<(), InvalidRequest> {
    match (kind, limit) {
        (Kind::Lock, None) => Ok(()),
        (Kind::Lock, Some(_)) => Err(InvalidRequest("a lock takes no limit".into())),
        (Kind::Semaphore, None) => Err(InvalidRequest("a semaphore needs a limit".into())),
        (Kind::Semaphore, Some(l)) if l == 0 || l > MAX_LIMIT => Err(InvalidRequest(format!(
            "semaphore limit must be between 1 and {MAX_LIMIT}, got {l}"
        ))),
        (Kind::Semaphore, Some(_)) => Ok(()),
    }
}

/// Append the present numbers to `out`, separated by single spaces (the
/// argument line), without an intermediate string.
fn put_numbers(out: &mut Vec<u8>, nums: &[Option<u64>]) {
    for (i, n) in nums.iter().flatten().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        put_number(out, *n);
    }
}

/// `n` in decimal, appended to `out`.
fn put_number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl<'a> Request<'a> {
    /// The wire command this request is.
    pub fn command(&self) -> Command {
        match self {
            Request::Auth { .. } => Command::Auth,
            Request::Ping => Command::Ping,
            Request::Stats => Command::Stats,
            Request::StableRef { .. } => Command::StableRef,
            Request::Barrier => Command::Barrier,
            Request::Acquire { kind, .. } => Command::Lease(*kind, Op::Acquire),
            Request::Release { kind, .. } => Command::Lease(*kind, Op::Release),
            Request::Renew { kind, .. } => Command::Lease(*kind, Op::Renew),
            Request::Enqueue { kind, .. } => Command::Lease(*kind, Op::Enqueue),
            Request::Wait { kind, .. } => Command::Lease(*kind, Op::Wait),
        }
    }

    /// Whether the server may hold the reply back: an acquire or wait with
    /// a timeout (with 0 it answers at once). Such a request must be alone
    /// on its connection (see `Session::admit`).
    pub fn may_block(&self) -> bool {
        matches!(
            self,
            Request::Acquire { timeout_s, .. } | Request::Wait { timeout_s, .. } if *timeout_s > 0
        )
    }

    /// The key of a lease request.
    pub fn key(&self) -> Option<&'a str> {
        match *self {
            Request::Acquire { key, .. }
            | Request::Release { key, .. }
            | Request::Renew { key, .. }
            | Request::Enqueue { key, .. }
            | Request::Wait { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Check every value against the protocol and append the three-line
    /// frame to `out`. Nothing is appended when the request is invalid, so a
    /// bad request never reaches the wire.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), InvalidRequest> {
        self.validate()?;
        let start = out.len();
        let key = match *self {
            Request::StableRef { reference } => reference,
            _ => self.key().unwrap_or("_"),
        };
        for line in [self.command().wire_name(), key] {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        let arg = out.len();
        match *self {
            Request::Auth { secret } => out.extend_from_slice(secret.as_bytes()),
            Request::Ping | Request::Stats | Request::StableRef { .. } | Request::Barrier => out.push(b'_'),
            Request::Acquire {
                timeout_s,
                limit,
                lease_s,
                ..
            } => put_numbers(out, &[Some(timeout_s), limit, lease_s]),
            Request::Release { token, .. } => out.extend_from_slice(token.as_bytes()),
            Request::Renew { token, lease_s, .. } => {
                out.extend_from_slice(token.as_bytes());
                if let Some(l) = lease_s {
                    out.push(b' ');
                    put_number(out, l);
                }
            }
            Request::Enqueue { limit, lease_s, .. } => put_numbers(out, &[limit, lease_s]),
            Request::Wait { timeout_s, .. } => put_number(out, timeout_s),
        }
        if !matches!(self, Request::Auth { .. }) && out.len() - arg > MAX_LINE_BYTES {
            out.truncate(start);
            return Err(InvalidRequest("argument line longer than 256 bytes".into()));
        }
        out.push(b'\n');
        Ok(())
    }

    /// Every check [`Request::encode`] makes before writing a byte.
    fn validate(&self) -> Result<(), InvalidRequest> {
        if let Some(key) = self.key() {
            validate_key(key)?;
        }
        match *self {
            Request::Auth { secret } => {
                if secret.contains(['\r', '\n']) {
                    return Err(InvalidRequest("auth token must not contain CR or LF".into()));
                }
                if secret.len() > MAX_AUTH_LINE_BYTES {
                    return Err(InvalidRequest(format!(
                        "auth token is longer than {MAX_AUTH_LINE_BYTES} bytes"
                    )));
                }
            }
            Request::Ping | Request::Stats | Request::Barrier => {}
            Request::StableRef { reference } => validate_stable_ref(reference)?,
            Request::Acquire {
                kind,
                timeout_s,
                limit,
                lease_s,
                ..
            } => {
                validate_seconds("timeout", timeout_s, 0)?;
                validate_limit(kind, limit)?;
                validate_lease(lease_s)?;
            }
            Request::Release { token, .. } => validate_token(token)?,
            Request::Renew { token, lease_s, .. } => {
                validate_token(token)?;
                validate_lease(lease_s)?;
            }
            Request::Enqueue {
                kind, limit, lease_s, ..
            } => {
                validate_limit(kind, limit)?;
                validate_lease(lease_s)?;
            }
            Request::Wait { timeout_s, .. } => validate_seconds("timeout", timeout_s, 0)?,
        }
        Ok(())
    }

    /// Parse a frame's three lines as the server does. `Err(())` is the
    /// protocol's bare `error` reply (the connection stays open).
    ///
    /// Mirrors the Go server: arguments split on any whitespace, integers
    /// decimal (a leading `+` allowed, as `strconv.Atoi` does), key and arg
    /// of `ping`/`stats` ignored, the `auth` argument trimmed.
    #[allow(clippy::result_unit_err)]
    pub fn parse(cmd: &str, key: &'a str, arg: &'a str) -> Result<Request<'a>, ()> {
        let command = Command::from_wire(cmd).ok_or(())?;
        let fields: Vec<&'a str> = arg.split_whitespace().collect();
        let (kind, op) = match command {
            Command::Auth => return Ok(Request::Auth { secret: arg.trim() }),
            Command::Ping => return Ok(Request::Ping),
            Command::Stats => return Ok(Request::Stats),
            Command::Barrier => return Ok(Request::Barrier),
            Command::StableRef => {
                validate_stable_ref(key).map_err(|_| ())?;
                return Ok(Request::StableRef { reference: key });
            }
            Command::Lease(kind, op) => (kind, op),
        };
        validate_key(key).map_err(|_| ())?;
        let sem = kind == Kind::Semaphore;
        match (op, fields.as_slice()) {
            (Op::Acquire, f) if f.len() == 1 + sem as usize || f.len() == 2 + sem as usize => {
                let limit = if sem { Some(parse_limit(f[1])?) } else { None };
                let lease_s = f.get(1 + sem as usize).map(|l| parse_seconds(l, 1)).transpose()?;
                Ok(Request::Acquire {
                    kind,
                    key,
                    timeout_s: parse_seconds(f[0], 0)?,
                    limit,
                    lease_s,
                })
            }
            (Op::Release, [token]) => Ok(Request::Release { kind, key, token }),
            (Op::Renew, [token]) => Ok(Request::Renew {
                kind,
                key,
                token,
                lease_s: None,
            }),
            (Op::Renew, [token, lease]) => Ok(Request::Renew {
                kind,
                key,
                token,
                lease_s: Some(parse_seconds(lease, 1)?),
            }),
            (Op::Enqueue, f) if f.len() == sem as usize || f.len() == 1 + sem as usize => {
                let limit = if sem { Some(parse_limit(f[0])?) } else { None };
                let lease_s = f.get(sem as usize).map(|l| parse_seconds(l, 1)).transpose()?;
                Ok(Request::Enqueue {
                    kind,
                    key,
                    limit,
                    lease_s,
                })
            }
            (Op::Wait, [t]) => Ok(Request::Wait {
                kind,
                key,
                timeout_s: parse_seconds(t, 0)?,
            }),
            _ => Err(()),
        }
    }
}

fn parse_int(s: &str) -> Result<u64, ()> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    digits.parse::<u64>().map_err(|_| ())
}

fn parse_seconds(s: &str, min: u64) -> Result<u64, ()> {
    parse_int(s).and_then(|v| {
        if (min..=MAX_SECONDS).contains(&v) {
            Ok(v)
        } else {
            Err(())
        }
    })
}

fn parse_limit(s: &str) -> Result<u64, ()> {
    parse_int(s).and_then(|v| {
        if (1..=MAX_LIMIT).contains(&v) {
            Ok(v)
        } else {
            Err(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::*;

    fn enc(r: Request) -> Result<String, InvalidRequest> {
        let mut out = Vec::new();
        r.encode(&mut out).map(|_| String::from_utf8(out).unwrap())
    }

    #[test]
    fn encodes_exact_transcript_bytes() {
        let a = |kind, timeout_s, limit, lease_s| Request::Acquire {
            kind,
            key: "k1",
            timeout_s,
            limit,
            lease_s,
        };
        assert_eq!(enc(a(Lock, 5, None, None)).unwrap(), "l\nk1\n5\n");
        assert_eq!(enc(a(Lock, 5, None, Some(10))).unwrap(), "l\nk1\n5 10\n");
        assert_eq!(enc(a(Semaphore, 5, Some(2), None)).unwrap(), "sl\nk1\n5 2\n");
        assert_eq!(
            enc(a(Semaphore, 5, Some(1), Some(20))).unwrap(),
            "sl\nk1\n5 1 20\n"
        );
        let t = "18eb813dca7f84f620b2dfa1412116b8";
        assert_eq!(
            enc(Request::Release {
                kind: Lock,
                key: "k1",
                token: t
            })
            .unwrap(),
            format!("r\nk1\n{t}\n")
        );
        assert_eq!(
            enc(Request::Renew {
                kind: Semaphore,
                key: "s",
                token: t,
                lease_s: Some(7)
            })
            .unwrap(),
            format!("sn\ns\n{t} 7\n")
        );
        assert_eq!(
            enc(Request::Enqueue {
                kind: Lock,
                key: "k3",
                limit: None,
                lease_s: None
            })
            .unwrap(),
            "e\nk3\n\n"
        );
        assert_eq!(
            enc(Request::Enqueue {
                kind: Semaphore,
                key: "s2",
                limit: Some(1),
                lease_s: Some(15)
            })
            .unwrap(),
            "se\ns2\n1 15\n"
        );
        assert_eq!(
            enc(Request::Wait {
                kind: Semaphore,
                key: "s2",
                timeout_s: 5
            })
            .unwrap(),
            "sw\ns2\n5\n"
        );
        assert_eq!(enc(Request::Ping).unwrap(), "ping\n_\n_\n");
        assert_eq!(enc(Request::Stats).unwrap(), "stats\n_\n_\n");
        assert_eq!(enc(Request::Barrier).unwrap(), "barrier\n_\n_\n");
        assert_eq!(
            enc(Request::StableRef { reference: "refF" }).unwrap(),
            "stable-ref\nrefF\n_\n"
        );
        assert_eq!(
            enc(Request::Auth { secret: "s3cret" }).unwrap(),
            "auth\n_\ns3cret\n"
        );
    }

    #[test]
    fn refuses_what_the_server_would_reject() {
        fn key(key: &str) -> Request<'_> {
            Request::Acquire {
                kind: Lock,
                key,
                timeout_s: 0,
                limit: None,
                lease_s: None,
            }
        }
        assert!(enc(key("")).is_err());
        assert!(enc(key("a b")).is_err());
        assert!(enc(key("a\tb")).is_err());
        assert!(enc(key("a\nb")).is_err());
        assert!(enc(key("a\rb")).is_err());
        assert!(enc(key(&"x".repeat(256))).is_ok());
        assert!(enc(key(&"x".repeat(257))).is_err());
        assert!(enc(key("kéy")).is_ok());
        let acq = |timeout_s, limit, lease_s, kind| Request::Acquire {
            kind,
            key: "k",
            timeout_s,
            limit,
            lease_s,
        };
        assert!(enc(acq(MAX_SECONDS, None, Some(MAX_SECONDS), Lock)).is_ok());
        assert!(enc(acq(MAX_SECONDS + 1, None, None, Lock)).is_err());
        assert!(enc(acq(0, None, Some(0), Lock)).is_err());
        assert!(enc(acq(0, Some(1), None, Lock)).is_err());
        assert!(enc(acq(0, None, None, Semaphore)).is_err());
        assert!(enc(acq(0, Some(0), None, Semaphore)).is_err());
        assert!(
            enc(Request::Release {
                kind: Lock,
                key: "k",
                token: ""
            })
            .is_err()
        );
        assert!(
            enc(Request::Release {
                kind: Lock,
                key: "k",
                token: "a b"
            })
            .is_err()
        );
        assert!(enc(Request::Auth { secret: "a\nb" }).is_err());
        assert!(
            enc(Request::Auth {
                secret: &"T".repeat(MAX_AUTH_LINE_BYTES)
            })
            .is_ok()
        );
        assert!(
            enc(Request::Auth {
                secret: &"T".repeat(MAX_AUTH_LINE_BYTES + 1)
            })
            .is_err()
        );
        let mut out = b"keep".to_vec();
        assert!(
            Request::Wait {
                kind: Lock,
                key: "",
                timeout_s: 1
            }
            .encode(&mut out)
            .is_err()
        );
        assert_eq!(out, b"keep", "nothing appended on error");
    }

    #[test]
    fn parses_like_the_go_server() {
        // Accepted, per docs/transcripts.
        assert_eq!(
            Request::parse("l", "k", " 5 "),
            Ok(Request::Acquire {
                kind: Lock,
                key: "k",
                timeout_s: 5,
                limit: None,
                lease_s: None
            })
        );
        assert_eq!(
            Request::parse("l", "k", "5\t7"),
            Ok(Request::Acquire {
                kind: Lock,
                key: "k",
                timeout_s: 5,
                limit: None,
                lease_s: Some(7)
            })
        );
        assert_eq!(
            Request::parse("sl", "s", "5 1 20"),
            Ok(Request::Acquire {
                kind: Semaphore,
                key: "s",
                timeout_s: 5,
                limit: Some(1),
                lease_s: Some(20)
            })
        );
        assert!(Request::parse("l", "big", "9223372036 9223372036").is_ok());
        assert!(Request::parse("sl", "biglim", "0 1048577").is_ok());
        assert_eq!(
            Request::parse("e", "k", ""),
            Ok(Request::Enqueue {
                kind: Lock,
                key: "k",
                limit: None,
                lease_s: None
            })
        );
        assert_eq!(
            Request::parse("se", "k", "1 15"),
            Ok(Request::Enqueue {
                kind: Semaphore,
                key: "k",
                limit: Some(1),
                lease_s: Some(15)
            })
        );
        assert_eq!(
            Request::parse("stats", "ignored key", "ignored arg"),
            Ok(Request::Stats)
        );
        assert_eq!(Request::parse("ping", "", ""), Ok(Request::Ping));
        assert_eq!(
            Request::parse("auth", "anything", "  s3cret  "),
            Ok(Request::Auth { secret: "s3cret" })
        );
        assert_eq!(
            Request::parse("r", "nokey", "abc"),
            Ok(Request::Release {
                kind: Lock,
                key: "nokey",
                token: "abc"
            })
        );
        assert!(Request::parse("l", "ké", "0").is_ok());
        // Rejected with `error`, per docs/transcripts.
        for (c, k, a) in [
            ("bogus", "k", ""),
            ("L", "k", "5"),
            (" l", "k", "5"),
            ("l", "", "5"),
            ("l", "a b", "5"),
            ("l", "k", "-1"),
            ("l", "k", "abc"),
            ("l", "k", "5 0"),
            ("l", "k", "5 1 2"),
            ("l", "k", ""),
            ("r", "k", ""),
            ("sl", "k", "5"),
            ("sl", "k", "5 0"),
            ("w", "k", ""),
            ("e", "k3x", "30 junk"),
            ("l", "big", "9223372037"),
            ("n", "k", ""),
            ("se", "k", ""),
            ("w", "k", "1 2"),
        ] {
            assert_eq!(Request::parse(c, k, a), Err(()), "{c:?} {k:?} {a:?}");
        }
    }

    #[test]
    fn stable_ref_is_1_to_64_printable_ascii() {
        let ok = |r: &str| enc(Request::StableRef { reference: r }).is_ok();
        assert!(ok("a"));
        assert!(ok(&"f".repeat(64)));
        assert!(ok("0123456789abcdef0123456789abcdef"));
        assert!(ok("!~"));
        for bad in ["", &"f".repeat(65), "a b", "é", "a\tb", "a\u{7f}"] {
            assert!(!ok(bad), "{bad:?}");
            assert_eq!(Request::parse("stable-ref", bad, "_"), Err(()), "{bad:?}");
        }
        assert_eq!(
            Request::parse("stable-ref", "refF", "_"),
            Ok(Request::StableRef { reference: "refF" })
        );
        assert_eq!(Request::parse("barrier", "_", "_"), Ok(Request::Barrier));
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let reqs = [
            Request::Acquire {
                kind: Semaphore,
                key: "é-clé",
                timeout_s: 3,
                limit: Some(4),
                lease_s: Some(9),
            },
            Request::Renew {
                kind: Lock,
                key: "k",
                token: "18eb813dca7f84f620b2dfa1412116b8",
                lease_s: None,
            },
            Request::Enqueue {
                kind: Lock,
                key: "k",
                limit: None,
                lease_s: Some(2),
            },
            Request::Wait {
                kind: Lock,
                key: "k",
                timeout_s: 0,
            },
            Request::StableRef {
                reference: "0123456789abcdef0123456789abcdef",
            },
            Request::Barrier,
        ];
        for r in reqs {
            let s = enc(r.clone()).unwrap();
            let lines: Vec<&str> = s.split('\n').collect();
            assert_eq!(Request::parse(lines[0], lines[1], lines[2]), Ok(r));
        }
    }
}
