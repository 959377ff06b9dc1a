//! Reply statuses: the first word of every reply line.

/// Every status a dflockd server sends (docs/protocol.md, "Statuses").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    Acquired,
    Queued,
    Timeout,
    Error,
    ErrorAuth,
    ErrorMaxLocks,
    ErrorMaxWaiters,
    ErrorLimitMismatch,
    ErrorNotEnqueued,
    ErrorAlreadyEnqueued,
    ErrorLeaseExpired,
    ErrorDraining,
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
