r"""Closed forms for distilling a linear (OLS / WLS) student from a noisy teacher.

Setting: the teacher answers input :math:`x_i` with :math:`y_{ij} = \mu_i + \varepsilon_{ij}`,
:math:`\varepsilon_{ij} \sim (0, \sigma_i^2)` independent over i and the k draws j. The
student is fit by least squares on the design :math:`X` (a leading column of ones when
``fit_intercept``) to the mean of the k draws.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ._validation import check_array, check_choice, check_float, check_int, check_variances

__all__ = [
    "design_matrix",
    "ols_param_cov",
    "wls_param_cov",
    "ols_expected_mse",
    "ols_expected_train_mse",
    "expected_inter_student_var",
    "inverse_variance_combined_variance",
    "allocation_weights",
    "allocation_param_cov",
    "allocation_variance",
    "allocation_gain",
]


def design_matrix(X: np.ndarray, fit_intercept: bool = True) -> np.ndarray:
    """``X`` with a leading column of ones when ``fit_intercept`` (the intercept is column 0)."""
    X = check_array(X, "X", ndim=2)
    if not fit_intercept:
        return X
    return np.hstack([np.ones((X.shape[0], 1)), X])


def _gram_inv(D: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    G = D.T @ D if w is None else (D * w[:, None]).T @ D
    if np.linalg.matrix_rank(G) < G.shape[0]:
        raise ValueError(f"X: the design matrix has rank {np.linalg.matrix_rank(G)} < {G.shape[0]} columns")
    return np.linalg.inv(G)


def ols_param_cov(X: np.ndarray, sigma2: float, k: int = 1, fit_intercept: bool = True) -> np.ndarray:
    r"""Covariance of the OLS student's parameters under homoscedastic teacher noise.

    .. math:: \mathrm{Cov}(\hat\theta_S) = \frac{\sigma^2}{k} (X^\top X)^{-1}

    Parameters
    ----------
    X : array of shape (n, d)
    sigma2 : float
        Teacher noise variance per draw, >= 0.
    k : int
        Teacher draws averaged per input, >= 1.
    fit_intercept : bool
        Prepend a column of ones (intercept is row/column 0).

    Returns
    -------
    array of shape (d + fit_intercept, d + fit_intercept)

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [2.0]])
    >>> ols_param_cov(X, 1.0, fit_intercept=False).round(3).tolist()
    [[0.2]]
    """
    sigma2 = check_float(sigma2, "sigma2", min_value=0.0)
    k = check_int(k, "k", min_value=1)
    D = design_matrix(X, fit_intercept)
    return sigma2 / k * _gram_inv(D)


def wls_param_cov(
    X: np.ndarray,
    noise_var: np.ndarray,
    weights: np.ndarray | None = None,
    k: int = 1,
    fit_intercept: bool = True,
) -> np.ndarray:
    r"""Covariance of a weighted-least-squares student under heteroscedastic teacher noise.

    With fixed weights :math:`W = \mathrm{diag}(w)` and :math:`\Sigma = \mathrm{diag}(\sigma_i^2/k)`:

    .. math:: \mathrm{Cov}(\hat\theta) = (X^\top W X)^{-1} X^\top W \Sigma W X (X^\top W X)^{-1}

    which is :math:`(X^\top \Sigma^{-1} X)^{-1}` for the optimal weights :math:`w_i \propto k/\sigma_i^2`
    (the default) and the sandwich form for OLS (``weights=np.ones(n)``).

    Parameters
    ----------
    X : array of shape (n, d)
    noise_var : array of shape (n,)
        Per-input teacher noise variance :math:`\sigma_i^2` (one draw), > 0.
    weights : array of shape (n,), optional
    k : int
    fit_intercept : bool
    """
    D = design_matrix(X, fit_intercept)
    n = D.shape[0]
    v = check_variances(noise_var, "noise_var", positive=True)
    if v.shape != (n,):
        raise ValueError(f"noise_var: expected shape ({n},), got {v.shape}")
    k = check_int(k, "k", min_value=1)
    sig = v / k
    if weights is None:
        return _gram_inv(D, 1.0 / sig)
    w = check_array(weights, "weights", shape=(n,), nonnegative=True)
    A = _gram_inv(D, w)
    meat = (D * (w**2 * sig)[:, None]).T @ D
    return A @ meat @ A


def ols_expected_mse(
    X_train: np.ndarray,
    teacher_mean_train: np.ndarray,
    X_eval: np.ndarray,
    y_eval: np.ndarray,
    sigma2: float,
    k: int = 1,
    fit_intercept: bool = True,
) -> float:
    r"""Expected evaluation MSE of an OLS student distilled from k-averaged noisy teacher labels.

    The student's expected parameters are :math:`\theta^* = (X^\top X)^{-1}X^\top\mu_T` and

    .. math:: E\,\mathrm{MSE} = \frac1{m}\lVert X_e\theta^* - y_e\rVert^2
              + \frac{\sigma^2}{k}\,\frac1m \mathrm{tr}\big(X_e (X^\top X)^{-1} X_e^\top\big)

    (bias from the teacher's and the student class's approximation error, plus propagated
    teacher noise, linear in :math:`\sigma^2` and falling as :math:`1/k`).
    """
    D = design_matrix(X_train, fit_intercept)
    De = design_matrix(X_eval, fit_intercept)
    mu = check_array(teacher_mean_train, "teacher_mean_train", shape=(D.shape[0],))
    ye = check_array(y_eval, "y_eval", shape=(De.shape[0],))
    if De.shape[1] != D.shape[1]:
        raise ValueError(f"X_eval: expected {X_train.shape[1]} features, got {X_eval.shape[1]}")
    sigma2 = check_float(sigma2, "sigma2", min_value=0.0)
    k = check_int(k, "k", min_value=1)
    Ginv = _gram_inv(D)
    theta = Ginv @ (D.T @ mu)
    bias = float(np.mean((De @ theta - ye) ** 2))
    lev = float(np.mean(np.einsum("ij,jk,ik->i", De, Ginv, De)))
    return bias + sigma2 / k * lev


def ols_expected_train_mse(
    X_train: np.ndarray,
    teacher_mean_train: np.ndarray,
    y_train: np.ndarray,
    sigma2: float,
    k: int = 1,
    fit_intercept: bool = True,
) -> float:
    r"""Expected MSE against ground truth on the training inputs (:math:`p` = number of parameters).

    .. math:: E\,\mathrm{MSE}_{train} = \frac1n\lVert H\mu_T - y\rVert^2 + \frac{\sigma^2}{k}\frac{p}{n}
    """
    return ols_expected_mse(X_train, teacher_mean_train, X_train, y_train, sigma2, k, fit_intercept)


def expected_inter_student_var(
    X_eval: np.ndarray, param_cov: np.ndarray, fit_intercept: bool = True
) -> float:
    r"""Mean over evaluation inputs of the variance of the student's prediction across students.

    .. math:: \frac1m \sum_i x_i^\top \mathrm{Cov}(\hat\theta)\, x_i
    """
    De = design_matrix(X_eval, fit_intercept)
    C = check_array(param_cov, "param_cov", shape=(De.shape[1], De.shape[1]))
    return float(np.mean(np.einsum("ij,jk,ik->i", De, C, De)))


def inverse_variance_combined_variance(variances: np.ndarray) -> np.ndarray:
    r"""Variance of the inverse-variance-weighted combination, :math:`(\sum_j 1/v_j)^{-1}` along axis 0.

    Covariance matrices of shape (m, p, p) give :math:`(\sum_j \Sigma_j^{-1})^{-1}`.
    """
    v = check_array(variances, "variances")
    if v.ndim == 3 and v.shape[1] == v.shape[2] and v.shape[1] > 1:
        return np.linalg.inv(np.linalg.inv(v).sum(axis=0))
    v = check_variances(v, "variances", positive=True)
    return 1.0 / (1.0 / v).sum(axis=0)


# --------------------------------------------------------------------------- budget allocation

AllocationQuantity = Literal["parameters", "predictions", "mean-prediction"]


def allocation_weights(
    X: np.ndarray,
    X_eval: np.ndarray | None = None,
    *,
    quantity: AllocationQuantity = "parameters",
    fit_intercept: bool = True,
) -> np.ndarray:
    r"""Influence :math:`c_i` of input i's label noise on a summary of the OLS student's variance.

    With :math:`u_i = (X^\top X)^{-1} x_i` (intercept-augmented design), the averaged-label OLS
    student has :math:`\mathrm{Cov}(\hat\theta) = \sum_i (\sigma_i^2/k_i)\, u_i u_i^\top`, so every
    scalar summary below is :math:`\sum_i c_i\,\sigma_i^2/k_i` with

    * ``parameters``: :math:`c_i = \lVert u_i\rVert^2` (trace of the parameter covariance);
    * ``predictions``: :math:`c_i = \frac1m \lVert X_e u_i\rVert^2` (mean over the m evaluation
      inputs of the prediction variance: the inter-student variance of :mod:`uqkd.metrics`);
    * ``mean-prediction``: :math:`c_i = (\bar x_e^\top u_i)^2` (variance of the mean prediction).

    Parameters
    ----------
    X : array of shape (n, d)
        Training inputs of the student.
    X_eval : array of shape (m, d), optional
        Evaluation inputs; required for ``predictions`` and ``mean-prediction``.
    quantity : {"parameters", "predictions", "mean-prediction"}
    fit_intercept : bool

    Returns
    -------
    array of shape (n,), non-negative.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [2.0]])
    >>> allocation_weights(X, fit_intercept=False).round(3).tolist()
    [0.0, 0.04, 0.16]
    """
    quantity = check_choice(quantity, "quantity", ("parameters", "predictions", "mean-prediction"))
    D = design_matrix(X, fit_intercept)
    U = D @ _gram_inv(D)  # (n, p): row i is u_i
    if quantity == "parameters":
        return np.einsum("ip,ip->i", U, U)
    if X_eval is None:
        raise ValueError(f"X_eval: expected an array of shape (m, {D.shape[1] - fit_intercept}) for "
                         f"quantity={quantity!r}, got None")
    De = design_matrix(X_eval, fit_intercept)
    if De.shape[1] != D.shape[1]:
        raise ValueError(f"X_eval: expected {D.shape[1] - fit_intercept} features, got {De.shape[1] - fit_intercept}")
    if quantity == "predictions":
        M = De.T @ De / De.shape[0]  # (p, p)
        return np.einsum("ip,pq,iq->i", U, M, U)
    return (U @ De.mean(axis=0)) ** 2


def _check_k_alloc(k: np.ndarray | int, n: int) -> np.ndarray:
    kk = np.asarray(k)
    if kk.dtype.kind == "b" or kk.dtype.kind not in "iuf":
        raise TypeError(f"k: expected integer draw counts, got dtype {kk.dtype}")
    if kk.ndim == 0:
        kk = np.full(n, kk)
    if kk.shape[-1] != n:
        raise ValueError(f"k: expected shape (..., {n}) (one count per input), got {kk.shape}")
    if not np.all(np.isfinite(kk)) or np.any(kk < 1):
        raise ValueError(f"k: expected finite draw counts >= 1, got minimum {float(np.min(kk))!r}")
    return kk.astype(float)


def allocation_param_cov(
    X: np.ndarray, noise_var: np.ndarray, k: np.ndarray | int, fit_intercept: bool = True
) -> np.ndarray:
    r"""Parameter covariance of the OLS student on averaged labels under any allocation :math:`k_i`.

    Labels :math:`\bar y_i` are means of :math:`k_i` teacher draws of variance :math:`\sigma_i^2`:

    .. math:: \mathrm{Cov}(\hat\theta) = (X^\top X)^{-1} X^\top
              \mathrm{diag}(\sigma_i^2/k_i)\, X (X^\top X)^{-1}

    Parameters
    ----------
    X : array of shape (n, d)
    noise_var : array of shape (n,)
        :math:`\sigma_i^2` per draw, >= 0.
    k : int or array of shape (..., n)
        Draws per input (>= 1; real values give the continuous allocation). Leading axes are
        batches, e.g. one allocation per student.

    Returns
    -------
    array of shape (..., p, p), p = d + fit_intercept.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [2.0]])
    >>> allocation_param_cov(X, np.ones(3), np.array([1, 1, 1]), fit_intercept=False).round(3).tolist()
    [[0.2]]
    """
    D = design_matrix(X, fit_intercept)
    n = D.shape[0]
    v = check_variances(noise_var, "noise_var")
    if v.shape != (n,):
        raise ValueError(f"noise_var: expected shape ({n},), got {v.shape}")
    kk = _check_k_alloc(k, n)
    U = D @ _gram_inv(D)  # (n, p)
    s = v / kk  # (..., n)
    return np.einsum("...i,ip,iq->...pq", s, U, U)


def allocation_variance(
    X: np.ndarray,
    noise_var: np.ndarray,
    k: np.ndarray | int,
    X_eval: np.ndarray | None = None,
    *,
    quantity: AllocationQuantity = "parameters",
    fit_intercept: bool = True,
) -> float | np.ndarray:
    r"""Scalar variance of the averaged-label OLS student under allocation k: :math:`\sum_i c_i\sigma_i^2/k_i`.

    ``quantity="parameters"`` gives :math:`\mathrm{tr}\,\mathrm{Cov}(\hat\theta)`
    (:func:`allocation_param_cov`); ``"predictions"`` the mean over ``X_eval`` of the prediction
    variance (what :func:`expected_inter_student_var` returns for that covariance); see
    :func:`allocation_weights` for :math:`c_i`.

    Returns
    -------
    float, or array of shape (...) for batched ``k`` of shape (..., n).

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [2.0]])
    >>> round(allocation_variance(X, np.ones(3), np.array([1, 1, 4]), fit_intercept=False), 3)
    0.08
    """
    c = allocation_weights(X, X_eval, quantity=quantity, fit_intercept=fit_intercept)
    n = c.shape[0]
    v = check_variances(noise_var, "noise_var")
    if v.shape != (n,):
        raise ValueError(f"noise_var: expected shape ({n},), got {v.shape}")
    kk = _check_k_alloc(k, n)
    out = (c * v / kk).sum(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def allocation_gain(
    variances: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    budget: int | None = None,
    min_per_input: int = 1,
) -> float:
    r"""Predicted variance ratio, optimal allocation / uniform allocation, at equal total budget.

    With :math:`a_i = c_i\sigma_i^2`, uniform :math:`k_i = B/n` gives :math:`V_u = n\sum_i a_i/B`.
    At a large budget (no input at the floor) the Neyman allocation :math:`k_i\propto\sqrt{a_i}`
    gives :math:`V^* = (\sum_i\sqrt{a_i})^2/B`, so

    .. math:: \frac{V^*}{V_u} = \frac{\big(\sum_i \sigma_i\sqrt{c_i}\big)^2}{n\sum_i c_i\sigma_i^2} \le 1

    (Cauchy-Schwarz; equality iff :math:`\sigma_i\sqrt{c_i}` is constant). Given ``budget``,
    the ratio is the exact one for the optimal *integer* allocation with :math:`k_i \ge m`
    (:func:`uqkd.aggregate.allocate_budget`), :math:`\sum_i a_i/k_i^\ast \,/\, V_u`; it tends
    to the formula above as the budget grows.

    Parameters
    ----------
    variances : array of shape (n,)
        :math:`\sigma_i^2`, >= 0.
    weights : array of shape (n,), optional
        :math:`c_i \ge 0` (default ones); see :func:`allocation_weights`.
    budget : int, optional
        Total draws :math:`B \ge n m` for the exact integer ratio.
    min_per_input : int
        Floor m for the exact ratio.

    Returns
    -------
    float in (0, 1]; 1.0 when every :math:`a_i = 0`.

    Examples
    --------
    >>> allocation_gain(np.array([1.0, 1.0, 1.0, 9.0]))  # (1 + 1 + 1 + 3)^2 / (4 * 12)
    0.75
    >>> allocation_gain(np.ones(3), budget=9)
    1.0
    """
    v = check_variances(variances, "variances")
    if v.ndim != 1:
        raise ValueError(f"variances: expected shape (n_inputs,), got {v.shape}")
    n = v.shape[0]
    c = np.ones(n) if weights is None else check_array(weights, "weights", shape=(n,), nonnegative=True)
    a = c * v
    if not np.any(a > 0):
        return 1.0
    if budget is None:
        return float(np.sum(np.sqrt(a)) ** 2 / (n * np.sum(a)))
    from .aggregate import allocate_budget

    k = allocate_budget(v, budget, c, min_per_input=min_per_input)
    return float(np.sum(a / k) / (n * np.sum(a) / budget))
