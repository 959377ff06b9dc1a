"""Placeholders for the asyncio half.

AsyncDistributedLock / AsyncDistributedSemaphore / AsyncConn will be built on the
library's completion queue (`dflockd_events_*`), which awaits an acquire without a
thread per waiter and cancels it on the server when the task is cancelled. Until
that lands these names exist, so that code written for dflockd-client imports,
and raise NotImplementedError when used.
"""

from __future__ import annotations

from typing import Any

_MESSAGE = (
    "{name}: the asyncio half of this package is not built yet (it waits for the "
    "library's completion queue, dflockd_events_*). Use Sync{short} in a thread "
    "meanwhile, e.g. `await asyncio.to_thread(lock.acquire)`; lock.cancel() "
    "interrupts it."
)


class _NotYet:
    _short = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        raise NotImplementedError(_MESSAGE.format(name=name, short=self._short))


class AsyncDistributedLock(_NotYet):
    _short = "DistributedLock"


class AsyncDistributedSemaphore(_NotYet):
    _short = "DistributedSemaphore"


class AsyncConn(_NotYet):
    _short = "Conn (dflockd.SyncConn)"
