import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression

from uqkd.students.linear import BatchedLinearRegression, fit_ols, fit_wls, loo_predictions


@pytest.fixture
def data():
    """X (n, d), targets (R, n), weights (R, n): students are rows."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    Y = (X @ rng.standard_normal((4, 6)) + rng.standard_normal((50, 6))).T
    W = rng.uniform(0.1, 2.0, size=(6, 50))
    return X, Y, W


def test_ols_matches_lstsq(data):
    X, Y, _ = data
    theta = fit_ols(X, Y)
    assert theta.shape == (6, 5)
    D = np.hstack([np.ones((50, 1)), X])
    for r in range(Y.shape[0]):
        np.testing.assert_allclose(theta[r], np.linalg.lstsq(D, Y[r], rcond=None)[0], atol=1e-10)


def test_wls_matches_sklearn(data):
    X, Y, W = data
    theta = fit_wls(X, Y, W)
    for r in range(Y.shape[0]):
        lr = LinearRegression().fit(X, Y[r], sample_weight=W[r])
        np.testing.assert_allclose(theta[r, 0], lr.intercept_, atol=1e-8)
        np.testing.assert_allclose(theta[r, 1:], lr.coef_, atol=1e-8)


def test_wls_rank_deficient_gives_minimum_norm(data):
    X, Y, _ = data
    W = np.ones((2, 50))
    W[0, :45] = 0.0  # student 0 sees 5 rows: 5 equations, 5 unknowns, then drop one more
    W[1, :46] = 0.0  # student 1 sees 4 rows < 5 parameters: rank-deficient
    theta = fit_wls(X, Y[:2], W)
    D = np.hstack([np.ones((50, 1)), X])
    for r in range(2):
        rows = W[r] > 0
        expected = np.linalg.pinv(D[rows]) @ Y[r, rows]
        np.testing.assert_allclose(theta[r], expected, atol=1e-7)


def test_loo_predictions_match_refits(data):
    X, Y, _ = data
    loo = loo_predictions(X, Y[:2])
    assert loo.shape == (2, 50)
    for i in (0, 17, 49):
        keep = np.arange(50) != i
        th = fit_ols(X[keep], Y[:2, keep])  # (2, p)
        np.testing.assert_allclose(loo[:, i], th @ np.r_[1.0, X[i]], atol=1e-10)
    np.testing.assert_array_equal(BatchedLinearRegression().held_out_predictions(X, Y[:2]), loo)


def test_estimator_contract(data):
    X, Y, W = data
    est = BatchedLinearRegression()
    with pytest.raises(NotFittedError):
        est.predict(X)
    assert est.fit(X, Y, sample_weight=W) is est
    assert est.coef_.shape == (6, 4) and est.intercept_.shape == (6,) and est.n_students_ == 6
    pred = est.predict(X)
    assert pred.shape == (6, 50)  # (R, m): students as rows, like the targets
    np.testing.assert_allclose(pred, fit_wls(X, Y, W) @ np.hstack([np.ones((50, 1)), X]).T, atol=1e-10)
    with pytest.raises(ValueError, match="X: X has 3 features, but BatchedLinearRegression is expecting 4"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match=r"targets: expected shape \(R, 50\)"):
        fit_ols(X, Y[:, :10])
    with pytest.raises(ValueError, match="sample_weight: expected non-negative values"):
        fit_wls(X, Y, -W)
    twin = clone(est.set_params(rcond=1e-8))
    assert twin.get_params() == {"fit_intercept": True, "rcond": 1e-8} and not hasattr(twin, "coef_")
