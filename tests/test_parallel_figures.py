"""Figures drawn in forked processes after a sweep (plotting.parallel_figures): the same bytes as
drawing them here, every child reaped, a failure in a child named, nothing forked where it is unsafe."""

import dataclasses
import os
import sys
import threading

import matplotlib.artist
import matplotlib.pyplot as plt
import numpy as np
import pytest

from uqkd import plotting as plots
from uqkd import runner
from uqkd.runner import run_experiment

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="figures are forked on Linux only")

EXP = "variance-aware-linear"
TINY = {"n_students": 4, "alphas": "0.1", "ks": "1,3"}


def _figure(seed):
    """Log axes, error bars, a legend and mathtext tick labels: the parts the sweeps' figures use."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    k = np.array([1, 2, 4, 8, 16])
    for m in range(3):
        y = 1.0 / k + rng.uniform(0, 0.01, k.size)
        axes[0].errorbar(k, y, yerr=0.1 * y, marker="o", label=f"method {m}")
        axes[1].loglog(k, y, marker="o")
    axes[0].legend()
    axes[1].set(xlabel="k", ylabel="variance", title=r"$\alpha=0.1$")
    return fig


class _UnDrawable(matplotlib.artist.Artist):
    def draw(self, renderer):
        raise ValueError("this artist cannot be drawn")


def _broken_figure():
    """Builds fine, fails when drawn (the part a child does)."""
    fig = _figure(0)
    fig.add_artist(_UnDrawable())
    return fig


def _forks(monkeypatch):
    calls = []
    real = os.fork

    def fork():
        pid = real()
        if pid:
            calls.append(pid)
        return pid

    monkeypatch.setattr(plots.os, "fork", fork)
    return calls


def _reaped(pids):
    """Each forked child has been waited for (waiting again finds no such child)."""
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return True


def test_forked_figures_are_byte_identical_to_drawing_them_here(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    for seed in range(3):
        plots.save_figure(_figure(seed), here / f"f{seed}.png")
    forks = _forks(monkeypatch)
    with plots.parallel_figures(max_children=2):
        for seed in range(3):
            plots.save_figure(_figure(seed), there / f"f{seed}.png")
    assert len(forks) == 2  # the first two went to children, the last was drawn here
    for seed in range(3):
        assert (there / f"f{seed}.png").read_bytes() == (here / f"f{seed}.png").read_bytes()
    assert plt.get_fignums() == []  # the parent closed every figure it built


def test_a_figure_that_fails_in_its_child_is_named_and_every_child_is_reaped(tmp_path, monkeypatch):
    forks = _forks(monkeypatch)
    bad = _broken_figure()
    with pytest.raises(RuntimeError, match=r"could not be drawn: bad\.png \(ValueError: this artist cannot be drawn\)"):
        with plots.parallel_figures(max_children=2):
            plots.save_figure(bad, tmp_path / "bad.png")
            plots.save_figure(_figure(1), tmp_path / "good.png")
    assert len(forks) == 1
    assert (tmp_path / "good.png").stat().st_size > 0
    assert not (tmp_path / "bad.png").exists()
    assert _reaped(forks)


def test_an_interrupt_in_the_block_kills_and_reaps_the_children(tmp_path, monkeypatch):
    forks = _forks(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        with plots.parallel_figures(max_children=2):
            plots.save_figure(_figure(0), tmp_path / "a.png")
            plots.save_figure(_figure(1), tmp_path / "b.png")
            raise KeyboardInterrupt
    assert len(forks) == 1 and plt.get_fignums() == []
    assert _reaped(forks) and plots._RENDERER is None


def test_no_fork_while_another_thread_runs(tmp_path, monkeypatch):
    forks = _forks(monkeypatch)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        with plots.parallel_figures(max_children=2):
            plots.save_figure(_figure(0), tmp_path / "a.png")
            plots.save_figure(_figure(1), tmp_path / "b.png")
    finally:
        stop.set()
        t.join()
    assert forks == [] and (tmp_path / "a.png").stat().st_size > 0


def test_a_single_figure_is_drawn_here(tmp_path, monkeypatch):
    forks = _forks(monkeypatch)
    with plots.parallel_figures(max_children=2):
        plots.save_figure(_figure(0), tmp_path / "a.png")
    assert forks == [] and (tmp_path / "a.png").stat().st_size > 0 and plt.get_fignums() == []


def test_one_core_draws_here(tmp_path, monkeypatch):
    forks = _forks(monkeypatch)
    monkeypatch.setattr(plots.os, "sched_getaffinity", lambda pid: {0})
    with plots.parallel_figures():
        plots.save_figure(_figure(0), tmp_path / "a.png")
        plots.save_figure(_figure(1), tmp_path / "b.png")
    assert forks == [] and (tmp_path / "a.png").stat().st_size > 0


def test_a_sweep_publishes_forked_figures_and_a_child_failure_keeps_the_earlier_results(tmp_path, monkeypatch):
    forks = _forks(monkeypatch)
    first = run_experiment(EXP, out=tmp_path, overrides=dict(TINY), progress=True, workers=1)
    assert len(forks) == len(first.figures) - 1 >= 1  # all but the last figure; the progress bar's monitor thread does not block forking
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir() if p.is_file()}
    exp = runner.get_experiment(EXP)

    def plot(df, cfg, d):
        return [*exp.plot(df, cfg, d), plots.save_figure(_broken_figure(), d / "broken.png")]

    monkeypatch.setitem(runner.__dict__, "get_experiment", lambda name: dataclasses.replace(exp, plot=plot))
    # drawn in a child (RuntimeError naming it) or here when every child is busy (the ValueError itself)
    with pytest.raises((RuntimeError, ValueError), match="this artist cannot be drawn"):
        run_experiment(EXP, out=tmp_path, overrides={**TINY, "n_students": 5}, progress=False, workers=1)
    after = {p.name: p.read_bytes() for p in first.out_dir.iterdir() if p.is_file()}
    assert after == before  # results.csv, config.json and the figures of the first run untouched
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".publish-")]
