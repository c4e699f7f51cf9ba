r"""Beyond the paper, section 4 for ridge students: teacher noise through a ridge fit, against its closed form.

Students fit ridge regression (intercept unpenalised) to the teacher's mean plus Gaussian noise of variance
:math:`\sigma^2 = \text{sigma} \cdot \mathrm{Var}(y_{train})`. With :math:`A = (X^\top X + \lambda P)^{-1}`
(:math:`P` the identity on the features, zero on the intercept) the students' parameters are
:math:`A X^\top y`, so their covariance across teacher-noise draws is the sandwich

.. math:: \mathrm{Cov}(\hat\theta) = \sigma^2 A X^\top X A,

which shrinks OLS's :math:`\sigma^2 (X^\top X)^{-1}` (section 4's F1). The claim ``B-ridge-closed-form``
(the report's ``claims_ridge`` module) checks the Monte-Carlo inter-student variance of the test predictions against
:math:`\mathrm{mean}_x\, x^\top \mathrm{Cov}(\hat\theta) x` within an equivalence margin. ``lambdas`` are in units of
the mean eigenvalue of the features' :math:`X^\top X` (``trace / p``), so a value means the same shrinkage on any
dataset.

This module and its claims module are all that this experiment adds to uqkd: both are found by discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._seeding import student_normals
from ..config import check_options, option
from ..data.tabular import load_tabular
from ..metrics import inter_student_var_se
from ._deviations import BEYOND_THE_PAPER, TABULAR_SPLIT
from ._options import N_STUDENTS, POSITIVE_NOISE, TABULAR
from .base import Experiment, register

__all__ = ["RidgeTeacherNoiseConfig", "fit_ridge", "ridge_param_cov"]

#: ridge penalty in units of the mean eigenvalue of the features' X^T X
PENALTY: dict[str, Any] = {"min": 0, "max": 1e6}


@dataclass(frozen=True)
class RidgeTeacherNoiseConfig:
    """Ridge students on teacher mean + Gaussian noise of variance sigma * Var(y_train), for each penalty."""

    dataset: str = option("boston", "tabular dataset (boston, boston11, diabetes, synthetic)", choices=TABULAR)
    sigmas: tuple[float, ...] = option((0.5, 2.0), "teacher noise variance as a fraction of Var(y_train)",
                                       **POSITIVE_NOISE)
    lambdas: tuple[float, ...] = option((0.0, 0.1, 1.0), "ridge penalty in units of the mean eigenvalue of the "
                                        "features' X^T X (0: OLS)", **PENALTY)
    n_students: int = option(2000, "students per cell", **N_STUDENTS)

    def __post_init__(self) -> None:
        check_options(self)


def _design(X: np.ndarray) -> np.ndarray:
    return np.c_[np.ones(len(X)), X]


def _penalty(D: np.ndarray, lam: float) -> np.ndarray:
    """``lam`` times the mean eigenvalue of the features' Gram matrix on the features, zero on the intercept."""
    G = D[:, 1:].T @ D[:, 1:]
    P = np.eye(D.shape[1])
    P[0, 0] = 0.0
    return lam * float(np.trace(G)) / G.shape[0] * P


def fit_ridge(D: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge parameters of every student: ``Y`` (R, n) labels on design ``D`` (n, p) -> (R, p)."""
    A = np.linalg.inv(D.T @ D + _penalty(D, lam))
    return Y @ (A @ D.T).T


def ridge_param_cov(D: np.ndarray, lam: float, noise_var: float) -> np.ndarray:
    """Closed-form covariance of the ridge parameters under label noise of variance ``noise_var``:
    ``noise_var * A D^T D A`` with ``A = (D^T D + lam P)^-1``."""
    A = np.linalg.inv(D.T @ D + _penalty(D, lam))
    return noise_var * A @ (D.T @ D) @ A


def _cells(cfg: RidgeTeacherNoiseConfig) -> list[dict[str, Any]]:
    return [{"sigma": float(s), "lam": float(lam)} for s in cfg.sigmas for lam in cfg.lambdas]


def _run(cfg: RidgeTeacherNoiseConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    split = load_tabular(cfg.dataset, seed=seed)
    D, Dt = _design(split.X_train), _design(split.X_test)
    mu = D @ np.linalg.lstsq(D, split.y_train, rcond=None)[0]  # the OLS teacher's mean on the training inputs
    noise_var = cell["sigma"] * float(split.y_train.var())
    # the same noise for every penalty of a sigma (common random numbers): penalties compare on equal draws
    eps = student_normals(seed, ("ridge-teacher-noise-linear", cfg.dataset, cell["sigma"]),
                          np.arange(cfg.n_students), (len(mu),))
    theta = fit_ridge(D, mu[None, :] + np.sqrt(noise_var) * eps, cell["lam"])  # (R, p)
    pred = theta @ Dt.T  # (R, m)
    C = ridge_param_cov(D, cell["lam"], noise_var)
    return [{
        "sigma": cell["sigma"], "lam": cell["lam"], "noise_var": noise_var,
        "inter_student_var": float(pred.var(axis=0, ddof=1).mean()),
        "inter_student_var_se": inter_student_var_se(pred),
        "theory_inter_student_var": float(np.einsum("ij,jk,ik->i", Dt, C, Dt).mean()),
        "param_var_mc": float(theta.var(axis=0, ddof=1).mean()),
        "param_var_theory": float(np.diag(C).mean()),
        "mse_mean": float(np.mean((pred - split.y_test[None, :]) ** 2)),
        "n_students": int(cfg.n_students),
    }]


def _summary(df: Any) -> Any:
    return df[["sigma", "lam", "inter_student_var", "theory_inter_student_var", "inter_student_var_se",
               "param_var_mc", "param_var_theory", "mse_mean", "n_students"]]


def _plot(df: Any, cfg: RidgeTeacherNoiseConfig, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from ..plotting import save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for s, d in df.groupby("sigma"):
        d = d.sort_values("lam")
        x = d["lam"] + 1e-3
        ax.errorbar(x, d["inter_student_var"], yerr=2 * d["inter_student_var_se"], fmt="o", label=f"sigma={s:g} (MC)")
        ax.plot(x, d["theory_inter_student_var"], "k--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel=r"ridge penalty $\lambda$ (+0.001)",
           ylabel="inter-student variance (test)", title=r"ridge students vs $\sigma^2 A X^\top X A$ (dashed)")
    ax.legend(fontsize=8)
    return [save_figure(fig, out_dir / "ridge_teacher_noise_linear.png")]


register(Experiment(
    name="ridge-teacher-noise-linear",
    section="4",
    description="beyond the paper: ridge students on teacher mean + Gaussian noise; inter-student variance vs the "
                "closed form sigma^2 A X'X A",
    config_cls=RidgeTeacherNoiseConfig,
    cells=_cells,
    run_cell=_run,
    plot=_plot,
    summary=_summary,
    notes="Ridge students (intercept unpenalised) fitted to the OLS teacher's mean plus Gaussian noise; the "
          "Monte-Carlo variance of their test predictions across students against the closed form "
          "sigma^2 A X'X A, A = (X'X + lambda P)^-1. lambda = 0 is section 4's OLS case.",
    deviations=(BEYOND_THE_PAPER, TABULAR_SPLIT),
    profiles={"quick": {}, "paper": {"n_students": 10000, "sigmas": (0.25, 0.5, 1.0, 2.0),
                                     "lambdas": (0.0, 0.01, 0.1, 1.0, 10.0)}},
))
