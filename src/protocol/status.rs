//! Reply statuses: the first word of every reply line.

/// Every status a dflockd server sends (docs/protocol.md, "Statuses").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `ok`: the request succeeded (release, renew, ping, auth).
    Ok,
    /// `acquired`: the lease is granted (acquire, or enqueue granted at once).
    Acquired,
    /// `queued`: enqueue put the caller in the key's FIFO queue; `wait` completes it.
    Queued,
    /// `timeout`: not granted within the request's timeout.
    Timeout,
    /// `error`: a generic failure (bad request, unknown or expired token, idle timeout, shutdown).
    Error,
    /// `error_auth`: authentication required or the token is wrong; the server closes the connection.
    ErrorAuth,
    /// `error_max_locks`: the server's `--max-locks` cap on distinct keys is reached.
    ErrorMaxLocks,
    /// `error_max_waiters`: the key's queue is at the server's `--max-waiters` cap.
    ErrorMaxWaiters,
    /// `error_limit_mismatch`: a semaphore request's limit differs from the key's current limit.
    ErrorLimitMismatch,
    /// `error_not_enqueued`: `wait` without a prior enqueue of the key on this connection.
    ErrorNotEnqueued,
    /// `error_already_enqueued`: a second enqueue of the same key on this connection.
    ErrorAlreadyEnqueued,
    /// `error_lease_expired`: the lease granted to the waiter expired before `wait` collected it.
    ErrorLeaseExpired,
    /// `error_draining` (2.x): the server is shutting down; it closes the connection.
    ErrorDraining,
    /// `error_not_leader[ <host:port>]` (cluster mode): a follower refusing a mutating command.
    ErrorNotLeader,
}

const TABLE: [(&str, Status); 14] = [
    ("ok", Status::Ok),
    ("acquired", Status::Acquired),
    ("queued", Status::Queued),
    ("timeout", Status::Timeout),
    ("error", Status::Error),
    ("error_auth", Status::ErrorAuth),
    ("error_max_locks", Status::ErrorMaxLocks),
    ("error_max_waiters", Status::ErrorMaxWaiters),
    ("error_limit_mismatch", Status::ErrorLimitMismatch),
    ("error_not_enqueued", Status::ErrorNotEnqueued),
    ("error_already_enqueued", Status::ErrorAlreadyEnqueued),
    ("error_lease_expired", Status::ErrorLeaseExpired),
    ("error_draining", Status::ErrorDraining),
    ("error_not_leader", Status::ErrorNotLeader),
];

impl Status {
    /// Every status, in table order.
    pub fn all() -> impl Iterator<Item = Status> {
        TABLE.iter().map(|(_, s)| *s)
    }

    /// The exact word on the wire.
    pub fn wire_name(self) -> &'static str {
        TABLE
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .expect("every status is in TABLE")
    }

    /// The status for a wire word; `None` for anything unknown, which a
    /// client must treat as a protocol error, never as success.
    pub fn from_wire(word: &str) -> Option<Status> {
        TABLE.iter().find(|(n, _)| *n == word).map(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in Status::all() {
            assert_eq!(Status::from_wire(s.wire_name()), Some(s));
        }
        assert_eq!(Status::all().count(), 14);
        assert_eq!(Status::from_wire("OK"), None);
        assert_eq!(Status::from_wire("error_something_new"), None);
    }
}
