"""Batched linear distillation vs the research-script approach, side by side.

Naive baseline (what a per-student research loop does): for every student draw all k
teacher responses per input, average, and fit one scikit-learn ``LinearRegression``.
uqkd: the exact 2-draw Gaussian shortcut and one factorisation for all students.
Both are timed here, in the same run, on the same cell; the baseline on a subset of
students and scaled (it is linear in the number of students).

Run: ``python benchmarks/bench_linear.py``
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.linear_model import LinearRegression

from uqkd.executors import limit_threads
from uqkd.experiments.linear import fit_method, linear_setup, teacher_moments


def naive(setup, nv, k, n_students, seed=0):
    rng = np.random.default_rng(seed)
    X, mu = setup.split.X_train, setup.mu_train
    coefs = []
    for _ in range(n_students):
        y = mu[:, None] + np.sqrt(nv)[:, None] * rng.standard_normal((len(mu), k))
        lr = LinearRegression().fit(X, y.mean(axis=1))
        coefs.append(np.r_[lr.intercept_, lr.coef_])
    return np.array(coefs)


def batched(setup, nv, k, n_students, method="averaging"):
    ids = np.arange(n_students)
    mean_k, var_k = teacher_moments(setup.mu_train, nv, k, ids, 0, ("bench", k), "exact")
    return fit_method(method, setup, mean_k, var_k, k, nv, mean_k)


def main() -> None:
    setup = linear_setup("boston", 0)
    R = 1000
    with limit_threads(1):
        print(f"{'k':>4} {'naive s (1000 students)':>24} {'uqkd averaging s':>18} {'ratio':>8} {'uqkd WLS s':>11}")
        for k in (1, 10, 50):
            nv = np.full(len(setup.mu_train), 0.5 * setup.var_y)
            sub = 100
            t = time.perf_counter()
            naive(setup, nv, k, sub)
            t_naive = (time.perf_counter() - t) * R / sub
            batched(setup, nv, k, R)  # warm-up
            reps = 5
            t = time.perf_counter()
            for _ in range(reps):
                th = batched(setup, nv, k, R)
            t_fast = (time.perf_counter() - t) / reps
            t = time.perf_counter()
            for _ in range(reps):
                batched(setup, nv, k, R, "variance-weighting-wls")
            t_wls = (time.perf_counter() - t) / reps
            assert th.shape == (R, setup.D.shape[1])
            print(f"{k:>4} {t_naive:>24.3f} {t_fast:>18.4f} {t_naive / t_fast:>7.0f}x {t_wls:>11.4f}")
    # Equivalence check in the same run: same distribution of the student parameters.
    nv = np.full(len(setup.mu_train), 0.5 * setup.var_y)
    a = naive(setup, nv, 10, 400, seed=1)
    b = batched(setup, nv, 10, 400)
    z = np.abs(np.log(a.var(axis=0) / b.var(axis=0))) / np.sqrt(4 / 399)  # log-ratio SE of two variances
    print(f"same distribution check (naive vs uqkd, 400 students each): max |z| of per-parameter variance "
          f"log-ratio over {a.shape[1]} parameters = {z.max():.2f} (expect < ~3)")


def paper_sweep() -> None:
    """Wall time of `uqkd run variance-aware-linear --profile paper` (fresh output dir)."""
    import tempfile

    from uqkd.runner import run_experiment

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = run_experiment("variance-aware-linear", profile="paper", out=d, workers="auto", progress=False)
        wall = time.perf_counter() - t
    setup = linear_setup("boston", 0)
    nv = np.full(len(setup.mu_train), 0.5 * setup.var_y)
    t = time.perf_counter()
    naive(setup, nv, 10, 50)
    per_student = (time.perf_counter() - t) / 50
    n_fits = res.n_cells * 1000 * 5
    print(f"variance-aware-linear --profile paper: {res.n_cells} cells x 1000 students x 5 methods in {wall:.1f}s; "
          f"a per-student loop would take ~{n_fits * per_student:.0f}s ({n_fits * per_student / wall:.0f}x)")


if __name__ == "__main__":
    main()
    paper_sweep()
