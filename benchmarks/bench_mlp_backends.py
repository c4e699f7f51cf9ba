"""The fused MLP kernel against the library: stacked parameters + autograd + torch's own Adam.

All variants train *the same students* (same initial weights, labels, epochs) in one process,
one after another, each timed as the minimum of ``--reps`` runs:

* ``fused``: :class:`uqkd.students.mlp.BatchedMLP` ``backend="fused"`` (hand-written forward,
  backward and Adam over one flat buffer), with its float32 first-layer GEMMs in oneDNN (the
  default, ``uqkd.students.mlp.ONEDNN_GEMM``) and with MKL's bmm instead (``fused kernel, MKL bmm``);
* ``autograd``: ``backend="autograd"``: stacked (R, out, in) parameters, autograd, and
  ``torch.optim.Adam`` with ``foreach=True`` / ``fused=True`` / the for-loop implementation;
* ``torch.func``: ``vmap(grad(loss of one student))`` over the stacked parameters + ``torch.optim.Adam``;
* ``compile``: the autograd step's forward + loss under ``torch.compile`` (first call excluded).

Also measured here, in the same run: the machine's ceilings, a large float32 matmul (FLOP/s)
and a large array copy (memory bandwidth, DRAM) plus an 8 MB copy (what the fused kernel's
cache-sized chunks see), and the fused kernel's achieved FLOP/s and memory traffic per epoch
against them.

``autotuned`` is ``backend="auto"`` as uqkd fits it: the variant (and chunk size) the autotuner chose on
this host (:mod:`uqkd.students._autotune`; ``UQKD_AUTOTUNE=0`` gives the defaults), with the one-off cost of
measuring it when the host's cache had no entry.

Run: ``python benchmarks/bench_mlp_backends.py [--epochs 30] [--reps 3] [--compile]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from uqkd import _malloc
from uqkd.data.tabular import load_boston
from uqkd.students import mlp as mlp_module
from uqkd.students.mlp import BatchedMLP, auto_chunk_size


def best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(size: int = 1536, reps: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    return 2 * size**3 / best_of(lambda: a @ b, reps) / 1e9


def copy_gbs(nbytes: int, reps: int = 5) -> float:
    """Read + write bandwidth of ``dst.copy_(src)`` (bytes moved = 2 x size)."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * nbytes / best_of(lambda: dst.copy_(src), reps) / 1e9


def flops_per_student_epoch(n: int, sizes: list[int]) -> int:
    """Forward (z = W a + b), weight/bias gradients, input gradients of layers >= 2 (multiply-adds x 2)."""
    fwd = sum(2 * n * (i + 1) * o for i, o in zip(sizes[:-1], sizes[1:]))
    agrad = sum(2 * n * i * o for i, o in zip(sizes[1:-1], sizes[2:]))
    return 2 * fwd + agrad


def fused_bytes_per_student_epoch(n: int, sizes: list[int], itemsize: int = 4, onednn: bool = True) -> int:
    """Memory traffic of the fused kernel's epoch (one hidden layer, one output), per student.

    Passes over the (h, n) activation: GEMM write (oneDNN fuses the ReLU; with bmm a clamp adds a
    read + write), output matmul read, threshold-backward read + write, first-layer gradient read:
    5 (7 with bmm). The second-layer gradient reads no activation (it comes from the first layer's).
    Plus Adam: parameter, gradient, two moments, denominator (read/write ~ 9 passes over P).
    """
    h = sum(sizes[1:-1])
    P = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    return itemsize * ((5 if onednn else 7) * h * n + 9 * P)


def vmap_trainer(X: torch.Tensor, Y: torch.Tensor, init: torch.Tensor, hidden: int, n_epochs: int,
                 lr: float = 0.01) -> torch.Tensor:
    """torch.func: per-student loss, vmap(grad(.)) over the stacked parameters, torch.optim.Adam."""
    from torch.func import grad, vmap

    R, d = init.shape[0], X.shape[1]
    o = 0
    W1 = init[:, o:o + hidden * d].reshape(R, hidden, d).clone()
    o += hidden * d
    b1 = init[:, o:o + hidden].clone()
    o += hidden
    W2 = init[:, o:o + hidden].reshape(R, 1, hidden).clone()
    o += hidden
    b2 = init[:, o:o + 1].clone()
    params = [W1, b1, W2, b2]

    def loss_one(p: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        w1, c1, w2, c2 = p
        a = torch.relu(X @ w1.T + c1)  # (n, h)
        return ((a @ w2.T + c2)[:, 0] - y).pow(2).mean()

    g_all = vmap(grad(loss_one), in_dims=(0, 0))
    opt = torch.optim.Adam(params, lr=lr, foreach=True)
    for _ in range(n_epochs):
        gs = g_all(params, Y)
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()
    return torch.cat([W1.reshape(R, -1), b1, W2.reshape(R, -1), b2], dim=1)


def compiled_trainer(X: torch.Tensor, Y: torch.Tensor, init: torch.Tensor, hidden: int, n_epochs: int,
                     lr: float = 0.01) -> tuple[float, torch.Tensor]:
    """Stacked autograd with the forward + loss under torch.compile; returns (time of epochs 2.., params)."""
    R, d = init.shape[0], X.shape[1]
    o = 0
    W1 = init[:, o:o + hidden * d].reshape(R, hidden, d).clone().requires_grad_()
    o += hidden * d
    b1 = init[:, o:o + hidden].clone().requires_grad_()
    o += hidden
    W2 = init[:, o:o + hidden].reshape(R, 1, hidden).clone().requires_grad_()
    o += hidden
    b2 = init[:, o:o + 1].clone().requires_grad_()
    params = [W1, b1, W2, b2]
    XT = X.T.contiguous()
    n = X.shape[0]

    @torch.compile(dynamic=False)
    def loss_fn(W1, b1, W2, b2, Y):
        a = torch.relu(torch.baddbmm(b1.unsqueeze(-1), W1, XT.expand(R, d, n)))  # as the autograd path
        z = torch.baddbmm(b2.unsqueeze(-1), W2, a)[:, 0]
        return ((z - Y) ** 2).mean(dim=1).sum()

    opt = torch.optim.Adam(params, lr=lr, foreach=True)

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(*params, Y).backward()
        opt.step()

    step()  # compile
    t = time.perf_counter()
    for _ in range(n_epochs - 1):
        step()
    return time.perf_counter() - t, torch.cat([W1.detach().reshape(R, -1), b1.detach(), W2.detach().reshape(R, -1),
                                               b2.detach()], dim=1)


def first_layer_layouts(n: int, d: int, hidden: int, R: int, reps: int) -> None:
    """The fused kernel's first-layer products: the plain MKL mm, MKL's bmm (the kernel without
    oneDNN) and oneDNN's GEMM (the forward with its ReLU fused in), same shapes and FLOPs.

    On MKL the single tall mm with an inner dimension of d+1 (14 for Boston) is several times
    slower than the bmm over an expanded (not copied) X^T; oneDNN's GEMM beats both.
    """
    X1 = torch.randn(n, d + 1)
    X1T = X1.T.contiguous().expand(R, d + 1, n)
    W = torch.randn(R, hidden, d + 1)
    A = torch.randn(R, hidden, n)
    a_out, g1, g1T = torch.empty(R, hidden, n), torch.empty(R * hidden, d + 1), torch.empty(R, d + 1, hidden)
    X1Tc = X1.T.contiguous()
    lin = mlp_module._onednn_linear
    pairs = [
        ("forward + ReLU", lambda: torch.mm(W.view(R * hidden, -1), X1.T, out=a_out.view(R * hidden, n)).clamp_(min=0),
         lambda: torch.bmm(W, X1T, out=a_out).clamp_(min=0), lambda: lin(W.view(R * hidden, -1), X1, "relu")),
        ("first-layer gradient", lambda: torch.mm(A.view(R * hidden, n), X1, out=g1),
         lambda: torch.bmm(X1T, A.transpose(1, 2), out=g1T), lambda: lin(A.view(R * hidden, n), X1Tc, "none")),
    ]
    for name, plain, bmm, onednn in pairs:
        t_p, t_b = best_of(plain, reps), best_of(bmm, reps)
        t_o = best_of(onednn, reps) if mlp_module.ONEDNN_GEMM else float("nan")
        print(f"{'':>10} {name:>21}: MKL mm {1e3 * t_p:5.2f} ms, MKL bmm {1e3 * t_b:5.2f} ms, oneDNN "
              f"{1e3 * t_o:5.2f} ms ({t_p / t_o:.2f}x, {t_b / t_o:.2f}x) for a chunk of {R} students")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="epochs timed per variant (the paper: 200-300)")
    ap.add_argument("--reps", type=int, default=2, help="timings per variant; the minimum is printed")
    ap.add_argument("--students", type=int, default=1000)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for ~1 min)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tuned = _malloc.tune()  # as uqkd's CLI and workers do: the oneDNN forward's output blocks are recycled
    mm = matmul_gflops()
    bw_dram = copy_gbs(512 * 2**20)
    bw_cache = copy_gbs(8 * 2**20)
    print(f"malloc tuned: {tuned}; oneDNN GEMMs: {mlp_module.ONEDNN_GEMM}")
    print(f"torch {torch.__version__}, 1 thread. Ceilings measured now: float32 matmul 1536^2 {mm:.1f} GFLOP/s; "
          f"copy bandwidth {bw_dram:.1f} GB/s (512 MiB, DRAM), {bw_cache:.1f} GB/s (8 MiB, cache-sized chunks)")
    sp = load_boston()
    X = sp.X_train
    n, d = X.shape
    rng = np.random.default_rng(0)
    R, E = args.students, args.epochs
    Y = sp.y_train[None, :] + 0.7 * rng.standard_normal((R, n))
    print(f"students: R={R}, n={n}, d={d}, {E} full-batch Adam epochs per timing, float32; time per student-epoch")
    header = f"{'network':>10} {'variant':>26} {'us/student-epoch':>17} {'fused speed-up':>15} {'max |dw| vs fused':>18}"
    print(header)
    for hidden in (16, 64, 128):
        sizes = [d, hidden, 1]
        common = dict(hidden=(hidden,), lr=0.01, n_epochs=E, identity=("bench", hidden), init="torch_default",
                      n_students=R, num_threads=1)
        ref = BatchedMLP(**common, backend="fused")
        t_f = best_of(lambda ref=ref: ref.fit(X, Y), args.reps)
        per = 1e6 / (R * E)
        gf = flops_per_student_epoch(n, sizes) * R * E / t_f / 1e9
        traffic = fused_bytes_per_student_epoch(n, sizes, onednn=mlp_module.ONEDNN_GEMM and tuned) * R
        name = f"13-{hidden}-1"
        print(f"{name:>10} {'fused kernel':>26} {t_f * per:17.2f} {'1.00x':>15} {'-':>18}")
        if mlp_module.ONEDNN_GEMM:
            mlp_module.ONEDNN_GEMM = False
            m = BatchedMLP(**common, backend="fused")
            t_b = best_of(lambda m=m: m.fit(X, Y), args.reps)
            mlp_module.ONEDNN_GEMM = True
            dw = float(np.abs(m.params_ - ref.params_).max())
            print(f"{'':>10} {'fused kernel, MKL bmm':>26} {t_b * per:17.2f} {t_b / t_f:14.2f}x {dw:18.1e}")
        # what the autotuner picks on this host (backend="auto"; measured once per key and host, then cached in
        # $UQKD_CACHE/autotune; a fit this small is normally below AUTOTUNE_MIN_WORK_RATIO, so the gate is lifted)
        ratio, mlp_module.AUTOTUNE_MIN_WORK_RATIO = mlp_module.AUTOTUNE_MIN_WORK_RATIO, 0.0
        tuned = BatchedMLP(**common)
        t0 = time.perf_counter()
        tuned.fit(X, Y)
        t_first = time.perf_counter() - t0
        t_t = best_of(lambda m=tuned: m.fit(X, Y), args.reps)
        mlp_module.AUTOTUNE_MIN_WORK_RATIO = ratio
        dw = float(np.abs(tuned.params_ - ref.params_).max())
        print(f"{'':>10} {'autotuned':>26} {t_t * per:17.2f} {t_t / t_f:14.2f}x {dw:18.1e}  chose "
              f"{tuned.kernel_}, chunks of {tuned.chunk_size_}; first fit {t_first - t_t:+.2f} s (measuring, "
              f"unless cached)")
        for adam in ("foreach", "fused", "for-loop"):
            m = BatchedMLP(**common, backend="autograd", adam=adam)
            t_a = best_of(lambda m=m: m.fit(X, Y), args.reps)
            dw = float(np.abs(m.params_ - ref.params_).max())
            print(f"{'':>10} {'autograd + Adam ' + adam:>26} {t_a * per:17.2f} {t_a / t_f:14.2f}x {dw:18.1e}")
        Xt = torch.tensor(X, dtype=torch.float32)
        Yt = torch.tensor(Y, dtype=torch.float32)
        init = torch.tensor(ref.init_params_)
        out: list[torch.Tensor] = []
        t_v = best_of(lambda out=out, Xt=Xt, Yt=Yt, init=init, hidden=hidden: out.append(vmap_trainer(Xt, Yt, init, hidden, E)),
                      max(1, args.reps - 1))
        dw = float(np.abs(out[-1].numpy() - ref.params_).max())
        print(f"{'':>10} {'torch.func vmap(grad)':>26} {t_v * per:17.2f} {t_v / t_f:14.2f}x {dw:18.1e}")
        if args.compile:
            t_c, pc = compiled_trainer(Xt, Yt, init, hidden, E)
            t_c *= E / (E - 1)
            print(f"{'':>10} {'torch.compile fwd+loss':>26} {t_c * per:17.2f} {t_c / t_f:14.2f}x "
                  f"{float(np.abs(pc.numpy() - ref.params_).max()):18.1e}")
        cs = auto_chunk_size(n, sizes)
        first_layer_layouts(n, d, hidden, cs, max(3, args.reps))
        print(f"{'':>10} fused: {gf:.1f} GFLOP/s = {100 * gf / mm:.0f}% of the matmul ceiling; memory traffic "
              f"{traffic / 1e6:.0f} MB/epoch -> {traffic * E / t_f / 1e9:.1f} GB/s = {100 * traffic * E / t_f / 1e9 / bw_dram:.0f}% "
              f"of DRAM, {100 * traffic * E / t_f / 1e9 / bw_cache:.0f}% of cache copy bandwidth (chunks of {cs} students)")


if __name__ == "__main__":
    main()
