"""Three-valued verdicts: holds / contradicted / inconclusive (with MDE), not computable, not run, error."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from uqkd.report import claims as C
from uqkd.report.claims import ClaimSpec, evaluate_claims
from uqkd.report.claims_llm import hallucination_test


def _by_id(tables):
    return {r.claim_id: r for r in evaluate_claims(tables)}


def _va(methods, n=5, n_eval=40, sd=0.01, se=True, hallu_sd=0.05):
    """llm-variance-aware rows: ``methods`` maps method -> (mse_mean, inter_var, hallucination_mean)."""
    base = {"k": 3, "n_students": n, "n_eval": n_eval, "intra_var_mean": 0.5, "intra_var_std": 0.05}
    rows = [{**base, "method": "teacher", "n_students": 1, "mse_mean": 1.0, "mse_std": 0.0, "inter_var": 0.0,
             "hallucination_mean": 0.3, "hallucination_std": 0.0}]
    for m, (mse, iv, h) in methods.items():
        rows.append({**base, "method": m, "mse_mean": mse, "mse_std": sd, "inter_var": iv, "hallucination_mean": h,
                     "hallucination_std": hallu_sd})
    df = pd.DataFrame(rows)
    if se:
        df["inter_var_se"] = 0.05 * df["inter_var"]
    return df


def _one_claim(monkeypatch, fn, experiments=("x",)):
    monkeypatch.setattr(C, "CLAIMS", [ClaimSpec("T", "7", "test claim", experiments, fn)])


# ------------------------------------------------------------------------------- LLM: paper methods only


def test_f5_llm_ignores_uqkd_methods():
    """Only inverse-variance-loss improves: F5-llm (paper methods) must not hold; the beyond claim does."""
    df = _va({"single": (1.5, 0.6, 0.5), "multi-response": (1.5, 0.6, 0.5), "averaging": (1.52, 0.62, 0.5),
              "variance-weighting": (1.51, 0.6, 0.5), "inverse-variance-loss": (1.2, 0.2, 0.2)})
    r = _by_id({"llm-variance-aware": df})
    assert r["F5-llm"].verdict != "holds"
    assert "inverse-variance-loss" not in r["F5-llm"].value + r["F5-llm"].interval
    assert r["B-llm-uqkd-methods"].verdict == "holds"
    assert "inverse-variance-loss" in r["B-llm-uqkd-methods"].value
    assert r["B-llm-hallucination"].verdict != "holds"  # only the IV loss hallucinates less


def test_hallucination_uses_students_not_pooled_answers():
    n, n_eval = 5, 200
    df = _va({"single": (1.5, 0.6, 0.6), "averaging": (1.5, 0.6, 0.4)}, n=n, n_eval=n_eval, hallu_sd=0.3)
    s, a = df[df.method == "single"].iloc[0], df[df.method == "averaging"].iloc[0]
    x = hallucination_test(s, a, "averaging", 0.95)
    # pooling n_students x n_eval answers as independent Bernoulli draws
    N = n * n_eval
    pooled_se = np.sqrt(0.6 * 0.4 / N + 0.4 * 0.6 / N)
    pooled_width = 2 * stats.norm.ppf(0.975) * pooled_se
    assert x.hi - x.lo > 5 * pooled_width
    se = np.sqrt(2 * 0.3**2 / n)
    dof = (2 * 0.3**2 / n) ** 2 / (2 * (0.3**2 / n) ** 2 / (n - 1))
    assert x.lo == pytest.approx(0.2 - stats.t.ppf(0.975, dof) * se)
    # pooled Fisher would call this significant (600 vs 400 of 1000); across 5 students it is not decided
    assert stats.fisher_exact([[600, 400], [400, 600]], alternative="greater").pvalue < 1e-10
    r = _by_id({"llm-variance-aware": df})["B-llm-hallucination"]
    assert r.verdict == "inconclusive" and "MDE" in r.verdict_text
    assert f"{x.lo:.4g}" in r.value


def test_llm_splits_verdict_from_transfer_and_heldout_shown():
    good = _va({"single": (1.5, 0.6, 0.5), "averaging": (1.2, 0.3, 0.5)})
    bad = _va({"single": (1.5, 0.6, 0.5), "averaging": (1.8, 0.9, 0.5)})
    df = pd.concat([good.assign(split="transfer"), bad.assign(split="heldout")])
    r = _by_id({"llm-variance-aware": df})["F5-llm"]
    assert r.verdict == "holds"
    assert "transfer:" in r.value and "held-out:" in r.value and "held-out verdict: contradicted" in r.interval
    df2 = pd.concat([bad.assign(split="transfer"), good.assign(split="heldout")])
    assert _by_id({"llm-variance-aware": df2})["F5-llm"].verdict == "contradicted"
    # no split column: held-out only
    assert "held-out:" in _by_id({"llm-variance-aware": good})["F5-llm"].value


def test_f5_llm_variance_ratio_needs_inter_var_se():
    df = _va({"single": (1.5, 0.6, 0.5), "averaging": (1.2, 0.3, 0.5)}, se=False)
    r = _by_id({"llm-variance-aware": df})["F5-llm"]
    assert r.verdict == "not computable" and "could not be computed" in r.value and "inter_var_se" in r.value


def _output(intra_st=0.3, inter=0.8, inter_se=0.05, n=3):
    rows = [{"method": "teacher", "n_students": 1, "n_eval": 20, "intra_var_mean": 1.0, "intra_var_std": 0.0,
             "inter_var": 0.0},
            {"method": "single", "n_students": n, "n_eval": 20, "intra_var_mean": intra_st, "intra_var_std": 0.02,
             "inter_var": inter}]
    df = pd.DataFrame(rows)
    if inter_se is not None:
        df["inter_var_se"] = [0.0, inter_se]
    return df


def test_f4_llm_inter_student_variance_is_tested_not_assumed():
    assert _by_id({"llm-output": _output()})["F4-llm"].verdict == "holds"
    # inter_var > 0 but far below the students' own spread: "inter-student variance remains" is contradicted
    r = _by_id({"llm-output": _output(inter=0.01, inter_se=0.001)})["F4-llm"]
    assert r.verdict == "contradicted" and "intra/inter" in r.value
    r = _by_id({"llm-output": _output(inter_se=None)})["F4-llm"]
    assert r.verdict == "not computable" and "cannot be computed" in r.value


def _learned(gain, sd=0.02, n=3, untrained=True):
    rows = [{"method": "teacher", "split": "transfer", "n_students": 1, "alignment_mean": 0.7, "alignment_std": 0.0,
             "accuracy_mean": 0.6, "accuracy_std": 0.0},
            {"method": "single", "split": "transfer", "n_students": n, "alignment_mean": 0.2 + gain,
             "alignment_std": sd, "accuracy_mean": 0.3, "accuracy_std": 0.1}]
    if untrained:
        rows.append({"method": "untrained-student", "split": "transfer", "n_students": 1, "alignment_mean": 0.2,
                     "alignment_std": 0.0, "accuracy_mean": 0.0, "accuracy_std": 0.0})
    return pd.DataFrame(rows)


def test_students_learn_claim_against_the_untrained_student():
    """The sanity claim tests the trained students against the untrained one, across students."""
    assert _by_id({"llm-output": _learned(0.3)})["B-llm-students-learn"].verdict == "holds"
    assert _by_id({"llm-output": _learned(-0.1)})["B-llm-students-learn"].verdict == "contradicted"
    r = _by_id({"llm-output": _learned(0.01, sd=0.2)})["B-llm-students-learn"]
    assert r.verdict == "inconclusive" and r.mde
    r = _by_id({"llm-output": _learned(0.3, untrained=False)})["B-llm-students-learn"]
    assert r.verdict == "not computable" and "untrained-student" in r.value


# ------------------------------------------------------------------------------- verdict vocabulary


def test_nan_statistic_is_not_a_verdict(monkeypatch):
    _one_claim(monkeypatch, lambda t: ("a statistic", float("nan"), "[0, 1]", "holds"))
    (r,) = evaluate_claims({"x": pd.DataFrame({"a": [1]})})
    assert r.verdict == "not computable" and r.value.startswith("could not be computed")
    _one_claim(monkeypatch, lambda t: ("a statistic", "0.3", "[nan, 1]", "holds"))
    assert evaluate_claims({"x": pd.DataFrame({"a": [1]})})[0].verdict == "not computable"


def test_nan_in_a_builtin_claim_is_not_computable():
    df = pd.DataFrame({"sigma": [0.0, 0.5, 1.0], "param_var_mc": [0.0, np.nan, 0.2], "param_var_theory": [0, 0.1, 0.2],
                       "n_students": 50, "mse_mean": [0.3, 0.31, 0.32], "mse_sem": [0, 0.01, 0.01],
                       "theory_mse": [0.3, 0.31, 0.32]})
    r = _by_id({"teacher-noise-linear": df})["F1"]
    assert r.verdict == "not computable" and r.value.startswith("could not be computed:")


def test_claim_that_raises_is_an_error_not_not_run(monkeypatch):
    def boom(t):
        raise KeyError("mse_mean")

    _one_claim(monkeypatch, boom)
    (r,) = evaluate_claims({"x": pd.DataFrame({"a": [1]})})
    assert r.verdict == "error" and "KeyError" in r.statistic and "mse_mean" in r.statistic
    from uqkd.reproduce import claim_failures, exit_status

    assert exit_status([], [r]) == 1 and exit_status([], []) == 0 and exit_status(["exp"], []) == 1
    assert claim_failures([r]) == ["claim T (error: KeyError: 'mse_mean')"]
    # missing experiments are "not run", never errors
    assert evaluate_claims({})[0].verdict == "not run"


def test_reproduce_exits_nonzero_when_a_claim_raises(monkeypatch, tmp_path, capsys):
    import uqkd.reproduce as rep
    from uqkd.cli import main

    real = rep.run_experiment

    def tiny(name, **kw):
        return real(name, out=kw["out"], progress=False, make_figures=False,
                    overrides={"n_students": 20, "sigmas": (0.0, 0.5, 1.0)})

    def boom(t):
        raise ValueError("broken claim code")

    monkeypatch.setattr(rep, "run_experiment", tiny)
    monkeypatch.setattr(C, "CLAIMS", [ClaimSpec("T", "4", "test claim", ("teacher-noise-linear",), boom)])
    assert main(["reproduce", "--only", "teacher-noise-linear", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "claim T (error: ValueError: broken claim code)" in err
    text = (tmp_path / "report.md").read_text()
    assert "1 error (" in text and "broken claim code" in text
    monkeypatch.setattr(C, "CLAIMS", [ClaimSpec("T", "4", "test claim", ("teacher-noise-linear",),
                                                lambda t: ("s", 1.0, "[0, 2]", "inconclusive", "MDE 1 at 2 x"))])
    assert main(["reproduce", "--only", "teacher-noise-linear", "--out", str(tmp_path)]) == 0


def test_string_and_verdict_contracts(monkeypatch):
    """The adaptive-budget module's contract: 4- or 5-tuples with a string verdict."""
    _one_claim(monkeypatch, lambda t: ("s", 0.5, "[0.1, 0.9]", "holds"))
    assert evaluate_claims({"x": pd.DataFrame({"a": [1]})})[0].verdict == "holds"
    _one_claim(monkeypatch, lambda t: ("s", 0.5, "[-0.1, 0.9]", "inconclusive", "MDE 0.3 at 4 students/method, 80% power"))
    (r,) = evaluate_claims({"x": pd.DataFrame({"a": [1]})})
    assert r.verdict == "inconclusive" and r.verdict_text == "inconclusive (MDE 0.3 at 4 students/method, 80% power)"
    _one_claim(monkeypatch, lambda t: ("s", 0.5, "[-0.1, 0.9]", C.Verdict("inconclusive", mde="MDE 1")))
    assert evaluate_claims({"x": pd.DataFrame({"a": [1]})})[0].mde == "MDE 1"
    _one_claim(monkeypatch, lambda t: ("s", 0.5, "[0.1, 0.9]", True))  # the old bool contract is refused loudly
    (r,) = evaluate_claims({"x": pd.DataFrame({"a": [1]})})
    assert r.verdict == "error" and "expected one of" in r.statistic


# ------------------------------------------------------------------------------- contradicted / inconclusive


def test_reversed_effect_is_contradicted():
    df = _va({"single": (1.2, 0.3, 0.2), "averaging": (1.5, 0.6, 0.6), "multi-response": (1.6, 0.7, 0.6)})
    r = _by_id({"llm-variance-aware": df})
    assert r["F5-llm"].verdict == "contradicted" and r["B-llm-hallucination"].verdict == "contradicted"
    assert C.verdict_from_interval(-0.3, -0.1, ">") == "contradicted"
    assert C.verdict_from_interval(0.1, 0.3, "<", threshold=0.05) == "contradicted"


def test_reversed_tabular_slope_is_contradicted():
    rows = [{"noise": "homoscedastic", "alpha": 1.0, "k": k, "method": "averaging", "n_students": 200,
             "inter_student_var": 0.04 * k**0.5, "teacher_sampling": "draws"} for k in (1, 3, 10, 30)]
    r = _by_id({"variance-aware-linear": pd.DataFrame(rows)})["F2"]
    assert r.verdict == "contradicted"
    ok = [{**x, "inter_student_var": 0.04 / x["k"]} for x in rows]
    assert _by_id({"variance-aware-linear": pd.DataFrame(ok)})["F2"].verdict == "holds"
    # the same numbers from exact sampling (the 1/k generated, no averaging ran), or from a table that does not say
    # how its draws were made, are not a finding
    exact = [{**x, "teacher_sampling": "exact"} for x in ok]
    r = _by_id({"variance-aware-linear": pd.DataFrame(exact)})["F2"]
    assert r.verdict == "not computable" and "by construction" in r.value
    old = [{k: v for k, v in x.items() if k != "teacher_sampling"} for x in ok]
    assert _by_id({"variance-aware-linear": pd.DataFrame(old)})["F2"].verdict == "not computable"


def test_tiny_sample_is_inconclusive_with_mde():
    n = 3
    df = _va({"single": (1.5, 0.6, 0.5), "averaging": (1.45, 0.3, 0.5)}, n=n, sd=0.1)
    r = _by_id({"llm-variance-aware": df})["F5-llm"]
    assert r.verdict == "inconclusive"
    se, dof = np.sqrt(2 * 0.1**2 / n), 2 * (n - 1)
    mde = C.mde_two_sample(se, alpha=0.05, power=0.8, df=dof)  # one paper method present: no Bonferroni
    assert r.mde == f"MDE {mde:.3g} at {n} students/method, 80% power"
    assert r.verdict_text.startswith("inconclusive (MDE ")
    assert mde == pytest.approx((stats.t.ppf(0.975, dof) + stats.t.ppf(0.8, dof)) * se)


def test_small_n_intervals_use_t_quantiles():
    lo, hi = C.t_interval(1.0, 0.5, df=2)
    assert lo == pytest.approx(1.0 - stats.t.ppf(0.975, 2) * 0.5) and hi == pytest.approx(1.0 + stats.t.ppf(0.975, 2) * 0.5)
    assert C.t_interval(1.0, 0.5)[0] == pytest.approx(1.0 - stats.norm.ppf(0.975) * 0.5)
    # the claim interval of F5-llm with 3 students per method is a Welch t interval
    n = 3
    df = _va({"single": (1.5, 0.6, 0.5), "averaging": (1.45, 0.3, 0.5)}, n=n, sd=0.1)
    r = _by_id({"llm-variance-aware": df})["F5-llm"]
    expected_lo = 0.05 - stats.t.ppf(0.975, 2 * (n - 1)) * np.sqrt(2 * 0.01 / n)
    assert f"[{expected_lo:.4g}," in r.value
    diff, se, dof = C.welch(1.5, 0.1, 3, 1.45, 0.1, 3)
    assert dof == pytest.approx(4.0) and se == pytest.approx(np.sqrt(2 * 0.01 / 3))


def test_exact_variance_intervals():
    lo, hi = C.chi2_variance_interval(2.0, 5)
    assert lo == pytest.approx(4 * 2.0 / stats.chi2.ppf(0.975, 4)) and hi == pytest.approx(4 * 2.0 / stats.chi2.ppf(0.025, 4))
    lo, hi = C.variance_ratio_interval(0.5, 4, 9)
    assert lo == pytest.approx(0.5 / stats.f.ppf(0.975, 4, 9)) and hi == pytest.approx(0.5 / stats.f.ppf(0.025, 4, 9))
    x = C.variance_ratio_test("r", 0.5, 1.0, 4, 4, "<")
    assert x.verdict == "inconclusive" and x.mde.startswith("MDE ratio x")
    # the MDE ratio is detected with 80% power
    rho = C.mde_variance_ratio(4, 4, "<")
    assert stats.f.cdf(stats.f.ppf(0.025, 4, 4) / rho, 4, 4) == pytest.approx(0.8)


def test_agreement_is_equivalence_and_combinations():
    # within the margin by two one-sided tests: holds
    x = C.equivalence_test("slope", -1.01, 0.02, None, -1.0, 0.1)
    assert x.verdict == "holds" and -1.1 <= x.lo and x.hi <= -0.9
    # the same estimate with a wider interval can never hold ("not rejected" is not agreement)
    assert C.equivalence_test("slope", -1.01, 0.2, None, -1.0, 0.1).verdict == "inconclusive"
    wide = C.equivalence_test("slope", -1.01, 0.2, None, -1.0, 0.1, n=20)
    assert wide.mde.startswith("equivalence margin 0.1; this run could establish") and "20 students/cell" in wide.mde
    # entirely outside the margin: contradicted, even though a t test "rejects" in both cases
    assert C.equivalence_test("slope", -0.5, 0.02, None, -1.0, 0.1).verdict == "contradicted"
    # a real but small difference inside the margin is equivalence, not a contradiction
    assert C.equivalence_test("slope", -0.96, 0.005, None, -1.0, 0.1).verdict == "holds"
    # Bonferroni over m comparisons widens each interval
    assert C.equivalence_test("s", -0.93, 0.012, None, -1.0, 0.1).verdict == "holds"
    assert C.equivalence_test("s", -0.93, 0.012, None, -1.0, 0.1, m=20).verdict == "inconclusive"
    with pytest.raises(C.NotComputable):
        C.equivalence_test("s", np.nan, 0.1, None, 0.0, 0.1)
    with pytest.raises(ValueError, match="margin: expected a positive number"):
        C.equivalence_test("s", 0.0, 0.1, None, 0.0, 0.0)
    assert C.all_of(["holds", "holds"]) == "holds" and C.all_of(["holds", "inconclusive"]) == "inconclusive"
    assert C.all_of(["not computable", "contradicted"]) == "contradicted"
    assert C.any_of(["contradicted", "holds"]) == "holds" and C.any_of(["contradicted", "contradicted"]) == "contradicted"
    assert C.any_of(["contradicted", "inconclusive"]) == "inconclusive"
    assert C.verdict_from_interval(np.nan, 1.0, ">") == "not computable"
    with pytest.raises(C.NotComputable, match="zero spread"):
        C.welch(1.0, 0.0, 3, 1.0, 0.0, 3)
