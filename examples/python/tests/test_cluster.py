"""cluster=True against the library's embedded 3-member cluster double."""

from __future__ import annotations

import pytest
from conftest import eventually

from dflockd import errors
from dflockd.client import Client
from dflockd.testing import TestCluster


@pytest.fixture
def cluster():
    with TestCluster(3) as tc:
        leader = tc.await_leader(5.0)
        assert leader is not None, "no leader elected within 5 s"
        yield tc, leader


def follower_first(tc: TestCluster, leader: int) -> list[tuple[str, int]]:
    """The members starting after the leader: the first one is a follower."""
    n = len(tc.servers)
    return [tc.servers[(leader + k) % n] for k in range(1, n + 1)]


def test_cluster_follows_the_leader_through_a_follower(cluster, key):
    tc, leader = cluster
    with Client(follower_first(tc, leader), cluster=True) as c:
        lock = c.lock(key)
        lock.acquire()
        try:
            assert lock.is_held()
            assert not lock.is_doubted()
            assert c.barrier() is None
        finally:
            lock.release()
        assert not lock.is_held()
        lock.close()
        m = c.metrics()
        assert m["redirects"] >= 1
        assert m["failovers"] == 0 and m["leases_confirmed"] == 0
    # Not in cluster mode, the barrier goes to every member: followers refuse.
    with Client(tc.servers) as plain:
        with pytest.raises(errors.NotLeaderError):
            plain.barrier()
    with pytest.raises(ValueError):
        Client(",".join(tc.addrs), cluster=True, sharding_strategy=lambda key, n: 0)
    with pytest.raises(ValueError):
        TestCluster(0)


def test_a_killed_leader_leaves_the_lease_held(cluster, key):
    tc, leader = cluster
    with Client(follower_first(tc, leader), cluster=True) as c:
        lock = c.lock(key)
        lock.acquire()
        c.barrier()  # the client knows the leader: the kill counts as a failover
        tc.kill(leader)
        seen = {"doubted": False}

        def confirmed() -> bool:
            d = lock.is_doubted()
            h = lock.is_held()
            assert not (d and h), "a doubted lease reported held"
            seen["doubted"] |= d
            return seen["doubted"] and not d and h

        assert eventually(confirmed, timeout=15.0, step=0.002)
        assert not lock.is_lost()
        m = c.metrics()
        assert m["failovers"] >= 1 and m["leases_confirmed"] >= 1 and m["leases_lost"] == 0
        c.barrier()
        lock.release()
        lock.close()
