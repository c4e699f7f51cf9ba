"""Where sweep cells run: one small interface, several engines.

An executor takes a picklable module-level function and a list of argument tuples and
yields ``(index, result)`` as tasks finish, in any order. Experiments never see the
executor; results never depend on it because every task seeds itself from its identity.
A distributed engine (Ray) plugs in by implementing :class:`Executor`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from ._validation import check_int

__all__ = ["Executor", "InProcessExecutor", "ProcessPoolExecutor", "AutoExecutor", "make_executor", "auto_workers", "available_cores", "limit_threads", "EXECUTORS"]


class Executor(Protocol):
    """Runs independent tasks; yields ``(index, result)`` in completion order."""

    def map_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        ...

    def close(self) -> None:
        ...


#: BLAS thread limit already in force in this process (worker initialiser or an enclosing
#: :func:`limit_threads`): entering ``limit_threads`` again with the same ``n`` is free.
#: (``threadpool_limits`` inspects every loaded library: ~2 ms, paid per cell before.)
_CURRENT_LIMIT: int | None = None


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` BLAS and torch intra-op threads (``None``: unchanged), then restore."""
    global _CURRENT_LIMIT
    if n is None:
        yield
        return
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    ctx: Any = contextlib.nullcontext()
    if _CURRENT_LIMIT != n:
        try:
            from threadpoolctl import threadpool_limits

            ctx = threadpool_limits(n)
        except ImportError:  # pragma: no cover
            pass
    prev = _CURRENT_LIMIT
    with ctx:
        _CURRENT_LIMIT = n
        if torch is not None and old != n:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            _CURRENT_LIMIT = prev
            if torch is not None and old is not None and old != n:
                torch.set_num_threads(old)


class InProcessExecutor:
    """Runs tasks one after another in this process (the default; easiest to debug)."""

    def map_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(tasks):
            yield i, fn(*args)

    def close(self) -> None:
        return None


#: seconds between a worker's checks that the process that started it is still alive
PARENT_POLL_S = 0.5


def _watch_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """Exit this worker as soon as ``parent_pid`` (the sweep's main process) is gone.

    A main process killed with SIGKILL runs no clean-up, and a pool worker waits on its task queue for good (with
    the resource tracker, which waits on the workers): a daemon thread polls ``os.getppid()`` (the worker is
    re-parented when its parent dies; POSIX and Windows alike, no prctl needed, and no surprise from
    PR_SET_PDEATHSIG firing when the *thread* that spawned the worker ends) and ends the process with
    ``os._exit`` within ``poll_s`` seconds.
    """
    import threading
    import time

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)  # no clean-up owed: the parent that would collect our results is gone
            time.sleep(poll_s)

    if os.getppid() != parent_pid:  # already gone while we started
        os._exit(1)
    threading.Thread(target=watch, name="uqkd-parent-watchdog", daemon=True).start()


def _init_worker(parent_pid: int | None = None) -> None:
    """One BLAS / OpenMP thread per worker process: workers x threads stays at the core count; and the worker
    exits when ``parent_pid`` dies (:func:`_watch_parent`).

    torch is *not* imported here (it costs ~1.5 s per process, more than a whole numpy-only
    sweep); ``OMP_NUM_THREADS=1`` makes torch start with one intra-op thread if a cell
    imports it, and MLP cells set their own thread count (``num_threads``) anyway.
    """
    if parent_pid is not None:
        _watch_parent(parent_pid)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from . import _malloc

    _malloc.tune()  # as in the CLI process (see uqkd._malloc)
    global _CURRENT_LIMIT
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        _CURRENT_LIMIT = 1
    except Exception:  # pragma: no cover - threadpoolctl is a scikit-learn dependency
        pass
    torch = sys.modules.get("torch")
    if torch is not None:  # pragma: no cover - only if something imported it on the way in
        torch.set_num_threads(1)


class ProcessPoolExecutor:
    """A local pool of worker processes (spawned, so torch and BLAS start clean)."""

    def __init__(self, workers: int) -> None:
        self.workers = check_int(workers, "workers", min_value=1)
        self._pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            initargs=(os.getpid(),)
        )

    def map_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        futures = {self._pool.submit(fn, *args): i for i, args in enumerate(tasks)}
        try:
            for fut in cf.as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


EXECUTORS = ("local", "ray")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: Seconds a spawned worker needs before its first result (interpreter, numpy, uqkd, the
#: cell's data set-up), measured on the 2-core development machine under load: 0.5-1.0 s.
WORKER_STARTUP_S = 1.0


class AutoExecutor:
    """``--workers auto``: start in-process; add worker processes only when they pay.

    The first cells run in this process and are timed. Once the measured cost of the
    remaining cells exceeds ``min_parallel_s`` (twice the start-up cost of a worker), a pool
    of ``cores - 1`` workers is spawned and the remaining cells are submitted to it from the
    back of the list, while this process keeps taking cells from the front (cancelling their
    pool futures, which have not started). Worker start-up thus overlaps useful work here,
    and a short sweep never spawns at all: ``auto`` never loses more than a worker's
    start-up to in-process, and on a short sweep loses nothing. Results do not depend on
    where a cell ran (every cell seeds itself from its identity and runs with the same
    thread count).
    """

    def __init__(self, max_workers: int | None = None, min_parallel_s: float | None = None) -> None:
        cores = available_cores()
        self.max_workers = max(0, min(cores, 8) - 1) if max_workers is None else check_int(max_workers, "max_workers",
                                                                                           min_value=0)
        self.min_parallel_s = 2 * WORKER_STARTUP_S if min_parallel_s is None else float(min_parallel_s)
        self._pool: cf.ProcessPoolExecutor | None = None
        self.spawned = False

    def map_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        n = len(tasks)
        queued: dict[int, cf.Future[Any]] = {}  # task index -> pool future (submitted, not yet collected)
        front = 0  # next task index this process takes; the pool works from the back
        t0 = time.perf_counter()
        try:
            while front < n:
                fut = queued.get(front)
                if fut is not None:
                    if not fut.cancel():
                        break  # a worker already started it: the pool has reached the front
                    del queued[front]
                i = front
                front += 1
                yield i, fn(*tasks[i])
                for j in [j for j, f in queued.items() if f.done()]:
                    yield j, queued.pop(j).result()
                if self._pool is None and self.max_workers > 0 and front < n:
                    per_cell = (time.perf_counter() - t0) / front
                    if per_cell * (n - front) > self.min_parallel_s:
                        pool = self._start_pool()
                        for j in range(n - 1, front - 1, -1):
                            queued[j] = pool.submit(fn, *tasks[j])
            index = {f: j for j, f in queued.items()}
            for fut in cf.as_completed(list(index)):
                j = index[fut]
                del queued[j]
                yield j, fut.result()
        finally:
            for fut in queued.values():
                fut.cancel()

    def _start_pool(self) -> cf.ProcessPoolExecutor:
        self._pool = cf.ProcessPoolExecutor(
            max_workers=self.max_workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            initargs=(os.getpid(),)
        )
        self.spawned = True
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def auto_workers(n_tasks: int) -> int:
    """Worker processes for a sweep of ``n_tasks`` cells when nothing is known of their cost.

    One per core (at most 8) for 16+ cells, else 1. ``--workers auto`` in the runner uses
    :class:`AutoExecutor` instead, which decides from the measured cost of the first cells.
    """
    cores = available_cores()
    return max(1, min(cores, 8)) if n_tasks >= 16 else 1


def make_executor(workers: int | str = 1, kind: str = "local", ray_address: str | None = None) -> Executor:
    """Build an executor.

    Parameters
    ----------
    workers : int
        ``local``: 1 runs in-process, more starts a process pool, ``"auto"`` an
        :class:`AutoExecutor` (in-process first, a pool when the measured cost says so). ``ray``: ignored (Ray
        schedules by the cluster's resources).
    kind : {"local", "ray"}
    ray_address : str, optional
        ``ray``: None starts a local Ray instance; ``"auto"`` joins the running cluster;
        ``"HOST:PORT"`` connects to that head node.
    """
    from .config import UserError

    if kind == "ray":
        try:
            from .executors_ray import RayExecutor
        except ImportError as exc:
            raise UserError(f"--executor ray: Ray is not installed ({exc}); install it with: pip install 'uqkd[ray]'") from None
        return RayExecutor(address=ray_address)
    if kind != "local":
        raise UserError(f"--executor: expected one of {', '.join(EXECUTORS)}; got {kind!r}")
    if workers == "auto":
        return AutoExecutor()
    workers = check_int(workers, "workers", min_value=1)
    return InProcessExecutor() if workers == 1 else ProcessPoolExecutor(workers)
