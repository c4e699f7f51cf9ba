"""Beyond the paper: allocating a fixed teacher-sampling budget by uncertainty (``adaptive-budget-linear``).

The claim compares, at equal total budget, the practitioner's two-stage allocation (a pilot of
k0 draws per input, shrunk variances, the rest of the budget allocated by them) with what one
would do without looking at the teacher's uncertainty, for the rule the allocation is optimal
for (OLS on averaged labels):

* heteroscedastic teacher (largest strength run): two-stage / sigma-blind (``design-only``)
  inter-student variance: the allocation that uses the design's influence weights but not the
  teacher's uncertainty already beats uniform, so only a gain over it is the pilot's doing (with
  the pilot ignored, or its variances attached to the wrong inputs, the ratio to uniform still
  fell below 1); every strength's ratio is shown beside, with the ratio to uniform;
* homoscedastic teacher (strength 0): two-stage / sigma-blind allocation with the same
  influence weights (``design-only``; it is ``uniform`` when the weights are flat), i.e. the
  price of estimating a sigma that does not vary. "Nothing measurable" is read as
  non-inferiority with a 5% margin: ``holds`` when the 95% interval of the ratio lies below
  1.05, ``contradicted`` when it lies above, ``inconclusive`` otherwise.

Verdict: ``contradicted`` if either part is, ``holds`` if both hold (heteroscedastic: the
interval lies below 1), else ``inconclusive`` with the minimum detectable effect.

Ratios are pooled over the budgets where the two-stage scheme has draws to allocate (geometric
mean; the paired per-student delta-method SEs of the log ratios are independent across budgets).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .claims import ClaimSpec, NotComputable, register_claim

EXPERIMENT = "adaptive-budget-linear"
#: "costs nothing measurable" is read as non-inferiority: it holds when the 95% upper bound of the
#: homoscedastic ratio is below 1 + this margin, and is contradicted when the lower bound is above it.
NO_COST_MARGIN = 0.05
Z95 = 1.959963984540054
Z80 = 0.8416212335729143


def _pooled_log_ratio(d: Any, col: str) -> tuple[float, float, int]:
    """Geometric-mean ratio over the rows of ``d`` (log scale) and its SE."""
    r = d[col].to_numpy(float)
    se = d[f"{col}_se_log"].to_numpy(float)
    ok = np.isfinite(r) & np.isfinite(se) & (r > 0) & (se > 0)
    if not ok.any():
        same = np.isfinite(r) & (r > 0) & (se == 0)
        if same.any():  # the schemes gave identical students (e.g. an allocation equal to the reference): exact
            return float(np.log(r[same]).mean()), 0.0, int(same.sum())
        raise NotComputable(f"no rows with a finite {col} and a positive standard error")
    lr, se = np.log(r[ok]), se[ok]
    return float(lr.mean()), float(np.sqrt(np.sum(se**2)) / ok.sum()), int(ok.sum())


def _interval(mean_log: float, se_log: float) -> tuple[float, float, float]:
    return math.exp(mean_log), math.exp(mean_log - Z95 * se_log), math.exp(mean_log + Z95 * se_log)


def _adaptive_budget(t: dict[str, Any]) -> tuple[str, str, str, str, str]:
    df = t[EXPERIMENT]
    d = df[(df["rule"] == "averaging")]
    ts = d[d["scheme"] == "two-stage"]
    if ts.empty:
        raise NotComputable("needs two-stage rows with the averaging rule")
    h_max = float(ts["strength"].max())
    if not h_max > 0:
        raise NotComputable("needs a heteroscedastic strength > 0")
    R = int(ts["n_students"].min())

    ts = ts[ts["ratio_to_uniform_se_log"] > 0]  # budgets where the two-stage scheme has draws to allocate
    het = ts[ts["strength"] == h_max]
    hom = ts[ts["strength"] == 0]
    if hom.empty or het.empty:
        raise NotComputable("needs strength 0 and a strength > 0, each with a budget above the pilot")
    if "ratio_to_design_only" not in het:
        raise NotComputable("no ratio_to_design_only column: the gain over the sigma-blind allocation cannot be read "
                            "(rerun the experiment with this uqkd version)")
    m_het, s_het, nb_het = _pooled_log_ratio(het, "ratio_to_design_only")
    r_het, lo_het, hi_het = _interval(m_het, s_het)
    m_hu, _, _ = _pooled_log_ratio(het, "ratio_to_uniform")
    by_h = []
    for h, g in ts[ts["strength"] > 0].groupby("strength"):
        mh, sh, _ = _pooled_log_ratio(g, "ratio_to_design_only")
        rh, loh, hih = _interval(mh, sh)
        by_h.append(f"h={h:g}: {rh:.3f} [{loh:.3f}, {hih:.3f}]")
    ref = "ratio_to_design_only" if "ratio_to_design_only" in hom else "ratio_to_uniform"
    m_hom, s_hom, nb_hom = _pooled_log_ratio(hom, ref)
    r_hom, lo_hom, hi_hom = _interval(m_hom, s_hom)

    # Measured vs predicted (closed form given the realised allocations; Neyman/integer optimum for the oracle).
    th_het = float(np.exp(np.mean(np.log(het["theory_gain"].to_numpy(float)))))
    ob = d[(d["scheme"] == "oracle") & (d["strength"] == h_max)]
    oracle_txt = ""
    if len(ob):
        m_or, s_or, _ = _pooled_log_ratio(ob, "ratio_to_uniform")
        r_or, lo_or, hi_or = _interval(m_or, s_or)
        pred_or = float(np.exp(np.mean(np.log(ob["predicted_gain_exact"].to_numpy(float)))))
        oracle_txt = f"; oracle {r_or:.3f} [{lo_or:.3f}, {hi_or:.3f}] vs predicted {pred_or:.3f}"
    value = (f"h={h_max:g}: two-stage/sigma-blind {r_het:.3f} (two-stage/uniform {math.exp(m_hu):.3f}, closed form "
             f"{th_het:.3f}){oracle_txt}; h=0: two-stage/{'sigma-blind' if ref == 'ratio_to_design_only' else 'uniform'} "
             f"{r_hom:.4f}")
    interval = (f"h={h_max:g}: [{lo_het:.3f}, {hi_het:.3f}] over {nb_het} budgets; "
                f"h=0: [{lo_hom:.4f}, {hi_hom:.4f}] over {nb_hom} budgets (no-cost margin {NO_COST_MARGIN:.0%}); "
                f"two-stage/sigma-blind by strength: {', '.join(by_h)}")

    het_v = "holds" if hi_het < 1 else ("contradicted" if lo_het > 1 else "inconclusive")
    hom_v = "holds" if hi_hom < 1 + NO_COST_MARGIN else (
        "contradicted" if lo_hom > 1 + NO_COST_MARGIN else "inconclusive")
    if "contradicted" in (het_v, hom_v):
        verdict = "contradicted"
    elif het_v == hom_v == "holds":
        verdict = "holds"
    else:
        verdict = "inconclusive"
    mde_parts = []
    if het_v == "inconclusive":
        mde_parts.append(f"heteroscedastic gain {1 - math.exp(-(Z95 + Z80) * s_het):.1%}")
    if hom_v == "inconclusive":
        mde_parts.append(f"homoscedastic cost {math.exp((Z95 + Z80) * s_hom) - 1:.1%}")
    mde = (f"MDE {', '.join(mde_parts)} in variance at {R} students/cell, 80% power" if mde_parts else "")
    stat = ("inter-student variance ratio at equal budget, averaging students, pooled over budgets: two-stage "
            "(pilot + shrunk variances) / sigma-blind allocation (the design's influence weights, no pilot) at the "
            "largest heteroscedastic strength (the gain that needs the teacher's uncertainty), and at strength 0 "
            "(the price of estimating a sigma that does not vary)")
    return stat, value, interval, verdict, mde


register_claim(ClaimSpec(
    "B-adaptive-budget-linear", "7",
    "At equal budget, uncertainty-allocated sampling lowers student variance under heteroscedastic teacher noise "
    "and costs nothing measurable (non-inferior within 5%) when the noise is homoscedastic (OLS students on "
    "averaged labels, two-stage allocation from a pilot)",
    (EXPERIMENT,), _adaptive_budget, beyond=True))
