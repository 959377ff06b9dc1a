//! The client's error type: one [`ErrorKind`] per failure a caller may want
//! to branch on (each maps to one C status code), plus a message for humans.

use crate::protocol::{InvalidRequest, Refusal, Status};

/// What went wrong. Each variant maps to exactly one `dflockd_status` in
/// the C API; add new kinds at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something the protocol or API forbids.
    InvalidArgument,
    /// The server answered `timeout`: not acquired within the timeout.
    Timeout,
    /// The server answered plain `error` (wrong or expired token, unknown
    /// key, malformed request, a waiter cut off by shutdown).
    Server,
    /// `error_auth`, or a server that demanded auth we did not send.
    Auth,
    /// `error_max_locks`: the server's cap on distinct keys is reached.
    MaxLocks,
    /// `error_max_waiters`: the key's queue is full.
    MaxWaiters,
    /// `error_limit_mismatch`: the semaphore exists with another limit.
    LimitMismatch,
    /// `error_not_enqueued`: wait without an enqueue on that connection.
    NotEnqueued,
    /// `error_already_enqueued`: the key is already enqueued on that connection.
    AlreadyEnqueued,
    /// `error_lease_expired`: the queued grant expired before wait collected it.
    LeaseExpired,
    /// `error_draining`: the server is shutting down.
    Draining,
    /// `error_not_leader` and no configured server accepted the command.
    NotLeader,
    /// A reply that no command may get (unknown status, bad field,
    /// over-long line, invalid UTF-8). The connection is closed.
    Protocol,
    /// Connecting, reading or writing failed, or the server closed.
    Io,
    /// No reply within the operation's deadline (a hung server).
    Deadline,
    /// TLS setup or handshake failed (bad CA, name mismatch, ...).
    Tls,
    /// Another thread cancelled the operation; nothing is left held.
    Cancelled,
    /// The lease was lost: renewal failed until it would have expired.
    LeaseLost,
    /// The handle holds nothing (released, never acquired, or lost).
    NotHeld,
    /// The client or handle was closed.
    Closed,
    /// The client (or a lease or connection made from it) was created
    /// before `fork()` in the parent process; create a new client in the
    /// child.
    Forked,
}

/// An error with its kind and a message that never contains a token or
/// secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    leader: Option<String>,
}

/// The crate's result type: [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message (which must not contain a token or secret).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            leader: None,
        }
    }

    /// What went wrong, to branch on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for humans.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For [`ErrorKind::NotLeader`]: the leader address the server named.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The same error (kind and leader kept) with `more` appended to its
    /// message.
    pub(crate) fn context(mut self, more: &str) -> Error {
        self.message = format!("{}; {more}", self.message);
        self
    }

    pub(crate) fn io(context: &str, e: &std::io::Error) -> Error {
        let kind = match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ErrorKind::Deadline,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{context}: {e}"))
    }

    /// The error for a server refusal of command `what` (e.g. "acquire").
    pub(crate) fn from_refusal(what: &str, refusal: Refusal) -> Error {
        let kind = match &refusal {
            Refusal::Malformed(m) => return Error::new(ErrorKind::Protocol, m.clone()),
            Refusal::NotLeader(addr) => {
                let mut e = Error::new(
                    ErrorKind::NotLeader,
                    format!(
                        "{what}: server is not the leader (leader: {})",
                        addr.as_deref().unwrap_or("unknown")
                    ),
                );
                e.leader = addr.clone();
                return e;
            }
            Refusal::Status(s) => match s {
                Status::Timeout => ErrorKind::Timeout,
                Status::ErrorAuth => ErrorKind::Auth,
                Status::ErrorMaxLocks => ErrorKind::MaxLocks,
                Status::ErrorMaxWaiters => ErrorKind::MaxWaiters,
                Status::ErrorLimitMismatch => ErrorKind::LimitMismatch,
                Status::ErrorNotEnqueued => ErrorKind::NotEnqueued,
                Status::ErrorAlreadyEnqueued => ErrorKind::AlreadyEnqueued,
                Status::ErrorLeaseExpired => ErrorKind::LeaseExpired,
                Status::ErrorDraining => ErrorKind::Draining,
                Status::ErrorNotLeader => ErrorKind::NotLeader,
                Status::Error => ErrorKind::Server,
                // parse_reply never refuses with a success word.
                Status::Ok | Status::Acquired | Status::Queued => ErrorKind::Protocol,
            },
        };
        let word = match refusal {
            Refusal::Status(s) => s.wire_name(),
            _ => "",
        };
        Error::new(kind, format!("{what}: server replied `{word}`"))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<InvalidRequest> for Error {
    fn from(e: InvalidRequest) -> Error {
        Error::new(ErrorKind::InvalidArgument, e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_status_has_its_own_kind() {
        let mut kinds = std::collections::HashSet::new();
        for s in Status::all() {
            if matches!(s, Status::Ok | Status::Acquired | Status::Queued) {
                continue;
            }
            let e = Error::from_refusal("acquire", Refusal::Status(s));
            assert!(e.message().contains(s.wire_name()));
            assert!(kinds.insert(e.kind()), "{s:?} shares a kind");
        }
        let e = Error::from_refusal("l", Refusal::NotLeader(Some("h:1".into())));
        assert_eq!((e.kind(), e.leader()), (ErrorKind::NotLeader, Some("h:1")));
    }
}
