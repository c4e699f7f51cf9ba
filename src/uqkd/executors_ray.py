"""Run sweep cells, or any picklable tasks, as Ray tasks (optional extra ``uqkd[ray]``).

:class:`RayExecutor` implements :class:`uqkd.executors.Executor` on a Ray cluster: every
task becomes one Ray task, results stream back in completion order and the sweep runner
writes each finished cell as it arrives, so resume works exactly as with local workers.
Results do not depend on where tasks run: every task seeds itself from its identity.

Arguments shared by several tasks (the experiment config, large arrays such as inputs or
teacher outputs) go into the object store once with ``ray.put`` and every task receives a
reference, instead of one serialised copy per task. Tasks lost with a node or a worker
process are retried by Ray (``max_retries``); a task that raises (a user error in a cell)
is not retried and its original exception, type and message, is raised in the driver,
without the Ray traceback around it.

:func:`ray_map` is the same machinery as a generator for other modules, with per-task
resources declared (``num_cpus``, ``num_gpus``), e.g. teacher sampling per prompt shard or
one student fine-tune per task on a GPU cluster.

Addresses
---------
``None``
    Start a private local Ray instance (all cores of this machine, no dashboard, quiet
    logging) and stop it on :meth:`RayExecutor.close`.
``"auto"``
    Join the cluster already running on this machine (``ray start --head``) or named by
    the ``RAY_ADDRESS`` environment variable.
``"HOST:PORT"``
    Connect to the head node at that address (the ``--port`` of ``ray start --head``).

A cluster joined this way is never shut down: ``close`` only disconnects the driver. If
Ray is already initialised in this process (the caller called ``ray.init``), that
connection is used as it is and left open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import ray
import ray.exceptions

from ._validation import check_int
from .config import UserError

__all__ = ["RayExecutor", "RayTaskFailed", "ray_map"]

# Arguments of these types are cheap to send with every task; anything else that several
# tasks share goes into the object store once.
_INLINE = (str, bytes, int, float, complex, bool, type(None))
_CONNECT_TIMEOUT_S = 5.0


def _split_host_port(address: str) -> tuple[str, int] | None:
    """``"HOST:PORT"`` (optionally ``ray://`` or ``[v6]:PORT``) -> (host, port); None if not of that form."""
    text = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _check_reachable(address: str, label: str = "--ray-address") -> None:
    """Fail fast with a :class:`UserError` naming ``address`` when nothing listens there."""
    hp = _split_host_port(address)
    if hp is None:
        raise UserError(f"{label}: expected 'auto' or HOST:PORT of a Ray head node, got {address!r}")
    host, port = hp
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserError(
            f"{label} {address}: cannot reach a Ray head node at that address ({exc.strerror or exc}); "
            f"start one with `ray start --head --port={port}` or check the address"
        ) from None


def _machine_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - non-Linux


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence one logger's warnings (Ray's token-auth notice for a private local instance)."""
    log = logging.getLogger(name)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


def _connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Initialise Ray for ``address``; returns True if this call started or joined it (and should end it)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "configure_logging": True}
    if address is None:
        # Ray's usage-stats prompt and upload are off unless the user turned them on.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        with _quiet_logger("ray._private.authentication.authentication_token_setup"):
            ray.init(
                address="local",
                num_cpus=num_cpus if num_cpus is not None else _machine_cpus(),
                include_dashboard=False,
                **quiet,
            )
        return True
    if address != "auto":
        _check_reachable(address)
    elif os.environ.get("RAY_ADDRESS", "").strip() not in ("", "auto", "local"):
        _check_reachable(os.environ["RAY_ADDRESS"].strip(), "--ray-address auto: RAY_ADDRESS")
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as exc:
        if address == "auto":
            raise UserError(
                "--ray-address auto: no running Ray cluster found on this machine or in RAY_ADDRESS; "
                "start one with `ray start --head`, or give its HOST:PORT"
            ) from None
        raise UserError(f"--ray-address {address}: cannot connect to a Ray cluster there: {_first_line(exc)}") from None
    return True


class RayTaskFailed(RuntimeError):
    """A Ray task failed for a system reason (node or worker lost) after all its retries."""


class RayExecutor:
    """Run tasks as Ray tasks; yields ``(index, result)`` as they finish.

    Parameters
    ----------
    address : str, optional
        ``None`` starts a private local Ray instance; ``"auto"`` joins a running cluster;
        ``"HOST:PORT"`` connects to that head node.
    num_cpus : float
        CPUs each task reserves (Ray schedules by it; default 1, one cell per core).
    num_gpus : float
        GPUs each task reserves (fractions share a GPU).
    max_retries : int
        Times Ray reruns a task whose worker process or node died. Exceptions raised by the
        task itself are not retried: they are deterministic.
    max_in_flight : int, optional
        Tasks submitted at once (more are submitted as results come back), so sweeps of
        10^5 cells do not flood the scheduler. Default: four per cluster CPU, at least 64.
    local_cpus : int, optional
        With ``address=None``: CPUs of the local instance (default: this machine's cores).
    resources : dict, optional
        Custom Ray resources each task needs, e.g. ``{"large_memory": 1}``.

    Notes
    -----
    Arguments that are not plain scalars and that several tasks share (identical objects)
    are put in the object store once; numpy arrays then arrive read-only in the tasks.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = 3,
        max_in_flight: int | None = None,
        local_cpus: int | None = None,
        resources: dict[str, float] | None = None,
    ) -> None:
        if num_cpus < 0 or num_gpus < 0:
            raise ValueError(f"num_cpus and num_gpus must be >= 0, got {num_cpus} and {num_gpus}")
        self.address = address
        self.max_retries = check_int(max_retries, "max_retries", min_value=0)
        self.max_in_flight = None if max_in_flight is None else check_int(max_in_flight, "max_in_flight", min_value=1)
        self._options: dict[str, Any] = {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
        }
        if resources:
            self._options["resources"] = dict(resources)
        self._owned = _connect(address, local_cpus)
        self._local = self._owned and address is None
        self._closed = False

    def _check_feasible(self) -> None:
        """A task needing more than the whole cluster has would wait forever: say so."""
        total = ray.cluster_resources()
        need = {"CPU": self._options["num_cpus"], "GPU": self._options["num_gpus"], **self._options.get("resources", {})}
        short = [f"{k}={v:g} (the cluster has {total.get(k, 0):g})" for k, v in need.items() if v > total.get(k, 0)]
        if not short:
            return
        msg = f"Ray tasks request {', '.join(short)}"
        if self._local:
            raise UserError(f"{msg}; the local Ray instance cannot run them: connect to a cluster with --ray-address")
        warnings.warn(f"{msg}; they wait until the cluster provides these resources", RuntimeWarning, stacklevel=3)

    def _window(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        cpus = ray.cluster_resources().get("CPU", 1.0)
        return max(64, 4 * int(cpus))

    @staticmethod
    def _share(tasks: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Replace arguments shared by several tasks with one object-store reference each."""
        counts = Counter(id(a) for args in tasks for a in args if not isinstance(a, _INLINE))
        refs: dict[int, Any] = {}
        out = []
        for args in tasks:
            new = []
            for a in args:
                if not isinstance(a, _INLINE) and counts[id(a)] > 1:
                    if id(a) not in refs:
                        refs[id(a)] = ray.put(a)
                    a = refs[id(a)]
                new.append(a)
            out.append(tuple(new))
        return out

    def map_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        """Run ``fn(*args)`` for every tuple in ``tasks``; yield ``(index, result)`` in completion order.

        Parameters
        ----------
        fn : callable
            A picklable (module-level) function.
        tasks : sequence of tuple
            Positional arguments of each call.

        Yields
        ------
        (int, object)
            Index into ``tasks`` and the call's result, as each task finishes.

        Raises
        ------
        Exception
            The original exception of the first task that raised (its type and message).
        RayTaskFailed
            A task whose worker or node died more often than ``max_retries``.
        """
        if self._closed:
            raise RuntimeError("RayExecutor is closed")
        tasks = list(tasks)
        if not tasks:
            return
        self._check_feasible()
        remote = ray.remote(fn).options(**self._options)
        shared = self._share(tasks)
        window = self._window()
        pending: dict[Any, int] = {}
        nxt = 0
        try:
            while nxt < len(shared) or pending:
                while nxt < len(shared) and len(pending) < window:
                    pending[remote.remote(*shared[nxt])] = nxt
                    nxt += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    yield i, self._get(ref, i, fn)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # pragma: no cover - best effort on the way out
                    pass

    def _get(self, ref: Any, index: int, fn: Callable[..., Any]) -> Any:
        name = getattr(fn, "__qualname__", repr(fn))
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
                # The task's own exception: raise it as it was, once, without Ray's wrapping.
                raise cause.with_traceback(None) from None
            err = cause if isinstance(cause, BaseException) else exc
            raise RayTaskFailed(f"Ray task {index} ({name}) failed: {type(err).__name__}: {_first_line(err)}") from None
        except ray.exceptions.RayError as exc:
            raise RayTaskFailed(
                f"Ray task {index} ({name}) failed after {self.max_retries} retries: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from None

    def close(self) -> None:
        """Disconnect; stop the local Ray instance if this executor started it."""
        if self._closed:
            return
        self._closed = True
        if self._owned and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ray_map(
    fn: Callable[..., Any],
    tasks: Iterable[tuple[Any, ...]],
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
    max_retries: int = 3,
    resources: dict[str, float] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*args)`` for every tuple in ``tasks`` as Ray tasks with declared resources.

    Uses the Ray connection of this process if there is one, else connects to ``address``
    (None: a private local instance) for the duration of the iteration.

    Parameters
    ----------
    fn : callable
        A picklable (module-level) function.
    tasks : iterable of tuple
        Positional arguments of each call; arguments shared by several calls (the same
        object) are sent through the object store once.
    num_cpus, num_gpus : float
        Resources each task reserves, e.g. ``num_gpus=1`` for one student fine-tune per
        GPU, or ``num_gpus=0.5`` for two per GPU.
    address : str, optional
        As for :class:`RayExecutor`.
    max_retries : int
        Reruns of a task whose worker or node died.
    resources : dict, optional
        Custom Ray resources each task needs.

    Yields
    ------
    (int, object)
        Index of the task and its result, in completion order.

    Examples
    --------
    >>> for i, shard in ray_map(sample_teacher, [(cfg, prompts) for prompts in shards], num_gpus=1):  # doctest: +SKIP
    ...     save(i, shard)
    """
    ex = RayExecutor(address, num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, resources=resources)
    try:
        yield from ex.map_unordered(fn, list(tasks))
    finally:
        ex.close()
