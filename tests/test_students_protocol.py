"""The student protocol (students as rows) and scikit-learn's estimator contract for the tabular families."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator

from uqkd.students import BatchedLinearRegression, SingleStudent, StudentFamily

#: Checks the batched estimators fail by design, with the reason. Their y is (R, n), one row per student, and
#: predict returns (R, m) (R = 1 for a 1-d y, which every student shares), where scikit-learn wants predictions
#: of y's shape: SingleStudent is the plain regressor view, and passes these.
BATCHED_SHAPE = {
    "check_regressors_train": "predict returns (R, m) = (1, m) for a 1-d y, not (m,)",
    "check_supervised_y_2d": "a 2-d y is (R, n) students x inputs, not (n, n_outputs): a (n, 1) y is refused",
    "check_methods_sample_order_invariance": "predict returns (1, m): indexing its first axis by sample fails",
}
#: BatchedMLP trains by full-batch Adam in float32: weights w and w repeated rows give the same loss but
#: round differently along 100 epochs (float64 agrees: tests/test_mlp.py's bootstrap-count test).
MLP_WEIGHTS = {"check_sample_weight_equivalence_on_dense_data":
               "float32 Adam trajectories of weighted vs repeated rows differ by rounding"}


def _failed(estimator, expected):
    res = check_estimator(estimator, expected_failed_checks=expected, on_fail=None)
    assert res, "check_estimator ran no checks"
    return {r["check_name"] for r in res if r["status"] == "failed"}, {r["check_name"] for r in res
                                                                        if r["status"] == "xfail"}


def test_linear_students_follow_the_sklearn_contract_except_the_listed_shape_checks():
    failed, xfailed = _failed(BatchedLinearRegression(), BATCHED_SHAPE)
    assert not failed
    assert xfailed == set(BATCHED_SHAPE)  # each listed failure still fails: the list is not stale


def test_one_linear_student_is_a_plain_sklearn_regressor():
    failed, xfailed = _failed(SingleStudent(BatchedLinearRegression()), {})
    assert not failed and not xfailed


@pytest.mark.slow
def test_mlp_students_follow_the_sklearn_contract_except_the_listed_checks():
    from uqkd.students.mlp import BatchedMLP

    failed, _ = _failed(BatchedMLP(hidden=(8,), n_epochs=50), {
        "check_methods_sample_order_invariance": BATCHED_SHAPE["check_methods_sample_order_invariance"],
        **MLP_WEIGHTS})
    assert not failed
    failed, _ = _failed(SingleStudent(BatchedMLP(hidden=(16,), n_epochs=100)), MLP_WEIGHTS)
    assert not failed


@pytest.mark.parametrize("family", ["linear", "mlp"])
def test_families_share_the_protocol_students_as_rows(family):
    rng = np.random.default_rng(0)
    X, Xt = rng.normal(size=(40, 3)), rng.normal(size=(7, 3))
    Y = X @ rng.normal(size=(3, 5)) + 0.1 * rng.normal(size=(40, 5))
    Y = Y.T  # (R, n)
    W = rng.uniform(0.5, 2.0, size=(5, 40))
    if family == "linear":
        est = BatchedLinearRegression()
    else:
        from uqkd.students.mlp import BatchedMLP

        est = BatchedMLP(hidden=(4,), n_epochs=20, dtype="float64")
    assert isinstance(est, StudentFamily)
    with pytest.raises(NotFittedError):
        est.predict(Xt)
    pred = est.fit(X, Y, sample_weight=W).predict(Xt)
    assert pred.shape == (5, 7)  # (R, m)
    # student r depends on its own row only: refitting row 2 alone gives its predictions
    alone = clone(est).fit(X, Y[2:3], sample_weight=W[2:3], **({} if family == "linear" else {"student_ids": [2]}))
    np.testing.assert_allclose(alone.predict(Xt)[0], pred[2], rtol=1e-9, atol=1e-10)
    held = clone(est).held_out_predictions(X, Y)
    assert held.shape == Y.shape and np.all(np.isfinite(held))
    # held out means not fitted to the input itself: farther from the labels than the in-sample fit
    fitted = clone(est).fit(X, Y).predict(X)
    assert np.mean((held - Y) ** 2) > np.mean((fitted - Y) ** 2)
    if family == "mlp":
        assert not hasattr(est, "predict_proba")


def test_single_student_refuses_a_missing_student():
    with pytest.raises(ValueError, match="student: expected a student family estimator"):
        SingleStudent().fit(np.ones((3, 2)), np.ones(3))
