"""AsyncDistributedLock / AsyncDistributedSemaphore on the library's completion
queue (`dflockd_events_*`).

One queue per event loop: its descriptor is watched with `loop.add_reader`, and
each started operation (`dflockd_lease_acquire_start`, `_try_acquire_start`,
`_enqueue_start`, `_wait_start`, `_release_start`, `_watch_lost`,
`dflockd_client_stats_start`) gets a tag whose event resolves a future. The
library's event engine does the network I/O, so awaiting an acquire, a try, an
enqueue or stats costs no thread. Cancelling the awaiting task cancels the
operation on the server (`dflockd_lease_cancel`) and waits for its CANCELLED
event, leaving nothing held or queued (a grant or a place in the queue that won
the race is given back). Everything runs on the loop's thread, in calls that
never block.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import itertools
import json
import logging
import threading
import weakref
from typing import Any, Callable

from . import _native as n
from . import _validate as v
from ._sync import _HELD, _IDLE, _QUEUED, _Base
from .errors import DflockdError, DflockdTimeoutError, LeaseLostError, NotHeldError

log = logging.getLogger("dflockd")

_BATCH = 64

# (kind, status, exception of a failure, a STATS event's JSON)
Handler = Callable[[int, int, "BaseException | None", "str | None"], None]


# --- the completion queue of one event loop --------------------------------------------------


class _Queue:
    """A dflockd_events queue whose fd is registered with one loop. Used only on
    that loop's thread (the handlers run there, from the reader callback)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        ptr = ctypes.c_void_p()
        n.call(n.lib.dflockd_events_new, ctypes.byref(ptr))
        self.ptr = ptr
        self.fd = n.lib.dflockd_events_fd(ptr)
        self.handlers: dict[int, Handler] = {}
        self._tags = itertools.count(1)
        self._buf = (n.Event * _BATCH)()
        self._loop = weakref.ref(loop)
        self._freed = False
        loop.add_reader(self.fd, self._drain)

    def add(self, handler: Handler) -> int:
        tag = next(self._tags)
        self.handlers[tag] = handler
        return tag

    def discard(self, tag: int) -> None:
        self.handlers.pop(tag, None)

    def _drain(self) -> None:
        # Readiness is a hint: poll until fewer than asked for come back.
        while not self._freed:
            got = n.lib.dflockd_events_poll(self.ptr, self._buf, _BATCH)
            events = [(e.tag, e.kind, e.status, e.error, _stats_of(e)) for e in self._buf[:got]]
            for tag, kind, status, error, stats in events:
                exc = n.event_error(status, error) if (status != n.OK or error) else None
                if kind == n.EVENT_STATS:  # its error object carried the reply (status OK)
                    exc = None if stats is not None else n.take_error(n.PROTOCOL, None)
                handler = self.handlers.pop(tag, None)
                if handler is None:
                    continue
                try:
                    handler(kind, status, exc, stats)
                except Exception:  # noqa: BLE001 - never let one event stop the others
                    log.exception("dflockd: completion handler failed")
            if got < _BATCH:
                return

    def free(self) -> None:
        """Unregister and free (the loop is closed or gone). Idempotent."""
        if self._freed:
            return
        self._freed = True
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            try:
                loop.remove_reader(self.fd)
            except Exception:  # noqa: BLE001
                pass
        self.handlers.clear()
        n.lib.dflockd_events_free(self.ptr)


_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


def _queue() -> _Queue:
    """The running loop's queue (made on first use, freed with the loop: when a
    later loop finds it closed, or when the loop is collected)."""
    loop = asyncio.get_running_loop()
    q = _QUEUES.get(loop)
    if q is not None:
        return q
    with _QUEUES_LOCK:
        for old, oq in list(_QUEUES.items()):
            if old.is_closed():
                oq.free()
                del _QUEUES[old]
        q = _Queue(loop)
        _QUEUES[loop] = q
        weakref.finalize(loop, q.free)
    return q


def _stats_of(e: n.Event) -> str | None:
    """A STATS event's reply (dflockd_event_stats), read before its error
    object is freed."""
    if e.kind != n.EVENT_STATS:
        return None
    try:
        return n.out_string(n.lib.dflockd_event_stats, ctypes.byref(e))
    except DflockdError:
        return None


def _future_handler(fut: asyncio.Future) -> Handler:
    def done(kind: int, status: int, exc: BaseException | None, stats: str | None) -> None:
        if not fut.done():
            fut.set_result((kind, status, exc, stats))

    return done


class _Outcome:
    """Where an operation's event goes: the future its task awaits directly
    (no shield: one loop iteration less per operation), replaced by a fresh
    one when that task is cancelled, since the event still comes."""

    __slots__ = ("fut", "early")

    def __init__(self, fut: asyncio.Future) -> None:
        self.fut = fut
        # The event, when it came after the task's cancel had cancelled
        # `fut` but before the task's except clause ran.
        self.early: tuple | None = None

    def handler(self) -> Handler:
        def done(kind: int, status: int, exc: BaseException | None, stats: str | None) -> None:
            if not self.fut.done():
                self.fut.set_result((kind, status, exc, stats))
            elif self.fut.cancelled():
                self.early = (kind, status, exc, stats)

        return done


async def client_stats(h: n.Handle, server: int) -> dict[str, Any]:
    """`Client.astats`: dflockd_client_stats_start, then its STATS or
    STATS_FAILED event (no thread). Cancelled, the request finishes in the
    library and its answer is dropped."""
    q = _queue()
    fut = asyncio.get_running_loop().create_future()
    tag = q.add(_future_handler(fut))
    try:
        with h.use() as c:
            n.call(n.lib.dflockd_client_stats_start, c, server, q.ptr, tag)
    except BaseException:
        q.discard(tag)
        raise
    kind, status, exc, stats = await fut
    if kind == n.EVENT_STATS and stats is not None:
        return json.loads(stats)
    raise exc if exc is not None else n.take_error(status if status != n.OK else n.PROTOCOL, None)


# --- the high-level types -------------------------------------------------------------------

LostCallback = Callable[[Any, BaseException], Any]


class _AsyncBase(_Base):
    """The reference client's async DistributedLock/DistributedSemaphore API on a
    library lease handle (see the module docstring for how it waits)."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        self._serial_for: weakref.ref | None = None
        self._serial: asyncio.Lock | None = None
        self._pending: asyncio.Future | None = None  # the handle is busy until it is done
        self._watch: tuple[n.Handle, _Queue, int] | None = None
        self._lost_waiters: list[asyncio.Future] = []
        self._callback_tasks: set[asyncio.Task] = set()
        super().__init__(key, **kwargs)

    # --- the reference API -------------------------------------------------------------------

    async def acquire(self, timeout_s: int | None = None) -> bool:
        """Wait up to `timeout_s` (default acquire_timeout_s) seconds: True when
        held, False when not granted in time. A lease this object holds is
        released first. Cancelling the awaiting task cancels the acquire on the
        server (nothing is left held or queued)."""
        t = self.acquire_timeout_s if timeout_s is None else v.timeout_s(timeout_s, "timeout_s")
        async with self._lock():
            await self._ready()
            await self._reset()
            return await self._evented(n.lib.dflockd_lease_acquire_start, t)

    async def try_acquire(self) -> bool:
        """Try once without waiting for the key: True if now held, False if
        taken (nothing is left queued). On the event engine
        (dflockd_lease_try_acquire_start): no thread; cancelled, nothing held."""
        async with self._lock():
            await self._ready()
            await self._reset()
            return await self._evented(n.lib.dflockd_lease_try_acquire_start)

    async def enqueue(self) -> str:
        """Two-phase, phase 1: "acquired" (held now) or "queued" (then wait()).
        On the event engine (dflockd_lease_enqueue_start): no thread; cancelled,
        a grant or a place in the queue that won the race is given back."""
        async with self._lock():
            await self._ready()
            await self._reset()
            kind, status, exc = await self._started(n.lib.dflockd_lease_enqueue_start)
            if kind == n.EVENT_ACQUIRED:
                self._granted()
                return "acquired"
            if kind == n.EVENT_ENQUEUED:
                self._state = _QUEUED
                return "queued"
            self._state = _IDLE
            raise exc if exc is not None else n.take_error(status, None)

    async def wait(self, timeout_s: int | None = None) -> bool:
        """Two-phase, phase 2 (on the event engine): True when granted (at once if
        enqueue acquired), False on timeout (the place in the queue is gone).
        NotQueuedError without enqueue()."""
        t = self.acquire_timeout_s if timeout_s is None else v.timeout_s(timeout_s, "wait_timeout_s")
        async with self._lock():
            if self._state == _HELD:
                return True
            await self._ready()
            try:
                return await self._evented(n.lib.dflockd_lease_wait_start, t)
            finally:
                if self._state == _QUEUED:
                    self._state = _IDLE

    async def release(self) -> bool:
        """Release the lease (or leave the queue): True if released; False if
        nothing was held (queued only, never acquired, already released, lost:
        logged) or the release failed (logged; the server frees the lease on
        disconnect or expiry). The handle stops holding at once."""
        async with self._lock():
            await self._ready()
            return await self._release()

    async def aclose(self) -> None:
        """Cancel a pending acquire/wait, release, and free the library handle.
        The object can acquire again afterwards (a new handle is made)."""
        self._cancel_now()
        async with self._lock():
            await self._ready()
            if self._state != _IDLE:
                await self._release()
            self._gen += 1
            self._watch = None
            h, self._h = self._h, None
            if h is not None:
                h.close(unblock=n.lib.dflockd_lease_cancel)
            self._state = _IDLE

    close = aclose  # `await lock.close()`, as the sync type's close()

    async def __aenter__(self):
        if not await self.acquire():
            raise DflockdTimeoutError(f"timeout acquiring {self.key!r}")
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await self.release()
        except Exception:  # noqa: BLE001 - as the reference: logged, not raised
            log.warning("release failed in __aexit__: key=%s", self.key, exc_info=True)

    # --- beyond the reference --------------------------------------------------------------

    def cancel(self) -> None:
        """From any thread: end a pending acquire()/wait() with
        AcquireCancelledError, leaving nothing held or queued. (Cancelling the
        awaiting task does the same and raises CancelledError there.)"""
        self._cancel_now()

    def on_lost(self, callback: LostCallback | None) -> None:
        """Call `callback(self, error)` once when a held lease is lost (not when it
        is released or closed), on the event loop's thread; a coroutine it returns
        is run as a task. None removes it."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._on_lost = callback
        if callback is not None and self._state == _HELD:
            self._ensure_watch()

    async def wait_lost(self, timeout_s: float | None = None) -> bool:
        """Wait until the lease is lost (True) or `timeout_s` passes (False; None
        = no limit), without a thread. Releasing is not losing."""
        if self.is_lost():
            return True
        fut = asyncio.get_running_loop().create_future()
        self._lost_waiters.append(fut)
        try:
            self._ensure_watch()
            if self.is_lost():  # lost before the watch was registered: it fires at once too
                return True
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if fut in self._lost_waiters:
                self._lost_waiters.remove(fut)

    # --- internals --------------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        """One acquire/enqueue/wait/release/close at a time, per loop."""
        loop = asyncio.get_running_loop()
        if self._serial is None or self._serial_for is None or self._serial_for() is not loop:
            self._serial = asyncio.Lock()
            self._serial_for = weakref.ref(loop)
        return self._serial

    async def _ready(self) -> None:
        """Wait out an operation a cancelled task left running on the handle."""
        p = self._pending
        if p is not None and not p.done():
            await asyncio.wait((p,))

    def _cancel_now(self) -> None:
        h = self._h
        if h is None or h.closed:
            return
        try:
            with h.use() as p:
                n.lib.dflockd_lease_cancel(p)
        except DflockdError:
            pass

    async def _await_op(self, out: _Outcome, *, on_cancel, abandoned):
        """Await an operation's outcome. Cancelled: `on_cancel()` (the C cancel),
        then wait for the outcome and undo it (`abandoned(result)`) before
        re-raising; cancelled again meanwhile, the undo runs when it arrives."""
        self._pending = out.fut
        try:
            return await out.fut
        except asyncio.CancelledError:
            fut = out.fut
            if not fut.done() or fut.cancelled():
                # Cancelled with the task: the outcome goes to a fresh future
                # (or came already, in between).
                fut = asyncio.get_running_loop().create_future()
                out.fut = self._pending = fut
                if out.early is not None:
                    fut.set_result(out.early)
            if on_cancel is not None:
                on_cancel()
            try:
                await asyncio.wait((fut,))
            except asyncio.CancelledError:
                fut.add_done_callback(lambda f: f.cancelled() or f.exception() or abandoned(f.result()))
                raise
            if not fut.cancelled() and fut.exception() is None:
                abandoned(fut.result())
            raise

    async def _started(self, start, *args: int) -> tuple[int, int, BaseException | None]:
        """`start(p, *args, queue, tag)` (a dflockd_lease_*_start of the acquire
        family), then its event: (kind, status, exception)."""
        q = _queue()
        h = self._handle()
        out = _Outcome(asyncio.get_running_loop().create_future())
        tag = q.add(out.handler())
        try:
            with h.use() as p:
                n.call(start, p, *args, q.ptr, tag)
        except BaseException:
            q.discard(tag)
            raise
        kind, status, exc, _ = await self._await_op(out, on_cancel=self._cancel_now, abandoned=self._abandoned_acquire)
        return kind, status, exc

    async def _evented(self, start, *args: int) -> bool:
        """acquire_start / try_acquire_start / wait_start, then its ACQUIRED or
        ACQUIRE_FAILED event: True, False on TIMEOUT, else raised."""
        kind, status, exc = await self._started(start, *args)
        if kind == n.EVENT_ACQUIRED:
            self._granted()
            return True
        self._state = _IDLE
        if status == n.TIMEOUT:
            return False
        raise exc if exc is not None else n.take_error(status, None)

    def _abandoned_acquire(self, outcome) -> None:
        kind = outcome[0]
        if kind in (n.EVENT_ACQUIRED, n.EVENT_ENQUEUED):  # won the race with the cancel: give it back
            self._state = _HELD if kind == n.EVENT_ACQUIRED else _QUEUED
            self._release_quietly()
        else:
            self._state = _IDLE

    def _release_quietly(self) -> None:
        """release_start whose outcome nobody awaits (logged if it fails)."""
        self._state = _IDLE
        self._gen += 1
        h = self._h
        if h is None or h.closed:
            return
        try:
            q = _queue()
            key = self.key

            def done(kind: int, _status: int, exc: BaseException | None, _stats: str | None) -> None:
                if kind == n.EVENT_RELEASE_FAILED:
                    log.warning("%r: release after a cancelled acquire failed: %s", key, exc)

            tag = q.add(done)
            try:
                with h.use() as p:
                    n.call(n.lib.dflockd_lease_release_start, p, q.ptr, tag)
            except BaseException:
                q.discard(tag)
                raise
        except (NotHeldError, LeaseLostError):
            pass
        except Exception as e:  # noqa: BLE001
            log.warning("%r: release after a cancelled acquire failed: %s", self.key, e)

    async def _reset(self) -> None:
        if self._state != _IDLE:
            await self._release()

    def _granted(self) -> None:
        self._state = _HELD
        self._gen += 1
        if self._on_lost is not None or self._lost_waiters:
            self._ensure_watch()

    async def _release(self) -> bool:
        state, self._state = self._state, _IDLE
        self._gen += 1
        h = self._h
        if state == _IDLE or h is None or h.closed:
            return False
        q = _queue()
        fut = asyncio.get_running_loop().create_future()
        tag = q.add(_future_handler(fut))
        try:
            with h.use() as p:
                n.call(n.lib.dflockd_lease_release_start, p, q.ptr, tag)
        except NotHeldError:
            q.discard(tag)
            return False
        except LeaseLostError as e:
            q.discard(tag)
            log.warning("%s %r: release after the lease was lost: %s", type(self).__name__, self.key, e)
            return False
        except (DflockdError, OSError) as e:
            q.discard(tag)
            log.warning("%s %r: release failed: %s", type(self).__name__, self.key, e)
            return False
        # Cancelled here, the release still completes (the handle let go
        # already); its event then finds the future cancelled and is dropped.
        kind, _status, exc, _ = await fut
        if kind == n.EVENT_RELEASED:
            return state == _HELD  # leaving the queue is not a release (False, as the reference)
        log.warning(
            "%s %r: release failed (the server frees the lease on disconnect or expiry): %s",
            type(self).__name__,
            self.key,
            exc,
        )
        return False

    def _ensure_watch(self) -> None:
        """One dflockd_lease_watch_lost per handle and queue, until it fires (the
        library keeps a watch across releases, until the next loss)."""
        q = _queue()
        h = self._h
        if h is None or h.closed:
            return
        w = self._watch
        if w is not None and w[0] is h and w[1] is q and w[2] in q.handlers:
            return
        me = weakref.ref(self)
        tag = 0

        def lost(_kind: int, _status: int, exc: BaseException | None, _stats: str | None) -> None:
            obj = me()
            if obj is None or obj._watch is None or obj._watch[2] != tag:
                return
            obj._watch = None
            obj._fire_lost(exc or LeaseLostError(f"lease on {obj.key!r} lost"))

        tag = q.add(lost)
        try:
            with h.use() as p:
                n.call(n.lib.dflockd_lease_watch_lost, p, q.ptr, tag)
        except BaseException:
            q.discard(tag)
            raise
        self._watch = (h, q, tag)

    def _fire_lost(self, error: BaseException) -> None:
        waiters, self._lost_waiters = self._lost_waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(True)
        cb = self._on_lost
        if cb is None or self._state != _HELD:  # released meanwhile: not reported
            return
        try:
            res = cb(self, error)
            if inspect.isawaitable(res):
                task = asyncio.ensure_future(res)
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_done)
        except Exception:  # noqa: BLE001
            log.exception("on_lost callback for %r raised", self.key)

    def _callback_done(self, task: asyncio.Future) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("on_lost callback for %r raised", self.key, exc_info=task.exception())


class AsyncDistributedLock(_AsyncBase):
    """Async distributed lock; the library renews the lease in the background."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)


class AsyncDistributedSemaphore(_AsyncBase):
    """Async: up to `limit` concurrent holders of `key`."""

    def __init__(self, key: str, *, limit: int = 0, **kwargs: Any) -> None:
        self._limit = v.limit(limit)
        self.limit = self._limit
        super().__init__(key, **kwargs)


_MESSAGE = (
    "AsyncConn: the low-level async connection is not built (the library has no "
    "completion-queue API per connection). Use dflockd.SyncConn in a thread, e.g. "
    "`await asyncio.to_thread(conn.acquire, key, 10)`; conn.abort() interrupts it."
)


class AsyncConn:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_MESSAGE)
