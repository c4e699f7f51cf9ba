"""Beyond the paper, LLM: uncertainty-allocated teacher sampling at an equal budget (``llm-budget``).

``B-llm-adaptive-budget``: at an equal total budget of teacher answers, the two-stage
(pilot + shrunk SBERT dispersion) allocation gives LLM students less inter-student variance than
the uniform k_i = B/n, and does not raise their MSE. Two parts, each a 95% interval, on each
split (verdict from the transfer split, the held-out one shown beside; :func:`by_split`):

* inter-student variance ratio adaptive / uniform, from each student's share of the per-question
  inter-student variance (``inter_dev``) on the log scale, by the crossed mixed model of
  :mod:`uqkd.report.crossed` (students of the two schemes not paired: each draws its own teacher
  answers); holds below 1, contradicted above 1;
* MSE difference adaptive - uniform under the same model (students x questions), read as
  non-inferiority with a margin of :data:`MSE_MARGIN` of the uniform students' MSE: holds when the
  upper bound is below the margin, contradicted when the lower bound is above it.

Below 5 students per scheme both parts are inconclusive whatever their intervals. Tables without
per-question rows (older results) fall back to the delta method from ``inter_var_se`` and Welch t
across students.

Verdict: ``contradicted`` if a part is, ``holds`` if both hold, else ``inconclusive`` with the
minimum detectable effect. ``not computable`` when a statistic cannot be formed, when the schemes
did not spend the same budget, and when the adaptive allocation came out exactly uniform (every
k_i equal: a small pilot and strong shrinkage pool the pilot dispersions, or the budget per
question equals the pilot): the run then compares two uniform schemes and says nothing about
allocation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..schema import RECORD, SUMMARY, summary_rows
from .claims import (
    NOT_COMPUTABLE,
    ClaimSpec,
    Comparison,
    NotComputable,
    all_of,
    difference_test,
    first_mde,
    register_claim,
    welch,
)
from .claims_llm import (
    SplitResult,
    boot_difference,
    boot_inter_ratio,
    by_split,
    has_question_rows,
    inter_var_ratio_test,
)
from .crossed import METHOD_TEXT, MIN_STUDENTS

__all__ = ["EXPERIMENT", "MSE_MARGIN", "UNIFORM_ALLOCATION"]

EXPERIMENT = "llm-budget"
#: "does not raise MSE" is non-inferiority: the 95% upper bound of (adaptive - uniform) MSE must lie below
#: this fraction of the uniform students' MSE
MSE_MARGIN = 0.05
#: what the claim says when the adaptive allocation gave every question the same k_i
UNIFORM_ALLOCATION = "allocation was uniform: shrinkage pooled the pilot dispersions"


def _students(df: Any) -> Any:
    d = summary_rows(df)
    return d[d["method"].isin(["uniform", "adaptive"])]


def _num(row: Any, col: str) -> float:
    v = row.get(col, float("nan")) if hasattr(row, "get") else float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _allocation_text(a: Any) -> str:
    kmin, kmax, kmean, ksd = (_num(a, c) for c in ("k_min", "k_max", "k_mean", "k_sd"))
    nu, n = _num(a, "n_uniform_allocations"), _num(a, "n_students")
    b, bpq, pilot = _num(a, "budget"), _num(a, "budget_per_question"), _num(a, "pilot")
    cv = _num(a, "pilot_dispersion_cv")
    parts = [f"B={b:.0f} ({bpq:g}/question, pilot {pilot:g})" if np.isfinite(b) else "",
             f"adaptive k_i {kmin:.0f}..{kmax:.0f} (mean {kmean:.3g}, within-student sd {ksd:.2g})"
             if np.isfinite(kmin) and np.isfinite(kmax) else "",
             f"{nu:.0f} of {n:.0f} allocations uniform" if np.isfinite(nu) and np.isfinite(n) else "",
             f"pilot dispersion CV {cv:.2g}" if np.isfinite(cv) else ""]
    return ", ".join(p for p in parts if p)


def _check_run(df: Any) -> None:
    """Run-level conditions (the same on every split): both schemes, equal budgets, a non-uniform allocation."""
    d = _students(df)
    if not {"uniform", "adaptive"} <= set(d["method"]):
        raise NotComputable("needs uniform and adaptive rows")
    u, a = d[d["method"] == "uniform"].iloc[0], d[d["method"] == "adaptive"].iloc[0]
    bu, ba = _num(u, "budget_used"), _num(a, "budget_used")
    if not (np.isfinite(bu) and np.isfinite(ba)):
        raise NotComputable("no budget_used column: cannot check that the schemes spent the same budget")
    if bu != ba:
        raise NotComputable(f"unequal budgets: uniform students spent {bu:.0f} teacher answers, adaptive {ba:.0f}")
    kmin, kmax = _num(a, "k_min"), _num(a, "k_max")
    if not (np.isfinite(kmin) and np.isfinite(kmax)):
        raise NotComputable("no k_min/k_max columns: cannot tell whether the allocation was adaptive")
    if kmin == kmax:
        bpq, pilot = _num(a, "budget_per_question"), _num(a, "pilot")
        if np.isfinite(bpq) and bpq == pilot:
            why = "allocation was uniform: the budget per question equals the pilot (nothing left to allocate)"
        elif _num(a, "pilot_dispersion_mean") == 0:
            why = "allocation was uniform: no pilot showed any dispersion (nothing to allocate by)"
        else:
            why = UNIFORM_ALLOCATION
        raise NotComputable(f"{why} (every adaptive student gave each question k_i = {kmin:.0f}; "
                            f"{_allocation_text(a)}): the run compares two uniform schemes")


def _guard(fn: Any, label: str) -> Comparison:
    try:
        return fn()
    except NotComputable as exc:
        return Comparison.not_computable(label, str(exc))


def _mse_test(u: Any, a: Any, level: float = 0.95) -> Comparison:
    n_u, n_a = int(u["n_students"]), int(a["n_students"])
    diff, se, dof = welch(float(a["mse_mean"]), float(a["mse_std"]), n_a, float(u["mse_mean"]), float(u["mse_std"]),
                          n_u)
    margin = MSE_MARGIN * float(u["mse_mean"])
    return difference_test("MSE adaptive-uniform", diff, se, dof, "<", level=level, threshold=margin,
                           n=min(n_u, n_a))


def _split(d: Any, split: str = "") -> SplitResult:
    rows = {m: g.iloc[0] for m, g in _students(d).groupby("method")}
    if "uniform" not in rows or "adaptive" not in rows:
        raise NotComputable("needs uniform and adaptive rows")
    u, a = rows["uniform"], rows["adaptive"]
    if has_question_rows(d):
        # the schemes draw their own teacher answers per student (no shared draw index): not paired
        margin = MSE_MARGIN * float(u["mse_mean"])
        iv = _guard(lambda: boot_inter_ratio(d, "uniform", "adaptive", "inter-var adaptive/uniform", 0.95,
                                             paired=False), "inter-var adaptive/uniform")
        mse = _guard(lambda: boot_difference(d, "adaptive", "uniform", "mse", "MSE adaptive-uniform", "<", 0.95,
                                             paired=False, threshold=margin), "MSE adaptive-uniform")
    else:
        iv = _guard(lambda: inter_var_ratio_test(u, a, "inter-var adaptive/uniform", 0.95),
                    "inter-var adaptive/uniform")
        mse = _guard(lambda: _mse_test(u, a), "MSE adaptive-uniform")
    verdict = all_of([iv.verdict, mse.verdict])
    if verdict == NOT_COMPUTABLE:
        raise NotComputable(next(x.why for x in (iv, mse) if x.verdict == NOT_COMPUTABLE))
    margin = MSE_MARGIN * float(u["mse_mean"])
    detail = (f"{_allocation_text(a)}; inter-var {float(a['inter_var']):.3g} vs {float(u['inter_var']):.3g}, MSE "
              f"{float(a['mse_mean']):.4g} vs {float(u['mse_mean']):.4g} (non-inferiority margin {margin:.3g}), "
              f"{int(a['n_students'])}/{int(u['n_students'])} students")
    return SplitResult(f"{iv.text()}; {mse.text()}", detail, verdict, first_mde([iv, mse]))


def _b_llm_adaptive_budget(t: dict[str, Any]) -> tuple[Any, ...]:
    df = t[EXPERIMENT]
    _check_run(df)
    d = df[df["method"].isin(["uniform", "adaptive"])]
    if RECORD in d.columns:  # the tables the crossed model reads (not the allocation)
        d = d[d[RECORD].isin([SUMMARY, "question", "question-inter"])]
    how = (f"crossed mixed model over students x questions ({METHOD_TEXT.split(', students paired')[0]}; the "
           "schemes' students have their own teacher draws: not paired); the variance ratio from each student's "
           "share of the per-question inter-student variance (inter_dev) on the log scale"
           if has_question_rows(d) else
           "delta method on the log scale, SE across questions, and Welch t across students (no per-question rows)")
    return by_split(d, _split,
                    "at an equal budget of teacher answers: inter-student variance ratio adaptive (two-stage: pilot, "
                    "shrunk SBERT dispersion) / uniform and MSE difference adaptive - uniform (non-inferiority "
                    f"margin {MSE_MARGIN:.0%} of the uniform MSE), 95% intervals by the {how}; inconclusive below "
                    f"{MIN_STUDENTS} students per scheme; holds if the ratio is below 1 and the MSE is not raised")


register_claim(ClaimSpec(
    "B-llm-adaptive-budget", "7",
    "At an equal teacher-sampling budget, uncertainty-allocated sampling (two-stage, by pilot SBERT dispersion) "
    "lowers LLM students' inter-student variance and does not raise their MSE",
    (EXPERIMENT,), _b_llm_adaptive_budget, beyond=True))
