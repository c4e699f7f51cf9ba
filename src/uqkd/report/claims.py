"""The paper's claims as computed verdicts over result tables.

Each :class:`ClaimSpec` reads the ``results.csv`` of one or more experiments and returns a
statistic, its value, a confidence interval or spread, and a verdict computed from the
numbers (``holds`` / ``does not hold``); a claim whose experiments have no results is
``not run``. Nothing here is written by hand per run: change the data and the verdict
follows. Claims marked ``beyond`` are uqkd's additions to the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ClaimSpec", "ClaimResult", "CLAIMS", "register_claim", "evaluate_claims"]

Tables = dict[str, Any]  # experiment name -> pandas DataFrame


@dataclass(frozen=True)
class ClaimResult:
    claim_id: str
    section: str
    claim: str
    experiments: tuple[str, ...]
    statistic: str
    value: str
    interval: str
    verdict: str  # "holds" | "does not hold" | "not run"
    beyond: bool


@dataclass(frozen=True)
class ClaimSpec:
    """A claim and the function that tests it.

    ``test(tables)`` returns ``(statistic, value, interval, holds)`` with ``holds`` a bool.
    """

    claim_id: str
    section: str
    claim: str
    experiments: tuple[str, ...]
    test: Callable[[Tables], tuple[str, float | str, str, bool]]
    beyond: bool = False


CLAIMS: list[ClaimSpec] = []


def register_claim(spec: ClaimSpec) -> ClaimSpec:
    if any(c.claim_id == spec.claim_id for c in CLAIMS):
        raise ValueError(f"claim {spec.claim_id!r} is already registered")
    CLAIMS.append(spec)
    return spec


def _fmt(x: float | str) -> str:
    if isinstance(x, str):
        return x
    if not np.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def evaluate_claims(tables: Tables) -> list[ClaimResult]:
    """Evaluate every registered claim on the available result tables."""
    out = []
    for c in CLAIMS:
        if not all(e in tables and len(tables[e]) for e in c.experiments):
            out.append(ClaimResult(c.claim_id, c.section, c.claim, c.experiments, "", "", "", "not run", c.beyond))
            continue
        try:
            stat, value, interval, holds = c.test(tables)
            verdict = "holds" if holds else "does not hold"
        except (KeyError, ValueError, IndexError) as exc:
            stat, value, interval, verdict = f"could not be computed: {exc}", "", "", "not run"
        out.append(ClaimResult(c.claim_id, c.section, c.claim, c.experiments, stat, _fmt(value), interval, verdict,
                               c.beyond))
    return out


def loglog_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log y on log x and its standard error."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    A = np.c_[np.ones_like(lx), lx]
    coef, res, *_ = np.linalg.lstsq(A, ly, rcond=None)
    dof = max(len(lx) - 2, 1)
    s2 = float(np.sum((ly - A @ coef) ** 2)) / dof
    se = float(np.sqrt(s2 * np.linalg.inv(A.T @ A)[1, 1]))
    return float(coef[1]), se


def ci(mean: float, sem: float, z: float = 1.96) -> str:
    return f"[{mean - z * sem:.4g}, {mean + z * sem:.4g}]"


# Built-in claims live next to the experiments they read.
from . import claims_linear, claims_llm, claims_mlp  # noqa: E402,F401
