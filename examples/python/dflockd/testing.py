"""The embedded dflockd test server (C `dflockd_testserver_*`) for your own tests:
an in-process server on loopback with the 2.x behaviour and fault controls.

    with TestServer(read_timeout_s=2) as srv:
        with SyncDistributedLock("k", servers=srv.servers) as lock:
            srv.pause()   # stop answering; resume() to answer again

A test double with production-grade fidelity, not a production server.
"""

from __future__ import annotations

import ctypes
import os

from . import _native as n


class TestServer:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 0,
        default_lease_s: int | None = None,
        read_timeout_s: float | None = None,
        lease_sweep_s: float | None = None,
        auth_token: str | None = None,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
        tls_cert_pem: bytes | None = None,
        tls_key_pem: bytes | None = None,
        max_locks: int | None = None,
        max_waiters: int | None = None,
        max_connections: int | None = None,
        auto_release: bool | None = None,
        follower: bool = False,
        leader: str | None = None,
        server_line: str | None = None,
    ) -> None:
        lib = n.lib
        opts = ctypes.c_void_p()
        n.check(lib.dflockd_testserver_options_new(ctypes.byref(opts)))
        try:
            if host is not None:
                h = n.encode(host, "host")
                n.call(lib.dflockd_testserver_options_set_host, opts, h, len(h))
            if server_line is not None:
                s = n.encode(server_line, "server_line")
                n.call(lib.dflockd_testserver_options_set_server_line, opts, s, len(s))
            if port:
                n.call(lib.dflockd_testserver_options_set_port, opts, port)
            if default_lease_s is not None:
                n.call(lib.dflockd_testserver_options_set_default_lease, opts, default_lease_s)
            if read_timeout_s is not None:
                n.call(lib.dflockd_testserver_options_set_read_timeout_ms, opts, int(read_timeout_s * 1000))
            if lease_sweep_s is not None:
                n.call(lib.dflockd_testserver_options_set_lease_sweep_ms, opts, int(lease_sweep_s * 1000))
            if auth_token is not None:
                t = n.encode(auth_token, "auth_token")
                n.call(lib.dflockd_testserver_options_set_auth_token, opts, t, len(t))
            if tls_cert_file is not None or tls_key_file is not None:
                c, k = os.fsencode(tls_cert_file or ""), os.fsencode(tls_key_file or "")
                n.call(lib.dflockd_testserver_options_set_tls_files, opts, c, len(c), k, len(k))
            if tls_cert_pem is not None or tls_key_pem is not None:
                c, k = bytes(tls_cert_pem or b""), bytes(tls_key_pem or b"")
                n.call(lib.dflockd_testserver_options_set_tls_pem, opts, c, len(c), k, len(k))
            if max_locks is not None:
                n.call(lib.dflockd_testserver_options_set_max_locks, opts, max_locks)
            if max_waiters is not None:
                n.call(lib.dflockd_testserver_options_set_max_waiters, opts, max_waiters)
            if max_connections is not None:
                n.call(lib.dflockd_testserver_options_set_max_connections, opts, max_connections)
            if auto_release is not None:
                n.call(lib.dflockd_testserver_options_set_auto_release, opts, bool(auto_release))
            if follower:
                ld = n.encode(leader, "leader") if leader is not None else None
                n.call(lib.dflockd_testserver_options_set_follower, opts, True, ld, len(ld or b""))
            ptr = ctypes.c_void_p()
            n.call(lib.dflockd_testserver_start, opts, ctypes.byref(ptr))
        finally:
            lib.dflockd_testserver_options_free(opts)
        self._h = n.Handle(ptr, lib.dflockd_testserver_stop, "test server")
        with self._h.use() as p:
            self.addr: str = n.out_string(lib.dflockd_testserver_addr, p)
            self.port: int = lib.dflockd_testserver_port(p)
        self.host = self.addr.rpartition(":")[0].strip("[]")

    @property
    def servers(self) -> list[tuple[str, int]]:
        """`servers=` for the locks: [(host, port)]."""
        return [(self.host, self.port)]

    def _do(self, fn, *args) -> None:
        with self._h.use() as p:
            n.check(fn(p, *args))

    def _call(self, fn, *args) -> None:
        with self._h.use() as p:
            n.call(fn, p, *args)

    def pause(self) -> None:
        """Stop answering (requests are read, no replies) until resume()."""
        self._do(n.lib.dflockd_testserver_pause)

    def resume(self) -> None:
        self._do(n.lib.dflockd_testserver_resume)

    def drop_connections(self) -> None:
        """Close every client connection now (their leases are released)."""
        self._do(n.lib.dflockd_testserver_drop_connections)

    def refuse_connections(self, refuse: bool = True) -> None:
        self._do(n.lib.dflockd_testserver_refuse_connections, bool(refuse))

    def set_reply_delay(self, seconds: float) -> None:
        self._do(n.lib.dflockd_testserver_set_reply_delay_ms, int(seconds * 1000))

    def set_hostile_reply(self, raw: bytes | None) -> None:
        """Replace every reply by `raw` (e.g. b"ok ZZZ 5\\n"); None restores them."""
        self._call(n.lib.dflockd_testserver_set_hostile_reply, raw, len(raw or b""))

    def set_follower(self, follower: bool, leader: str | None = None) -> None:
        ld = n.encode(leader, "leader") if leader is not None else None
        self._call(n.lib.dflockd_testserver_set_follower, bool(follower), ld, len(ld or b""))

    def restart(self) -> None:
        """Restart on the same port: connections and state dropped, fences keep rising."""
        self._call(n.lib.dflockd_testserver_restart)

    def drain(self) -> None:
        """Begin a graceful shutdown, as on SIGTERM."""
        self._do(n.lib.dflockd_testserver_drain)

    def stop(self) -> None:
        self._h.close()

    close = stop

    def __enter__(self) -> TestServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TestServer({self.addr})"


class TestCluster:
    """The embedded raft cluster double (C `dflockd_testcluster_*`): `nodes` members
    on loopback sharing one lock table, one of them leading, the others answering
    `error_not_leader` with its address; a leader killed, paused or drained is
    replaced after the election delay. For tests of `cluster=True` clients.

        with TestCluster(3) as tc:
            leader = tc.await_leader()
            client = Client(tc.servers, cluster=True)
    """

    __test__ = False  # not a pytest test class

    def __init__(self, nodes: int = 3, *, election_delay_s: float | None = None,
                 orphan_ttl_s: float | None = None) -> None:
        lib = n.lib
        opts = ctypes.c_void_p()
        n.check(lib.dflockd_testserver_options_new(ctypes.byref(opts)))
        try:
            if election_delay_s is not None:
                n.call(lib.dflockd_testserver_options_set_election_delay_ms, opts, int(election_delay_s * 1000))
            if orphan_ttl_s is not None:
                n.call(lib.dflockd_testserver_options_set_orphan_ttl_ms, opts, int(orphan_ttl_s * 1000))
            ptr = ctypes.c_void_p()
            n.call(lib.dflockd_testcluster_start, nodes, opts, ctypes.byref(ptr))
        finally:
            lib.dflockd_testserver_options_free(opts)
        self._h = n.Handle(ptr, lib.dflockd_testcluster_stop, "test cluster")
        with self._h.use() as p:
            self.addrs: list[str] = n.out_string(lib.dflockd_testcluster_addrs, p).split(",")

    @property
    def servers(self) -> list[tuple[str, int]]:
        """`servers=` for the client and the locks: [(host, port)], member order."""
        out = []
        for a in self.addrs:
            host, _, port = a.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out

    def leader(self) -> int | None:
        """The member leading now, or None."""
        with self._h.use() as p:
            i = n.lib.dflockd_testcluster_leader(p)
        return None if i < 0 else i

    def await_leader(self, timeout_s: float = 5.0) -> int | None:
        """Wait up to `timeout_s` for a leader that is up: its index, or None."""
        with self._h.use() as p:
            i = n.lib.dflockd_testcluster_await_leader(p, int(timeout_s * 1000))
        return None if i < 0 else i

    def _member(self, fn, i: int) -> None:
        if i < 0:
            raise ValueError(f"member index {i} is negative")
        with self._h.use() as p:
            n.call(fn, p, i)

    def kill(self, i: int) -> None:
        """SIGKILL member i: its port refuses connections, its connections close."""
        self._member(n.lib.dflockd_testcluster_kill, i)

    def pause(self, i: int) -> None:
        """SIGSTOP member i: it answers nothing (a paused leader is replaced)."""
        self._member(n.lib.dflockd_testcluster_pause, i)

    def resume(self, i: int) -> None:
        self._member(n.lib.dflockd_testcluster_resume, i)

    def drain(self, i: int) -> None:
        """SIGTERM member i: error_draining, then gone."""
        self._member(n.lib.dflockd_testcluster_drain, i)

    def restart(self, i: int) -> None:
        """Start member i, which must be down, again on its port as a follower."""
        self._member(n.lib.dflockd_testcluster_restart, i)

    def stop(self) -> None:
        self._h.close()

    close = stop

    def __enter__(self) -> TestCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TestCluster({','.join(self.addrs)})"
