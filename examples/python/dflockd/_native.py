"""The ctypes layer: every C function of include/dflockd.h this package uses.

This is the only module that touches ctypes. The rest of the package (the
asyncio half included: the completion-queue functions are bound here) goes
through :data:`lib`, :func:`call`, :func:`out_string` and :class:`Handle`.

Loading order: the library the package carries (``dflockd/_lib/libdflockd.so.0``,
present only in the platform wheel ``make wheel`` builds: a self-contained wheel
uses its own copy, whatever is installed or set), then ``DFLOCKD_LIB`` (a path),
then the system loader (``libdflockd.so.0``, e.g. after ``make install``), then,
for in-repository use, ``build/lib/libdflockd.so.0`` staged by ``make lib``.

Every function is bound through :class:`ctypes.CDLL`, which releases the GIL for
the duration of each call: a thread blocked in an acquire does not stop the
other Python threads.
"""

from __future__ import annotations

import ctypes
import os
import threading
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int32,
    c_int64,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

SONAME = "libdflockd.so.0"
MAX_SECONDS = 9_223_372_036
TOKEN_SIZE = 33

# dflockd_status (stable, only ever appended).
OK = 0
NULL_PARAMETER = 1
INVALID_ARGUMENT = 2
INVALID_UTF8 = 3
BUFFER_TOO_SMALL = 4
PANIC = 5
UNSUPPORTED = 6
TIMEOUT = 7
SERVER_ERROR = 8
AUTH = 9
MAX_LOCKS = 10
MAX_WAITERS = 11
LIMIT_MISMATCH = 12
NOT_ENQUEUED = 13
ALREADY_ENQUEUED = 14
LEASE_EXPIRED = 15
DRAINING = 16
NOT_LEADER = 17
PROTOCOL = 18
IO = 19
DEADLINE = 20
TLS = 21
CANCELLED = 22
LEASE_LOST = 23
NOT_HELD = 24
CLOSED = 25
FORKED = 26


class Grant(Structure):
    """dflockd_grant."""

    _fields_ = [("token", c_char * TOKEN_SIZE), ("lease_s", c_uint64), ("fence", c_uint64)]


METRIC_FIELDS = (
    "acquires",
    "acquire_timeouts",
    "releases",
    "renewals",
    "renewal_retries",
    "leases_lost",
    "reconnects",
    "redirects",
    "deadline_hits",
    "connections_opened",
    "open_connections",
    "idle_connections",
    "failovers",
    "leases_confirmed",
    "home_connections",
    "renewal_lateness_max_us",
)


# dflockd_event_kind (stable, only ever appended).
EVENT_ACQUIRED = 1
EVENT_ACQUIRE_FAILED = 2
EVENT_RELEASED = 3
EVENT_RELEASE_FAILED = 4
EVENT_LOST = 5
EVENT_ENQUEUED = 6
EVENT_STATS = 7
EVENT_STATS_FAILED = 8
EVENT_DOUBTED = 9
EVENT_CONFIRMED = 10


class Event(Structure):
    """dflockd_event: the caller owns `error` (dflockd_error_free)."""

    _fields_ = [("tag", c_uint64), ("kind", c_int32), ("status", c_int32), ("error", c_void_p)]


class Metrics(Structure):
    """dflockd_metrics (fields are only ever appended)."""

    _fields_ = [(name, c_uint64) for name in METRIC_FIELDS]


ERR = POINTER(c_void_p)  # dflockd_error **
P = c_void_p  # any opaque handle
S = c_char_p  # input string pointer (length passed separately)
LOG_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int32, c_char_p)
SHARD_FN = ctypes.CFUNCTYPE(c_size_t, c_void_p, POINTER(c_char), c_size_t, c_size_t)

# name: (restype, argtypes)
_FUNCTIONS = {
    "dflockd_error_status": (c_int32, [P]),
    "dflockd_error_message": (c_char_p, [P]),
    "dflockd_error_leader": (c_char_p, [P]),
    "dflockd_error_free": (None, [P]),
    "dflockd_set_log": (c_int32, [LOG_FN, c_void_p, c_int32]),
    "dflockd_status_str": (c_char_p, [c_int32]),
    "dflockd_version": (c_char_p, []),
    "dflockd_version_number": (c_uint32, []),
    "dflockd_config_new": (c_int32, [POINTER(P)]),
    "dflockd_config_free": (None, [P]),
    "dflockd_config_set_servers": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_config_add_server": (c_int32, [P, S, c_size_t, c_uint16, ERR]),
    "dflockd_config_set_auth_token": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_config_set_tls_ca_file": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_config_set_tls_ca_pem": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_config_set_tls_system_roots": (c_int32, [P, c_bool, ERR]),
    "dflockd_config_set_tls_server_name": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_config_set_connect_timeout_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_config_set_io_timeout_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_config_set_default_lease": (c_int32, [P, c_uint64, ERR]),
    "dflockd_config_set_renew_ratio": (c_int32, [P, c_double, ERR]),
    "dflockd_config_set_keepalive_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_config_set_server_read_timeout_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_config_set_auto_release_on_disconnect": (c_int32, [P, c_bool, ERR]),
    "dflockd_config_set_cluster": (c_int32, [P, c_bool, ERR]),
    "dflockd_config_set_max_leases_per_connection": (c_int32, [P, c_uint32, ERR]),
    "dflockd_config_set_shard": (c_int32, [P, SHARD_FN, c_void_p, ERR]),
    "dflockd_fence_from_token": (c_int32, [S, c_size_t, POINTER(c_uint64), ERR]),
    "dflockd_shard": (c_int32, [S, c_size_t, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_client_new": (c_int32, [P, POINTER(P), ERR]),
    "dflockd_client_free": (None, [P]),
    "dflockd_client_server_count": (c_int32, [P, POINTER(c_size_t), ERR]),
    "dflockd_client_server_for": (c_int32, [P, S, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_client_lock": (c_int32, [P, S, c_size_t, POINTER(P), ERR]),
    "dflockd_client_semaphore": (c_int32, [P, S, c_size_t, c_uint64, POINTER(P), ERR]),
    "dflockd_client_connect": (c_int32, [P, c_size_t, POINTER(P), ERR]),
    "dflockd_client_stats": (c_int32, [P, c_size_t, c_void_p, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_client_metrics": (c_int32, [P, POINTER(Metrics), c_size_t, ERR]),
    "dflockd_conn_free": (None, [P]),
    "dflockd_conn_abort": (c_int32, [P]),
    "dflockd_conn_auth": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_conn_ping": (c_int32, [P, ERR]),
    "dflockd_conn_stats": (c_int32, [P, c_void_p, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_conn_lock_acquire": (c_int32, [P, S, c_size_t, c_uint64, c_uint64, POINTER(Grant), ERR]),
    "dflockd_conn_lock_release": (c_int32, [P, S, c_size_t, S, c_size_t, ERR]),
    "dflockd_conn_lock_renew": (
        c_int32,
        [P, S, c_size_t, S, c_size_t, c_uint64, POINTER(c_uint64), ERR],
    ),
    "dflockd_conn_lock_enqueue": (
        c_int32,
        [P, S, c_size_t, c_uint64, POINTER(c_bool), POINTER(Grant), ERR],
    ),
    "dflockd_conn_lock_wait": (c_int32, [P, S, c_size_t, c_uint64, POINTER(Grant), ERR]),
    "dflockd_conn_sem_acquire": (
        c_int32,
        [P, S, c_size_t, c_uint64, c_uint64, c_uint64, POINTER(Grant), ERR],
    ),
    "dflockd_conn_sem_release": (c_int32, [P, S, c_size_t, S, c_size_t, ERR]),
    "dflockd_conn_sem_renew": (
        c_int32,
        [P, S, c_size_t, S, c_size_t, c_uint64, POINTER(c_uint64), ERR],
    ),
    "dflockd_conn_sem_enqueue": (
        c_int32,
        [P, S, c_size_t, c_uint64, c_uint64, POINTER(c_bool), POINTER(Grant), ERR],
    ),
    "dflockd_conn_sem_wait": (c_int32, [P, S, c_size_t, c_uint64, POINTER(Grant), ERR]),
    "dflockd_lease_free": (None, [P]),
    "dflockd_lease_acquire": (c_int32, [P, c_uint64, ERR]),
    "dflockd_lease_try_acquire": (c_int32, [P, POINTER(c_bool), ERR]),
    "dflockd_lease_enqueue": (c_int32, [P, POINTER(c_bool), ERR]),
    "dflockd_lease_wait": (c_int32, [P, c_uint64, ERR]),
    "dflockd_lease_release": (c_int32, [P, ERR]),
    "dflockd_lease_cancel": (c_int32, [P]),
    "dflockd_lease_token": (c_int32, [P, c_void_p, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_lease_fence": (c_int32, [P, POINTER(c_uint64), ERR]),
    "dflockd_lease_ttl": (c_int32, [P, POINTER(c_uint64), ERR]),
    "dflockd_lease_set_ttl": (c_int32, [P, c_uint64, ERR]),
    "dflockd_lease_key": (c_int32, [P, c_void_p, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_lease_is_held": (c_bool, [P]),
    "dflockd_lease_is_lost": (c_bool, [P]),
    "dflockd_lease_is_doubted": (c_bool, [P]),
    "dflockd_lease_lost_error": (c_int32, [P, ERR]),
    "dflockd_lease_wait_lost": (c_int32, [P, c_int64, POINTER(c_bool), ERR]),
    "dflockd_events_new": (c_int32, [POINTER(P), ERR]),
    "dflockd_events_free": (None, [P]),
    "dflockd_events_fd": (ctypes.c_int, [P]),
    "dflockd_events_poll": (c_size_t, [P, c_void_p, c_size_t]),
    "dflockd_lease_watch_lost": (c_int32, [P, P, c_uint64, ERR]),
    "dflockd_lease_acquire_start": (c_int32, [P, c_uint64, P, c_uint64, ERR]),
    "dflockd_lease_wait_start": (c_int32, [P, c_uint64, P, c_uint64, ERR]),
    "dflockd_lease_release_start": (c_int32, [P, P, c_uint64, ERR]),
    "dflockd_lease_try_acquire_start": (c_int32, [P, P, c_uint64, ERR]),
    "dflockd_lease_enqueue_start": (c_int32, [P, P, c_uint64, ERR]),
    "dflockd_client_stats_start": (c_int32, [P, c_size_t, P, c_uint64, ERR]),
    "dflockd_event_stats": (c_int32, [c_void_p, ctypes.c_char_p, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_testserver_options_new": (c_int32, [POINTER(P)]),
    "dflockd_testserver_options_free": (None, [P]),
    "dflockd_testserver_options_set_host": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_testserver_options_set_server_line": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_testserver_options_set_port": (c_int32, [P, c_uint16, ERR]),
    "dflockd_testserver_options_set_default_lease": (c_int32, [P, c_uint64, ERR]),
    "dflockd_testserver_options_set_read_timeout_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_testserver_options_set_lease_sweep_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_testserver_options_set_auth_token": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_testserver_options_set_tls_pem": (c_int32, [P, S, c_size_t, S, c_size_t, ERR]),
    "dflockd_testserver_options_set_tls_files": (c_int32, [P, S, c_size_t, S, c_size_t, ERR]),
    "dflockd_testserver_options_set_max_locks": (c_int32, [P, c_size_t, ERR]),
    "dflockd_testserver_options_set_max_waiters": (c_int32, [P, c_size_t, ERR]),
    "dflockd_testserver_options_set_max_connections": (c_int32, [P, c_size_t, ERR]),
    "dflockd_testserver_options_set_auto_release": (c_int32, [P, c_bool, ERR]),
    "dflockd_testserver_options_set_follower": (c_int32, [P, c_bool, S, c_size_t, ERR]),
    "dflockd_testserver_start": (c_int32, [P, POINTER(P), ERR]),
    "dflockd_testserver_stop": (None, [P]),
    "dflockd_testserver_port": (c_uint16, [P]),
    "dflockd_testserver_addr": (c_int32, [P, c_void_p, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_testserver_pause": (c_int32, [P]),
    "dflockd_testserver_resume": (c_int32, [P]),
    "dflockd_testserver_drop_connections": (c_int32, [P]),
    "dflockd_testserver_refuse_connections": (c_int32, [P, c_bool]),
    "dflockd_testserver_set_reply_delay_ms": (c_int32, [P, c_uint64]),
    "dflockd_testserver_set_hostile_reply": (c_int32, [P, S, c_size_t, ERR]),
    "dflockd_testserver_set_follower": (c_int32, [P, c_bool, S, c_size_t, ERR]),
    "dflockd_testserver_restart": (c_int32, [P, ERR]),
    "dflockd_testserver_drain": (c_int32, [P]),
    "dflockd_testserver_options_set_election_delay_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_testserver_options_set_orphan_ttl_ms": (c_int32, [P, c_uint64, ERR]),
    "dflockd_testcluster_start": (c_int32, [c_size_t, P, POINTER(P), ERR]),
    "dflockd_testcluster_stop": (None, [P]),
    "dflockd_testcluster_member_count": (c_size_t, [P]),
    "dflockd_testcluster_addrs": (c_int32, [P, c_void_p, c_size_t, POINTER(c_size_t), ERR]),
    "dflockd_testcluster_leader": (ctypes.c_int, [P]),
    "dflockd_testcluster_await_leader": (ctypes.c_int, [P, c_uint64]),
    "dflockd_testcluster_kill": (c_int32, [P, c_size_t, ERR]),
    "dflockd_testcluster_pause": (c_int32, [P, c_size_t, ERR]),
    "dflockd_testcluster_resume": (c_int32, [P, c_size_t, ERR]),
    "dflockd_testcluster_drain": (c_int32, [P, c_size_t, ERR]),
    "dflockd_testcluster_restart": (c_int32, [P, c_size_t, ERR]),
}


BUNDLED = Path(__file__).resolve().parent / "_lib" / SONAME  # the platform wheel's own copy


def _candidates() -> list[str]:
    if BUNDLED.is_file():
        return [str(BUNDLED)]
    env = os.environ.get("DFLOCKD_LIB")
    if env:
        return [env]
    staged = Path(__file__).resolve().parents[3] / "build" / "lib" / SONAME
    return [SONAME, str(staged)]


def _load() -> tuple[ctypes.CDLL, str]:
    errors = []
    for name in _candidates():
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            errors.append(f"{name}: {e}")
    raise ImportError(
        "dflockd: cannot load libdflockd (set DFLOCKD_LIB to its path, install it with "
        "`make install`, or run `make lib` in the repository): " + "; ".join(errors)
    )


lib, LOADED_FROM = _load()  # LOADED_FROM: the name or path that loaded
for _name, (_res, _args) in _FUNCTIONS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args

VERSION: str = lib.dflockd_version().decode()


def status_name(status: int) -> str:
    return lib.dflockd_status_str(status).decode()


def encode(value: object, what: str) -> bytes:
    """A str as UTF-8 bytes for a `const char *, size_t` argument."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value.encode("utf-8")  # lone surrogates: UnicodeEncodeError (a ValueError)


def take_error(status: int, errp: c_void_p | None) -> BaseException:
    """The exception for a failed status; frees the C error object."""
    from .errors import error_for

    message, leader = None, None
    if errp is not None and errp.value:
        message = lib.dflockd_error_message(errp).decode("utf-8", "replace")
        raw = lib.dflockd_error_leader(errp)
        leader = raw.decode() if raw else None
        lib.dflockd_error_free(errp)
    return error_for(status, message or status_name(status), leader)


def event_error(status: int, error: int | None) -> BaseException:
    """The exception for a failed event (`error`: the event's dflockd_error *,
    freed here)."""
    return take_error(status, c_void_p(error) if error else None)


def call(fn, *args) -> None:
    """Call `fn(*args, &err)` and raise the mapped exception unless it is OK."""
    err = c_void_p()
    status = fn(*args, ctypes.byref(err))
    if status != OK:
        raise take_error(status, err)


def check(status: int) -> None:
    """Raise for a status of a call without an error out-parameter."""
    if status != OK:
        raise take_error(status, None)


def out_string(fn, *args) -> str:
    """Read an output string (buf, cap, out_len), growing the buffer as told."""
    size = 128
    for _ in range(4):
        buf = ctypes.create_string_buffer(size)
        n = c_size_t()
        err = c_void_p()
        status = fn(*args, buf, size, ctypes.byref(n), ctypes.byref(err))
        if status == BUFFER_TOO_SMALL and n.value > size:
            if err.value:
                lib.dflockd_error_free(err)
            size = n.value + 256
            continue
        if status != OK:
            raise take_error(status, err)
        return buf.raw[: n.value].decode("utf-8")
    raise take_error(BUFFER_TOO_SMALL, None)


class Handle:
    """Owns one C handle. Calls borrow it (`with h.use() as p:`); `close()` frees
    it once no other thread's call is running, calling `unblock(p)` meanwhile
    (e.g. dflockd_lease_cancel) because the C API forbids freeing a handle under a
    call. Closed from inside a call on the same thread (a finalizer, a callback),
    the last call to end frees it."""

    __slots__ = ("_ptr", "_free", "_what", "_cv", "_users", "_mine", "_closed", "__weakref__")

    def __init__(self, ptr: c_void_p, free, what: str) -> None:
        self._ptr = ptr
        self._free = free
        self._what = what
        self._cv = threading.Condition(threading.Lock())
        self._users = 0
        self._mine: dict[int, int] = {}
        self._closed = False

    def use(self):
        return _Use(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def _enter(self) -> c_void_p:
        with self._cv:
            if self._closed:
                from .errors import ClosedError

                raise ClosedError(f"{self._what} is closed", CLOSED)
            self._users += 1
            me = threading.get_ident()
            self._mine[me] = self._mine.get(me, 0) + 1
            return self._ptr

    def _exit(self) -> None:
        free_now = False
        with self._cv:
            self._users -= 1
            me = threading.get_ident()
            self._mine[me] -= 1
            if not self._mine[me]:
                del self._mine[me]
            if self._users == 0:
                self._cv.notify_all()
                free_now = self._closed and self._ptr is not None
        if free_now:
            self._release_ptr()

    def _release_ptr(self) -> None:
        with self._cv:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._free(ptr)

    def close(self, unblock=None) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            me = threading.get_ident()
            while self._users - self._mine.get(me, 0) > 0:
                if unblock is not None:
                    unblock(self._ptr)
                # re-unblock: a cancel before the C call starts is a no-op in C
                self._cv.wait(0.01)
            if self._users:
                return  # this thread is inside a call: its _exit frees
        self._release_ptr()

    def __del__(self) -> None:
        try:
            if self._ptr is not None and self._users == 0:
                self._closed = True
                self._release_ptr()
        except Exception:
            pass


class _Use:
    __slots__ = ("_h",)

    def __init__(self, h: Handle) -> None:
        self._h = h

    def __enter__(self) -> c_void_p:
        return self._h._enter()

    def __exit__(self, *exc) -> None:
        self._h._exit()
