"""uqkd's batched paths against the published method, one workload of issue 14's table at a time.

For each workload a faithful one-student-at-a-time baseline, written the way the published
scripts train (a Python loop over replicates: numpy draws, scikit-learn ``LinearRegression``
or an ``nn.Sequential`` trained with autograd and ``torch.optim.Adam`` on the full batch),
runs at reduced replicates in this process, beside uqkd's batched path at its own (larger)
replicate count. Printed: seconds per student for each and their ratio. Both sides run with
one BLAS / torch thread. The baseline is a loop, so its per-student cost does not depend on
how many replicates are timed; uqkd's does (it batches), so its count is stated.

Run: ``python benchmarks/bench_published.py``
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

from uqkd.experiments import linear as L
from uqkd.students.mlp import BatchedMLP


def per_student(fn, n: int, reps: int = 2) -> float:
    fn(min(n, 2))  # warm-up (first autograd / BLAS calls, caches)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t)
    return best / n


def row(name: str, t_pub: float, n_pub: int, t_uq: float, n_uq: int) -> None:
    print(f"{name:<44} {t_pub * 1e3:10.2f} ms ({n_pub:>3})  {t_uq * 1e3:9.3f} ms ({n_uq:>5})  {t_pub / t_uq:8.0f}x")


def published_va_linear(setup: L.LinearSetup, alpha: float, k: int):
    """§7 script: per run draw k teacher outputs per input, fit averaging / paper-oracle / single with sklearn."""
    X, Xt, mu, yt = setup.split.X_train, setup.split.X_test, setup.mu_train, setup.split.y_test
    s2 = alpha * setup.var_y

    def run(n_runs: int) -> None:
        rng = np.random.default_rng(0)
        for _ in range(n_runs):
            draws = mu[:, None] + np.sqrt(s2) * rng.standard_normal((len(mu), k))
            single = draws[:, 0]
            avg = draws.mean(axis=1)
            var_t = draws.var(axis=1)
            a_t = (1 / np.maximum(var_t, 1e-12)) / (1 / np.maximum(var_t, 1e-12) + 1 / s2)
            vw = a_t * avg + (1 - a_t) * mu
            for lab in (single, avg, vw):
                m = LinearRegression().fit(X, lab)
                np.mean((m.predict(Xt) - yt) ** 2)
    return run


def uqkd_va_linear(alpha: float, k: int):
    def run(n: int) -> None:
        cfg = L.VarianceAwareLinearConfig(n_students=n, noise_models=("homoscedastic",),
                                          methods=("single", "averaging", "variance-weighting-paper-oracle"))
        L._va_run(cfg, {"noise": "homoscedastic", "alpha": alpha, "k": k}, 0)
    return run


def published_tn_linear(setup: L.LinearSetup, sigma: float):
    X, Xt, mu, yt = setup.split.X_train, setup.split.X_test, setup.mu_train, setup.split.y_test
    sd = np.sqrt(sigma) * setup.split.y_train.std()

    def run(n: int) -> None:
        rng = np.random.default_rng(0)
        for _ in range(n):
            m = LinearRegression().fit(X, mu + sd * rng.standard_normal(len(mu)))
            np.mean((m.predict(X) - setup.split.y_train) ** 2), np.mean((m.predict(Xt) - yt) ** 2)
    return run


def uqkd_tn_linear(sigma: float):
    def run(n: int) -> None:
        L._tn_run(L.TeacherNoiseLinearConfig(n_students=n), {"sigma": sigma}, 0)
    return run


def published_mlp(X: np.ndarray, Y: np.ndarray, hidden: int, lr: float, epochs: int, boot: bool = False):
    """The scripts' loop: a fresh nn.Sequential per replicate, full-batch Adam, MSE (bootstrap: resampled rows)."""
    Xt_all = torch.tensor(X, dtype=torch.float32)

    def run(n: int) -> None:
        rng = np.random.default_rng(0)
        for r in range(n):
            net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            if boot:
                idx = rng.integers(0, len(X), size=len(X) // 2)
                xb, yb = Xt_all[idx], torch.tensor(Y[r, idx], dtype=torch.float32)
            else:
                xb, yb = Xt_all, torch.tensor(Y[r], dtype=torch.float32)
            for _ in range(epochs):
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(xb)[:, 0], yb).backward()
                opt.step()
    return run


def uqkd_mlp(X: np.ndarray, Y: np.ndarray, hidden: int, lr: float, epochs: int, boot: bool = False, **kw):
    def run(n: int) -> None:
        sw = None
        if boot:  # bootstrap as per-row counts on the shared X (how uqkd batches resamples)
            sw = np.random.default_rng(0).multinomial(len(X) // 2, np.full(len(X), 1 / len(X)), size=n).astype(float)
        BatchedMLP(hidden=(hidden,), lr=lr, n_epochs=epochs, n_students=n, init="torch_default",
                   num_threads=1, **kw).fit(X, Y[:n], sample_weight=sw)
    return run


def main() -> None:
    torch.set_num_threads(1)
    threadpool_limits(1)
    setup = L.linear_setup("boston", 0)
    X = setup.split.X_train
    Y = setup.split.y_train[None, :] + 0.7 * np.random.default_rng(1).standard_normal((1000, len(X)))
    print("per-student seconds (replicates timed), published-style loop vs uqkd batched, same process, 1 thread")
    print(f"{'workload':<44} {'published loop':>19}  {'uqkd batched':>19}  {'ratio':>8}")
    for alpha, k in ((0.1, 5), (1.0, 50)):
        row(f"§7 variance-aware linear, a={alpha}, k={k}, 3 methods",
            per_student(published_va_linear(setup, alpha, k), 50), 50,
            per_student(uqkd_va_linear(alpha, k), 1000, reps=3), 1000)
    row("§4 teacher-output OLS, sigma=0.5", per_student(published_tn_linear(setup, 0.5), 100), 100,
        per_student(uqkd_tn_linear(0.5), 1000, reps=3), 1000)
    row("§4 / §7 MLP 13-16-1, Adam 0.01, 200 epochs", per_student(published_mlp(X, Y, 16, 0.01, 200), 3, 1), 3,
        per_student(uqkd_mlp(X, Y, 16, 0.01, 200), 500, 1), 500)
    row("§5 bootstrap MLP 13-64-1, Adam 1e-3, 300 ep.", per_student(published_mlp(X, Y, 64, 1e-3, 300, True), 2, 1), 2,
        per_student(uqkd_mlp(X, Y, 64, 1e-3, 300, True), 150, 1), 150)
    row("§5 init noise MLP 13-128-1, Adam 0.01, 300 ep.", per_student(published_mlp(X, Y, 128, 0.01, 300), 2, 1), 2,
        per_student(uqkd_mlp(X, Y, 128, 0.01, 300, sigma_init=0.2), 80, 1), 80)
    print("(published bootstrap loop trains on half-size resamples; uqkd on count weights over all rows, as it runs)")


if __name__ == "__main__":
    main()
