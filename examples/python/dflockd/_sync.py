"""SyncDistributedLock / SyncDistributedSemaphore: the reference client's
high-level types, on a library lease handle.

Differences from dflockd-client 2.1.1, all additive:
- the library renews (one shared scheduler, at min(lease x renew_ratio, 10 s),
  so a lease longer than twice the server's idle timeout is kept);
- connections are pooled per client and shared by every lock with the same
  settings (no TCP connection per acquire);
- `is_held()`, `is_lost()`, `wait_lost()`, `fence`, an `on_lost` callback run
  on a Python thread of this package, and `cancel()` of a blocked acquire or
  wait from another thread (the acquire raises AcquireCancelledError).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from typing import Any, Callable

from . import _native as n
from . import _validate as v
from .client import Client, shared_client
from .errors import DflockdError, DflockdTimeoutError, LeaseLostError, NotHeldError
from .sharding import DEFAULT_SERVERS, ShardingStrategy, stable_hash_shard

log = logging.getLogger("dflockd")

_IDLE, _QUEUED, _HELD = "idle", "queued", "held"
LOST_POLL_MS = 200  # each wait_lost call of a watcher is bounded, so close() never waits long

LostCallback = Callable[[Any, BaseException], None]


class _Base:
    """What the sync and asyncio types share: settings, the handle, attributes."""

    _limit: int | None = None

    def __init__(
        self,
        key: str,
        *,
        acquire_timeout_s: int = 10,
        lease_ttl_s: int | None = None,
        servers: Any = DEFAULT_SERVERS,
        sharding_strategy: ShardingStrategy = stable_hash_shard,
        renew_ratio: float = 0.5,
        ssl_context: Any = None,
        auth_token: str | None = None,
        connect_timeout_s: float = 10.0,
        # beyond the reference:
        tls_ca_file: str | None = None,
        tls_ca_pem: str | bytes | None = None,
        tls_system_roots: bool = False,
        tls_server_name: str | None = None,
        io_timeout_s: float | None = None,
        keepalive_s: float | None = None,
        server_read_timeout_s: float | None = None,
        auto_release_on_disconnect: bool = True,
        cluster: bool = False,
        on_lost: LostCallback | None = None,
        client: Client | None = None,
    ) -> None:
        self.key = v.key(key)
        self.acquire_timeout_s = v.timeout_s(acquire_timeout_s)
        self.lease_ttl_s = v.lease_ttl_s(lease_ttl_s)
        if on_lost is not None and not callable(on_lost):
            raise TypeError("on_lost must be callable")
        if client is None:
            client = shared_client(
                servers=servers,
                sharding_strategy=sharding_strategy,
                renew_ratio=renew_ratio,
                ssl_context=ssl_context,
                auth_token=auth_token,
                connect_timeout_s=connect_timeout_s,
                tls_ca_file=tls_ca_file,
                tls_ca_pem=tls_ca_pem,
                tls_system_roots=tls_system_roots,
                tls_server_name=tls_server_name,
                io_timeout_s=io_timeout_s,
                keepalive_s=keepalive_s,
                server_read_timeout_s=server_read_timeout_s,
                auto_release_on_disconnect=auto_release_on_disconnect,
                cluster=cluster,
            )
        self.client = client
        self.servers = list(client.servers)
        self.sharding_strategy = client.sharding_strategy
        self.renew_ratio = renew_ratio
        self.auth_token = auth_token
        self.connect_timeout_s = connect_timeout_s
        # The reference's strategy errors (TypeError / IndexError), raised here.
        v.shard_index(self.sharding_strategy(self.key, len(self.servers)), len(self.servers))
        self._on_lost = on_lost
        self._state = _IDLE
        self._gen = 0  # bumped by every grant, release and close
        self._h: n.Handle | None = None
        self._h = self._new_handle()

    # --- handle ---------------------------------------------------------------------

    def _new_handle(self) -> n.Handle:
        h = self.client._new_lease(self.key, self._limit)
        if self.lease_ttl_s is not None:
            with h.use() as p:
                n.call(n.lib.dflockd_lease_set_ttl, p, self.lease_ttl_s)
        return h

    def _handle(self) -> n.Handle:
        if self._h is None or self._h.closed:
            self._h = self._new_handle()
        return self._h

    @property
    def token(self) -> str | None:
        """The current token (32 hex characters; a credential), None if not held."""
        h = self._h
        if self._state != _HELD or h is None or h.closed:
            return None
        try:
            with h.use() as p:
                return n.out_string(n.lib.dflockd_lease_token, p)
        except (NotHeldError, LeaseLostError):
            return None

    @property
    def lease(self) -> int:
        """The lease TTL in seconds the server granted; 0 if not held."""
        return self._u64(n.lib.dflockd_lease_ttl) or 0

    @property
    def fence(self) -> int | None:
        """The current token's fence (pass it with every write); None if not held."""
        return self._u64(n.lib.dflockd_lease_fence)

    def _u64(self, fn) -> int | None:
        h = self._h
        if self._state != _HELD or h is None or h.closed:
            return None
        out = ctypes.c_uint64()
        try:
            with h.use() as p:
                n.call(fn, p, ctypes.byref(out))
        except (NotHeldError, LeaseLostError):
            return None
        return out.value

    def is_held(self) -> bool:
        """Whether the lease is held right now (never optimistic: false once
        released, lost, or when renewal could not confirm it in time)."""
        h = self._h
        if h is None or h.closed:
            return False
        with h.use() as p:
            return bool(n.lib.dflockd_lease_is_held(p))

    def is_doubted(self) -> bool:
        """Whether the lease is in doubt right now: its connection went (with
        `cluster=True`, a leader failover) and a renewal elsewhere has not yet
        confirmed it. `is_held()` is false meanwhile; it ends confirmed (held
        again) or lost."""
        h = self._h
        if h is None or h.closed:
            return False
        with h.use() as p:
            return bool(n.lib.dflockd_lease_is_doubted(p))

    def is_lost(self) -> bool:
        """Whether the last lease was lost (reset by the next grant)."""
        h = self._h
        if h is None or h.closed:
            return False
        with h.use() as p:
            return bool(n.lib.dflockd_lease_is_lost(p))

    def lost_error(self) -> BaseException | None:
        """Why the last lease was lost (an exception instance), None if not lost."""
        h = self._h
        if h is None or h.closed:
            return None
        err = ctypes.c_void_p()
        with h.use() as p:
            status = n.lib.dflockd_lease_lost_error(p, ctypes.byref(err))
        return None if status == n.OK else n.take_error(status, err)

    def __repr__(self) -> str:
        limit = "" if self._limit is None else f", limit={self._limit}"
        return f"{type(self).__name__}({self.key!r}{limit}, state={self._state})"


class _SyncBase(_Base):
    def __init__(self, key: str, **kwargs: Any) -> None:
        self._op = threading.RLock()  # one acquire/enqueue/wait/release/close at a time
        self._flight = threading.Condition()  # guards _running (the blocking call in C)
        self._running = 0  # sequence number of the blocking call in C, 0 = none
        self._seq = 0
        super().__init__(key, **kwargs)

    def _blocking(self, fn, *args) -> None:
        """A call that may block on the network; cancel() can interrupt it."""
        h = self._handle()
        with self._flight:
            self._seq += 1
            seq = self._running = self._seq
        try:
            with h.use() as p:
                n.call(fn, p, *args)
        finally:
            with self._flight:
                if self._running == seq:
                    self._running = 0
                self._flight.notify_all()

    def _flag(self, fn) -> bool:
        out = ctypes.c_bool()
        self._blocking(fn, ctypes.byref(out))
        return out.value

    # --- the reference API ----------------------------------------------------------------

    def acquire(self, timeout_s: int | None = None) -> bool:
        """Block up to `timeout_s` (default acquire_timeout_s) seconds: True when
        held, False when not granted in time. As in the reference client, a lease
        this object already holds is released first."""
        t = self.acquire_timeout_s if timeout_s is None else v.timeout_s(timeout_s, "timeout_s")
        with self._op:
            self._reset()
            try:
                self._blocking(n.lib.dflockd_lease_acquire, t)
            except DflockdTimeoutError:
                return False
            self._granted()
            return True

    def try_acquire(self) -> bool:
        """Try once without waiting for the key: True if now held."""
        with self._op:
            self._reset()
            if self._flag(n.lib.dflockd_lease_try_acquire):
                self._granted()
                return True
            return False

    def enqueue(self) -> str:
        """Two-phase, phase 1: "acquired" (held now) or "queued" (call wait())."""
        with self._op:
            self._reset()
            if self._flag(n.lib.dflockd_lease_enqueue):
                self._granted()
                return "acquired"
            self._state = _QUEUED
            return "queued"

    def wait(self, timeout_s: int | None = None) -> bool:
        """Two-phase, phase 2: True when granted (at once if enqueue acquired),
        False on timeout (the queue is left). NotQueuedError without enqueue()."""
        t = self.acquire_timeout_s if timeout_s is None else v.timeout_s(timeout_s, "wait_timeout_s")
        with self._op:
            if self._state == _HELD:
                return True
            try:
                self._blocking(n.lib.dflockd_lease_wait, t)
            except DflockdTimeoutError:
                self._state = _IDLE
                return False
            except BaseException:
                self._state = _IDLE
                raise
            self._granted()
            return True

    def release(self) -> bool:
        """Release the lease (or leave the queue): True if released, False if
        nothing was held (queued only, never acquired, released) or the release failed (logged; the server frees the
        lease on disconnect or expiry). A lost lease gives False and a warning."""
        with self._op:
            return self._release()

    def close(self) -> None:
        """Cancel a blocked acquire/wait, release, and free the library handle.
        The object can acquire again afterwards (a new handle is made)."""
        self._gen += 1
        h = self._h
        if h is not None:
            h.close(unblock=n.lib.dflockd_lease_cancel)  # frees = releases if held
        with self._op:
            self._state = _IDLE

    def __enter__(self):
        if not self.acquire():
            raise DflockdTimeoutError(f"timeout acquiring {self.key!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    # --- beyond the reference ----------------------------------------------------------

    def cancel(self) -> None:
        """From another thread: make a blocked acquire()/wait() raise
        AcquireCancelledError, leaving nothing held or queued. Returns once that
        call has ended; does nothing when none is running."""
        with self._flight:
            seq = self._running
            while seq and self._running == seq:
                h = self._h
                if h is not None and not h.closed:
                    try:
                        with h.use() as p:
                            n.lib.dflockd_lease_cancel(p)
                    except DflockdError:
                        pass
                # again: a cancel before the C call starts is a no-op in C
                self._flight.wait(0.005)

    # --- beyond the reference (blocking) ------------------------------------------------

    def wait_lost(self, timeout_s: float | None = None) -> bool:
        """Block until the lease is lost (True) or `timeout_s` passes (False;
        None = no limit). Releasing is not losing."""
        import time

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            step = LOST_POLL_MS
            if deadline is not None:
                step = max(0, min(step, int((deadline - time.monotonic()) * 1000)))
            if self._wait_lost_once(self._handle(), step):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    @staticmethod
    def _wait_lost_once(h: n.Handle, ms: int) -> bool:
        out = ctypes.c_bool()
        with h.use() as p:
            n.call(n.lib.dflockd_lease_wait_lost, p, ms, ctypes.byref(out))
        return out.value

    def on_lost(self, callback: LostCallback | None) -> None:
        """Call `callback(self, error)` once when a held lease is lost (not when it
        is released or closed), on a Python thread of this package that waits with
        dflockd_lease_wait_lost: never on a library thread. None removes it."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._on_lost = callback
        if callback is not None and self._state == _HELD:
            self._watch()

    # --- internals -------------------------------------------------------------------------

    def _reset(self) -> None:
        if self._state != _IDLE:
            self._release()

    def _granted(self) -> None:
        self._state = _HELD
        self._gen += 1
        if self._on_lost is not None:
            self._watch()

    def _release(self) -> bool:
        state, self._state = self._state, _IDLE
        self._gen += 1
        h = self._h
        if state == _IDLE or h is None or h.closed:
            return False
        try:
            with h.use() as p:
                n.call(n.lib.dflockd_lease_release, p)
            return state == _HELD  # leaving the queue is not a release (False, as the reference)
        except NotHeldError:
            return False
        except LeaseLostError as e:
            log.warning("%s %r: release after the lease was lost: %s", type(self).__name__, self.key, e)
            return False
        except (DflockdError, OSError) as e:
            log.warning(
                "%s %r: release failed (the server frees the lease on disconnect or expiry): %s",
                type(self).__name__,
                self.key,
                e,
            )
            return False

    def _watch(self) -> None:
        h, gen, me = self._h, self._gen, weakref.ref(self)
        if h is None:
            return
        threading.Thread(target=_watch_lost, args=(h, gen, me), daemon=True, name=f"dflockd-lost[{self.key}]").start()


def _watch_lost(h: n.Handle, gen: int, me: weakref.ref) -> None:
    """A watcher thread: one per grant while an on_lost callback is set. Holds
    only the handle, so the lock object stays collectable."""
    while True:
        try:
            lost = _SyncBase._wait_lost_once(h, LOST_POLL_MS)
        except DflockdError:  # closed
            return
        obj = me()
        if obj is None or obj._gen != gen or obj._state != _HELD:
            return
        if lost:
            cb = obj._on_lost
            err = obj.lost_error() or LeaseLostError(f"lease on {obj.key!r} lost")
            if cb is not None:
                try:
                    cb(obj, err)
                except Exception:
                    log.exception("on_lost callback for %r raised", obj.key)
            return
        del obj


class DistributedLock(_SyncBase):
    """High-level distributed lock; the library renews the lease in the background."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)


class DistributedSemaphore(_SyncBase):
    """Up to `limit` concurrent holders of `key`."""

    def __init__(self, key: str, *, limit: int = 0, **kwargs: Any) -> None:
        self._limit = v.limit(limit)
        self.limit = self._limit
        super().__init__(key, **kwargs)
