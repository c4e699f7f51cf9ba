"""Python API validation (issue 12): every public function rejects bad input with a ValueError/TypeError
whose message names the argument, the value (or shape) and what was expected; valid extreme input works."""

import re

import numpy as np
import pytest

from uqkd import aggregate as A
from uqkd._seeding import student_draws, student_fill, student_normals
from uqkd.students.linear import BatchedLinearRegression, fit_wls, loo_predictions

NAN = float("nan")
INF = float("inf")
ONES = np.ones(3)


def _raises(exc, message, fn, *args, **kw):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        fn(*args, **kw)


# ------------------------------------------------------------------------------ variance-weighted labels

LABEL_CASES = {
    # paper_oracle_labels(teacher_mean_k, teacher_var_k, teacher_mean_true, noise_var)
    "oracle: NaN variance": (A.paper_oracle_labels, (ONES, [1, NAN, 1], ONES, 1.0),
                             "teacher_var_k: expected finite values, got 1 NaN or infinite value(s)"),
    "oracle: inf noise": (A.paper_oracle_labels, (ONES, ONES, ONES, INF),
                          "noise_var: expected finite values, got 1 NaN or infinite value(s)"),
    "oracle: negative variance": (A.paper_oracle_labels, (ONES, [1, -2, 1], ONES, 1.0),
                                  "teacher_var_k: expected non-negative values, got minimum -2.0"),
    "oracle: negative noise": (A.paper_oracle_labels, (ONES, ONES, ONES, -0.5),
                               "noise_var: expected non-negative values, got minimum -0.5"),
    "oracle: NaN mean": (A.paper_oracle_labels, ([1, NAN, 1], ONES, ONES, 1.0),
                         "teacher_mean_k: expected finite values, got 1 NaN or infinite value(s)"),
    "oracle: (3,) with (3, 1)": (A.paper_oracle_labels, (ONES, np.ones((3, 1)), ONES, 1.0),
                                 "teacher_var_k: shape (3, 1) does not broadcast to the shape of teacher_mean_k (3,) "
                                 "(together they give (3, 3))"),
    "oracle: (3,) with (4,)": (A.paper_oracle_labels, (ONES, ONES, np.ones(4), 1.0),
                               "teacher_mean_true: shape (4,) does not broadcast to the shape of teacher_mean_k (3,)"),
    "oracle: text": (A.paper_oracle_labels, (ONES, ONES, ONES, "big"),
                     "noise_var: expected a numeric array, got str (could not convert string to float: 'big')"),
    # crossfit_variance(teacher_mean_k, student_pred_cv, mean_var, axis)
    "crossfit: NaN prediction": (A.crossfit_variance, (ONES, [0, NAN, 0], ONES),
                                 "student_pred_cv: expected finite values, got 1 NaN or infinite value(s)"),
    "crossfit: negative variance": (A.crossfit_variance, (ONES, ONES, [1, 1, -1]),
                                    "mean_var: expected non-negative values, got minimum -1.0"),
    "crossfit: inf variance": (A.crossfit_variance, (ONES, ONES, INF),
                               "mean_var: expected finite values, got 1 NaN or infinite value(s)"),
    "crossfit: (3,) with (3, 1)": (A.crossfit_variance, (ONES, np.ones((3, 1)), ONES),
                                   "student_pred_cv: shape (3, 1) does not broadcast to the shape of teacher_mean_k "
                                   "(3,) (together they give (3, 3))"),
    "crossfit: axis 1 of 1-d": (A.crossfit_variance, (ONES, ONES, ONES, 1),
                                "axis: expected an axis in [-1, 0] for a 1-d array, got 1"),
    "crossfit: axis text": (A.crossfit_variance, (ONES, ONES, ONES, "inputs"),
                            "axis: expected an integer axis, got 'inputs'"),
    # shrinkage_labels(teacher_mean_k, mean_var, student_pred_cv, student_var)
    "shrinkage: NaN variance": (A.shrinkage_labels, (ONES, [NAN, 1, 1], ONES, 1.0),
                                "mean_var: expected finite values, got 1 NaN or infinite value(s)"),
    "shrinkage: negative student variance": (A.shrinkage_labels, (ONES, ONES, ONES, -1.0),
                                             "student_var: expected non-negative values, got minimum -1.0"),
    "shrinkage: inf mean": (A.shrinkage_labels, ([INF, 1, 1], ONES, ONES, 1.0),
                            "teacher_mean_k: expected finite values, got 1 NaN or infinite value(s)"),
    "shrinkage: (3,) with (3, 1)": (A.shrinkage_labels, (ONES, ONES, ONES, np.ones((3, 1))),
                                    "student_var: shape (3, 1) does not broadcast to the shape of teacher_mean_k (3,) "
                                    "(together they give (3, 3))"),
    # estimate_prior_df(s2, k, axis)
    "prior df: negative": (A.estimate_prior_df, ([1.0, -1.0, 2.0], 3),
                           "s2: expected non-negative values, got minimum -1.0"),
    "prior df: NaN": (A.estimate_prior_df, ([1.0, NAN], 3), "s2: expected finite values, got 1 NaN or infinite value(s)"),
    "prior df: inf": (A.estimate_prior_df, ([1.0, INF], 3), "s2: expected finite values, got 1 NaN or infinite value(s)"),
    "prior df: scalar": (A.estimate_prior_df, (2.0, 3), "s2: expected an array of per-input variances, got shape ()"),
    "prior df: axis": (A.estimate_prior_df, ([1.0, 2.0], 3, 2), "axis: expected an axis in [-1, 0] for a 1-d array, got 2"),
    "prior df: k=1": (A.estimate_prior_df, ([1.0, 2.0], 1), "k: expected an integer >= 2, got 1"),
    # inverse_variance_sample_weights(teacher_var, k, prior_df, axis)
    "sample weights: NaN": (A.inverse_variance_sample_weights, ([1.0, NAN], 3),
                            "teacher_var: expected finite values, got 1 NaN or infinite value(s)"),
    "sample weights: negative": (A.inverse_variance_sample_weights, ([1.0, -1.0], 3),
                                 "teacher_var: expected non-negative values, got minimum -1.0"),
    "sample weights: None with k=3": (A.inverse_variance_sample_weights, (None, 3),
                                      "teacher_var: expected the sample variances of the k=3 draws, got None"),
    "sample weights: overflow": (A.inverse_variance_sample_weights, ([1e-320, 1e-320, 0.0], 3, 0.0),
                                 "teacher_var: variances as small as 1e-320 overflow the weights k / s^2; "
                                 "rescale the labels"),
    "sample weights: prior_df NaN": (A.inverse_variance_sample_weights, ([1.0, 2.0], 3, NAN),
                                     "prior_df: expected a non-negative number or 'auto', got nan"),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_label_and_variance_functions_reject_bad_input(case):
    fn, args, message = LABEL_CASES[case]
    exc = TypeError if "got str" in message or "integer axis" in message else ValueError
    _raises(exc, message, fn, *args)


def test_label_functions_keep_valid_broadcasting():
    R, n = 4, 5
    rng = np.random.default_rng(0)
    mk, var, mu, nv = rng.normal(size=(R, n)), rng.random((R, n)), rng.normal(size=(1, n)), rng.random((1, n))
    lab = A.paper_oracle_labels(mk, var, mu, nv)
    assert lab.shape == (R, n)
    np.testing.assert_allclose(lab, (nv / (nv + var)) * mk + (var / (nv + var)) * mu)
    assert A.paper_oracle_labels(ONES, ONES, ONES, 1.0).shape == (3,)  # a scalar noise variance broadcasts
    cv = rng.normal(size=(R, n))
    tau2 = A.crossfit_variance(mk, cv, var, axis=1)
    assert tau2.shape == (R, 1) and np.all(tau2 > 0)
    sl = A.shrinkage_labels(mk, var, cv, tau2)
    np.testing.assert_allclose(sl, (mk / var + cv / tau2) / (1 / var + 1 / tau2))
    # zero variances: a zero teacher variance keeps the teacher mean, a zero student variance the prediction
    np.testing.assert_array_equal(A.shrinkage_labels(ONES, 0.0, 2 * ONES, 1.0), ONES)
    np.testing.assert_array_equal(A.shrinkage_labels(ONES, 1.0, 2 * ONES, 0.0), 2 * ONES)
    nu0 = A.estimate_prior_df(var, 3, axis=1)
    assert nu0.shape == (R, 1) and not np.any(np.isnan(nu0))  # inf: no detectable heteroscedasticity


# ------------------------------------------------------------------------------- inverse-variance weights


def test_inverse_variance_weights_at_the_float_limits():
    np.testing.assert_array_equal(A.inverse_variance_weights([1e-320, 1.0]), [1.0, 1e-320])
    np.testing.assert_allclose(A.inverse_variance_weights([1e300, 3e300]), [0.75, 0.25])
    np.testing.assert_allclose(A.inverse_variance_weights([1e-300, 3e-300]), [0.75, 0.25])
    np.testing.assert_array_equal(A.inverse_variance_weights([0.0, 1.0, 0.0]), [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(A.inverse_variance_weights([0.0, 0.0]), [0.5, 0.5])
    w = A.inverse_variance_weights(np.array([[1e-320, 2.0], [1.0, 2.0]]))  # per column
    np.testing.assert_array_equal(w, [[1.0, 0.5], [1e-320, 0.5]])
    est, var = A.inverse_variance_combine(np.array([0.0, 1.0]), np.array([1e-320, 1.0]))
    assert np.isfinite(est) and np.isfinite(var) and var == pytest.approx(1e-320, rel=1e-12)
    est, var = A.inverse_variance_combine(np.array([0.0, 1.0]), np.array([2e300, 2e300]))
    assert (float(est), float(var)) == (0.5, 1e300)
    _raises(ValueError, "variances: expected non-negative values, got minimum -1.0",
            A.inverse_variance_weights, [1.0, -1.0])
    _raises(ValueError, "variances: expected finite values, got 1 NaN or infinite value(s)",
            A.inverse_variance_weights, [1.0, NAN])


def test_inverse_variance_sample_weights_of_zero_variances_are_equal_not_inf():
    w = A.inverse_variance_sample_weights(np.zeros((2, 4)), 3, axis=1)
    np.testing.assert_array_equal(w, np.full((2, 4), 3.0))
    w = A.inverse_variance_sample_weights(np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), 3, prior_df=0.0, axis=1)
    assert np.all(np.isfinite(w)) and np.all(w[0] == 3.0) and w[1, 0] > w[1, 2]
    w = A.inverse_variance_sample_weights(np.array([0.0, 1.0, 2.0]), 3, prior_df=0.0)  # raw variances, one zero
    assert np.all(np.isfinite(w)) and w[0] == pytest.approx(3 / 1e-12)
    np.testing.assert_array_equal(A.inverse_variance_sample_weights(None, 1), [1.0])


# ------------------------------------------------------------------------------------- linear students


def _xy(n=8, d=2, R=3):
    """X (n, d) and targets (R, n): students are rows."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d))
    return X, (X @ rng.normal(size=(d, R)) + rng.normal(size=(n, R))).T


def test_loo_predictions_keeps_a_1d_label_vector_1d():
    X, Y = _xy()
    one = loo_predictions(X, Y[0])
    assert one.shape == (8,)
    np.testing.assert_allclose(one, loo_predictions(X, Y)[0])
    _raises(ValueError, "targets: expected shape (R, 8) or (8,) to match X's 8 rows, got (7,)", loo_predictions, X,
            Y[0, :7])
    _raises(ValueError, "targets: expected a 1 or 2-d array, got shape (3, 8, 1)", loo_predictions, X,
            Y[:, :, None])
    _raises(ValueError, "targets: expected finite values, got 1 NaN or infinite value(s)", loo_predictions, X,
            np.r_[NAN, Y[0, 1:]])


def test_fit_wls_names_a_student_with_all_zero_weights():
    X, Y = _xy()
    W = np.ones_like(Y)
    W[1] = 0.0
    _raises(ValueError, "sample_weight: student 1 (row 1 of 3) has all-zero weights; its coefficients are undefined "
                        "(expected a positive weight on some column)", fit_wls, X, Y, W)
    W[2] = 0.0
    _raises(ValueError, "sample_weight: student 1 (row 1 of 3) has all-zero weights, and 1 more; its coefficients "
                        "are undefined (expected a positive weight on some column)", fit_wls, X, Y, W)
    W = np.ones_like(Y)
    W[0, 0] = NAN
    _raises(ValueError, "sample_weight: expected finite values, got 1 NaN or infinite value(s)", fit_wls, X, Y, W)
    W[0, 0] = -1.0
    _raises(ValueError, "sample_weight: expected non-negative values, got minimum -1.0", fit_wls, X, Y, W)
    W = np.ones_like(Y)
    W[0, :4] = 0.0  # zero weights on some inputs only: fine
    assert np.all(np.isfinite(fit_wls(X, Y, W)))


@pytest.mark.parametrize("shape", [(7,), (2, 8), (8, 3), (3, 8, 1), (1, 3)])
def test_batched_regression_checks_sample_weight_shape(shape):
    X, Y = _xy()
    w = np.ones(shape)
    exc = ValueError
    if len(shape) == 3:
        message = "sample_weight: expected a 1 or 2-d array, got shape (3, 8, 1)"
    else:
        message = f"sample_weight: expected shape (8,) or (3, 8) to match y (3, 8), got {shape}"
    _raises(exc, message, BatchedLinearRegression().fit, X, Y, sample_weight=w)


def test_batched_regression_valid_weights():
    X, Y = _xy()
    a = BatchedLinearRegression().fit(X, Y, sample_weight=np.full(8, 2.0))
    b = BatchedLinearRegression().fit(X, Y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-10)
    c = BatchedLinearRegression().fit(X, Y[0], sample_weight=np.ones(8))
    assert c.coef_.shape == (1, 2)


# ------------------------------------------------------------------------------------------ student ids

def DRAW(g, b):
    return g.standard_normal((b, 2))


@pytest.mark.parametrize("ids, exc, message", [
    ([0, 1, 1, 2], ValueError, "student_ids: expected distinct ids (each id is one independent student), "
                               "got id 1 2 times"),
    ([5, 5, 5], ValueError, "student_ids: expected distinct ids (each id is one independent student), got id 5 3 times"),
    ([0, -1], ValueError, "student_ids: expected non-negative ids, got minimum -1"),
    ([], ValueError, "student_ids: expected at least one student id"),
    ([0.5, 1.0], ValueError, "student_ids: expected integer ids, got np.float64(0.5)"),
    ([0, NAN], ValueError, "student_ids: expected integer ids, got np.float64(nan)"),
    (["a", "b"], TypeError, "student_ids: expected integer ids, got an array of dtype <U1"),
    ([True, False], TypeError, "student_ids: expected integer ids, got an array of dtype bool"),
])
def test_student_ids_are_distinct_non_negative_integers(ids, exc, message):
    _raises(exc, message, student_draws, 0, ("x",), ids, DRAW)
    _raises(exc, message, student_normals, 0, ("x",), ids, (2,))
    out = np.empty((max(len(ids), 1), 2))
    _raises(exc, message, student_fill, 0, ("x",), ids, [out], lambda g, v: g.standard_normal(out=v[0]))


def test_integral_float_ids_are_accepted_and_equal_int_ids():
    np.testing.assert_array_equal(student_draws(0, ("x",), [3.0, 1.0], DRAW), student_draws(0, ("x",), [3, 1], DRAW))
