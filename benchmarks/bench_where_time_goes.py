"""Where an MLP experiment's wall time goes: kernel, teacher fitting, statistics, start-up, publishing.

Runs each experiment in this process (``workers=1``, so every second is attributed; with
``--workers auto`` the cells overlap but the shares of the work are the same) with timers wrapped
around its parts:

* **start-up**: a fresh ``python -c "import uqkd.cli, uqkd.students.mlp"`` (what every ``uqkd`` command
  and sweep worker pays before its first cell: Python, numpy, torch, uqkd), timed in a subprocess;
* **kernel**: the students' training loops (``BatchedMLP._train_chunk`` / ``_train_chunk_autograd``);
* **autotune**: the kernel autotuner's measurements (zero when the host's cache already has the key);
* **teacher**: fitting the teacher (``regression_teacher``, its own training loop included);
* **statistics**: the per-cell statistics (``_reg_stats``: MSEs, inter-student variance);
* **other cell work**: the rest of the cells (labels, initialisation, predictions, data);
* **publishing**: writing results.csv / config.json / timings.json and drawing the figures (``_publish``);
* **runner**: the rest of ``run_experiment`` (configuration, cell records, scheduling).

Run: ``python benchmarks/bench_where_time_goes.py [--profile quick] [--experiments teacher-noise-mlp ...]``
(the shares are of the in-process wall time plus the start-up; ``--reps`` runs each experiment
several times, alternating, and prints medians).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

PARTS = ("start-up", "kernel", "autotune", "teacher", "statistics", "other cell work", "publishing", "runner")


def startup_seconds() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import uqkd.cli, uqkd.students.mlp"], check=True)
    return time.perf_counter() - t


class Timers:
    """Exclusive timers: time inside a nested timed call is charged to the inner part only."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.stack: list[list[Any]] = []  # [part, start, time charged to children]

    def wrap(self, owner: Any, attr: str, part: str) -> Callable[[], None]:
        real = getattr(owner, attr)

        def timed(*a: Any, **k: Any) -> Any:
            inside_teacher = part == "kernel" and any(f[0] == "teacher" for f in self.stack)
            self.stack.append(["teacher" if inside_teacher else part, time.perf_counter(), 0.0])
            try:
                return real(*a, **k)
            finally:
                p, t0, inner = self.stack.pop()
                spent = time.perf_counter() - t0
                self.total[p] += spent - inner
                if self.stack:
                    self.stack[-1][2] += spent

        setattr(owner, attr, timed)
        return lambda: setattr(owner, attr, real)


def run_once(name: str, profile: str) -> dict[str, float]:
    from uqkd import runner
    from uqkd.experiments import mlp as exp_mlp
    from uqkd.students import _autotune
    from uqkd.students.mlp import BatchedMLP

    tm = Timers()
    undo = [
        tm.wrap(runner, "_run_cell_task", "other cell work"),
        tm.wrap(BatchedMLP, "_train_chunk", "kernel"),
        tm.wrap(BatchedMLP, "_train_chunk_autograd", "kernel"),
        tm.wrap(_autotune, "measure", "autotune"),
        tm.wrap(exp_mlp, "regression_teacher", "teacher"),
        tm.wrap(exp_mlp, "_reg_stats", "statistics"),
        tm.wrap(runner, "_publish", "publishing"),
    ]
    try:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            runner.run_experiment(name, profile=profile, out=out, workers=1, progress=False)
            wall = time.perf_counter() - t
    finally:
        for u in reversed(undo):
            u()
    parts = dict(tm.total)
    parts["runner"] = wall - sum(parts.values())
    return parts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--experiments", nargs="+", default=["teacher-noise-mlp"])
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args(argv)
    from uqkd import _malloc
    from uqkd.experiments import mlp as exp_mlp

    _malloc.tune()  # as the uqkd command does
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for _ in range(args.reps):
        for name in args.experiments:  # alternating, so a busy spell hits every experiment
            exp_mlp.regression_teacher.cache_clear()  # each run fits its teacher, as a fresh process does
            parts = run_once(name, args.profile)
            parts["start-up"] = startup_seconds()
            runs[name].append(parts)
    for name, reps in runs.items():
        med = {p: statistics.median(r.get(p, 0.0) for r in reps) for p in PARTS}
        total = sum(med.values())
        print(f"{name} --profile {args.profile}: {total:.2f} s (median of {len(reps)}; in-process, start-up added)")
        for p in PARTS:
            print(f"  {p:>16}: {med[p]:7.2f} s  {100 * med[p] / total:5.1f} %")


if __name__ == "__main__":
    main()
