"""The experiment contract and registry.

An experiment is a grid of cells. Each cell is a pure function of (config, cell
parameters, root seed): ``run_cell`` derives every random number from the cell's identity
(see :mod:`uqkd._seeding`) and returns one or more result rows (dicts). The runner
handles scheduling, resume, atomic writes and figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import UserError, unbounded_fields

__all__ = ["Deviation", "Experiment", "register", "get_experiment", "list_experiments", "experiment_modules",
           "EXPERIMENTS"]

Cell = dict[str, Any]
Row = dict[str, Any]


@dataclass(frozen=True)
class Deviation:
    """One difference between uqkd's ``paper`` profile of an experiment and the published script.

    Attributes
    ----------
    setting : str
        What differs, e.g. ``"train/test split"``.
    published : str
        What the published script does.
    uqkd : str
        What uqkd's ``paper`` profile does.
    why : str
        Why uqkd differs (a bug fixed, an offline substitute, a labelled design of ours).
    """

    setting: str
    published: str
    uqkd: str
    why: str = ""


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"variance-aware-linear"``.
    section : str
        Paper section, e.g. ``"7"``.
    description : str
        One line for ``uqkd list``.
    config_cls : type
        Dataclass of options; ``profiles`` hold overrides of its defaults.
    cells : callable(config) -> list of dict
        The sweep grid. Each dict holds the cell parameters (JSON-serialisable scalars).
    run_cell : callable(config, cell, seed) -> list of dict
        Pure: returns rows; each row repeats the cell parameters and adds statistics,
        including ``n_students``.
    plot : callable(results DataFrame, config, out_dir) -> list of Path, optional
    profiles : dict
        ``{"quick": {...}, "paper": {...}}`` field overrides.
    cell_threads : int or None
        Intra-op threads (BLAS, torch) a cell runs with. The default 1 makes every number
        independent of the worker count (BLAS reductions can round differently with other
        thread counts); parallelism then comes from running cells in worker processes.
        ``None`` leaves threading alone (for experiments of a few long model-bound cells).
    summary : callable(results DataFrame) -> DataFrame, optional
        The key numbers the report shows (default: the first 30 rows).
    notes : str
        Report text under the description: the design (published or uqkd's), quirks of the
        published code that uqkd fixes, how to read the results.
    tables : callable(results DataFrame) -> dict of str to DataFrame, optional
        Further labelled tables the report shows after the key numbers (e.g. fits across cells).
    schedule_key : callable(cell) -> sortable, optional
        The order in which cells are computed (stable sort of the grid by this key); results
        stay in grid order. Cells that share cached work (e.g. one teacher draw) then run
        next to each other in a process. Speed only: no number may depend on it.
    plot_imports : tuple of str
        Modules ``plot`` imports beyond pandas and pyplot (e.g. ``"scipy.special"`` for a fit
        drawn on a figure). The runner imports them mid-sweep while worker processes run cells,
        as it does pandas and pyplot, instead of after the sweep. Speed only.
    deviations : tuple of Deviation
        Every difference between the ``paper`` profile and the published script, listed in
        the experiment's report section and in the report's "Deviations from the published
        scripts" table.
    """

    name: str
    section: str
    description: str
    config_cls: type
    cells: Callable[[Any], list[Cell]]
    run_cell: Callable[[Any, Cell, int], list[Row]]
    plot: Callable[[Any, Any, Path], list[Path]] | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=lambda: {"quick": {}, "paper": {}})
    cell_threads: int | None = 1
    summary: Callable[[Any], Any] | None = None
    notes: str = ""
    tables: Callable[[Any], dict[str, Any]] | None = None
    schedule_key: Callable[[Cell], Any] | None = None
    plot_imports: tuple[str, ...] = ()
    deviations: tuple[Deviation, ...] = ()


EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Add an experiment to the registry (names are unique)."""
    if exp.name in EXPERIMENTS and EXPERIMENTS[exp.name] is not exp:
        raise ValueError(f"experiment {exp.name!r} is already registered")
    for prof in ("quick", "paper"):
        if prof not in exp.profiles:
            raise ValueError(f"experiment {exp.name!r}: missing profile {prof!r}")
    if not (isinstance(exp.plot_imports, tuple) and all(isinstance(m, str) and m for m in exp.plot_imports)):
        raise ValueError(f"experiment {exp.name!r}: plot_imports: expected a tuple of module names, "
                         f"got {exp.plot_imports!r}")
    if not (isinstance(exp.deviations, tuple) and all(isinstance(d, Deviation) for d in exp.deviations)):
        raise ValueError(f"experiment {exp.name!r}: deviations: expected a tuple of Deviation, got {exp.deviations!r}")
    missing = unbounded_fields(exp.config_cls)
    if missing:
        raise ValueError(f"experiment {exp.name!r}: numeric settings without declared bounds (option(..., min= or "
                         f"gt=, max=)): {', '.join(missing)}")
    # ``demo``: the first look of ``make demo``; an experiment without one of its own uses ``quick``
    exp.profiles.setdefault("demo", dict(exp.profiles["quick"]))
    EXPERIMENTS[exp.name] = exp
    return exp


_LOADED = False


def experiment_modules() -> list[str]:
    """The modules that define experiments: every module of :mod:`uqkd.experiments` whose name does not start with
    ``_`` (package discovery: a new experiment is a new module, no import list to extend)."""
    import importlib
    import pkgutil

    pkg = __name__.rpartition(".")[0]
    path = importlib.import_module(pkg).__path__
    return [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(path) if not m.name.startswith("_") and m.name != "base"]


def _load_all() -> None:
    """Import every experiment module once (each registers its experiments at import)."""
    global _LOADED
    if _LOADED:
        return
    import importlib

    for name in experiment_modules():
        importlib.import_module(name)
    _LOADED = True


def get_experiment(name: str) -> Experiment:
    """Look up an experiment; an unknown name raises :class:`UserError` listing the valid ones."""
    _load_all()
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; valid experiments: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


def list_experiments() -> list[Experiment]:
    """All registered experiments, by paper section then name."""
    _load_all()
    return sorted(EXPERIMENTS.values(), key=lambda e: (e.section, e.name))
