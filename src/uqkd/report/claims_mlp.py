"""Claims tested by the MLP experiments (sections 4-7)."""

from __future__ import annotations

import numpy as np

from .claims import ClaimSpec, loglog_slope, register_claim
from .claims_linear import f5_variance_aware, s5_teacher_vs_truth


def _f1_mlp(t):
    from scipy.stats import spearmanr

    df = t["teacher-noise-mlp"].sort_values("sigma")
    rho = spearmanr(df["sigma"], df["mse_mean"]).statistic
    v = spearmanr(df["sigma"], df["inter_student_var"]).statistic
    return ("Spearman correlation with teacher noise sigma: test MSE; inter-student variance",
            f"{rho:.3f}; {v:.3f}", f"{len(df)} noise levels; holds if both > 0.8", bool(rho > 0.8 and v > 0.8))


register_claim(ClaimSpec(
    "F1-mlp", "4", "Teacher noise propagates into MLP students: error and inter-student variance grow with noise",
    ("teacher-noise-mlp",), _f1_mlp))


def _f4_entropy(t):
    df = t["student-entropy"]
    d = df[df["target_mode"] == "argmax"]
    gap = d["entropy_gap"].to_numpy(dtype=float)
    frac = float(np.mean(gap < 0))
    var = d["inter_student_var"].to_numpy(dtype=float)
    return ("student minus teacher predictive entropy (nats) under argmax distillation, per dataset x student",
            f"{gap.mean():+.4f} (mean); {frac:.0%} of {len(gap)} cells below the teacher",
            f"range [{gap.min():+.4f}, {gap.max():+.4f}]; inter-student variance {var.min():.2g}..{var.max():.2g}",
            bool(frac >= 0.75 and gap.mean() < 0))


register_claim(ClaimSpec(
    "F4", "6", "Single-response (argmax) KD suppresses intra-student uncertainty: students are more confident "
               "(lower predictive entropy) than the teacher", ("student-entropy",), _f4_entropy))


def _b_soft_sampled(t):
    df = t["student-entropy"]
    a = df[df["target_mode"] == "argmax"].set_index(["dataset", "student"])["entropy_gap"].abs()
    parts, ok = [], True
    for mode in ("soft", "sampled"):
        m = df[df["target_mode"] == mode].set_index(["dataset", "student"])["entropy_gap"].abs()
        r = (m / a).dropna()
        if len(r):
            frac = float(np.mean(r < 1))
            parts.append(f"{mode}: |gap| narrower in {frac:.0%} of {len(r)}")
            ok = ok and frac >= 0.5
    if not parts:
        raise ValueError("needs soft or sampled rows")
    return ("|student - teacher entropy| vs argmax distillation, per dataset x student", "; ".join(parts),
            "holds if narrower in at least half the cells for each mode", ok)


register_claim(ClaimSpec(
    "B-soft-sampled-labels", "6", "Soft-label and sampled-label distillation narrow the entropy gap that argmax "
                                  "distillation opens", ("student-entropy",), _b_soft_sampled, beyond=True))


def _s5_init(t):
    df = t["init-noise-mlp"]
    d = df[(df["record"] == "summary") & (df["sigma_init"] > 0)]
    r = (d["param_var_after"] / d["param_var_before"]).to_numpy(dtype=float)
    return ("parameter variance across perturbed students, after / before training, per sigma_init > 0",
            f"{np.median(r):.3g} (median)", f"range [{r.min():.3g}, {r.max():.3g}] over {len(r)} sigmas",
            bool(np.all(r < 1)))


register_claim(ClaimSpec(
    "S5-init-noise-params", "5", "Training shrinks the parameter variance across students initialised with "
                                 "perturbed weights (model-driven initialisation uncertainty)",
    ("init-noise-mlp",), _s5_init))


def _b_init_pred(t):
    df = t["init-noise-mlp"]
    d = df[(df["record"] == "summary") & (df["sigma_init"] > 0)]
    r = (d["pred_var_after"] / d["pred_var_before"]).to_numpy(dtype=float)
    return ("test-prediction variance across students, after / before training, per sigma_init > 0",
            f"{np.median(r):.3g} (median)", f"range [{r.min():.3g}, {r.max():.3g}]", bool(np.all(r < 1)))


register_claim(ClaimSpec(
    "B-init-noise-function-space", "5", "In function space, training removes most initialisation uncertainty "
                                        "(prediction variance across students shrinks)", ("init-noise-mlp",),
    _b_init_pred, beyond=True))

register_claim(ClaimSpec(
    "S5-bootstrap-teacher-mlp", "5", "MLP students trained on teacher outputs vary less across bootstrap samples than "
                                     "students trained on ground truth", ("bootstrap-mlp",),
    lambda t: s5_teacher_vs_truth(t, "bootstrap-mlp")))

register_claim(ClaimSpec(
    "F5-mlp", "7", "Variance-aware distillation lowers evaluation error and inter-student variance (MLP)",
    ("variance-aware-mlp",), lambda t: f5_variance_aware(t, "variance-aware-mlp")))


def _f2_mlp(t):
    df = t["variance-aware-mlp"]
    d = df[(df["method"] == "averaging") & (df["noise"] == "homoscedastic")]
    s = [loglog_slope(g.sort_values("k")["k"], g.sort_values("k")["inter_student_var"])[0]
         for _, g in d.groupby("alpha") if len(g) >= 3]
    if not s:
        raise ValueError("need at least 3 values of k")
    s = np.array(s)
    return ("log-log slope of MLP inter-student variance vs k (averaging), per alpha", f"{s.mean():.3f}",
            f"range [{s.min():.3f}, {s.max():.3f}]; > -1 where initialisation variance sets a floor; "
            "holds if every slope < 0", bool(np.all(s < 0)))


register_claim(ClaimSpec(
    "F2-mlp", "7", "Averaging k teacher responses lowers MLP inter-student variance as k grows",
    ("variance-aware-mlp",), _f2_mlp))
