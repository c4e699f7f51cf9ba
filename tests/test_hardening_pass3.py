"""Hardening, third pass (issue 33), outside the LLM steps: the linear students' ``rcond``, a diverging MLP,
publishing results.csv / config.json / timings.json / figures all or nothing, stale staging folders, and the
runner's mid-sweep hold used by the interruption tests."""

import errno
import os
import re
import time

import numpy as np
import pytest

from uqkd import runner
from uqkd.cli import main
from uqkd.config import EnvironmentFailure, UserError
from uqkd.runner import run_experiment
from uqkd.students import BatchedLinearRegression
from uqkd.students.linear import fit_ols, fit_wls, fit_wls_multi

# ---------------------------------------------------------------------------------------------- 3. rcond

RCOND_MSG = "rcond: expected a finite number >= 0 and < 1 (the relative cut-off for small singular values), got "


@pytest.fixture
def collinear():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    return np.hstack([X, X[:, :1]]), rng.normal(size=(3, 20))  # a duplicated column: rank-deficient; (R, n)


@pytest.mark.parametrize("rcond", [float("nan"), -1, -1e-12, 1.0, 2.0, float("inf"), True, "1e-10", None])
@pytest.mark.parametrize("weighted", [False, True])
def test_rcond_outside_0_1_is_refused_at_fit(collinear, rcond, weighted):
    X, Y = collinear
    sw = np.ones(20) if weighted else None
    with pytest.raises(ValueError, match="^" + re.escape(RCOND_MSG + repr(rcond)) + "$"):
        BatchedLinearRegression(rcond=rcond).fit(X, Y, sample_weight=sw)


@pytest.mark.parametrize("rcond", [float("nan"), -1])
def test_rcond_checked_by_the_functions_too(collinear, rcond):
    X, Y = collinear
    W = np.ones_like(Y)
    for call in (lambda: fit_ols(X, Y, rcond=rcond), lambda: fit_wls(X, Y, W, rcond=rcond),
                 lambda: fit_wls_multi(X, [Y], W, rcond=rcond)):
        with pytest.raises(ValueError, match=re.escape(RCOND_MSG + repr(rcond))):
            call()


@pytest.mark.parametrize("rcond", [0, 1e-10, np.float32(1e-6), 0.5])
def test_valid_rcond_gives_the_minimum_norm_solution(collinear, rcond):
    X, Y = collinear
    m = BatchedLinearRegression(rcond=rcond).fit(X, Y)
    ref = np.linalg.lstsq(np.hstack([np.ones((20, 1)), X]), Y.T, rcond=None)[0]
    if rcond == 0:  # numpy's "no cut-off": allowed, and on exactly collinear columns not the minimum-norm one
        assert np.all(np.isfinite(m.coef_))
    elif rcond < 1e-3:
        np.testing.assert_allclose(m.coef_, ref[1:].T, atol=1e-8)
    else:  # a large cut-off drops real directions, but never every one
        assert np.abs(m.coef_).max() > 0


# ---------------------------------------------------------------------------------------------- 4. MLP divergence

@pytest.mark.parametrize("backend", ["fused", "autograd"])
def test_mlp_that_diverges_raises_naming_the_learning_rate(backend):
    from uqkd.students.mlp import BatchedMLP

    X = np.random.default_rng(0).normal(size=(50, 3))
    m = BatchedMLP(lr=1e30, n_students=3, n_epochs=20, backend=backend)
    with pytest.raises(ValueError, match=r"^lr: training diverged at lr=1e\+30: the loss became non-finite \(nan\) "
                                         r"for 3 of the 3 students checked \(first: student 0\); use a lower "
                                         r"learning rate \(e\.g\. lr=0\.01\)$"):
        m.fit(X, X[:, 0])
    assert not hasattr(m, "params_")  # nothing half-fitted to predict from


def test_mlp_divergence_of_one_chunk_is_caught_and_sane_lr_is_untouched():
    from uqkd.students.mlp import BatchedMLP

    X = np.random.default_rng(1).normal(size=(40, 2))
    y = np.stack([X[:, 0], 1e200 * X[:, 1]])  # student 1's labels overflow float32: inf loss for it alone
    with pytest.raises(UserError, match=r"for 1 of the 1 students checked \(first: student 1\)"):
        BatchedMLP(n_epochs=5, chunk_size=1).fit(X, y)
    ok = BatchedMLP(n_epochs=5, n_students=2).fit(X, X[:, 0])
    assert np.all(np.isfinite(ok.predict(X)))


# ---------------------------------------------------------------------------------------------- 6. publishing

EXP = "teacher-noise-linear"
TINY = {"sigmas": "0,1", "n_students": 4}
FIG = "teacher_noise_linear.png"


def _run(out, **kw):
    return run_experiment(EXP, out=out, overrides=dict(TINY), progress=False, workers=1, **kw)


def _published(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("victim", ["results.csv", "config.json", "timings.json"])
def test_a_folder_in_the_way_publishes_nothing_and_fails_before_the_sweep(tmp_path, capsys, victim):
    (tmp_path / EXP / victim).mkdir(parents=True)
    rc = main(["run", EXP, "--out", str(tmp_path), "--quiet", "--workers", "1",
               *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1
    assert err == [f"uqkd: error: --out: cannot publish {str(tmp_path / EXP / victim)!r}: a folder is in the way "
                   "(expected a file or nothing there); remove it and rerun (finished cells are kept, nothing of "
                   "this run was published)"]
    assert sorted(p.name for p in (tmp_path / EXP).iterdir()) == sorted([".lock", "cells", victim])
    assert not list((tmp_path / EXP / "cells").iterdir())  # failed before computing anything


def test_a_folder_in_the_way_of_a_figure_keeps_the_earlier_unit(tmp_path):
    first = _run(tmp_path)
    before = _published(first.out_dir)
    assert {"results.csv", "config.json", "timings.json", FIG} <= set(before)
    (first.out_dir / FIG).unlink()
    (first.out_dir / FIG).mkdir()
    del before[FIG]
    with pytest.raises(EnvironmentFailure, match=re.escape(f"cannot publish {str(first.out_dir / FIG)!r}")):
        run_experiment(EXP, out=tmp_path, overrides={**TINY, "n_students": 5}, progress=False, workers=1)
    assert _published(first.out_dir) == before  # timings.json, results.csv, config.json: all the earlier ones
    assert not [p for p in first.out_dir.iterdir() if p.name.startswith(".publish-")]


def test_a_rename_failing_part_way_restores_the_earlier_unit(tmp_path, monkeypatch):
    first = _run(tmp_path)
    before = _published(first.out_dir)
    real = os.replace

    def failing(src, dst, *a, **kw):
        if str(dst).endswith("/config.json") and ".publish-" in str(src):  # the last rename of the unit
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(runner.os, "replace", failing)
    with pytest.raises(OSError, match="Input/output error"):
        run_experiment(EXP, out=tmp_path, overrides={**TINY, "n_students": 5}, progress=False, workers=1)
    monkeypatch.undo()
    assert _published(first.out_dir) == before  # figure, timings.json and results.csv were put back
    assert not [p for p in first.out_dir.iterdir() if p.name.startswith(".publish-")]


# ---------------------------------------------------------------------------------------------- 5. stale staging

def test_a_staging_folder_left_by_a_killed_publish_is_removed_by_the_next_run(tmp_path):
    first = _run(tmp_path)
    stale = first.out_dir / ".publish-k1ll3d"
    stale.mkdir()
    (stale / "results.csv").write_text("half")
    (first.out_dir / ".results.csv.0123456789abcdef.tmp").write_text("half")
    keep = first.out_dir / ".user-notes"  # not the runner's: left alone
    keep.write_text("mine")
    res = _run(tmp_path)
    assert res.n_computed == 0
    names = {p.name for p in first.out_dir.iterdir()}
    assert not stale.exists() and ".results.csv.0123456789abcdef.tmp" not in names
    assert keep.read_text() == "mine"


# ---------------------------------------------------------------------------------------------- 7. the hold hook

def test_hold_hook_pauses_after_the_nth_cell_and_a_bad_value_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_TEST_HOLD_SECONDS", 0.3)
    monkeypatch.setenv("UQKD_TEST_HOLD_AFTER_CELLS", "1")
    t0 = time.perf_counter()
    res = _run(tmp_path / "a", make_figures=False)
    assert res.n_computed == 2 and time.perf_counter() - t0 >= 0.3
    monkeypatch.setenv("UQKD_TEST_HOLD_AFTER_CELLS", "soon")
    with pytest.raises(UserError, match=r"^UQKD_TEST_HOLD_AFTER_CELLS: expected an integer >= 1 \(a testing "
                                        r"hook\), got 'soon'$"):
        _run(tmp_path / "b", make_figures=False)
