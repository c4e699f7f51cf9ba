"""The output lock (issue 12): a second live run into the same folder exits 2 naming the lock and the holder;
a lock file left by a dead process is taken over; a failed run releases the lock."""

import os
import re

import pytest

from uqkd.cli import main
from uqkd.config import UserError
from uqkd.runner import OutputLock, run_experiment

EXP = "variance-aware-linear"
TINY = {"n_students": 4, "alphas": "0.1", "ks": "1,3"}
SET = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def _run(out, **kw):
    return run_experiment(EXP, out=out, overrides=dict(TINY), progress=False, make_figures=False, workers=1, **kw)


def _locked_message(out_dir):
    return (f"--out: {str(out_dir / '.lock')!r} is locked by another run (pid {os.getpid()}) writing into the same "
            "folder; wait for it to finish or use another --out")


def test_second_live_run_is_refused_and_writes_nothing(tmp_path):
    out_dir = tmp_path / EXP
    out_dir.mkdir()
    with OutputLock(out_dir):  # another open file description: flock conflicts even within one process
        with pytest.raises(UserError, match="^" + re.escape(_locked_message(out_dir)) + "$"):
            _run(tmp_path)
    assert not (out_dir / "results.csv").exists()
    assert not list((out_dir / "cells").glob("*.json"))


def test_second_live_run_exits_2_with_one_line(tmp_path, capsys):
    out_dir = tmp_path / EXP
    out_dir.mkdir()
    with OutputLock(out_dir):
        rc = main(["run", EXP, "--out", str(tmp_path), "--quiet", "--workers", "1", *SET])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2
    assert err == [f"uqkd: error: {_locked_message(out_dir)}"]


def test_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    ref = _run(tmp_path / "ref").results_csv.read_bytes()
    out_dir = tmp_path / "run" / EXP
    out_dir.mkdir(parents=True)
    (out_dir / ".lock").write_text("999999\n")  # a pid that no longer holds any flock
    res = _run(tmp_path / "run")
    assert res.results_csv.read_bytes() == ref
    assert (out_dir / ".lock").read_text() == f"{os.getpid()}\n"


def test_lock_is_released_when_a_run_fails(tmp_path):
    from uqkd.runner import SweepInterrupted

    with pytest.raises(SweepInterrupted):
        _run(tmp_path, stop_after=1)
    with OutputLock(tmp_path / EXP):  # free again
        pass
    res = _run(tmp_path)
    assert res.n_computed == res.n_cells - 1  # the first cell was kept


def test_lock_is_per_experiment_folder(tmp_path):
    other = tmp_path / "teacher-noise-linear"
    other.mkdir()
    with OutputLock(other):
        res = _run(tmp_path)
    assert res.n_computed == res.n_cells
