import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from uqkd.students.linear import BatchedLinearRegression, fit_ols_batched, fit_wls_batched, loo_predictions


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    Y = X @ rng.standard_normal((4, 6)) + rng.standard_normal((50, 6))
    W = rng.uniform(0.1, 2.0, size=(50, 6))
    return X, Y, W


def test_ols_batched_matches_lstsq(data):
    X, Y, _ = data
    theta = fit_ols_batched(X, Y)
    D = np.hstack([np.ones((50, 1)), X])
    for r in range(Y.shape[1]):
        np.testing.assert_allclose(theta[:, r], np.linalg.lstsq(D, Y[:, r], rcond=None)[0], atol=1e-10)


def test_wls_batched_matches_sklearn(data):
    X, Y, W = data
    theta = fit_wls_batched(X, Y, W)
    for r in range(Y.shape[1]):
        lr = LinearRegression().fit(X, Y[:, r], sample_weight=W[:, r])
        np.testing.assert_allclose(theta[0, r], lr.intercept_, atol=1e-8)
        np.testing.assert_allclose(theta[1:, r], lr.coef_, atol=1e-8)


def test_wls_rank_deficient_gives_minimum_norm(data):
    X, Y, _ = data
    W = np.ones((50, 2))
    W[:45, 0] = 0.0  # student 0 sees 5 rows: 5 equations, 5 unknowns, then drop one more
    W[:46, 1] = 0.0  # student 1 sees 4 rows < 5 parameters: rank-deficient
    theta = fit_wls_batched(X, Y[:, :2], W)
    D = np.hstack([np.ones((50, 1)), X])
    for r in range(2):
        rows = W[:, r] > 0
        expected = np.linalg.pinv(D[rows]) @ Y[rows, r]
        np.testing.assert_allclose(theta[:, r], expected, atol=1e-7)


def test_loo_predictions_match_refits(data):
    X, Y, _ = data
    loo = loo_predictions(X, Y[:, :2])
    for i in (0, 17, 49):
        keep = np.arange(50) != i
        th = fit_ols_batched(X[keep], Y[keep, :2])
        np.testing.assert_allclose(loo[i], np.r_[1.0, X[i]] @ th, atol=1e-10)


def test_estimator_contract(data):
    X, Y, W = data
    est = BatchedLinearRegression()
    with pytest.raises(RuntimeError, match=r"call fit\(X, Y\) before predict"):
        est.predict(X)
    assert est.fit(X, Y, sample_weight=W) is est
    assert est.coef_.shape == (6, 4) and est.intercept_.shape == (6,)
    assert est.predict(X).shape == (50, 6)
    with pytest.raises(ValueError, match="X: expected 4 features, got 3"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match="Y: expected 50 rows"):
        fit_ols_batched(X, Y[:10])
    with pytest.raises(ValueError, match="W: expected non-negative values"):
        fit_wls_batched(X, Y, -W)
