"""Exceptions: the reference client's (dflockd-client 2.1.1) names and bases, plus
one class for each failure the library reports beyond the server's statuses.

Every exception raised for a library status carries ``status`` (the C
``dflockd_status`` value), ``status_name`` (its C name) and ``leader`` (the
leader a cluster follower named, for :class:`NotLeaderError`).

Argument errors are Python's own, as in the reference client: a key that is not a
``str`` is a :class:`TypeError`; an empty key, a key with whitespace, a limit of 0
or a negative timeout are :class:`ValueError`.
"""

from __future__ import annotations

from . import _native as n


class _StatusMixin:
    status: int | None = None
    leader: str | None = None

    def _set(self, status: int | None, leader: str | None) -> None:
        self.status = status
        self.leader = leader

    @property
    def status_name(self) -> str | None:
        return None if self.status is None else n.status_name(self.status)


# --- the reference client's classes (same names, same bases) ---------------------------


class DflockdError(_StatusMixin, RuntimeError):
    """Base class for protocol-status errors returned by dflockd (a plain `error`
    reply, e.g. a wrong or expired token, is this class itself)."""

    def __init__(self, message: str = "", status: int | None = None, leader: str | None = None):
        super().__init__(message)
        self._set(status, leader)


class DflockdTimeoutError(_StatusMixin, TimeoutError):
    """Server returned a 'timeout' response to a blocking acquire/wait."""

    def __init__(self, message: str = "", status: int | None = None, leader: str | None = None):
        super().__init__(message)
        self._set(status, leader)


class AuthError(DflockdError, PermissionError):
    """Server rejected authentication. Also a PermissionError, which is what the
    reference client raises when its own `auth` is refused."""

    def __init__(self, message: str = "", status: int | None = None, leader: str | None = None):
        RuntimeError.__init__(self, message)
        self._set(status, leader)


class MaxLocksError(DflockdError):
    """Cluster-wide max-locks cap was reached."""


class MaxWaitersError(DflockdError):
    """Per-key waiter cap was reached."""


class LimitMismatchError(DflockdError):
    """Existing semaphore key was created with a different limit."""


class NotQueuedError(DflockdError):
    """Wait was called without a matching prior enqueue."""


class AlreadyQueuedError(DflockdError):
    """Connection already has an enqueued state for this key."""


class LeaseExpiredError(DflockdError):
    """Promoted holder's lease expired before observation."""


class DrainingError(DflockdError):
    """Server is shutting down and rejected the operation."""


# --- beyond the reference ------------------------------------------------------------------


class NotLeaderError(DflockdError):
    """A cluster follower refused and no configured server accepted; `leader`
    names the leader when the server did."""


class LeaseLostError(DflockdError):
    """The lease was lost: renewal failed until it would have expired, or the
    server no longer had it."""


class NotHeldError(DflockdError):
    """Nothing is held (released, never acquired)."""


class AcquireCancelledError(DflockdError):
    """`cancel()` (or `close()`) from another thread interrupted a blocked acquire
    or wait; nothing is left held or queued."""


class ClosedError(DflockdError):
    """The handle was closed."""


class ForkedError(DflockdError):
    """The handle was inherited through fork(): make a new client in the child."""


class InternalError(DflockdError):
    """A bug in the library (a caught panic) or a feature it was built without."""


class DflockdConnectionError(_StatusMixin, ConnectionError):
    """Reaching the server failed: connect, read or write error, or it closed."""

    def __init__(self, message: str = "", status: int | None = None, leader: str | None = None):
        super().__init__(message)
        self._set(status, leader)


class DeadlineError(DflockdConnectionError, TimeoutError):
    """No reply within the call's bound (a hung or paused server): also a
    TimeoutError, as a socket timeout is in the reference client."""


class ProtocolError(DflockdConnectionError):
    """The server sent a reply no command may get; the connection was closed."""


class TLSError(DflockdConnectionError):
    """TLS setup or handshake failed (untrusted CA, name mismatch, plaintext server)."""


_CLASSES: dict[int, type[BaseException]] = {
    n.TIMEOUT: DflockdTimeoutError,
    n.SERVER_ERROR: DflockdError,
    n.AUTH: AuthError,
    n.MAX_LOCKS: MaxLocksError,
    n.MAX_WAITERS: MaxWaitersError,
    n.LIMIT_MISMATCH: LimitMismatchError,
    n.NOT_ENQUEUED: NotQueuedError,
    n.ALREADY_ENQUEUED: AlreadyQueuedError,
    n.LEASE_EXPIRED: LeaseExpiredError,
    n.DRAINING: DrainingError,
    n.NOT_LEADER: NotLeaderError,
    n.PROTOCOL: ProtocolError,
    n.IO: DflockdConnectionError,
    n.DEADLINE: DeadlineError,
    n.TLS: TLSError,
    n.CANCELLED: AcquireCancelledError,
    n.LEASE_LOST: LeaseLostError,
    n.NOT_HELD: NotHeldError,
    n.CLOSED: ClosedError,
    n.FORKED: ForkedError,
    n.PANIC: InternalError,
    n.UNSUPPORTED: InternalError,
    n.BUFFER_TOO_SMALL: InternalError,
    n.NULL_PARAMETER: InternalError,
}


def error_for(status: int, message: str, leader: str | None = None) -> BaseException:
    """The exception for a library status (argument errors are ValueError)."""
    if status in (n.INVALID_ARGUMENT, n.INVALID_UTF8):
        e = ValueError(message)
        e.status = status  # type: ignore[attr-defined]
        return e
    cls = _CLASSES.get(status, DflockdError)
    return cls(message, status, leader)
