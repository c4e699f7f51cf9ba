"""Speed paths that must not change a number: malloc tuning, the teacher-draw memo, cell scheduling,
the skipped value scans of `assume_valid`, the shared shrunk variances, the symmetric Gram matmul."""

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
    # byte for byte: the WLS memo (one fit per (noise, strength, k) for every alpha) misses at other cells
    assert a.results_csv.read_bytes() == b.results_csv.read_bytes()


def test_assume_valid_skips_only_value_scans_and_only_inside_its_block():
    from uqkd._validation import assume_valid, check_array, check_variances

    bad = np.array([1.0, np.nan, -2.0])
    with pytest.raises(ValueError, match="x: expected finite values, got 1 NaN"):
        check_array(bad, "x")
    with assume_valid():
        assert check_array(bad, "x") is not None  # no scan: the caller vouches for the values
        check_variances(bad, "v")
        with pytest.raises(ValueError, match=r"x: expected a 2-d array, got shape \(3,\)"):
            check_array(bad, "x", ndim=2)  # shapes are still checked
        with pytest.raises(TypeError, match="x: expected a numeric array"):
            check_array("abc", "x")
    with pytest.raises(ValueError, match="v: expected non-negative values"):
        check_variances(np.array([1.0, -2.0]), "v")  # the block is over


@pytest.mark.parametrize("method", ["variance-weighting-wls", "variance-weighting-shrinkage"])
def test_method_cache_gives_the_same_numbers_and_is_tied_to_its_array(method):
    from uqkd.methods import method_targets

    rng = np.random.default_rng(1)
    R, n, k = 20, 31, 4
    mean_k = rng.normal(size=(R, n))
    var_a, var_b = rng.gamma(2.0, size=(R, n)), rng.gamma(5.0, size=(R, n))

    def ref(labels):  # any held-out prediction will do for equality
        return 0.5 * labels

    kw = dict(mean_k=mean_k, k=k, reference=ref)
    cache: dict = {}
    for v in (var_a, var_b, var_a.copy()):  # a new array with a cache full of another's results
        plain = method_targets(method, var_k=v, **kw)
        cached = method_targets(method, var_k=v, cache=cache, **kw)
        again = method_targets(method, var_k=v, cache=cache, **kw)  # a hit
        for got in (cached, again):
            np.testing.assert_array_equal(got.labels, plain.labels)
            if plain.sample_weight is not None:
                np.testing.assert_array_equal(got.sample_weight, plain.sample_weight)
    with pytest.raises(ValueError, match="teacher_var: expected non-negative values"):
        method_targets(method, var_k=-var_a, cache=cache, **kw)


def test_symmetric_gram_fit_equals_the_full_outer_product_fit():
    from uqkd.students.linear import design_matrix, fit_wls

    rng = np.random.default_rng(2)
    n, d, R = 120, 6, 40
    X, Y, W = rng.normal(size=(n, d)), rng.normal(size=(n, R)), rng.gamma(2.0, size=(n, R))
    D = design_matrix(X, True)
    p = D.shape[1]
    G = (W.T @ (D[:, :, None] * D[:, None, :]).reshape(n, p * p)).reshape(R, p, p)  # every p^2 entry
    want = np.linalg.solve(G, ((W * Y).T @ D)[:, :, None])[:, :, 0].T
    np.testing.assert_allclose(fit_wls(X, Y.T, W.T), want.T, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("noise, h, sampling", [("homoscedastic", 0.0, "exact"), ("heteroscedastic", 1.5, "exact"),
                                                ("heteroscedastic", 0.5, "draws")])
def test_wls_students_from_the_unit_scale_fit_equal_the_direct_fit_at_every_alpha(noise, h, sampling):
    cfg = L.VarianceAwareLinearConfig(n_students=60, teacher_sampling=sampling)
    setup = L.linear_setup(cfg.dataset, 0)
    g_tr, _ = setup.noise_profile(noise, h)
    ids = np.arange(cfg.n_students)
    ident = ("variance-aware-linear", cfg.dataset, noise) + ((h,) if noise == "heteroscedastic" else ())
    for k in (3, 20):
        L._WLS_CACHE.clear()
        th_mu, th_u = L._wls_unit_scale(cfg, setup, g_tr, k, ids, 0, ident)
        assert L._wls_unit_scale(cfg, setup, g_tr, k, ids, 0, ident)[1] is th_u  # a hit: the same arrays
        assert not th_u.flags.writeable  # which no caller can change
        for a in (0.01, 0.5, 1.0, 4.0):
            nv = a * setup.var_y * g_tr
            m, v = L.teacher_moments(setup.mu_train, nv, k, ids, 0, L._VA_DRAWS + (cfg.dataset,), sampling)
            direct = L.fit_method("variance-weighting-wls", setup, m, v, k, nv, m)
            fast = th_mu + np.sqrt(a) * th_u
            # rounding only: far below the spread of the students (the quantity the cell reports)
            assert np.max(np.abs(fast - direct) / direct.std(axis=0)) < 1e-8, (k, a)
            # and not the averaging fit (the weights matter here): the comparison can fail
            if noise == "heteroscedastic":
                avg = L.fit_method("averaging", setup, m, v, k, nv, m)
                assert np.max(np.abs(fast - avg) / direct.std(axis=0)) > 1e-2
    L._WLS_CACHE.clear()
    big = L._WLS_CACHE_MAX_BYTES
    try:  # an entry too large to keep is recomputed: the same numbers, nothing stored
        L._WLS_CACHE_MAX_BYTES = 0
        again = L._wls_unit_scale(cfg, setup, g_tr, 20, ids, 0, ident)
        assert not L._WLS_CACHE
        np.testing.assert_array_equal(again[0], th_mu)
        np.testing.assert_array_equal(again[1], th_u)
    finally:
        L._WLS_CACHE_MAX_BYTES = big


def test_wls_multi_equals_one_fit_per_label_set_on_both_solver_paths():
    from uqkd.students.linear import fit_wls, fit_wls_multi

    rng = np.random.default_rng(4)
    n, d, R = 60, 4, 25
    X, W = rng.normal(size=(n, d)), rng.gamma(2.0, size=(R, n))
    Ys = [rng.normal(size=n), rng.normal(size=(R, n)), rng.normal(size=(R, n))]
    W_def = W.copy()
    W_def[:5, 3:] = 0.0  # students 0-4 see 3 rows for 5 parameters: the minimum-norm path
    for w in (W, W_def):
        got = fit_wls_multi(X, Ys, w)
        for g, Y in zip(got, Ys):
            np.testing.assert_allclose(g, fit_wls(X, Y, w), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"targets: expected at least one label set, got none"):
        fit_wls_multi(X, [], W)
    with pytest.raises(ValueError, match=r"targets\[1\]: expected shape \(60,\) or \(25, 60\), got \(3, 60\)"):
        fit_wls_multi(X, [Ys[0], Ys[1][:3]], W)
    with pytest.raises(ValueError, match=r"sample_weight: student 2 \(row 2 of 25\) has all-zero weights"):
        fit_wls_multi(X, Ys, np.where(np.arange(R)[:, None] == 2, 0.0, W))
