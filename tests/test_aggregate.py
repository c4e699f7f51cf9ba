import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqkd import aggregate as ag


def test_average_and_sample_variance_shapes():
    ts = np.arange(24.0).reshape(4, 3, 2)
    assert ag.average(ts).shape == (4, 2)
    np.testing.assert_allclose(ag.average(ts), ts.mean(axis=1))
    np.testing.assert_allclose(ag.sample_variance(ts), ts.var(axis=1, ddof=1))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([1.0, 2.0]), r"teacher_samples: expected shape \(n_inputs, k, \.\.\.\)"),
        (np.zeros((3, 0)), r"teacher_samples: .*k >= 1"),
        (np.array([[1.0, np.nan]]), r"teacher_samples: expected finite values"),
        (np.array([[1.0, np.inf]]), r"teacher_samples: expected finite values"),
    ],
)
def test_average_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        ag.average(bad)


def test_sample_variance_needs_two_draws():
    with pytest.raises(ValueError, match="k > 1, got k=1"):
        ag.sample_variance(np.ones((3, 1)))


def test_inverse_variance_weights_and_errors():
    np.testing.assert_allclose(ag.inverse_variance_weights(np.array([1.0, 3.0])), [0.75, 0.25])
    w = ag.inverse_variance_weights(np.array([[1.0, 0.0], [1.0, 2.0]]))
    np.testing.assert_allclose(w, [[0.5, 1.0], [0.5, 0.0]])  # zero variance takes all the weight
    with pytest.raises(ValueError, match="variances: expected non-negative values"):
        ag.inverse_variance_weights(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="variances: expected finite values"):
        ag.inverse_variance_weights(np.array([1.0, np.nan]))


def test_combine_scalar_closed_form():
    est, var = ag.inverse_variance_combine(np.array([1.0, 4.0]), np.array([1.0, 2.0]))
    assert est == pytest.approx((1 / 1 + 4 / 2) / (1 / 1 + 1 / 2))
    assert var == pytest.approx(1 / (1 + 0.5))


def test_combine_mismatched_shapes():
    with pytest.raises(ValueError, match=r"variances: expected the shape of estimates \(2, 3\)"):
        ag.inverse_variance_combine(np.zeros((2, 3)), np.ones((2, 4)))


def test_combine_covariance_equals_generalised_least_squares():
    rng = np.random.default_rng(0)
    p, m = 3, 4
    ests = rng.standard_normal((m, p))
    covs = []
    for _ in range(m):
        A = rng.standard_normal((p, p))
        covs.append(A @ A.T + 0.5 * np.eye(p))
    covs = np.array(covs)
    est, cov = ag.inverse_variance_combine(ests, covs)
    # Hand-built GLS: stack the m estimates as observations of mu with design [I; I; ...].
    Z = np.vstack([np.eye(p)] * m)
    S = np.zeros((m * p, m * p))
    for j in range(m):
        S[j * p:(j + 1) * p, j * p:(j + 1) * p] = covs[j]
    Si = np.linalg.inv(S)
    gls_cov = np.linalg.inv(Z.T @ Si @ Z)
    gls = gls_cov @ Z.T @ Si @ ests.reshape(-1)
    np.testing.assert_allclose(est, gls, rtol=1e-10)
    np.testing.assert_allclose(cov, gls_cov, rtol=1e-10)


def test_combine_rejects_non_pd_covariance():
    with pytest.raises(ValueError, match="positive-definite"):
        ag.inverse_variance_combine(np.zeros((2, 2)), np.array([np.eye(2), -np.eye(2)]))


@settings(max_examples=60, deadline=None)
@given(
    v=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=6),
    raw=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=6, max_size=6),
)
def test_inverse_variance_beats_every_convex_combination(v, raw):
    v = np.array(v)
    w = np.array(raw[: len(v)]) + 1e-9
    w = w / w.sum()
    _, best = ag.inverse_variance_combine(np.zeros_like(v), v)
    assert best <= float(np.sum(w**2 * v)) * (1 + 1e-9)


def test_combination_variance_matches_monte_carlo():
    rng = np.random.default_rng(1)
    v = np.array([1.0, 4.0, 0.5])
    n = 200_000
    draws = rng.standard_normal((3, n)) * np.sqrt(v)[:, None]
    comb, var = ag.inverse_variance_combine(draws, np.broadcast_to(v[:, None], draws.shape))
    emp = comb.var()
    se = var[0] * np.sqrt(2 / (n - 1))
    assert abs(emp - var[0]) < 4 * se


def test_shrunk_variance_pools_under_homoscedastic_and_not_under_heteroscedastic():
    rng = np.random.default_rng(2)
    n, k = 400, 5
    homo = rng.standard_normal((n, k))
    nu_homo = ag.estimate_prior_df(homo.var(axis=1, ddof=1), k, axis=0)
    scale = np.exp(rng.standard_normal(n))
    het = rng.standard_normal((n, k)) * scale[:, None]
    nu_het = ag.estimate_prior_df(het.var(axis=1, ddof=1), k, axis=0)
    assert nu_het < 20 and (np.isinf(nu_homo) or nu_homo > 50)
    # Shrinkage reduces the estimation error of per-input variances.
    raw_err = np.mean((het.var(axis=1, ddof=1) - scale**2) ** 2)
    shr_err = np.mean((ag.shrunk_variance(het) - scale**2) ** 2)
    assert shr_err < raw_err
    np.testing.assert_allclose(ag.shrunk_variance(het, prior_df=0.0), het.var(axis=1, ddof=1))
    np.testing.assert_allclose(ag.shrunk_variance(het, prior_df=np.inf), np.full(n, het.var(axis=1, ddof=1).mean()))


def test_paper_oracle_labels_formula():
    mean_k, var_k, mu, nv = 2.0, 1.0, 0.0, 3.0
    a_t = (1 / var_k) / (1 / var_k + 1 / nv)
    assert ag.paper_oracle_labels(mean_k, var_k, mu, nv) == pytest.approx(a_t * mean_k + (1 - a_t) * mu)
    assert ag.paper_oracle_labels(2.0, 0.0, 0.0, 3.0) == pytest.approx(2.0)  # k = 1: zero sample variance


def test_inverse_variance_sample_weights_k1_is_uniform():
    np.testing.assert_array_equal(ag.inverse_variance_sample_weights(np.array([1.0, 2.0]), 1), [1.0, 1.0])
    w = ag.inverse_variance_sample_weights(np.array([1.0, 4.0]), 3, prior_df=0.0)
    np.testing.assert_allclose(w, [3.0, 0.75])
    with pytest.raises(ValueError, match="k: expected an integer >= 1, got 0"):
        ag.inverse_variance_sample_weights(np.array([1.0]), 0)


def test_paper_oracle_beats_averaging_by_construction_even_with_its_weights_swapped():
    """Why S7 is a code check: the published label shrinks the k-draw mean toward the noise-free teacher mean, so it
    is closer to that mean than averaging whatever the weights (here alpha_T and alpha_S swapped), since every
    convex combination with weight < 1 on the noisy mean lowers its error."""
    rng = np.random.default_rng(0)
    mu, nv, k = rng.normal(size=2000), 0.5, 5
    draws = mu[:, None] + np.sqrt(nv) * rng.normal(size=(2000, k))
    mean_k, var_k = draws.mean(axis=1), draws.var(axis=1)
    paper = ag.paper_oracle_labels(mean_k, var_k, mu, nv)
    a_t = nv / (nv + var_k)
    swapped = (1 - a_t) * mean_k + a_t * mu
    err = {name: float(np.mean((y - mu) ** 2)) for name, y in (("avg", mean_k), ("paper", paper), ("swapped", swapped))}
    assert err["paper"] < err["avg"] and err["swapped"] < err["avg"]
