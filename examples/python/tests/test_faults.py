"""Leases under faults, with default client settings: a lease longer than the
server's idle timeout, a paused server, dropped connections, TLS and auth, a
cluster follower, logging from library threads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import HERE, TLS_DIR, eventually, load_reference

from dflockd import (
    AuthError,
    Client,
    LeaseLostError,
    NotLeaderError,
    SyncDistributedLock,
    TLSError,
    log_to_logging,
    set_log,
)
from dflockd.testing import TestServer


def test_long_lease_across_the_idle_timeout(key):
    """A 30 s lease held for 16 s on a server whose idle timeout is 12 s. The
    library renews at min(lease x 0.5, keepalive 10 s) and keeps it; the reference
    client (when installed) renews at 15 s and loses it at 12 s, side by side."""
    ref = load_reference()
    with TestServer(read_timeout_s=12) as srv:
        ours = SyncDistributedLock(key, servers=srv.servers, lease_ttl_s=30)
        assert ours.acquire()
        theirs = None
        if ref is not None:
            theirs = ref.SyncDistributedLock(key + "-ref", servers=srv.servers, lease_ttl_s=30)
            assert theirs.acquire()
        time.sleep(16)
        assert ours.is_held() and not ours.is_lost()
        locks = {entry["key"] for entry in ours.client.stats()["locks"]}
        assert key in locks, locks  # the server still has it
        assert ours.client.metrics()["renewals"] >= 1
        if theirs is not None:
            assert key + "-ref" not in locks  # dropped with its idle connection
            assert theirs.token is None  # its renewal at 15 s failed
            theirs.close()
        assert ours.release() is True


def test_short_idle_timeout_needs_a_shorter_keepalive(key):
    """A server with a 2 s idle timeout and a 10 s lease: the library's keepalive
    (10 s by default, for the 23 s default server) must be set below it; then the
    lease is kept. With the default keepalive the loss is reported, not silent."""
    with TestServer(read_timeout_s=2) as srv:
        kept = SyncDistributedLock(key, servers=srv.servers, lease_ttl_s=10, keepalive_s=1)
        dropped = SyncDistributedLock(key + "-d", servers=srv.servers, lease_ttl_s=10)
        assert kept.acquire() and dropped.acquire()
        time.sleep(6)
        assert kept.is_held() and kept.release()
        assert not dropped.is_held() and dropped.is_lost() and dropped.release() is False


def test_server_read_timeout_keeps_a_long_lease(key):
    """A server with a 2 s idle timeout and a 30 s lease: told the server's value
    (server_read_timeout_s), the library renews at least every half of it, so the
    lease stays held, listed by the server and untakeable across 2.5 idle
    timeouts, with the default keepalive. Under 1 s is refused."""
    with TestServer(read_timeout_s=2) as srv:
        with pytest.raises(ValueError):
            Client(srv.servers, server_read_timeout_s=0.5)
        lock = SyncDistributedLock(key, servers=srv.servers, lease_ttl_s=30, server_read_timeout_s=2)
        assert lock.acquire()
        assert not lock.wait_lost(5), lock.lost_error()
        assert lock.is_held()
        assert key in {entry["key"] for entry in lock.client.stats()["locks"]}
        rival = SyncDistributedLock(key, servers=srv.servers, acquire_timeout_s=0)
        assert rival.try_acquire() is False
        assert lock.release() is True
        rival.close()
        lock.close()


def test_lost_lease_callback_under_a_paused_server(key):
    with TestServer() as srv:
        calls: list[tuple[str, BaseException, bool]] = []
        fired = threading.Event()

        def lost(lock, error):
            calls.append((threading.current_thread().name, error, lock.is_held()))
            fired.set()

        lock = SyncDistributedLock(key, servers=srv.servers, lease_ttl_s=3, on_lost=lost)
        assert lock.acquire()
        assert not lock.wait_lost(0.1)
        srv.pause()
        try:
            start = time.monotonic()
            assert fired.wait(20), "lost callback not called within 20 s of a paused server"
            took = time.monotonic() - start
        finally:
            srv.resume()
        assert len(calls) == 1
        thread_name, error, held = calls[0]
        assert thread_name.startswith("dflockd-lost[")  # ours, not a library thread
        assert isinstance(error, Exception) and not held
        assert took < 12, took  # about the lease (3 s) + one I/O timeout
        assert lock.is_lost() and not lock.is_held() and lock.wait_lost(0)
        assert lock.token is None
        assert lock.release() is False  # as the reference: False, logged
        assert lock.client.metrics()["leases_lost"] >= 1
        # and the object works again once the server answers
        assert lock.acquire() and not lock.is_lost()
        lock.release()


def test_lost_after_dropped_connections(key):
    with TestServer() as srv:
        fired = threading.Event()
        errors: list[BaseException] = []
        lock = SyncDistributedLock(key, servers=srv.servers, lease_ttl_s=4)
        lock.on_lost(lambda _l, e: (errors.append(e), fired.set()))
        assert lock.acquire()
        srv.drop_connections()  # the server releases on disconnect
        assert fired.wait(15)
        assert lock.is_lost() and isinstance(lock.lost_error(), Exception)


def test_dropped_connection_without_auto_release_keeps_the_lease(key):
    """A server run with auto-release on disconnect off keeps a lease when it drops
    the connection holding it. A client told so (auto_release_on_disconnect=False)
    confirms the lease with a renewal on a fresh connection instead of reporting it
    lost, and a rival still cannot take the key. With the defaults on both sides
    the same drop loses it."""
    with TestServer(auto_release=False) as srv:
        lock = SyncDistributedLock(key, servers=srv.servers, auto_release_on_disconnect=False)
        assert lock.acquire()
        before = lock.client.metrics()
        srv.drop_connections()

        # is_held() right after the drop could still be the old connection's
        # answer: wait for the reconnect and the renewal that confirm it.
        def confirmed():
            m = lock.client.metrics()
            return m["reconnects"] > before["reconnects"] and m["renewals"] > before["renewals"] and lock.is_held()

        assert eventually(confirmed, 5), (lock.is_held(), lock.is_lost(), lock.client.metrics())
        assert not lock.is_lost() and not lock.wait_lost(0)
        rival = SyncDistributedLock(key, servers=srv.servers, acquire_timeout_s=0)
        assert rival.client is not lock.client
        assert rival.try_acquire() is False
        assert lock.is_held() and lock.release() is True
        rival.close()
        lock.close()

    with TestServer() as srv:
        lock = SyncDistributedLock(key, servers=srv.servers)
        assert lock.acquire()
        srv.drop_connections()
        assert lock.wait_lost(5) and lock.is_lost() and not lock.is_held()
        rival = SyncDistributedLock(key, servers=srv.servers, acquire_timeout_s=0)
        assert rival.try_acquire() is True
        rival.release()
        rival.close()
        lock.close()


def test_on_lost_does_not_fire_on_release_or_close(server, key):
    fired = []
    lock = SyncDistributedLock(key, servers=server.servers, on_lost=lambda *a: fired.append(a))
    assert lock.acquire()
    assert lock.release()
    assert lock.acquire()
    lock.close()
    time.sleep(0.5)
    assert fired == []
    watchers = [t for t in threading.enumerate() if t.name.startswith("dflockd-lost[")]
    assert eventually(lambda: not any(t.is_alive() for t in watchers), 3)


def test_tls_and_auth(key):
    with TestServer(
        auth_token="s3cret", tls_cert_file=TLS_DIR / "server.pem", tls_key_file=TLS_DIR / "server.key"
    ) as srv:
        ca = TLS_DIR / "ca.pem"
        with SyncDistributedLock(key, servers=srv.servers, auth_token="s3cret", tls_ca_file=ca) as lock:
            assert lock.is_held()
        with SyncDistributedLock(key, servers=srv.servers, auth_token="s3cret", tls_ca_pem=ca.read_bytes()):
            pass
        cases = [
            (AuthError, dict(auth_token="wrong", tls_ca_file=ca)),
            (AuthError, dict(tls_ca_file=ca)),
            (TLSError, dict(auth_token="s3cret", tls_ca_file=TLS_DIR / "other-ca.pem")),
            (TLSError, dict(auth_token="s3cret", tls_ca_file=ca, tls_server_name="other.example")),
        ]
        for cls, kw in cases:
            with pytest.raises(cls):
                SyncDistributedLock(key, servers=srv.servers, connect_timeout_s=3, **kw).acquire()
        # AuthError is also what the reference raises for a refused auth
        with pytest.raises(PermissionError):
            SyncDistributedLock(key, servers=srv.servers, auth_token="wrong", tls_ca_file=ca).acquire()


def test_not_leader(server, key):
    server.set_follower(True, "10.9.9.9:6388")
    with pytest.raises(NotLeaderError) as e:
        SyncDistributedLock(key, servers=server.servers).acquire()
    assert e.value.leader == "10.9.9.9:6388"
    assert e.value.status_name == "DFLOCKD_STATUS_NOT_LEADER"


def test_hung_server_is_a_bounded_deadline(server, key):
    from dflockd import DeadlineError

    server.pause()
    try:
        start = time.monotonic()
        with pytest.raises(DeadlineError) as e:
            SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0).acquire()
        assert isinstance(e.value, TimeoutError)
        assert time.monotonic() - start < 20  # connect + the 5 s I/O timeout, default settings
    finally:
        server.resume()


def test_log_to_logging_reports_a_lost_lease(key, caplog):
    log_to_logging(level=logging.WARNING)
    try:
        with TestServer() as srv, caplog.at_level(logging.WARNING, logger="dflockd"):
            lock = SyncDistributedLock(key, servers=srv.servers, lease_ttl_s=3)
            assert lock.acquire()
            srv.drop_connections()
            assert lock.wait_lost(15)
            assert eventually(lambda: any(r.levelno == logging.ERROR for r in caplog.records), 5)
            assert not any(lock.token and lock.token in r.getMessage() for r in caplog.records)
    finally:
        set_log(None)


def test_log_callback_from_library_threads_does_not_deadlock():
    """The callback runs on library threads (ctypes takes the GIL for it) while
    Python threads block in the library, replace the callback and exit. In a child
    process, so a deadlock is a timeout here, not a hung suite."""
    script = textwrap.dedent(
        f"""
        import sys, threading, time
        sys.path.insert(0, {str(HERE.parent)!r})
        import dflockd
        from dflockd import SyncDistributedLock, set_log, LOG_DEBUG
        from dflockd.testing import TestServer
        seen = []
        def cb(level, msg):
            seen.append(threading.current_thread().name)
        set_log(cb, LOG_DEBUG)
        srv = TestServer()
        stop = time.monotonic() + 4
        def work(i):
            lock = SyncDistributedLock(f"log-{{i}}", servers=srv.servers, lease_ttl_s=2)
            while time.monotonic() < stop:
                assert lock.acquire()
                time.sleep(0.3)  # renewals on library threads (every 1 s)
                lock.release()
            lock.close()
        ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in ts: t.start()
        while time.monotonic() < stop:
            set_log(cb, LOG_DEBUG)  # replaces while library threads log
            time.sleep(0.01)
        for t in ts: t.join()
        lock = SyncDistributedLock("log-held", servers=srv.servers, lease_ttl_s=2)
        assert lock.acquire()
        time.sleep(1.5)
        foreign = sum(1 for n in seen if n.startswith("Dummy"))
        print("messages", len(seen), "from library threads", foreign, flush=True)
        # exit with a lease held, the server running and the callback installed
        """
    )
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "messages" and int(words[1]) > 20
    assert int(words[5]) > 0, "no message came from a library thread"


def test_io_timeout_setting_bounds_a_hung_server(server, key):
    """io_timeout_s is passed to the library (here shorter than the 5 s default
    on purpose: it is the setting under test)."""
    from dflockd import DeadlineError

    lock = SyncDistributedLock(key, servers=server.servers, acquire_timeout_s=0, io_timeout_s=1)
    assert lock.acquire()  # connected and pooled
    lock.release()
    server.pause()
    try:
        start = time.monotonic()
        with pytest.raises(DeadlineError):
            lock.acquire()
        assert time.monotonic() - start < 3
        assert lock.client.metrics()["deadline_hits"] >= 1
    finally:
        server.resume()
