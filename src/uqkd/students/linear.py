"""Batched linear students: R label vectors fitted with one factorisation.

All R students share the inputs ``X``; each has its own label vector (teacher draws) and
optionally its own non-negative row weights (inverse-variance weights, or bootstrap counts:
a bootstrap sample is the full ``X`` with per-row count weights). Rank-deficient problems
(a 10% bootstrap of Boston can miss every CHAS = 1 row) get the minimum-norm solution.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .._validation import check_array

__all__ = ["fit_ols_batched", "fit_wls_batched", "fit_wls_batched_multi", "loo_predictions", "BatchedLinearRegression"]


def _add_intercept(X: np.ndarray, fit_intercept: bool) -> np.ndarray:
    return np.hstack([np.ones((X.shape[0], 1)), X]) if fit_intercept else X


def _check_rcond(rcond: Any) -> float:
    """``rcond`` as numpy's pseudo-inverse reads it: singular values at or below ``rcond`` times the largest are cut
    (0: none cut). Outside ``0 <= rcond < 1`` the answer is silently wrong: NaN or >= 1 cuts every singular value
    (all-zero coefficients), a negative value keeps the round-off ones (coefficients ~1e14 on collinear columns)."""
    ok = (not isinstance(rcond, (bool, np.bool_)) and isinstance(rcond, (int, float, np.integer, np.floating))
          and math.isfinite(rcond) and 0.0 <= rcond < 1.0)
    if not ok:
        raise ValueError(f"rcond: expected a finite number >= 0 and < 1 (the relative cut-off for small singular "
                         f"values), got {rcond!r}")
    return float(rcond)


def fit_ols_batched(X: np.ndarray, Y: np.ndarray, fit_intercept: bool = True, rcond: float = 1e-10) -> np.ndarray:
    """Minimum-norm least-squares coefficients for R label vectors at once.

    Parameters
    ----------
    X : array of shape (n, d)
    Y : array of shape (n, R)
        One label vector per student (columns).
    fit_intercept : bool
        Prepend a column of ones (coefficient row 0 is the intercept).

    Returns
    -------
    array of shape (p, R), p = d + fit_intercept: ``pinv(D) @ Y``, one SVD for all R.
    """
    rcond = _check_rcond(rcond)
    X = check_array(X, "X", ndim=2)
    Y = check_array(Y, "Y", ndim=2)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y: expected {X.shape[0]} rows to match X, got shape {Y.shape}")
    D = _add_intercept(X, fit_intercept)
    return np.linalg.pinv(D, rcond=rcond) @ Y  # (p, n) @ (n, R)


@functools.lru_cache(maxsize=16)
def _sym_gather(p: int) -> np.ndarray:
    """Column of the upper-triangle list (``np.triu_indices(p)`` order) for each entry of a p x p matrix."""
    iu, ju = np.triu_indices(p)
    idx = np.empty((p, p), dtype=np.intp)
    idx[iu, ju] = idx[ju, iu] = np.arange(iu.size)
    return idx.reshape(-1)


def fit_wls_batched(
    X: np.ndarray, Y: np.ndarray, W: np.ndarray, fit_intercept: bool = True, rcond: float = 1e-10
) -> np.ndarray:
    r"""Weighted least squares per student: :math:`\hat\theta_r = (D^\top W_r D)^+ D^\top W_r y_r`.

    The R Gram matrices come from one matmul, ``W.T`` times the distinct products of columns of D
    (the upper triangle of ``D ⊗ D``); the pseudo-inverse (by a
    symmetric eigendecomposition, eigenvalues below ``rcond * max`` dropped) gives the
    minimum-norm solution when a student's weighted design is rank-deficient.

    Parameters
    ----------
    X : array of shape (n, d)
    Y : array of shape (n, R) or (n,)
        Label vectors (a single vector is shared by every student).
    W : array of shape (n, R)
        Non-negative, finite row weights per student; every student needs a positive weight
        somewhere (all-zero weights leave its coefficients undefined: a ValueError naming it).

    Returns
    -------
    array of shape (p, R)
    """
    rcond = _check_rcond(rcond)
    X, W, (Y,) = _check_wls_inputs(X, W, [Y], ["Y"])
    return _wls_solve(_add_intercept(X, fit_intercept), W, [Y], rcond)[0]


def fit_wls_batched_multi(
    X: np.ndarray, Ys: list[np.ndarray], W: np.ndarray, fit_intercept: bool = True, rcond: float = 1e-10
) -> list[np.ndarray]:
    """:func:`fit_wls_batched` for several label sets on the same weights: one Gram matrix and
    factorisation per student for all of them. Each ``Ys[j]`` is (n, R) or (n,); returns one (p, R)
    array per label set, equal to :func:`fit_wls_batched` on it up to rounding."""
    if not Ys:
        raise ValueError("Ys: expected at least one label set, got none")
    rcond = _check_rcond(rcond)
    X, W, checked = _check_wls_inputs(X, W, list(Ys), [f"Ys[{j}]" for j in range(len(Ys))])
    return _wls_solve(_add_intercept(X, fit_intercept), W, checked, rcond)


def _check_wls_inputs(X: np.ndarray, W: np.ndarray, Ys: list[np.ndarray], names: list[str]
                      ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """X (n, d), W (n, R) non-negative with a positive weight per student, each label set (n,) or (n, R)."""
    X = check_array(X, "X", ndim=2)
    n = X.shape[0]
    W = check_array(W, "W", ndim=2, nonnegative=True)
    if W.shape[0] != n:
        raise ValueError(f"W: expected {n} rows to match X, got shape {W.shape}")
    checked = []
    for Y, name in zip(Ys, names, strict=True):
        Y = check_array(Y, name, ndim=(1, 2))
        if Y.shape[0] != n or (Y.ndim == 2 and Y.shape[1] != W.shape[1]):
            raise ValueError(f"{name}: expected shape ({n},) or ({n}, {W.shape[1]}), got {Y.shape}")
        checked.append(Y)
    empty = np.flatnonzero(~np.any(W > 0, axis=0))
    if empty.size:
        raise ValueError(f"W: student {int(empty[0])} (column {int(empty[0])} of {W.shape[1]}) has all-zero weights"
                         + (f", and {empty.size - 1} more" if empty.size > 1 else "")
                         + "; its coefficients are undefined (expected a positive weight on some row)")
    return X, W, checked


def _wls_solve(D: np.ndarray, W: np.ndarray, Ys: list[np.ndarray], rcond: float) -> list[np.ndarray]:
    """Per-student WLS of design D (n, p), weights W (n, R), for each label set in Ys; (p, R) each."""
    p = D.shape[1]
    # the p(p+1)/2 distinct entries of each Gram matrix in one matmul, mirrored by a gather:
    # half the FLOPs of W.T @ (D ⊗ D); each entry is the same dot product (measured bit-identical
    # with numpy's OpenBLAS: the variance-aware-linear paper results.csv did not change)
    iu, ju = np.triu_indices(p)
    G = (W.T @ (D[:, iu] * D[:, ju]))[:, _sym_gather(p)].reshape(-1, p, p)  # (R, p, p)
    bs = [(W * (Y if Y.ndim == 2 else Y[:, None])).T @ D for Y in Ys]  # (R, p) each
    try:
        # Fast path: every student's weighted Gram matrix is positive definite.
        L = np.linalg.cholesky(G)  # (R, p, p)
        scale = np.einsum("rii->r", G) / p
        if np.all(np.einsum("rii->ri", L).min(axis=1) ** 2 > 1e3 * rcond * scale):
            theta = np.linalg.solve(G, np.stack(bs, axis=2))  # (R, p, m): one factorisation, m right-hand sides
            return [theta[:, :, j].T for j in range(len(bs))]
    except np.linalg.LinAlgError:
        pass
    # Minimum-norm path (rank-deficient students, e.g. small bootstrap samples).
    evals, evecs = np.linalg.eigh(G)  # (R, p), (R, p, p)
    cut = rcond * np.max(np.abs(evals), axis=1, keepdims=True)
    inv = np.where(evals > cut, 1.0 / np.where(evals > cut, evals, 1.0), 0.0)  # (R, p)
    out = []
    for b in bs:
        proj = np.einsum("rpq,rp->rq", evecs, b)  # V^T b  (R, p)
        out.append(np.einsum("rpq,rq->rp", evecs, inv * proj).T)  # (p, R)
    return out


def loo_predictions(X: np.ndarray, Y: np.ndarray, fit_intercept: bool = True) -> np.ndarray:
    r"""Leave-one-out OLS predictions for R label vectors: :math:`\hat y_{-i} = y_i - e_i/(1-h_{ii})`.

    Parameters
    ----------
    X : array of shape (n, d)
    Y : array of shape (n, R) or (n,)

    Returns
    -------
    array of the shape of ``Y``
    """
    X = check_array(X, "X", ndim=2)
    Y = check_array(Y, "Y", ndim=(1, 2))
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y: expected {X.shape[0]} rows to match X, got shape {Y.shape}")
    if Y.ndim == 1:
        return loo_predictions(X, Y[:, None], fit_intercept)[:, 0]
    D = _add_intercept(X, fit_intercept)
    P = np.linalg.pinv(D)  # (p, n)
    h = np.einsum("ij,ji->i", D, P)  # leverages (n,)
    if np.any(h > 1 - 1e-10):
        raise ValueError("X: some inputs have leverage 1, leave-one-out predictions are undefined")
    resid = Y - D @ (P @ Y)  # (n, R)
    return Y - resid / (1.0 - h)[:, None]


class BatchedLinearRegression:
    """R least-squares students fitted at once (estimator contract).

    Parameters
    ----------
    fit_intercept : bool, default True
    rcond : float, default 1e-10
        Relative cut-off for the pseudo-inverse (minimum-norm solutions): a finite number in [0, 1),
        checked at ``fit`` (``ValueError`` naming it otherwise).

    Attributes
    ----------
    coef_ : array of shape (R, d)
    intercept_ : array of shape (R,)

    Examples
    --------
    >>> X = np.arange(6.0).reshape(3, 2)
    >>> Y = np.stack([X @ [1.0, 0.0], X @ [0.0, 2.0]], axis=1)
    >>> BatchedLinearRegression().fit(X, Y).predict(X).shape
    (3, 2)
    """

    def __init__(self, *, fit_intercept: bool = True, rcond: float = 1e-10) -> None:
        self.fit_intercept = fit_intercept
        self.rcond = rcond

    def fit(self, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None) -> BatchedLinearRegression:
        """Fit R students to the columns of ``Y`` (n, R), optionally with weights (n,) shared or (n, R)."""
        _check_rcond(self.rcond)  # before any array work: a NaN cut-off silently gave all-zero coefficients
        Y = check_array(Y, "Y", ndim=(1, 2))
        Y2 = Y[:, None] if Y.ndim == 1 else Y
        if sample_weight is None:
            theta = fit_ols_batched(X, Y2, self.fit_intercept, self.rcond)
        else:
            W = check_array(sample_weight, "sample_weight", ndim=(1, 2), nonnegative=True)
            n, R = Y2.shape
            if W.shape not in ((n,), (n, R)):
                raise ValueError(f"sample_weight: expected shape ({n},) or ({n}, {R}) to match Y {Y.shape}, "
                                 f"got {W.shape}")
            W2 = np.broadcast_to(W[:, None] if W.ndim == 1 else W, Y2.shape)
            theta = fit_wls_batched(X, Y2, W2, self.fit_intercept, self.rcond)
        if self.fit_intercept:
            self.intercept_, self.coef_ = theta[0], theta[1:].T
        else:
            self.intercept_, self.coef_ = np.zeros(theta.shape[1]), theta.T
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of every student, shape (n, R)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("BatchedLinearRegression: call fit(X, Y) before predict(X)")
        X = check_array(X, "X", ndim=2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X: expected {self.n_features_in_} features, got {X.shape[1]}")
        return X @ self.coef_.T + self.intercept_  # (n, R)
