"""The published §4 teacher-noise script against uqkd's two paper profiles, side by side (issue 36).

The published script loops over replicates; in each, for every teacher-noise level sigma, it draws
noisy teacher labels, fits one OLS student (scikit-learn ``LinearRegression``) and one MLP student
(13-16-1 ``nn.Sequential``, full-batch Adam, lr 0.01, 200 epochs, autograd) and scores both. That
loop, written here the way the script runs it, runs with one torch thread (the script leaves torch's
default, which was several times slower for these tiny networks on 2 busy cores, so one thread is
the baseline's best case; ``--published-threads 0`` times the default). It is timed at 1 and at 5
replicates and extrapolated linearly to the script's 1,000:
``t(1000) = t(1) + (t(5) - t(1)) / 4 * 999``.

uqkd's side is what a user runs: ``uqkd run teacher-noise-linear --profile paper --workers auto``
then the same for ``teacher-noise-mlp``, each a fresh process into a fresh output folder (start-up,
teacher fitting, statistics and publishing included). ``--pythonpath DIR`` runs another checkout's
``src`` (the before/after comparison), ``--reps N`` alternates the two sides N times and prints
medians.

Run: ``python benchmarks/bench_teacher_noise_script.py [--reps 1] [--pythonpath /old/checkout/src]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from sklearn.linear_model import LinearRegression

SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0)
REPLICATES = 1000


def published_loop(n_replicates: int) -> float:
    """Seconds for ``n_replicates`` of the published §4 loop (teacher fitted once, outside the loop)."""
    from uqkd.experiments import linear as L

    setup = L.linear_setup("boston", 0)
    X, Xt = setup.split.X_train, setup.split.X_test
    y, yt = setup.split.y_train, setup.split.y_test
    mu = setup.mu_train
    Xtr, Xte = torch.tensor(X, dtype=torch.float32), torch.tensor(Xt, dtype=torch.float32)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n_replicates):
        for s in SIGMAS:
            labels = mu + np.sqrt(s) * y.std() * rng.standard_normal(len(mu))
            ols = LinearRegression().fit(X, labels)
            np.mean((ols.predict(X) - y) ** 2), np.mean((ols.predict(Xt) - yt) ** 2)
            net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
            opt = torch.optim.Adam(net.parameters(), lr=0.01)
            target = torch.tensor(labels, dtype=torch.float32)
            for _ in range(200):
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(Xtr)[:, 0], target).backward()
                opt.step()
            with torch.no_grad():
                float(((net(Xtr)[:, 0] - torch.tensor(y, dtype=torch.float32)) ** 2).mean())
                float(((net(Xte)[:, 0] - torch.tensor(yt, dtype=torch.float32)) ** 2).mean())
    return time.perf_counter() - t0


def uqkd_profiles(pythonpath: str | None) -> float:
    """Wall seconds of the two paper profiles, each a fresh ``uqkd run`` process."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    total = 0.0
    with tempfile.TemporaryDirectory() as out:
        for exp in ("teacher-noise-linear", "teacher-noise-mlp"):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "uqkd", "-q", "run", exp, "--profile", "paper",
                            "--workers", "auto", "--out", out], check=True, env=env)
            total += time.perf_counter() - t
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1, help="alternating repetitions; medians printed (default 1)")
    ap.add_argument("--published-threads", type=int, default=1,
                    help="torch threads for the published loop (0: torch's default; default 1, its faster setting)")
    ap.add_argument("--pythonpath", default=None, help="run uqkd from this src folder (another checkout)")
    a = ap.parse_args()
    if a.published_threads > 0:
        torch.set_num_threads(a.published_threads)
    pub, uq = [], []
    for _ in range(a.reps):
        t1 = published_loop(1)
        t5 = published_loop(5)
        pub.append(t1 + (t5 - t1) / 4 * (REPLICATES - 1))
        uq.append(uqkd_profiles(a.pythonpath))
    p, u = statistics.median(pub), statistics.median(uq)
    print(f"published teacher-noise script (OLS + MLP, 15 sigmas, extrapolated to {REPLICATES} replicates): {p:8.1f} s")
    print(f"uqkd teacher-noise-linear + teacher-noise-mlp, --profile paper --workers auto:            {u:8.1f} s"
          + (f"  (PYTHONPATH={a.pythonpath})" if a.pythonpath else ""))
    print(f"ratio: {p / u:.0f}x  (median of {a.reps}; {os.cpu_count()} cores, torch {torch.__version__})")


if __name__ == "__main__":
    main()
