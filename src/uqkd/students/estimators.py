"""The linear student family as a scikit-learn estimator (students as rows): :class:`BatchedLinearRegression`.

Kept apart from the closed-form kernels of :mod:`uqkd.students.linear` (which it calls) so that ``import uqkd``
and the experiments' numeric paths do not import scikit-learn (about a second); ``uqkd.students.linear``
and ``uqkd.students`` still give the name, on first use.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .._validation import check_array
from .linear import check_rcond, fit_ols, fit_wls, loo_predictions
from .protocol import check_X, check_y_given

__all__ = ["BatchedLinearRegression"]


class BatchedLinearRegression(RegressorMixin, BaseEstimator):
    """R least-squares students fitted at once (scikit-learn estimator contract, students as rows).

    ``fit(X, y)`` takes the labels of R students as the rows of ``y`` (R, n), or one
    label vector (n,) shared by every student; ``predict(X)`` returns (R, m). For a plain
    scikit-learn regressor (y of shape (n,), predictions (m,)) wrap it:
    :class:`uqkd.students.protocol.SingleStudent`.

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
    n_students_ : int
    n_features_in_ : int

    Examples
    --------
    >>> X = np.arange(6.0).reshape(3, 2)
    >>> targets = np.stack([X @ [1.0, 0.0], X @ [0.0, 2.0]])  # two students, (R, n)
    >>> BatchedLinearRegression().fit(X, targets).predict(X).shape
    (2, 3)
    """

    def __init__(self, *, fit_intercept: bool = True, rcond: float = 1e-10) -> None:
        self.fit_intercept = fit_intercept
        self.rcond = rcond

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> BatchedLinearRegression:
        """Fit R students to the rows of ``y`` (R, n) (or one (n,) label vector shared by every student), optionally
        with weights (n,) shared or (R, n)."""
        check_rcond(self.rcond)  # before any array work: a NaN cut-off silently gave all-zero coefficients
        check_y_given(self, y)
        X = check_X(self, X, reset=True)
        Y = check_array(y, "y", ndim=(1, 2))
        Y2 = Y[None, :] if Y.ndim == 1 else Y
        if Y2.shape[1] != X.shape[0]:
            raise ValueError(f"y: expected shape (R, {X.shape[0]}) or ({X.shape[0]},) to match X's "
                             f"{X.shape[0]} rows, got {Y.shape}")
        if sample_weight is None:
            theta = fit_ols(X, Y2, self.fit_intercept, self.rcond)
        else:
            W = check_array(sample_weight, "sample_weight", ndim=(1, 2), nonnegative=True)
            R, n = Y2.shape
            if W.ndim == 2 and Y.ndim == 1:
                R = W.shape[0]
            if W.shape not in ((n,), (R, n)):
                raise ValueError(f"sample_weight: expected shape ({n},) or ({R}, {n}) to match y {Y.shape}, "
                                 f"got {W.shape}")
            W2 = np.broadcast_to(W[None, :] if W.ndim == 1 else W, (R, n))
            theta = fit_wls(X, Y if Y.ndim == 1 else Y2, W2, self.fit_intercept, self.rcond)
        if self.fit_intercept:
            self.intercept_, self.coef_ = theta[:, 0], theta[:, 1:]
        else:
            self.intercept_, self.coef_ = np.zeros(theta.shape[0]), theta
        self.n_students_ = self.coef_.shape[0]
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of every student, shape (R, m)."""
        check_is_fitted(self, "coef_")
        X = check_X(self, X, reset=False)
        return self.coef_ @ X.T + self.intercept_[:, None]  # (R, m)

    def held_out_predictions(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Leave-one-out predictions (R, n) of students fitted to ``y`` (R, n) on ``X`` (no weights):
        the family's held-out reference prediction (:func:`loo_predictions`)."""
        return loo_predictions(X, y, self.fit_intercept)

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Mean over students of R^2 of each student's predictions against ``y`` (m,) or (R, m)."""
        from sklearn.metrics import r2_score

        pred = self.predict(X)
        y = np.broadcast_to(np.asarray(y, dtype=float), pred.shape)
        return float(np.mean([r2_score(t, p, sample_weight=sample_weight) for t, p in zip(y, pred, strict=True)]))
