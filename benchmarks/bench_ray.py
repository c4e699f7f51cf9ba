"""The Ray executor against the in-process one and against a local process pool.

1. Overhead: the same sweep in-process and as Ray tasks on a local Ray instance with one
   CPU (so both run one cell at a time); the ratio of wall times, with and without the
   instance's start-up.
2. Scaling: a larger sweep with 1 and 2 local worker processes, and with 1 and 2 Ray CPUs,
   side by side. Every run's results.csv is checked identical to the in-process one.

Needs ``pip install 'uqkd[ray]'``. Run: ``python benchmarks/bench_ray.py``
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from uqkd.runner import run_experiment

EXP = "variance-aware-linear"
OVERHEAD = {"n_students": 500, "alphas": (0.1, 0.5, 1.0), "ks": (1, 3, 10, 20)}  # 24 cells
LARGE = {"n_students": 3000, "alphas": (0.1, 0.5, 1.0), "ks": (1, 3, 10, 20, 30, 50)}  # 36 cells


def _sweep(root: Path, tag: str, overrides: dict, **kw) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    res = run_experiment(EXP, out=root / tag, overrides=dict(overrides), progress=False, make_figures=False, **kw)
    return time.perf_counter() - t0, res.results_csv.read_bytes()


def _ray(root: Path, tag: str, overrides: dict, cpus: int, again: bool = False) -> tuple[float, float, float, bytes]:
    """On a fresh local Ray instance with ``cpus`` CPUs: (start-up s, sweep s, rerun s on warm workers, results.csv)."""
    from uqkd.executors_ray import RayExecutor

    t0 = time.perf_counter()
    ex = RayExecutor(local_cpus=cpus)
    startup = time.perf_counter() - t0
    try:
        secs, csv = _sweep(root, tag, overrides, executor=ex)
        warm = _sweep(root, tag + "-again", overrides, executor=ex)[0] if again else float("nan")
    finally:
        ex.close()
    return startup, secs, warm, csv


def main() -> None:
    try:
        import ray
    except ImportError:
        print("bench_ray: skipped, Ray is not installed (pip install 'uqkd[ray]')")  # make bench runs the rest
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"ray {ray.__version__}; {cores} cores; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="uqkd-bench-ray-") as tmp:
        root = Path(tmp)

        _sweep(root, "warm-up", {**OVERHEAD, "ks": (1,), "alphas": (0.1,)})  # imports and data loading
        local, ref = _sweep(root, "inproc", OVERHEAD)
        startup, on_ray, warm, csv = _ray(root, "ray1", OVERHEAD, cpus=1, again=True)
        assert csv == ref, "Ray results differ from in-process"
        print(f"\n1. overhead, {EXP} sweep of 24 cells, one cell at a time")
        print(f"   in-process              {local:7.2f} s")
        print(f"   Ray (1 CPU)             {on_ray:7.2f} s   + {startup:.2f} s to start the local instance")
        print(f"   Ray again, warm worker  {warm:7.2f} s")
        print(f"   ratio Ray/in-process    {on_ray / local:7.2f}x  ({(on_ray + startup) / local:.2f}x with start-up, "
              f"{warm / local:.2f}x warm)")
        print(f"   per cell: in-process {local / 24 * 1e3:.0f} ms, Ray {on_ray / 24 * 1e3:.0f} ms "
              f"({warm / 24 * 1e3:.0f} ms warm)")

        print(f"\n2. scaling, {EXP} sweep of 36 cells (3000 students each); results identical in every run")
        ref_large = None
        rows = []
        for workers in (1, 2):
            secs, csv = _sweep(root, f"pool{workers}", LARGE, workers=workers)
            ref_large = ref_large or csv
            assert csv == ref_large, "local pool results differ"
            _, rsecs, _, rcsv = _ray(root, f"ray{workers}x", LARGE, cpus=workers)
            assert rcsv == ref_large, "Ray results differ"
            rows.append((workers, secs, rsecs))
        print("   workers   local (1 = in-process, 2 = pool)   Ray local instance")
        for w, s, r in rows:
            print(f"   {w:>7}   {s:10.2f} s{'':22}{r:8.2f} s")
        (_, s1, r1), (_, s2, r2) = rows
        print(f"   speed-up 1 -> 2: local {s1 / s2:.2f}x, Ray {r1 / r2:.2f}x "
              f"(ideal 2x on 2 idle cores; load average now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
