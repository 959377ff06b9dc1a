"""The Python quick start (examples/python/README.md), sync and asyncio, as a user
runs it after `pip install` of the platform wheel: against the server named by
DFLOCKD_SERVERS (host:port), printing which library the package loaded.

Run by tests/packaging/wheel-check; it must not be run from the repository (the
package must come from the installed wheel).
"""

import asyncio
import os
import sys

import dflockd
from dflockd import AsyncDistributedLock, SyncDistributedLock, SyncDistributedSemaphore, fence_from_token
from dflockd import _native

host, port = os.environ["DFLOCKD_SERVERS"].rsplit(":", 1)
servers = [(host, int(port))]

with SyncDistributedLock("my-key", servers=servers) as lock:
    print(f"sync: held my-key, fence {fence_from_token(lock.token)} (= {lock.fence})")
    assert fence_from_token(lock.token) == lock.fence > 0

with SyncDistributedSemaphore("pool", limit=3, servers=servers) as sem:
    print(f"sync: semaphore slot, token {sem.token}")


async def main():
    async with AsyncDistributedLock("my-key", servers=servers) as lock:
        print(f"asyncio: acquired: {lock.token}")
        assert lock.token


asyncio.run(main())
print(f"dflockd {dflockd.__file__}")
print(f"loaded {_native.LOADED_FROM} (libdflockd {_native.VERSION})")
sys.stdout.flush()
