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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from ._validation import check_int

__all__ = ["Executor", "InProcessExecutor", "ProcessPoolExecutor", "make_executor", "auto_workers", "limit_threads", "EXECUTORS"]


class Executor(Protocol):
    """Runs independent tasks; yields ``(index, result)`` in completion order."""

    def map_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        ...

    def close(self) -> None:
        ...


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` BLAS and torch intra-op threads (``None``: unchanged), then restore."""
    if n is None:
        yield
        return
    import sys

    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    ctx = threadpool_limits(n) if threadpool_limits is not None else contextlib.nullcontext()
    with ctx:
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None and old is not None:
                torch.set_num_threads(old)


class InProcessExecutor:
    """Runs tasks one after another in this process (the default; easiest to debug)."""

    def map_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(tasks):
            yield i, fn(*args)

    def close(self) -> None:
        return None


def _init_worker() -> None:
    # One BLAS thread per worker process: workers x threads stays at the core count.
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl is a scikit-learn dependency
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass


class ProcessPoolExecutor:
    """A local pool of worker processes (spawned, so torch and BLAS start clean)."""

    def __init__(self, workers: int) -> None:
        self.workers = check_int(workers, "workers", min_value=1)
        self._pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
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


def auto_workers(n_tasks: int) -> int:
    """``--workers auto``: one process per core for sweeps of 16+ cells, else in-process.

    Process start-up (~1 s) only pays off when there are enough cells to share.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8)) if n_tasks >= 16 else 1


def make_executor(workers: int = 1, kind: str = "local", ray_address: str | None = None) -> Executor:
    """Build an executor.

    Parameters
    ----------
    workers : int
        ``local``: 1 runs in-process, more starts a process pool. ``ray``: ignored (Ray
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
    workers = check_int(workers, "workers", min_value=1)
    return InProcessExecutor() if workers == 1 else ProcessPoolExecutor(workers)
