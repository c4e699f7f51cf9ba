"""Speed paths that must not change a number: malloc tuning, the teacher-draw memo, cell scheduling."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from uqkd.experiments import linear as L
from uqkd.experiments.base import get_experiment
from uqkd.runner import run_experiment

_PROBE = "from uqkd import _malloc; print(_malloc.tune())"


def _tune_in_child(**env: str) -> str:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "UQKD_MALLOC"}
    e.update(env)
    return subprocess.run([sys.executable, "-c", _PROBE], env=e, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_tune_applies_and_respects_opt_outs():
    assert _tune_in_child() == "True"
    assert _tune_in_child(UQKD_MALLOC="default") == "False"
    assert _tune_in_child(MALLOC_TRIM_THRESHOLD_="1000000") == "False"  # the user's own glibc setting wins


def test_teacher_moments_reuse_gives_the_same_numbers_and_keeps_the_cache_intact():
    rng = np.random.default_rng(0)
    mu, nv, ids = rng.normal(size=37), rng.uniform(0.1, 2.0, size=37), np.arange(70)
    L._DRAWS_CACHE.clear()
    ref = L.teacher_moments(mu, nv, 5, ids, 3, ("t", "x"))
    assert not L._DRAWS_CACHE  # no memo unless asked for
    for _ in range(2):  # miss, then hit
        got = L.teacher_moments(mu, nv, 5, ids, 3, ("t", "x"), reuse=True)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)
        got[0][:] = 0.0  # the caller's arrays are its own: the memo must not see this
    other = L.teacher_moments(2 * mu, 3 * nv, 5, ids, 3, ("t", "x"), reuse=True)  # same draws, other scale
    np.testing.assert_allclose(other[1], 3 * ref[1], rtol=1e-12)
    np.testing.assert_allclose(other[0] - 2 * mu, np.sqrt(3) * (ref[0] - mu), rtol=1e-9, atol=1e-12)
    sub = L.teacher_moments(mu, nv, 5, ids[10:20], 3, ("t", "x"), reuse=True)  # students keyed by id
    np.testing.assert_array_equal(sub[0], ref[0][10:20])


def test_schedule_order_does_not_change_results(tmp_path):
    exp = get_experiment("variance-aware-linear")
    sets = {"n_students": 30, "ks": [1, 3, 10], "alphas": [0.1, 1.0], "hetero_strengths": [0.5, 1.5]}
    a = run_experiment("variance-aware-linear", profile="quick", overrides=sets, out=tmp_path / "a",
                       workers=1, progress=False, make_figures=False)
    object.__setattr__(exp, "schedule_key", lambda c: -c["k"])  # the reverse order
    try:
        b = run_experiment("variance-aware-linear", profile="quick", overrides=sets, out=tmp_path / "b",
                           workers=1, progress=False, make_figures=False)
    finally:
        object.__setattr__(exp, "schedule_key", L._va_schedule)
    pd.testing.assert_frame_equal(pd.read_csv(a.results_csv), pd.read_csv(b.results_csv))
