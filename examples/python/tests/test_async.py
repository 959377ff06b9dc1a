"""The asyncio half: AsyncDistributedLock / AsyncDistributedSemaphore on the
library's completion queue, against the embedded test server, default settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import HERE

from dflockd import (
    AcquireCancelledError,
    AsyncDistributedLock,
    AsyncDistributedSemaphore,
    DflockdTimeoutError,
    LeaseLostError,
    NotQueuedError,
    fence_from_token,
)
from dflockd.testing import TestServer


async def until(pred, timeout: float = 10.0) -> bool:
    """Await a condition (checked every 20 ms), up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def waiters(lock, key: str) -> int:
    """The server's waiter count for `key` (0 if the key is not held)."""
    for entry in lock.client.stats()["locks"]:
        if entry["key"] == key:
            return entry["waiters"]
    return 0


def holders(lock, key: str) -> int:
    return sum(1 for e in lock.client.stats()["locks"] if e["key"] == key)


def threads_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line")


def test_acquire_release_attributes(server, key):
    async def main():
        lock = AsyncDistributedLock(key, servers=server.servers)
        assert lock.token is None and lock.lease == 0 and not lock.is_held()
        assert await lock.acquire()
        assert len(lock.token) == 32 and lock.lease > 0
        assert lock.fence == fence_from_token(lock.token) and lock.is_held()
        assert await lock.release() is True
        assert lock.token is None and not lock.is_held()
        assert await lock.release() is False  # nothing held: False, as the reference
        await lock.aclose()

    asyncio.run(main())


def test_timeout_returns_false_and_aenter_raises(server, key):
    async def main():
        holder = AsyncDistributedLock(key, servers=server.servers)
        assert await holder.acquire()
        other = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=1)
        t0 = time.monotonic()
        assert await other.acquire() is False
        assert 0.9 < time.monotonic() - t0 < 5
        assert await other.try_acquire() is False
        with pytest.raises(TimeoutError) as info:  # the reference raises TimeoutError
            async with other:
                pass
        assert isinstance(info.value, DflockdTimeoutError)
        assert waiters(holder, key) == 0  # a timed-out acquire leaves no waiter
        await holder.aclose()
        await other.aclose()

    asyncio.run(main())


def test_mutual_exclusion(server, key):
    async def main():
        inside, overlaps, done = [0], [0], [0]

        async def worker():
            lock = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30)
            for _ in range(10):
                async with lock:
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                    await asyncio.sleep(0.002)  # yield inside the critical section
                    inside[0] -= 1
                    done[0] += 1
            await lock.aclose()

        await asyncio.gather(*(worker() for _ in range(8)))
        assert done[0] == 80 and overlaps[0] == 0

    asyncio.run(main())


def test_fifo(server, key):
    async def main():
        holder = AsyncDistributedLock(key, servers=server.servers)
        assert await holder.acquire()
        locks = [AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30) for _ in range(6)]
        order: list[int] = []
        fences = [holder.fence]

        async def take(i):
            assert await locks[i].acquire()
            order.append(i)
            fences.append(locks[i].fence)
            await locks[i].release()

        tasks = []
        for i in range(len(locks)):  # acquires started in this order are granted in it
            tasks.append(asyncio.create_task(take(i)))
            await until(lambda: waiters(holder, key) == i + 1)
        assert await holder.release()
        await asyncio.gather(*tasks)
        assert order == list(range(len(locks)))
        assert fences == sorted(fences) and len(set(fences)) == len(fences)
        for lock in locks + [holder]:
            await lock.aclose()

    asyncio.run(main())


def test_two_phase(server, key):
    async def main():
        a = AsyncDistributedLock(key, servers=server.servers)
        b = AsyncDistributedLock(key, servers=server.servers)
        with pytest.raises(NotQueuedError):
            await b.wait(1)
        assert await a.enqueue() == "acquired" and a.is_held()
        assert await a.wait() is True  # already held
        assert await b.enqueue() == "queued" and not b.is_held()
        assert waiters(a, key) == 1
        waiting = asyncio.create_task(b.wait(10))
        await asyncio.sleep(0)  # b's wait_start is on the engine now
        assert await a.release()
        assert await waiting and b.is_held()
        assert await b.release()
        # leaving the queue: False (nothing was held), and no waiter stays
        assert await a.acquire()
        assert await b.enqueue() == "queued"
        assert await b.release() is False
        assert await until(lambda: waiters(a, key) == 0, 2)  # its connection is closed
        # a wait that times out leaves the queue
        assert await b.enqueue() == "queued"
        assert await b.wait(1) is False
        assert waiters(a, key) == 0
        await a.aclose()
        await b.aclose()

    asyncio.run(main())


def test_semaphore(server, key):
    async def main():
        sems = [AsyncDistributedSemaphore(key, limit=2, servers=server.servers, acquire_timeout_s=0) for _ in range(3)]
        assert await sems[0].acquire() and await sems[1].acquire()
        assert await sems[2].acquire() is False
        assert await sems[0].release()
        assert await sems[2].acquire()
        for s in sems:
            await s.aclose()
        with pytest.raises(ValueError):
            AsyncDistributedSemaphore(key, limit=0, servers=server.servers)

    asyncio.run(main())


def test_bad_input_same_classes_as_sync(server):
    with pytest.raises(TypeError):
        AsyncDistributedLock(42, servers=server.servers)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AsyncDistributedLock("has space", servers=server.servers)
    with pytest.raises(ValueError):
        AsyncDistributedLock("k", servers=server.servers, acquire_timeout_s=-1)


def test_cancelling_the_task_cancels_the_acquire_on_the_server(server, key):
    """A task blocked in acquire() is cancelled: the server's queue is empty
    afterwards and the next waiter gets the lock as soon as the holder lets go."""

    async def main():
        holder = AsyncDistributedLock(key, servers=server.servers)
        assert await holder.acquire()
        blocked = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=60)
        task = asyncio.create_task(blocked.acquire())
        assert await until(lambda: waiters(holder, key) == 1)
        nxt = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=60)
        next_task = asyncio.create_task(nxt.acquire())
        assert await until(lambda: waiters(holder, key) == 2)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not blocked.is_held()
        # The server drops the cancelled waiter when it sees its connection closed.
        assert await until(lambda: waiters(holder, key) == 1, 2)  # only `nxt` waits
        t0 = time.monotonic()
        assert await holder.release()
        assert await asyncio.wait_for(next_task, 5)
        assert time.monotonic() - t0 < 1.0  # promptly: the cancelled one was not in the way
        assert await nxt.release()
        # the object is usable again
        assert await blocked.acquire() and await blocked.release()
        for lock in (holder, blocked, nxt):
            await lock.aclose()

    asyncio.run(main())


def test_cancelling_a_wait_leaves_the_queue(server, key):
    async def main():
        holder = AsyncDistributedLock(key, servers=server.servers)
        assert await holder.acquire()
        b = AsyncDistributedLock(key, servers=server.servers)
        assert await b.enqueue() == "queued"
        task = asyncio.create_task(b.wait(60))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not b.is_held()
        assert await until(lambda: waiters(holder, key) == 0, 2)
        await holder.aclose()
        await b.aclose()

    asyncio.run(main())


def test_cancel_racing_the_grant_leaves_nothing_held(server, key):
    """Cancel the waiter in the same loop turn as the holder's release: whether
    the grant or the cancel wins, nothing stays held once the task has ended."""

    async def main():
        holder = AsyncDistributedLock(key, servers=server.servers)
        waiter = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=60)
        for i in range(40):  # both outcomes, and grants that arrive after the cancel
            assert await holder.acquire()
            task = asyncio.create_task(waiter.acquire())
            assert await until(lambda: waiters(holder, key) == 1)
            release = asyncio.create_task(holder.release())
            await asyncio.sleep(0.0002 * (i % 10))
            task.cancel()
            try:
                granted = await task  # the grant won before the cancel was delivered
            except asyncio.CancelledError:
                granted = False
            assert await release
            assert waiter.is_held() is granted
            if granted:
                assert await waiter.release()
            assert await until(lambda: holders(holder, key) == 0), f"round {i}: still held on the server"
        await holder.aclose()
        await waiter.aclose()

    asyncio.run(main())


def test_cancel_method_and_aclose_end_a_pending_acquire(server, key):
    async def main():
        holder = AsyncDistributedLock(key, servers=server.servers)
        assert await holder.acquire()
        b = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=60)
        task = asyncio.create_task(b.acquire())
        assert await until(lambda: waiters(holder, key) == 1)
        threading.Thread(target=b.cancel).start()  # from another thread
        with pytest.raises(AcquireCancelledError):
            await task
        assert await until(lambda: waiters(holder, key) == 0, 2)
        task = asyncio.create_task(b.acquire())
        assert await until(lambda: waiters(holder, key) == 1)
        await b.aclose()
        with pytest.raises(AcquireCancelledError):
            await task
        assert await until(lambda: waiters(holder, key) == 0, 2)
        await holder.aclose()

    asyncio.run(main())


def test_lost_lease_callback_under_a_paused_server(key):
    with TestServer() as srv:

        async def main():
            loop_thread = threading.get_ident()
            calls: list[tuple[int, BaseException, bool]] = []
            fired = asyncio.Event()

            async def lost(lock, error):  # a coroutine callback runs as a task on the loop
                calls.append((threading.get_ident(), error, lock.is_held()))
                fired.set()

            lock = AsyncDistributedLock(key, servers=srv.servers, lease_ttl_s=3, on_lost=lost)
            assert await lock.acquire()
            assert await lock.wait_lost(0.1) is False
            srv.pause()
            try:
                start = time.monotonic()
                assert await lock.wait_lost(20), "not lost within 20 s of a paused server"
                await asyncio.wait_for(fired.wait(), 5)
                took = time.monotonic() - start
            finally:
                srv.resume()
            assert len(calls) == 1
            thread, error, held = calls[0]
            assert thread == loop_thread  # on the loop, not a library thread
            assert isinstance(error, LeaseLostError) and not held
            assert took < 12, took  # about the lease (3 s) + one I/O timeout
            assert lock.is_lost() and await lock.wait_lost(0) and lock.token is None
            assert await lock.release() is False  # as the reference: False, logged
            assert await lock.acquire() and not lock.is_lost()
            assert await lock.release()
            await lock.aclose()

        asyncio.run(main())


def test_on_lost_does_not_fire_on_release_or_close(server, key):
    async def main():
        fired = []
        lock = AsyncDistributedLock(key, servers=server.servers, on_lost=lambda *a: fired.append(a))
        assert await lock.acquire()
        assert await lock.release()
        assert await lock.acquire()
        await lock.aclose()
        # a loss of another lock on the same loop still arrives (the queue is alive)
        other = AsyncDistributedLock(key + "-o", servers=server.servers, lease_ttl_s=4)
        assert await other.acquire()
        server.drop_connections()  # the server releases on disconnect
        assert await other.wait_lost(15)
        assert fired == []
        await other.aclose()

    asyncio.run(main())


def test_one_queue_per_loop_and_freed_with_it(server, key):
    from dflockd import _async

    def fds() -> int:  # eventfds (the queue's; the embedded server's sockets vary)
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
            except OSError:
                pass
        return count

    async def once(i):
        async with AsyncDistributedLock(f"{key}-{i}", servers=server.servers):
            return _async._queue()

    q0 = asyncio.run(once(0))
    before = fds()
    queues = [asyncio.run(once(i)) for i in range(1, 30)]
    assert len({id(q) for q in queues}) == len(queues)  # one per loop
    assert fds() <= before  # a closed loop's queue is freed (by the next loop)
    assert q0._freed


def test_a_thousand_waiting_acquires_cost_no_threads(key):
    """1,000 tasks await acquires of one key on one loop; the thread count does
    not grow. The server runs in a child process (the embedded one keeps a
    thread per connection)."""
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
            holder = AsyncDistributedLock(key, servers=servers)
            assert await holder.acquire()  # the library's threads are running now
            warm = AsyncDistributedLock(key, servers=servers, acquire_timeout_s=0)
            assert await warm.acquire() is False
            base = threads_now()
            locks = [AsyncDistributedLock(key, servers=servers, acquire_timeout_s=120) for _ in range(1000)]
            tasks = [asyncio.create_task(lock.acquire()) for lock in locks]
            assert await until(lambda: waiters(holder, key) == 1000, 60), waiters(holder, key)
            during = threads_now()
            # each gets it in turn: release as soon as granted
            order = []

            async def hand_on(i):
                assert await tasks[i]
                order.append(i)
                await locks[i].release()

            relay = [asyncio.create_task(hand_on(i)) for i in range(1000)]
            assert await holder.release()
            await asyncio.wait_for(asyncio.gather(*relay), 120)
            after = threads_now()
            assert order == list(range(1000))  # FIFO, as started
            assert during == base, (base, during)
            assert after == base, (base, after)
            for lock in locks + [holder, warm]:
                await lock.aclose()

        asyncio.run(main())
    finally:
        child.stdin.close()
        child.wait(30)


def test_interop_with_the_reference_async_client(ref, server, key):
    async def main():
        ours = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0)
        theirs = ref.AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0)
        assert await ours.acquire()
        assert await theirs.acquire() is False
        assert await ours.release()
        assert await theirs.acquire()
        assert await ours.acquire() is False
        assert await theirs.release()

        # FIFO across the two clients, while one holds
        holder = ref.AsyncDistributedLock(key, servers=server.servers)
        assert await holder.acquire()
        first = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30)
        second = ref.AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30)
        third = AsyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30)
        order = []

        async def take(name, lock):
            assert await lock.acquire()
            order.append(name)
            await asyncio.sleep(0.01)
            await lock.release()

        tasks = []
        for i, (name, lock) in enumerate((("first", first), ("second", second), ("third", third))):
            tasks.append(asyncio.create_task(take(name, lock)))
            await until(lambda: waiters(ours, key) == i + 1)
        await holder.release()
        await asyncio.gather(*tasks)
        assert order == ["first", "second", "third"]
        for lock in (ours, first, third):
            await lock.aclose()
        for lock in (theirs, holder, second):
            await lock.aclose()

    asyncio.run(main())
