//! The low-level API: one method per command on a [`Connection`], each a
//! [`Connection::call`] with the request built and the reply's outcome
//! unpacked (no deadline beyond the connection's own reply deadline).

use std::time::Instant;

use super::{Connection, Enqueued, Grant, describe};
use crate::protocol::{Kind, Outcome, Request, Stats};
use crate::{Error, ErrorKind, Result};

impl Connection {
    fn grant(outcome: Outcome, what: &str) -> Result<Grant> {
        match outcome {
            Outcome::Granted { token, lease_s, .. } => Ok(Grant { token, lease_s }),
            other => Err(unexpected(what, &other)),
        }
    }

    /// `auth`: authenticate with `secret` ([`ErrorKind::Auth`] when wrong;
    /// the server then closes the connection).
    pub fn auth(&self, secret: &str) -> Result<()> {
        self.call(&Request::Auth { secret }, None).map(drop)
    }

    /// `l`/`sl`: wait up to `timeout_s` (0 = try once) for the lease.
    /// [`ErrorKind::Timeout`] when not granted. `limit` is required for
    /// semaphores and forbidden for locks.
    pub fn acquire(
        &self,
        kind: Kind,
        key: &str,
        timeout_s: u64,
        limit: Option<u64>,
        lease_s: Option<u64>,
    ) -> Result<Grant> {
        let req = Request::Acquire {
            kind,
            key,
            timeout_s,
            limit,
            lease_s,
        };
        Self::grant(self.call(&req, None)?, "acquire")
    }

    /// `r`/`sr`: release by token ([`ErrorKind::Server`] for a wrong,
    /// expired or released token).
    pub fn release(&self, kind: Kind, key: &str, token: &str) -> Result<()> {
        self.call(&Request::Release { kind, key, token }, None).map(drop)
    }

    /// `n`/`sn`: renew; returns the new lease length in seconds.
    pub fn renew(&self, kind: Kind, key: &str, token: &str, lease_s: Option<u64>) -> Result<u64> {
        let req = Request::Renew {
            kind,
            key,
            token,
            lease_s,
        };
        match self.call(&req, None)? {
            Outcome::Renewed { lease_s } => Ok(lease_s),
            other => Err(unexpected("renew", &other)),
        }
    }

    /// `e`/`se`: join the key's queue (two-phase, phase 1).
    pub fn enqueue(
        &self,
        kind: Kind,
        key: &str,
        limit: Option<u64>,
        lease_s: Option<u64>,
    ) -> Result<Enqueued> {
        let req = Request::Enqueue {
            kind,
            key,
            limit,
            lease_s,
        };
        match self.call(&req, None)? {
            Outcome::Queued => Ok(Enqueued::Queued),
            other => Self::grant(other, "enqueue").map(Enqueued::Acquired),
        }
    }

    /// `w`/`sw`: wait up to `timeout_s` for the grant of an earlier enqueue
    /// on this connection (answers at once if enqueue said acquired).
    pub fn wait(&self, kind: Kind, key: &str, timeout_s: u64) -> Result<Grant> {
        Self::grant(self.call(&Request::Wait { kind, key, timeout_s }, None)?, "wait")
    }

    /// `ping` (2.x; a 1.10 server answers `error`, [`ErrorKind::Server`]).
    pub fn ping(&self) -> Result<()> {
        self.call(&Request::Ping, None).map(drop)
    }

    /// `barrier`: answered once the cluster has applied everything before
    /// it (a linearizable read barrier); a single-node 2.x server answers at
    /// once. A cluster follower refuses it ([`ErrorKind::NotLeader`]).
    pub fn barrier(&self) -> Result<()> {
        self.call(&Request::Barrier, None).map(drop)
    }

    /// `barrier`, answered before `cap` too.
    pub(crate) fn barrier_until(&self, cap: Option<Instant>) -> Result<()> {
        self.call(&Request::Barrier, cap).map(drop)
    }

    /// `stable-ref`: name this connection's session (cluster servers; 1 to
    /// 64 printable ASCII characters, once per connection). A waiter queued
    /// by a connection with a ref keeps its place when a new connection
    /// with the same ref sends `w` after a failover.
    pub fn stable_ref(&self, reference: &str) -> Result<()> {
        self.call(&Request::StableRef { reference }, None).map(drop)
    }

    /// `stats`: the server's state, JSON parsed.
    pub fn stats(&self) -> Result<Stats> {
        self.stats_until(None)
    }

    /// `stats`, answered before `cap` too.
    pub(crate) fn stats_until(&self, cap: Option<Instant>) -> Result<Stats> {
        match self.call(&Request::Stats, cap)? {
            Outcome::Stats(s) => Ok(s),
            other => Err(unexpected("stats", &other)),
        }
    }
}

/// parse_reply only returns outcomes valid for the command, so this is
/// unreachable in practice; still an error, never a panic.
fn unexpected(what: &str, outcome: &Outcome) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{what}: unexpected reply ({})", describe(outcome)),
    )
}
