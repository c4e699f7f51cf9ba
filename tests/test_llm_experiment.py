"""Tests of the registered LLM experiments: registry, config checks, and one tiny end-to-end run."""

from __future__ import annotations

import pytest

from uqkd.config import ConfigError
from uqkd.experiments import get_experiment
from uqkd.runner import resolve_config, run_experiment

NAMES = ("llm-variance-aware", "llm-teacher-noise", "llm-init-noise", "llm-output")


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_profiles(name):
    exp = get_experiment(name)
    quick = resolve_config(exp, "quick")
    paper = resolve_config(exp, "paper")
    assert exp.cells(quick)
    assert quick.n_students >= 2 and paper.n_students >= quick.n_students
    # the CPU design (self-distillation through LoRA) at quick; the published full fine-tuning at paper
    assert quick.student_every == 1 and quick.n_students >= 5 and quick.lora == (name != "llm-init-noise")
    assert not paper.lora and paper.lr == 5e-5


@pytest.mark.parametrize(
    "name, override, match",
    [
        ("llm-variance-aware", {"n_students": 1}, "n_students"),
        ("llm-variance-aware", {"methods": "single,best"},
         "methods: expected values among single, multi-response, averaging, variance-weighting, "
         "inverse-variance-loss; got 'best'"),
        ("llm-variance-aware", {"methods": "single,single"}, "methods: expected each value once, got single"),
        ("llm-variance-aware", {"k_values": "0,3"}, "k_values"),
        ("llm-variance-aware", {"temperature": 0}, "temperature"),
        ("llm-variance-aware", {"k_eval": 1}, "k_eval"),
        ("llm-output", {"output_designs": "published,bogus"},
         "output_designs: expected values among published, per-student-order, own-draws; got 'bogus'"),
        ("llm-variance-aware", {"step_budgets": "epochs,forever"},
         "step_budgets: expected values among epochs, equal-steps; got 'forever'"),
        ("llm-variance-aware", {"step_budgets": "epochs,epochs"}, "step_budgets: expected each value once"),
        ("llm-variance-aware", {"lora_r": 0}, "lora_r"),
        ("llm-variance-aware", {"lora_alpha": 0}, "lora_alpha"),
        ("llm-teacher-noise", {"device": "gpu"}, "device: expected auto .*, cuda:N; got 'gpu'"),
        ("llm-init-noise", {"dtype": "int8"}, "dtype: expected one of auto, float32, bfloat16, float16; got 'int8'"),
        ("llm-output", {"teacher_answers": "mine"},
         "teacher_answers: expected one of '', draws, shared-greedy, shared-draws; got 'mine'"),
        ("llm-output", {"data_order": "random"}, "data_order: expected one of fixed, per-student; got 'random'"),
        ("llm-budget", {"schemes": "uniform,greedy"}, "schemes: expected values among uniform, adaptive; got 'greedy'"),
        ("llm-budget", {"method": "variance-weighting"}, "method: expected one of single, multi-response, averaging, "
                                                         "inverse-variance-loss; got 'variance-weighting'"),
        # each experiment's config holds its own sweep only
        ("llm-teacher-noise", {"k_values": "2"}, "unknown config key 'k_values'"),
        ("llm-variance-aware", {"k": 2}, "unknown config key 'k'"),
        ("llm-budget", {"temperatures": "1"}, "unknown config key 'temperatures'"),
        ("llm-output", {"track_params": 3}, "unknown config key 'track_params'"),
    ],
)
def test_config_checks(name, override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(get_experiment(name), "quick", override)


def test_device_pattern_accepts_the_documented_values():
    exp = get_experiment("llm-teacher-noise")
    for dev in ("auto", "cpu", "mps", "cuda", "cuda:1"):
        assert resolve_config(exp, "quick", {"device": dev}).device == dev


def test_llm_configs_extend_one_base_and_help_says_no_experiment_names():
    import dataclasses

    from uqkd.experiments.llm import LLMConfig

    base = {f.name for f in dataclasses.fields(LLMConfig)}
    names = ("llm-variance-aware", "llm-teacher-noise", "llm-init-noise", "llm-output", "llm-budget")
    own = {}
    for name in names:
        cls = get_experiment(name).config_cls
        assert issubclass(cls, LLMConfig) and cls is not LLMConfig
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert base <= set(fields)
        own[name] = set(fields) - base
        for f in fields.values():
            assert not any(n in f.metadata["help"] for n in names), (name, f.name)
    # k_values (a list, one cell per k) only where k is swept; k where one k is used; never both
    assert [n for n in names if "k_values" in own[n]] == ["llm-variance-aware"]
    assert [n for n in names if "k" in own[n]] == ["llm-teacher-noise", "llm-init-noise", "llm-output"]


def _before() -> dict:
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "data" / "llm_configs_before_issue32.json").read_text())
    data.pop("_about")
    return data


@pytest.mark.parametrize("key", sorted(_before()))
def test_every_llm_experiment_keeps_its_values_and_cells(key):
    """The per-experiment configs resolve, at every profile, to the values and cells the single LLMConfig gave
    (recorded from the code before the split): a cell's seed derives from (root seed, cell), and every seed
    and generation-cache key inside it from the root seed and the values run_cell reads, so they are unchanged.
    What a config lost are fields its experiment never read (they are no longer attributes)."""
    from uqkd.config import config_to_dict

    name, profile = key.split("/")
    old = _before()[key]
    exp = get_experiment(name)
    cfg = resolve_config(exp, profile)
    new = config_to_dict(cfg)
    assert set(new) <= set(old["config"])
    assert {f: new[f] for f in new} == {f: old["config"][f] for f in new}
    assert [dict(c) for c in exp.cells(cfg)] == old["cells"]
    dropped = set(old["config"]) - set(new)
    assert dropped and dropped <= {"k", "k_values", "methods", "temperatures", "init_noises", "output_designs",
                                   "track_params", "step_budgets"}


def test_variance_aware_tiny_end_to_end(tmp_path):
    pytest.importorskip("transformers")
    from uqkd.llm.models import save_lm, tiny_causal_lm

    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    over = {"teacher": str(tmp_path / "teacher"), "student_every": 2, "embedder": "hash", "n_train": 4,
            "n_eval": 3, "k_values": "2", "step_budgets": "epochs,equal-steps", "n_students": 2, "max_new_tokens": 4, "k_eval": 2, "epochs": 1,
            "batch_size": 4, "lr": 1e-3, "cache_dir": str(tmp_path / "cache"), "threads": 0}
    res = run_experiment("llm-variance-aware", profile="quick", out=tmp_path / "out", overrides=over, progress=False)
    import pandas as pd

    full = res.read()
    assert set(full["record"]) == {"summary", "question", "question-inter"}
    df = full[full["record"] == "summary"]
    assert set(df["method"]) == {"teacher", "untrained-student", "single", "multi-response", "averaging",
                                 "variance-weighting", "inverse-variance-loss"}
    # the student before distillation, evaluated like the others on both splits (the learning baseline)
    un = df[df["method"] == "untrained-student"]
    assert set(un["split"]) == {"transfer", "heldout"} and (un["n_students"] == 1).all()
    students = df[~df["method"].isin(["teacher", "untrained-student"])]
    assert (students["n_students"] == 2).all()
    for m in ("mse", "cosine", "alignment", "intra_var", "exact_match", "accuracy", "hallucination"):
        assert students[f"{m}_mean"].notna().all() and (students[f"{m}_std"] >= 0).all()
    assert (students["inter_var"] >= 0).all()
    assert res.figures and all(p.is_file() for p in res.figures)
    # multi-response trains on all k answers per question
    assert set(df["split"]) == {"transfer", "heldout"}
    assert "seconds" not in df.columns and students["inter_var_se"].notna().all()
    ep = students[(students["split"] == "heldout") & (students["step_budget"] == "epochs")].set_index("method")
    assert ep.loc["multi-response", "train_rows"] > ep.loc["single", "train_rows"]
    # compute-matched budget: every method single-response KD's optimiser steps; a method that already took
    # them is not retrained (same students), multi-response is
    eq = students[(students["split"] == "heldout") & (students["step_budget"] == "equal-steps")].set_index("method")
    assert (eq["optimizer_steps"] == ep.loc["single", "optimizer_steps"]).all()
    assert ep.loc["multi-response", "optimizer_steps"] > eq.loc["multi-response", "optimizer_steps"]
    assert eq.loc["single", "same_students_as"] == "epochs" and pd.isna(eq.loc["multi-response", "same_students_as"])
    # knowledge change against the student before distillation, per student and question
    assert ep["accuracy_before_mean"].notna().all() and ep["first_train_loss"].gt(0).all()
    qs = full[(full["record"] == "question") & (full["method"] == "single") & (full["step_budget"] == "epochs")]
    right = qs["accuracy_before"] == 1
    assert qs.loc[right, "learned_noise"].eq(1 - qs.loc[right, "accuracy"]).all()
    assert qs.loc[~right, "learned_noise"].isna().all() and qs.loc[right, "fixed"].isna().all()
    assert qs.loc[~right, "fixed"].eq(qs.loc[~right, "accuracy"]).all()
    # same seed, fresh output directory and a warm sample cache: the same numbers
    res2 = run_experiment("llm-variance-aware", profile="quick", out=tmp_path / "out2", overrides=over, progress=False,
                          make_figures=False)
    assert res2.n_computed == 1
    assert res2.results_csv.read_bytes() == res.results_csv.read_bytes()  # byte-identical rerun
    _check_question_rows(full, n_students=2, n_q={"transfer": 4, "heldout": 3})
    # the claims run on the per-question rows (crossed mixed model), deterministically
    from uqkd.report.claims import CLAIM_VERDICTS, evaluate_claims

    r1 = {r.claim_id: r for r in evaluate_claims({"llm-variance-aware": full})}
    r2 = {r.claim_id: r for r in evaluate_claims({"llm-variance-aware": res2.read()})}
    tr = students[(students["split"] == "transfer")]
    assert qs["target_correct"].notna().any() and tr["target_accuracy_mean"].notna().all()
    assert qs[qs["split"] == "heldout"]["target_correct"].isna().all()  # labels exist only where students trained
    for cid in ("F5-llm", "B-llm-uqkd-methods", "B-llm-hallucination", "B-llm-learned-noise",
                "B-llm-uncertainty-fidelity", "B-llm-label-noise"):
        assert r1[cid].verdict in CLAIM_VERDICTS and r1[cid].verdict != "error", (cid, r1[cid])
        assert r1[cid] == r2[cid]
    for cid in ("F5-llm", "B-llm-uqkd-methods", "B-llm-hallucination"):
        assert "crossed mixed model" in r1[cid].statistic and "Welch across students" not in r1[cid].statistic
        assert "verdict from step budget equal-steps" in r1[cid].statistic and "epochs" in r1[cid].interval


def _check_question_rows(full, n_students, n_q, methods=None):
    """Per-(student, question) rows for every model and split, consistent with the summary rows."""
    import numpy as np

    summ = full[full["record"] == "summary"]
    q = full[full["record"] == "question"]
    inter = full[full["record"] == "question-inter"]
    if "step_budget" in full.columns:  # one budget at a time (the teacher and untrained rows have none)
        budgets = full["step_budget"].dropna().unique()
        if len(budgets) > 1:
            for b in budgets:
                _check_question_rows(full[full["step_budget"].isna() | (full["step_budget"] == b)], n_students, n_q,
                                     methods)
            return
    for (m, split), row in summ.set_index(["method", "split"]).iterrows():
        if methods is not None and m not in methods:
            continue
        rq = q[(q["method"] == m) & (q["split"] == split)]
        n = 1 if m in ("teacher", "untrained-student") else n_students
        assert len(rq) == n * n_q[split], (m, split)
        assert set(rq["student"]) == set(range(n)) and set(rq["question"]) == set(range(n_q[split]))
        per_student = rq.groupby("student")[["mse", "hallucination", "accuracy", "intra_var"]].mean()
        for metric in per_student.columns:
            assert per_student[metric].mean() == pytest.approx(row[f"{metric}_mean"], abs=1e-9), (m, split, metric)
        assert rq["hallucination"].isin([0.0, 1.0]).all() and rq["accuracy"].isin([0.0, 1.0]).all()
        if n >= 2:
            assert per_student["mse"].std(ddof=1) == pytest.approx(row["mse_std"], abs=1e-9)
            ri = inter[(inter["method"] == m) & (inter["split"] == split)]
            assert len(ri) == n_q[split] and ri["inter_var"].mean() == pytest.approx(row["inter_var"], abs=1e-9)
            assert np.all(ri["inter_var"] >= 0)
            # each student's share of the per-question inter-student variance averages to it exactly
            shares = rq.groupby("question")["inter_dev"].mean().sort_index().to_numpy()
            np.testing.assert_allclose(shares, ri.sort_values("question")["inter_var"].to_numpy(), atol=1e-9)


def _own(name, over):
    """The overrides that ``name``'s config has (each LLM experiment's config holds its own sweep only)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(get_experiment(name).config_cls)}
    return {k: v for k, v in over.items() if k in fields}


def test_other_llm_experiments_tiny(tmp_path):
    pytest.importorskip("transformers")

    from uqkd.llm.models import save_lm, tiny_causal_lm

    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    over = {"teacher": str(tmp_path / "teacher"), "student_every": 2, "embedder": "hash", "n_train": 3, "n_eval": 2,
            "k": 2, "n_students": 2, "max_new_tokens": 3, "k_eval": 2, "epochs": 1, "batch_size": 4,
            "cache_dir": str(tmp_path / "cache"), "threads": 0, "temperatures": "0.5,1.5", "init_noises": "0,0.05"}
    expect = {"llm-teacher-noise": ("temperature", {0.5, 1.5}), "llm-init-noise": ("init_noise", {0.0, 0.05}),
              "llm-output": ("method", {"teacher", "untrained-student", "single"})}
    for name, (col, values) in expect.items():
        res = run_experiment(name, profile="quick", out=tmp_path / "out", overrides=_own(name, over), progress=False,
                             make_figures=False)
        full = res.read()
        df = full[full["record"] == "summary"]
        assert set(df[col]) == values
        assert (full["record"] == "question").any() and (full["record"] == "question-inter").any()
        st = df[~df["method"].isin(["teacher", "untrained-student"])]
        assert (st["n_students"] == 2).all() and st["inter_var"].notna().all() and st["intra_var_mean"].notna().all()


def test_published_designs_hold_the_other_sources_fixed(tmp_path):
    """llm-output and llm-init-noise (noise 0): shared greedy teacher set, one data order, one init ->
    the students are identical (inter-student variance 0, parameter variance 0); with noise > 0 they differ."""
    pytest.importorskip("transformers")

    from uqkd.llm.models import save_lm, tiny_causal_lm

    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    over = {"teacher": str(tmp_path / "teacher"), "student_every": 2, "embedder": "hash", "n_train": 3, "n_eval": 2,
            "k": 2, "n_students": 2, "max_new_tokens": 3, "k_eval": 2, "epochs": 1, "batch_size": 4, "lr": 1e-3,
            "cache_dir": str(tmp_path / "cache"), "threads": 0, "init_noises": "0,0.05", "track_params": 50}
    full = run_experiment("llm-output", profile="quick", out=tmp_path / "o", overrides=_own("llm-output", over),
                          progress=False, make_figures=False).read()
    df = full[full["record"] == "summary"]
    st = df[df["method"] == "single"]
    assert set(st["output_design"]) == {"published", "per-student-order"}  # the quick profile runs both
    pub = st[st["output_design"] == "published"]
    assert (pub["inter_var"] == 0).all() and pub["design"].str.contains("shared-greedy, data_order=fixed").all()
    own = st[st["output_design"] == "per-student-order"]
    assert own["design"].str.contains("shared-greedy, data_order=per-student").all()
    _check_question_rows(full[full["output_design"] == "published"], n_students=2, n_q={"transfer": 3, "heldout": 2})
    # identical students: "inter-student variance remains" is not computable, with the design as the reason
    from uqkd.report.claims import evaluate_claims
    from uqkd.report.claims_llm import IDENTICAL_STUDENTS

    r = {x.claim_id: x for x in evaluate_claims({"llm-output": full[full["output_design"] == "published"]})}
    assert r["F4-llm"].verdict == "not computable" and IDENTICAL_STUDENTS in r["F4-llm"].value
    assert "nan" not in r["F4-llm"].value.lower()
    assert r["B-llm-students-learn"].verdict != "error"
    # both designs: the published one's identical students hand the verdict to the labelled uqkd design
    both = {x.claim_id: x for x in evaluate_claims({"llm-output": full})}["F4-llm"]
    assert both.verdict != "error" and "output_design=per-student-order" in both.statistic
    assert "published design: could not be computed" in both.value or "uqkd design per-student-order" in both.interval
    res = run_experiment("llm-init-noise", profile="quick", out=tmp_path / "o", overrides=_own("llm-init-noise", over), progress=False)
    df = res.read()
    summ = df[df["record"] == "summary"]
    assert (df["record"] == "question").any()
    z, p = summ[summ["init_noise"] == 0], summ[summ["init_noise"] == 0.05]
    assert (z["inter_var"] == 0).all() and (z["param_var_before"] == 0).all() and (z["param_var_after"] == 0).all()
    assert (p["param_var_before"] > 0).all() and (p["param_var_after"] > 0).all()
    traj = df[df["record"] == "trajectory"]
    assert len(traj) == 2 * 2 * (1 + 1)  # 2 noise levels x 2 students x (before + 1 epoch)
    assert any(f.name == "llm_init_noise_params.png" for f in res.figures)
