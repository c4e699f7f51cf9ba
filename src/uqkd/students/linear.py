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

__all__ = ["check_rcond", "design_matrix", "fit_ols", "fit_wls", "fit_wls_multi", "loo_predictions"]


def design_matrix(X: np.ndarray, fit_intercept: bool = True) -> np.ndarray:
    """``[1 | X]`` (n, d + 1), or ``X`` itself when ``fit_intercept`` is False: the OLS design."""
    return np.hstack([np.ones((X.shape[0], 1)), X]) if fit_intercept else X


_add_intercept = design_matrix


def check_rcond(rcond: Any) -> float:
    """``rcond`` as numpy's pseudo-inverse reads it: singular values at or below ``rcond`` times the largest are cut
    (0: none cut). Outside ``0 <= rcond < 1`` the answer is silently wrong: NaN or >= 1 cuts every singular value
    (all-zero coefficients), a negative value keeps the round-off ones (coefficients ~1e14 on collinear columns)."""
    ok = (not isinstance(rcond, (bool, np.bool_)) and isinstance(rcond, (int, float, np.integer, np.floating))
          and math.isfinite(rcond) and 0.0 <= rcond < 1.0)
    if not ok:
        raise ValueError(f"rcond: expected a finite number >= 0 and < 1 (the relative cut-off for small singular "
                         f"values), got {rcond!r}")
    return float(rcond)


def fit_ols(X: np.ndarray, targets: np.ndarray, fit_intercept: bool = True, rcond: float = 1e-10) -> np.ndarray:
    """Minimum-norm least-squares coefficients for R label vectors at once.

    Parameters
    ----------
    X : array of shape (n, d)
    targets : array of shape (R, n)
        One label vector per student (rows).
    fit_intercept : bool
        Prepend a column of ones (coefficient column 0 is the intercept).

    Returns
    -------
    array of shape (R, p), p = d + fit_intercept: ``targets @ pinv(D).T``, one SVD for all R.
    """
    rcond = check_rcond(rcond)
    X = check_array(X, "X", ndim=2)
    Y = check_array(targets, "targets", ndim=2)
    if Y.shape[1] != X.shape[0]:
        raise ValueError(f"targets: expected shape (R, {X.shape[0]}) to match X's {X.shape[0]} rows, got {Y.shape}")
    D = _add_intercept(X, fit_intercept)
    return Y @ np.linalg.pinv(D, rcond=rcond).T  # (R, n) @ (n, p)


@functools.lru_cache(maxsize=16)
def _sym_gather(p: int) -> np.ndarray:
    """Column of the upper-triangle list (``np.triu_indices(p)`` order) for each entry of a p x p matrix."""
    iu, ju = np.triu_indices(p)
    idx = np.empty((p, p), dtype=np.intp)
    idx[iu, ju] = idx[ju, iu] = np.arange(iu.size)
    return idx.reshape(-1)


def fit_wls(
    X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray, fit_intercept: bool = True, rcond: float = 1e-10
) -> np.ndarray:
    r"""Weighted least squares per student: :math:`\hat\theta_r = (D^\top W_r D)^+ D^\top W_r y_r`.

    The R Gram matrices come from one matmul, ``sample_weight`` times the distinct products of columns of D
    (the upper triangle of ``D ⊗ D``); the pseudo-inverse (by a
    symmetric eigendecomposition, eigenvalues below ``rcond * max`` dropped) gives the
    minimum-norm solution when a student's weighted design is rank-deficient.

    Parameters
    ----------
    X : array of shape (n, d)
    targets : array of shape (R, n) or (n,)
        Label vectors, one per student (a single vector is shared by every student).
    sample_weight : array of shape (R, n)
        Non-negative, finite row weights per student; every student needs a positive weight
        somewhere (all-zero weights leave its coefficients undefined: a ValueError naming it).

    Returns
    -------
    array of shape (R, p)
    """
    rcond = check_rcond(rcond)
    X, W, (Y,) = _check_wls_inputs(X, sample_weight, [targets], ["targets"])
    return _wls_solve(_add_intercept(X, fit_intercept), W, [Y], rcond)[0]


def fit_wls_multi(
    X: np.ndarray, targets: list[np.ndarray], sample_weight: np.ndarray, fit_intercept: bool = True,
    rcond: float = 1e-10
) -> list[np.ndarray]:
    """:func:`fit_wls` for several label sets on the same weights: one Gram matrix and
    factorisation per student for all of them. Each ``targets[j]`` is (R, n) or (n,); returns one (R, p)
    array per label set, equal to :func:`fit_wls` on it up to rounding."""
    if not targets:
        raise ValueError("targets: expected at least one label set, got none")
    rcond = check_rcond(rcond)
    X, W, checked = _check_wls_inputs(X, sample_weight, list(targets),
                                      [f"targets[{j}]" for j in range(len(targets))])
    return _wls_solve(_add_intercept(X, fit_intercept), W, checked, rcond)


def _check_wls_inputs(X: np.ndarray, W: np.ndarray, Ys: list[np.ndarray], names: list[str]
                      ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """X (n, d), W (R, n) non-negative with a positive weight per student, each label set (n,) or (R, n)."""
    X = check_array(X, "X", ndim=2)
    n = X.shape[0]
    W = check_array(W, "sample_weight", ndim=2, nonnegative=True)
    if W.shape[1] != n:
        raise ValueError(f"sample_weight: expected shape (R, {n}) to match X's {n} rows, got {W.shape}")
    checked = []
    for Y, name in zip(Ys, names, strict=True):
        Y = check_array(Y, name, ndim=(1, 2))
        if Y.shape[-1] != n or (Y.ndim == 2 and Y.shape[0] != W.shape[0]):
            raise ValueError(f"{name}: expected shape ({n},) or ({W.shape[0]}, {n}), got {Y.shape}")
        checked.append(Y)
    empty = np.flatnonzero(~np.any(W > 0, axis=1))
    if empty.size:
        raise ValueError(f"sample_weight: student {int(empty[0])} (row {int(empty[0])} of {W.shape[0]}) has all-zero "
                         "weights" + (f", and {empty.size - 1} more" if empty.size > 1 else "")
                         + "; its coefficients are undefined (expected a positive weight on some column)")
    return X, W, checked


def _wls_solve(D: np.ndarray, W: np.ndarray, Ys: list[np.ndarray], rcond: float) -> list[np.ndarray]:
    """Per-student WLS of design D (n, p), weights W (R, n), for each label set in Ys; (R, p) each."""
    p = D.shape[1]
    # the p(p+1)/2 distinct entries of each Gram matrix in one matmul, mirrored by a gather:
    # half the FLOPs of W @ (D ⊗ D); each entry is the same dot product (measured bit-identical
    # with numpy's OpenBLAS: the variance-aware-linear paper results.csv did not change)
    iu, ju = np.triu_indices(p)
    G = (W @ (D[:, iu] * D[:, ju]))[:, _sym_gather(p)].reshape(-1, p, p)  # (R, p, p)
    bs = [(W * (Y if Y.ndim == 2 else Y[None, :])) @ D for Y in Ys]  # (R, p) each
    try:
        # Fast path: every student's weighted Gram matrix is positive definite.
        L = np.linalg.cholesky(G)  # (R, p, p)
        scale = np.einsum("rii->r", G) / p
        if np.all(np.einsum("rii->ri", L).min(axis=1) ** 2 > 1e3 * rcond * scale):
            theta = np.linalg.solve(G, np.stack(bs, axis=2))  # (R, p, m): one factorisation, m right-hand sides
            return [theta[:, :, j] for j in range(len(bs))]
    except np.linalg.LinAlgError:
        pass
    # Minimum-norm path (rank-deficient students, e.g. small bootstrap samples).
    evals, evecs = np.linalg.eigh(G)  # (R, p), (R, p, p)
    cut = rcond * np.max(np.abs(evals), axis=1, keepdims=True)
    inv = np.where(evals > cut, 1.0 / np.where(evals > cut, evals, 1.0), 0.0)  # (R, p)
    out = []
    for b in bs:
        proj = np.einsum("rpq,rp->rq", evecs, b)  # V^T b  (R, p)
        out.append(np.einsum("rpq,rq->rp", evecs, inv * proj))  # (R, p)
    return out


def loo_predictions(X: np.ndarray, targets: np.ndarray, fit_intercept: bool = True) -> np.ndarray:
    r"""Leave-one-out OLS predictions for R label vectors: :math:`\hat y_{-i} = y_i - e_i/(1-h_{ii})`.

    The held-out reference prediction of the linear student family (the shrinkage method's reference).

    Parameters
    ----------
    X : array of shape (n, d)
    targets : array of shape (R, n) or (n,)

    Returns
    -------
    array of the shape of ``targets``
    """
    X = check_array(X, "X", ndim=2)
    Y = check_array(targets, "targets", ndim=(1, 2))
    if Y.shape[-1] != X.shape[0]:
        raise ValueError(f"targets: expected shape (R, {X.shape[0]}) or ({X.shape[0]},) to match X's "
                         f"{X.shape[0]} rows, got {Y.shape}")
    if Y.ndim == 1:
        return loo_predictions(X, Y[None, :], fit_intercept)[0]
    D = _add_intercept(X, fit_intercept)
    P = np.linalg.pinv(D)  # (p, n)
    h = np.einsum("ij,ji->i", D, P)  # leverages (n,)
    if np.any(h > 1 - 1e-10):
        raise ValueError("X: some inputs have leverage 1, leave-one-out predictions are undefined")
    resid = Y - (Y @ P.T) @ D.T  # (R, n)
    return Y - resid / (1.0 - h)[None, :]


def __getattr__(name: str) -> Any:
    # the scikit-learn estimator lives in students/estimators.py: importing scikit-learn costs ~1 s, which
    # ``import uqkd`` and the experiments' numeric paths (the functions above) do not pay
    if name == "BatchedLinearRegression":
        from .estimators import BatchedLinearRegression

        return BatchedLinearRegression
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
