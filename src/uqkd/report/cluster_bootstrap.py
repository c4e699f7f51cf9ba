r"""A crossed (two-way) cluster bootstrap over students and questions, for the LLM claims.

An LLM result is a students x questions table per method: every student answers every question,
and the methods answer the same questions. Answers of one student are correlated (a student
effect) and so are the answers of different students to one question (a question effect), so the
``n_students x n_questions`` answers are not independent draws. The bootstrap here resamples
both crossed factors (the pigeonhole / two-way bootstrap of McCullagh 2000, Owen 2007):

- students with replacement, independently within each method (students of different methods
  are independent fits);
- questions with replacement, one draw shared by all the methods compared (they answer the same
  questions, so this pairs the comparison by question).

A resample's mean of a (students x questions) table with student counts :math:`c_s` and question
counts :math:`c_q` is :math:`c_s^\top Y c_q / (S Q)`, so ``n_boot`` resamples cost two count
matrices and one ``einsum``. Statistics are functions of such means (differences, ratios, slopes).
Intervals are percentile intervals of the resampled statistic (ratios on the log scale). The crossed
bootstrap is conservative for the residual (student x question) noise, which it picks up from both
factors (up to about three times its variance; McCullagh 2000), and with few students it slightly
understates the between-student spread (by about :math:`(S-1)/S`); the MDE text inherits both.

Seeds come from the claim's identity (:func:`uqkd._seeding.make_rng`), so a table gives the same
interval, byte for byte, every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._seeding import make_rng
from .claims import INCONCLUSIVE, POWER, Comparison, NotComputable, mde_text, mde_two_sample, verdict_from_interval

__all__ = ["N_BOOT", "resample_counts", "crossed_means", "bootstrap_comparison", "pooled_mean_interval", "difference",
           "ratio", "slope"]

#: resamples per interval
N_BOOT = 2000


def resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n)`` counts of each of ``n`` units in ``n_boot`` resamples with replacement."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def crossed_means(tables: Sequence[np.ndarray], identity: Sequence[Any], n_boot: int = N_BOOT,
                  resample_students: Sequence[bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates and crossed-bootstrap resamples of the grand means of ``tables``.

    Parameters
    ----------
    tables : sequence of arrays (S_g, Q)
        One students x questions table per group (method, temperature, model); every table has the
        same ``Q`` questions in the same order. A one-model reference (the teacher, the untrained
        student, a per-question inter-student variance) is a (1, Q) table.
    identity : sequence
        Names the comparison (claim id, split, label, ...): the seed.
    resample_students : sequence of bool, optional
        Per group, whether to resample its rows (default: every group with two or more rows).

    Returns
    -------
    (estimate (G,), resamples (n_boot, G))
    """
    ys = [np.asarray(t, dtype=float) for t in tables]
    if not ys:
        raise NotComputable("no groups to compare")
    q = {y.shape[1] for y in ys}
    if len(q) != 1:
        raise NotComputable(f"the groups compared answer different numbers of questions ({sorted(q)})")
    (nq,) = q
    for y in ys:
        if not np.all(np.isfinite(y)):
            raise NotComputable("a per-question value is NaN or infinite")
    if nq < 2:
        raise NotComputable(f"needs at least two questions (got {nq})")
    rng = make_rng(0, "crossed-bootstrap", *[str(x) for x in identity])
    cq = resample_counts(rng, nq, n_boot)  # shared by every group: paired by question
    flags = list(resample_students) if resample_students is not None else [y.shape[0] >= 2 for y in ys]
    est, boot = [], []
    for y, flag in zip(ys, flags, strict=True):
        s = y.shape[0]
        cs = resample_counts(rng, s, n_boot) if flag and s >= 2 else np.ones((n_boot, s))
        est.append(float(y.mean()))
        boot.append(np.einsum("bs,sq,bq->b", cs, y, cq) / (s * nq))
    return np.array(est), np.stack(boot, axis=1)


#: relative size below which a resampled statistic's deviation from the threshold is rounding error
REL_TOL = 1e-10


def bootstrap_comparison(label: str, estimate: float, resamples: np.ndarray, direction: str, *, level: float = 0.95,
                         ratio: bool = False, n: Any = "", unit: str = "", scale: float | None = None) -> Comparison:
    """A percentile interval of ``resamples`` and its verdict (a ratio against 1 on the log scale, else 0).

    ``scale`` is the size of the values the statistic is formed from (default: the largest
    ``|resample|``; ratios: 1): deviations from the threshold below ``REL_TOL * scale`` are rounding
    error and count as 0, so identical groups never "hold" by a last-bit difference.
    Raises :class:`NotComputable` when the statistic or a resample is not finite (a ratio whose
    reference is 0) or when the resamples have no spread (nothing varies: no interval).
    """
    b = np.asarray(resamples, dtype=float)
    if not np.isfinite(estimate):
        raise NotComputable(f"{label}: the statistic is {estimate}")
    if ratio:
        scale = 1.0
    elif scale is None:
        scale = float(np.nanmax(np.abs(b))) if b.size and np.isfinite(b).any() else 0.0
    if ratio:
        if not estimate > 0:
            raise NotComputable(f"{label}: a ratio of non-positive values ({estimate:.3g})")
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.log(b)
    bad = int(np.sum(~np.isfinite(b)))
    if bad:
        raise NotComputable(f"{label}: {bad} of {len(b)} resamples have a zero or undefined reference "
                            "(too few questions with a non-zero value)")
    tol = REL_TOL * max(float(scale), np.finfo(float).tiny)
    b = np.where(np.abs(b) <= tol, 0.0, b)
    se = float(b.std(ddof=1))
    if not se > 0:
        raise NotComputable(f"{label}: no spread across students or questions (every resample gives the same "
                            "value): no interval")
    a = 1 - level
    lo, hi = (float(x) for x in np.quantile(b, [a / 2, 1 - a / 2]))
    v = verdict_from_interval(lo, hi, direction, 0.0)
    mde = ""
    if v == INCONCLUSIVE:
        d = mde_two_sample(se, a, POWER, None)
        mde = mde_text(float(np.exp(-d if direction == "<" else d)) if ratio else d, n, unit, ratio=ratio)
    if ratio:
        return Comparison(label, float(estimate), float(np.exp(lo)), float(np.exp(hi)), v, mde, ratio=True)
    return Comparison(label, float(estimate), lo, hi, v, mde)


def pooled_mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Normal interval of a mean treating every entry of ``values`` as an independent draw (the wrong unit
    for clustered answers; for comparison only)."""
    from scipy.stats import norm

    v = np.asarray(values, dtype=float).ravel()
    se = float(v.std(ddof=1) / np.sqrt(v.size))
    q = float(norm.ppf(1 - (1 - level) / 2))
    return float(v.mean() - q * se), float(v.mean() + q * se)


def difference(est: np.ndarray, boot: np.ndarray, i: int = 0, j: int = 1) -> tuple[float, np.ndarray]:
    """``group i - group j``: estimate and resamples."""
    return float(est[i] - est[j]), boot[:, i] - boot[:, j]


def ratio(est: np.ndarray, boot: np.ndarray, i: int = 0, j: int = 1) -> tuple[float, np.ndarray]:
    """``group i / group j``: estimate and resamples (inf / NaN where a resample's reference is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (float(est[i] / est[j]) if est[j] != 0 else float("nan")), boot[:, i] / boot[:, j]


def slope(x: np.ndarray, est: np.ndarray, boot: np.ndarray) -> tuple[float, np.ndarray]:
    """Least-squares slope of the group means on ``x``: estimate and resamples."""
    x = np.asarray(x, dtype=float)
    xc = x - x.mean()
    sxx = float(np.sum(xc**2))
    if not sxx > 0:
        raise NotComputable("a slope needs at least two distinct x values")
    return float(np.sum(xc * est) / sxx), (boot @ xc) / sxx


Statistic = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]
