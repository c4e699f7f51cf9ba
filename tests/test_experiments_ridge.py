"""ridge-teacher-noise-linear (uqkd.experiments.ridge): the ridge fit, its closed-form covariance and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from uqkd.experiments import get_experiment
from uqkd.experiments.ridge import RidgeTeacherNoiseConfig, fit_ridge, ridge_param_cov


def _design(n=60, p=4, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[np.ones(n), rng.standard_normal((n, p))], rng


def test_lambda_zero_is_ols_and_a_penalty_shrinks_only_the_features():
    D, rng = _design()
    Y = rng.standard_normal((3, len(D)))
    np.testing.assert_allclose(fit_ridge(D, Y, 0.0), np.linalg.lstsq(D, Y.T, rcond=None)[0].T, atol=1e-10)
    big = fit_ridge(D, Y + 5.0, 1e6)  # features shrunk to ~0; the unpenalised intercept keeps the labels' mean
    assert np.all(np.abs(big[:, 1:]) < 1e-3)
    np.testing.assert_allclose(big[:, 0], (Y + 5.0).mean(axis=1), rtol=1e-3)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_closed_form_covariance_matches_monte_carlo(lam):
    D, rng = _design(seed=1)
    noise_var = 0.7
    theta = fit_ridge(D, np.sqrt(noise_var) * rng.standard_normal((20000, len(D))), lam)
    C = ridge_param_cov(D, lam, noise_var)
    np.testing.assert_allclose(np.cov(theta, rowvar=False), C, atol=0.05 * np.abs(C).max())
    if lam > 0:  # ridge shrinks OLS's sigma^2 (X'X)^-1
        assert np.trace(C) < np.trace(ridge_param_cov(D, 0.0, noise_var))


def test_same_seed_same_numbers_and_cells():
    exp = get_experiment("ridge-teacher-noise-linear")
    cfg = RidgeTeacherNoiseConfig(n_students=50, sigmas=(1.0,), lambdas=(0.0, 1.0))
    cells = exp.cells(cfg)
    assert cells == [{"sigma": 1.0, "lam": 0.0}, {"sigma": 1.0, "lam": 1.0}]
    a, b = exp.run_cell(cfg, cells[1], 3), exp.run_cell(cfg, cells[1], 3)
    assert a == b
    assert a[0]["inter_student_var"] < exp.run_cell(cfg, cells[0], 3)[0]["inter_student_var"]  # shrinkage


def test_bad_settings_name_the_argument():
    with pytest.raises(Exception, match="lambdas"):
        RidgeTeacherNoiseConfig(lambdas=(-1.0,))
    with pytest.raises(Exception, match="sigmas"):
        RidgeTeacherNoiseConfig(sigmas=(0.0,))
