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
    "dispersion_sample_df",
    "shrunk_variance",
    "shrunk_variance_from_moments",
    "inverse_variance_weights",
    "inverse_variance_combine",
    "paper_oracle_labels",
    "inverse_variance_sample_weights",
    "crossfit_variance",
    "shrinkage_labels",
    "neyman_allocation",
    "allocate_budget",
    "shrunk_variance_unequal_k",
    "allocate_budget_two_stage",
]


def _check_axis(axis: object, ndim: int, name: str = "axis") -> int:
    """``axis`` as an int in ``[-ndim, ndim)``, else a ValueError/TypeError naming it."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer axis, got {axis!r}")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"{name}: expected an axis in [{-ndim}, {ndim - 1}] for a {ndim}-d array, got {axis}")
    return int(axis)


def _check_broadcast(ref_name: str, ref: np.ndarray, **others: np.ndarray) -> None:
    """Every array in ``others`` must broadcast to ``ref``'s shape (never enlarge it, e.g. (3,) with (3, 1))."""
    for name, arr in others.items():
        try:
            shape = np.broadcast_shapes(ref.shape, arr.shape)
        except ValueError:
            shape = None
        if shape != ref.shape:
            raise ValueError(f"{name}: shape {arr.shape} does not broadcast to the shape of {ref_name} {ref.shape}"
                             + ("" if shape is None else f" (together they give {shape})"))


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


def estimate_prior_df(s2: np.ndarray, k: int, axis: int = -1, sample_df: float | None = None) -> np.ndarray:
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
    axis : int
        The inputs' axis.
    sample_df : float, optional
        Degrees of freedom of each :math:`s_i^2` (default :math:`k - 1`, a scalar variance). A sum
        of per-dimension variances (an embedding dispersion) has more: see
        :func:`dispersion_sample_df`.
    """
    k = check_int(k, "k", min_value=2)
    s2 = check_variances(s2, "s2")
    if s2.ndim == 0:
        raise ValueError(f"s2: expected an array of per-input variances, got shape {s2.shape}")
    axis = _check_axis(axis, s2.ndim)
    m = s2.mean(axis=axis, keepdims=True)
    v = s2.var(axis=axis, ddof=1, keepdims=True) if s2.shape[axis] > 1 else np.zeros_like(m)
    df = _sample_df(sample_df, k)
    tau = (v - 2.0 * m**2 / df) / (1.0 + 2.0 / df)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu0 = np.where(tau > 0, 4.0 + 2.0 * m**2 / np.where(tau > 0, tau, 1.0), np.inf)
    return nu0


def _sample_df(sample_df: float | None, k: int) -> float:
    if sample_df is None:
        return k - 1.0
    if not (np.isfinite(sample_df) and sample_df >= k - 1):
        raise ValueError(f"sample_df: expected a finite number >= k - 1 = {k - 1}, got {sample_df!r}")
    return float(sample_df)


def dispersion_sample_df(samples: np.ndarray) -> float:
    r"""Effective degrees of freedom of per-input dispersions (sums of per-dimension variances).

    ``samples`` has shape (n_inputs, k, d): k draws per input of a d-dimensional quantity (SBERT
    embeddings). Each input's dispersion :math:`s_i^2 = \operatorname{tr}\hat\Sigma_i` is, by
    Satterthwaite, :math:`\sigma_i^2 \chi^2_
u/
u` with
    :math:`
u = (k-1)(\operatorname{tr}\Sigma)^2/\operatorname{tr}(\Sigma^2)`, not the
    :math:`k-1` of a scalar variance: with :math:`k - 1` the shrinkage mistakes the small spread of
    the :math:`s_i^2` for pure sampling noise and pools everything. :math:`\Sigma` is the pooled
    within-input covariance, :math:`\operatorname{tr}(\Sigma^2)` estimated without the
    :math:`(\operatorname{tr}\hat\Sigma)^2/N` bias of the plug-in (N = n(k-1) pooled degrees of
    freedom); the result is clipped to :math:`[k-1, (k-1)d]`.
    """
    x = np.asarray(samples, dtype=float)
    if x.ndim != 3 or x.shape[1] < 2:
        raise ValueError(f"samples: expected shape (n_inputs, k >= 2, d), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples: expected finite values")
    n, k, d = x.shape
    c = (x - x.mean(axis=1, keepdims=True)).reshape(n * k, d)
    big_n = n * (k - 1)
    cov = c.T @ c / big_n  # (d, d) pooled within-input covariance
    tr = float(np.trace(cov))
    if tr <= 0:
        return float(k - 1)
    tr2 = float((cov * cov).sum())
    tr2_unbiased = big_n**2 / ((big_n - 1) * (big_n + 2)) * (tr2 - tr**2 / big_n) if big_n > 1 else tr2
    tr2_unbiased = max(tr2_unbiased, tr**2 / d)  # tr(S^2) >= (tr S)^2 / d
    return float(np.clip((k - 1) * tr**2 / tr2_unbiased, k - 1, (k - 1) * d))


def shrunk_variance_from_moments(
    s2: np.ndarray, k: int, prior_df: float | Literal["auto"] = "auto", axis: int = -1,
    sample_df: float | None = None,
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
    if s2.ndim == 0:
        raise ValueError(f"s2: expected an array of per-input variances, got shape {s2.shape}")
    axis = _check_axis(axis, s2.ndim)
    sp = s2.mean(axis=axis, keepdims=True)
    if isinstance(prior_df, str):
        if prior_df != "auto":
            raise ValueError(f"prior_df: expected a non-negative number or 'auto', got {prior_df!r}")
        nu0 = estimate_prior_df(s2, k, axis=axis, sample_df=sample_df)
    else:
        if not (prior_df >= 0):
            raise ValueError(f"prior_df: expected a non-negative number or 'auto', got {prior_df!r}")
        nu0 = np.full_like(sp, float(prior_df))
    df = _sample_df(sample_df, k)
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


def _relative_precisions(v: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``(vmin / v, vmin)`` along ``axis``, ``vmin`` the smallest positive variance (1 where there is none).

    Every ratio lies in [0, 1], so variances near the float limits (1e-320, 1e300) neither overflow
    nor give inf / inf; zero variances get ratio 0 (the caller gives them the weight).
    """
    pos = v > 0
    vmin = np.min(np.where(pos, v, np.inf), axis=axis, keepdims=True)
    vmin = np.where(np.isfinite(vmin), vmin, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        rel = np.where(pos, vmin / np.where(pos, v, 1.0), 0.0)
    return rel, vmin


def _precisions(v: np.ndarray, axis: int) -> np.ndarray:
    """Normalised inverse-variance weights along ``axis``; zero variances take all the weight."""
    zero = v == 0
    any_zero = np.any(zero, axis=axis, keepdims=True)
    rel, _ = _relative_precisions(v, axis)
    prec = np.where(any_zero, zero.astype(float), rel)
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
        rel, vmin = _relative_precisions(var, axis=0)  # 1 / sum(1/v) = vmin / sum(vmin/v), no overflow
        return combined, np.where(zero, 0.0, vmin[0] / np.where(zero, 1.0, rel.sum(axis=0)))
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

    The other arguments broadcast to the shape of ``teacher_mean_k``, e.g. ``(n_students, n_inputs)``
    with ``teacher_mean_true`` of shape ``(1, n_inputs)``; an argument that would enlarge it (a
    ``(3, 1)`` variance with ``(3,)`` means) is a ValueError. Variances must be finite and
    non-negative, means finite.
    """
    mk = check_array(teacher_mean_k, "teacher_mean_k")
    tv = check_variances(teacher_var_k, "teacher_var_k")
    mt = check_array(teacher_mean_true, "teacher_mean_true")
    nv = check_variances(noise_var, "noise_var")
    _check_broadcast("teacher_mean_k", mk, teacher_var_k=tv, teacher_mean_true=mt, noise_var=nv)
    teacher_mean_k, teacher_mean_true = mk, mt
    # alpha_T = (1/tv) / (1/tv + 1/nv) = nv / (nv + tv); tv = 0 gives 1, nv = 0 (and tv > 0) gives 0.
    # Written with out= buffers (same operations in the same order, so the same bits as
    # ``a_t * mk + (1 - a_t) * mt``): two (R, n) temporaries instead of seven.
    den = np.add(nv, tv)
    a_t = np.divide(nv, den, out=np.ones(np.broadcast_shapes(nv.shape, tv.shape)), where=den > 0)
    out = np.multiply(a_t, teacher_mean_k)
    np.subtract(1.0, a_t, out=a_t)
    a_t *= teacher_mean_true
    out += a_t
    return out


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

    Notes
    -----
    Zero variances: a batch whose variances are all zero along ``axis`` (the k draws agree on every
    input) carries no information on which input is more reliable and gets equal weights ``k``
    (weighted least squares is then ordinary least squares), not infinite ones. Within a batch,
    shrunk variances are floored at ``1e-12`` times their mean. Variances so small that ``k / s^2``
    overflows are a ValueError (rescale the labels).
    """
    k = check_int(k, "k", min_value=1)
    if k == 1:
        if teacher_var is None:
            return np.ones(1)
        return np.ones_like(check_array(teacher_var, "teacher_var", finite=False, min_size=0))
    if teacher_var is None:
        raise ValueError(f"teacher_var: expected the sample variances of the k={k} draws, got None")
    s2 = check_variances(teacher_var, "teacher_var")
    return _weights_from_shrunk_variance(shrunk_variance_from_moments(s2, k, prior_df=prior_df, axis=axis), k, s2, axis)


def _weights_from_shrunk_variance(v: np.ndarray, k: int, s2: np.ndarray, axis: int = -1) -> np.ndarray:
    """The weights of :func:`inverse_variance_sample_weights` from its shrunk variances ``v`` (raw ``s2``, for errors).

    For callers that already hold ``v`` (:func:`uqkd.methods.method_targets` shares it between
    methods); ``v`` and ``s2`` are not checked again.
    """
    mean = v.mean(axis=axis, keepdims=True)
    floor = 1e-12 * mean
    with np.errstate(divide="ignore", over="ignore"):
        w = np.where(mean > 0, k / np.maximum(v, np.where(mean > 0, floor, 1.0)), float(k))
    if not np.all(np.isfinite(w)):
        raise ValueError(f"teacher_var: variances as small as {float(np.min(s2[s2 > 0])):.3g} overflow the "
                         "weights k / s^2; rescale the labels")
    return w


def crossfit_variance(
    teacher_mean_k: np.ndarray, student_pred_cv: np.ndarray, mean_var: np.ndarray, axis: int = -1
) -> np.ndarray:
    r"""**oracle-free** moment estimate of the error variance of a cross-fitted student prediction.

    With :math:`\bar y_i = \mu_i + e_i` (:math:`\mathrm{Var}\,e_i = v_i`) and a cross-fitted
    prediction :math:`f_{-i}` independent of :math:`e_i`,
    :math:`E(\bar y_i - f_{-i})^2 = v_i + E(f_{-i}-\mu_i)^2`, so

    .. math:: \hat\tau^2 = \max\Big(\overline{(\bar y - f_{-})^2} - \bar v,\ 10^{-3}\,\bar v\Big)

    averaged along ``axis`` (over inputs). Returns shape with ``axis`` kept as length 1.
    ``student_pred_cv`` and ``mean_var`` (finite, non-negative) broadcast to the shape of
    ``teacher_mean_k``.
    """
    teacher_mean_k = check_array(teacher_mean_k, "teacher_mean_k")
    student_pred_cv = check_array(student_pred_cv, "student_pred_cv")
    mean_var = check_variances(mean_var, "mean_var")
    _check_broadcast("teacher_mean_k", teacher_mean_k, student_pred_cv=student_pred_cv, mean_var=mean_var)
    if teacher_mean_k.ndim == 0:
        raise ValueError(f"teacher_mean_k: expected an array of inputs, got shape {teacher_mean_k.shape}")
    axis = _check_axis(axis, teacher_mean_k.ndim)
    mean_var = np.broadcast_to(mean_var, teacher_mean_k.shape)
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
    from :func:`crossfit_variance`. The other arguments broadcast to the shape of ``teacher_mean_k``
    (e.g. ``student_var`` of shape ``(n_students, 1)``); variances are finite and non-negative.
    Computed as the convex combination :math:`\bar y_i + \frac{\hat v_i}{\hat v_i + \hat\tau^2}
    (f_{-i} - \bar y_i)`, which neither overflows nor divides by zero.
    """
    ym = check_array(teacher_mean_k, "teacher_mean_k")
    v = check_variances(mean_var, "mean_var")
    f = check_array(student_pred_cv, "student_pred_cv")
    t = check_variances(student_var, "student_var")
    _check_broadcast("teacher_mean_k", ym, mean_var=v, student_pred_cv=f, student_var=t)
    den = v + t
    with np.errstate(invalid="ignore", divide="ignore"):
        # both zero: no information either way; keep the teacher mean
        share = np.where(den > 0, v / np.where(den > 0, den, 1.0), 0.0)
    return ym + share * (f - ym)


# --------------------------------------------------------------------------- budget allocation


def _check_allocation_args(
    variances: np.ndarray, budget: int, weights: np.ndarray | None, min_per_input: int
) -> tuple[np.ndarray, int, int]:
    """Validate and return ``(a, budget, min_per_input)`` with ``a = weights * variances`` of shape (..., n)."""
    v = check_variances(variances, "variances")
    if v.ndim < 1:
        raise ValueError(f"variances: expected shape (..., n_inputs) with n_inputs >= 1, got {v.shape}")
    m = check_int(min_per_input, "min_per_input", min_value=1)
    n = v.shape[-1]
    budget = check_int(budget, "budget", min_value=n * m)
    if weights is None:
        return v, budget, m
    w = check_array(weights, "weights", nonnegative=True)
    try:
        a = np.broadcast_to(w, v.shape) * v
    except ValueError:
        raise ValueError(f"weights: expected a shape that broadcasts to variances {v.shape}, got {w.shape}") from None
    return a, budget, m


def neyman_allocation(
    variances: np.ndarray, budget: int, weights: np.ndarray | None = None, *, min_per_input: int = 1
) -> np.ndarray:
    r"""Continuous optimal allocation of ``budget`` teacher draws (Neyman allocation with water-filling).

    Minimises the propagated variance of averaged labels :math:`V(k) = \sum_i c_i\sigma_i^2/k_i`
    over real :math:`k_i \ge m` with :math:`\sum_i k_i = B`. The KKT conditions give

    .. math:: k_i = \max\big(m,\ \lambda\,\sigma_i\sqrt{c_i}\big),

    with :math:`\lambda` set by the budget: inputs whose Neyman share :math:`\propto\sigma_i\sqrt{c_i}`
    falls below the floor are clamped at ``min_per_input`` and the rest share what is left in
    proportion to :math:`\sigma_i\sqrt{c_i}` (water-filling, solved exactly from the sorted shares).

    Parameters
    ----------
    variances : array of shape (..., n_inputs)
        Per-input teacher noise variances :math:`\sigma_i^2` (one draw); leading axes are batches.
    budget : int
        Total draws :math:`B \ge n\,m` per batch row.
    weights : array broadcastable to ``variances``, optional
        Influence :math:`c_i \ge 0` of input i on the quantity of interest (default: ones).
        See :func:`uqkd.theory.allocation_weights` for the OLS student.
    min_per_input : int
        Floor :math:`m \ge 1`.

    Returns
    -------
    array of float, shape of ``variances``; each row sums to ``budget``. A row with every
    :math:`c_i\sigma_i^2 = 0` gets the uniform allocation ``budget / n``.

    Examples
    --------
    >>> neyman_allocation(np.array([1.0, 4.0, 0.0]), 9).tolist()
    [2.6666666666666665, 5.333333333333333, 1.0]
    """
    a, B, m = _check_allocation_args(variances, budget, weights, min_per_input)
    n = a.shape[-1]
    s = np.sqrt(a).reshape(-1, n)  # (N, n)
    order = np.argsort(-s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, axis=1)  # descending (N, n)
    cums = np.cumsum(ss, axis=1)  # (N, n)
    j = np.arange(1, n + 1)
    nxt = np.concatenate([ss[:, 1:], np.zeros((ss.shape[0], 1))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = (B - m * (n - j))[None, :] / cums  # (N, n): level if the top j inputs are unclamped
        ok = (lam * nxt <= m) & (cums > 0)
        first = np.argmax(ok, axis=1)  # smallest valid j - 1
        lam_star = lam[np.arange(ss.shape[0]), first]  # (N,)
        k = np.maximum(m, lam_star[:, None] * s)
    zero = ~np.any(ok, axis=1)  # every share is zero
    k[zero] = B / n
    return k.reshape(a.shape)


def _gain(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Marginal gain a / (t (t + 1)) of the (t+1)-th draw at an input holding t >= 1 draws."""
    return a / (t * (t + 1.0))


def _count_above(a: np.ndarray, tau: np.ndarray, m: int, cap: int) -> np.ndarray:
    """Per input, the number of marginal gains a/(t(t+1)), t = m, m+1, ..., strictly above ``tau``.

    The float gains are non-increasing in t, so these terms form a prefix of each input's
    sequence; the count is exact (a closed-form guess corrected by direct comparisons).
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        q = a / tau
        t = np.floor((np.sqrt(1.0 + 4.0 * q) - 1.0) / 2.0)
    t = np.clip(np.nan_to_num(t, nan=0.0, posinf=cap), 0, cap + 1)  # ~ largest t with gain(t) > tau
    for _ in range(2):
        t = np.where(_gain(a, t + 1.0) > tau, t + 1.0, t)
    for _ in range(3):
        t = np.where((t >= 1) & (_gain(a, np.maximum(t, 1.0)) <= tau), t - 1.0, t)
    return np.clip(t - m + 1, 0, cap).astype(np.int64)


def allocate_budget(
    variances: np.ndarray, budget: int, weights: np.ndarray | None = None, *, min_per_input: int = 1
) -> np.ndarray:
    r"""Optimal integer allocation of a budget of teacher draws over inputs.

    Minimises the propagated variance of the averaged labels,

    .. math:: V(k) = \sum_i \frac{a_i}{k_i},\qquad a_i = c_i\,\sigma_i^2,

    over integers :math:`k_i \ge m` with :math:`\sum_i k_i = B` exactly. The continuous optimum
    is the Neyman allocation :math:`k_i \propto \sigma_i\sqrt{c_i}` (:func:`neyman_allocation`);
    this function returns an exact integer optimum.

    **Why the greedy rule is optimal.** Let :math:`g_i(t) = a_i/t - a_i/(t+1) = a_i/(t(t+1))`
    be the variance removed by giving input i its (t+1)-th draw. Because :math:`a/k` is convex,
    :math:`g_i(t)` is non-increasing in t. For any feasible k,

    .. math:: V(k) = \sum_i \frac{a_i}{m} - \sum_i \sum_{t=m}^{k_i-1} g_i(t),

    so V is a constant minus the sum of :math:`R = B - nm` gains, input i contributing the first
    :math:`k_i - m` terms of its own sequence. No R terms of the pooled multiset sum to more
    than its R largest, and since every sequence is non-increasing the R largest (ties broken
    by position in the sequence) are a prefix of each sequence, i.e. a feasible allocation.
    Hence "give each successive draw to the input with the largest marginal gain" (greedy,
    started from :math:`k_i = m`) is exactly optimal. Rounding the continuous optimum is
    **not**: :math:`a = (100, 2.56, 2.56, 2.56, 2.56, 2.56)`, :math:`B = 18` has the continuous
    optimum :math:`(10, 1.6, \ldots, 1.6)` but the integer optimum :math:`(9, 2, 2, 2, 2, 1)`:
    a fix-up of the floored continuous solution must also be able to take draws away.

    Instead of R heap steps this finds the R-th largest gain :math:`\tau` by bisection on
    :math:`\log\tau` (vectorised over batch rows): every input takes all its gains above
    :math:`\tau` and the remaining draws go to the largest next gains. The result equals the
    greedy allocation (up to ties, which leave V unchanged).

    Parameters
    ----------
    variances : array of shape (..., n_inputs)
        Per-input teacher noise variances (one draw), >= 0; leading axes are batches (e.g. one
        row per student when each student estimates its own variances).
    budget : int
        Total draws per batch row, >= ``n_inputs * min_per_input``.
    weights : array broadcastable to ``variances``, optional
        Influence :math:`c_i \ge 0` of each input on the quantity of interest (default ones:
        :math:`k_i \propto \sigma_i`). For an OLS student see :func:`uqkd.theory.allocation_weights`.
    min_per_input : int
        Floor :math:`m \ge 1` on every :math:`k_i`.

    Returns
    -------
    array of int64, shape of ``variances``; each row sums to ``budget``. Rows with every
    :math:`a_i = 0` (nothing to gain) get the budget spread as evenly as possible.

    Examples
    --------
    >>> allocate_budget(np.array([1.0, 4.0, 0.0]), 9).tolist()
    [3, 5, 1]
    >>> allocate_budget(np.ones(4), 12).tolist()
    [3, 3, 3, 3]
    """
    a, B, m = _check_allocation_args(variances, budget, weights, min_per_input)
    shape = a.shape
    n = shape[-1]
    a = a.reshape(-1, n)  # (N, n)
    N = a.shape[0]
    R = B - n * m  # draws above the floor
    k = np.full((N, n), m, dtype=np.int64)
    if R == 0:
        return k.reshape(shape)
    amax = a.max(axis=1, keepdims=True)  # (N, 1)
    pos = amax[:, 0] > 0
    # Rows with nothing to gain: spread evenly (any allocation is optimal).
    if np.any(~pos):
        even = np.full(n, m + R // n, dtype=np.int64)
        even[: R % n] += 1
        k[~pos] = even
    if not np.any(pos):
        return k.reshape(shape)
    ap, amp = a[pos], amax[pos]
    hi = amp / (m * (m + 1.0))  # no gain exceeds it: S(hi) = 0 <= R
    lo = amp / ((m + R) * (m + R + 1.0)) / 2.0  # the largest input alone has R + 1 gains above it
    c_hi = _count_above(ap, hi, m, R)
    c_lo = _count_above(ap, lo, m, R)
    for _ in range(400):
        active = (c_lo - c_hi).max(axis=1) > 1  # some input still has two gains in (lo, hi]
        if not np.any(active):
            break
        mid = np.sqrt(lo[active] * hi[active])
        c_mid = _count_above(ap[active], mid, m, R)
        go_lo = c_mid.sum(axis=1) >= R  # at least R gains above mid: the R-th largest is above it
        idx = np.nonzero(active)[0]
        lo[idx[go_lo]] = mid[go_lo]
        c_lo[idx[go_lo]] = c_mid[go_lo]
        hi[idx[~go_lo]] = mid[~go_lo]
        c_hi[idx[~go_lo]] = c_mid[~go_lo]
    else:  # pragma: no cover - the interval shrinks geometrically
        raise RuntimeError("allocate_budget: threshold search did not converge")
    kp = m + c_hi  # every gain above hi taken; S(hi) <= R
    r = R - c_hi.sum(axis=1)  # (Np,) draws left, <= number of inputs with one gain in (lo, hi]
    eligible = (c_lo - c_hi) == 1
    nxt = np.where(eligible, _gain(ap, kp.astype(float)), -np.inf)  # (Np, n)
    order = np.argsort(-nxt, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(len(order), axis=0), axis=1)
    kp = kp + (rank < r[:, None])
    k[pos] = kp
    return k.reshape(shape)


def shrunk_variance_unequal_k(
    s2: np.ndarray, k: np.ndarray | int, prior_df: float | Literal["auto"] = "auto", axis: int = -1
) -> np.ndarray:
    r"""Empirical-Bayes shrinkage of per-input variances when inputs have different numbers of draws.

    The generalisation of :func:`shrunk_variance_from_moments` to :math:`d_i = k_i - 1`
    degrees of freedom per input:

    .. math:: \tilde s_i^2 = \frac{d_i\, s_i^2 + \nu_0\, s_p^2}{d_i + \nu_0},\qquad
              s_p^2 = \frac{\sum_i d_i s_i^2}{\sum_i d_i},

    and, for ``prior_df="auto"``, the method of moments of :func:`estimate_prior_df` with
    :math:`2/(k-1)` replaced by its input average :math:`2h`, :math:`h = \overline{1/d_i}`:
    :math:`\hat\tau = (v - 2m^2 h)/(1 + 2h)`, :math:`\nu_0 = 4 + 2m^2/\hat\tau` (:math:`\infty`
    when :math:`\hat\tau \le 0`), with m, v the mean and variance of the :math:`s_i^2`. Inputs
    with a single draw (:math:`d_i = 0`) carry no variance information and get :math:`s_p^2`.
    With every :math:`k_i` equal this is exactly :func:`shrunk_variance_from_moments`.

    Parameters
    ----------
    s2 : array
        Per-input sample variances (ddof=1) of the :math:`k_i` draws; inputs along ``axis``
        (the value where :math:`k_i = 1` is ignored). Leading axes are batches.
    k : int or int array broadcastable to ``s2``
        Draws per input, >= 1; at least two inputs per row need :math:`k_i \ge 2`.
    """
    s2 = check_variances(s2, "s2")
    kk = np.asarray(k)
    if kk.dtype.kind not in "iu" and not (kk.dtype.kind == "f" and np.all(kk == np.round(kk))):
        raise TypeError(f"k: expected integer draw counts, got dtype {kk.dtype}")
    if np.any(kk < 1):
        raise ValueError(f"k: expected draw counts >= 1, got minimum {int(np.min(kk))}")
    try:
        d = np.broadcast_to(kk.astype(float) - 1.0, s2.shape)
    except ValueError:
        raise ValueError(f"k: expected a shape that broadcasts to s2 {s2.shape}, got {kk.shape}") from None
    s2 = np.moveaxis(s2, axis, -1)
    d = np.moveaxis(d, axis, -1)
    has = d > 0
    n_has = has.sum(axis=-1, keepdims=True)
    if np.any(n_has < 2):
        raise ValueError("k: expected at least two inputs with k >= 2 along axis (variance information)")
    sp = (d * s2).sum(axis=-1, keepdims=True) / d.sum(axis=-1, keepdims=True)
    if isinstance(prior_df, str):
        if prior_df != "auto":
            raise ValueError(f"prior_df: expected a non-negative number or 'auto', got {prior_df!r}")
        x = np.where(has, s2, 0.0)
        mm = x.sum(axis=-1, keepdims=True) / n_has
        v = (np.where(has, (s2 - mm) ** 2, 0.0)).sum(axis=-1, keepdims=True) / (n_has - 1)
        h = np.where(has, 1.0 / np.where(has, d, 1.0), 0.0).sum(axis=-1, keepdims=True) / n_has
        tau = (v - 2.0 * mm**2 * h) / (1.0 + 2.0 * h)
        with np.errstate(divide="ignore", invalid="ignore"):
            nu0 = np.where(tau > 0, 4.0 + 2.0 * mm**2 / np.where(tau > 0, tau, 1.0), np.inf)
    else:
        if not (prior_df >= 0):
            raise ValueError(f"prior_df: expected a non-negative number or 'auto', got {prior_df!r}")
        nu0 = np.full_like(sp, float(prior_df))
    finite = np.isfinite(nu0)
    nu = np.where(finite, nu0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrunk = (d * s2 + nu * sp) / (d + nu)
    shrunk = np.where(finite & (has | (nu > 0)), shrunk, np.broadcast_to(sp, s2.shape))
    return np.moveaxis(shrunk, -1, axis)


def allocate_budget_two_stage(
    pilot_var: np.ndarray,
    pilot_k: int,
    budget: int,
    weights: np.ndarray | None = None,
    *,
    prior_df: float | Literal["auto"] = "auto",
    sample_df: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Second stage of two-stage sampling: allocate a budget by variances estimated from a pilot.

    Every input has already received :math:`k_0` pilot draws (which are kept and averaged with
    the rest). Their sample variances are shrunk towards the pooled value
    (:func:`shrunk_variance_from_moments`, empirical Bayes) and the total budget is allocated
    optimally under those estimates with the floor :math:`k_i \ge k_0`,

    .. math:: k = \arg\min_{k_i \ge k_0,\ \sum k_i = B} \sum_i c_i \tilde s_i^2 / k_i,

    which is the best use of the remaining :math:`B - n k_0` draws given the pilot
    (:func:`allocate_budget`). The estimation error of :math:`\tilde s_i^2` is the price of
    not knowing :math:`\sigma_i`.

    Parameters
    ----------
    pilot_var : array of shape (..., n_inputs)
        Sample variances (ddof=1) of the pilot draws; leading axes are batches (students).
    pilot_k : int
        Pilot draws per input :math:`k_0 \ge 2`.
    budget : int
        Total draws, pilot included, >= ``n_inputs * pilot_k``.
    weights : array broadcastable to ``pilot_var``, optional
        Influence :math:`c_i` (see :func:`allocate_budget`).
    prior_df : float or "auto"
        Prior degrees of freedom of the shrinkage.
    sample_df : float, optional
        Degrees of freedom of each pilot variance (default ``pilot_k - 1``; for embedding
        dispersions :func:`dispersion_sample_df`).

    Returns
    -------
    k : int64 array like ``pilot_var``
        Total draws per input (pilot included); rows sum to ``budget``.
    var_est : array like ``pilot_var``
        The shrunk pilot variances the allocation used.

    Examples
    --------
    >>> k, v = allocate_budget_two_stage(np.array([0.5, 1.0, 8.0]), 2, 12, prior_df=0)
    >>> k.tolist()
    [2, 3, 7]
    """
    k0 = check_int(pilot_k, "pilot_k", min_value=2)
    pv = check_variances(pilot_var, "pilot_var")
    if pv.ndim < 1:
        raise ValueError(f"pilot_var: expected shape (..., n_inputs), got {pv.shape}")
    n = pv.shape[-1]
    budget = check_int(budget, "budget", min_value=n * k0)
    v = shrunk_variance_from_moments(pv, k0, prior_df=prior_df, axis=-1, sample_df=sample_df)
    return allocate_budget(v, budget, weights, min_per_input=k0), v
