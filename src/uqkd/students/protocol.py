"""The student protocol shared by every tabular student family, and its scikit-learn single-student view.

A *student family* trains R students at once on shared inputs ``X`` (n, d):

* ``fit(X, targets, sample_weight=None)``: ``targets`` (R, n), one label vector per student (a
  single (n,) vector is shared by every student); ``sample_weight`` (R, n) or (n,), non-negative
  per-example weights (inverse variances, bootstrap counts);
* ``predict(X) -> (R, m)``: every student's predictions, students as rows;
* ``held_out_predictions(X, targets) -> (R, n)``: each input predicted by students that did not
  see it (leave-one-out for OLS, two-fold cross-fitting for MLPs), the reference prediction of
  the shrinkage method (:mod:`uqkd.methods`).

Students are rows everywhere, so experiments never transpose at a boundary.
:class:`~uqkd.students.linear.BatchedLinearRegression` and :class:`~uqkd.students.mlp.BatchedMLP`
follow it and are scikit-learn estimators (``get_params``/``set_params``, ``clone``,
``NotFittedError``). Their targets are (R, n), not scikit-learn's ``y`` (n,), so
:class:`SingleStudent` makes one student a plain scikit-learn regressor (``check_estimator``
passes on it; ``tests/test_students_protocol.py`` lists what it does on the batched classes).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import check_array

__all__ = ["StudentFamily", "SingleStudent", "check_X", "check_y_given"]


def check_y_given(estimator: Any, y: Any) -> None:
    """A clear error for ``fit(X, None)`` (scikit-learn's wording)."""
    if y is None:
        raise ValueError(f"y: {type(estimator).__name__} requires y to be passed, but the target y is None "
                         "(expected the students' labels, (R, n) or (n,))")


def check_X(estimator: Any, X: Any, *, reset: bool) -> np.ndarray:
    """``X`` (n, d) as float64 through scikit-learn's ``validate_data`` (sparse, complex, empty and 1-d inputs and a
    feature count other than fit's refused in its words, prefixed with the argument's name; ``reset=True`` sets
    ``n_features_in_``), then uqkd's finite check (the one message for NaN / infinity)."""
    try:
        Xa = validate_data(estimator, X, reset=reset, dtype=np.float64, ensure_all_finite=False)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"X: {exc}") from None
    return check_array(Xa, "X", ndim=2)


@runtime_checkable
class StudentFamily(Protocol):
    """R students fitted at once; students are rows of every (R, ...) array."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> StudentFamily: ...

    def predict(self, X: Any) -> np.ndarray: ...

    def held_out_predictions(self, X: Any, y: Any) -> np.ndarray: ...


class SingleStudent(RegressorMixin, BaseEstimator):
    """One student of a batched family as a plain scikit-learn regressor: ``y`` (n,), predictions (m,).

    Parameters
    ----------
    student : estimator following :class:`StudentFamily`
        Cloned at ``fit`` and fitted with ``targets = y[None, :]`` (R = 1).

    Examples
    --------
    >>> from uqkd.students.linear import BatchedLinearRegression
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> SingleStudent(BatchedLinearRegression()).fit(X, X[:, 0]).predict(X).shape
    (4,)
    """

    def __init__(self, student: Any = None) -> None:
        self.student = student

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SingleStudent:
        if self.student is None:
            raise ValueError("student: expected a student family estimator (e.g. BatchedLinearRegression()), "
                             "got None")
        check_y_given(self, y)
        try:
            X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64, ensure_all_finite=False)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"X, y: {exc}") from None
        X, y = check_array(X, "X", ndim=2), check_array(y, "y", ndim=1)
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=float)[None, :]
        self.student_ = clone(self.student).fit(X, y[None, :], sample_weight=sw)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "student_")
        X = check_X(self, X, reset=False)
        return self.student_.predict(X)[0]
