"""Sweep runner: cells, resume, atomic writes, progress, tidy results.

Layout of one run::

    OUT/EXPERIMENT/
        results.csv      one row per cell (x method), cell parameters and statistics
        config.json      experiment, profile, seed, every config value, versions
        *.png            figures
        cells/<id>.json  one file per finished cell (written atomically)

A cell's id hashes (experiment, config, seed, cell parameters). A rerun loads finished
cells and computes only the missing ones, so an interrupted sweep resumed ends with the
same ``results.csv`` as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write_bytes, atomic_write_text
from ._validation import check_int
from .config import (
    ConfigError,
    UserError,
    build_config,
    config_fingerprint,
    config_to_dict,
    load_config_file,
    parse_overrides,
)
from .executors import Executor, auto_workers, limit_threads, make_executor
from .experiments.base import Experiment, get_experiment

__all__ = ["RunResult", "run_experiment", "resolve_config", "atomic_write_text", "atomic_write_bytes", "SweepInterrupted"]


class SweepInterrupted(RuntimeError):
    """Raised by the ``stop_after`` testing hook after that many new cells."""


@dataclass
class RunResult:
    """What :func:`run_experiment` produced."""

    experiment: str
    out_dir: Path
    results_csv: Path
    figures: list[Path]
    n_cells: int
    n_computed: int
    seconds: float


def resolve_config(
    exp: Experiment,
    profile: str = "quick",
    overrides: Mapping[str, Any] | list[str] | None = None,
    config_file: str | Path | None = None,
) -> Any:
    """Defaults < profile < config file < overrides."""
    if profile not in exp.profiles:
        raise UserError(f"--profile: unknown profile {profile!r}; valid profiles: {', '.join(exp.profiles)}")
    layers: list[tuple[Mapping[str, Any], str]] = [(exp.profiles[profile], f"profile {profile}")]
    if config_file is not None:
        layers.append((load_config_file(config_file), f"--config {config_file}"))
    if overrides:
        if isinstance(overrides, list):
            overrides = parse_overrides(exp.config_cls, overrides)
        layers.append((overrides, "--set"))
    return build_config(exp.config_cls, *layers)


def _cell_id(exp_name: str, fingerprint: str, seed: int, cell: Mapping[str, Any]) -> str:
    blob = json.dumps([exp_name, fingerprint, seed, cell], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _run_cell_task(exp_name: str, cfg: Any, cell: dict[str, Any], seed: int) -> tuple[list[dict[str, Any]], float]:
    """Worker entry point (module level, so process pools can pickle it)."""
    exp = get_experiment(exp_name)
    t0 = time.perf_counter()
    with limit_threads(exp.cell_threads):
        rows = exp.run_cell(cfg, cell, seed)
    return rows, time.perf_counter() - t0


def _versions() -> dict[str, str]:
    from . import __version__

    out = {"uqkd": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("numpy", "scipy", "torch", "transformers"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="cell", leave=False, file=sys.stderr)


def run_experiment(
    name: str,
    *,
    profile: str = "quick",
    out: str | Path = "results",
    overrides: Mapping[str, Any] | list[str] | None = None,
    config_file: str | Path | None = None,
    workers: int | str = 1,
    seed: int = 0,
    executor: Executor | str | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    make_figures: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Run (or resume) one registered experiment and write its results.

    Parameters
    ----------
    name : str
        Registered experiment name (``uqkd list``).
    profile : {"quick", "paper"}
        Preset of settings; ``paper`` uses the paper's published grid and replicate counts.
    out : path
        Results root; the experiment writes to ``out/name/``.
    overrides : dict or list of "KEY=VALUE"
        Config fields that win over the profile and the config file.
    config_file : path, optional
        TOML or JSON file of config fields.
    workers : int or "auto"
        Local worker processes (1 = in-process; "auto" = in-process first, then workers
        when the measured cost of the remaining cells pays for their start-up, see
        :class:`uqkd.executors.AutoExecutor`). Results do not depend on it.
    seed : int
        Root seed; every random number derives from (seed, identity of the work).
    executor : Executor or {"local", "ray"}, optional
        An executor instance, or the kind to build (``ray`` runs cells as Ray tasks).
    ray_address : str, optional
        With ``executor="ray"``: None starts a local Ray instance, ``"auto"`` joins a running
        cluster, ``"HOST:PORT"`` connects to that head node.
    stop_after : int, optional
        Testing hook: raise :class:`SweepInterrupted` after this many newly computed cells.

    Returns
    -------
    RunResult
    """
    import pandas as pd

    t0 = time.perf_counter()
    exp = get_experiment(name)
    if workers != "auto":
        workers = _as_user_int(workers, "--workers", 1)
    seed = _as_user_int(seed, "--seed", 0)
    cfg = resolve_config(exp, profile, overrides, config_file)
    cells = exp.cells(cfg)
    if not cells:
        raise ConfigError(f"{name}: the configuration gives an empty grid of cells")
    fp = config_fingerprint(cfg)
    out_dir = Path(out) / name
    cell_dir = out_dir / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    ids = [_cell_id(name, fp, seed, c) for c in cells]
    done: dict[str, dict[str, Any]] = {}
    for cid in ids:
        p = cell_dir / f"{cid}.json"
        if p.is_file():
            try:
                done[cid] = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                pass  # unreadable: recompute
    todo = [i for i, cid in enumerate(ids) if cid not in done]
    n_computed = 0
    if todo:
        if workers == "auto" and exp.cell_threads is None:
            workers = auto_workers(len(todo))  # cells that use every core: no measuring in-process
        owned = executor is None or isinstance(executor, str)
        ex = make_executor(workers, executor or "local", ray_address) if owned else executor
        bar = _progress(len(todo), name, progress)
        try:
            tasks = [(name, cfg, cells[i], seed) for i in todo]
            # in-process cells run under one thread limit for the whole sweep (not one per cell)
            with limit_threads(exp.cell_threads):
                for j, (rows, secs) in ex.map_unordered(_run_cell_task, tasks):
                    i = todo[j]
                    rec = {"cell": cells[i], "rows": rows, "seconds": secs}
                    atomic_write_text(cell_dir / f"{ids[i]}.json", json.dumps(rec, default=_json_default))
                    done[ids[i]] = json.loads(json.dumps(rec, default=_json_default))
                    n_computed += 1
                    if bar is not None:
                        bar.update(1)
                    if stop_after is not None and n_computed >= stop_after:
                        raise SweepInterrupted(f"stopped after {n_computed} cells (stop_after)")
        finally:
            if bar is not None:
                bar.close()
            if owned:
                ex.close()
    rows = [row for cid in ids for row in done[cid]["rows"]]
    df = pd.DataFrame(rows)
    csv_path = out_dir / "results.csv"
    atomic_write_text(csv_path, df.to_csv(index=False, float_format=None))
    meta = {
        "experiment": name,
        "section": exp.section,
        "profile": profile,
        "seed": seed,
        "config": config_to_dict(cfg),
        "config_fingerprint": fp,
        "n_cells": len(cells),
        "versions": _versions(),
        "cell_seconds_total": sum(done[c].get("seconds", 0.0) for c in ids),
    }
    atomic_write_text(out_dir / "config.json", json.dumps(meta, indent=2, default=str))
    figures: list[Path] = []
    if make_figures and exp.plot is not None:
        figures = list(exp.plot(df, cfg, out_dir))
    return RunResult(name, out_dir, csv_path, figures, len(cells), n_computed, time.perf_counter() - t0)


def _as_user_int(value: Any, name: str, min_value: int) -> int:
    try:
        return check_int(value, name, min_value=min_value)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
