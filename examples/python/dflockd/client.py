"""Clients, low-level connections (one function per command), fencing, logging.

A :class:`Client` is a configured set of servers with a pool of authenticated
connections per server; the high-level locks share clients of equal settings,
so acquiring a lock does not open a new TCP connection each time.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import math
import os
import ssl
import threading
import weakref
from typing import Any, Callable, NamedTuple

from . import _native as n
from . import _validate as v
from .errors import DflockdTimeoutError
from .sharding import DEFAULT_SERVERS, ShardingStrategy, is_crc32, stable_hash_shard

_SSL_CONTEXT_HELP = (
    "ssl_context: libdflockd verifies TLS itself (rustls) and cannot use an ssl.SSLContext; "
    "pass tls_ca_file='ca.pem' (a PEM CA file), tls_ca_pem=<PEM bytes or str>, or "
    "tls_system_roots=True (the operating system's roots), plus tls_server_name=... if the "
    "certificate names another host"
)


def fence_from_token(token: str) -> int:
    """The 64-bit monotonic fence prefix of a token (its first 16 hex characters,
    big-endian). ValueError unless `token` is 32 hexadecimal characters."""
    raw = n.encode(token, "token")
    out = ctypes.c_uint64()
    n.call(n.lib.dflockd_fence_from_token, raw, len(raw), ctypes.byref(out))
    return out.value


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


# Shard callbacks live as long as the process: the library may call them for as
# long as any handle of a client made with them exists.
_SHARD_CALLBACKS: dict[Any, Any] = {}
_SHARD_LOCK = threading.Lock()


def _shard_callback(strategy: ShardingStrategy):
    with _SHARD_LOCK:
        cb = _SHARD_CALLBACKS.get(strategy)
        if cb is None:

            def route(_userdata, key, key_len, n_servers):
                # Runs on the thread creating a handle (ours, GIL re-taken by ctypes).
                try:
                    k = ctypes.string_at(key, key_len).decode("utf-8")
                    return v.shard_index(strategy(k, n_servers), n_servers)
                except BaseException:  # noqa: BLE001 - out of range = INVALID_ARGUMENT
                    return n_servers

            cb = _SHARD_CALLBACKS[strategy] = n.SHARD_FN(route)
        return cb


class Client:
    """A configured client (C `dflockd_client`): servers, auth, TLS, timings, sharding.

    Thread-safe. Close it with :meth:`close` (or ``with``); locks and connections
    made from it keep working after it is closed.

    `auto_release_on_disconnect` (default True, as on the server): whether the
    servers release a lease when the connection holding it closes (dflockd's
    ``--auto-release-on-disconnect``). True: a lease whose connection the server
    closed is lost at once. False, for servers run with auto-release off: such a
    lease is not reported held until a renewal on a fresh connection confirms it,
    else it is lost. Match the servers' setting.

    `server_read_timeout_s` (default 23, at least 1): the servers' idle timeout
    (dflockd's ``--read-timeout``): a server closes a connection on which no
    complete request arrives for this long, releasing its leases. Set it when the
    servers run with another value: the keepalive in effect is at most half of it,
    so held leases are renewed in time whatever their TTL.

    `cluster=True`: the servers are the members of one raft cluster, not shards
    (dflockd_config_set_cluster). Every key goes to the leader, which the client
    finds and follows (error_not_leader hints; the next member when one refuses,
    breaks, stays silent or drains; a short pause during an election) within each
    call's usual bound. Held leases survive a failover: `is_doubted()` is true (and
    `is_held()` false) from the moment the old leader's connection goes until a
    renewal on the new leader confirms the lease, or it is lost. Cannot be combined
    with a custom `sharding_strategy`.

    `max_leases_per_connection` (default 1024, 1..65536): held leases share
    connections, their renewals pipelined, so thousands of leases need a few
    sockets; 1 gives each lease its own (as dflockd-client does). When a shared
    connection drops, every lease on it is reported lost.
    """

    def __init__(
        self,
        servers: Any = DEFAULT_SERVERS,
        *,
        auth_token: str | None = None,
        ssl_context: Any = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
        tls_ca_pem: str | bytes | None = None,
        tls_system_roots: bool = False,
        tls_server_name: str | None = None,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float | None = None,
        renew_ratio: float = 0.5,
        keepalive_s: float | None = None,
        server_read_timeout_s: float | None = None,
        auto_release_on_disconnect: bool = True,
        default_lease_ttl_s: int | None = None,
        sharding_strategy: ShardingStrategy = stable_hash_shard,
        cluster: bool = False,
        max_leases_per_connection: int | None = None,
    ) -> None:
        if ssl_context is not None:
            raise TypeError(_SSL_CONTEXT_HELP)
        self.servers = v.servers(servers)
        auth_token = v.auth_token(auth_token)
        v.positive_duration(connect_timeout_s, "connect_timeout_s")
        if io_timeout_s is not None:
            v.positive_duration(io_timeout_s, "io_timeout_s")
        if keepalive_s is not None:
            v.positive_duration(keepalive_s, "keepalive_s")
        if server_read_timeout_s is not None:
            v.positive_duration(server_read_timeout_s, "server_read_timeout_s")
        v.boolean(auto_release_on_disconnect, "auto_release_on_disconnect")
        v.boolean(cluster, "cluster")
        self.cluster = cluster
        v.renew_ratio(renew_ratio)
        v.lease_ttl_s(default_lease_ttl_s)
        if not callable(sharding_strategy):
            raise TypeError("sharding_strategy must be callable")
        self.sharding_strategy = sharding_strategy

        cfg = ctypes.c_void_p()
        n.check(n.lib.dflockd_config_new(ctypes.byref(cfg)))
        try:
            lib = n.lib
            for host, port in self.servers:
                h = host.encode()
                n.call(lib.dflockd_config_add_server, cfg, h, len(h), port)
            if auth_token is not None:
                t = auth_token.encode()
                n.call(lib.dflockd_config_set_auth_token, cfg, t, len(t))
            if tls_ca_file is not None:
                p = os.fsencode(tls_ca_file)
                n.call(lib.dflockd_config_set_tls_ca_file, cfg, p, len(p))
            if tls_ca_pem is not None:
                pem = tls_ca_pem.encode() if isinstance(tls_ca_pem, str) else bytes(tls_ca_pem)
                n.call(lib.dflockd_config_set_tls_ca_pem, cfg, pem, len(pem))
            if tls_system_roots:
                n.call(lib.dflockd_config_set_tls_system_roots, cfg, True)
            if tls_server_name is not None:
                s = n.encode(tls_server_name, "tls_server_name")
                n.call(lib.dflockd_config_set_tls_server_name, cfg, s, len(s))
            n.call(lib.dflockd_config_set_connect_timeout_ms, cfg, _ms(connect_timeout_s))
            if io_timeout_s is not None:
                n.call(lib.dflockd_config_set_io_timeout_ms, cfg, _ms(io_timeout_s))
            if keepalive_s is not None:
                n.call(lib.dflockd_config_set_keepalive_ms, cfg, _ms(keepalive_s))
            if server_read_timeout_s is not None:
                n.call(lib.dflockd_config_set_server_read_timeout_ms, cfg, _ms(server_read_timeout_s))
            n.call(lib.dflockd_config_set_auto_release_on_disconnect, cfg, auto_release_on_disconnect)
            n.call(lib.dflockd_config_set_renew_ratio, cfg, float(renew_ratio))
            if default_lease_ttl_s is not None:
                n.call(lib.dflockd_config_set_default_lease, cfg, default_lease_ttl_s)
            if cluster:
                n.call(lib.dflockd_config_set_cluster, cfg, True)
            if max_leases_per_connection is not None:
                if isinstance(max_leases_per_connection, bool) or not isinstance(max_leases_per_connection, int):
                    raise TypeError("max_leases_per_connection must be an int")
                m = max_leases_per_connection if 0 <= max_leases_per_connection < 2**32 else 0
                n.call(lib.dflockd_config_set_max_leases_per_connection, cfg, m)
            if not is_crc32(sharding_strategy):
                n.call(lib.dflockd_config_set_shard, cfg, _shard_callback(sharding_strategy), None)
            ptr = ctypes.c_void_p()
            n.call(lib.dflockd_client_new, cfg, ctypes.byref(ptr))
        finally:
            n.lib.dflockd_config_free(cfg)
        self._h = n.Handle(ptr, n.lib.dflockd_client_free, "client")

    # --- handles ----------------------------------------------------------------------

    def lock(self, key: str, **kwargs: Any):
        """A :class:`SyncDistributedLock` on this client (keywords as its own)."""
        from ._sync import DistributedLock

        return DistributedLock(key, client=self, **kwargs)

    def semaphore(self, key: str, limit: int, **kwargs: Any):
        """A :class:`SyncDistributedSemaphore` on this client."""
        from ._sync import DistributedSemaphore

        return DistributedSemaphore(key, limit=limit, client=self, **kwargs)

    def _new_lease(self, key: str, limit: int | None) -> n.Handle:
        raw = n.encode(key, "key")
        ptr = ctypes.c_void_p()
        with self._h.use() as c:
            if limit is None:
                n.call(n.lib.dflockd_client_lock, c, raw, len(raw), ctypes.byref(ptr))
            else:
                n.call(n.lib.dflockd_client_semaphore, c, raw, len(raw), limit, ctypes.byref(ptr))
        return n.Handle(ptr, n.lib.dflockd_lease_free, f"lease {key!r}")

    def connect(self, server: int = 0) -> SyncConn:
        """A new authenticated low-level connection to server `server` (an index
        into `servers`). Leases taken on it are NOT renewed by the library."""
        ptr = ctypes.c_void_p()
        with self._h.use() as c:
            n.call(n.lib.dflockd_client_connect, c, server, ctypes.byref(ptr))
        return SyncConn(ptr, self)

    # --- information --------------------------------------------------------------------

    def server_for(self, key: str) -> int:
        """The index of the server that owns `key`."""
        raw = n.encode(key, "key")
        out = ctypes.c_size_t()
        with self._h.use() as c:
            n.call(n.lib.dflockd_client_server_for, c, raw, len(raw), ctypes.byref(out))
        return out.value

    def stats(self, server: int = 0) -> dict[str, Any]:
        """Server `server`'s `stats` reply, decoded."""
        with self._h.use() as c:
            return json.loads(n.out_string(n.lib.dflockd_client_stats, c, server))

    async def astats(self, server: int = 0) -> dict[str, Any]:
        """`stats` for asyncio: the request runs on the library's event engine
        (dflockd_client_stats_start) and this awaits its event on the running
        loop's completion queue, without a thread."""
        from ._async import client_stats

        if server < 0:
            raise ValueError(f"server index {server} is negative")
        return await client_stats(self._h, server)

    def barrier(self) -> None:
        """A linearizable read barrier (dflockd_client_barrier): returns once
        everything the servers acknowledged before it is applied. With
        `cluster=True` it goes to the leader, following redirects and waiting out
        an election; otherwise to every server in turn. Bounded by connect timeout
        + I/O timeout (per server when sharding); the GIL is released meanwhile."""
        with self._h.use() as c:
            n.call(n.lib.dflockd_client_barrier, c)

    def metrics(self) -> dict[str, int]:
        """The client's counters (acquires, renewals, renewal_retries, leases_lost,
        reconnects, deadline_hits, connections_opened, open_connections, ...,
        failovers, leases_confirmed)."""
        m = n.Metrics()
        with self._h.use() as c:
            n.call(n.lib.dflockd_client_metrics, c, ctypes.byref(m), ctypes.sizeof(m))
        return {name: getattr(m, name) for name in n.METRIC_FIELDS}

    def close(self) -> None:
        """Free the client (idle pooled connections close; its leases stay usable)."""
        self._h.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(servers={list(self.servers)!r})"


# --- shared clients for the high-level types ----------------------------------------------

_SHARED: weakref.WeakValueDictionary[tuple, Client] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_client(**settings: Any) -> Client:
    """The live client with exactly these settings, or a new one: every lock made
    with equal settings shares its connection pool. Freed with its last user."""
    if settings.get("ssl_context") is not None:
        raise TypeError(_SSL_CONTEXT_HELP)
    settings.pop("ssl_context", None)
    servers = v.servers(settings.get("servers", DEFAULT_SERVERS))
    settings["servers"] = servers
    pem = settings.get("tls_ca_pem")
    if isinstance(pem, bytearray):
        settings["tls_ca_pem"] = bytes(pem)
    try:
        k = tuple(sorted(settings.items()))
        hash(k)
    except TypeError:
        return Client(**settings)
    with _SHARED_LOCK:
        c = _SHARED.get(k)
        if c is None or c._h.closed:
            c = Client(**settings)
            _SHARED[k] = c
        return c


# --- low-level: one function per command ------------------------------------------------------


class Grant(NamedTuple):
    token: str
    lease: int
    fence: int


def _grant(g: n.Grant) -> Grant:
    return Grant(g.token.decode(), g.lease_s, g.fence)


class SyncConn:
    """One authenticated connection to one server (C `dflockd_conn`): one method per
    protocol command. Closing it releases on the server everything granted on it.
    Thread-safe: requests are serialized; a blocking acquire or wait occupies it.
    Leases acquired here are not renewed for you, and the server drops a connection
    silent for its read timeout (23 s by default)."""

    def __init__(self, ptr: ctypes.c_void_p, client: Client | None = None) -> None:
        self._h = n.Handle(ptr, n.lib.dflockd_conn_free, "connection")
        self._client = client  # for the owner of a private client (open_conn)

    def _call(self, fn, *args) -> None:
        with self._h.use() as c:
            n.call(fn, c, *args)

    def ping(self) -> None:
        self._call(n.lib.dflockd_conn_ping)

    def auth(self, secret: str) -> None:
        raw = n.encode(secret, "auth token")
        self._call(n.lib.dflockd_conn_auth, raw, len(raw))

    def stats(self) -> dict[str, Any]:
        with self._h.use() as c:
            return json.loads(n.out_string(n.lib.dflockd_conn_stats, c))

    def acquire(self, key: str, timeout_s: int, lease_ttl_s: int | None = None, *, limit: int | None = None) -> Grant:
        """`l` (or `sl` with a limit): DflockdTimeoutError when not granted in time."""
        raw = n.encode(v.key(key), "key")
        v.timeout_s(timeout_s)
        lease = v.lease_ttl_s(lease_ttl_s) or 0
        g = n.Grant()
        if limit is None:
            self._call(n.lib.dflockd_conn_lock_acquire, raw, len(raw), timeout_s, lease, ctypes.byref(g))
        else:
            self._call(
                n.lib.dflockd_conn_sem_acquire, raw, len(raw), timeout_s, v.limit(limit), lease, ctypes.byref(g)
            )
        return _grant(g)

    def release(self, key: str, token: str, *, semaphore: bool = False) -> None:
        raw, tok = n.encode(v.key(key), "key"), n.encode(token, "token")
        fn = n.lib.dflockd_conn_sem_release if semaphore else n.lib.dflockd_conn_lock_release
        self._call(fn, raw, len(raw), tok, len(tok))

    def renew(self, key: str, token: str, lease_ttl_s: int | None = None, *, semaphore: bool = False) -> int:
        raw, tok = n.encode(v.key(key), "key"), n.encode(token, "token")
        out = ctypes.c_uint64()
        fn = n.lib.dflockd_conn_sem_renew if semaphore else n.lib.dflockd_conn_lock_renew
        self._call(fn, raw, len(raw), tok, len(tok), v.lease_ttl_s(lease_ttl_s) or 0, ctypes.byref(out))
        return out.value

    def enqueue(self, key: str, lease_ttl_s: int | None = None, *, limit: int | None = None) -> Grant | None:
        """`e` / `se`: the grant if the key was free, None if queued (then `wait`)."""
        raw = n.encode(v.key(key), "key")
        lease = v.lease_ttl_s(lease_ttl_s) or 0
        acquired = ctypes.c_bool()
        g = n.Grant()
        if limit is None:
            self._call(n.lib.dflockd_conn_lock_enqueue, raw, len(raw), lease, ctypes.byref(acquired), ctypes.byref(g))
        else:
            self._call(
                n.lib.dflockd_conn_sem_enqueue,
                raw,
                len(raw),
                v.limit(limit),
                lease,
                ctypes.byref(acquired),
                ctypes.byref(g),
            )
        return _grant(g) if acquired.value else None

    def wait(self, key: str, timeout_s: int, *, semaphore: bool = False) -> Grant:
        raw = n.encode(v.key(key), "key")
        v.timeout_s(timeout_s, "wait_timeout_s")
        g = n.Grant()
        fn = n.lib.dflockd_conn_sem_wait if semaphore else n.lib.dflockd_conn_lock_wait
        self._call(fn, raw, len(raw), timeout_s, ctypes.byref(g))
        return _grant(g)

    def abort(self) -> None:
        """From any thread: a call blocked on this connection raises
        AcquireCancelledError; later calls fail. Still close it."""
        with self._h.use() as c:
            n.lib.dflockd_conn_abort(c)

    shutdown_read = abort  # the reference client's name

    def close(self) -> None:
        self._h.close(unblock=n.lib.dflockd_conn_abort)

    def __enter__(self) -> SyncConn:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# The reference client's module-level functions (dflockd_client._sync), same
# signatures and return values, over SyncConn.


def open_conn(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout_s: float = 10.0,
    auth_token: str | None = None,
    **client_settings: Any,
) -> SyncConn:
    """Dial `host:port` and return a SyncConn (authenticated when `auth_token`)."""
    v.endpoint(host, port)
    c = Client(
        [(host, port)],
        ssl_context=ssl_context,
        connect_timeout_s=connect_timeout_s,
        auth_token=auth_token,
        **client_settings,
    )
    conn = c.connect(0)
    conn._client = c
    return conn


def authenticate(conn: SyncConn, auth_token: str) -> None:
    conn.auth(auth_token)


def _check_prefix(prefix: str, limit: int | None) -> None:
    if prefix not in ("", "s"):
        raise ValueError(f"cmd_prefix must be '' or 's', got {prefix!r}")
    if prefix == "s" and limit is None:
        raise ValueError("limit is required when cmd_prefix='s' (semaphore)")
    if prefix == "" and limit is not None:
        raise ValueError("limit must not be set when cmd_prefix='' (lock)")


def acquire(conn: SyncConn, key: str, acquire_timeout_s: int, lease_ttl_s: int | None = None, *, prefix: str = "", limit: int | None = None) -> tuple[str, int]:
    _check_prefix(prefix, limit)
    g = conn.acquire(key, acquire_timeout_s, lease_ttl_s, limit=limit)
    return g.token, g.lease


def release(conn: SyncConn, key: str, token: str, *, prefix: str = "") -> None:
    _check_prefix(prefix, 1 if prefix == "s" else None)
    conn.release(key, token, semaphore=prefix == "s")


def renew(conn: SyncConn, key: str, token: str, lease_ttl_s: int | None = None, *, prefix: str = "", read_timeout: float | None = None) -> int:
    _check_prefix(prefix, 1 if prefix == "s" else None)
    return conn.renew(key, token, lease_ttl_s, semaphore=prefix == "s")


def enqueue(conn: SyncConn, key: str, lease_ttl_s: int | None = None, *, prefix: str = "", limit: int | None = None) -> tuple[str, str | None, int | None]:
    _check_prefix(prefix, limit)
    g = conn.enqueue(key, lease_ttl_s, limit=limit)
    return ("queued", None, None) if g is None else ("acquired", g.token, g.lease)


def wait(conn: SyncConn, key: str, wait_timeout_s: int, *, prefix: str = "") -> tuple[str, int]:
    _check_prefix(prefix, 1 if prefix == "s" else None)
    g = conn.wait(key, wait_timeout_s, semaphore=prefix == "s")
    return g.token, g.lease


def stats(conn: SyncConn) -> dict[str, Any]:
    return conn.stats()


def sem_acquire(conn: SyncConn, key: str, acquire_timeout_s: int, limit: int, lease_ttl_s: int | None = None) -> tuple[str, int]:
    return acquire(conn, key, acquire_timeout_s, lease_ttl_s, prefix="s", limit=limit)


def sem_release(conn: SyncConn, key: str, token: str) -> None:
    release(conn, key, token, prefix="s")


def sem_renew(conn: SyncConn, key: str, token: str, lease_ttl_s: int | None = None) -> int:
    return renew(conn, key, token, lease_ttl_s, prefix="s")


def sem_enqueue(conn: SyncConn, key: str, limit: int, lease_ttl_s: int | None = None) -> tuple[str, str | None, int | None]:
    return enqueue(conn, key, lease_ttl_s, prefix="s", limit=limit)


def sem_wait(conn: SyncConn, key: str, wait_timeout_s: int) -> tuple[str, int]:
    return wait(conn, key, wait_timeout_s, prefix="s")


# --- logging ----------------------------------------------------------------------------------

LOG_OFF, LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG = range(5)
_PY_LEVELS = {LOG_ERROR: logging.ERROR, LOG_WARN: logging.WARNING, LOG_INFO: logging.INFO, LOG_DEBUG: logging.DEBUG}
_log_lock = threading.Lock()
_log_fn: Any = None  # the installed CFUNCTYPE object, kept alive while installed


def set_log(callback: Callable[[int, str], None] | None, level: int = LOG_WARN) -> None:
    """Install (or with None, remove) the process-wide library log callback:
    `callback(level, message)` with level LOG_ERROR..LOG_DEBUG. It runs on
    whichever thread logged, library threads included (ctypes takes the GIL for
    it): keep it quick. Once this returns, the previous callback is not running
    and will not run again."""
    global _log_fn
    if callback is None:
        with _log_lock:
            n.check(n.lib.dflockd_set_log(n.LOG_FN(), None, LOG_OFF))
            _log_fn = None
        return
    if not callable(callback):
        raise TypeError("callback must be callable")

    def trampoline(_userdata, lvl, message):
        try:
            callback(lvl, message.decode("utf-8", "replace"))
        except BaseException:  # noqa: BLE001 - never raise into the library
            pass

    fn = n.LOG_FN(trampoline)
    with _log_lock:
        n.check(n.lib.dflockd_set_log(fn, None, int(level)))
        _log_fn = fn  # the old one is no longer called: safe to drop


def log_to_logging(logger: logging.Logger | None = None, level: int = logging.WARNING) -> None:
    """Forward the library's messages to a `logging` logger (default "dflockd")
    from `level` (a logging level) up."""
    target = logger or logging.getLogger("dflockd")
    lib_level = LOG_DEBUG if level <= logging.DEBUG else LOG_INFO if level <= logging.INFO else LOG_WARN if level <= logging.WARNING else LOG_ERROR
    set_log(lambda lvl, msg: target.log(_PY_LEVELS.get(lvl, logging.ERROR), "%s", msg), lib_level)


@atexit.register
def _log_off_at_exit() -> None:
    # No library thread may call into an interpreter that is shutting down.
    if _log_fn is not None:
        set_log(None)
