"""Batched MLP students vs the research-script approach (one student at a time), side by side.

Baseline (what a per-student research loop does): for every student build an
``nn.Sequential``, load the same initial weights uqkd would give it, and train it with
autograd and ``torch.optim.Adam`` on the full batch. uqkd: :class:`uqkd.students.mlp.BatchedMLP`,
all students at once. Both train *the same students* (same initial weights, labels, epochs);
the script checks that their final weights agree. The baseline is timed on a subset of the
students and scaled linearly (it is a loop over students); the output says so.

Also printed: achieved GFLOP/s of the batched trainer against a large float32 matmul measured
in the same run, the peak memory of fitting R = 10,000 students (128 hidden), and, with
``--estimate``, extrapolated wall times of the paper profiles of ``variance-aware-mlp`` and
``init-noise-mlp`` from timed cells.

Run: ``python benchmarks/bench_mlp.py [--threads 1] [--estimate]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch

from uqkd.data.tabular import load_boston
from uqkd.students.mlp import BatchedMLP


def flops_per_student_epoch(n: int, sizes: list[int]) -> int:
    """Forward (z = W a + b), weight/bias gradients, and input gradients of layers >= 2 (multiply-adds x 2)."""
    fwd = sum(2 * n * (i + 1) * o for i, o in zip(sizes[:-1], sizes[1:]))
    wgrad = fwd
    agrad = sum(2 * n * i * o for i, o in zip(sizes[1:-1], sizes[2:]))
    return fwd + wgrad + agrad


def matmul_gflops(size: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * size**3 / (time.perf_counter() - t) / 1e9


def one_at_a_time(X: np.ndarray, Y: np.ndarray, init: np.ndarray, hidden: tuple[int, ...], lr: float,
                  n_epochs: int, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The research-script loop: one nn.Module + autograd + torch.optim.Adam per student.

    Returns final parameter vectors (R, P) and test predictions (R, m).
    """
    Xt = torch.tensor(X, dtype=torch.float32)
    out, preds = [], []
    for r in range(Y.shape[0]):
        sizes = [X.shape[1], *hidden, 1]
        layers: list[torch.nn.Module] = []
        for i, o in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(i, o), torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers[:-1])
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.tensor(init[r], dtype=torch.float32), net.parameters())
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        yt = torch.tensor(Y[r], dtype=torch.float32)
        for _ in range(n_epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(Xt)[:, 0], yt)
            loss.backward()
            opt.step()
        out.append(torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy())
        with torch.no_grad():
            preds.append(net(torch.tensor(X_test, dtype=torch.float32))[:, 0].numpy())
    return np.array(out), np.array(preds)


def compare(R: int, hidden: tuple[int, ...], n_epochs: int, subset: int, peak: float) -> None:
    sp = load_boston()
    X = sp.X_train
    n = X.shape[0]
    rng = np.random.default_rng(0)
    Y = sp.y_train[None, :] + 0.7 * rng.standard_normal((R, n))  # teacher draws per student
    m = BatchedMLP(hidden=hidden, lr=0.01, n_epochs=n_epochs, identity=("bench",))
    m.fit(X, Y[:2])  # warm-up
    t = time.perf_counter()
    m.fit(X, Y)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    ref, ref_pred = one_at_a_time(X, Y[:subset], m.init_params_[:subset], hidden, 0.01, n_epochs, sp.X_test)
    t_sub = time.perf_counter() - t
    t_naive = t_sub * R / subset
    diff = float(np.abs(ref - m.params_[:subset]).max())
    pdiff = float(np.abs(ref_pred - m.predict(sp.X_test)[:subset]).max())
    sizes = [X.shape[1], *hidden, 1]
    gf = flops_per_student_epoch(n, sizes) * R * n_epochs / t_batched / 1e9
    print(f"MLP {'-'.join(map(str, sizes))}, n={n}, {n_epochs} full-batch Adam epochs, R={R} students")
    print(f"  one at a time (nn.Sequential + autograd + torch.optim.Adam): {t_sub:.2f} s for {subset} students, "
          f"extrapolated to {R}: {t_naive:.1f} s")
    print(f"  uqkd BatchedMLP, all {R} at once:                             {t_batched:.2f} s")
    print(f"  ratio: {t_naive / t_batched:.0f}x   (same students, float32: max |weight difference| {diff:.1e}, "
          f"max |test prediction difference| {pdiff:.1e}; float64 agrees to 1e-12, see tests/test_mlp.py)")
    print(f"  achieved {gf:.1f} GFLOP/s = {100 * gf / peak:.0f}% of the large-matmul rate")


PEAK_SNIPPET = """
import resource, sys, numpy as np, torch
torch.set_num_threads({threads})
from uqkd.data.tabular import load_boston
from uqkd.students.mlp import BatchedMLP
sp = load_boston()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m = BatchedMLP(hidden=(128,), n_epochs=2, n_students=10_000, sigma_init=0.1, shared_init=True, track=(0,))
m.fit(sp.X_train, sp.y_train)
p = m.predict(sp.X_test)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak, m.params_.nbytes)
"""


def peak_memory(threads: int) -> None:
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET.format(threads=threads)], capture_output=True,
                         text=True, check=True).stdout.split()
    base, peak, pbytes = (int(v) for v in out)
    print(f"R = 10,000 students, MLP 13-128-1 (fit + predict): peak RSS {peak / 1024:.0f} MiB "
          f"(process before fitting: {base / 1024:.0f} MiB; fitted weights {pbytes / 2**20:.0f} MiB; "
          f"chunks of students keep activations within a 10 MB budget)")


def estimate(workers: int) -> None:
    from uqkd.config import build_config
    from uqkd.experiments import get_experiment

    print("paper-profile estimates (timed cells, extrapolated; this machine, 1 torch thread per process)")
    va = get_experiment("variance-aware-mlp")
    cfg = build_config(va.config_cls, (va.profiles["paper"], "paper"), ({"num_threads": 1}, "bench"))
    cells = va.cells(cfg)
    va.run_cell(cfg, {"noise": "homoscedastic", "alpha": 0.5, "k": 1}, 0)  # teacher fit + cached `single`
    t = time.perf_counter()
    va.run_cell(cfg, {"noise": "homoscedastic", "alpha": 0.5, "k": 5}, 0)
    t_k = time.perf_counter() - t
    t = time.perf_counter()
    va.run_cell(cfg, {"noise": "homoscedastic", "alpha": 0.1, "k": 1}, 0)  # new alpha: single + averaging
    t_k1 = time.perf_counter() - t
    n_alpha = len(cfg.alphas)
    n_k1 = sum(1 for c in cells if c["k"] == 1)
    total = t_k1 * n_k1 + t_k * (len(cells) - n_k1)
    print(f"  variance-aware-mlp --profile paper: {len(cells)} cells ({n_alpha} alphas x {len(cfg.ks)} ks) x "
          f"{cfg.n_students} students x {len(cfg.methods)} methods; one k>1 cell {t_k:.1f} s, a k=1 cell "
          f"{t_k1:.1f} s -> {total / 60:.1f} min in one process, ~{total / 60 / workers:.1f} min with "
          f"--workers {workers} (ideal split; cores shared with other jobs run slower)")
    ini = get_experiment("init-noise-mlp")
    sub = 1000
    icfg = build_config(ini.config_cls, (ini.profiles["paper"], "paper"), ({"num_threads": 1, "n_students": sub},
                                                                           "bench"))
    t = time.perf_counter()
    ini.run_cell(icfg, {"sigma_init": 0.2}, 0)
    t_i = (time.perf_counter() - t) * 10_000 / sub
    n_cells = len(ini.cells(icfg))
    print(f"  init-noise-mlp --profile paper: {n_cells} cells x 10,000 students (128 hidden, 300 epochs); one cell "
          f"of {sub} students {t_i * sub / 10_000:.1f} s -> {t_i:.0f} s per cell, {n_cells * t_i / 60:.1f} min in one "
          f"process, ~{-(-n_cells // workers) * t_i / 60:.1f} min with --workers {workers} "
          f"({-(-n_cells // workers)} rounds of cells)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--students", type=int, default=1000)
    ap.add_argument("--subset", type=int, default=20, help="students timed one at a time (extrapolated)")
    ap.add_argument("--estimate", action="store_true", help="also time paper-profile cells and extrapolate")
    ap.add_argument("--workers", type=int, default=2, help="worker processes assumed for the estimates")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {args.threads} thread(s); large float32 matmul (2048^2): {peak:.0f} GFLOP/s")
    compare(args.students, (16,), 200, args.subset, peak)  # section 7 students
    compare(max(args.students // 5, 10), (128,), 300, max(args.subset // 4, 3), peak)  # section 5 students
    peak_memory(args.threads)
    if args.estimate:
        estimate(args.workers)


if __name__ == "__main__":
    main()
