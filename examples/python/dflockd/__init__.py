"""dflockd: the dflockd-client (2.1.1) API on libdflockd, with ctypes.

Moving from the reference client is an import change::

    from dflockd import SyncDistributedLock     # was: from dflockd_client import ...

    with SyncDistributedLock("my-key", servers=[("10.0.0.1", 6388)]) as lock:
        print(lock.token, lock.fence)

What the library adds: leases kept across the server's idle timeout, pooled
connections, `is_held()`, an `on_lost` callback (on a Python thread of this
package), `cancel()` of a blocked acquire from another thread, the low-level API
(`Client.connect`, `dflockd.lowlevel`), counters (`Client.metrics`), logging
(`set_log`, `log_to_logging`) and the embedded test server (`dflockd.testing`).

The asyncio types (`AsyncDistributedLock`, `AsyncDistributedSemaphore`) wait on
the library's completion queue through `loop.add_reader`: no thread per waiting
acquire, and cancelling the awaiting task cancels the acquire on the server.
"""

from __future__ import annotations

from typing import Any, TypedDict

from . import _native, lowlevel
from ._async import AsyncConn, AsyncDistributedLock, AsyncDistributedSemaphore
from ._sync import DistributedLock as SyncDistributedLock
from ._sync import DistributedSemaphore as SyncDistributedSemaphore
from .client import (
    LOG_DEBUG,
    LOG_ERROR,
    LOG_INFO,
    LOG_OFF,
    LOG_WARN,
    Client,
    Grant,
    SyncConn,
    fence_from_token,
    log_to_logging,
    set_log,
)
from .errors import (
    AcquireCancelledError,
    AlreadyQueuedError,
    AuthError,
    ClosedError,
    DeadlineError,
    DflockdConnectionError,
    DflockdError,
    DflockdTimeoutError,
    DrainingError,
    ForkedError,
    InternalError,
    LeaseExpiredError,
    LeaseLostError,
    LimitMismatchError,
    MaxLocksError,
    MaxWaitersError,
    NotHeldError,
    NotLeaderError,
    NotQueuedError,
    ProtocolError,
    TLSError,
)
from .sharding import DEFAULT_SERVERS, ShardingStrategy, stable_hash_shard

__version__ = "0.1.0"
LIBRARY_VERSION = _native.VERSION


class StatsResult(TypedDict):
    """Decoded `stats` reply."""

    connections: int
    locks: list[dict[str, Any]]
    semaphores: list[dict[str, Any]]
    idle_locks: list[dict[str, Any]]
    idle_semaphores: list[dict[str, Any]]


__all__ = [
    "__version__",
    "LIBRARY_VERSION",
    "StatsResult",
    # the reference client's names
    "DflockdError",
    "DflockdTimeoutError",
    "AuthError",
    "MaxLocksError",
    "MaxWaitersError",
    "LimitMismatchError",
    "NotQueuedError",
    "AlreadyQueuedError",
    "LeaseExpiredError",
    "DrainingError",
    "DEFAULT_SERVERS",
    "ShardingStrategy",
    "stable_hash_shard",
    "fence_from_token",
    "AsyncConn",
    "AsyncDistributedLock",
    "AsyncDistributedSemaphore",
    "SyncConn",
    "SyncDistributedLock",
    "SyncDistributedSemaphore",
    # beyond it
    "Client",
    "Grant",
    "lowlevel",
    "set_log",
    "log_to_logging",
    "LOG_OFF",
    "LOG_ERROR",
    "LOG_WARN",
    "LOG_INFO",
    "LOG_DEBUG",
    "NotLeaderError",
    "LeaseLostError",
    "NotHeldError",
    "AcquireCancelledError",
    "ClosedError",
    "ForkedError",
    "InternalError",
    "DflockdConnectionError",
    "DeadlineError",
    "ProtocolError",
    "TLSError",
]
