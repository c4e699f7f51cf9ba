"""Figures of a finished sweep: drawn one after another here (naive) against ``parallel_figures``.

Builds the variance-aware-linear paper figures from a small run's results grid repeated to the
paper's shape, and saves them (a) serially, (b) inside ``uqkd.plotting.parallel_figures``,
alternating the two for several repeats. Prints the median wall time of each, the ratio, and
whether the PNGs are byte-identical.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from uqkd import plotting as plots
from uqkd.experiments.base import get_experiment
from uqkd.runner import resolve_config, run_experiment

EXP = "variance-aware-linear"


def main(repeats: int = 5) -> None:
    exp = get_experiment(EXP)
    with tempfile.TemporaryDirectory() as d:
        # the paper grid (4 alphas x 16 k x 5 methods x 5 noise settings) with few students:
        # the figures have the paper's axes, lines and tick labels
        res = run_experiment(EXP, profile="paper", out=d, overrides={"n_students": 20}, workers=1,
                             progress=False, make_figures=False)
        import pandas as pd

        df = pd.read_csv(res.results_csv)
        cfg = resolve_config(exp, "paper", {"n_students": 20}, None)
        times: dict[str, list[float]] = {"serial": [], "parallel": []}
        pngs: dict[str, dict[str, bytes]] = {}
        for _ in range(repeats):
            for mode in times:
                out = Path(tempfile.mkdtemp(dir=d))
                t = time.perf_counter()
                if mode == "parallel":
                    with plots.parallel_figures():
                        paths = exp.plot(df, cfg, out)
                else:
                    paths = exp.plot(df, cfg, out)
                times[mode].append(time.perf_counter() - t)
                pngs[mode] = {Path(p).name: Path(p).read_bytes() for p in paths}
    ser, par = statistics.median(times["serial"]), statistics.median(times["parallel"])
    print(f"{EXP} paper figures ({len(pngs['serial'])} PNGs), median of {repeats}:")
    print(f"  serial (one after another here) {ser:.3f} s")
    print(f"  parallel_figures (forked)       {par:.3f} s   serial / parallel = {ser / par:.2f}x")
    print(f"  PNGs byte-identical: {pngs['serial'] == pngs['parallel']}")


if __name__ == "__main__":
    main()
