"""The method registry (uqkd.methods): labels and weights by hand, and the single dispatch point."""

from __future__ import annotations

import numpy as np
import pytest

import uqkd.methods as M
from uqkd import aggregate
from uqkd.config import ConfigError, build_config
from uqkd.experiments import get_experiment

K = 3
# two students, four inputs, three draws each: (R, n, k)
DRAWS = np.array([
    [[1.0, 2.0, 3.0], [0.0, 0.5, 1.0], [4.0, 4.0, 7.0], [-1.0, 1.0, 0.0]],
    [[2.0, 2.5, 0.5], [1.0, 3.0, 2.0], [0.0, 0.1, 0.2], [5.0, 4.0, 6.0]],
])
MEAN = DRAWS.mean(axis=2)
VAR = DRAWS.var(axis=2, ddof=1)
MU = np.array([1.5, 0.25, 4.5, 0.5])  # noise-free teacher mean (oracle)
NV = np.array([0.5, 1.0, 2.0, 0.25])  # true per-draw noise variance (oracle)
SINGLE = DRAWS[:, :, 0]


def _targets(name, k=K, mean=MEAN, var=VAR, reference=None):
    return M.method_targets(name, mean_k=mean, var_k=var, k=k, single=SINGLE, noise_var=NV, teacher_mean=MU,
                            reference=reference)


def test_registry_names_and_oracle_flags():
    assert M.method_names("tabular") == ("single", "averaging", "variance-weighting-paper-oracle",
                                         "variance-weighting-wls", "variance-weighting-shrinkage")
    assert [n for n, m in M.METHODS.items() if m.oracle] == ["variance-weighting-paper-oracle"]
    from uqkd.experiments.linear import LINEAR_METHODS
    from uqkd.experiments.mlp import MLP_METHODS

    assert LINEAR_METHODS == MLP_METHODS == M.method_table()


def test_single_and_averaging_by_hand():
    labels, w = _targets("single")
    np.testing.assert_array_equal(labels, DRAWS[:, :, 0])
    assert w is None
    labels, w = _targets("averaging")
    np.testing.assert_allclose(labels, [[2.0, 0.5, 5.0, 0.0], [5.0 / 3, 2.0, 0.1, 5.0]])
    assert w is None


def test_paper_oracle_by_hand():
    """PAPER.md §7: alpha_T mean_k + alpha_S mu_T, alpha_T = (1/s2) / (1/s2 + 1/sigma2), s2 with ddof=0."""
    labels, w = _targets("variance-weighting-paper-oracle")
    s2 = DRAWS.var(axis=2)  # ddof=0, as the published script
    a_t = (1 / s2) / (1 / s2 + 1 / NV[None, :])
    np.testing.assert_allclose(labels, a_t * MEAN + (1 - a_t) * MU[None, :])
    assert w is None


def test_wls_weights_are_inverse_shrunk_variances():
    labels, w = _targets("variance-weighting-wls")
    assert labels is MEAN
    shrunk = aggregate.shrunk_variance_from_moments(VAR, K, axis=1)  # (R, n)
    np.testing.assert_allclose(w, K / shrunk)
    # shrunk towards each student's pooled variance: between the raw and the pooled value
    pooled = VAR.mean(axis=1, keepdims=True)
    assert np.all((shrunk - VAR) * (shrunk - pooled) <= 1e-12)


def test_shrinkage_by_hand():
    ref = np.full_like(MEAN, 1.0)
    labels, w = _targets("variance-weighting-shrinkage", reference=lambda y: ref)
    v = aggregate.shrunk_variance_from_moments(VAR, K, axis=1) / K
    t2 = np.maximum(((MEAN - ref) ** 2).mean(axis=1, keepdims=True) - v.mean(axis=1, keepdims=True),
                    1e-3 * v.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(labels, (MEAN / v + ref / t2) / (1 / v + 1 / t2))
    assert w is None


def test_k1_reduces_to_averaging_and_per_input_counts():
    for name in M.method_names("tabular")[1:]:
        labels, w = _targets(name, k=1, var=np.zeros_like(MEAN), reference=lambda y: 0 * y)
        assert labels is MEAN and w is None, name
    k = np.array([2, 3, 4, 3])
    labels, w = _targets("variance-weighting-wls", k=k)
    np.testing.assert_allclose(w, k / aggregate.shrunk_variance_unequal_k(VAR, np.broadcast_to(k, VAR.shape)))
    with pytest.raises(ValueError, match="per-input counts"):
        _targets("variance-weighting-paper-oracle", k=k)


def test_unknown_method_lists_the_valid_ones():
    valid = ", ".join(M.method_names("tabular"))
    with pytest.raises(ValueError, match=f"method: expected one of {valid}; got 'magic'$"):
        _targets("magic")
    for name in ("variance-aware-linear", "variance-aware-mlp"):
        with pytest.raises(ConfigError, match=f"methods: expected one of {valid}; got 'magic'$"):
            build_config(get_experiment(name).config_cls, ({"methods": "averaging,magic"}, "test"))


def _spy(monkeypatch):
    seen = []
    real = M.method_targets

    def spy(name, **kw):
        seen.append(name)
        return real(name, **kw)

    monkeypatch.setattr(M, "method_targets", spy)
    return seen


def test_linear_and_mlp_cells_dispatch_through_the_registry(monkeypatch):
    """Every method of both cells gets its labels from uqkd.methods.method_targets."""
    methods = M.method_names("tabular")
    lin = get_experiment("variance-aware-linear")
    cfg = build_config(lin.config_cls, ({"n_students": 3, "ks": "3", "alphas": "0.5"}, "test"))
    seen = _spy(monkeypatch)
    from uqkd.experiments import linear as L

    monkeypatch.setattr(L, "_SINGLE_CACHE", {})  # 'single' is fitted once per alpha and cached: start empty
    monkeypatch.setattr(L, "_WLS_CACHE", L.OrderedDict())  # so is the unit-scale WLS fit, once for every alpha
    rows = lin.run_cell(cfg, {"noise": "homoscedastic", "hetero_strength": 0.0, "alpha": 0.5, "k": 3}, 0)
    assert seen == list(methods) and [r["method"] for r in rows] == list(methods)

    pytest.importorskip("torch")
    mlp = get_experiment("variance-aware-mlp")
    cfg = build_config(mlp.config_cls, ({"n_students": 2, "n_epochs": 2, "teacher_n_epochs": 2, "ks": "3",
                                         "alphas": "0.5"}, "test"))
    seen.clear()
    rows = mlp.run_cell(cfg, {"noise": "homoscedastic", "alpha": 0.5, "k": 3}, 0)
    assert sorted(seen) == sorted(methods) and [r["method"] for r in rows] == list(methods)
    assert [r["oracle"] for r in rows] == [M.METHODS[m].oracle for m in methods]


def test_adaptive_rules_dispatch_through_the_registry(monkeypatch):
    from uqkd.experiments.adaptive import RULE_METHODS

    exp = get_experiment("adaptive-budget-linear")
    cfg = build_config(exp.config_cls, ({"n_students": 3, "strengths": "1.0", "budgets": "3"}, "test"))
    seen = _spy(monkeypatch)
    exp.run_cell(cfg, {"strength": 1.0, "budget_per_input": 3}, 0)
    assert set(seen) == set(RULE_METHODS.values()) == {"averaging", "variance-weighting-wls"}
