"""acquire+release pairs/s of this package next to the reference client
(dflockd-client 2.1.1), same server, same process, same API calls, at 1 and 10
threads (each thread its own lock object on its own key); and the asyncio types
of this package (and of the reference, when installed) at 1 and 10 tasks on one
event loop (one thread), each task its own lock on its own key, with the ratios
asyncio/sync (this package) and asyncio this package/reference.

    make bench-python   # a standalone release dflockd-testserver, release library

Server: DFLOCKD_SERVERS (host:port), else the embedded test server. The reference
is taken from DFLOCKD_PY_REF (default build/python-ref, `make python-ref`).
Each configuration runs BENCH_SECONDS (default 2) per round, rounds alternate the
two clients (BENCH_ROUNDS, default 3) so drift hits both; the median is printed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
REPO = HERE.parents[2]
REF_DIR = Path(os.environ.get("DFLOCKD_PY_REF", REPO / "build" / "python-ref"))

import dflockd  # noqa: E402
from dflockd.testing import TestServer  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
THREADS = (1, 10)


def run(make_lock, threads: int, tag: str) -> float:
    locks = [make_lock(f"pybench-{tag}-{threads}-{i}-{time.time_ns()}") for i in range(threads)]
    for lock in locks:  # warm up (connections, pools)
        assert lock.acquire()
        lock.release()
    counts = [0] * threads
    start_gate = threading.Barrier(threads + 1)
    stop = [False]

    def worker(i):
        lock = locks[i]
        start_gate.wait()
        c = 0
        while not stop[0]:
            if not lock.acquire():
                raise RuntimeError("acquire timed out")
            lock.release()
            c += 1
        counts[i] = c

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    time.sleep(SECONDS)
    stop[0] = True
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    for lock in locks:
        lock.close()
    return sum(counts) / elapsed


def run_async(make_lock, tasks: int, tag: str) -> float:
    async def go() -> float:
        locks = [make_lock(f"pybench-{tag}-{tasks}-{i}-{time.time_ns()}") for i in range(tasks)]
        for lock in locks:  # warm up (connections, pools, the loop's queue)
            assert await lock.acquire()
            await lock.release()
        counts = [0] * tasks
        stop = [False]

        async def worker(i):
            lock, c = locks[i], 0
            while not stop[0]:
                if not await lock.acquire():
                    raise RuntimeError("acquire timed out")
                await lock.release()
                c += 1
            counts[i] = c

        t0 = time.perf_counter()
        workers = [asyncio.create_task(worker(i)) for i in range(tasks)]
        await asyncio.sleep(SECONDS)
        stop[0] = True
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - t0
        for lock in locks:
            close = getattr(lock, "aclose", None) or getattr(lock, "close", None)
            done = close() if close is not None else None
            if inspect.isawaitable(done):
                await done
        return sum(counts) / elapsed

    return asyncio.run(go())


def main() -> int:
    env = os.environ.get("DFLOCKD_SERVERS", "")
    srv = None
    if env:
        host, _, port = env.split(",")[0].rpartition(":")
        servers = [(host, int(port))]
    else:
        srv = TestServer(max_locks=100000)
        servers = srv.servers
    clients = {"dflockd (libdflockd)": lambda k: dflockd.SyncDistributedLock(k, servers=servers)}
    async_name = "dflockd asyncio (tasks)"
    ref_async_name = "dflockd-client asyncio"
    asyncs = {async_name: lambda k: dflockd.AsyncDistributedLock(k, servers=servers)}
    ref_note = ""
    if (REF_DIR / "dflockd_client").is_dir():
        sys.path.append(str(REF_DIR))
        import dflockd_client

        clients["dflockd-client 2.1.1"] = lambda k: dflockd_client.SyncDistributedLock(k, servers=servers)
        asyncs[ref_async_name] = lambda k: dflockd_client.AsyncDistributedLock(k, servers=servers)
    else:
        ref_note = f"(reference client not installed in {REF_DIR}: run `make python-ref`)"
    print(f"server {servers[0][0]}:{servers[0][1]}{' (embedded)' if srv else ''}; python {sys.version.split()[0]}; "
          f"library {dflockd.LIBRARY_VERSION} from {dflockd._native.LOADED_FROM}; {ROUNDS} rounds x {SECONDS:g} s")
    results: dict[tuple[str, int], list[float]] = {}
    for r in range(ROUNDS):
        names = list(clients) if r % 2 == 0 else list(reversed(clients))
        for threads in THREADS:
            for name in names:
                rate = run(clients[name], threads, f"{r}{len(name)}")
                results.setdefault((name, threads), []).append(rate)
                print(f"PYBENCH client={name.split()[0]} threads={threads} round={r} pairs_per_s={rate:.0f}", flush=True)
            for aname, make in asyncs.items():
                rate = run_async(make, threads, f"{r}a{len(aname)}")
                results.setdefault((aname, threads), []).append(rate)
                label = "dflockd-asyncio" if aname == async_name else "dflockd-client-asyncio"
                print(f"PYBENCH client={label} tasks={threads} round={r} pairs_per_s={rate:.0f}", flush=True)
    names = list(clients)
    print()
    header = f"{'threads':>7}  " + "  ".join(f"{n:>22}" for n in names) + ("  ratio (lib / reference)" if len(names) == 2 else "")
    header += "".join(f"  {a:>24}" for a in asyncs)
    header += "  asyncio/sync (lib)" + ("  asyncio lib/reference" if len(asyncs) == 2 else "")
    print("acquire+release pairs/s, median of rounds (asyncio: that many tasks on one loop, one thread)")
    print(header)
    for threads in THREADS:
        med = [statistics.median(results[(n, threads)]) for n in names]
        row = f"{threads:>7}  " + "  ".join(f"{m:>22.0f}" for m in med)
        if len(med) == 2:
            row += f"  {med[0] / med[1]:>23.1f}x"
        amed = [statistics.median(results[(a, threads)]) for a in asyncs]
        row += "".join(f"  {m:>24.0f}" for m in amed)
        row += f"  {amed[0] / med[0]:>17.2f}x"
        if len(amed) == 2:
            row += f"  {amed[0] / amed[1]:>20.1f}x"
        print(row)
        print(f"PYBENCH_RATIO threads={threads} asyncio_over_sync={amed[0] / med[0]:.4f}"
              + (f" asyncio_over_reference_asyncio={amed[0] / amed[1]:.4f}" if len(amed) == 2 else ""))
    if ref_note:
        print(ref_note)
    if srv:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
