"""Knowledge change per question (learned noise, fixes), uncertainty fidelity and their claims.

Per-question values against the student before distillation (:mod:`uqkd.llm.evaluate`); claims on synthetic
tables in the results.csv layout (the learned-noise difference by the crossed mixed model, the fidelity
rank correlation by its own crossed bootstrap), including realistic mutants that must flip the verdict and
A/A simulations of the intervals' error rates at the quick profile's size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uqkd.llm.evaluate import ModelEval, knowledge_change, summarize_change, uncertainty_fidelity
from uqkd.report.claims import NotComputable, evaluate_claims
from uqkd.report.claims_llm import boot_rate_difference, fidelity_bootstrap, rate_tables


def _ev(acc, hallu=None, intra=None) -> ModelEval:
    acc = np.asarray(acc, dtype=float)
    n = acc.size
    pq = {"accuracy": acc, "hallucination": 1 - acc if hallu is None else np.asarray(hallu, float),
          "intra_var": np.arange(n, dtype=float) if intra is None else np.asarray(intra, float),
          "mse": np.zeros(n), "alignment": np.zeros(n)}
    return ModelEval([""] * n, [[""]] * n, np.zeros((n, 2)), np.zeros((n, 2, 2)), {}, pq)


def test_knowledge_change_counts_broken_and_fixed_answers():
    before, after = _ev([1, 1, 1, 0, 0]), _ev([1, 0, 0, 1, 0])
    ch = knowledge_change(after, before)
    np.testing.assert_array_equal(ch["learned_noise"][:3], [0, 1, 1])
    assert np.isnan(ch["learned_noise"][3:]).all() and np.isnan(ch["fixed"][:3]).all()
    np.testing.assert_array_equal(ch["fixed"][3:], [1, 0])
    s = summarize_change([after, after], [before, before])
    assert s["learned_noise_mean"] == pytest.approx(2 / 3) and s["fixed_mean"] == pytest.approx(0.5)
    assert s["accuracy_change_mean"] == pytest.approx(0.4 - 0.6) and s["accuracy_before_mean"] == pytest.approx(0.6)
    # swapping before and after (a realistic bug) changes the rates
    sw = knowledge_change(before, after)
    assert np.nanmean(sw["learned_noise"]) != np.nanmean(ch["learned_noise"])
    with pytest.raises(ValueError, match="before: expected the same 5 questions"):
        knowledge_change(after, _ev([1, 0]))


def test_uncertainty_fidelity_is_a_rank_correlation():
    t = np.array([0.1, 0.5, 0.2, 0.9, 0.3])
    assert uncertainty_fidelity(_ev([1] * 5, intra=t ** 3 + 1), t) == pytest.approx(1.0)
    assert uncertainty_fidelity(_ev([1] * 5, intra=-t), t) == pytest.approx(-1.0)
    assert np.isnan(uncertainty_fidelity(_ev([1] * 5, intra=np.ones(5)), t))
    with pytest.raises(ValueError, match="teacher_intra_var: expected shape"):
        uncertainty_fidelity(_ev([1] * 5), t[:3])


def _va_table(rng, rates: dict[str, float], n_students=5, n_q=48, p_before=0.4, q_sd=1.0, fid=None,
              budget="equal-steps", label_acc=None):
    """llm-variance-aware rows: one shared starting point (right on a fraction p_before of the questions); per
    method a per-question probability of breaking a right answer, logit = method effect + question effect
    (shared across methods: paired) + student effect; per-question dispersion with fidelity ``fid``."""
    before = (rng.random(n_q) < p_before).astype(float)
    q_eff = rng.normal(0, q_sd, n_q)
    t_intra = rng.gamma(2.0, 1.0, n_q)
    rows = [{"record": "question", "method": "teacher", "split": "transfer", "student": 0, "question": q, "k": 3,
             "intra_var": float(t_intra[q]), "accuracy": float(before[q])} for q in range(n_q)]
    summ = [{"record": "summary", "method": "teacher", "split": "transfer", "k": 3, "n_students": 1,
             "accuracy_mean": before.mean()}]
    for m, rate in rates.items():
        logit = np.log(rate / (1 - rate)) + q_eff[None, :] + rng.normal(0, 0.3, (n_students, 1))
        broke = rng.random((n_students, n_q)) < 1 / (1 + np.exp(-logit))
        fixed = rng.random((n_students, n_q)) < 0.1
        acc = np.where(before[None, :] == 1, ~broke, fixed).astype(float)
        label_ok = rng.random((n_students, n_q)) < (label_acc or {}).get(m, 0.2)
        c = 0.0 if fid is None else fid
        intra = c * t_intra[None, :] + (1 - abs(c)) * rng.gamma(2.0, 1.0, (n_students, n_q))
        for r in range(n_students):
            for q in range(n_q):
                right = before[q] == 1
                rows.append({"record": "question", "method": m, "split": "transfer", "student": r, "question": q,
                             "k": 3, "step_budget": budget, "accuracy": acc[r, q], "hallucination": 1 - acc[r, q],
                             "mse": 1.0, "alignment": 0.5, "intra_var": float(intra[r, q]),
                             "accuracy_before": before[q], "learned_noise": (1 - acc[r, q]) if right else np.nan,
                             "target_correct": float(label_ok[r, q]),
                             "fixed": np.nan if right else acc[r, q]})
        summ.append({"record": "summary", "method": m, "split": "transfer", "k": 3, "step_budget": budget,
                     "n_students": n_students, "accuracy_mean": acc.mean(), "accuracy_before_mean": before.mean(),
                     "hallucination_mean": 1 - acc.mean(), "fidelity_mean": c})
    return pd.DataFrame(summ + rows)


def _claim(df, cid):
    return {r.claim_id: r for r in evaluate_claims({"llm-variance-aware": df})}[cid]


def test_learned_noise_claim_holds_and_its_mutant_is_contradicted():
    rng = np.random.default_rng(0)
    # 8 students: the crossed mixed model counts students as the unit (5 gives a t on 4 df for the student part)
    good = _va_table(rng, {"single": 0.6, "averaging": 0.25, "multi-response": 0.6, "variance-weighting": 0.6},
                     n_q=120, n_students=8)
    r = _claim(good, "B-llm-learned-noise")
    assert r.verdict == "holds", r
    assert "learned noise" in r.value and "step budget equal-steps" in r.statistic
    # mutant: averaging picks the answer farthest from the mean (it now teaches more noise than single)
    bad = _va_table(rng, {"single": 0.25, "averaging": 0.6, "multi-response": 0.6, "variance-weighting": 0.6},
                    n_q=120, n_students=8)
    assert _claim(bad, "B-llm-learned-noise").verdict == "contradicted"


def test_learned_noise_uses_only_questions_the_start_had_right():
    rng = np.random.default_rng(1)
    df = _va_table(rng, {"single": 0.5, "averaging": 0.5}, n_q=30)
    ya, yb, nq = rate_tables(df, "single", "averaging", "learned_noise")
    teacher = df[(df["record"] == "question") & (df["method"] == "teacher")]
    assert nq == int(teacher["accuracy"].sum()) and ya.shape == (5, nq) and np.isin(ya, [0, 1]).all()
    with pytest.raises(NotComputable, match="no per-question learned_noise"):
        rate_tables(df.drop(columns=["learned_noise"]), "single", "averaging", "learned_noise")


def test_learned_noise_interval_error_rate_a_a():
    """Equal methods (A/A) at the quick profile's size: the 95% interval claims a reduction in about 2.5% of
    runs (one-sided), not more than Monte-Carlo error allows."""
    rng = np.random.default_rng(2)
    n_sim, false = 120, 0
    for i in range(n_sim):
        df = _va_table(rng, {"single": 0.4, "averaging": 0.4}, n_q=48)
        c = boot_rate_difference(df, "single", "averaging", "learned_noise", "a", ">", 0.95, ("aa", i))
        false += c.verdict == "holds"
    assert false / n_sim < 0.025 + 3 * np.sqrt(0.025 * 0.975 / n_sim), false


def test_fidelity_bootstrap_detects_correlation_and_covers_zero():
    rng = np.random.default_rng(3)
    t = rng.gamma(2.0, 1.0, 48)
    ys = 0.8 * t[None, :] + 0.2 * rng.gamma(2.0, 1.0, (5, 48))
    est, boot = fidelity_bootstrap(t, [ys, -ys], ("x",), n_boot=500)
    assert est[0] > 0.8 and np.quantile(boot[:, 0], 0.025) > 0.5
    assert est[1] == pytest.approx(-est[0])  # mutant: the sign of the student's dispersion
    with pytest.raises(NotComputable, match="same on every question for every student"):
        fidelity_bootstrap(t, [np.ones((3, 48))], ("x",), n_boot=10)
    # A/A: students' dispersion independent of the teacher's; the 95% interval excludes 0 in about 5% of runs
    n_sim, miss = 100, 0
    for i in range(n_sim):
        t = rng.gamma(2.0, 1.0, 48)
        ys = rng.gamma(2.0, 1.0, (5, 48)) + rng.gamma(2.0, 1.0, (1, 48))  # a shared question effect, not the teacher's
        _, b = fidelity_bootstrap(t, [ys], ("aa", i), n_boot=400)
        lo, hi = np.quantile(b[:, 0], [0.025, 0.975])
        miss += not (lo <= 0 <= hi)
    assert miss / n_sim < 0.05 + 3 * np.sqrt(0.05 * 0.95 / n_sim), miss


def _with_start(df, rng, fid_start):
    """Add the untrained student's per-question dispersion with fidelity ``fid_start`` to the teacher's."""
    t = df[(df["record"] == "question") & (df["method"] == "teacher")].sort_values("question")
    ti = t["intra_var"].to_numpy()
    iv = fid_start * ti + (1 - abs(fid_start)) * rng.gamma(2.0, 1.0, ti.size)
    rows = [{"record": "question", "method": "untrained-student", "split": "transfer", "student": 0, "question": q,
             "k": 3, "intra_var": float(v), "accuracy": 0.0} for q, v in enumerate(iv)]
    summ = [{"record": "summary", "method": "untrained-student", "split": "transfer", "k": 3, "n_students": 1}]
    return pd.concat([df, pd.DataFrame(summ + rows)], ignore_index=True)


def test_fidelity_claim_verdicts():
    rng = np.random.default_rng(4)
    # distillation erodes fidelity (the start tracks the teacher, the students less): holds
    erodes = _with_start(_va_table(rng, {"single": 0.4}, fid=0.2), rng, 0.9)
    r = _claim(erodes, "B-llm-uncertainty-fidelity")
    assert r.verdict == "holds" and "fidelity before" in r.value, r
    # mutant: before and after swapped (the students track the teacher better than the start): contradicted
    assert _claim(_with_start(_va_table(rng, {"single": 0.4}, fid=0.9), rng, 0.2),
                  "B-llm-uncertainty-fidelity").verdict == "contradicted"
    assert _claim(_va_table(rng, {"single": 0.4}, fid=0.5), "B-llm-uncertainty-fidelity").verdict == "not computable"


def test_budget_verdict_comes_from_equal_steps_with_epochs_beside():
    rng = np.random.default_rng(5)
    eq = _va_table(rng, {"single": 0.6, "averaging": 0.2}, budget="equal-steps")
    ep = _va_table(rng, {"single": 0.2, "averaging": 0.6}, budget="epochs")
    ep = ep[ep["method"] != "teacher"]
    r = _claim(pd.concat([ep, eq], ignore_index=True), "B-llm-learned-noise")
    assert r.verdict == "holds" and "verdict from step budget equal-steps" in r.statistic
    assert "[step budget epochs: contradicted" in r.interval


def test_label_noise_claim_and_its_mutant():
    rng = np.random.default_rng(6)
    good = _va_table(rng, {"single": 0.5, "averaging": 0.5}, label_acc={"single": 0.1, "averaging": 0.3})
    r = _claim(good, "B-llm-label-noise")
    assert r.verdict == "holds" and "label accuracy single" in r.value, r
    # mutant: averaging keeps the answer farthest from the mean (fewer right labels than single)
    bad = _va_table(rng, {"single": 0.5, "averaging": 0.5}, label_acc={"single": 0.3, "averaging": 0.1})
    assert _claim(bad, "B-llm-label-noise").verdict == "contradicted"


def test_target_accuracy_reads_the_training_labels():
    from uqkd.data.qa import QAItem
    from uqkd.llm.pipeline import target_accuracy

    items = [QAItem("a", "Capital of France?", "Paris"), QAItem("b", "Capital of Peru?", "Lima"),
             QAItem("c", "Capital of Chad?", "N'Djamena")]
    rows = [{"id": "a", "completion": [{"role": "assistant", "content": "It is Paris."}]},
            {"id": "b", "completion": "Cusco, I think"}, {"id": "b", "completion": "Lima"}]
    np.testing.assert_array_equal(target_accuracy(rows, items)[:2], [1.0, 0.5])
    assert np.isnan(target_accuracy(rows, items)[2])  # no label for c (all its answers were empty)
