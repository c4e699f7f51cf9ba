r"""Metrics: evaluation error, inter-/intra-student variance, predictive entropy, calibration.

Vocabulary: ``y_pred`` of shape ``(n_students, n_inputs, ...)`` holds every student's
predictions; ``y_true`` of shape ``(n_inputs, ...)``. Functions return floats or dicts
keyed by short names.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_array

__all__ = [
    "mse",
    "student_mse",
    "inter_student_var",
    "inter_student_var_se",
    "paired_variance_ratio",
    "covariance_match_test",
    "intra_student_var",
    "predictive_entropy",
    "expected_calibration_error",
    "negative_log_likelihood",
    "regression_summary",
    "classification_summary",
]


def _check_students(y_pred: np.ndarray) -> np.ndarray:
    yp = check_array(y_pred, "y_pred")
    if yp.ndim < 2:
        raise ValueError(f"y_pred: expected shape (n_students, n_inputs, ...), got {yp.shape}")
    return yp


def mse(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """Mean squared error of one prediction vector, :math:`\\frac1n\\sum_i (\\hat y_i - y_i)^2`."""
    yp = check_array(y_pred, "y_pred")
    yt = check_array(y_true, "y_true")
    if yp.shape != yt.shape:
        raise ValueError(f"y_pred: expected the shape of y_true {yt.shape}, got {yp.shape}")
    return float(np.mean((yp - yt) ** 2))


def student_mse(y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Per-student MSE, shape (n_students,), for ``y_pred`` (n_students, n_inputs, ...)."""
    yp = _check_students(y_pred)
    yt = check_array(y_true, "y_true")
    if yp.shape[1:] != yt.shape:
        raise ValueError(f"y_true: expected shape {yp.shape[1:]} to match y_pred {yp.shape}, got {yt.shape}")
    return ((yp - yt) ** 2).reshape(yp.shape[0], -1).mean(axis=1)


def inter_student_var(y_pred: np.ndarray) -> float:
    r"""Inter-student variance: per input, variance across students (ddof=1), summed over
    output dimensions, averaged over inputs.

    .. math:: \frac1n \sum_i \sum_d \widehat{\mathrm{Var}}_r\big(\hat y^{(r)}_{i d}\big)

    Parameters
    ----------
    y_pred : array of shape (n_students, n_inputs, ...), n_students >= 2
    """
    yp = _check_students(y_pred)
    if yp.shape[0] < 2:
        raise ValueError(f"y_pred: inter-student variance needs n_students >= 2, got {yp.shape[0]}")
    v = yp.var(axis=0, ddof=1)  # (n_inputs, ...)
    return float(v.reshape(v.shape[0], -1).sum(axis=1).mean())


def inter_student_var_se(y_pred: np.ndarray) -> float:
    r"""Jackknife (leave-one-student-out) standard error of :func:`inter_student_var`.

    The students are the replicates; leaving student r out changes each per-input sample
    variance to :math:`s^2_{i,-r} = \big((R-1)s^2_i - \tfrac{R}{R-1}(\hat y_{ri} - \bar y_i)^2\big)/(R-2)`,
    so all R leave-one-out statistics cost one pass. The SE accounts for the correlation of the
    inputs (unlike the single-variance bound :math:`\sqrt{2/(R-1)}\,V`).

    Parameters
    ----------
    y_pred : array of shape (n_students, n_inputs, ...), n_students >= 3
    """
    yp = _check_students(y_pred).astype(np.float64)
    R = yp.shape[0]
    if R < 3:
        raise ValueError(f"y_pred: a jackknife standard error needs n_students >= 3, got {R}")
    n = yp.shape[1]  # inputs (the statistic sums over trailing output dimensions d, averages over inputs)
    yp = yp.reshape(R, -1)  # (R, n*d)
    d2 = yp - yp.mean(axis=0)
    d2 *= d2  # squared deviations, (R, n*d)
    # The leave-one-out statistic is linear in d2, so its mean over inputs needs only each
    # student's row sum: v_r = ((R-1) S/n - R/(R-1) rowsum_r/n) / (R-2), S = sum of s^2 over (i, .).
    rows = d2.sum(axis=1)  # (R,)
    v = ((R - 1) * (rows.sum() / (R - 1)) / n - R / (R - 1) * rows / n) / (R - 2)  # (R,)
    return float(np.sqrt((R - 1) / R * np.sum((v - v.mean()) ** 2)))


def paired_variance_ratio(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    r"""Ratio of the mean across-student variance after / before, and the standard error of its log.

    The same R students are measured twice (e.g. parameters before and after training). Student r's
    share of the mean variance is :math:`d_r = \tfrac{R}{R-1}\,\overline{(x_{r\cdot} - \bar x_{\cdot})^2}`
    (its mean over students is the mean sample variance, ddof=1), so the ratio is
    :math:`\bar d^{after} / \bar d^{before}` and, by the delta method with the students as the unit
    and the pairing kept, :math:`\mathrm{SE}(\log) = \mathrm{sd}_r(d^{after}_r/\bar d^{after} -
    d^{before}_r/\bar d^{before}) / \sqrt R` (t on R - 1 df). Unlike an F interval on R - 1 df, it
    counts the many averaged coordinates and the pairing; coverage is checked by simulation in the tests.

    Parameters
    ----------
    before, after : arrays of shape (n_students, ...), the same shape, n_students >= 3
    """
    b = _check_students(before).astype(np.float64).reshape(np.shape(before)[0], -1)
    a = _check_students(after).astype(np.float64).reshape(np.shape(after)[0], -1)
    if a.shape != b.shape:
        raise ValueError(f"after: expected the shape of before {b.shape}, got {a.shape}")
    R = b.shape[0]
    if R < 3:
        raise ValueError(f"before: a paired variance ratio needs n_students >= 3, got {R}")
    db = R / (R - 1) * ((b - b.mean(axis=0)) ** 2).mean(axis=1)
    da = R / (R - 1) * ((a - a.mean(axis=0)) ** 2).mean(axis=1)
    mb, ma = float(db.mean()), float(da.mean())
    if not (mb > 0 and ma > 0):
        return (ma / mb if mb > 0 else float("nan")), float("nan")
    z = da / ma - db / mb
    return ma / mb, float(z.std(ddof=1) / np.sqrt(R))


def covariance_match_test(samples: np.ndarray, cov: np.ndarray) -> dict[str, float]:
    r"""Likelihood-ratio test that R Gaussian draws (rows of ``samples``) have covariance ``cov``.

    With :math:`S` the sample covariance (ddof=1, :math:`n = R-1`) and the whitened
    :math:`W = \Sigma_0^{-1/2} S \Sigma_0^{-1/2}`, the statistic (Anderson, *An Introduction to
    Multivariate Statistical Analysis*, 10.8, with Bartlett's correction)

    .. math:: \lambda = n\,\Big(1 - \frac{2p + 1 - 2/(p+1)}{6n}\Big)\,
              \big(\operatorname{tr} W - \log\det W - p\big)

    is :math:`\chi^2_{p(p+1)/2}` under :math:`\Sigma = \Sigma_0` (survival function
    ``scipy.special.chdtrc``, the routine behind ``scipy.stats.chi2.sf``: importing scipy.stats
    costs a worker process about a second, more than the whole OLS sweep it serves). It tests every
    variance and covariance at once, against a tolerance set by the Monte-Carlo error of S.

    Parameters
    ----------
    samples : array (R, p), R > p + 1
    cov : array (p, p), symmetric positive definite

    Returns
    -------
    dict with ``stat``, ``df``, ``p_value`` and ``scale`` (:math:`\operatorname{tr} W / p`: the
    average variance ratio, Monte Carlo over closed form).
    """
    from scipy.special import chdtrc

    x = check_array(samples, "samples", ndim=2)
    R, p = x.shape
    c = check_array(cov, "cov", ndim=2)
    if c.shape != (p, p):
        raise ValueError(f"cov: expected shape ({p}, {p}) to match samples, got {c.shape}")
    if R <= p + 1:
        raise ValueError(f"samples: expected more than p + 1 = {p + 1} rows, got {R}")
    evals, evecs = np.linalg.eigh((c + c.T) / 2)
    if not evals.min() > 0:
        raise ValueError(f"cov: expected a positive definite matrix, smallest eigenvalue {evals.min():.3g}")
    isqrt = evecs @ np.diag(evals**-0.5) @ evecs.T  # Sigma0^{-1/2}
    n = R - 1
    W = isqrt @ np.cov(x, rowvar=False) @ isqrt  # (p, p)
    sign, logdet = np.linalg.slogdet(W)
    if sign <= 0:
        raise ValueError("samples: the sample covariance is singular")
    corr = 1 - (2 * p + 1 - 2 / (p + 1)) / (6 * n)
    stat = float(n * corr * (np.trace(W) - logdet - p))
    df = p * (p + 1) // 2
    return {"stat": stat, "df": float(df), "p_value": float(chdtrc(df, stat)), "scale": float(np.trace(W) / p)}


def intra_student_var(samples: np.ndarray) -> float:
    r"""Intra-student variance: per student and input, variance across that student's own k
    samples (ddof=1), summed over output dimensions, averaged over inputs and students.

    Parameters
    ----------
    samples : array of shape (n_students, n_inputs, k, ...), k >= 2
    """
    s = check_array(samples, "samples")
    if s.ndim < 3 or s.shape[2] < 2:
        raise ValueError(f"samples: expected shape (n_students, n_inputs, k, ...) with k >= 2, got {s.shape}")
    v = s.var(axis=2, ddof=1)  # (R, n, ...)
    return float(v.reshape(v.shape[0], v.shape[1], -1).sum(axis=2).mean())


def predictive_entropy(proba: np.ndarray) -> np.ndarray:
    r"""Entropy in nats of each predictive distribution, :math:`-\sum_c p_c \log p_c`.

    Parameters
    ----------
    proba : array of shape (..., n_classes), rows summing to one

    Returns
    -------
    array of shape (...)
    """
    p = check_array(proba, "proba", nonnegative=True)
    if p.ndim < 1:
        raise ValueError(f"proba: expected shape (..., n_classes), got {p.shape}")
    s = p.sum(axis=-1)
    if not np.allclose(s, 1.0, atol=1e-4):
        raise ValueError(f"proba: expected rows summing to 1, got sums in [{s.min():.4g}, {s.max():.4g}]")
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
    return ent


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    r"""Expected calibration error with equal-width confidence bins:
    :math:`\sum_b \frac{|B_b|}{n} |\mathrm{acc}(B_b) - \mathrm{conf}(B_b)|`."""
    p = check_array(proba, "proba", ndim=2, nonnegative=True)
    y = np.asarray(y_true)
    if y.shape != (p.shape[0],):
        raise ValueError(f"y_true: expected shape ({p.shape[0]},), got {y.shape}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def negative_log_likelihood(proba: np.ndarray, y_true: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood (nats) of the true class."""
    p = check_array(proba, "proba", ndim=2, nonnegative=True)
    y = np.asarray(y_true, dtype=int)
    if y.shape != (p.shape[0],):
        raise ValueError(f"y_true: expected shape ({p.shape[0]},), got {y.shape}")
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], eps))))


def regression_summary(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """``mse_mean``, ``mse_std`` (across students), ``inter_student_var``, ``n_students``."""
    per = student_mse(y_pred, y_true)
    return {
        "mse_mean": float(per.mean()),
        "mse_std": float(per.std(ddof=1)) if per.size > 1 else 0.0,
        "inter_student_var": inter_student_var(y_pred) if per.size > 1 else 0.0,
        "n_students": int(per.size),
    }


def classification_summary(proba: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """Accuracy, mean predictive entropy overall / on correct / on incorrect, ECE, NLL for one model."""
    p = check_array(proba, "proba", ndim=2, nonnegative=True)
    y = np.asarray(y_true, dtype=int)
    ent = predictive_entropy(p)
    correct = p.argmax(axis=1) == y
    return {
        "accuracy": float(correct.mean()),
        "entropy": float(ent.mean()),
        "entropy_correct": float(ent[correct].mean()) if correct.any() else float("nan"),
        "entropy_incorrect": float(ent[~correct].mean()) if (~correct).any() else float("nan"),
        "ece": expected_calibration_error(p, y),
        "nll": negative_log_likelihood(p, y),
    }
