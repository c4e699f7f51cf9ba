r"""Closed forms for distilling a linear (OLS / WLS) student from a noisy teacher.

Setting: the teacher answers input :math:`x_i` with :math:`y_{ij} = \mu_i + \varepsilon_{ij}`,
:math:`\varepsilon_{ij} \sim (0, \sigma_i^2)` independent over i and the k draws j. The
student is fit by least squares on the design :math:`X` (a leading column of ones when
``fit_intercept``) to the mean of the k draws.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_array, check_float, check_int, check_variances

__all__ = [
    "design_matrix",
    "ols_param_cov",
    "wls_param_cov",
    "ols_expected_mse",
    "ols_expected_train_mse",
    "expected_inter_student_var",
    "inverse_variance_combined_variance",
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
