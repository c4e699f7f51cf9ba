"""The paper's claims as computed verdicts over result tables.

Each :class:`ClaimSpec` reads the ``results.csv`` of one or more experiments and returns a
statistic, its value, a confidence interval, and a verdict computed from the numbers. Nothing
here is written by hand per run: change the data and the verdict follows. Claims marked
``beyond`` are uqkd's additions to the paper.

Verdicts
--------
``holds``
    The claim's interval lies entirely on the claimed side of its threshold. For an agreement
    with a closed form: equivalence (:func:`equivalence_test`), the ``1 - 2 alpha`` interval lies
    within a stated margin of the theory (two one-sided tests, Bonferroni over the cells), so a
    wider interval can never make it hold.
``contradicted``
    The interval excludes the claimed direction: it lies entirely on the other side. For an
    agreement with a closed form: the two-sided interval lies entirely outside the margin.
``inconclusive``
    The interval straddles the threshold (agreement: neither). The report prints beside it the
    minimum detectable effect at the run's sample size, e.g. ``MDE 0.012 at 3 students/method,
    80% power`` (agreement: the smallest margin the run could establish): with more replicates
    the verdict may move.

Kinds
-----
A claim is a ``finding`` or a ``code check`` (:data:`CODE_CHECK`): a property no realistic mutant
of the code can move (:mod:`uqkd.report.mutants`), shown in its own report section.
``not computable``
    A statistic the verdict needs is NaN/inf or cannot be formed (zero spread across students, a
    missing standard-error column, no rows for the methods compared, fewer than two cells). The
    value column reads ``could not be computed: <why>``. It is not a verdict on the claim.
``not run``
    An experiment the claim reads has no results. Only that is ``not run``.
``damaged``
    An experiment the claim reads has results on disk that are damaged (a cut, ragged, binary or
    edited ``results.csv``, a bad ``config.json``); the report skipped them, and the value column
    reads ``damaged: <experiment>: <why>``. No verdict is computed from them.
``error``
    The claim's code raised. The statistic column shows the exception type and message, and
    ``uqkd reproduce`` exits non-zero (:func:`uqkd.reproduce.exit_status`).

Claim interface
---------------
``test(tables)`` returns ``(statistic, value, interval, verdict)`` or
``(statistic, value, interval, verdict, mde)``. ``verdict`` is one of :data:`CLAIM_VERDICTS`
(``holds``, ``contradicted``, ``inconclusive``, ``not computable``) or a :class:`Verdict`
(which may carry the MDE text and the reason a statistic is not computable); ``mde`` is the
MDE text or ``None``. A claim may also raise :class:`NotComputable`. Any other exception is
an ``error``; a NaN/inf ``value``, or a ``nan``/``inf`` token in the value or interval text of a
holds/contradicted/inconclusive verdict, turns the verdict into ``not computable``.

Statistical helpers
-------------------
Intervals use t quantiles (:func:`t_interval`, Welch degrees of freedom from :func:`welch`) and,
for sample variances of few replicates, exact chi-square / F intervals
(:func:`chi2_variance_interval`, :func:`variance_ratio_interval`). :func:`verdict_from_interval`
turns an interval into a verdict, :func:`equivalence_test` checks a closed form within a margin (TOST), :func:`mde_two_sample` / :func:`mde_variance_ratio` give the minimum detectable
effect, :func:`all_of` / :func:`any_of` combine the verdicts of several components.
:func:`difference_test`, :func:`variance_ratio_test` and :func:`log_ratio_test` bundle an
estimate, its interval, verdict and MDE text into a :class:`Comparison`; helpers raise
:class:`NotComputable` on NaN/inf inputs, zero spread or too few replicates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..schema import summary_rows
from .stats import (  # noqa: F401  (re-exported: claims modules and tests import them from here)
    ALPHA,
    CLAIM_VERDICTS,
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    NOT_COMPUTABLE,
    POWER,
    STRICT_ALPHA,
    Comparison,
    NotComputable,
    Verdict,
    all_of,
    any_of,
    bonferroni_level,
    chi2_variance_interval,
    critical_value,
    difference_test,
    equivalence_test,
    first_mde,
    fmt_interval,
    log_ratio_t,
    log_ratio_test,
    log_variance_se,
    loglog_slope,
    mde_text,
    mde_two_sample,
    mde_variance_ratio,
    require_finite,
    satterthwaite_df,
    t_interval,
    variance_ratio_interval,
    variance_ratio_test,
    verdict_from_interval,
    weighted_slope,
    welch,
)

__all__ = [
    "ClaimSpec", "ClaimResult", "CLAIMS", "register_claim", "evaluate_claims", "all_claims", "claim_modules", "Mutant",  # noqa: F822 (module __getattr__)
    "HOLDS", "CONTRADICTED", "INCONCLUSIVE", "NOT_COMPUTABLE", "NOT_RUN", "DAMAGED", "ERROR", "CLAIM_VERDICTS", "VERDICTS",
    "FINDING", "CODE_CHECK", "KINDS",
    "Verdict", "NotComputable", "Comparison", "require_finite", "critical_value", "t_interval", "welch",
    "satterthwaite_df", "chi2_variance_interval", "variance_ratio_interval", "verdict_from_interval",
    "mde_two_sample", "mde_variance_ratio", "mde_text", "all_of", "any_of",
    "difference_test", "equivalence_test", "variance_ratio_test", "log_ratio_test", "fmt_interval", "loglog_slope",
    "weighted_slope", "log_variance_se", "first_mde", "bonferroni_level", "key_columns",
]

Tables = dict[str, Any]  # experiment name -> pandas DataFrame

NOT_RUN = "not run"
DAMAGED = "damaged"
ERROR = "error"
#: every verdict in a report
VERDICTS = (*CLAIM_VERDICTS, NOT_RUN, DAMAGED, ERROR)
#: what a claim is: a finding about distillation, or a check of the code (see :class:`ClaimSpec`)
FINDING = "finding"
CODE_CHECK = "code check"
KINDS = (FINDING, CODE_CHECK)

@dataclass(frozen=True)
class ClaimResult:
    claim_id: str
    section: str
    claim: str
    experiments: tuple[str, ...]
    statistic: str
    value: str
    interval: str
    verdict: str  # one of VERDICTS
    beyond: bool
    mde: str = ""  # minimum detectable effect text, beside "inconclusive"
    kind: str = "finding"  # "finding", or "code check": a property no realistic mutant of the code can move

    @property
    def code_check(self) -> bool:
        return self.kind == CODE_CHECK

    @property
    def verdict_text(self) -> str:
        """The verdict as the report prints it (with the MDE beside ``inconclusive``)."""
        return f"{self.verdict} ({self.mde})" if self.mde and self.verdict == INCONCLUSIVE else self.verdict


@dataclass(frozen=True)
class ClaimSpec:
    """A claim and the function that tests it.

    ``test(tables)`` returns ``(statistic, value, interval, verdict)`` or
    ``(statistic, value, interval, verdict, mde)``; see the module docstring.
    """

    claim_id: str
    section: str
    claim: str
    experiments: tuple[str, ...]
    test: Callable[[Tables], tuple[Any, ...]]
    beyond: bool = False
    #: ``"finding"`` or ``"code check"``: a claim whose verdict no realistic mutant of the code can
    #: move is a check of the code (shown in its own report section), not a finding about distillation
    kind: str = "finding"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}; got {self.kind!r}")


@dataclass(frozen=True)
class Mutant:
    """A realistic bug, where it lives and the claims it must move (:mod:`uqkd.report.mutants` runs them).

    Attributes
    ----------
    name : str
        Short id.
    description : str
        The bug, as a reviewer would describe it.
    experiments : tuple of str
        Experiments whose numbers it changes (run with and without it).
    claims : tuple of str
        Claims whose verdict must move away from the shipped one.
    apply : callable(setattr)
        Installs the bug: calls ``setattr(obj, name, value)`` (pytest's ``monkeypatch.setattr``).
    """

    name: str
    description: str
    experiments: tuple[str, ...]
    claims: tuple[str, ...]
    apply: Callable[[Callable[[Any, str, Any], None]], None] = field(repr=False)


_REGISTRY: list[ClaimSpec] = []
_LOADED = False
#: modules of this package whose name starts with this hold claims; they are imported on first use of the registry
CLAIM_MODULE_PREFIX = "claims_"


def register_claim(spec: ClaimSpec) -> ClaimSpec:
    """Add a claim to the registry (ids are unique). Claims modules call it at import."""
    if any(c.claim_id == spec.claim_id for c in _REGISTRY):
        raise ValueError(f"claim {spec.claim_id!r} is already registered")
    _REGISTRY.append(spec)
    return spec


def claim_modules() -> list[str]:
    """The modules that hold claims: every ``uqkd.report.claims_*`` module (package discovery, no hand-kept list)."""
    import pkgutil

    pkg = __name__.rpartition(".")[0]
    path = __import__(pkg, fromlist=["__path__"]).__path__
    return [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(path) if m.name.startswith(CLAIM_MODULE_PREFIX)]


def all_claims() -> list[ClaimSpec]:
    """Every registered claim, importing the claims modules on first use (so that importing this module imports
    no claims module, and no claims module forms a cycle with it)."""
    global _LOADED
    if not _LOADED:
        import importlib

        for name in claim_modules():
            importlib.import_module(name)
        _LOADED = True
    return _REGISTRY


def __getattr__(name: str) -> Any:
    if name == "CLAIMS":  # the registry, loaded on first access
        return all_claims()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _claims() -> list[ClaimSpec]:
    # ``CLAIMS`` set on the module (a test's monkeypatch) replaces the registry
    return globals()["CLAIMS"] if "CLAIMS" in globals() else all_claims()


def _fmt(x: Any) -> str:
    if isinstance(x, str):
        return x
    if not np.isfinite(x):
        return str(x)
    return f"{x:.4g}"


_NONFINITE = re.compile(r"(?<![A-Za-z_])[-+]?(nan|inf)(?![A-Za-z_])", re.IGNORECASE)


def _is_nonfinite_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool) and not np.isfinite(x)


def _result(c: ClaimSpec, stat: str, value: str, interval: str, verdict: str, mde: str = "") -> ClaimResult:
    return ClaimResult(c.claim_id, c.section, c.claim, c.experiments, stat, value, interval, verdict, c.beyond, mde,
                       c.kind)


def _evaluate_one(c: ClaimSpec, tables: Tables) -> ClaimResult:
    try:
        out = c.test(tables)
    except NotComputable as exc:
        return _result(c, "", f"could not be computed: {exc}", "", NOT_COMPUTABLE)
    except Exception as exc:  # a claim that raises is an error, never "not run"
        nan = _nan_cause(exc, c, tables)
        if nan:
            return _result(c, "", f"could not be computed: {nan} ({type(exc).__name__}: {exc})", "", NOT_COMPUTABLE)
        return _result(c, f"claim raised {type(exc).__name__}: {exc}", "", "", ERROR)
    if not isinstance(out, tuple) or len(out) not in (4, 5):
        return _result(c, f"claim returned {type(out).__name__} of length {len(out) if isinstance(out, tuple) else '?'}"
                          "; expected (statistic, value, interval, verdict[, mde])", "", "", ERROR)
    stat, value, interval, v = out[:4]
    mde = out[4] if len(out) == 5 else None
    if isinstance(v, Verdict):
        verdict, why, mde = v.verdict, v.why, (mde if mde is not None else v.mde)
    elif isinstance(v, str) and v in CLAIM_VERDICTS:
        verdict, why = v, ""
    else:
        return _result(c, f"claim returned verdict {v!r}; expected one of {', '.join(CLAIM_VERDICTS)} or a Verdict",
                       _fmt(value) if isinstance(value, (str, float, int)) else str(value), str(interval), ERROR)
    stat, interval = str(stat), str(interval)
    if verdict != NOT_COMPUTABLE:
        if _is_nonfinite_number(value):
            verdict, why = NOT_COMPUTABLE, f"the statistic is {value}"
        elif _NONFINITE.search(str(value)) or _NONFINITE.search(interval):
            verdict, why = NOT_COMPUTABLE, "the statistic or its interval is NaN/inf"
    if verdict == NOT_COMPUTABLE:
        shown = _fmt(value) if isinstance(value, (str, float, int)) else str(value)
        text = f"could not be computed: {why or 'no reason given'}" + (f" ({shown})" if shown else "")
        return _result(c, stat, text, interval, NOT_COMPUTABLE)
    return _result(c, stat, _fmt(value), interval, verdict, str(mde or "") if verdict == INCONCLUSIVE else "")


def _nan_columns(tables: Tables, experiments: Iterable[str], only: Iterable[str] | None = None) -> list[str]:
    """``"<experiment> column <col> (row r[, ...])"`` for each column (of ``only``, if given) holding NaN."""
    out = []
    for e in experiments:
        df = tables.get(e)
        if df is None or not hasattr(df, "columns"):
            continue
        cols = [c for c in df.columns if only is None or c in set(only)]
        for col in cols:
            try:
                na = df[col].isna().to_numpy()
            except Exception:  # noqa: BLE001 - not a column we can test
                continue
            if na.any():
                rows = [str(i) for i in np.flatnonzero(na)[:3]]
                out.append(f"{e} column {col} (row {', '.join(rows)}{', ...' if na.sum() > 3 else ''})")
    return out


def _nan_cause(exc: Exception, c: ClaimSpec, tables: Tables) -> str:
    """Why a claim's exception is a NaN in its tables (``""`` if it is not): NaN converted to an int, or
    used as a key. (A missing column stays an ``error``: it is the claim's code or the table's version.)"""
    nan_key = isinstance(exc, KeyError) and any(isinstance(a, float) and a != a for a in exc.args)
    nan_value = isinstance(exc, (ValueError, TypeError, IndexError)) and "nan" in str(exc).lower()
    if not (nan_key or nan_value):
        return ""
    cols = _nan_columns(tables, c.experiments)
    return f"NaN in {'; '.join(cols[:3])}" if cols else ""


_KEY_COLUMNS: dict[str, frozenset[str]] = {}


def key_columns(experiment: str) -> frozenset[str]:
    """The columns that identify a row of ``experiment``'s table: its cell parameters, ``method``, ``n_students``.

    A NaN there is never a result (the runner writes them from the configuration): claims reading
    such a table are ``not computable``.
    """
    if experiment not in _KEY_COLUMNS:
        keys = {"method", "n_students"}
        try:
            from ..experiments import EXPERIMENTS, list_experiments

            list_experiments()
            exp = EXPERIMENTS.get(experiment)
            if exp is not None:
                keys |= set(exp.cells(exp.config_cls())[0])
        except Exception:  # noqa: BLE001 - an experiment whose defaults give no cells: the fixed keys only
            pass
        _KEY_COLUMNS[experiment] = frozenset(keys)
    return _KEY_COLUMNS[experiment]


def _summary_tables(tables: Tables, experiments: Iterable[str]) -> Tables:
    """The summary rows of each table: rows with a ``record`` other than ``summary`` (per-question,
    trajectory, allocation rows) carry only the columns of their kind, so their empty key columns are
    not damage."""
    out = {}
    for e in experiments:
        df = tables.get(e)
        out[e] = summary_rows(df) if df is not None and hasattr(df, "columns") else df
    return out


def evaluate_claims(tables: Tables, damaged: dict[str, str] | None = None) -> list[ClaimResult]:
    """Evaluate every registered claim on the available result tables.

    A claim reading an experiment listed in ``damaged`` (``{experiment: why}``, from
    :func:`uqkd.report.report.load_tables_checked`) is ``damaged``; one whose experiments are missing
    (or empty) is ``not run``; a claim that raises is ``error`` with the exception type and message
    as its statistic.
    """
    damaged = damaged or {}
    out = []
    for c in _claims():
        bad = [e for e in c.experiments if e in damaged]
        if bad:
            out.append(_result(c, "", "; ".join(f"damaged: {e}: {damaged[e]}" for e in bad), "", DAMAGED))
            continue
        if not all(e in tables and len(tables[e]) for e in c.experiments):
            out.append(_result(c, "", "", "", NOT_RUN))
            continue
        nan_keys = [k for e in c.experiments for k in _nan_columns(_summary_tables(tables, [e]), [e], key_columns(e))]
        if nan_keys:
            out.append(_result(c, "", f"could not be computed: NaN in a row-identifying column: "
                                      f"{'; '.join(nan_keys[:3])}", "", NOT_COMPUTABLE))
            continue
        out.append(_evaluate_one(c, tables))
    return out
