"""Signals and orphans (issue 12): SIGTERM/SIGINT mid-sweep exits 130 with one line, leaves no temporary file
and no worker process behind, and the resumed run ends byte-identical to an undisturbed one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import uqkd
from uqkd.runner import run_experiment

EXP = "variance-aware-linear"
SETTINGS = {"n_students": 300, "alphas": "0.1,1"}
SET = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
HOLD = 3  # the run pauses right after its 3rd cell record (the runner's testing hook), so the signal lands mid-sweep
# for certain: records are written in bursts as results arrive (the main process imports pandas and pyplot
# mid-sweep), and waiting for "3 records on disk" alone let a fast sweep finish all 60 cells before the signal
ENV = {**os.environ, "PYTHONPATH": str(Path(uqkd.__file__).parents[1]), "UQKD_TEST_HOLD_AFTER_CELLS": str(HOLD)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    res = run_experiment(EXP, out=tmp_path_factory.mktemp("ref"), overrides=dict(SETTINGS), progress=False,
                         make_figures=False, workers=1)
    return res.results_csv.read_bytes(), res.n_cells


def _start(out, workers):
    return subprocess.Popen([sys.executable, "-m", "uqkd", "run", EXP, "--out", str(out), "--quiet",
                             "--workers", str(workers), *SET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            # a run started in the background (nohup, CI) inherits SIGINT ignored, and Python then
                            # installs no KeyboardInterrupt handler: give the child the default disposition
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_cells(proc, cells, n, timeout=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.communicate()}")
        if cells.is_dir() and len(list(cells.glob("*.json"))) >= n:
            return
        time.sleep(0.02)
    pytest.fail("no cell finished in time")


@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 1), (signal.SIGTERM, 2),
                                          pytest.param(signal.SIGINT, 1, marks=pytest.mark.slow)])
def test_signal_mid_sweep_then_resume_is_byte_identical(sig, workers, reference, tmp_path):
    psutil = pytest.importorskip("psutil")
    ref_csv, n_cells = reference
    out = tmp_path / "out"
    cells = out / EXP / "cells"
    proc = _start(out, workers)
    try:
        _wait_for_cells(proc, cells, HOLD)
        at_signal = len(list(cells.glob("*.json")))
        children = psutil.Process(proc.pid).children(recursive=True)
        if workers > 1:
            assert children, "expected worker processes"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == ["uqkd: interrupted; finished cells are saved, rerun the same command to resume"]
    # no orphans: every worker of the interrupted run is gone
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.pid for p in alive]
    # nothing half-written, nothing published
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".publish-")]
    assert not (out / EXP / "results.csv").exists()
    done = len(list(cells.glob("*.json")))
    assert at_signal == done == HOLD < n_cells  # interrupted mid-sweep: the resume below has cells left to compute
    res = run_experiment(EXP, out=out, overrides=dict(SETTINGS), progress=False, make_figures=False, workers=1)
    assert res.n_computed == n_cells - done
    assert res.results_csv.read_bytes() == ref_csv


@pytest.mark.parametrize("where", ["open", "fsync", "replace"])
def test_an_interrupt_at_any_step_of_an_atomic_write_leaves_no_temporary(tmp_path, monkeypatch, where):
    """SIGINT/SIGTERM raise between any two bytecodes: also right after the temporary file exists."""
    import os

    from uqkd import _io

    target = tmp_path / "cell.json"
    target.write_text("old")
    real = getattr(os, where)

    def interrupted(*a, **kw):
        real(*a, **kw) if where != "replace" else None  # the step ran (the temporary exists) ...
        raise KeyboardInterrupt  # ... and the signal lands before the next line

    monkeypatch.setattr(_io.os, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        _io.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json"]
    assert target.read_text() == "old"


def test_cell_records_are_written_without_fsync_and_published_results_with_it(tmp_path, monkeypatch):
    """A cell record is a checksummed cache (a crash-damaged one is recomputed): atomic, no fsync.
    results.csv, config.json and timings.json are fsynced before they are renamed into place."""
    import os

    from uqkd import _io
    from uqkd.runner import run_experiment

    synced = []
    real = os.fsync

    def counting(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd))
        return real(fd)

    monkeypatch.setattr(_io.os, "fsync", counting)
    res = run_experiment("variance-aware-linear", out=tmp_path, progress=False, make_figures=False, workers=1,
                         overrides={"n_students": 20, "alphas": "0.1,1.0", "ks": "1,3,10"})
    assert res.n_computed == res.n_cells == 30
    assert len(synced) == 3  # the published unit only, not the 30 records
    if os.path.exists("/proc/self/fd"):
        assert sorted(os.path.basename(p).split(".")[1] for p in synced) == ["config", "results", "timings"]
    assert len(list((tmp_path / "variance-aware-linear" / "cells").glob("*.json"))) == 30


def test_atomic_write_without_durability_is_still_atomic(tmp_path, monkeypatch):
    import os

    from uqkd import _io

    target = tmp_path / "rec.json"
    target.write_text("old")
    monkeypatch.setattr(_io.os, "fsync", lambda fd: (_ for _ in ()).throw(AssertionError("fsync called")))
    _io.atomic_write_text(target, "new", durable=False)
    assert target.read_text() == "new"
    with pytest.raises(AssertionError, match="fsync called"):
        _io.atomic_write_text(target, "newer")  # durable by default
    assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["rec.json"]
