"""Locks and semaphores against the embedded test server: mutual exclusion, FIFO,
two-phase, cancel, GIL release, the low-level API, counters."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import eventually

import dflockd
from dflockd import (
    AcquireCancelledError,
    Client,
    DflockdTimeoutError,
    LimitMismatchError,
    NotQueuedError,
    SyncDistributedLock,
    SyncDistributedSemaphore,
    fence_from_token,
    lowlevel,
)


def test_acquire_release_attributes(server, key):
    lock = SyncDistributedLock(key, servers=server.servers, lease_ttl_s=20)
    assert lock.token is None and lock.lease == 0 and lock.fence is None
    assert lock.acquire() is True
    assert len(lock.token) == 32 and lock.lease == 20
    assert lock.fence == fence_from_token(lock.token)
    assert lock.is_held() and not lock.is_lost()
    assert lock.release() is True
    assert lock.token is None and not lock.is_held()
    assert lock.release() is False  # nothing held: False, as the reference
    lock.close()


def test_timeout_returns_false_and_enter_raises(server, key):
    with SyncDistributedLock(key, servers=server.servers):
        other = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0)
        assert other.acquire() is False
        assert other.try_acquire() is False
        with pytest.raises(TimeoutError):  # DflockdTimeoutError is a TimeoutError
            with other:
                pass
        with pytest.raises(DflockdTimeoutError):
            with other:
                pass


def test_mutual_exclusion(server, key):
    inside, overlaps, done = [0], [0], [0]
    guard = threading.Lock()

    def worker():
        lock = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30)
        for _ in range(15):
            with lock:
                with guard:
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                time.sleep(0.002)
                with guard:
                    inside[0] -= 1
                    done[0] += 1
        lock.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert done[0] == 90 and overlaps[0] == 0


def test_fifo(server, key):
    holder = SyncDistributedLock(key, servers=server.servers)
    assert holder.acquire()
    waiters = [SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30) for _ in range(5)]
    for w in waiters:  # joins the queue in this order
        assert w.enqueue() == "queued"
    order: list[int] = []

    def wait(i):
        assert waiters[i].wait()
        order.append(i)
        time.sleep(0.05)
        waiters[i].release()

    threads = [threading.Thread(target=wait, args=(i,)) for i in reversed(range(5))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    holder.release()
    for t in threads:
        t.join(30)
    assert order == [0, 1, 2, 3, 4]


def test_two_phase(server, key):
    a = SyncDistributedLock(key, servers=server.servers)
    assert a.enqueue() == "acquired"
    assert a.wait() is True  # at once
    b = SyncDistributedLock(key, servers=server.servers)
    assert b.enqueue() == "queued"
    assert b.wait(timeout_s=1) is False  # timeout leaves the queue
    with pytest.raises(NotQueuedError):
        b.wait(timeout_s=1)
    c = SyncDistributedLock(key, servers=server.servers)
    assert c.enqueue() == "queued"
    assert c.release() is False  # left the queue; nothing was held (as the reference)
    assert b.enqueue() == "queued"
    a.release()
    assert b.wait(timeout_s=5) is True and b.is_held()  # c is no longer ahead of it
    b.release()


def test_semaphore(server, key):
    sems = [SyncDistributedSemaphore(key, limit=2, servers=server.servers, acquire_timeout_s=0) for _ in range(3)]
    assert sems[0].acquire() and sems[1].acquire()
    assert sems[2].acquire() is False
    assert sems[2].limit == 2
    with pytest.raises(LimitMismatchError):
        SyncDistributedSemaphore(key, limit=3, servers=server.servers).acquire()
    sems[0].release()
    assert sems[2].acquire()
    for s in sems:
        s.close()


def test_cancel_a_blocked_acquire(server, key):
    holder = SyncDistributedLock(key, servers=server.servers)
    assert holder.acquire()
    blocked = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=60)
    outcome: list[object] = []

    def run():
        try:
            outcome.append(blocked.acquire())
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert eventually(lambda: blocked._running, 5)  # the acquire is in the library
    time.sleep(0.2)
    start = time.monotonic()
    blocked.cancel()
    t.join(5)
    assert time.monotonic() - start < 2
    assert len(outcome) == 1 and isinstance(outcome[0], AcquireCancelledError), outcome
    assert not blocked.is_held()
    # nothing left queued (the server drops the waiter when it sees the cancelled
    # call's connection closed): once the holder releases, a newcomer gets it at once
    assert eventually(lambda: all(e["waiters"] == 0 for e in holder.client.stats()["locks"]), 2)
    holder.release()
    assert SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0).try_acquire()
    blocked.cancel()  # nothing running: a no-op


def test_close_interrupts_a_blocked_wait(server, key):
    holder = SyncDistributedLock(key, servers=server.servers)
    assert holder.acquire()
    w = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=60)
    assert w.enqueue() == "queued"
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(Exception, w.wait).value))
    t.start()
    assert eventually(lambda: w._running, 5)  # the wait is in the library
    time.sleep(0.1)
    w.close()
    t.join(5)
    assert not t.is_alive() and isinstance(errors[0], (AcquireCancelledError, dflockd.ClosedError))
    holder.release()
    assert w.acquire()  # a closed object acquires again on a new handle
    w.release()


def test_sync_calls_release_the_gil(server):
    """Ten threads, each with its own lock, progress together."""
    holders = [SyncDistributedLock(f"gil-held-{i}", servers=server.servers) for i in range(10)]
    for h in holders:
        assert h.acquire()
    results: list[bool] = []
    ticks = [0]
    stop = threading.Event()

    def blocked(i):  # each blocks 2 s in C on a key someone holds
        results.append(SyncDistributedLock(f"gil-held-{i}", servers=server.servers, acquire_timeout_s=2).acquire())

    def ticker():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    tk = threading.Thread(target=ticker)
    tk.start()
    start = time.monotonic()
    threads = [threading.Thread(target=blocked, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - start
    stop.set()
    tk.join()
    assert results == [False] * 10
    assert elapsed < 6, f"10 blocked acquires of 2 s took {elapsed:.1f} s: calls hold the GIL"
    assert ticks[0] > 200  # Python ran meanwhile
    for h in holders:
        h.release()

    # ten threads, each holding its own lock, all at the same time
    barrier = threading.Barrier(10, timeout=20)
    held_together: list[bool] = []

    def hold(i):
        with SyncDistributedLock(f"gil-own-{i}", servers=server.servers) as lock:
            barrier.wait()
            held_together.append(lock.is_held())
            for _ in range(20):  # and keep going: acquire+release pairs
                lock.release()
                assert lock.acquire()

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert held_together == [True] * 10


def test_pooled_connections(server, key):
    lock = SyncDistributedLock(key, servers=server.servers)
    for _ in range(20):
        assert lock.acquire()
        assert lock.release()
    m = lock.client.metrics()
    assert m["acquires"] >= 20 and m["releases"] >= 20
    assert m["connections_opened"] <= 2, m  # not a connection per lock
    # locks with the same settings share the client (and its pool)
    assert SyncDistributedLock(key + "x", servers=server.servers).client is lock.client


def test_low_level_connection(server, key):
    with Client(server.servers) as c, c.connect(0) as conn:
        conn.ping()
        g = conn.acquire(key, 0, 10)
        assert len(g.token) == 32 and g.lease == 10 and g.fence == fence_from_token(g.token)
        assert conn.renew(key, g.token, 15) == 15
        with c.connect(0) as other:
            with pytest.raises(DflockdTimeoutError):
                other.acquire(key, 0)
            assert other.enqueue(key) is None  # queued
            conn.release(key, g.token)
            g2 = other.wait(key, 5)
            assert g2.fence > g.fence
            other.release(key, g2.token)
            with pytest.raises(dflockd.DflockdError):  # already released: plain `error`
                other.release(key, g2.token)
        stats = conn.stats()
        assert "locks" in stats


def test_reference_style_low_level_functions(server, key):
    host, port = server.servers[0]
    conn = lowlevel.open_conn(host, port, connect_timeout_s=5)
    try:
        token, lease = lowlevel.acquire(conn, key, 0, 10)
        assert lowlevel.renew(conn, key, token) > 0
        lowlevel.release(conn, key, token)
        assert lowlevel.enqueue(conn, key)[0] == "acquired"
        token, _ = lowlevel.wait(conn, key, 1)
        lowlevel.release(conn, key, token)
        t2, _ = lowlevel.sem_acquire(conn, key, 0, 2)
        lowlevel.sem_release(conn, key, t2)
        assert isinstance(lowlevel.stats(conn)["connections"], int)
    finally:
        conn.close()


def test_low_level_abort_from_another_thread(server, key):
    with Client(server.servers) as c, c.connect(0) as holder, c.connect(0) as conn:
        holder.acquire(key, 0)
        errors: list[BaseException] = []

        def run():
            try:
                conn.acquire(key, 60)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        conn.abort()
        t.join(5)
        assert not t.is_alive()
        # CANCELLED when it was blocked; a call started after the abort fails on the shut socket
        assert isinstance(errors[0], (AcquireCancelledError, dflockd.DflockdConnectionError)), errors


def test_shard_choice_matches_the_library_routing(server):
    from dflockd import stable_hash_shard

    assert stable_hash_shard("123456789", 2**32) == 0xCBF43926
    assert stable_hash_shard("deploy", 3) == 1 and stable_hash_shard("é-clé", 5) == 3
    servers = [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3), ("127.0.0.1", 4)]
    c = Client(servers)
    for k in ("a", "b", "jobs/nightly", "é-clé", "x" * 200):
        assert c.server_for(k) == stable_hash_shard(k, 4)
    # a custom strategy routes through the library's shard callback
    c2 = Client(servers, sharding_strategy=lambda k, n: len(k) % n)
    assert [c2.server_for(k) for k in ("a", "bb", "ccc", "dddd")] == [1, 2, 3, 0]


def test_custom_sharding_errors_are_the_reference_ones(server):
    with pytest.raises(IndexError):
        SyncDistributedLock("k", servers=server.servers, sharding_strategy=lambda k, n: 5)
    with pytest.raises(TypeError):
        SyncDistributedLock("k", servers=server.servers, sharding_strategy=lambda k, n: "0")


def test_held_locks_share_connections(server, key):
    with Client(server.servers) as c:
        locks = [c.lock(f"{key}-{i}") for i in range(200)]
        for lk in locks:
            assert lk.acquire()
        m = c.metrics()
        assert m["home_connections"] == 1, m  # 200 leases on one connection
        assert m["open_connections"] <= 2, m
        for lk in locks:
            assert lk.release()
            lk.close()
        assert c.metrics()["home_connections"] == 0
    with Client(server.servers, max_leases_per_connection=1) as c:
        locks = [c.lock(f"{key}-one-{i}") for i in range(10)]
        for lk in locks:
            assert lk.acquire()
        assert c.metrics()["home_connections"] == 10  # one each, as dflockd-client
        for lk in locks:
            lk.release()
            lk.close()
    with pytest.raises(ValueError, match="max_leases_per_connection"):
        Client(server.servers, max_leases_per_connection=0)
