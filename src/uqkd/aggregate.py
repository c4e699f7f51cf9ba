r"""Aggregating k teacher responses: averaging, variance estimates, inverse-variance weighting.

Vocabulary: ``teacher_samples`` has shape ``(n_inputs, k, ...)``: k draws of the teacher's
answer for each input. Functions whose names end in ``_from_moments`` work on the
per-input summaries (mean of the k draws, their sample variance) and broadcast over any
leading batch axes, e.g. ``(n_students, n_inputs)`` when many students are distilled at once.

Two families of variance-weighted distillation labels live here:

* **paper-oracle** (:func:`paper_oracle_labels`): the published rule. It uses the
  noise-free teacher mean and the true noise variance, which a user never has.
* **oracle-free** (:func:`inverse_variance_sample_weights`, :func:`shrinkage_labels`):
  use only the k teacher draws and the student's own (cross-fitted) predictions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ._validation import check_array, check_int, check_teacher_samples, check_variances

__all__ = [
    "average",
    "sample_variance",
    "pooled_variance",
    "estimate_prior_df",
    "shrunk_variance",
    "shrunk_variance_from_moments",
    "inverse_variance_weights",
    "inverse_variance_combine",
    "paper_oracle_labels",
    "inverse_variance_sample_weights",
    "crossfit_variance",
    "shrinkage_labels",
]


def average(teacher_samples: np.ndarray) -> np.ndarray:
    r"""Mean of the k teacher draws per input, :math:`\bar y_i = \frac1k \sum_j y_{ij}`.

    Parameters
    ----------
    teacher_samples : array of shape (n_inputs, k, ...)

    Returns
    -------
    array of shape (n_inputs, ...)
        Under independent draws with variance :math:`\sigma_i^2`, its variance is
        :math:`\sigma_i^2 / k`.

    Examples
    --------
    >>> average(np.array([[1.0, 3.0], [2.0, 2.0]])).tolist()
    [2.0, 2.0]
    """
    ts = check_teacher_samples(teacher_samples)
    return ts.mean(axis=1)


def sample_variance(teacher_samples: np.ndarray, ddof: int = 1) -> np.ndarray:
    r"""Per-input sample variance of the k draws, :math:`s_i^2 = \frac{1}{k-\mathrm{ddof}}\sum_j (y_{ij}-\bar y_i)^2`.

    Parameters
    ----------
    teacher_samples : array of shape (n_inputs, k, ...)
    ddof : int
        Delta degrees of freedom; ``k`` must exceed it.

    Returns
    -------
    array of shape (n_inputs, ...)
    """
    ts = check_teacher_samples(teacher_samples)
    ddof = check_int(ddof, "ddof", min_value=0)
    k = ts.shape[1]
    if k <= ddof:
        raise ValueError(f"teacher_samples: sample variance with ddof={ddof} needs k > {ddof}, got k={k}")
    return ts.var(axis=1, ddof=ddof)


def pooled_variance(teacher_samples: np.ndarray) -> np.ndarray:
    r"""Pooled within-input variance :math:`s_p^2 = \frac{\sum_i \sum_j (y_{ij}-\bar y_i)^2}{n(k-1)}`.

    Unbiased for :math:`\sigma^2` under homoscedastic noise. Needs k >= 2.

    Returns
    -------
    array of shape ``teacher_samples.shape[2:]`` (a scalar for scalar responses)
    """
    return sample_variance(teacher_samples, ddof=1).mean(axis=0)


def estimate_prior_df(s2: np.ndarray, k: int, axis: int = -1) -> np.ndarray:
    r"""Method-of-moments prior degrees of freedom for empirical-Bayes variance shrinkage.

    Model: :math:`\sigma_i^2 \sim s_0^2\,\nu_0/\chi^2_{\nu_0}` (scaled inverse chi-square)
    and :math:`s_i^2 \mid \sigma_i^2 \sim \sigma_i^2 \chi^2_{k-1}/(k-1)`. Then
    :math:`\mathrm{Var}(s^2) = \frac{2(\tau + m^2)}{k-1} + \tau` with
    :math:`\tau = \mathrm{Var}(\sigma^2)`, :math:`m = E[s^2]`, and for the prior
    :math:`\tau = 2 m^2 / (\nu_0 - 4)`. Solving gives
    :math:`\nu_0 = 4 + 2m^2/\hat\tau`; :math:`\hat\tau \le 0` (no detectable
    heteroscedasticity) gives :math:`\nu_0 = \infty`, i.e. full pooling.

    Parameters
    ----------
    s2 : array
        Sample variances (ddof=1), the inputs along ``axis``.
    k : int
        Draws per input (>= 2).
    """
    k = check_int(k, "k", min_value=2)
    m = s2.mean(axis=axis, keepdims=True)
    v = s2.var(axis=axis, ddof=1, keepdims=True) if s2.shape[axis] > 1 else np.zeros_like(m)
    df = k - 1
    tau = (v - 2.0 * m**2 / df) / (1.0 + 2.0 / df)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu0 = np.where(tau > 0, 4.0 + 2.0 * m**2 / np.where(tau > 0, tau, 1.0), np.inf)
    return nu0


def shrunk_variance_from_moments(
    s2: np.ndarray, k: int, prior_df: float | Literal["auto"] = "auto", axis: int = -1
) -> np.ndarray:
    r"""Empirical-Bayes shrinkage of per-input variances towards their pooled value.

    .. math:: \tilde s_i^2 = \frac{(k-1)\, s_i^2 + \nu_0\, s_p^2}{(k-1) + \nu_0}

    with :math:`s_p^2` the mean of the :math:`s_i^2` along ``axis`` and :math:`\nu_0` from
    :func:`estimate_prior_df` when ``prior_df="auto"``. ``prior_df=0`` keeps the raw
    per-input variances; ``prior_df=inf`` pools completely.

    Parameters
    ----------
    s2 : array
        Per-input sample variances (ddof=1); inputs along ``axis``. Leading axes are batches.
    k : int
        Draws per input, >= 2.
    """
    k = check_int(k, "k", min_value=2)
    s2 = check_variances(s2, "s2")
    sp = s2.mean(axis=axis, keepdims=True)
    if isinstance(prior_df, str):
        if prior_df != "auto":
            raise ValueError(f"prior_df: expected a non-negative number or 'auto', got {prior_df!r}")
        nu0 = estimate_prior_df(s2, k, axis=axis)
    else:
        if not (prior_df >= 0):
            raise ValueError(f"prior_df: expected a non-negative number or 'auto', got {prior_df!r}")
        nu0 = np.full_like(sp, float(prior_df))
    df = k - 1.0
    finite = np.isfinite(nu0)
    nu = np.where(finite, nu0, 0.0)
    shrunk = (df * s2 + nu * sp) / (df + nu)
    return np.where(finite, shrunk, np.broadcast_to(sp, s2.shape))


def shrunk_variance(teacher_samples: np.ndarray, prior_df: float | Literal["auto"] = "auto") -> np.ndarray:
    """Per-input variance of the k draws shrunk towards the pooled variance.

    See :func:`shrunk_variance_from_moments` for the estimator. Needs k >= 2.

    Returns
    -------
    array of shape (n_inputs, ...)
    """
    ts = check_teacher_samples(teacher_samples)
    s2 = sample_variance(ts, ddof=1)
    return shrunk_variance_from_moments(s2, ts.shape[1], prior_df=prior_df, axis=0)


def _precisions(v: np.ndarray, axis: int) -> np.ndarray:
    """Normalised inverse-variance weights along ``axis``; zero variances take all the weight."""
    zero = v == 0
    any_zero = np.any(zero, axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        prec = np.where(zero, 0.0, 1.0 / np.where(zero, 1.0, v))
    prec = np.where(any_zero, zero.astype(float), prec)
    return prec / prec.sum(axis=axis, keepdims=True)


def inverse_variance_weights(variances: np.ndarray) -> np.ndarray:
    r"""Normalised inverse-variance weights :math:`w_j = v_j^{-1} / \sum_l v_l^{-1}` along axis 0.

    Parameters
    ----------
    variances : array of shape (m, ...)
        Variances of m unbiased estimates; non-negative and finite. An estimate with
        zero variance takes all the weight (shared equally among zero-variance estimates).

    Returns
    -------
    array of shape (m, ...), summing to one along axis 0.

    Examples
    --------
    >>> inverse_variance_weights(np.array([1.0, 3.0])).tolist()
    [0.75, 0.25]
    """
    v = check_variances(variances, "variances")
    if v.ndim < 1:
        raise ValueError(f"variances: expected shape (m, ...) with m >= 1, got {v.shape}")
    return _precisions(v, axis=0)


def inverse_variance_combine(
    estimates: np.ndarray,
    variances: np.ndarray,
    kind: Literal["auto", "elementwise", "covariance"] = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    r"""Minimum-variance unbiased combination of m independent unbiased estimates.

    Elementwise (scalars or per-point arrays):

    .. math:: \hat\mu = \frac{\sum_j \hat\mu_j / v_j}{\sum_j 1/v_j},\qquad
              \mathrm{Var}(\hat\mu) = \Big(\sum_j 1/v_j\Big)^{-1}.

    Covariance form, for vector estimates with covariances :math:`\Sigma_j`:

    .. math:: \hat\mu = \Big(\sum_j \Sigma_j^{-1}\Big)^{-1} \sum_j \Sigma_j^{-1}\hat\mu_j,\qquad
              \mathrm{Cov}(\hat\mu) = \Big(\sum_j \Sigma_j^{-1}\Big)^{-1}.

    Parameters
    ----------
    estimates : array of shape (m, ...) or (m, p)
    variances : array of shape (m, ...) (elementwise) or (m, p, p) (covariance matrices)
    kind : {"auto", "elementwise", "covariance"}
        ``auto`` picks covariance when ``variances`` has one more axis than ``estimates``.

    Returns
    -------
    combined : array of shape (...) or (p,)
    combined_variance : array of shape (...) or (p, p)

    Examples
    --------
    >>> est, var = inverse_variance_combine(np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    >>> float(est), float(var)
    (0.5, 0.5)
    """
    est = check_array(estimates, "estimates")
    var = check_array(variances, "variances")
    if est.ndim < 1:
        raise ValueError(f"estimates: expected shape (m, ...) with m >= 1, got {est.shape}")
    if kind == "auto":
        kind = "covariance" if (var.ndim == est.ndim + 1 and est.ndim == 2) else "elementwise"
    if kind == "elementwise":
        if var.shape != est.shape:
            raise ValueError(
                f"variances: expected the shape of estimates {est.shape} (elementwise), got {var.shape}"
            )
        check_variances(var, "variances")
        w = _precisions(var, axis=0)
        combined = (w * est).sum(axis=0)
        zero = np.any(var == 0, axis=0)
        with np.errstate(divide="ignore"):
            total_prec = np.where(zero, np.inf, (1.0 / np.where(var == 0, 1.0, var)).sum(axis=0))
        return combined, np.where(zero, 0.0, 1.0 / total_prec)
    if kind != "covariance":
        raise ValueError(f"kind: expected one of auto, elementwise, covariance; got {kind!r}")
    if est.ndim != 2:
        raise ValueError(f"estimates: expected shape (m, p) for covariance combination, got {est.shape}")
    m, p = est.shape
    if var.shape != (m, p, p):
        raise ValueError(f"variances: expected covariance matrices of shape ({m}, {p}, {p}), got {var.shape}")
    if not np.allclose(var, np.swapaxes(var, 1, 2), rtol=1e-10, atol=1e-12):
        raise ValueError("variances: expected symmetric covariance matrices")
    try:
        np.linalg.cholesky(var)
    except np.linalg.LinAlgError:
        raise ValueError("variances: expected positive-definite covariance matrices") from None
    precs = np.linalg.inv(var)  # (m, p, p)
    total = precs.sum(axis=0)  # (p, p)
    cov = np.linalg.inv(total)
    combined = cov @ np.einsum("mij,mj->i", precs, est)
    return combined, 0.5 * (cov + cov.T)


def paper_oracle_labels(
    teacher_mean_k: np.ndarray,
    teacher_var_k: np.ndarray,
    teacher_mean_true: np.ndarray,
    noise_var: float | np.ndarray,
) -> np.ndarray:
    r"""**paper-oracle** variance-weighted label (the published rule; uses oracle information).

    .. math:: \tilde y_i = \alpha_T\, \bar y_i + \alpha_S\, \mu_T(x_i),\qquad
              \alpha_T = \frac{1/\hat\sigma_T^2(x_i)}{1/\hat\sigma_T^2(x_i) + 1/\sigma^2},\quad
              \alpha_S = 1 - \alpha_T

    where :math:`\bar y_i` is the mean of the k teacher draws, :math:`\hat\sigma_T^2(x_i)` their
    per-point variance (uqkd passes numpy's default ddof=0, so k=1 gives zero variance and
    the label is the single draw), :math:`\mu_T` the **noise-free teacher mean** and
    :math:`\sigma^2` the **true noise variance**. Both are oracle quantities: a user
    distilling a real teacher has neither. Kept for parity with the paper only.

    All arguments broadcast together, e.g. ``(n_students, n_inputs)``.
    """
    tv = np.asarray(teacher_var_k, dtype=float)
    nv = np.asarray(noise_var, dtype=float)
    if np.any(tv < 0) or np.any(nv < 0):
        raise ValueError("teacher_var_k, noise_var: expected non-negative variances")
    # alpha_T = (1/tv) / (1/tv + 1/nv) = nv / (nv + tv); tv = 0 gives 1, nv = 0 (and tv > 0) gives 0.
    den = nv + tv
    with np.errstate(invalid="ignore", divide="ignore"):
        a_t = np.where(den > 0, nv / np.where(den > 0, den, 1.0), 1.0)
    return a_t * teacher_mean_k + (1.0 - a_t) * teacher_mean_true


def inverse_variance_sample_weights(
    teacher_var: np.ndarray | None, k: int, prior_df: float | Literal["auto"] = "auto", axis: int = -1
) -> np.ndarray:
    r"""**oracle-free** per-input loss weights :math:`w_i = k / \tilde s_i^2` for weighted least squares.

    :math:`\tilde s_i^2` is the per-input sample variance of the k teacher draws shrunk
    towards the pooled variance (:func:`shrunk_variance_from_moments`), so
    :math:`\tilde s_i^2/k` estimates :math:`\mathrm{Var}(\bar y_i)`. With k = 1 there is no
    per-input information and every weight is one (ordinary least squares).

    Parameters
    ----------
    teacher_var : array or None
        Sample variances (ddof=1) of the k draws, inputs along ``axis``; ignored when k = 1.
    k : int
        Draws per input.

    Returns
    -------
    array like ``teacher_var`` (ones of shape 1 when k = 1)
    """
    k = check_int(k, "k", min_value=1)
    if k == 1:
        return np.ones(1) if teacher_var is None else np.ones_like(np.asarray(teacher_var, dtype=float))
    v = shrunk_variance_from_moments(np.asarray(teacher_var, dtype=float), k, prior_df=prior_df, axis=axis)
    floor = 1e-12 * np.maximum(v.mean(axis=axis, keepdims=True), 1e-300)
    return k / np.maximum(v, floor)


def crossfit_variance(
    teacher_mean_k: np.ndarray, student_pred_cv: np.ndarray, mean_var: np.ndarray, axis: int = -1
) -> np.ndarray:
    r"""**oracle-free** moment estimate of the error variance of a cross-fitted student prediction.

    With :math:`\bar y_i = \mu_i + e_i` (:math:`\mathrm{Var}\,e_i = v_i`) and a cross-fitted
    prediction :math:`f_{-i}` independent of :math:`e_i`,
    :math:`E(\bar y_i - f_{-i})^2 = v_i + E(f_{-i}-\mu_i)^2`, so

    .. math:: \hat\tau^2 = \max\Big(\overline{(\bar y - f_{-})^2} - \bar v,\ 10^{-3}\,\bar v\Big)

    averaged along ``axis`` (over inputs). Returns shape with ``axis`` kept as length 1.
    """
    resid2 = np.mean((teacher_mean_k - student_pred_cv) ** 2, axis=axis, keepdims=True)
    vbar = np.mean(mean_var, axis=axis, keepdims=True)
    return np.maximum(resid2 - vbar, 1e-3 * np.maximum(vbar, 1e-300))


def shrinkage_labels(
    teacher_mean_k: np.ndarray,
    mean_var: np.ndarray,
    student_pred_cv: np.ndarray,
    student_var: np.ndarray,
) -> np.ndarray:
    r"""**oracle-free** shrinkage of each teacher mean towards a cross-fitted student prediction.

    The oracle-free counterpart of :func:`paper_oracle_labels`: the noise-free teacher mean
    is replaced by a student fitted without input i (cross-fitting), and the true noise
    variance by estimates.

    .. math:: \tilde y_i = \frac{\bar y_i / \hat v_i + f_{-i}(x_i)/\hat\tau^2}{1/\hat v_i + 1/\hat\tau^2}

    with :math:`\hat v_i` the (shrunk) variance of :math:`\bar y_i` and :math:`\hat\tau^2`
    from :func:`crossfit_variance`. All arguments broadcast.
    """
    v = np.maximum(np.asarray(mean_var, dtype=float), 1e-300)
    t = np.maximum(np.asarray(student_var, dtype=float), 1e-300)
    return (teacher_mean_k / v + student_pred_cv / t) / (1.0 / v + 1.0 / t)
