"""Statistics for verdicts: intervals, tests, minimum detectable effects and verdict combinators.

Pure numpy/scipy, no claim or experiment knowledge: :mod:`uqkd.report.claims` (the claim registry),
:mod:`uqkd.report.crossed` and every claims module import from here.

Intervals use t quantiles (:func:`t_interval`, Welch degrees of freedom from :func:`welch`) and,
for sample variances of few replicates, exact chi-square / F intervals
(:func:`chi2_variance_interval`, :func:`variance_ratio_interval`). :func:`verdict_from_interval`
turns an interval into a verdict, :func:`equivalence_test` checks a closed form within a margin (TOST),
:func:`mde_two_sample` / :func:`mde_variance_ratio` give the minimum detectable effect, :func:`all_of` /
:func:`any_of` combine the verdicts of several components. :func:`difference_test`,
:func:`variance_ratio_test`, :func:`log_ratio_test` and :func:`log_ratio_t` bundle an estimate, its
interval, verdict and MDE text into a :class:`Comparison`; helpers raise :class:`NotComputable` on
NaN/inf inputs, zero spread or too few replicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "HOLDS",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "NOT_COMPUTABLE",
    "CLAIM_VERDICTS",
    "POWER",
    "ALPHA",
    "STRICT_ALPHA",
    "Verdict",
    "NotComputable",
    "Comparison",
    "require_finite",
    "critical_value",
    "t_interval",
    "welch",
    "satterthwaite_df",
    "chi2_variance_interval",
    "variance_ratio_interval",
    "verdict_from_interval",
    "mde_two_sample",
    "mde_variance_ratio",
    "mde_text",
    "all_of",
    "any_of",
    "difference_test",
    "equivalence_test",
    "variance_ratio_test",
    "log_ratio_test",
    "log_ratio_t",
    "fmt_interval",
    "loglog_slope",
    "weighted_slope",
    "log_variance_se",
    "first_mde",
    "bonferroni_level",
]

HOLDS = "holds"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_COMPUTABLE = "not computable"
#: verdicts a claim's test may return
CLAIM_VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_COMPUTABLE)
POWER = 0.8
ALPHA = 0.05
STRICT_ALPHA = 0.001


class NotComputable(Exception):
    """Raised by a claim (or a helper) when a statistic its verdict needs cannot be formed."""


@dataclass(frozen=True)
class Verdict:
    """A verdict with what the report prints beside it.

    Attributes
    ----------
    verdict : str
        One of :data:`CLAIM_VERDICTS`.
    mde : str
        Minimum-detectable-effect text (shown beside ``inconclusive``).
    why : str
        Why the statistic could not be computed (``not computable``).
    """

    verdict: str
    mde: str = ""
    why: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in CLAIM_VERDICTS:
            raise ValueError(f"verdict: expected one of {', '.join(CLAIM_VERDICTS)}; got {self.verdict!r}")

    def __str__(self) -> str:
        return self.verdict


def require_finite(**values: float) -> None:
    """Raise :class:`NotComputable` naming the first value that is NaN or infinite."""
    for name, v in values.items():
        if not np.all(np.isfinite(np.asarray(v, dtype=float))):
            raise NotComputable(f"{name} is NaN or infinite")


def critical_value(level: float = 0.95, df: float | None = None) -> float:
    """Two-sided critical value: ``t.ppf(1 - (1 - level) / 2, df)``, the normal one when ``df`` is None/inf."""
    from scipy.stats import norm, t

    q = 1 - (1 - level) / 2
    if df is None or not np.isfinite(df):
        return float(norm.ppf(q))
    if not df > 0:
        raise NotComputable(f"degrees of freedom {df} (need at least two replicates)")
    return float(t.ppf(q, df))


def t_interval(estimate: float, se: float, df: float | None = None, level: float = 0.95) -> tuple[float, float]:
    """``estimate ± t_{1-(1-level)/2, df} · se`` (normal quantile when ``df`` is None)."""
    require_finite(estimate=estimate, standard_error=se)
    q = critical_value(level, df)
    return float(estimate - q * se), float(estimate + q * se)


def satterthwaite_df(ses: Sequence[float], dfs: Sequence[float]) -> float:
    """Welch-Satterthwaite degrees of freedom of ``sqrt(sum se_i^2)``."""
    ses, dfs = np.asarray(ses, float), np.asarray(dfs, float)
    num = np.sum(ses**2) ** 2
    den = np.sum(np.where(ses > 0, ses**4 / np.maximum(dfs, 1e-300), 0.0))
    return float(num / den) if den > 0 else float("inf")


def welch(m1: float, sd1: float, n1: int, m2: float, sd2: float, n2: int) -> tuple[float, float, float]:
    """``(m1 - m2, its standard error, Welch degrees of freedom)`` from means, SDs (ddof=1) and counts.

    Raises :class:`NotComputable` if a group has fewer than two replicates or both have zero spread.
    """
    require_finite(mean_1=m1, mean_2=m2, sd_1=sd1, sd_2=sd2)
    if n1 < 2 or n2 < 2:
        raise NotComputable(f"needs at least two replicates per group (got {n1} and {n2})")
    a, b = sd1**2 / n1, sd2**2 / n2
    se = float(np.sqrt(a + b))
    if se == 0:
        raise NotComputable("zero spread across replicates in both groups: no interval")
    return float(m1 - m2), se, satterthwaite_df([np.sqrt(a), np.sqrt(b)], [n1 - 1, n2 - 1])


def chi2_variance_interval(s2: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact interval for a normal variance from the sample variance ``s2`` (ddof=1) of ``n`` draws."""
    from scipy.stats import chi2

    require_finite(sample_variance=s2)
    if n < 2:
        raise NotComputable(f"a variance needs at least two replicates (got {n})")
    a, d = 1 - level, n - 1
    return float(d * s2 / chi2.ppf(1 - a / 2, d)), float(d * s2 / chi2.ppf(a / 2, d))


def variance_ratio_interval(ratio: float, df1: float, df2: float, level: float = 0.95) -> tuple[float, float]:
    """Exact (F) interval for ``sigma_1^2 / sigma_2^2`` from the ratio of two independent sample variances."""
    from scipy.stats import f

    require_finite(variance_ratio=ratio)
    if df1 < 1 or df2 < 1:
        raise NotComputable(f"a variance ratio needs at least two replicates per group (df {df1}, {df2})")
    a = 1 - level
    return float(ratio / f.ppf(1 - a / 2, df1, df2)), float(ratio / f.ppf(a / 2, df1, df2))


def verdict_from_interval(lo: float, hi: float, direction: str, threshold: float = 0.0) -> str:
    """``holds`` if ``[lo, hi]`` lies on the claimed side of ``threshold``, ``contradicted`` if entirely on the other.

    ``direction`` is ``">"`` (the claim says the quantity exceeds the threshold) or ``"<"``.
    NaN/inf bounds give ``not computable``.
    """
    if direction not in (">", "<"):
        raise ValueError(f"direction: expected '>' or '<', got {direction!r}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return NOT_COMPUTABLE
    if direction == ">":
        return HOLDS if lo > threshold else CONTRADICTED if hi < threshold else INCONCLUSIVE
    return HOLDS if hi < threshold else CONTRADICTED if lo > threshold else INCONCLUSIVE


def mde_two_sample(se: float, alpha: float = ALPHA, power: float = POWER, df: float | None = None,
                   sided: int = 2) -> float:
    """Minimum detectable effect of a test with standard error ``se``: ``(q_{1-alpha/sided} + q_power) · se``.

    t quantiles with ``df`` degrees of freedom (normal when None); ``sided=2`` matches a verdict
    read from a two-sided ``1 - alpha`` interval.
    """
    from scipy.stats import norm, t

    if df is None or not np.isfinite(df):
        return float((norm.ppf(1 - alpha / sided) + norm.ppf(power)) * se)
    return float((t.ppf(1 - alpha / sided, df) + t.ppf(power, df)) * se)


def mde_variance_ratio(df1: float, df2: float, direction: str, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true variance ratio (``"<"``: below 1; ``">"``: above 1) the F interval detects with ``power``."""
    from scipy.stats import f

    if direction == "<":
        return float(f.ppf(alpha / 2, df1, df2) / f.ppf(power, df1, df2))
    return float(f.ppf(1 - alpha / 2, df1, df2) / f.ppf(1 - power, df1, df2))


def mde_text(mde: float, n: Any, unit: str = "students/method", power: float = POWER, ratio: bool = False) -> str:
    """``"MDE 0.012 at 3 students/method, 80% power"`` (``ratio``: ``"MDE ratio x0.71 ..."``)."""
    if not np.isfinite(mde):
        return ""
    eff = f"ratio x{mde:.3g}" if ratio else f"{abs(mde):.3g}"
    return f"MDE {eff} at {n} {unit}, {power:.0%} power"


def fmt_interval(lo: float, hi: float) -> str:
    return f"[{lo:.4g}, {hi:.4g}]"


@dataclass(frozen=True)
class Comparison:
    """One directional comparison: its estimate, interval, verdict and minimum detectable effect."""

    label: str
    estimate: float
    lo: float
    hi: float
    verdict: str
    mde: str = ""
    ratio: bool = False
    why: str = ""  # for ``not computable``: the reason

    @classmethod
    def not_computable(cls, label: str, why: str) -> Comparison:
        return cls(label, float("nan"), float("nan"), float("nan"), NOT_COMPUTABLE, why=why)

    def text(self) -> str:
        if self.verdict == NOT_COMPUTABLE:
            return f"{self.label} could not be computed: {self.why}"
        est = f"x{self.estimate:.3g}" if self.ratio else f"{self.estimate:+.4g}"
        return f"{self.label} {est} {fmt_interval(self.lo, self.hi)}"


def difference_test(label: str, estimate: float, se: float, df: float | None, direction: str, *,
                    level: float = 0.95, threshold: float = 0.0, n: Any = "", unit: str = "students/method") -> Comparison:
    """A t interval for a difference (or slope) and its verdict against ``threshold``."""
    lo, hi = t_interval(estimate, se, df, level)
    v = verdict_from_interval(lo, hi, direction, threshold)
    mde = mde_text(mde_two_sample(se, 1 - level, POWER, df), n, unit) if v == INCONCLUSIVE else ""
    return Comparison(label, float(estimate), lo, hi, v, mde)


def variance_ratio_test(label: str, v1: float, v2: float, df1: float, df2: float, direction: str, *,
                        level: float = 0.95, n: Any = "", unit: str = "students/cell") -> Comparison:
    """Exact F interval for the ratio ``v1 / v2`` of two sample variances; verdict against 1."""
    require_finite(**{f"{label} numerator": v1, f"{label} denominator": v2})
    if not v2 > 0:
        raise NotComputable(f"{label}: the reference variance is {v2}")
    r = v1 / v2
    lo, hi = variance_ratio_interval(r, df1, df2, level)
    v = verdict_from_interval(lo, hi, direction, 1.0)
    mde = mde_text(mde_variance_ratio(df1, df2, direction, 1 - level), n, unit, ratio=True) if v == INCONCLUSIVE else ""
    return Comparison(label, float(r), lo, hi, v, mde, ratio=True)


def log_ratio_t(label: str, ratio: float, se_log: float, df: float | None, direction: str, level: float = 0.95,
                n: Any = "", threshold: float = 1.0, unit: str = "students/cell") -> Comparison:
    """A t interval for a ratio from the standard error of its log; verdict against ``threshold`` (default 1).

    A zero ``se_log`` (nothing moved: identical before and after) gives the point as its interval.
    """
    if not (ratio > 0 and np.isfinite(ratio)):
        raise NotComputable(f"{label}: the ratio is {ratio}")
    if not se_log >= 0 or not np.isfinite(se_log):
        raise NotComputable(f"{label}: the standard error is {se_log}")
    lr = float(np.log(ratio))
    if se_log == 0:
        lo = hi = lr
    else:
        lo, hi = t_interval(lr, se_log, df, level)
    v = verdict_from_interval(lo, hi, direction, float(np.log(threshold)))
    mde = ""
    if v == INCONCLUSIVE:
        d = mde_two_sample(se_log, 1 - level, POWER, df)
        mde = mde_text(float(threshold * np.exp(-d if direction == "<" else d)), n, unit, ratio=True)
    return Comparison(label, float(ratio), float(np.exp(lo)), float(np.exp(hi)), v, mde, ratio=True)


def log_ratio_test(label: str, v1: float, se1: float, df1: float, v2: float, se2: float, df2: float, direction: str,
                   *, level: float = 0.95, n: Any = "", unit: str = "questions") -> Comparison:
    """Delta-method interval for ``v1 / v2`` on the log scale, from each value's standard error
    (Satterthwaite df); the interval and verdict of :func:`log_ratio_t`."""
    require_finite(**{f"{label} numerator": v1, f"{label} denominator": v2, f"{label} SEs": [se1, se2]})
    if not (v1 > 0 and v2 > 0):
        raise NotComputable(f"{label}: a ratio of non-positive values ({v1:.3g} / {v2:.3g})")
    a, b = se1 / v1, se2 / v2
    se = float(np.hypot(a, b))
    if se == 0:
        raise NotComputable(f"{label}: zero standard errors")
    return log_ratio_t(label, v1 / v2, se, satterthwaite_df([a, b], [df1, df2]), direction, level, n, unit=unit)


def equivalence_test(label: str, estimate: float, se: float, df: float | None, target: float, margin: float, *,
                     m: int = 1, alpha: float = ALPHA, n: Any = "", unit: str = "students/cell") -> Comparison:
    """Agreement as equivalence (two one-sided tests, TOST) of ``estimate`` with ``target`` within ``margin``.

    ``holds`` when the ``1 - 2 alpha/m`` interval lies inside ``[target - margin, target + margin]`` (both
    one-sided tests reject a difference of ``margin`` or more, Bonferroni over ``m`` comparisons);
    ``contradicted`` when the two-sided ``1 - alpha/m`` interval lies entirely outside that band (the
    estimate differs from the target by more than the margin); else ``inconclusive``, with the smallest
    margin the run could establish (80% power at a true difference of 0) as the MDE text. A wider
    interval can never turn a verdict into ``holds`` (unlike "fails to reject agreement").
    """
    require_finite(estimate=estimate, standard_error=se, margin=margin)
    if not margin > 0:
        raise ValueError(f"margin: expected a positive number, got {margin!r}")
    lo, hi = t_interval(estimate, se, df, 1 - 2 * alpha / m)
    lo2, hi2 = t_interval(estimate, se, df, 1 - alpha / m)
    band = (target - margin, target + margin)
    if band[0] <= lo and hi <= band[1]:
        v = HOLDS
    elif hi2 < band[0] or lo2 > band[1]:
        v = CONTRADICTED
    else:
        v = INCONCLUSIVE
    mde = ""
    if v == INCONCLUSIVE:
        from scipy.stats import norm, t

        q = (t.ppf(1 - alpha / m, df) + t.ppf(1 - (1 - POWER) / 2, df)) if df and np.isfinite(df) else (
            norm.ppf(1 - alpha / m) + norm.ppf(1 - (1 - POWER) / 2))
        mde = f"equivalence margin {margin:.3g}; this run could establish {float(q * se):.3g} at {n} {unit}, 80% power"
    return Comparison(label, float(estimate), lo, hi, v, mde)


def all_of(verdicts: Iterable[str]) -> str:
    """A conjunction: ``contradicted`` if any part is, else ``not computable`` if any part is, else
    ``holds`` if all hold, else ``inconclusive``."""
    vs = [str(v) for v in verdicts]
    if not vs:
        return NOT_COMPUTABLE
    if CONTRADICTED in vs:
        return CONTRADICTED
    if NOT_COMPUTABLE in vs:
        return NOT_COMPUTABLE
    return HOLDS if all(v == HOLDS for v in vs) else INCONCLUSIVE


def any_of(verdicts: Iterable[str]) -> str:
    """An alternative ("some method does it"): ``holds`` if any part holds, ``contradicted`` if all are,
    ``not computable`` if a part is (and none holds), else ``inconclusive``."""
    vs = [str(v) for v in verdicts]
    if not vs:
        return NOT_COMPUTABLE
    if HOLDS in vs:
        return HOLDS
    if all(v == CONTRADICTED for v in vs):
        return CONTRADICTED
    return NOT_COMPUTABLE if NOT_COMPUTABLE in vs else INCONCLUSIVE


def first_mde(tests: Iterable[Comparison]) -> str:
    """The MDE text of the first inconclusive test (what to show beside an inconclusive verdict)."""
    return next((t.mde for t in tests if t.verdict == INCONCLUSIVE and t.mde), "")


def log_variance_se(n: int) -> float:
    """Standard deviation of ``log s^2`` for a sample variance of ``n`` normal draws: sqrt(trigamma((n-1)/2)).

    For an average of per-input variances over correlated inputs it is an upper bound.
    """
    from scipy.special import polygamma

    if n < 2:
        raise NotComputable(f"a variance needs at least two replicates (got {n})")
    return float(np.sqrt(polygamma(1, (n - 1) / 2)))


def weighted_slope(x: np.ndarray, y: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares slope of ``y`` on ``x`` with known per-point SEs; returns (slope, its SE)."""
    x, y, se = (np.asarray(a, float) for a in (x, y, se))
    require_finite(x=x, y=y, standard_errors=se)
    if len(x) < 2 or np.ptp(x) == 0:
        raise NotComputable(f"a slope needs at least two distinct x values (got {len(x)})")
    if np.any(se <= 0):
        raise NotComputable("a point has zero standard error")
    w = 1 / se**2
    xm = np.sum(w * x) / np.sum(w)
    sxx = float(np.sum(w * (x - xm) ** 2))
    b = float(np.sum(w * (x - xm) * y) / sxx)
    return b, float(np.sqrt(1 / sxx))


def loglog_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log y on log x and its (residual) standard error."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    A = np.c_[np.ones_like(lx), lx]
    coef, res, *_ = np.linalg.lstsq(A, ly, rcond=None)
    dof = max(len(lx) - 2, 1)
    s2 = float(np.sum((ly - A @ coef) ** 2)) / dof
    se = float(np.sqrt(s2 * np.linalg.inv(A.T @ A)[1, 1]))
    return float(coef[1]), se


def bonferroni_level(m: int, alpha: float = ALPHA) -> float:
    """Confidence level of each of ``m`` intervals for a family-wise ``1 - alpha``."""
    return 1 - alpha / max(int(m), 1)
