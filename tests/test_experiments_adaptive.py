"""adaptive-budget-linear: determinism, closed forms, the homoscedastic limit, config checks, the claim."""

import numpy as np
import pandas as pd
import pytest

from uqkd.config import ConfigError
from uqkd.experiments import get_experiment
from uqkd.report.claims_budget import _adaptive_budget
from uqkd.runner import resolve_config, run_experiment

NAME = "adaptive-budget-linear"


def _cfg(**over):
    return resolve_config(get_experiment(NAME), "quick", over)


def _rows(cell, seed=0, **over):
    exp = get_experiment(NAME)
    return {(r["scheme"], r["rule"]): r for r in exp.run_cell(_cfg(**over), cell, seed)}


def test_same_seed_same_rows_and_independent_of_cell_order():
    exp = get_experiment(NAME)
    cfg = _cfg(n_students=70, strengths=(0.0, 1.0), budgets=(3, 5))
    cells = exp.cells(cfg)
    fwd = pd.DataFrame([r for c in cells for r in exp.run_cell(cfg, c, 3)])
    bwd = pd.DataFrame([r for c in reversed(cells) for r in exp.run_cell(cfg, c, 3)])
    key = ["strength", "budget_per_input", "scheme", "rule"]
    pd.testing.assert_frame_equal(fwd.sort_values(key).reset_index(drop=True),
                                  bwd.sort_values(key).reset_index(drop=True))
    other = pd.DataFrame(exp.run_cell(cfg, cells[-1], 4))
    assert not np.allclose(other["inter_student_var"], fwd.iloc[-len(other):]["inter_student_var"])


def test_runner_results_do_not_depend_on_the_worker_count(tmp_path):
    over = {"n_students": 40, "strengths": "0,1.5", "budgets": "3,5"}
    one = run_experiment(NAME, out=tmp_path / "a", overrides=over, workers=1, progress=False, make_figures=False)
    two = run_experiment(NAME, out=tmp_path / "b", overrides=over, workers=2, progress=False, make_figures=False)
    pd.testing.assert_frame_equal(pd.read_csv(one.results_csv), pd.read_csv(two.results_csv))


def test_averaging_students_match_the_closed_form_within_monte_carlo_error():
    rows = _rows({"strength": 1.0, "budget_per_input": 5}, n_students=600)
    for scheme in ("uniform", "design-only", "oracle", "two-stage"):
        r = rows[(scheme, "averaging")]
        z = (r["inter_student_var"] - r["theory_inter_student_var"]) / r["inter_student_var_sem"]
        assert abs(z) < 4, (scheme, z)
        assert r["param_var_trace"] == pytest.approx(r["theory_param_var_trace"], rel=4 * np.sqrt(2 / 599))
    # The oracle's closed-form ratio is the exact-integer predicted gain; heteroscedastic noise makes it < 1.
    o = rows[("oracle", "averaging")]
    assert o["theory_gain"] == pytest.approx(o["predicted_gain_exact"], rel=1e-9)
    assert o["predicted_gain_exact"] < 0.8
    assert abs(np.log(o["ratio_to_uniform"] / o["predicted_gain_exact"])) < 4 * o["ratio_to_uniform_se_log"]


def test_uncertainty_allocation_lowers_variance_under_heteroscedastic_noise():
    rows = _rows({"strength": 1.5, "budget_per_input": 10}, n_students=400)
    for scheme in ("oracle", "two-stage"):
        r = rows[(scheme, "averaging")]
        assert r["ratio_to_uniform"] * np.exp(3 * r["ratio_to_uniform_se_log"]) < 1, scheme
        assert r["mse_diff_vs_uniform"] < 0
    assert rows[("two-stage", "averaging")]["k_min"] >= 2  # the pilot is kept
    assert rows[("oracle", "averaging")]["ratio_to_uniform"] < rows[("two-stage", "averaging")]["ratio_to_uniform"]


def test_strength_zero_is_exactly_homoscedastic():
    rows = _rows({"strength": 0.0, "budget_per_input": 5}, n_students=100)
    for rule in ("averaging", "wls"):
        o, d = (pd.Series(rows[(s, rule)]).drop("scheme") for s in ("oracle", "design-only"))
        pd.testing.assert_series_equal(o, d)  # sigma is constant: the oracle is the sigma-blind allocation
    assert rows[("oracle", "averaging")]["noise_var_ratio"] == 1.0
    # Flat weights and equal variances: the oracle allocation is uniform, so are its students.
    flat = _rows({"strength": 0.0, "budget_per_input": 5}, n_students=100, target="none")
    assert flat[("oracle", "averaging")]["k_min"] == flat[("oracle", "averaging")]["k_max"] == 5
    assert flat[("oracle", "averaging")]["inter_student_var"] == flat[("uniform", "averaging")]["inter_student_var"]
    assert flat[("oracle", "averaging")]["predicted_gain"] == pytest.approx(1.0)


def test_two_stage_without_spare_budget_is_uniform_sampling():
    rows = _rows({"strength": 1.5, "budget_per_input": 2}, n_students=100)
    ts, un = rows[("two-stage", "averaging")], rows[("uniform", "averaging")]
    for col in ("inter_student_var", "mse_mean", "param_var_trace"):
        assert ts[col] == pytest.approx(un[col], rel=1e-12)  # same draws, same labels: equal up to BLAS rounding
    assert ts["k_min"] == ts["k_max"] == 2


@pytest.mark.parametrize(
    "over, match",
    [
        ({"budgets": (1, 5)}, "budgets: expected budgets per input >= 2"),
        ({"strengths": (-0.5,)}, "strengths: expected finite values >= 0"),
        ({"schemes": ("uniform", "neyman")}, "schemes: unknown value 'neyman'"),
        ({"rules": ("averaging", "averaging")}, "rules: expected distinct values"),
        ({"pilot_k": 1}, "pilot_k: expected an integer >= 2"),
        ({"alpha": 0.0}, "alpha: expected a finite number > 0"),
        ({"n_students": 1}, "n_students: expected an integer >= 2"),
        ({"target": "bogus"}, "target: expected one of"),
    ],
)
def test_config_range_checks(over, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**over)


def test_quick_profile_runs_with_figures_and_the_claim_holds(tmp_path):
    res = run_experiment(NAME, out=tmp_path, progress=False)
    assert len(res.figures) == 2 and all(p.is_file() for p in res.figures)
    df = pd.read_csv(res.results_csv)
    stat, value, interval, verdict, mde = _adaptive_budget({NAME: df})
    assert verdict == "holds", (value, interval)
    assert "closed form" in value and "predicted" in value and mde == ""
    assert get_experiment(NAME).summary(df).shape[0] > 0


def _claim_table(het, hom, se=0.01):
    rows = []
    # the heteroscedastic part reads two-stage / sigma-blind (design-only): the gain that needs the pilot
    for h, ratio, ref in ((1.5, het, "ratio_to_design_only"), (0.0, hom, "ratio_to_design_only")):
        for b in (5, 10):
            r = {"strength": h, "budget_per_input": b, "scheme": "two-stage", "rule": "averaging", "n_students": 1000,
                 "ratio_to_uniform": 0.6 if h > 0 else 0.9, "ratio_to_uniform_se_log": se,
                 "ratio_to_design_only": 1.0, "ratio_to_design_only_se_log": se,
                 "theory_gain": 0.7, "predicted_gain_exact": 0.5}
            r[ref] = ratio
            rows.append(r)
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "het, hom, se, verdict",
    [
        (0.7, 1.0, 0.01, "holds"),
        (1.1, 1.0, 0.01, "contradicted"),  # allocation raises the variance under heteroscedastic noise
        (0.7, 1.2, 0.01, "contradicted"),  # a measurable cost beyond the 5% margin when homoscedastic
        (0.99, 1.0, 0.05, "inconclusive"),  # too noisy to see the gain
        (0.7, 1.04, 0.05, "inconclusive"),  # cannot rule out a cost above the margin
    ],
)
def test_claim_verdict_follows_the_numbers(het, hom, se, verdict):
    out = _adaptive_budget({NAME: _claim_table(het, hom, se)})
    assert out[3] == verdict
    assert (out[4].startswith("MDE") and "students/cell" in out[4]) == (verdict == "inconclusive")


def test_claim_reads_the_gain_over_the_sigma_blind_allocation():
    """A pilot that is ignored (or misaligned) still beats uniform through the design's influence weights: with
    two-stage / uniform at 0.6 but two-stage / sigma-blind at 1.0 the claim must not hold."""
    out = _adaptive_budget({NAME: _claim_table(1.0, 1.0, 0.01)})
    assert out[3] != "holds" and "two-stage/sigma-blind 1.000" in out[1] and "two-stage/uniform 0.600" in out[1]


def test_mlp_variant_is_deterministic_and_shares_the_linear_checks():
    exp = get_experiment("adaptive-budget-mlp")
    cfg = resolve_config(exp, "quick", {"n_students": 16, "n_epochs": 20})
    cell = {"strength": 1.5, "budget_per_input": 3}
    a, b = pd.DataFrame(exp.run_cell(cfg, cell, 0)), pd.DataFrame(exp.run_cell(cfg, cell, 0))
    pd.testing.assert_frame_equal(a, b)
    assert set(a["scheme"]) == {"uniform", "oracle", "two-stage"} and set(a["rule"]) == {"averaging", "wls"}
    o = a[(a["scheme"] == "oracle") & (a["rule"] == "averaging")].iloc[0]
    assert o["label_var_ratio"] == pytest.approx(o["predicted_gain_exact"]) and o["label_var_ratio"] < 1
    assert np.all(np.isfinite(a["inter_student_var"])) and np.all(a["k_min"] >= 1)
    with pytest.raises(ConfigError, match="budgets: expected budgets per input >= 2"):
        resolve_config(exp, "quick", {"budgets": (1,)})
    with pytest.raises(ConfigError, match="target: expected one of none, predictions"):
        resolve_config(exp, "quick", {"target": "parameters"})


def test_claim_is_not_computable_without_the_rows_it_needs():
    from uqkd.report.claims import NotComputable

    df = _claim_table(0.7, 1.0)
    with pytest.raises(NotComputable, match="strength 0"):
        _adaptive_budget({NAME: df[df["strength"] > 0]})
    with pytest.raises(NotComputable, match="two-stage rows"):
        _adaptive_budget({NAME: df.assign(scheme="oracle")})
