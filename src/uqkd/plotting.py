"""Plot helpers: ``plot_*(..., ax=None) -> Axes``; never call ``show()``."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_sweep", "save_figure", "parallel_figures"]


def plot_sweep(
    df: Any,
    x: str,
    y: str,
    *,
    yerr: str | None = None,
    theory: str | None = None,
    label: str | None = None,
    ax: plt.Axes | None = None,
    logx: bool = False,
    logy: bool = False,
    legend: bool = True,
    band_alpha: float = 0.15,
    theory_label: str | None = None,
) -> plt.Axes:
    """Line of ``y`` against ``x`` with a ±``yerr`` band (spread across students) and a dashed theory curve.

    Parameters
    ----------
    df : pandas.DataFrame
        Tidy results (one row per x for this line).
    x, y, yerr, theory : str
        Column names.
    """
    if ax is None:
        _, ax = plt.subplots()
    d = df.sort_values(x)
    xs = d[x].to_numpy(dtype=float)
    ys = d[y].to_numpy(dtype=float)
    (line,) = ax.plot(xs, ys, marker="o", ms=3, label=label)
    if yerr is not None and yerr in d:
        e = d[yerr].to_numpy(dtype=float)
        lo = ys - e
        if logy:
            lo = np.where(lo > 0, lo, np.nan)
        ax.fill_between(xs, lo, ys + e, alpha=band_alpha, color=line.get_color(), lw=0)
    if theory is not None and theory in d:
        t = d[theory].to_numpy(dtype=float)
        if np.isfinite(t).any():
            tl = theory_label or (f"{label} (theory)" if label else "theory")
            ax.plot(xs, t, ls="--", lw=1.2, color=line.get_color(), label=tl)
    # log axes get minor ticks at 2 and 5 per decade only: the default 2..9 creates most of the
    # figure's tick artists, and drawing them was ~0.3 s of the variance-aware-linear figures
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    if logy:
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)
    return ax


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110, *, tight: bool = True) -> Path:
    """Save ``fig`` as PNG atomically and close it.

    ``tight=False`` keeps the figure's own ``subplots_adjust`` margins: ``tight_layout`` measures
    every tick label of every axes (about 1.4 s for a 2 x 4 grid of log axes here, more than
    the rest of drawing and saving together). The PNG is then saved with ``bbox_inches="tight"``
    so that a tick or axis label those margins would cut is kept (about 0.2 s more a figure).

    Inside :func:`parallel_figures` the drawing (the expensive part: ticks, text, rasterising)
    may run in a forked child process while this one builds the next figure, and the file
    exists when the block ends; it is the same byte for byte.
    """
    path = Path(path)
    if _RENDERER is not None:
        _RENDERER.add(fig, path, dpi, tight)
        return path
    try:
        _render(fig, path, dpi, tight)
    finally:
        plt.close(fig)
    return path


def _render(fig: plt.Figure, path: Path, dpi: int, tight: bool) -> None:
    from ._io import atomic_write_bytes

    buf = io.BytesIO()
    if tight:
        fig.tight_layout(rect=(0, 0.07, 1, 1) if fig.legends else None)
        fig.savefig(buf, format="png", dpi=dpi)
    else:  # fixed margins may cut a long tick or axis label: the saved area grows to hold every label
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    atomic_write_bytes(path, buf.getvalue())


class _ForkRenderer:
    """Draws figures in forked children, at most ``max_children`` at a time (see parallel_figures)."""

    def __init__(self, max_children: int) -> None:
        self.max_children = max_children
        self.children: dict[int, tuple[Path, int]] = {}  # pid -> (the figure it draws, its error pipe)
        self.failed: list[str] = []
        self.pending: tuple[plt.Figure, Path, int, bool] | None = None  # the last figure saved

    def add(self, fig: plt.Figure, path: Path, dpi: int, tight: bool) -> None:
        """Hold ``fig`` until the next one comes: only a figure with more to build after it is
        forked; the last is drawn here while the children draw the others (one figure: no fork)."""
        self.flush(last=False)
        self.pending = (fig, path, dpi, tight)

    def flush(self, *, last: bool) -> None:
        if self.pending is None:
            return
        fig, path, dpi, tight = self.pending
        self.pending = None
        try:
            if last or not self.submit(lambda: _render(fig, path, dpi, tight), path):
                _render(fig, path, dpi, tight)
        finally:
            plt.close(fig)

    def submit(self, draw: Callable[[], None], path: Path) -> bool:
        """Start ``draw`` in a child; False (the caller draws it) when all children are busy."""
        self._reap(block=False)
        # a fork copies only the calling thread: with another Python thread alive (holding a lock
        # the child might need) the figure is drawn here instead
        if len(self.children) >= self.max_children or _other_threads() or _cuda_initialized():
            return False
        sys.stdout.flush()
        sys.stderr.flush()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: draw, write, and leave without running the parent's cleanup
            code = 1
            try:
                os.close(err_r)
                draw()
                code = 0
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
                    # within the pipe's buffer, so the write never waits for the parent
                    os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:2000])
            finally:
                os._exit(code)
        os.close(err_w)
        self.children[pid] = (path, err_r)
        return True

    def _reap(self, *, block: bool) -> None:
        for pid in list(self.children):
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            if done:
                path, err_r = self.children.pop(pid)
                with os.fdopen(err_r, "rb") as fh:
                    why = fh.read().decode(errors="replace")
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    self.failed.append(f"{path.name} ({why or f'drawing process exit status {code}'})")

    def close(self, *, kill: bool) -> None:
        if kill:
            if self.pending is not None:
                plt.close(self.pending[0])
                self.pending = None
            for pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reap(block=True)


_RENDERER: _ForkRenderer | None = None


def _other_threads() -> list[threading.Thread]:
    """Threads besides this one, except tqdm's progress-bar monitors.

    A tqdm monitor (left by any progress bar of the session) sleeps on an event and takes only
    tqdm's own lock, which a child that draws a figure never touches.
    """
    monitor = getattr(sys.modules.get("tqdm._monitor"), "TMonitor", ())
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and not isinstance(t, monitor)]


def _cuda_initialized() -> bool:
    """CUDA does not support a process forked after its initialisation (the LLM experiments)."""
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # pragma: no cover - a torch build without CUDA bindings
        return False


@contextlib.contextmanager
def parallel_figures(max_children: int | None = None) -> Iterator[None]:
    """Draw the figures that :func:`save_figure` saves in this block on the idle cores.

    Each figure is built here, then drawn and written by a forked child process (at most
    ``max_children``, default: cores + 1, as this process mostly waits once it has built the
    figures) while this process builds the next one; the last figure, and any that finds every
    child busy, is drawn here (so a single figure is never forked). On leaving the block every
    figure is written and every child has finished; a figure whose child failed raises
    ``RuntimeError`` naming it. Where ``fork`` is unavailable or there is one core, figures are
    drawn here as without the block.
    """
    global _RENDERER
    from .executors import available_cores

    cores = available_cores()
    if max_children is None:
        max_children = cores + 1 if cores > 1 else 0
    if _RENDERER is not None or max_children < 1 or not hasattr(os, "fork") or sys.platform != "linux":
        yield
        return
    renderer = _RENDERER = _ForkRenderer(max_children)
    finished = False
    try:
        yield
        renderer.flush(last=True)
        renderer.close(kill=False)
        finished = True
    finally:
        _RENDERER = None
        if not finished:  # an error or an interrupt here: no child outlives the block
            renderer.close(kill=True)
    if renderer.failed:
        raise RuntimeError(f"figure(s) could not be drawn: {', '.join(renderer.failed)}")
