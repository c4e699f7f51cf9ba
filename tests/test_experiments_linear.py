import numpy as np
import pytest

from uqkd.experiments import get_experiment
from uqkd.runner import resolve_config


def _rows(name, cell, seed=0, **over):
    exp = get_experiment(name)
    cfg = resolve_config(exp, "quick", {k: v for k, v in over.items()})
    return {r.get("method", "_"): r for r in exp.run_cell(cfg, cell, seed)}


def test_oracle_free_weighting_beats_averaging_under_heteroscedastic_noise():
    rows = _rows("variance-aware-linear", {"noise": "heteroscedastic", "hetero_strength": 1.5, "alpha": 1.0, "k": 5}, n_students=400)
    avg, wls = rows["averaging"], rows["variance-weighting-wls"]
    se = np.hypot(avg["mse_sem"], wls["mse_sem"])
    assert wls["mse_mean"] < avg["mse_mean"] - 2 * se
    assert wls["inter_student_var"] < 0.8 * avg["inter_student_var"]
    assert wls["oracle"] is False and rows["variance-weighting-paper-oracle"]["oracle"] is True


def test_oracle_free_weighting_costs_little_under_homoscedastic_noise():
    rows = _rows("variance-aware-linear", {"noise": "homoscedastic", "alpha": 1.0, "k": 3}, n_students=400)
    assert rows["variance-weighting-wls"]["inter_student_var"] < 1.05 * rows["averaging"]["inter_student_var"]


def test_averaging_matches_theory_within_monte_carlo_error():
    R = 800
    rows = _rows("variance-aware-linear", {"noise": "homoscedastic", "alpha": 0.5, "k": 4}, n_students=R)
    for m in ("single", "averaging"):
        r = rows[m]
        # Relative sampling error of a variance estimate averaged over correlated test points <= sqrt(2/(R-1)).
        assert r["inter_student_var"] == pytest.approx(r["theory_inter_student_var"], rel=4 * np.sqrt(2 / (R - 1)))
        assert abs(r["mse_mean"] - r["theory_mse"]) < 4 * r["mse_sem"]


def test_teacher_noise_cell_reports_theory():
    (row,) = _rows("teacher-noise-linear", {"sigma": 1.0}, n_students=1000).values()
    assert row["param_var_mc"] == pytest.approx(row["param_var_theory"], rel=0.15)
    assert abs(row["mse_mean"] - row["theory_mse"]) < 4 * row["mse_sem"]


def test_bootstrap_students_on_teacher_outputs_vary_less():
    t = _rows("bootstrap-linear", {"fraction": 0.3, "target": "teacher"}, n_students=100)["_"]
    g = _rows("bootstrap-linear", {"fraction": 0.3, "target": "ground-truth"}, n_students=100)["_"]
    assert t["inter_student_var"] < 1e-3 * g["inter_student_var"]
    small = _rows("bootstrap-linear", {"fraction": 0.1, "target": "ground-truth"}, n_students=100)["_"]
    assert small["inter_student_var"] > g["inter_student_var"]
    assert 0.0 <= small["rank_deficient_frac"] <= 1.0


def test_draws_and_exact_paths_agree_in_distribution():
    kw = dict(n_students=600)
    a = _rows("variance-aware-linear", {"noise": "heteroscedastic", "hetero_strength": 1.5, "alpha": 0.5, "k": 6}, teacher_sampling="exact", **kw)
    b = _rows("variance-aware-linear", {"noise": "heteroscedastic", "hetero_strength": 1.5, "alpha": 0.5, "k": 6}, teacher_sampling="draws", **kw)
    for m in ("averaging", "variance-weighting-wls"):
        rel = abs(np.log(a[m]["inter_student_var"] / b[m]["inter_student_var"]))
        assert rel < 4 * np.sqrt(4 / 599), (m, rel)
