"""The reference client's README examples (dflockd-client 2.1.1), with only the
import and `servers=` changed (the TLS one: see its comment)."""

from __future__ import annotations

import ssl

import pytest
from conftest import TLS_DIR

from dflockd.testing import TestServer


def test_lock(server, capsys):
    from dflockd import SyncDistributedLock

    with SyncDistributedLock("my-key", servers=server.servers) as lock:
        # critical section — lease auto-renews in a daemon thread
        print(f"acquired: {lock.token}")

    out = capsys.readouterr().out
    assert out.startswith("acquired: ") and len(out.strip()) == len("acquired: ") + 32
    assert not lock.is_held()


def test_async_lock(server, capsys):
    import asyncio

    from dflockd import AsyncDistributedLock

    async def main():
        async with AsyncDistributedLock("my-key", servers=server.servers) as lock:
            print(f"acquired: {lock.token}")

    asyncio.run(main())

    out = capsys.readouterr().out
    assert out.startswith("acquired: ") and len(out.strip()) == len("acquired: ") + 32


def test_semaphore(server, capsys):
    from dflockd import SyncDistributedSemaphore

    with SyncDistributedSemaphore("pool", limit=3, servers=server.servers) as sem:
        print(f"slot: {sem.token}")

    assert capsys.readouterr().out.startswith("slot: ")


def test_authentication_and_tls():
    from dflockd import SyncDistributedLock

    with TestServer(
        auth_token="shared-secret",
        tls_cert_file=TLS_DIR / "server.pem",
        tls_key_file=TLS_DIR / "server.key",
    ) as srv:
        # The example as written passes an ssl.SSLContext: refused, saying what to pass.
        with pytest.raises(TypeError, match="tls_ca_file=.*tls_system_roots=True"):
            with SyncDistributedLock(
                "my-key",
                auth_token="shared-secret",
                ssl_context=ssl.create_default_context(),
                servers=srv.servers,
            ) as lock:
                ...
        # The one change TLS needs: the CA to trust instead of an SSLContext.
        with SyncDistributedLock(
            "my-key",
            auth_token="shared-secret",
            tls_ca_file=TLS_DIR / "ca.pem",
            servers=srv.servers,
        ) as lock:
            assert lock.is_held()


def test_multi_server_sharding():
    from dflockd import SyncDistributedLock, stable_hash_shard

    with TestServer() as a, TestServer() as b, TestServer() as c:
        servers = [a.servers[0], b.servers[0], c.servers[0]]
        with SyncDistributedLock(
            "my-key",
            servers=servers,
        ) as lock:
            # the same key always routes to the same server
            held_on = [i for i, s in enumerate((a, b, c)) if lock.client.stats(i)["locks"]]
        assert held_on == [stable_hash_shard("my-key", 3)] == [2]  # docs/protocol.md vector


def test_fencing_tokens(server):
    from dflockd import SyncDistributedLock, fence_from_token

    with SyncDistributedLock("row:42", servers=server.servers) as lock:
        fence = fence_from_token(lock.token)  # int — pass to your DB / blob store
    assert isinstance(fence, int) and fence > 0
    with SyncDistributedLock("row:42", servers=server.servers) as lock:
        assert fence_from_token(lock.token) > fence
