"""Interoperation with the reference client, dflockd-client 2.1.1, on one embedded
test server. The reference requires Python >= 3.12; this machine's Debian Python is
3.11, so `make python-ref` installs it with --ignore-requires-python, for these
tests and the benchmark only (it runs on 3.11 as far as these use it)."""

from __future__ import annotations

import random
import threading
import time

import pytest

import dflockd
from dflockd import SyncDistributedLock, SyncDistributedSemaphore, fence_from_token


def test_mutual_exclusion_both_ways(ref, server, key):
    ours = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0)
    theirs = ref.SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0)
    assert ours.acquire()
    assert theirs.acquire() is False  # ours holds: the reference is refused
    assert ours.release()
    assert theirs.acquire()
    assert ours.acquire() is False  # the reference holds: ours is refused
    assert theirs.release()
    assert ours.acquire()
    ours.release()
    theirs.close()


def test_mutual_exclusion_under_contention(ref, server, key):
    inside, overlaps, done = [0], [0], [0]
    guard = threading.Lock()

    def worker(make):
        lock = make()
        for _ in range(10):
            assert lock.acquire()
            with guard:
                inside[0] += 1
                overlaps[0] += inside[0] > 1
            time.sleep(0.002)
            with guard:
                inside[0] -= 1
                done[0] += 1
            lock.release()
        lock.close()

    makers = [
        lambda: SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30),
        lambda: ref.SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=30),
    ] * 3
    threads = [threading.Thread(target=worker, args=(m,)) for m in makers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert done[0] == 60 and overlaps[0] == 0


def test_fifo_and_rising_fences_across_clients(ref, server, key):
    holder = ref.SyncDistributedLock(key, servers=server.servers)
    assert holder.acquire()
    first = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=10)
    second = ref.SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=10)
    third = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=10)
    assert first.enqueue() == "queued"
    assert second.enqueue() == "queued"
    assert third.enqueue() == "queued"
    fences = [fence_from_token(holder.token)]
    order = []

    def run(name, lock):
        assert lock.wait()
        order.append(name)
        fences.append(fence_from_token(lock.token))
        time.sleep(0.05)
        lock.release()

    threads = [threading.Thread(target=run, args=a) for a in (("third", third), ("second", second), ("first", first))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    holder.release()
    for t in threads:
        t.join(20)
    assert order == ["first", "second", "third"]
    assert fences == sorted(fences) and len(set(fences)) == 4


def test_semaphore_slots_shared(ref, server, key):
    a = SyncDistributedSemaphore(key, limit=2, servers=server.servers, acquire_timeout_s=0)
    b = ref.SyncDistributedSemaphore(key, limit=2, servers=server.servers, acquire_timeout_s=0)
    c = SyncDistributedSemaphore(key, limit=2, servers=server.servers, acquire_timeout_s=0)
    d = ref.SyncDistributedSemaphore(key, limit=2, servers=server.servers, acquire_timeout_s=0)
    assert a.acquire() and b.acquire()
    assert c.acquire() is False and d.acquire() is False
    b.release()
    assert c.acquire()
    assert d.acquire() is False
    with pytest.raises(ref.LimitMismatchError):
        ref.SyncDistributedSemaphore(key, limit=3, servers=server.servers, acquire_timeout_s=0).acquire()
    a.release()
    c.release()
    d.close()


def test_identical_shard_choice(ref):
    rnd = random.Random(11)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_/:.é€😀"
    client_cache: dict[int, dflockd.Client] = {}
    for i in range(3000):
        k = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40)))
        n = rnd.randint(1, 17)
        assert dflockd.stable_hash_shard(k, n) == ref.stable_hash_shard(k, n), (k, n)
        if i % 10 == 0:  # and the library's own routing of a multi-server client
            c = client_cache.setdefault(n, dflockd.Client([("127.0.0.1", 1000 + j) for j in range(n)]))
            assert c.server_for(k) == ref.stable_hash_shard(k, n), (k, n)


def test_routed_to_the_same_server(ref, key):
    from dflockd.testing import TestServer

    with TestServer() as a, TestServer() as b, TestServer() as c:
        servers = [a.servers[0], b.servers[0], c.servers[0]]
        for i in range(12):
            k = f"{key}-{i}"
            ours = SyncDistributedLock(k, servers=servers, acquire_timeout_s=0)
            theirs = ref.SyncDistributedLock(k, servers=servers, acquire_timeout_s=0)
            assert ours.acquire()
            assert theirs.acquire() is False  # same key, same server, refused
            ours.release()
            theirs.close()
        # the reference's own strategy function is accepted (and routed by the library)
        lock = SyncDistributedLock(key, servers=servers, sharding_strategy=ref.stable_hash_shard)
        assert lock.client.server_for(key) == ref.stable_hash_shard(key, 3)


def test_exception_names_match_the_reference(ref):
    for name in ref.__all__:
        if name.startswith("_") or name == "__version__":
            continue
        assert hasattr(dflockd, name), f"dflockd lacks the reference's {name}"
        theirs = getattr(ref, name)
        if isinstance(theirs, type) and issubclass(theirs, BaseException):
            ours = getattr(dflockd, name)
            for base in theirs.__mro__[1:]:
                if base.__module__ == "builtins":
                    assert issubclass(ours, base), (name, base)
