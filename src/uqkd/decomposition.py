r"""Inter-student variance as a floor plus a teacher-noise part that averaging divides by k.

Students distilled on the mean of k teacher draws per input vary for two reasons: the labels'
teacher noise, whose variance averaging divides by k, and everything else that differs between
students trained on identical labels (initialisation and the optimisation it starts, for an MLP;
nothing for OLS). Across a k-sweep this is

.. math:: V(k) = \text{floor} + \frac{b}{k},

fitted by weighted least squares of the Monte-Carlo estimates :math:`\hat V_k` on
:math:`(1, 1/k)` with weights :math:`1/\mathrm{se}_k^2` (their Monte-Carlo standard errors).
The goodness of fit is :math:`\chi^2 = \sum_k (\hat V_k - \hat V(k))^2/\mathrm{se}_k^2` on
``len(k) - 2`` degrees of freedom (scipy.special.chdtrc, i.e. scipy.stats.chi2.sf). Parameter intervals use the known SEs
(normal quantiles), widened by :math:`\sqrt{\max(1, \chi^2/\mathrm{df})}` (the Birge ratio) when
the points scatter more than their errors say.

Second order (``quadratic=True``): :math:`V(k) = \text{floor} + b/k + c/k^2`. A student that is
not linear in its labels (an MLP) responds to label noise of variance :math:`s^2 = \sigma^2/k` with
a variance :math:`b'\,s^2 + c'\,s^4 + \dots` (the delta method's next term: curvature of the
trained network in its labels), so at large teacher noise the pure 1/k form can be rejected while
the teacher-noise part still vanishes as k grows. Measured on ``variance-aware-mlp --profile paper``
(2026-12-06): at alpha = 1 floor + b/k gives chi2 202/14; with c/k^2, chi2 5.5/13 and c ~ alpha^2.

Pure numpy / scipy; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FloorFit", "fit_floor_plus_slope", "fit_floor_rows", "relative_variance_se", "decomposition_table"]


@dataclass(frozen=True)
class FloorFit:
    """The fit :math:`V(k) = \\text{floor} + b/k` of one k-sweep.

    Attributes
    ----------
    floor, b : float
        Estimates.
    floor_se, b_se : float
        Standard errors (known-SE WLS, times :attr:`scale`).
    cov : array (2, 2)
        Covariance of (floor, b), scale included.
    chi2, df, p_value : float, int, float
        Goodness of fit of the 1/k form (``p_value`` = P(chi2_df > chi2)).
    scale : float
        :math:`\\sqrt{\\max(1, \\chi^2/\\mathrm{df})}` applied to the SEs.
    n_points : int
    """

    floor: float
    b: float
    floor_se: float
    b_se: float
    cov: np.ndarray
    chi2: float
    df: int
    p_value: float
    scale: float
    n_points: int
    c: float = 0.0
    c_se: float = float("nan")

    @property
    def quadratic(self) -> bool:
        """Whether the fit has the second-order term c/k^2."""
        return bool(np.isfinite(self.c_se))

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """Two-sided normal interval of ``"floor"`` or ``"b"``."""
        from scipy.special import ndtri  # norm.ppf without importing scipy.stats (~1 s per process)

        names = ("floor", "b", "c") if self.quadratic else ("floor", "b")
        if name not in names:
            raise ValueError(f"name: expected one of {names}, got {name!r}")
        est, se = {"floor": (self.floor, self.floor_se), "b": (self.b, self.b_se), "c": (self.c, self.c_se)}[name]
        q = float(ndtri(1 - (1 - level) / 2))
        return est - q * se, est + q * se

    def predict(self, k: Any) -> np.ndarray:
        """Fitted :math:`V(k)`."""
        k = np.asarray(k, dtype=float)
        return self.floor + self.b / k + self.c / k**2


def relative_variance_se(n_students: int) -> float:
    r"""Relative SE of a normal sample variance of R draws, :math:`\sqrt{2/(R-1)}`.

    For a variance averaged over correlated inputs it is an upper bound (conservative); used when
    a results table has no jackknife SE column.
    """
    if n_students < 2:
        raise ValueError(f"n_students: expected an integer >= 2, got {n_students}")
    return float(np.sqrt(2.0 / (n_students - 1)))


def fit_floor_plus_slope(k: Any, v: Any, se: Any | None = None, *, rel_se: float | None = None,
                         n_iter: int = 3, quadratic: bool = False) -> FloorFit:
    r"""Weighted least-squares fit of :math:`V(k) = \text{floor} + b/k` (``+ c/k^2`` if ``quadratic``).

    Parameters
    ----------
    k : array (m,)
        Teacher draws per input, at least three distinct values.
    v : array (m,)
        Monte-Carlo inter-student variances.
    se : array (m,), optional
        Their standard errors (e.g. :func:`uqkd.metrics.inter_student_var_se`).
    rel_se : float, optional
        Instead of ``se``: a relative SE, applied to the *fitted* values (iteratively reweighted,
        ``n_iter`` passes) so that a low point does not get a spuriously high weight.
    quadratic : bool
        Add the second-order term c/k^2 (needs >= 4 distinct k); see the module docstring.

    Returns
    -------
    FloorFit

    Examples
    --------
    >>> k = np.array([1, 2, 5, 10, 50])
    >>> f = fit_floor_plus_slope(k, 0.01 + 0.2 / k, np.full(5, 1e-3))
    >>> round(f.floor, 6), round(f.b, 6)
    (0.01, 0.2)
    """
    # chi2.sf is scipy.special.chdtrc: the same routine, without importing scipy.stats (about a
    # second per process, more than the OLS sweeps whose figures call this)
    from scipy.special import chdtrc

    k = np.asarray(k, dtype=float)
    v = np.asarray(v, dtype=float)
    if k.ndim != 1 or v.shape != k.shape:
        raise ValueError(f"k, v: expected two 1-d arrays of one length, got shapes {k.shape} and {v.shape}")
    if not (np.all(np.isfinite(k)) and np.all(k > 0)):
        raise ValueError(f"k: expected finite values > 0, got {k}")
    if len(np.unique(k)) < 3:
        raise ValueError(f"k: a floor + b/k fit with a goodness of fit needs >= 3 distinct k, got {np.unique(k)}")
    if not np.all(np.isfinite(v)):
        raise ValueError("v: expected finite variances")
    if (se is None) == (rel_se is None):
        raise ValueError("se, rel_se: expected exactly one of them")
    if quadratic and len(np.unique(k)) < 4:
        raise ValueError(f"k: a floor + b/k + c/k^2 fit with a goodness of fit needs >= 4 distinct k, got {np.unique(k)}")
    A = np.c_[np.ones_like(k), 1.0 / k, 1.0 / k**2] if quadratic else np.c_[np.ones_like(k), 1.0 / k]  # (m, 2|3)

    def solve(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = 1.0 / s**2
        M = A.T @ (w[:, None] * A)
        cov = np.linalg.inv(M)
        return cov @ (A.T @ (w * v)), cov

    if se is not None:
        s = np.asarray(se, dtype=float)
        if s.shape != k.shape or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"se: expected finite values > 0 of shape {k.shape}, got {s}")
        coef, cov = solve(s)
    else:
        if not (np.isfinite(rel_se) and rel_se > 0):
            raise ValueError(f"rel_se: expected a finite number > 0, got {rel_se}")
        s = rel_se * np.maximum(np.abs(v), 1e-300)
        coef, cov = solve(s)
        for _ in range(n_iter):
            fitted = A @ coef
            s = rel_se * np.maximum(np.abs(fitted), 1e-3 * np.max(np.abs(v)) + 1e-300)
            coef, cov = solve(s)
    resid = (v - A @ coef) / s
    chi2 = float(np.sum(resid**2))
    dof = len(k) - A.shape[1]
    scale = float(np.sqrt(max(1.0, chi2 / dof)))
    cov = cov * scale**2
    extra = dict(c=float(coef[2]), c_se=float(np.sqrt(cov[2, 2]))) if quadratic else {}
    return FloorFit(floor=float(coef[0]), b=float(coef[1]), floor_se=float(np.sqrt(cov[0, 0])),
                    b_se=float(np.sqrt(cov[1, 1])), cov=cov, chi2=chi2, df=dof,
                    p_value=float(chdtrc(dof, chi2)), scale=scale, n_points=len(k), **extra)


def fit_floor_rows(g: Any, quadratic: bool = False) -> FloorFit:
    """:func:`fit_floor_plus_slope` on a table's rows of one group: ``k``, ``inter_student_var`` and, where finite,
    its ``inter_student_var_se``."""
    g = g.sort_values("k")
    k = g["k"].to_numpy(dtype=float)
    v = g["inter_student_var"].to_numpy(dtype=float)
    if "inter_student_var_se" in g and np.all(np.isfinite(g["inter_student_var_se"].to_numpy(dtype=float))):
        return fit_floor_plus_slope(k, v, g["inter_student_var_se"].to_numpy(dtype=float), quadratic=quadratic)
    return fit_floor_plus_slope(k, v, rel_se=relative_variance_se(int(g["n_students"].min())), quadratic=quadratic)


def decomposition_table(df: Any, method: str = "averaging", by: tuple[str, ...] = ("noise", "alpha"),
                        level: float = 0.95) -> Any:
    """One row per group of a k-sweep: floor and b with intervals, the floor's share at k = 1, the fit;
    with >= 4 values of k also the second-order fit (columns ``q_*``: floor, b, c with c's interval, chi2).

    Reads ``k``, ``inter_student_var``, ``n_students`` and, when present, ``inter_student_var_se``
    (jackknife SEs; otherwise the conservative :func:`relative_variance_se`, labelled in ``se_source``).
    Groups with fewer than three k values are left out.
    """
    import pandas as pd

    d = df[df["method"] == method] if "method" in df else df
    by = tuple(c for c in by if c in d)
    rows = []
    for key, g in (d.groupby(list(by), sort=False) if by else [((), d)]):
        if g["k"].nunique() < 3:
            continue
        f = fit_floor_rows(g)
        key = key if isinstance(key, tuple) else (key,)
        (flo, fhi), (blo, bhi) = f.interval("floor", level), f.interval("b", level)
        has_se = "inter_student_var_se" in g and bool(np.all(np.isfinite(g["inter_student_var_se"])))
        rows.append({**dict(zip(by, key)), "method": method, "floor": f.floor, "floor_lo": flo, "floor_hi": fhi,
                     "b": f.b, "b_lo": blo, "b_hi": bhi, "floor_share_k1": f.floor / (f.floor + f.b),
                     "chi2": f.chi2, "df": f.df, "p_value": f.p_value, "n_k": f.n_points,
                     "se_source": "jackknife" if has_se else "sqrt(2/(R-1)) bound"})
        if g["k"].nunique() >= 4:  # second order: floor + b/k + c/k^2 (nonlinear students, large noise)
            q = fit_floor_rows(g, quadratic=True)
            (clo, chi) = q.interval("c", level)
            rows[-1].update({"q_floor": q.floor, "q_b": q.b, "q_c": q.c, "q_c_lo": clo, "q_c_hi": chi,
                             "q_chi2": q.chi2, "q_df": q.df, "q_p_value": q.p_value})
    return pd.DataFrame(rows)


