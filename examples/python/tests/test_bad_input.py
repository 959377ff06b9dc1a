"""Bad input raises what the reference client raises (TypeError for a wrong type,
ValueError for a bad value), checked against the reference itself when installed."""

from __future__ import annotations

import pytest
from conftest import load_reference

import dflockd

SERVERS = [("127.0.0.1", 6388)]  # never contacted: construction does no I/O

# (what, expected class, call(module))
CASES = [
    ("non-str key (int)", TypeError, lambda m: m.SyncDistributedLock(123, servers=SERVERS)),
    ("non-str key (bytes)", TypeError, lambda m: m.SyncDistributedLock(b"k", servers=SERVERS)),
    ("key None", TypeError, lambda m: m.SyncDistributedLock(None, servers=SERVERS)),
    ("key with a space", ValueError, lambda m: m.SyncDistributedLock("a b", servers=SERVERS)),
    ("key with a tab", ValueError, lambda m: m.SyncDistributedLock("a\tb", servers=SERVERS)),
    ("key with a newline", ValueError, lambda m: m.SyncDistributedLock("a\nb", servers=SERVERS)),
    ("empty key", ValueError, lambda m: m.SyncDistributedLock("", servers=SERVERS)),
    ("key of 257 bytes", ValueError, lambda m: m.SyncDistributedLock("k" * 257, servers=SERVERS)),
    ("limit 0", ValueError, lambda m: m.SyncDistributedSemaphore("k", limit=0, servers=SERVERS)),
    ("limit missing", ValueError, lambda m: m.SyncDistributedSemaphore("k", servers=SERVERS)),
    ("limit -1", ValueError, lambda m: m.SyncDistributedSemaphore("k", limit=-1, servers=SERVERS)),
    ("limit str", TypeError, lambda m: m.SyncDistributedSemaphore("k", limit="2", servers=SERVERS)),
    ("limit bool", TypeError, lambda m: m.SyncDistributedSemaphore("k", limit=True, servers=SERVERS)),
    ("semaphore key with a space", ValueError, lambda m: m.SyncDistributedSemaphore("a b", limit=2, servers=SERVERS)),
    ("negative timeout", ValueError, lambda m: m.SyncDistributedLock("k", acquire_timeout_s=-1, servers=SERVERS)),
    ("float timeout", TypeError, lambda m: m.SyncDistributedLock("k", acquire_timeout_s=1.5, servers=SERVERS)),
    ("lease 0", ValueError, lambda m: m.SyncDistributedLock("k", lease_ttl_s=0, servers=SERVERS)),
    ("lease too large", ValueError, lambda m: m.SyncDistributedLock("k", lease_ttl_s=10**10, servers=SERVERS)),
    ("renew_ratio 1", ValueError, lambda m: m.SyncDistributedLock("k", renew_ratio=1.0, servers=SERVERS)),
    ("connect timeout 0", ValueError, lambda m: m.SyncDistributedLock("k", connect_timeout_s=0, servers=SERVERS)),
    ("connect timeout str", TypeError, lambda m: m.SyncDistributedLock("k", connect_timeout_s="1", servers=SERVERS)),
    ("no servers", ValueError, lambda m: m.SyncDistributedLock("k", servers=[])),
    ("port 0", ValueError, lambda m: m.SyncDistributedLock("k", servers=[("h", 0)])),
    ("port str", TypeError, lambda m: m.SyncDistributedLock("k", servers=[("h", "1")])),
    ("server not a tuple", TypeError, lambda m: m.SyncDistributedLock("k", servers=[["h", 1]])),
    ("host with a space", ValueError, lambda m: m.SyncDistributedLock("k", servers=[("a b", 1)])),
    ("fence of a short token", ValueError, lambda m: m.fence_from_token("abc")),
    ("fence of a non-hex token", ValueError, lambda m: m.fence_from_token("g" * 32)),
    ("shard over 0 servers", ValueError, lambda m: m.stable_hash_shard("k", 0)),
]


@pytest.mark.parametrize("what,cls,call", CASES, ids=[c[0] for c in CASES])
def test_bad_input(what, cls, call):
    with pytest.raises(cls) as ours:
        call(dflockd)
    assert type(ours.value) is cls or type(ours.value).__mro__[1] is cls  # exactly, or a direct subclass
    ref = load_reference()
    if ref is not None:
        with pytest.raises(BaseException) as theirs:
            call(ref)
        assert isinstance(theirs.value, cls), f"reference raised {theirs.value!r}"


def test_value_errors_from_the_library_too(server):
    """A check the Python layer would miss still arrives as ValueError (the
    library's INVALID_ARGUMENT), with the library's message."""
    lock = dflockd.SyncDistributedLock("k", servers=server.servers)
    with pytest.raises(ValueError):
        dflockd.client.Client(server.servers)._new_lease("bad key", None)
    lock.close()


def test_ssl_context_is_refused_with_what_to_pass_instead():
    import ssl

    with pytest.raises(TypeError) as e:
        dflockd.SyncDistributedLock("k", servers=SERVERS, ssl_context=ssl.create_default_context())
    msg = str(e.value)
    assert "rustls" in msg and "tls_ca_file" in msg and "tls_ca_pem" in msg and "tls_system_roots" in msg
