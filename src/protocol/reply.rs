//! Replies: encoded by the test server, parsed (strictly) by the client.

use super::{Command, MAX_SECONDS, Op, Stats, Status, Token};

/// A reply as the server writes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply<'a> {
    /// `ok` (auth, release, ping).
    Ok,
    /// `ok <token> <lease>` (acquire, wait).
    Granted {
        /// The lease's token.
        token: Token,
        /// The lease, in seconds.
        lease_s: u64,
    },
    /// `acquired <token> <lease>` (enqueue on a free key).
    Acquired {
        /// The lease's token.
        token: Token,
        /// The lease, in seconds.
        lease_s: u64,
    },
    /// `queued` (enqueue).
    Queued,
    /// `ok <seconds>` (renew).
    Renewed {
        /// The renewed lease, in seconds from now.
        lease_s: u64,
    },
    /// `ok <json>` (stats).
    Stats(&'a Stats),
    /// A bare status word: `timeout`, `error`, `error_*`.
    Status(Status),
    /// `error_not_leader[ <host:port>]`.
    NotLeader(Option<&'a str>),
}

impl Reply<'_> {
    /// Append the reply line, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self {
            Reply::Ok => "ok".to_owned(),
            Reply::Granted { token, lease_s } => format!("ok {token} {lease_s}"),
            Reply::Acquired { token, lease_s } => format!("acquired {token} {lease_s}"),
            Reply::Queued => "queued".to_owned(),
            Reply::Renewed { lease_s } => format!("ok {lease_s}"),
            Reply::Stats(stats) => format!("ok {}", stats.to_json()),
            Reply::Status(s) => s.wire_name().to_owned(),
            Reply::NotLeader(Some(addr)) => format!("error_not_leader {addr}"),
            Reply::NotLeader(None) => "error_not_leader".to_owned(),
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// What a successful reply told the client.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `ok` to auth, release or ping.
    Done,
    /// The lease is held: `ok <token> <lease>` to acquire/wait, or
    /// `acquired <token> <lease>` to enqueue (`via_enqueue`).
    Granted {
        /// The lease's token.
        token: Token,
        /// The lease, in seconds.
        lease_s: u64,
        /// Granted by enqueue (`acquired`) rather than acquire or wait (`ok`).
        via_enqueue: bool,
    },
    /// Enqueue put us in the queue; follow with wait on the same connection.
    Queued,
    /// Renew succeeded; the lease now runs `lease_s` seconds from now.
    Renewed {
        /// The renewed lease, in seconds from now.
        lease_s: u64,
    },
    /// The `stats` reply, parsed.
    Stats(Stats),
}

/// Why a reply is not a success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A status the server chose: `timeout`, `error`, or an `error_*` word
    /// (never `ok`, `acquired`, `queued`; never `error_not_leader`).
    Status(Status),
    /// `error_not_leader`, with the leader's client address when known.
    NotLeader(Option<String>),
    /// Not a reply this command can get: an unknown status, a missing or
    /// malformed field, an out-of-range number. The connection can no
    /// longer be trusted. The text quotes at most 64 bytes of the line.
    Malformed(String),
}

fn malformed(cmd: Command, line: &str) -> Refusal {
    let mut end = line.len().min(64);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < line.len() { "..." } else { "" };
    Refusal::Malformed(format!(
        "unexpected reply to `{}`: {:?}{more}",
        cmd.wire_name(),
        &line[..end]
    ))
}

fn parse_seconds(s: &str, min: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|v| (min..=MAX_SECONDS).contains(v))
}

/// Parse one reply line (without its `\n`) to `cmd`. Strict: anything that
/// is not exactly a reply `cmd` can get is [`Refusal::Malformed`], so a
/// confused or hostile server can never be mistaken for a grant.
pub fn parse_reply(cmd: Command, line: &str) -> Result<Outcome, Refusal> {
    let (word, rest) = match line.split_once(' ') {
        Some((w, r)) => (w, Some(r)),
        None => (line, None),
    };
    let status = Status::from_wire(word).ok_or_else(|| malformed(cmd, line))?;
    match (status, rest) {
        (Status::ErrorNotLeader, None) => return Err(Refusal::NotLeader(None)),
        (Status::ErrorNotLeader, Some(addr)) if !addr.is_empty() && !addr.contains(' ') => {
            return Err(Refusal::NotLeader(Some(addr.to_owned())));
        }
        (Status::Ok | Status::Acquired | Status::Queued | Status::ErrorNotLeader, _) => {}
        (s, None) => return Err(Refusal::Status(s)),
        (_, Some(_)) => return Err(malformed(cmd, line)),
    }
    let grant = |rest: Option<&str>, via_enqueue: bool| {
        let (t, l) = rest
            .and_then(|r| r.split_once(' '))
            .ok_or_else(|| malformed(cmd, line))?;
        let token = Token::parse(t).map_err(|_| malformed(cmd, line))?;
        let lease_s = parse_seconds(l, 1).ok_or_else(|| malformed(cmd, line))?;
        Ok(Outcome::Granted {
            token,
            lease_s,
            via_enqueue,
        })
    };
    match (cmd, status, rest) {
        (
            Command::Auth
            | Command::Ping
            | Command::StableRef
            | Command::Barrier
            | Command::Lease(_, Op::Release),
            Status::Ok,
            None,
        ) => Ok(Outcome::Done),
        (Command::Lease(_, Op::Acquire | Op::Wait), Status::Ok, r) => grant(r, false),
        (Command::Lease(_, Op::Enqueue), Status::Acquired, r) => grant(r, true),
        (Command::Lease(_, Op::Enqueue), Status::Queued, None) => Ok(Outcome::Queued),
        (Command::Lease(_, Op::Renew), Status::Ok, Some(r)) => parse_seconds(r, 0)
            .map(|lease_s| Outcome::Renewed { lease_s })
            .ok_or_else(|| malformed(cmd, line)),
        (Command::Stats, Status::Ok, Some(json)) => Stats::from_json(json)
            .map(Outcome::Stats)
            .map_err(|e| Refusal::Malformed(format!("bad stats reply: {e}"))),
        _ => Err(malformed(cmd, line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Kind::*;

    const T: &str = "18eb813dca7f84f620b2dfa1412116b8";
    const L: Command = Command::Lease(Lock, Op::Acquire);

    #[test]
    fn parses_every_success_shape() {
        let tok = Token::parse(T).unwrap();
        assert_eq!(
            parse_reply(L, &format!("ok {T} 33")),
            Ok(Outcome::Granted {
                token: tok,
                lease_s: 33,
                via_enqueue: false
            })
        );
        assert_eq!(
            parse_reply(Command::Lease(Semaphore, Op::Enqueue), &format!("acquired {T} 1")),
            Ok(Outcome::Granted {
                token: tok,
                lease_s: 1,
                via_enqueue: true
            })
        );
        assert_eq!(
            parse_reply(Command::Lease(Lock, Op::Enqueue), "queued"),
            Ok(Outcome::Queued)
        );
        assert_eq!(
            parse_reply(Command::Lease(Lock, Op::Renew), "ok 60"),
            Ok(Outcome::Renewed { lease_s: 60 })
        );
        assert_eq!(
            parse_reply(Command::Lease(Lock, Op::Release), "ok"),
            Ok(Outcome::Done)
        );
        assert_eq!(parse_reply(Command::Ping, "ok"), Ok(Outcome::Done));
        assert_eq!(parse_reply(Command::Auth, "ok"), Ok(Outcome::Done));
        assert_eq!(parse_reply(Command::Barrier, "ok"), Ok(Outcome::Done));
        assert_eq!(parse_reply(Command::StableRef, "ok"), Ok(Outcome::Done));
        assert_eq!(
            parse_reply(Command::Barrier, "error_not_leader 127.0.0.1:17462"),
            Err(Refusal::NotLeader(Some("127.0.0.1:17462".into())))
        );
        assert!(matches!(
            parse_reply(Command::Barrier, "ok 1"),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn maps_every_refusal_status() {
        for s in Status::all() {
            if matches!(
                s,
                Status::Ok | Status::Acquired | Status::Queued | Status::ErrorNotLeader
            ) {
                continue;
            }
            assert_eq!(parse_reply(L, s.wire_name()), Err(Refusal::Status(s)));
        }
        assert_eq!(parse_reply(L, "error_not_leader"), Err(Refusal::NotLeader(None)));
        assert_eq!(
            parse_reply(L, "error_not_leader 10.0.0.2:6388"),
            Err(Refusal::NotLeader(Some("10.0.0.2:6388".into())))
        );
    }

    #[test]
    fn hostile_replies_are_malformed_never_success() {
        let bad = [
            "",
            "OK",
            "ok",
            "okay",
            "ok  33",
            &format!("ok {T}"),
            &format!("ok {T} 0"),
            &format!("ok {T} -1"),
            &format!("ok {T} 9223372037"),
            &format!("ok {T} 33 extra"),
            "ok zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz 33",
            "acquired",
            "queued",
            "timeout now",
            "error_new_thing",
            &format!("acquired {T} 33"),
            "error ",
        ];
        for line in bad {
            assert!(
                matches!(parse_reply(L, line), Err(Refusal::Malformed(_))),
                "{line:?}"
            );
        }
        assert!(matches!(
            parse_reply(Command::Lease(Lock, Op::Release), &format!("ok {T} 3")),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(Command::Lease(Lock, Op::Renew), "ok"),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(Command::Lease(Lock, Op::Enqueue), &format!("ok {T} 3")),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(Command::Stats, "ok {"),
            Err(Refusal::Malformed(_))
        ));
        let long = format!("bogus{}", "é".repeat(100));
        let Err(Refusal::Malformed(m)) = parse_reply(L, &long) else {
            panic!()
        };
        assert!(m.len() < 120);
    }

    #[test]
    fn encode_matches_transcript_lines() {
        let tok = Token::parse(T).unwrap();
        let enc = |r: Reply| {
            let mut v = Vec::new();
            r.encode(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(
            enc(Reply::Granted {
                token: tok,
                lease_s: 33
            }),
            format!("ok {T} 33\n")
        );
        assert_eq!(
            enc(Reply::Acquired {
                token: tok,
                lease_s: 33
            }),
            format!("acquired {T} 33\n")
        );
        assert_eq!(enc(Reply::Renewed { lease_s: 7 }), "ok 7\n");
        assert_eq!(
            enc(Reply::Status(Status::ErrorLimitMismatch)),
            "error_limit_mismatch\n"
        );
        assert_eq!(enc(Reply::NotLeader(Some("h:1"))), "error_not_leader h:1\n");
        assert_eq!(enc(Reply::NotLeader(None)), "error_not_leader\n");
        assert_eq!(enc(Reply::Ok), "ok\n");
        assert_eq!(enc(Reply::Queued), "queued\n");
    }
}
