import numpy as np
import pytest
from scipy import stats

from uqkd import theory
from uqkd.experiments.linear import linear_setup, teacher_moments


@pytest.fixture(scope="module")
def boston():
    return linear_setup("boston", 0)


def test_ols_param_cov_intercept_is_row_zero():
    X = np.array([[0.0], [1.0], [2.0], [4.0]])
    C = theory.ols_param_cov(X, 2.0, k=4)
    D = np.c_[np.ones(4), X]
    np.testing.assert_allclose(C, 0.5 * np.linalg.inv(D.T @ D))
    assert C[0, 0] == pytest.approx(0.5 * np.linalg.inv(D.T @ D)[0, 0])
    with pytest.raises(ValueError, match="k: expected an integer >= 1, got 0"):
        theory.ols_param_cov(X, 1.0, k=0)
    with pytest.raises(ValueError, match="sigma2: expected a number >= 0.0"):
        theory.ols_param_cov(X, -1.0)


def test_monte_carlo_param_cov_within_sampling_error(boston):
    """Var(theta_S) = sigma^2 (X^T X)^-1 on Boston: every variance within 4.5 standard errors."""
    R, sigma2 = 4000, 0.5
    nv = np.full(len(boston.mu_train), sigma2)
    mean, _ = teacher_moments(boston.mu_train, nv, 1, np.arange(R), 0, ("test-cov",), "draws")
    theta = mean @ boston.pinv.T  # (R, p)
    C = theory.ols_param_cov(boston.split.X_train, sigma2)
    C_mc = np.cov(theta, rowvar=False)
    # Sampling SE of a covariance estimate of Gaussian vectors: sqrt((C_ij^2 + C_ii C_jj) / (R - 1)).
    se = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / (R - 1))
    z = np.abs(C_mc - C) / se
    assert z.max() < 4.5, z.max()
    # Mean of theta is the teacher's parameters (unbiased).
    assert np.all(np.abs(theta.mean(axis=0) - boston.theta_teacher) < 4.5 * np.sqrt(np.diag(C) / R))


def test_expected_mse_matches_monte_carlo(boston):
    R, sigma2, k = 3000, 1.0, 4
    nv = np.full(len(boston.mu_train), sigma2)
    mean, _ = teacher_moments(boston.mu_train, nv, k, np.arange(R), 0, ("test-mse",), "exact")
    pred = (mean @ boston.pinv.T) @ boston.D_test.T
    mse = ((pred - boston.split.y_test) ** 2).mean(axis=1)
    sp = boston.split
    expected = theory.ols_expected_mse(sp.X_train, boston.mu_train, sp.X_test, sp.y_test, sigma2, k)
    assert abs(mse.mean() - expected) < 4 * mse.std(ddof=1) / np.sqrt(R)


def test_inter_student_variance_slope_is_minus_one(boston):
    ks = np.array([1, 2, 4, 8, 16, 32, 64])
    nv = np.full(len(boston.mu_train), 0.5)
    v = []
    for k in ks:
        mean, _ = teacher_moments(boston.mu_train, nv, int(k), np.arange(600), 0, ("slope",), "exact")
        pred = (mean @ boston.pinv.T) @ boston.D_test.T
        v.append(pred.var(axis=0, ddof=1).mean())
    slope = np.polyfit(np.log(ks), np.log(v), 1)[0]
    assert abs(slope + 1) < 0.1, slope


def test_wls_param_cov_sandwich_matches_monte_carlo(boston):
    rng = np.random.default_rng(3)
    n = len(boston.mu_train)
    nv = np.exp(rng.standard_normal(n))
    R = 4000
    mean, _ = teacher_moments(boston.mu_train, nv, 1, np.arange(R), 0, ("sandwich",), "exact")
    theta = mean @ boston.pinv.T
    C = theory.wls_param_cov(boston.split.X_train, nv, weights=np.ones(n))
    se = np.sqrt((C**2 + np.outer(np.diag(C), np.diag(C))) / (R - 1))
    assert (np.abs(np.cov(theta, rowvar=False) - C) / se).max() < 4.5
    # Known-variance WLS is never worse than OLS (Gauss-Markov).
    C_opt = theory.wls_param_cov(boston.split.X_train, nv)
    assert np.all(np.linalg.eigvalsh(C - C_opt) > -1e-12)


def test_combined_variance():
    assert theory.inverse_variance_combined_variance(np.array([1.0, 1.0])) == pytest.approx(0.5)
    M = np.array([np.eye(2), 3 * np.eye(2)])
    np.testing.assert_allclose(theory.inverse_variance_combined_variance(M), 0.75 * np.eye(2))


@pytest.mark.parametrize("k", [2, 5, 20])
def test_exact_shortcut_has_the_distribution_of_k_draws(boston, k):
    """The 2-draw sufficient-statistic shortcut equals sampling all k responses in distribution."""
    mu = boston.mu_train[:3]
    nv = np.array([0.3, 1.0, 2.0])
    R = 4000
    m1, v1 = teacher_moments(mu, nv, k, np.arange(R), 1, ("dist",), "exact")
    m2, v2 = teacher_moments(mu, nv, k, np.arange(R), 2, ("dist",), "draws")
    for i in range(3):
        assert stats.ks_2samp(m1[:, i], m2[:, i]).pvalue > 1e-3
        assert stats.ks_2samp(v1[:, i], v2[:, i]).pvalue > 1e-3
        # And both match the textbook laws.
        assert stats.kstest((m2[:, i] - mu[i]) / np.sqrt(nv[i] / k), "norm").pvalue > 1e-3
        assert stats.kstest(v1[:, i] * (k - 1) / nv[i], stats.chi2(k - 1).cdf).pvalue > 1e-3
