"""Allocating a teacher-sampling budget: optimality, closed forms, Monte Carlo, input checks."""

import heapq

import numpy as np
import pytest
from scipy import stats

from uqkd import aggregate as ag
from uqkd import theory

X6 = np.random.default_rng(0).standard_normal((6, 2))


def _compositions(n, B, m):
    """Every integer vector k >= m with sum B."""
    if n == 1:
        if B >= m:
            yield (B,)
        return
    for k in range(m, B - m * (n - 1) + 1):
        for rest in _compositions(n - 1, B - k, m):
            yield (k, *rest)


def _heap_greedy(a, B, m):
    """Reference: one draw at a time to the largest marginal gain a_i / (k_i (k_i + 1))."""
    k = [m] * len(a)
    h = [(-ai / (m * (m + 1)), i) for i, ai in enumerate(a)]
    heapq.heapify(h)
    for _ in range(B - m * len(a)):
        _, i = heapq.heappop(h)
        k[i] += 1
        heapq.heappush(h, (-a[i] / (k[i] * (k[i] + 1)), i))
    return np.array(k)


def _objective(a, k):
    return float(np.sum(np.asarray(a) / np.asarray(k)))


@pytest.mark.parametrize("case", range(300))
def test_allocation_is_optimal_among_all_integer_allocations(case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 5))
    m = int(rng.integers(1, 3))
    B = n * m + int(rng.integers(0, 11))
    v = rng.exponential(size=n) ** rng.choice([1, 3])
    w = rng.exponential(size=n) if rng.random() < 0.5 else None
    if rng.random() < 0.2:
        v[rng.integers(n)] = 0.0
    if rng.random() < 0.2:
        v[:] = v[0]
    a = v * (1.0 if w is None else w)
    k = ag.allocate_budget(v, B, w, min_per_input=m)
    assert k.dtype.kind == "i" and k.sum() == B and k.min() >= m
    best = min(_objective(a, c) for c in _compositions(n, B, m))
    assert _objective(a, k) <= best * (1 + 1e-12) + 1e-300
    assert _objective(a, k) == pytest.approx(_objective(a, _heap_greedy(a, B, m)), rel=1e-12, abs=1e-300)


def _dp_minimum(a, B, m):
    """Exact minimum of sum a_i / k_i over integers k_i >= m, sum k = B, by dynamic programming over inputs."""
    R = B - m * len(a)
    best = np.zeros(R + 1)  # best[r]: minimum over the inputs so far using r draws above the floor
    for ai in a:
        f = ai / (m + np.arange(R + 1))  # cost of this input with m + t draws
        best = np.array([np.min(f[: r + 1] + best[r::-1]) for r in range(R + 1)])
    return float(best[R])


@pytest.mark.parametrize("case", range(150))
def test_allocation_matches_dynamic_programming_on_larger_cases(case):
    """Larger cases, half of them one dominant input beside many similar small ones (where rounding fails)."""
    rng = np.random.default_rng(10_000 + case)
    n = int(rng.integers(3, 12))
    m = int(rng.integers(1, 3))
    B = n * m + int(rng.integers(0, 40))
    if case % 2:
        v = np.concatenate([[rng.uniform(20, 200)], rng.uniform(1, 4) * rng.uniform(0.9, 1.1, size=n - 1)])
    else:
        v = rng.exponential(size=n) ** 3
    k = ag.allocate_budget(v, B, min_per_input=m)
    assert k.sum() == B and k.min() >= m
    assert _objective(v, k) == pytest.approx(_dp_minimum(v, B, m), rel=1e-12)


def test_rounding_the_continuous_optimum_is_not_enough():
    """Continuous optimum (10, 1.6 x 5): flooring and topping up gives k_1 = 10; the integer optimum has 9."""
    a = np.array([100.0, 2.56, 2.56, 2.56, 2.56, 2.56])
    np.testing.assert_allclose(ag.neyman_allocation(a, 18), [10, 1.6, 1.6, 1.6, 1.6, 1.6])
    k = ag.allocate_budget(a, 18)
    assert k[0] == 9 and sorted(k[1:].tolist()) == [1, 2, 2, 2, 2]
    assert _objective(a, k) < _objective(a, [10, 2, 2, 2, 1, 1])
    assert _objective(a, k) == pytest.approx(min(_objective(a, c) for c in _compositions(6, 18, 1)))


@pytest.mark.parametrize("n, per", [(1, 1), (3, 1), (4, 5), (7, 3), (405, 20)])
def test_homoscedastic_equal_weights_give_the_uniform_allocation(n, per):
    for w in (None, np.full(n, 0.3)):
        k = ag.allocate_budget(np.full(n, 2.5), n * per, w)
        assert k.tolist() == [per] * n
    np.testing.assert_allclose(ag.neyman_allocation(np.full(n, 2.5), n * per), per)
    assert theory.allocation_gain(np.full(n, 2.5)) == pytest.approx(1.0)
    assert theory.allocation_gain(np.full(n, 2.5), budget=n * per) == pytest.approx(1.0)


def test_batched_rows_equal_row_by_row_and_large_budgets():
    rng = np.random.default_rng(0)
    v = rng.exponential(size=(6, 50)) ** 3
    v[2] = 0.0  # nothing to gain: spread evenly
    w = rng.exponential(size=50)
    k = ag.allocate_budget(v, 50 * 40, w, min_per_input=2)
    assert k.shape == v.shape and np.all(k.sum(axis=1) == 2000) and k.min() >= 2
    for r in range(6):
        np.testing.assert_array_equal(k[r], ag.allocate_budget(v[r], 2000, w, min_per_input=2))
    assert np.ptp(k[2]) <= 1
    a = v[0] * w
    assert _objective(a, k[0]) == pytest.approx(_objective(a, _heap_greedy(a, 2000, 2)), rel=1e-12)


def test_neyman_allocation_satisfies_the_kkt_conditions():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        v = rng.exponential(size=n) ** 3
        w = rng.exponential(size=n)
        m = int(rng.integers(1, 4))
        B = n * m + int(rng.integers(0, 5 * n))
        k = ag.neyman_allocation(v, B, w, min_per_input=m)
        assert k.sum() == pytest.approx(B) and k.min() >= m - 1e-12
        s = np.sqrt(v * w)
        free = k > m + 1e-9
        if free.any():
            lam = k[free] / s[free]
            np.testing.assert_allclose(lam, lam[0], rtol=1e-9)  # k_i = lambda sigma_i sqrt(c_i) off the floor
            assert np.all(lam[0] * s[~free] <= m * (1 + 1e-9))  # clamped inputs would want less than the floor
        # The integer optimum can only be worse than the continuous one.
        ki = ag.allocate_budget(v, B, w, min_per_input=m)
        assert _objective(v * w, ki) >= _objective(v * w, k) * (1 - 1e-12)


def test_allocation_gain_closed_form_and_integer_limit():
    rng = np.random.default_rng(2)
    v, c = rng.exponential(size=40) ** 2, rng.exponential(size=40)
    g = theory.allocation_gain(v, c)
    assert g == pytest.approx(np.sum(np.sqrt(c * v)) ** 2 / (40 * np.sum(c * v)))
    assert 0 < g < 1
    # Equality iff sigma_i sqrt(c_i) is constant.
    assert theory.allocation_gain(1.0 / c, c) == pytest.approx(1.0)
    exact = [theory.allocation_gain(v, c, budget=40 * b) for b in (1, 2, 5, 50, 2000)]
    assert exact[0] == pytest.approx(1.0)  # B = n: everyone gets one draw
    assert all(e >= g - 1e-12 for e in exact)  # the floor and integrality only cost
    assert exact[-1] == pytest.approx(g, rel=1e-3)
    # Exact version is the closed-form variance ratio of the allocation it makes.
    X = rng.standard_normal((40, 2))
    k = ag.allocate_budget(v, 200, theory.allocation_weights(X))
    ratio = theory.allocation_variance(X, v, k) / theory.allocation_variance(X, v, 5)
    assert ratio == pytest.approx(theory.allocation_gain(v, theory.allocation_weights(X), budget=200))


def test_allocation_variance_agrees_with_the_existing_closed_forms():
    rng = np.random.default_rng(3)
    X, Xe = rng.standard_normal((30, 3)), rng.standard_normal((12, 3))
    v = rng.exponential(size=30)
    # Constant k: the OLS sandwich of wls_param_cov.
    C = theory.allocation_param_cov(X, v, 4)
    np.testing.assert_allclose(C, theory.wls_param_cov(X, v, weights=np.ones(30), k=4), rtol=1e-10)
    k = rng.integers(1, 9, size=30)
    C = theory.allocation_param_cov(X, v, k)
    D = theory.design_matrix(X)
    G = np.linalg.inv(D.T @ D)
    np.testing.assert_allclose(C, G @ D.T @ np.diag(v / k) @ D @ G, rtol=1e-10)
    assert theory.allocation_variance(X, v, k) == pytest.approx(np.trace(C))
    assert theory.allocation_variance(X, v, k, Xe, quantity="predictions") == pytest.approx(
        theory.expected_inter_student_var(Xe, C))
    xbar = theory.design_matrix(Xe).mean(axis=0)
    assert theory.allocation_variance(X, v, k, Xe, quantity="mean-prediction") == pytest.approx(xbar @ C @ xbar)
    # Batched allocations.
    kb = np.stack([k, k + 1])
    np.testing.assert_allclose(theory.allocation_variance(X, v, kb),
                               [theory.allocation_variance(X, v, k), theory.allocation_variance(X, v, k + 1)])
    assert theory.allocation_param_cov(X, v, kb).shape == (2, 4, 4)


def _mc_students(X, mu, v, k, R, rng):
    """R OLS students, each on the mean of k_i genuine draws per input."""
    D = theory.design_matrix(X)
    P = np.linalg.pinv(D)
    n = len(mu)
    ybar = np.empty((R, n))
    for i in range(n):
        ybar[:, i] = (mu[i] + np.sqrt(v[i]) * rng.standard_normal((R, k[i]))).mean(axis=1)
    return ybar @ P.T  # (R, p)


def test_monte_carlo_variance_of_ols_students_matches_the_closed_form():
    rng = np.random.default_rng(4)
    n, R = 40, 2000
    X = rng.standard_normal((n, 3))
    mu = theory.design_matrix(X) @ np.array([0.5, 1.0, -1.0, 0.2])
    v = np.exp(1.5 * rng.standard_normal(n))  # strongly heteroscedastic
    c = theory.allocation_weights(X)
    k = ag.allocate_budget(v, 5 * n, c)
    theta = _mc_students(X, mu, v, k, R, rng)
    C_mc = np.cov(theta, rowvar=False)
    C = theory.allocation_param_cov(X, v, k)
    # Each diagonal entry: s^2 / sigma^2 ~ chi2_{R-1}; two-sided 1e-4 bands, Bonferroni over p.
    p = C.shape[0]
    lo, hi = stats.chi2.ppf([1e-4 / (2 * p), 1 - 1e-4 / (2 * p)], R - 1) / (R - 1)
    ratio = np.diag(C_mc) / np.diag(C)
    assert np.all((lo < ratio) & (ratio < hi)), ratio
    # Trace: a sum of correlated variance estimates has relative SD at most sqrt(2 / (R - 1)).
    tol = 4 * np.sqrt(2 / (R - 1))
    assert np.trace(C_mc) == pytest.approx(theory.allocation_variance(X, v, k), rel=tol)
    # ... and the check has power: the homoscedastic formula at the mean variance and mean k is rejected.
    wrong = np.mean(v) / np.mean(k) * np.trace(np.linalg.inv(theory.design_matrix(X).T @ theory.design_matrix(X)))
    assert abs(np.trace(C_mc) / wrong - 1) > 3 * tol


def test_monte_carlo_gain_matches_the_predicted_gain():
    rng = np.random.default_rng(5)
    n, R = 30, 2000
    X = rng.standard_normal((n, 2))
    mu = np.zeros(n)
    v = np.exp(2.0 * rng.standard_normal(n))
    c = theory.allocation_weights(X)
    B = 6 * n
    t_opt = _mc_students(X, mu, v, ag.allocate_budget(v, B, c), R, rng)
    t_uni = _mc_students(X, mu, v, np.full(n, 6), R, rng)
    measured = np.trace(np.cov(t_opt, rowvar=False)) / np.trace(np.cov(t_uni, rowvar=False))
    predicted = theory.allocation_gain(v, c, budget=B)
    assert predicted < 0.8
    # Independent samples: log ratio SD <= 2 sqrt(2 / (R - 1)) (two correlated-variance sums).
    assert abs(np.log(measured / predicted)) < 4 * 2 * np.sqrt(2 / (R - 1))


def test_two_stage_allocation_keeps_the_pilot_and_the_budget():
    rng = np.random.default_rng(6)
    pv = rng.exponential(size=(5, 20)) * np.linspace(0.1, 10, 20)
    k, v = ag.allocate_budget_two_stage(pv, 3, 20 * 7)
    assert k.shape == (5, 20) and np.all(k.sum(axis=1) == 140) and k.min() >= 3
    np.testing.assert_allclose(v, ag.shrunk_variance_from_moments(pv, 3, axis=-1))
    np.testing.assert_array_equal(k, ag.allocate_budget(v, 140, min_per_input=3))
    k0, v0 = ag.allocate_budget_two_stage(pv[0], 3, 60, prior_df=0)
    np.testing.assert_allclose(v0, pv[0])
    assert k0.tolist() == [3] * 20  # no draws left after the pilot


def test_unequal_k_shrinkage_reduces_to_the_equal_k_estimator():
    rng = np.random.default_rng(7)
    s2 = rng.exponential(size=(4, 30)) * np.linspace(0.5, 3, 30)
    for prior in ("auto", 0, 5.0):
        np.testing.assert_allclose(ag.shrunk_variance_unequal_k(s2, 4, prior_df=prior),
                                   ag.shrunk_variance_from_moments(s2, 4, prior_df=prior, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(ag.shrunk_variance_unequal_k(s2.T, 4, axis=0),
                               ag.shrunk_variance_from_moments(s2.T, 4, axis=0), rtol=1e-12)
    k = rng.integers(1, 8, size=(4, 30))
    k[:, :2] = 3
    out = ag.shrunk_variance_unequal_k(s2, k, prior_df=0)
    d = k - 1.0
    sp = (d * s2).sum(axis=1, keepdims=True) / d.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, np.where(k > 1, s2, sp))  # no shrinkage; one-draw inputs get the pooled value
    full = ag.shrunk_variance_unequal_k(s2, k, prior_df=np.inf)
    np.testing.assert_allclose(full, np.broadcast_to(sp, s2.shape))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ag.allocate_budget(np.array([1.0, -1.0]), 4), ValueError, "variances: expected non-negative"),
        (lambda: ag.allocate_budget(np.array([1.0, np.nan]), 4), ValueError, "variances: expected finite"),
        (lambda: ag.allocate_budget(np.float64(1.0), 4), ValueError, r"variances: expected shape \(\.\.\., n_inputs\)"),
        (lambda: ag.allocate_budget(np.ones(3), 2), ValueError, "budget: expected an integer >= 3, got 2"),
        (lambda: ag.allocate_budget(np.ones(3), 5, min_per_input=2), ValueError, "budget: expected an integer >= 6"),
        (lambda: ag.allocate_budget(np.ones(3), 6.0), TypeError, "budget: expected an integer"),
        (lambda: ag.allocate_budget(np.ones(3), 6, min_per_input=0), ValueError, "min_per_input: expected an integer >= 1"),
        (lambda: ag.allocate_budget(np.ones(3), 6, np.ones(4)), ValueError, r"weights: expected a shape that broadcasts"),
        (lambda: ag.allocate_budget(np.ones(3), 6, -np.ones(3)), ValueError, "weights: expected non-negative"),
        (lambda: ag.neyman_allocation(np.ones(3), 2), ValueError, "budget: expected an integer >= 3"),
        (lambda: ag.allocate_budget_two_stage(np.ones(3), 1, 9), ValueError, "pilot_k: expected an integer >= 2"),
        (lambda: ag.allocate_budget_two_stage(np.ones(3), 2, 5), ValueError, "budget: expected an integer >= 6"),
        (lambda: ag.shrunk_variance_unequal_k(np.ones(3), np.array([1, 1, 2])), ValueError, "k: expected at least two"),
        (lambda: ag.shrunk_variance_unequal_k(np.ones(3), np.array([0, 2, 2])), ValueError, "k: expected draw counts >= 1"),
        (lambda: ag.shrunk_variance_unequal_k(np.ones(3), np.ones(4, int) * 2), ValueError, "k: expected a shape"),
        (lambda: theory.allocation_gain(np.ones((2, 2))), ValueError, r"variances: expected shape \(n_inputs,\)"),
        (lambda: theory.allocation_gain(np.ones(3), np.ones(2)), ValueError, r"weights: expected shape \(3,\)"),
        (lambda: theory.allocation_gain(np.ones(3), budget=2), ValueError, "budget: expected an integer >= 3"),
        (lambda: theory.allocation_variance(X6, np.ones(2), 1), ValueError, r"noise_var: expected shape \(6,\)"),
        (lambda: theory.allocation_variance(X6, np.ones(6), 0), ValueError, "k: expected finite draw counts >= 1"),
        (lambda: theory.allocation_param_cov(X6, np.ones(6), np.ones(2)), ValueError, r"k: expected shape \(\.\.\., 6\)"),
        (lambda: theory.allocation_weights(X6, quantity="predictions"), ValueError, "X_eval: expected an array"),
        (lambda: theory.allocation_weights(X6, quantity="bogus"), ValueError, "quantity: expected one of"),
        (lambda: theory.allocation_weights(X6, np.ones((2, 3)), quantity="predictions"), ValueError,
         "X_eval: expected 2 features, got 3"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------ multivariate dispersions (SBERT pilots)


def _embedding_pilots(rng, n=40, k=3, d=50, sigma=None):
    lam = np.exp(-np.arange(d) / 8.0)  # an anisotropic within-question covariance
    sigma = np.ones(n) if sigma is None else sigma
    return rng.normal(size=(n, k, d)) * np.sqrt(lam) * sigma[:, None, None], lam


def test_dispersion_sample_df_recovers_satterthwaite_and_matches_monte_carlo():
    from uqkd.aggregate import dispersion_sample_df

    rng = np.random.default_rng(0)
    x, lam = _embedding_pilots(rng, n=40, k=4)
    nu = 3 * lam.sum() ** 2 / (lam**2).sum()
    assert dispersion_sample_df(x) == pytest.approx(nu, rel=0.1)
    # the dispersion's relative variance is 2 / nu (chi-square with nu df), not 2 / (k - 1)
    y, _ = _embedding_pilots(rng, n=20000, k=4)
    s2 = y.var(axis=1, ddof=1).sum(-1)
    assert s2.var() / s2.mean() ** 2 == pytest.approx(2 / nu, rel=0.05)
    with pytest.raises(ValueError, match="samples: expected shape"):
        dispersion_sample_df(np.zeros((3, 1, 4)))


def test_pilot_dispersions_are_not_pooled_away_with_their_own_degrees_of_freedom():
    """Heteroscedastic questions (sd x1 .. x2): with k - 1 = 2 df the shrinkage pools everything and the
    allocation is uniform; with the dispersions' own df it follows the spread. Homoscedastic ones stay
    (nearly) uniform either way."""
    from uqkd.aggregate import allocate_budget_two_stage, dispersion_sample_df

    rng = np.random.default_rng(1)
    sigma = np.linspace(1.0, 2.0, 40)
    x, _ = _embedding_pilots(rng, sigma=sigma)
    s2 = x.var(axis=1, ddof=1).sum(-1)
    k_naive, _ = allocate_budget_two_stage(s2, 3, 40 * 8)
    k_own, _ = allocate_budget_two_stage(s2, 3, 40 * 8, sample_df=dispersion_sample_df(x))
    assert k_naive.min() == k_naive.max()
    assert np.corrcoef(k_own, sigma)[0, 1] > 0.6 and k_own[-5:].mean() > 1.3 * k_own[:5].mean()  # measured 0.74, 1.42
    h, _ = _embedding_pilots(np.random.default_rng(2))
    k_h, _ = allocate_budget_two_stage(h.var(axis=1, ddof=1).sum(-1), 3, 40 * 8, sample_df=dispersion_sample_df(h))
    assert k_h.max() - k_h.min() <= 2
