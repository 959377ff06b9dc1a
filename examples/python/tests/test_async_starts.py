"""try_acquire(), enqueue() and Client.astats() of the asyncio API on the library's
event engine (dflockd_lease_try_acquire_start, dflockd_lease_enqueue_start,
dflockd_client_stats_start): outcomes as the blocking calls report them, no
thread and no executor while they wait, nothing held or queued after a cancel."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap

from conftest import HERE
from test_async import threads_now, until, waiters

from dflockd import AsyncDistributedLock


class NoExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that fails the test if anything is run in it."""

    def submit(self, *args, **kwargs):
        raise AssertionError(f"run_in_executor was used: {args[:1]}")


def test_outcomes_match_the_blocking_calls(server, key):
    async def main():
        asyncio.get_running_loop().set_default_executor(NoExecutor())
        a = AsyncDistributedLock(key, servers=server.servers)
        b = AsyncDistributedLock(key, servers=server.servers)
        assert await a.try_acquire() is True and a.is_held()
        assert await b.try_acquire() is False and not b.is_held()
        assert waiters(a, key) == 0  # a failed try leaves nothing queued
        stats = await a.client.astats()
        assert any(e["key"] == key for e in stats["locks"])
        assert await b.enqueue() == "queued"
        assert waiters(a, key) == 1
        waiting = asyncio.create_task(b.wait(10))
        await asyncio.sleep(0)
        assert await a.release()
        assert await waiting and b.is_held()
        assert await b.release()
        assert await a.enqueue() == "acquired" and a.is_held()
        await a.aclose()
        await b.aclose()

    asyncio.run(main())


def test_waiting_tries_enqueues_and_stats_cost_no_threads(key):
    """100 each of try_acquire, enqueue and astats await a frozen server (a child
    process stopped with SIGSTOP): the thread count does not grow and no executor
    runs. Cancelled, they end at once; once the server runs again nothing of
    theirs is held or queued."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from dflockd.testing import TestServer
        with TestServer() as srv:
            print(srv.servers[0][1], flush=True)
            sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(HERE.parent)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(child.stdout.readline())
        servers = [("127.0.0.1", port)]

        async def main():
            asyncio.get_running_loop().set_default_executor(NoExecutor())
            warm = AsyncDistributedLock(key + "-warm", servers=servers)
            assert await warm.try_acquire()  # the library's threads are running now
            await warm.client.astats()
            assert await warm.release()
            base = threads_now()
            tries = [AsyncDistributedLock(key, servers=servers) for _ in range(100)]
            enqueues = [AsyncDistributedLock(key, servers=servers) for _ in range(100)]
            os.kill(child.pid, signal.SIGSTOP)
            try:
                tasks = [asyncio.create_task(lock.try_acquire()) for lock in tries]
                tasks += [asyncio.create_task(lock.enqueue()) for lock in enqueues]
                tasks += [asyncio.create_task(warm.client.astats()) for _ in range(100)]
                await asyncio.sleep(0.5)
                assert not any(t.done() for t in tasks), [t for t in tasks if t.done()][:1]
                during = threads_now()
                for t in tasks:
                    t.cancel()
                done, _ = await asyncio.wait(tasks, timeout=10)
                assert len(done) == len(tasks)
                assert all(t.cancelled() for t in tasks)
            finally:
                os.kill(child.pid, signal.SIGCONT)
            assert during == base, (base, during)
            assert await until(lambda: waiters(warm, key) == 0 and not any(
                e["key"] == key for e in warm.client.stats()["locks"]), 10)
            assert not any(lock.is_held() for lock in tries + enqueues)
            for lock in tries + enqueues + [warm]:
                await lock.aclose()

        asyncio.run(main())
    finally:
        child.stdin.close()
        child.wait(30)
