"""Claims tested by the MLP experiments (sections 4-7).

Conventions as in :mod:`uqkd.report.claims_linear`: students are the replicates, variances
across students get exact chi-square / F intervals, differences of means Welch t intervals,
and several cells compared at once are Bonferroni-corrected. Students of different cells
share their initialisation seeds (common random numbers): treating cells as independent is
conservative. In the classification experiment the table has no per-student spread, so the
replicates are the (dataset, student model) cells and the intervals are t intervals across cells.
"""

from __future__ import annotations

import numpy as np

from ..schema import summary_rows
from .claims import (
    ALPHA,
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    STRICT_ALPHA,
    ClaimSpec,
    NotComputable,
    Verdict,
    all_of,
    bonferroni_level,
    difference_test,
    first_mde,
    fmt_interval,
    register_claim,
    variance_ratio_test,
)
from .claims_linear import check_draws, f5_variance_aware, min_students, mse_gain_test, s5_teacher_vs_truth
from .stats import log_ratio_t


def _f1_mlp(t):
    from scipy.stats import spearmanr

    df = t["teacher-noise-mlp"].sort_values("sigma")
    if df["sigma"].nunique() < 2:
        raise NotComputable("needs at least two noise levels")
    lo_row, hi_row = df.iloc[0], df.iloc[-1]
    gain = mse_gain_test(hi_row, lo_row, "MSE increase", 0.95)  # > 0: more error at the highest noise
    R = int(min(lo_row["n_students"], hi_row["n_students"]))
    ratio = variance_ratio_test("inter-student variance", float(hi_row["inter_student_var"]),
                                float(lo_row["inter_student_var"]), int(hi_row["n_students"]) - 1,
                                int(lo_row["n_students"]) - 1, ">", n=R)
    v = all_of([gain.verdict, ratio.verdict])
    rho = spearmanr(df["sigma"], df["mse_mean"]).statistic if len(df) >= 3 else float("nan")
    rv = spearmanr(df["sigma"], df["inter_student_var"]).statistic if len(df) >= 3 else float("nan")
    return (f"highest (sigma={hi_row['sigma']:g}) vs lowest (sigma={lo_row['sigma']:g}) teacher noise: test-MSE "
            "increase (Welch t, 95%) and inter-student variance ratio (exact F, 95%)",
            f"{gain.text()}; {ratio.text()}",
            (f"Spearman over {len(df)} noise levels: MSE {rho:.2f}, variance {rv:.2f}; " if np.isfinite(rho) else "")
            + "holds if the MSE increase > 0 and the variance ratio > 1",
            Verdict(v, mde=first_mde([gain, ratio])))


register_claim(ClaimSpec(
    "F1-mlp", "4", "Teacher noise propagates into MLP students: error and inter-student variance grow with noise",
    ("teacher-noise-mlp",), _f1_mlp))


def _cells_t(x: np.ndarray, label: str, direction: str, level: float = 0.95, unit: str = "cells"):
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        raise NotComputable(f"{label}: one cell only, no spread across cells for an interval")
    return difference_test(label, float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))), len(x) - 1, direction,
                           level=level, n=len(x), unit=unit)


def per_teacher(values, teachers) -> np.ndarray:
    """One replicate per teacher: the cells (student models) of a teacher share it, so their mean is one value.
    ``teachers`` labels each value's teacher (the dataset, or the dataset and teacher replicate)."""
    import pandas as pd

    keys = [str(t) for t in teachers]
    v = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(v)):
        raise NotComputable("a cell's entropy gap is NaN or infinite")
    return pd.Series(v).groupby(np.asarray(keys)).mean().to_numpy()


def _teacher_keys(d) -> list:
    """Each row's teacher: (dataset, teacher replicate) where the table has replicates, else the dataset."""
    if "teacher" in d:
        return list(zip(d["dataset"], d["teacher"]))
    return list(d["dataset"])


def _f4_entropy(t):
    df = t["student-entropy"]
    d = df[df["target_mode"] == "argmax"]
    gap = d["entropy_gap"].to_numpy(dtype=float)
    keys = _teacher_keys(d)
    x = _cells_t(per_teacher(gap, keys), "mean gap", "<", unit="teachers")
    var = d["inter_student_var"].to_numpy(dtype=float)
    return ("student minus teacher predictive entropy (nats) under argmax distillation; t interval across "
            f"{len(set(keys))} teachers ({d['dataset'].nunique()} datasets; the student models of a teacher share it, "
            f"so their {len(gap)} cells are averaged per teacher)",
            f"{x.estimate:+.4f} (mean); {np.mean(gap < 0):.0%} of cells below the teacher",
            f"95% {fmt_interval(x.lo, x.hi)}; cells {gap.min():+.4f}..{gap.max():+.4f}; inter-student variance "
            f"{var.min():.2g}..{var.max():.2g}; holds if below 0", Verdict(x.verdict, mde=x.mde))


register_claim(ClaimSpec(
    "F4", "6", "Single-response (argmax) KD suppresses intra-student uncertainty: students are more confident "
               "(lower predictive entropy) than the teacher", ("student-entropy",), _f4_entropy))


def _b_soft_sampled(t):
    df = t["student-entropy"]
    idx = ["dataset", "teacher", "student"] if "teacher" in df else ["dataset", "student"]
    a = df[df["target_mode"] == "argmax"].set_index(idx)["entropy_gap"].abs()
    modes = [m for m in ("soft", "sampled") if (df["target_mode"] == m).any()]
    if not modes:
        raise NotComputable("needs soft or sampled rows")
    lvl = bonferroni_level(len(modes))
    tests = []
    for mode in modes:
        m = df[df["target_mode"] == mode].set_index(idx)["entropy_gap"].abs()
        diff = (m - a).dropna()
        keys = [i[:-1] for i in diff.index]  # (dataset[, teacher]) of each (.., student) cell
        tests.append(_cells_t(per_teacher(diff.to_numpy(), keys), mode, "<", lvl, unit="teachers"))
    return ("|student - teacher entropy| minus that of argmax distillation, per teacher x student cell, averaged per "
            f"teacher; t intervals across teachers, {lvl:.2%} (Bonferroni over {len(modes)} modes)",
            "; ".join(x.text() for x in tests), "holds if narrower (below 0) for each mode",
            Verdict(all_of(x.verdict for x in tests), mde=first_mde(tests)))


register_claim(ClaimSpec(
    "B-soft-sampled-labels", "6", "Soft-label and sampled-label distillation narrow the entropy gap that argmax "
                                  "distillation opens", ("student-entropy",), _b_soft_sampled, beyond=True))


#: "training removes most initialisation uncertainty": the prediction variance falls below half of what it was
MOST = 0.5


def _before_after(t, before: str, after: str, what: str, se_col: str, threshold: float = 1.0):
    df = t["init-noise-mlp"]
    d = summary_rows(df)
    d = d[d["sigma_init"] > 0]
    if d.empty:
        raise NotComputable("no sigma_init > 0")
    lvl = bonferroni_level(len(d))
    paired = se_col in d and bool(np.all(np.isfinite(d[se_col].to_numpy(dtype=float))))
    if paired:
        # the same students before and after: each student's share of the mean variance, delta method on the log
        # ratio, t on R - 1 df (metrics.paired_variance_ratio); an F on R - 1 df ignores the pairing and the
        # thousands of coordinates averaged, and is far too wide
        tests = [log_ratio_t(f"{r['sigma_init']:g}", float(r[after]) / float(r[before]), float(r[se_col]),
                             int(r["n_students"]) - 1, "<", lvl, int(r["n_students"]), threshold)
                 for _, r in d.iterrows()]
        how = ("t intervals on the log ratio from each student's share of the variance, paired by student (delta "
               "method, R-1 df)")
    else:
        # the F interval of (after / threshold) / before against 1: the same verdict threshold as the paired path
        tests = [variance_ratio_test(f"{r['sigma_init']:g}", float(r[after]) / threshold, float(r[before]),
                                     int(r["n_students"]) - 1, int(r["n_students"]) - 1, "<", level=lvl,
                                     n=int(r["n_students"])) for _, r in d.iterrows()]
        tests = [type(x)(x.label, x.estimate * threshold, x.lo * threshold, x.hi * threshold, x.verdict,
                         x.mde, ratio=True) for x in tests]
        how = "exact F intervals (conservative for paired estimates; older tables without the paired SE)"
    worst = max(tests, key=lambda x: x.hi)
    return (f"{what} across perturbed students, after / before training, per sigma_init > 0; {how}, {lvl:.2%} "
            f"(Bonferroni over {len(tests)})",
            f"x{np.median([x.estimate for x in tests]):.3g} (median)",
            f"least favourable sigma_init={worst.label}: x{worst.estimate:.3g} {fmt_interval(worst.lo, worst.hi)}; "
            f"holds if every ratio < {threshold:g}" + (" (most of it removed)" if threshold < 1 else ""),
            Verdict(all_of(x.verdict for x in tests), mde=first_mde(tests)))


register_claim(ClaimSpec(
    "S5-init-noise-params", "5", "Training shrinks the parameter variance across students initialised with "
                                 "perturbed weights (model-driven initialisation uncertainty)",
    ("init-noise-mlp",), lambda t: _before_after(t, "param_var_before", "param_var_after", "parameter variance",
                                                   "param_var_ratio_se_log")))

register_claim(ClaimSpec(
    "B-init-noise-function-space", "5", "In function space, training removes most initialisation uncertainty "
                                        "(prediction variance across students shrinks)", ("init-noise-mlp",),
    lambda t: _before_after(t, "pred_var_before", "pred_var_after", "test-prediction variance", "pred_var_ratio_se_log",
                            MOST),
    beyond=True))

register_claim(ClaimSpec(
    "S5-bootstrap-teacher-mlp", "5", "MLP students trained on teacher outputs vary less across bootstrap samples than "
                                     "students trained on ground truth", ("bootstrap-mlp",),
    lambda t: s5_teacher_vs_truth(t, "bootstrap-mlp")))

register_claim(ClaimSpec(
    "F5-mlp", "7", "Variance-aware distillation lowers evaluation error and inter-student variance (MLP)",
    ("variance-aware-mlp",), lambda t: f5_variance_aware(t, "variance-aware-mlp")))


def floor_fit_claim(d, what: str):
    """Per alpha: b > 0 (one-sided by its Bonferroni interval) and the floor + b/k form (chi-square goodness of
    fit: contradicted if p < 0.001/m, inconclusive if p < 0.05/m)."""
    from ..decomposition import fit_floor_rows

    fits = []
    for a, g in d.groupby("alpha"):
        if g["k"].nunique() >= 3:
            try:
                fits.append((a, fit_floor_rows(g)))
            except ValueError as exc:
                raise NotComputable(f"alpha={a:g}: {exc}") from None
    if not fits:
        raise NotComputable("needs at least 3 values of k per alpha")
    m = len(fits)
    lvl = bonferroni_level(m)
    R = min_students(d)
    b_tests = [difference_test(f"alpha={a:g}", f.b, f.b_se, None, ">", level=lvl, n=R, unit="students/cell")
               for a, f in fits]
    form = [HOLDS if f.p_value >= ALPHA / m else CONTRADICTED if f.p_value < STRICT_ALPHA / m else INCONCLUSIVE
            for _, f in fits]
    # b > 0 is read at the largest alpha (the teacher noise b measures is largest there: b grows with alpha); at a
    # smaller alpha a b significantly below 0, or any rejected 1/k form, contradicts; an undetectably small b there
    # does not make the claim inconclusive
    top = max(range(m), key=lambda i: fits[i][0])
    b_part = [b_tests[top].verdict] + [CONTRADICTED for i, x in enumerate(b_tests) if i != top
                                      and x.verdict == CONTRADICTED]
    v = all_of([*b_part, *form])
    src = "jackknife" if "inter_student_var_se" in d and d["inter_student_var_se"].notna().all() else \
        "sqrt(2/(R-1)) bound (conservative)"
    parts = [f"alpha={a:g}: floor {f.floor:.3g} {fmt_interval(*f.interval('floor', lvl))}, b {f.b:.3g} "
             f"{fmt_interval(*f.interval('b', lvl))}, chi2 {f.chi2:.1f}/{f.df} (p={f.p_value:.2g})" for a, f in fits]
    groups = dict(tuple(d.groupby("alpha")))
    for a, f in fits:  # where the 1/k form is rejected: does the delta method's next term, c/k^2, describe it?
        g = groups[a]
        if f.p_value < ALPHA / m and g["k"].nunique() >= 4:
            q = fit_floor_rows(g, quadratic=True)
            parts.append(f"alpha={a:g} second order floor + b/k + c/k^2: floor {q.floor:.3g}, b {q.b:.3g}, c {q.c:.3g} "
                         f"{fmt_interval(*q.interval('c', lvl))}, chi2 {q.chi2:.1f}/{q.df} (p={q.p_value:.2g})")
    return (f"{what} (teacher draws averaged by uqkd.aggregate.average): weighted least-squares fit of inter-student "
            "variance = floor + b/k per alpha (Monte-Carlo "
            f"SEs: {src}); {lvl:.2%} intervals (Bonferroni over {m}); chi-square goodness of fit of the 1/k form",
            "; ".join(f"{x.label}: b {x.estimate:.3g}" for x in b_tests),
            "; ".join(parts) + "; holds if b > 0 at the largest alpha and no chi-square rejects the form at 5%/m; "
            "contradicted if a b is significantly below 0 or the form is rejected at 0.1%/m (the second-order fit, "
            "shown where the "
            "form is rejected, says whether the excess is the noise's next order, c/k^2, rather than a floor that moves)",
            Verdict(v, mde=b_tests[top].mde if b_tests[top].verdict == INCONCLUSIVE else first_mde(b_tests)))


def _f2_mlp(t):
    df = t["variance-aware-mlp"]
    d = df[(df["method"] == "averaging") & (df["noise"] == "homoscedastic")]
    if d.empty:
        raise NotComputable("no homoscedastic averaging rows")
    check_draws(d)
    return floor_fit_claim(d, "averaging, homoscedastic")


register_claim(ClaimSpec(
    "F2-mlp", "7", "Averaging k teacher responses divides the teacher-noise part of MLP inter-student variance by k "
                   "(variance = floor + b/k with b > 0; the floor is initialisation and optimisation)",
    ("variance-aware-mlp",), _f2_mlp))
