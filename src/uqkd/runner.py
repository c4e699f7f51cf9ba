"""Sweep runner: cells, resume, atomic writes, progress, tidy results.

Layout of one run::

    OUT/EXPERIMENT/
        results.csv      the summary table: one row per cell (x method), cell parameters and statistics
        question.csv ... the experiment's other tables, one file each (uqkd.schema.TABLES: question,
                         question-inter, trajectory, allocation), where its rows name them by ``record``
        config.json      experiment, profile, seed, every config value, versions, results_sha256 and
                         ``tables``: each table's file, row count and sha256
        *.png            figures
        cells/<id>.json  one verified record per finished cell (written atomically)
        .lock            held (flock) by the run writing here; a second run into it exits 2

The tables, config.json and the figures are published together: staged in a temporary folder
and renamed into place only when all of them are written, so a failed run leaves the earlier
results intact. A cell record is used only if its id, experiment, config fingerprint, seed,
cell parameters, rows and checksum all check out; anything else is recomputed with a warning.

A cell's id hashes (experiment, config, seed, cell parameters). A rerun loads finished
cells and computes only the missing ones, so an interrupted sweep resumed ends with the
same tables as an uninterrupted run.

:func:`run_experiment` reads as its three steps: :func:`_load_cell_records` (which finished cells
can be reused), :func:`_compute_cells` (the executor's whole lifetime) and :func:`_publish_results`
(the tables, config.json, timings.json and figures as one unit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import atomic_write_bytes, atomic_write_text
from ._validation import check_int
from .config import (
    ConfigError,
    EnvironmentFailure,
    UserError,
    build_config,
    config_fingerprint,
    config_to_dict,
    load_config_file,
    parse_overrides,
)
from .executors import AutoExecutor, Executor, ProcessPoolExecutor, auto_workers, limit_threads, make_executor
from .experiments.base import Experiment, get_experiment

__all__ = ["RunResult", "run_experiment", "resolve_config", "atomic_write_text", "atomic_write_bytes", "SweepInterrupted",
           "OutputLock", "load_cell_record", "make_cell_record"]

log = logging.getLogger("uqkd")


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
    #: every result table's file (``{"summary": .../results.csv, "question": .../question.csv, ...}``)
    tables: dict[str, Path] = field(default_factory=dict)

    def read(self) -> Any:
        """Every table of this run in one frame (:func:`uqkd.schema.join_tables`): what the report and claims read."""
        import pandas as pd

        from .schema import join_tables

        return join_tables({n: pd.read_csv(p) for n, p in self.tables.items()})


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
    _check_distinct_cells(name, cells)
    out_dir = Path(out) / name
    cell_dir = _make_cell_dir(out_dir / "cells")
    sweep = _Sweep(exp, cfg, cells, [_cell_id(name, fp, seed, c) for c in cells], fp, seed, cell_dir)
    with OutputLock(out_dir), _terminate_as_interrupt():
        _remove_stale_temporaries(cell_dir)
        # a folder in the way of results.csv, config.json or timings.json fails now, not after the sweep
        _check_publish_destinations([out_dir / f for f in ("results.csv", "config.json", "timings.json")])
        done = _load_cell_records(sweep)
        n_computed = _compute_cells(sweep, done, workers, executor, ray_address, progress, make_figures, stop_after)
        files, figures = _publish_results(sweep, done, out_dir, profile, n_computed, time.perf_counter() - t0,
                                          make_figures)
    return RunResult(name, out_dir, out_dir / "results.csv", figures, len(cells), n_computed, time.perf_counter() - t0,
                     tables=files)


@dataclass(frozen=True)
class _Sweep:
    """One experiment's grid as the runner handles it: the cells, their ids and where their records live."""

    exp: Experiment
    cfg: Any
    cells: list[dict[str, Any]]
    ids: list[str]
    fingerprint: str
    seed: int
    cell_dir: Path


def _make_cell_dir(cell_dir: Path) -> Path:
    try:
        cell_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (cell_dir, *cell_dir.parents) if p.exists() and not p.is_dir()), cell_dir)
        raise EnvironmentFailure(f"--out: cannot create {str(cell_dir)!r}: {str(blocker)!r} is a file in the way"
                                 ) from None
    return cell_dir


def _load_cell_records(sweep: _Sweep) -> dict[str, dict[str, Any]]:
    """The verified records of the cells finished before (``{cell id: record}``); a record that fails verification
    is left out (its cell is recomputed), with one warning for all of them."""
    done: dict[str, dict[str, Any]] = {}
    rejected: list[str] = []
    for cid, cell in zip(sweep.ids, sweep.cells, strict=True):
        p = sweep.cell_dir / f"{cid}.json"
        if os.path.lexists(p):
            rec, why = load_cell_record(p, cid=cid, experiment=sweep.exp.name, fingerprint=sweep.fingerprint,
                                        seed=sweep.seed, cell=cell)
            if rec is not None:
                done[cid] = rec
            else:
                rejected.append(f"{p.name}: {why}")
    if rejected:
        log.warning("%s: %d cell record(s) failed verification and will be recomputed (first: %s)",
                    sweep.exp.name, len(rejected), rejected[0])
    return done


def _compute_cells(sweep: _Sweep, done: dict[str, dict[str, Any]], workers: int | str,
                   executor: Executor | str | None, ray_address: str | None, progress: bool, make_figures: bool,
                   stop_after: int | None) -> int:
    """Compute the cells missing from ``done`` (added to it, each record written as it arrives); returns how many.

    The executor lives here: built (unless one was passed in) before the first cell, closed after the last or on
    any failure.
    """
    exp, name = sweep.exp, sweep.exp.name
    todo = [i for i, cid in enumerate(sweep.ids) if cid not in done]
    if exp.schedule_key is not None:  # compute order only; rows are written in grid order
        todo.sort(key=lambda i: exp.schedule_key(sweep.cells[i]))
    if not todo:
        return 0
    if workers == "auto" and exp.cell_threads is None:
        workers = auto_workers(len(todo))  # cells that use every core: no measuring in-process
    owned = executor is None or isinstance(executor, str)
    ex = make_executor(workers, executor or "local", ray_address) if owned else executor
    bar = _progress(len(todo), name, progress)
    hold_after = _test_hold_after()
    n_computed = 0
    try:
        tasks = [(name, sweep.cfg, sweep.cells[i], sweep.seed) for i in todo]
        imported = False
        # in-process cells run under one thread limit for the whole sweep (not one per cell)
        with limit_threads(exp.cell_threads):
            for j, (rows, secs) in ex.map_unordered(_run_cell_task, tasks):
                i = todo[j]
                cid = sweep.ids[i]
                rec = make_cell_record(cid, name, sweep.fingerprint, sweep.seed, sweep.cells[i], rows, secs)
                _check_rows(name, sweep.cells[i], rec["rows"])
                # no fsync per record (~0.9 ms each): a record a crash leaves empty or short
                # fails its checksum on the next run and the cell is recomputed
                atomic_write_text(sweep.cell_dir / f"{cid}.json", json.dumps(rec), durable=False)
                done[cid] = rec
                n_computed += 1
                if not imported and _has_workers(ex):
                    imported = _import_publishing(exp, make_figures)
                if bar is not None:
                    bar.update(1)
                if stop_after is not None and n_computed >= stop_after:
                    raise SweepInterrupted(f"stopped after {n_computed} cells (stop_after)")
                if n_computed == hold_after:
                    time.sleep(_TEST_HOLD_SECONDS)  # a signal now lands mid-sweep (the tests' interrupt)
    except BrokenProcessPool:
        raise EnvironmentFailure(
            f"{name}: a worker process died (killed by the system, e.g. out of memory); "
            f"{len(done)} of {len(sweep.ids)} finished cells are saved; rerun the same command to resume"
        ) from None
    except MemoryError as exc:
        raise UserError(f"{name}: not enough memory for these settings ({exc}); "
                        "reduce n_students, k or the grid") from None
    finally:
        if bar is not None:
            bar.close()
        if owned:
            ex.close()
    return n_computed


def _publish_results(sweep: _Sweep, done: dict[str, dict[str, Any]], out_dir: Path, profile: str, n_computed: int,
                     sweep_seconds: float, make_figures: bool) -> tuple[dict[str, Path], list[Path]]:
    """Write the rows of every cell, in grid order, as one CSV file per table (:mod:`uqkd.schema`), with
    ``config.json`` (settings, versions, each file's checksum), ``timings.json`` and the figures, as one unit
    (:func:`_publish`). Returns ``({table: file}, figures)``."""
    import pandas as pd

    from .schema import SUMMARY, join_tables, split_rows, table_file

    exp, cfg, ids = sweep.exp, sweep.cfg, sweep.ids
    meta = {
        "experiment": exp.name,
        "section": exp.section,
        "profile": profile,
        "seed": sweep.seed,
        "config": config_to_dict(cfg),
        "config_fingerprint": sweep.fingerprint,
        "n_cells": len(sweep.cells),
        "versions": _versions(),
    }
    # wall-clock figures live apart from the tables and config.json, which a rerun with the same seed reproduces
    # byte for byte
    timings = {
        "experiment": exp.name,
        "cell_seconds": {c: float(done[c].get("seconds", 0.0)) for c in ids},
        "cell_seconds_total": sum(float(done[c].get("seconds", 0.0)) for c in ids),
        "cells_computed_this_run": n_computed,
        "sweep_seconds_this_run": sweep_seconds,
    }
    by_table = split_rows(row for cid in sweep.ids for row in done[cid]["rows"])
    frames = {n: pd.DataFrame(rows) for n, rows in by_table.items() if rows or n == SUMMARY}
    texts = {table_file(n): df.to_csv(index=False, float_format=None) for n, df in frames.items()}
    # the report checks them: a table edited, cut short or swapped after publishing is damage
    meta["results_sha256"] = hashlib.sha256(texts["results.csv"].encode("utf-8")).hexdigest()
    meta["tables"] = {n: {"file": table_file(n), "rows": len(df),
                          "sha256": hashlib.sha256(texts[table_file(n)].encode("utf-8")).hexdigest()}
                      for n, df in frames.items()}
    df = join_tables(frames)  # what plots read: every table, told apart by ``record`` where there are several
    before = _published_table_files(out_dir)
    figures = _publish(out_dir, texts, json.dumps(meta, indent=2, default=str),
                       (lambda d: list(exp.plot(df, cfg, d))) if make_figures and exp.plot is not None else None,
                       timings_text=json.dumps(timings, indent=2))
    for stale in before - set(texts):  # a table the earlier unit had and this one has not
        with contextlib.suppress(FileNotFoundError):
            (out_dir / stale).unlink()
    return {n: out_dir / table_file(n) for n in frames}, figures


def _published_table_files(out_dir: Path) -> set[str]:
    """The table files the unit published in ``out_dir`` lists in its config.json (none if it cannot be read)."""
    try:
        listed = json.loads((out_dir / "config.json").read_text(encoding="utf-8")).get("tables", {})
        files = {spec["file"] for spec in listed.values()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return set()
    return {f for f in files if isinstance(f, str) and f.endswith(".csv") and "/" not in f and "\\" not in f
            and not f.startswith(".")}


#: Testing hook: with ``UQKD_TEST_HOLD_AFTER_CELLS=N`` in the environment the sweep pauses this long right after writing
#: its N-th newly computed cell record, so a test or the hostile-input battery interrupts it mid-sweep for certain
#: (records are written in bursts as results arrive, so "wait until N records exist" alone often came too late).
_TEST_HOLD_SECONDS = 60.0


def _test_hold_after() -> int | None:
    raw = os.environ.get("UQKD_TEST_HOLD_AFTER_CELLS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"UQKD_TEST_HOLD_AFTER_CELLS: expected an integer >= 1 (a testing hook), got {raw!r}")
    return n


def _has_workers(ex: Any) -> bool:
    """Whether cells run in other processes (a pool; ``--workers auto`` once it has spawned one)."""
    return isinstance(ex, ProcessPoolExecutor) or (isinstance(ex, AutoExecutor) and ex.spawned)


def _import_publishing(exp: Experiment, make_figures: bool) -> bool:
    """Import what publishing needs (pandas; pyplot and ``plot_imports`` if the experiment draws figures) mid-sweep.

    Only while workers run cells: the ~0.5 s of imports then overlaps their cells instead of
    running after the sweep with the cores idle. In-process it would gain nothing, and it would
    inflate the cell cost ``--workers auto`` measures before deciding to spawn.
    """
    import pandas  # noqa: F401

    if make_figures and exp.plot is not None:
        import importlib

        from . import plotting  # noqa: F401

        for mod in exp.plot_imports:
            importlib.import_module(mod)
    return True


# ------------------------------------------------------------------------------------------ cell records

CELL_RECORD_VERSION = 2


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default, allow_nan=True, separators=(",", ":"))


def _checksum(cell: Any, rows: Any) -> str:
    return hashlib.sha256(_canonical({"cell": cell, "rows": rows}).encode()).hexdigest()


def make_cell_record(cid: str, experiment: str, fingerprint: str, seed: int, cell: Mapping[str, Any],
                     rows: Any, seconds: float) -> dict[str, Any]:
    """The JSON record of one finished cell: its identity, rows and a checksum over (cell, rows)."""
    cell_j = json.loads(_canonical(cell))
    rows_j = json.loads(_canonical(rows))
    return {"format": CELL_RECORD_VERSION, "id": cid, "experiment": experiment, "config_fingerprint": fingerprint,
            "seed": seed, "cell": cell_j, "rows": rows_j, "seconds": float(seconds),
            "checksum": _checksum(cell_j, rows_j)}


def load_cell_record(path: Path, *, cid: str, experiment: str, fingerprint: str, seed: int,
                     cell: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` if ``path`` holds this cell's verified record, else ``(None, why)``.

    Checked: UTF-8 JSON object, format, id, experiment, config fingerprint, seed, cell parameters,
    rows (a non-empty list of flat objects that repeat the cell parameters) and the checksum.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except ValueError:
        return None, "not valid JSON (truncated?)"
    if not isinstance(rec, dict):
        return None, f"expected a JSON object, got {type(rec).__name__}"
    if rec.get("format") != CELL_RECORD_VERSION:
        return None, f"record format {rec.get('format')!r}, expected {CELL_RECORD_VERSION}"
    for key, want in (("id", cid), ("experiment", experiment), ("config_fingerprint", fingerprint), ("seed", seed)):
        if rec.get(key) != want or type(rec.get(key)) is not type(want):
            return None, f"{key} {rec.get(key)!r} does not match {want!r}"
    if rec.get("cell") != json.loads(_canonical(cell)):
        return None, "cell parameters do not match"
    rows = rec.get("rows")
    if not isinstance(rows, list) or not rows:
        return None, "no rows"
    for r in rows:
        if not isinstance(r, dict) or any(isinstance(v, (dict, list)) for v in r.values()):
            return None, "a row is not a flat object"
        if any(r.get(k) != v for k, v in rec["cell"].items()):
            return None, "a row belongs to another cell"
    if not isinstance(rec.get("seconds"), (int, float)) or isinstance(rec.get("seconds"), bool):
        return None, "seconds is not a number"
    if rec.get("checksum") != _checksum(rec["cell"], rows):
        return None, "checksum mismatch (edited or damaged)"
    return rec, ""


def _check_rows(name: str, cell: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
    """A cell whose statistics overflowed to +-inf is a settings problem, never a result."""
    if not rows:
        raise RuntimeError(f"{name}: cell {dict(cell)} returned no rows")
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and math.isinf(v):
                raise UserError(f"{name}: cell {dict(cell)}: {k} is {v} (numerical overflow); "
                                "the settings are out of range, use smaller noise scales or sizes")


def _check_distinct_cells(name: str, cells: list[dict[str, Any]]) -> None:
    seen: dict[str, int] = {}
    for c in cells:
        key = _canonical(c)
        if key in seen:
            raise ConfigError(f"{name}: duplicate grid values give the cell {c} twice; "
                              "list each value once (e.g. sigmas=0.5,1.0, not 0.5,0.5)")
        seen[key] = 1


def _remove_stale_temporaries(cell_dir: Path) -> None:
    """``.*.tmp`` files and ``.publish-*`` staging folders left by a process killed mid-write or mid-publish.

    Called with the output lock held, so no live process writes here: every temporary is stale.
    """
    for p in list(cell_dir.glob(".*.tmp")) + list(cell_dir.parent.glob(".*.tmp")):
        with contextlib.suppress(OSError):
            p.unlink()
    for p in cell_dir.parent.glob(".publish-*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------------ publishing


def _publish(out_dir: Path, tables: Mapping[str, str], meta_text: str, plot: Any, timings_text: str | None = None
             ) -> list[Path]:
    """Write the result tables (``{file name: CSV text}``), config.json, timings.json and the figures as one unit.

    Everything is first written into a staging folder; only when all of it exists are the files
    renamed into place. A failure (a full disk, a figure that cannot be drawn) leaves the earlier
    published unit untouched.
    """
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=".publish-"))
    try:
        for fname, text in tables.items():
            atomic_write_text(stage / fname, text)
        atomic_write_text(stage / "config.json", meta_text)
        if timings_text is not None:
            atomic_write_text(stage / "timings.json", timings_text)
        staged_figs = []
        if plot is not None:
            from .plotting import parallel_figures

            with parallel_figures():  # figures drawn on the cores the finished sweep left idle
                staged_figs = [Path(f) for f in plot(stage)]
        for f in staged_figs:
            if f.parent.resolve() != stage.resolve() or not f.is_file():
                raise RuntimeError(f"plot returned {str(f)!r}, not a file in the folder it was given")
        # figures first, config.json last: a reader that sees the new config sees the new unit
        moves = [(f, out_dir / f.name) for f in staged_figs]
        if timings_text is not None:
            moves.append((stage / "timings.json", out_dir / "timings.json"))
        moves += [(stage / f, out_dir / f) for f in tables]
        moves.append((stage / "config.json", out_dir / "config.json"))
        # every destination checked before the first rename: a folder in the way of any of them publishes nothing
        _check_publish_destinations([dest for _, dest in moves])
        _move_all_or_none(moves, stage / ".previous")
        return [dest for _, dest in moves[:len(staged_figs)]]
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_publish_destinations(dests: list[Path]) -> None:
    """``EnvironmentFailure`` if any destination is a folder (``os.replace`` cannot put a file over one)."""
    for dest in dests:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if stat.S_ISDIR(os.lstat(dest).st_mode):
                raise EnvironmentFailure(f"--out: cannot publish {str(dest)!r}: a folder is in the way (expected a "
                                         "file or nothing there); remove it and rerun (finished cells are kept, "
                                         "nothing of this run was published)")


def _move_all_or_none(moves: list[tuple[Path, Path]], backup_dir: Path) -> None:
    """``os.replace`` each (source, destination); if one fails, the ones already done are undone.

    The file each destination held before is kept as a hard link (a copy where links are not supported) in
    ``backup_dir`` until all renames succeed, so a failure part-way restores the earlier unit instead of leaving
    it half replaced.
    """
    done: list[tuple[Path, Path | None, bool]] = []  # (destination, backup, existed before)
    try:
        for src, dest in moves:
            existed = os.path.lexists(dest)
            backup = None
            if existed:
                backup_dir.mkdir(exist_ok=True)
                backup = backup_dir / dest.name
                try:
                    os.link(dest, backup, follow_symlinks=False)
                except OSError:
                    try:
                        shutil.copy2(dest, backup, follow_symlinks=False)
                    except OSError:
                        backup = None  # cannot be restored: left as the new file on a rollback
            os.replace(src, dest)
            done.append((dest, backup, existed))
    except BaseException:
        for dest, backup, existed in reversed(done):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, dest)
                elif not existed:
                    os.unlink(dest)
        raise


# ------------------------------------------------------------------------------------------ lock, signals


class OutputLock:
    """An exclusive lock on one experiment's output folder (``OUT/EXPERIMENT/.lock``).

    Held with ``flock`` for the whole run, so the kernel frees it when the holder dies: a lock file
    left by a dead process is simply taken over. A second live run gets a :class:`UserError`
    naming the lock and the holder's pid.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise UserError(f"--out: {str(self.path)!r} is locked by another run (pid {holder}) writing into the "
                            "same folder; wait for it to finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (harmless, taken over next time)
            self._fd = None


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so workers are shut down and no temporary file stays behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


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
