//! Which dflockd release line the test server emulates, and every wire
//! behaviour in which the lines differ (docs/protocol.md, transcripts
//! `server-2.x.log` vs `server-1.10.log`). The rest of the server asks
//! [`Behaviour`] instead of testing the line itself, so this table is the
//! one place that lists the differences.
//!
//! Not differences: `stats` lists every limit-1 key as a lock on both
//! lines (both transcripts, line 52). An over-long line with no `\n` is
//! answered `error` at the read timeout (or at once when its `\n` comes)
//! as seen on 2.x; the 1.10 transcripts do not show that case, so 1.10
//! mode behaves the same.

use std::fmt;
use std::str::FromStr;

use crate::protocol::{MAX_AUTH_LINE_BYTES, MAX_LINE_BYTES};

/// A dflockd protocol line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServerLine {
    /// The 2.x line (fencing tokens, `ping`, `error_draining`).
    #[default]
    V2,
    /// Release 1.10.0.
    V1_10,
}

/// How a line behaves where the lines differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Behaviour {
    /// `ping` answers `ok` (2.x); else `error`, connection kept (1.10).
    pub ping_ok: bool,
    /// Tokens start with a fence rising by one per grant (2.x); else 32
    /// random hex characters (1.10).
    pub fenced_tokens: bool,
    /// Lock and semaphore keys share one namespace: a lock is a semaphore
    /// of limit 1, `sl` on a lock key with another limit gets
    /// `error_limit_mismatch` and `r`/`n` work on semaphore tokens (1.10).
    /// (`stats` lists every limit-1 key as a lock on both lines.)
    pub shared_namespace: bool,
    /// A waiter blocked in `l`/`w` whose connection closed stays queued
    /// until its timeout; a grant to it is released at once (1.10). 2.x
    /// drops it with the connection.
    pub keep_dropped_waiters: bool,
    /// Longest `auth` argument line.
    pub max_auth_line: usize,
    /// An over-long line before authentication gets `error_auth` (1.10;
    /// 2.x: `error`), then the close.
    pub too_long_before_auth_is_auth_failure: bool,
    /// While draining, requests get `error_draining` and a close (2.x);
    /// 1.10 keeps answering them until it exits.
    pub error_draining: bool,
    /// `barrier` answers `ok` at once on a single node (the newest 2.x
    /// servers); 1.10 has no such command (`error`).
    pub barrier_ok: bool,
}

const V2: Behaviour = Behaviour {
    ping_ok: true,
    fenced_tokens: true,
    shared_namespace: false,
    keep_dropped_waiters: false,
    max_auth_line: MAX_AUTH_LINE_BYTES,
    too_long_before_auth_is_auth_failure: false,
    error_draining: true,
    barrier_ok: true,
};

const V1_10: Behaviour = Behaviour {
    ping_ok: false,
    fenced_tokens: false,
    shared_namespace: true,
    keep_dropped_waiters: true,
    max_auth_line: MAX_LINE_BYTES,
    too_long_before_auth_is_auth_failure: true,
    error_draining: false,
    barrier_ok: false,
};

impl ServerLine {
    pub(crate) const fn behaviour(self) -> Behaviour {
        match self {
            ServerLine::V2 => V2,
            ServerLine::V1_10 => V1_10,
        }
    }
}

impl FromStr for ServerLine {
    type Err = String;

    /// `2`, `2.x` or `v2`; `1.10`, `1.10.0` or `v1.10`.
    fn from_str(s: &str) -> Result<ServerLine, String> {
        match s.trim().trim_start_matches(['v', 'V']) {
            "2" | "2.x" => Ok(ServerLine::V2),
            "1.10" | "1.10.0" => Ok(ServerLine::V1_10),
            other => Err(format!("unknown server line {other:?} (expected 2.x or 1.10)")),
        }
    }
}

impl fmt::Display for ServerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerLine::V2 => "2.x",
            ServerLine::V1_10 => "1.10",
        })
    }
}
