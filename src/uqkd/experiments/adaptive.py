r"""Beyond the paper: spend a fixed teacher-sampling budget where the teacher is uncertain.

The paper averages the same k teacher draws for every input, at a cost of :math:`k\,n`
draws. Averaged labels carry the variance :math:`\sigma_i^2/k_i`, so an OLS student on them
has the propagated variance :math:`V(k) = \sum_i c_i\sigma_i^2/k_i`
(:func:`uqkd.theory.allocation_variance`; :math:`c_i` is how much input i moves the quantity
of interest, :func:`uqkd.theory.allocation_weights`). At an equal total budget
:math:`\sum_i k_i = B` this experiment compares, for OLS students on the Boston data with an
OLS teacher:

* ``uniform``: :math:`k_i = B/n`, the paper's recipe;
* ``design-only``: the optimal allocation for homoscedastic noise, :math:`k_i \propto \sqrt{c_i}`
  (sigma-blind; equals ``uniform`` when ``target="none"``);
* ``oracle``: the optimal integer allocation for the true :math:`\sigma_i`
  (:func:`uqkd.aggregate.allocate_budget`; Neyman :math:`k_i \propto \sigma_i\sqrt{c_i}`);
* ``two-stage``: what a practitioner can do. Each student's teacher is first sampled
  :math:`k_0` times per input (the pilot, counted in the budget), the pilot variances are
  shrunk by empirical Bayes and the remaining :math:`B - n k_0` draws are allocated by them
  (:func:`uqkd.aggregate.allocate_budget_two_stage`); the pilot draws are kept and averaged
  with the rest. Every student runs its own pilot, so the cost of estimating :math:`\sigma`
  is in the measured variance.

Two label rules: ``averaging`` (OLS on the mean of the :math:`k_i` draws, the rule the
allocation is optimal for; its closed form is overlaid) and ``wls`` (oracle-free weighted
least squares, weights :math:`k_i/\tilde s_i^2` from the shrunk sample variances of the
:math:`k_i` draws, :func:`uqkd.aggregate.shrunk_variance_unequal_k`; the known-variance WLS
with the same allocation is reported as its floor).

Teacher noise per draw: :math:`\sigma^2(x) = \alpha\,\mathrm{Var}(y_{train})\,g_h(x)` with
:func:`uqkd.experiments.linear.relative_noise_profile` at strength :math:`h` (:math:`h = 0` is
exactly homoscedastic).

Sampling is exact for Gaussian draws without materialising them: the mean of :math:`k_i`
draws is :math:`\mu_i + \sigma_i z_i/\sqrt{k_i}` and, independently (the mean of normal draws
is independent of every deviation from it), the within sum of squares is
:math:`\sigma_i^2\chi^2_{k_i-1}`. For ``two-stage`` the pilot's :math:`\chi^2_{k_0-1}` decides
:math:`k_i`, the mean of all :math:`k_i` draws given :math:`k_i` is again
:math:`N(\mu_i, \sigma_i^2/k_i)`, and the total sum of squares is the pilot's plus an
independent :math:`\sigma_i^2\chi^2_{k_i-k_0}` (the extra draws' within part and the
pilot-vs-extra contrast). The label noise :math:`z` is shared by all schemes of a cell
(common random numbers), which sharpens the paired ratios reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import aggregate, theory
from .. import methods as _registry
from .._seeding import student_draws, student_normals, student_uniforms
from ..config import check_options, option
from ..metrics import student_mse
from ..students.linear import fit_wls
from ._designs import RegressionMLPConfig, mlp_students, teacher_for
from ._deviations import BEYOND_THE_PAPER, TABULAR_SPLIT
from ._options import (
    DRAWS,
    N_STUDENTS,
    POSITIVE_NOISE,
    STRENGTH,
    TABULAR,
    mlp_memory,
    n_train_and_features,
)
from .base import Experiment, register
from .linear import LinearSetup, linear_setup, relative_noise_profile

__all__ = ["AdaptiveBudgetLinearConfig", "AdaptiveBudgetMLPConfig", "ADAPTIVE_SCHEMES", "ADAPTIVE_RULES",
           "cell_allocations"]

#: name -> one-line description
ADAPTIVE_SCHEMES: dict[str, str] = {
    "uniform": "k_i = B / n for every input (the paper's recipe)",
    "design-only": "optimal allocation assuming homoscedastic noise, k_i ~ sqrt(c_i) (sigma-blind)",
    "oracle": "optimal integer allocation for the true sigma_i, k_i ~ sigma_i sqrt(c_i)",
    "two-stage": "pilot of k0 draws per input, shrunk variances, rest of the budget allocated by them",
}
ADAPTIVE_RULES: dict[str, str] = {
    "averaging": "OLS on the mean of the k_i draws",
    "wls": "oracle-free WLS on the mean, weights k_i / shrunk sample variance of the k_i draws",
}
#: label rule -> its method in the registry of :mod:`uqkd.methods` (which computes the labels and weights)
RULE_METHODS: dict[str, str] = {"averaging": "averaging", "wls": "variance-weighting-wls"}
PAPER_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
BUDGETS = (2, 3, 5, 10, 20)


@dataclass(frozen=True)
class AdaptiveBudgetLinearConfig:
    """Equal-budget comparison of uniform, sigma-blind, oracle and two-stage allocation of teacher draws."""

    dataset: str = option("boston", "tabular dataset (boston, boston11, diabetes, synthetic)", choices=TABULAR)
    alpha: float = option(0.5, "mean teacher noise variance per draw as a fraction of Var(y_train)", **POSITIVE_NOISE)
    strengths: tuple[float, ...] = option(PAPER_STRENGTHS, "heteroscedastic strength h of the noise profile "
                                          "(0 = homoscedastic)", **STRENGTH)
    budgets: tuple[int, ...] = option(BUDGETS, "total budget per input B / n (B = n * value)", min=1, max=DRAWS["max"])
    schemes: tuple[str, ...] = option(tuple(ADAPTIVE_SCHEMES), "allocation schemes: " + ", ".join(ADAPTIVE_SCHEMES))
    rules: tuple[str, ...] = option(tuple(ADAPTIVE_RULES), "label rules: " + ", ".join(ADAPTIVE_RULES))
    target: Literal["predictions", "parameters", "none"] = option(
        "predictions", "what the allocation minimises: mean test-prediction variance (c_i from the test inputs, "
        "not their labels), trace of the parameter covariance, or none (c_i = 1: k_i ~ sigma_i)")
    pilot_k: int = option(2, "two-stage pilot draws per input k0 (>= 2), kept and averaged with the rest",
                          min=2, max=DRAWS["max"])
    min_per_input: int = option(1, "floor on k_i for the design-only and oracle allocations", min=1, max=DRAWS["max"])
    n_students: int = option(1000, "students per cell (each with its own teacher draws and pilot)", **N_STUDENTS)

    def __post_init__(self) -> None:
        check_options(self)
        floor = self.pilot_k if "two-stage" in self.schemes else max(self.min_per_input, 1)
        for b in self.budgets:
            if b < max(floor, self.min_per_input):
                raise ValueError(f"budgets: expected budgets per input >= {max(floor, self.min_per_input)} "
                                 f"(pilot_k / min_per_input), got {b}")
        for name, values, valid in (("schemes", self.schemes, ADAPTIVE_SCHEMES), ("rules", self.rules, ADAPTIVE_RULES)):
            if not values:
                raise ValueError(f"{name}: expected at least one value")
            for v in values:
                if v not in valid:
                    raise ValueError(f"{name}: unknown value {v!r}; valid: {', '.join(valid)}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: expected distinct values, got {values}")

    def memory_estimate(self) -> tuple[float, str, str]:
        n, p = n_train_and_features(self.dataset)
        R = self.n_students
        # ~16 (R, n) float64 arrays (labels, sums of squares, allocations, weights) and (R, p, p) floors
        need = 8.0 * R * (16 * n + 3 * p * p)
        return need, "n_students", f"n_students={R} x n={n} training inputs, float64"


def _cells(cfg: AdaptiveBudgetLinearConfig) -> list[dict[str, Any]]:
    return [{"strength": float(h), "budget_per_input": int(b)} for h in cfg.strengths for b in cfg.budgets]


def _weights(setup: LinearSetup, target: str) -> np.ndarray:
    sp = setup.split
    if target == "none":
        return np.ones(len(setup.mu_train))
    if target == "parameters":
        return theory.allocation_weights(sp.X_train, quantity="parameters")
    return theory.allocation_weights(sp.X_train, sp.X_test, quantity="predictions")


def cell_allocations(
    schemes: tuple[str, ...], weights: np.ndarray, noise_var: np.ndarray, budget: int, *, pilot_k: int,
    min_per_input: int, student_ids: np.ndarray, seed: int, identity: tuple[Any, ...],
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    r"""``{scheme: (k, pilot_chi2)}`` for ``uniform`` and each of ``schemes``.

    ``k`` has shape (n,) (the same for every student) or (R, n) for ``two-stage``, whose
    ``pilot_chi2`` (R, n) is the pilot's :math:`(k_0-1)s_i^2/\sigma_i^2` (None for the others).
    """
    n = len(noise_var)
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"uniform": (np.full(n, budget // n, dtype=np.int64), None)}
    if "design-only" in schemes:
        out["design-only"] = (aggregate.allocate_budget(np.ones(n), budget, weights, min_per_input=min_per_input), None)
    if "oracle" in schemes:
        out["oracle"] = (aggregate.allocate_budget(noise_var, budget, weights, min_per_input=min_per_input), None)
    if "two-stage" in schemes:
        chi0 = student_draws(seed, (*identity, "pilot", pilot_k), student_ids,
                             lambda g, b: g.chisquare(pilot_k - 1, size=(b, n)))  # (R, n)
        pilot_var = noise_var[None, :] * chi0 / (pilot_k - 1)  # (R, n) sample variances of the pilot
        k, _ = aggregate.allocate_budget_two_stage(pilot_var, pilot_k, budget, weights)
        out["two-stage"] = (k, chi0)
    return out


def _labels_and_variances(
    mu: np.ndarray, noise_var: np.ndarray, k: np.ndarray, chi0: np.ndarray | None, pilot_k: int,
    z: np.ndarray, student_ids: np.ndarray, seed: int, identity: tuple[Any, ...], need_var: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean of the k_i draws (R, n) and their sample variance (R, n; zero where k_i = 1)."""
    from scipy.special import gammaincinv

    R, n = z.shape
    kf = np.broadcast_to(k, (R, n)).astype(float)
    ybar = mu[None, :] + np.sqrt(noise_var[None, :] / kf) * z  # (R, n)
    if not need_var:
        return ybar, None
    if chi0 is None:  # k is shared by every student: one gamma call per block
        kd = np.asarray(k, dtype=float)
        chi = student_draws(seed, (*identity, "ss"), student_ids,
                            lambda g, b: 2.0 * g.standard_gamma((kd - 1.0) / 2.0, size=(b, n)))  # chi2_{k-1}
    else:  # per-student k: inverse-CDF of uniforms keeps student r's numbers its own
        u = student_uniforms(seed, (*identity, "ss-extra"), student_ids, (n,))
        ke = kf - pilot_k
        with np.errstate(invalid="ignore"):
            extra = np.where(ke > 0, 2.0 * gammaincinv(np.maximum(ke, 1.0) / 2.0, u), 0.0)  # chi2_{k-k0}
        chi = chi0 + extra
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(kf > 1, noise_var[None, :] * chi / np.maximum(kf - 1.0, 1.0), 0.0)
    return ybar, s2


def _targets(rule: str, ybar: np.ndarray, s2: np.ndarray | None, k: np.ndarray) -> _registry.MethodTargets:
    """Labels (R, n) and loss weights (R, n) or None of one label rule, from the method registry."""
    return _registry.method_targets(RULE_METHODS[rule], mean_k=ybar, var_k=s2, k=k)


def _fit(setup: LinearSetup, rule: str, ybar: np.ndarray, s2: np.ndarray | None, k: np.ndarray) -> np.ndarray:
    """Parameters (R, p) of R OLS / WLS students under one label rule."""
    labels, W = _targets(rule, ybar, s2, k)
    if W is None:
        return labels @ setup.pinv.T
    return fit_wls(setup.split.X_train, labels, W)


def _per_student(pred: np.ndarray, y_test: np.ndarray, theta: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-student pieces whose means are the reported statistics; pred (R, m), theta (R, p)."""
    R = pred.shape[0]
    dev = pred - pred.mean(axis=0)
    out = {
        "mse": student_mse(pred, y_test),  # (R,)
        "q": (dev**2).mean(axis=1) * R / (R - 1),  # mean is the inter-student variance of test predictions
    }
    if theta is not None:
        tdev = theta - theta.mean(axis=0)
        out["qp"] = (tdev**2).sum(axis=1) * R / (R - 1)  # mean is the trace of the parameter covariance
    return out


def _student_stats(ps: dict[str, np.ndarray]) -> dict[str, Any]:
    R = len(ps["mse"])
    out = {
        "mse_mean": float(ps["mse"].mean()),
        "mse_std": float(ps["mse"].std(ddof=1)),
        "mse_sem": float(ps["mse"].std(ddof=1) / np.sqrt(R)),
        "inter_student_var": float(ps["q"].mean()),
        "inter_student_var_sem": float(ps["q"].std(ddof=1) / np.sqrt(R)),
    }
    if "qp" in ps:
        out["param_var_trace"] = float(ps["qp"].mean())
        out["param_var_trace_sem"] = float(ps["qp"].std(ddof=1) / np.sqrt(R))
    return out


def _add_ratios(rows: list[dict[str, Any]], per: dict[tuple[str, str], dict[str, np.ndarray]]) -> None:
    """Paired ratios of inter-student variance to the reference schemes and MSE differences to uniform."""
    for row in rows:
        ps = per[(row["scheme"], row["rule"])]
        for ref in ("uniform", "design-only", "oracle"):
            tag = ref.replace("-", "_")
            if (ref, row["rule"]) in per:
                r, se = _ratio(ps["q"], per[(ref, row["rule"])]["q"])
            else:
                r, se = float("nan"), float("nan")
            row[f"ratio_to_{tag}"] = r
            row[f"ratio_to_{tag}_se_log"] = se
        d = ps["mse"] - per[("uniform", row["rule"])]["mse"]
        row["mse_diff_vs_uniform"] = float(d.mean())
        row["mse_diff_vs_uniform_sem"] = float(d.std(ddof=1) / np.sqrt(len(d)))


def _ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Ratio of means of paired per-student terms and the delta-method SE of its log."""
    A, B_ = a.mean(), b.mean()
    if A <= 0 or B_ <= 0:
        return float("nan"), float("nan")
    d = a / A - b / B_
    return float(A / B_), float(d.std(ddof=1) / np.sqrt(len(a)))


def _wls_floor(setup: LinearSetup, noise_var: np.ndarray, k: np.ndarray) -> float:
    """Mean test-prediction variance of WLS with the true precisions k_i / sigma_i^2 (averaged over students)."""
    D, De = setup.D, setup.D_test
    p = D.shape[1]
    prec = np.atleast_2d(np.asarray(k, dtype=float)) / noise_var[None, :]  # (R or 1, n)
    outer = (D[:, :, None] * D[:, None, :]).reshape(len(noise_var), p * p)
    G = (prec @ outer).reshape(-1, p, p)  # (R, p, p)
    C = np.linalg.inv(G)
    return float(np.mean(np.einsum("ep,rpq,eq->re", De, C, De)))


#: fit_predict(rule, ybar, s2, k) -> (test predictions (R, m), parameters (R, p) or None) of one student family
FitPredict = Callable[[str, np.ndarray, "np.ndarray | None", np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
#: extras(noise_var, budget_per_input) -> (rule, k (n,) or (R, n), kk (R, n)) -> the family's extra columns
Extras = Callable[[np.ndarray, int], Callable[[str, np.ndarray, np.ndarray], dict[str, Any]]]


def _budget_cell(cfg: Any, cell: dict[str, Any], seed: int, *, tch: Any, ident: tuple[Any, ...],
                 weights: np.ndarray, schemes: tuple[str, ...], fit_predict: FitPredict,
                 extras: Extras) -> list[dict[str, Any]]:
    """One adaptive-budget cell for any student family: allocate the budget by each scheme, draw the labels
    (common random numbers across schemes), fit the family per label rule and report its statistics, the
    family's ``extras`` and the paired ratios. ``tch`` has ``split``, ``mu_train``, ``mu_test``, ``var_y``;
    ``schemes`` are the ones computed (references of the ratios included); rows only for ``cfg.schemes``."""
    h, b = float(cell["strength"]), int(cell["budget_per_input"])
    n = len(tch.mu_train)
    budget = n * b
    g_tr, _ = relative_noise_profile(tch.mu_train, tch.mu_test, "heteroscedastic", h)  # h = 0: ones
    nv = cfg.alpha * tch.var_y * g_tr  # (n,) per-draw noise variance
    ids = np.arange(cfg.n_students)
    ident = (*ident, cfg.alpha, h, b)
    allocs = cell_allocations(schemes, weights, nv, budget, pilot_k=cfg.pilot_k, min_per_input=cfg.min_per_input,
                              student_ids=ids, seed=seed, identity=ident)
    z = student_normals(seed, (*ident, "label-noise"), ids, (n,))  # (R, n), shared by the schemes
    cell_info = {
        "strength": h, "budget_per_input": b, "budget": budget, "alpha": cfg.alpha, "target": cfg.target,
        "noise_var_ratio": float(nv.max() / nv.min()),
        # Large-budget (Neyman) and exact-integer predicted ratios, optimal / uniform, for the allocation target.
        "predicted_gain": theory.allocation_gain(nv, weights),
        "predicted_gain_exact": theory.allocation_gain(nv, weights, budget=budget, min_per_input=cfg.min_per_input),
    }
    need_var = "wls" in cfg.rules
    per: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    rows: list[dict[str, Any]] = []
    columns = extras(nv, b)
    for scheme, (k, chi0) in allocs.items():
        ybar, s2 = _labels_and_variances(tch.mu_train, nv, k, chi0, cfg.pilot_k, z, ids, seed, ident, need_var)
        kk = np.broadcast_to(k, (cfg.n_students, n))
        for rule in cfg.rules:
            pred, theta = fit_predict(rule, ybar, s2, k)
            ps = _per_student(pred, tch.split.y_test, theta)
            per[(scheme, rule)] = ps
            if scheme not in cfg.schemes:
                continue
            row: dict[str, Any] = {**cell_info, "scheme": scheme, "rule": rule}
            row.update(_student_stats(ps))
            row.update(columns(rule, k, kk))
            row.update({"k_min": int(kk.min()), "k_max": int(kk.max()), "k_sd": float(kk.std(axis=1).mean()),
                        "n_students": cfg.n_students})
            rows.append(row)
    _add_ratios(rows, per)
    return rows


def _run(cfg: AdaptiveBudgetLinearConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    setup = linear_setup(cfg.dataset, seed)
    sp = setup.split
    c_pred = theory.allocation_weights(sp.X_train, sp.X_test, quantity="predictions")
    c_par = theory.allocation_weights(sp.X_train, quantity="parameters")

    def fit_predict(rule: str, ybar: np.ndarray, s2: np.ndarray | None, k: np.ndarray) -> tuple[Any, Any]:
        theta = _fit(setup, rule, ybar, s2, k)
        return theta @ setup.D_test.T, theta

    def extras(nv: np.ndarray, b: int) -> Callable[[str, np.ndarray, np.ndarray], dict[str, Any]]:
        theory_uniform = float(np.sum(c_pred * nv) / b)

        def columns(rule: str, k: np.ndarray, kk: np.ndarray) -> dict[str, Any]:
            th_pred = float(np.mean((c_pred * nv / kk).sum(axis=1)))  # closed form given the (realised) allocation
            avg = rule == "averaging"
            return {"theory_inter_student_var": th_pred if avg else float("nan"),
                    "theory_param_var_trace": float(np.mean((c_par * nv / kk).sum(axis=1))) if avg else float("nan"),
                    "theory_gain": th_pred / theory_uniform if avg else float("nan"),
                    "wls_known_var_inter_student_var": _wls_floor(setup, nv, k)}
        return columns

    # uniform, design-only and oracle are always computed: they are the references of the ratios.
    return _budget_cell(cfg, cell, seed, tch=setup, ident=("adaptive-budget-linear", cfg.dataset),
                        weights=_weights(setup, cfg.target), fit_predict=fit_predict, extras=extras,
                        schemes=tuple(dict.fromkeys(("design-only", "oracle", *cfg.schemes))))


def _summary(df: Any) -> Any:
    bs = sorted(set(df["budget_per_input"]))
    keep = {bs[len(bs) // 2], bs[-1]}
    d = df[df["budget_per_input"].isin(keep) & df["scheme"].isin(["oracle", "two-stage", "design-only"])]
    cols = ["strength", "budget_per_input", "scheme", "rule", "inter_student_var", "theory_inter_student_var",
            "ratio_to_uniform", "ratio_to_uniform_se_log", "theory_gain", "predicted_gain_exact", "predicted_gain",
            "mse_mean", "mse_diff_vs_uniform", "mse_diff_vs_uniform_sem", "n_students"]
    return d[[c for c in cols if c in d]].sort_values(["rule", "strength", "budget_per_input", "scheme"])


def _pick(values: list[float], m: int = 4) -> list[float]:
    if len(values) <= m:
        return values
    idx = sorted({round(i * (len(values) - 1) / (m - 1)) for i in range(m)})
    return [values[i] for i in idx]


def _budget_ticks(ax: Any, d: Any) -> None:
    import matplotlib.ticker

    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted(set(d["budget_per_input"])))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _plot(df: Any, cfg: AdaptiveBudgetLinearConfig, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from ..plotting import plot_sweep, save_figure

    df = df.copy()
    df["_band"] = 1.96 * df["inter_student_var_sem"]
    strengths = _pick(sorted(set(df["strength"])))
    rules = list(dict.fromkeys(df["rule"]))
    fig, axes = plt.subplots(len(rules), len(strengths), figsize=(4.0 * len(strengths), 3.6 * len(rules)),
                             squeeze=False)
    for i, rule in enumerate(rules):
        for j, h in enumerate(strengths):
            ax = axes[i, j]
            d = df[(df["rule"] == rule) & (df["strength"] == h)]
            for scheme, ds in d.groupby("scheme", sort=False):
                th = "theory_inter_student_var" if rule == "averaging" else None
                plot_sweep(ds, "budget_per_input", "inter_student_var", yerr="_band", theory=th, label=scheme, ax=ax,
                           logx=True, logy=True, legend=False, theory_label=f"{scheme} (closed form)")
            if rule == "wls":
                ds = d[d["scheme"] == "uniform"].sort_values("budget_per_input")
                if len(ds):
                    ax.plot(ds["budget_per_input"], ds["wls_known_var_inter_student_var"], ls=":", color="k", lw=1,
                            label="known-variance WLS, uniform k")
            ax.set(title=f"{rule}, strength h={h:g}", xlabel="budget per input B/n",
                   ylabel="inter-student variance (test)")
            _budget_ticks(ax, d)
    handles, labels = [], []
    for ax in axes.ravel():
        for hd, lb in zip(*ax.get_legend_handles_labels(), strict=True):
            if lb not in labels:
                handles.append(hd)
                labels.append(lb)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.18)
    paths = [save_figure(fig, out_dir / "adaptive_budget_linear_variance.png")]

    # Measured vs predicted gain against the heteroscedastic strength.
    d = df[df["rule"] == "averaging"]
    if len(d) and d["strength"].nunique() > 1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, scheme in zip(axes, ("oracle", "two-stage"), strict=True):
            ds = d[d["scheme"] == scheme]
            for bpi, db in ds.groupby("budget_per_input"):
                db = db.sort_values("strength")
                lo = db["ratio_to_uniform"] * np.exp(-1.96 * db["ratio_to_uniform_se_log"])
                hi = db["ratio_to_uniform"] * np.exp(1.96 * db["ratio_to_uniform_se_log"])
                (line,) = ax.plot(db["strength"], db["ratio_to_uniform"], marker="o", ms=3, label=f"B/n={bpi}")
                ax.fill_between(db["strength"], lo, hi, color=line.get_color(), alpha=0.15, lw=0)
                ax.plot(db["strength"], db["theory_gain"], ls="--", lw=1, color=line.get_color())
            pg = d.drop_duplicates("strength").sort_values("strength")
            ax.plot(pg["strength"], pg["predicted_gain"], ls=":", color="k", label="oracle prediction (Neyman, large budget)")
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set(title=f"{scheme} / uniform (dashed: closed form)", xlabel="heteroscedastic strength h",
                   ylabel="inter-student variance ratio")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        paths.append(save_figure(fig, out_dir / "adaptive_budget_linear_gain.png"))
    return paths


register(
    Experiment(
        name="adaptive-budget-linear",
        section="7",
        description="beyond the paper: equal-budget uniform vs uncertainty-allocated (oracle, two-stage) teacher "
                    "sampling for OLS students, with the closed form",
        config_cls=AdaptiveBudgetLinearConfig,
        cells=_cells,
        run_cell=_run,
        plot=_plot,
        summary=_summary,
        profiles={
            "quick": {"n_students": 200, "strengths": (0.0, 1.5), "budgets": (2, 5, 20)},
            "paper": {"n_students": 1000},
        },
        deviations=(BEYOND_THE_PAPER, TABULAR_SPLIT),
    )
)


# --------------------------------------------------------------------------- MLP students


@dataclass(frozen=True)
class AdaptiveBudgetMLPConfig(RegressionMLPConfig):
    """Equal-budget uniform vs uncertainty-allocated teacher sampling for batched MLP students (no closed form)."""

    alpha: float = option(0.5, "mean teacher noise variance per draw as a fraction of Var(y_train)", **POSITIVE_NOISE)
    strengths: tuple[float, ...] = option((0.0, 0.75, 1.5), "heteroscedastic strength h (0 = homoscedastic)",
                                          **STRENGTH)
    budgets: tuple[int, ...] = option((3, 5, 10, 20), "total budget per input B / n", min=1, max=DRAWS["max"])
    schemes: tuple[str, ...] = option(("uniform", "oracle", "two-stage"), "allocation schemes: "
                                      + ", ".join(ADAPTIVE_SCHEMES))
    rules: tuple[str, ...] = option(tuple(ADAPTIVE_RULES), "label rules: averaging, wls (per-example loss weights)")
    target: Literal["none", "predictions"] = option(
        "none", "allocation weights c_i: none (k_i ~ sigma_i) or predictions (the OLS student's test-prediction "
        "leverage, a linear proxy for the MLP's sensitivity)")
    pilot_k: int = option(2, "two-stage pilot draws per input k0 (>= 2), kept and averaged with the rest",
                          min=2, max=DRAWS["max"])
    min_per_input: int = option(1, "floor on k_i for the design-only and oracle allocations", min=1, max=DRAWS["max"])
    n_students: int = option(500, "students per cell, scheme and rule", **N_STUDENTS)

    def __post_init__(self) -> None:
        check_options(self)
        AdaptiveBudgetLinearConfig(  # the shared range checks
            dataset=self.dataset, alpha=self.alpha, strengths=self.strengths, budgets=self.budgets,
            schemes=self.schemes, rules=self.rules, pilot_k=self.pilot_k, min_per_input=self.min_per_input,
            n_students=self.n_students)

    def memory_estimate(self) -> tuple[float, str, str]:
        return mlp_memory(self, extra_rn=16)


def _mlp_run(cfg: AdaptiveBudgetMLPConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    tch = teacher_for(cfg, seed)
    sp = tch.split
    c = (np.ones(len(tch.mu_train)) if cfg.target == "none"
         else theory.allocation_weights(sp.X_train, sp.X_test, quantity="predictions"))
    student_ident = ("adaptive-budget-mlp", cfg.dataset, "students")  # same initialisations everywhere (CRN)

    def fit_predict(rule: str, ybar: np.ndarray, s2: np.ndarray | None, k: np.ndarray) -> tuple[Any, Any]:
        labels, w = _targets(rule, ybar, s2, k)
        model = mlp_students(cfg, seed, student_ident).fit(sp.X_train, labels, sample_weight=w)
        return model.predict(sp.X_test), None

    def extras(nv: np.ndarray, b: int) -> Callable[[str, np.ndarray, np.ndarray], dict[str, Any]]:
        label_uniform = float(np.sum(c * nv) / b)
        # The allocation's objective sum_i c_i sigma_i^2 / k_i relative to uniform: the closed-form ratio for a
        # linear student, only a proxy for an MLP.
        return lambda rule, k, kk: {"label_var_ratio": float(np.mean((c * nv / kk).sum(axis=1))) / label_uniform}

    return _budget_cell(cfg, cell, seed, tch=tch, ident=("adaptive-budget-mlp", cfg.dataset, cfg.teacher),
                        weights=c, schemes=cfg.schemes, fit_predict=fit_predict, extras=extras)


def _mlp_summary(df: Any) -> Any:
    d = df[df["scheme"] != "uniform"]
    cols = ["strength", "budget_per_input", "scheme", "rule", "inter_student_var", "ratio_to_uniform",
            "ratio_to_uniform_se_log", "label_var_ratio", "predicted_gain_exact", "mse_mean", "mse_diff_vs_uniform",
            "mse_diff_vs_uniform_sem", "n_students"]
    return d[[c for c in cols if c in d]].sort_values(["rule", "strength", "budget_per_input", "scheme"])


def _mlp_plot(df: Any, cfg: AdaptiveBudgetMLPConfig, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from ..plotting import plot_sweep, save_figure

    df = df.copy()
    df["_band"] = 1.96 * df["inter_student_var_sem"]
    strengths = _pick(sorted(set(df["strength"])))
    rules = list(dict.fromkeys(df["rule"]))
    fig, axes = plt.subplots(len(rules), len(strengths), figsize=(4.0 * len(strengths), 3.6 * len(rules)),
                             squeeze=False)
    for i, rule in enumerate(rules):
        for j, h in enumerate(strengths):
            ax = axes[i, j]
            d = df[(df["rule"] == rule) & (df["strength"] == h)]
            for scheme, ds in d.groupby("scheme", sort=False):
                plot_sweep(ds, "budget_per_input", "inter_student_var", yerr="_band", label=scheme, ax=ax, logx=True,
                           logy=True, legend=(i == 0 and j == 0))
            ax.set(title=f"MLP students, {rule}, h={h:g}", xlabel="budget per input B/n",
                   ylabel="inter-student variance (test)")
            _budget_ticks(ax, d)
    return [save_figure(fig, out_dir / "adaptive_budget_mlp_variance.png")]


register(
    Experiment(
        name="adaptive-budget-mlp",
        section="7",
        description="beyond the paper: equal-budget uniform vs uncertainty-allocated teacher sampling for MLP students",
        config_cls=AdaptiveBudgetMLPConfig,
        cells=_cells,
        run_cell=_mlp_run,
        plot=_mlp_plot,
        summary=_mlp_summary,
        profiles={
            "quick": {"n_students": 50, "n_epochs": 100, "strengths": (0.0, 1.5), "budgets": (3, 10)},
            "paper": {"n_students": 500},
        },
        deviations=(BEYOND_THE_PAPER, TABULAR_SPLIT),
    )
)
