"""``llm-budget``: uniform vs two-stage adaptive teacher sampling at an equal budget (tiny models), and its claim."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from uqkd.config import ConfigError
from uqkd.experiments import get_experiment
from uqkd.report.claims import evaluate_claims
from uqkd.runner import resolve_config, run_experiment

CLAIM = "B-llm-adaptive-budget"


def _claim(df):
    return next(c for c in evaluate_claims({"llm-budget": df}) if c.claim_id == CLAIM)


# ----------------------------------------------------------------------------------------- registry, config


def test_registered_with_profiles():
    exp = get_experiment("llm-budget")
    assert exp.section == "7"
    quick, demo, paper = (resolve_config(exp, p) for p in ("quick", "demo", "paper"))
    assert (quick.budget_per_question, quick.pilot, quick.n_students, quick.n_train) == (8, 4, 5, 48)
    assert quick.qa_kinds == ("capital", "country-of-capital") and quick.method == "averaging"
    assert demo.n_train <= 8 and demo.n_eval <= 4 and demo.n_students == 2 and demo.epochs <= 2  # `make demo` runs it
    assert paper.n_students > quick.n_students and paper.budget_per_question > quick.budget_per_question
    assert [c["scheme"] for c in exp.cells(quick)] == ["reference", "uniform", "adaptive"]


@pytest.mark.parametrize(
    "override, match",
    [
        ({"pilot": 1}, "pilot: expected an integer >= 2"),
        ({"budget_per_question": 2, "pilot": 3}, r"budget_per_question: expected an integer >= pilot \(3\)"),
        ({"schemes": "uniform,oracle"}, "schemes: expected values among uniform, adaptive; got 'oracle'"),
        ({"schemes": "uniform,uniform"}, "schemes: expected each value once"),
        ({"method": "variance-weighting"}, "method: expected one of"),
        ({"teacher_answers": "shared-greedy"}, "own draws"),
        ({"n_students": 1}, "n_students"),
    ],
)
def test_config_checks(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(get_experiment("llm-budget"), "quick", override)


# ----------------------------------------------------------------------------------------- tiny end to end


class _SpikyHashEmbedder:
    """The hash embedder with one answer in ~6 scaled x30: question dispersions that differ by orders of
    magnitude, so the empirical-Bayes shrinkage of a 3-answer pilot does not pool them (the tiny random
    teacher's dispersions are otherwise all alike and the allocation comes out uniform)."""

    def __init__(self):
        from uqkd.llm.embed import HashEmbedder

        self._h = HashEmbedder(64)
        self.name = "spiky-hash:64"

    def encode(self, texts):
        e = self._h.encode(texts)
        s = np.array([30.0 if hashlib.md5(t.encode()).digest()[0] % 6 == 0 else 1.0 for t in texts])
        return e * s[:, None]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    pytest.importorskip("transformers")
    from uqkd.llm.models import save_lm, tiny_causal_lm

    d = tmp_path_factory.mktemp("llm-budget")
    save_lm(tiny_causal_lm(seed=0, n_layers=4), d / "teacher")
    (d / "qa.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is the capital of C{i}?", "answer": f"City{i}"}) + "\n"
        for i in range(14)))
    return d


def _over(work, cache="cache", **kw):
    over = {"teacher": str(work / "teacher"), "data": str(work / "qa.jsonl"), "student_every": 2, "embedder": "hash",
            "n_train": 8, "n_eval": 2, "budget_per_question": 6, "pilot": 3, "n_students": 2, "max_new_tokens": 4,
            "k_eval": 2, "epochs": 1, "batch_size": 4, "lr": 1e-3, "cache_dir": str(work / cache), "threads": 0}
    return {**over, **kw}


@pytest.fixture(scope="module")
def spiky(work):
    """Runs with the spiky embedder (twice, fresh output and cache: byte-identity); the patch ends with the fixture."""
    import uqkd.llm.pipeline as pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "_RES", {})
        mp.setattr(pipeline, "load_embedder", lambda spec, device="auto": _SpikyHashEmbedder())
        res = run_experiment("llm-budget", profile="quick", out=work / "out", overrides=_over(work), progress=False)
        res2 = run_experiment("llm-budget", profile="quick", out=work / "out2", overrides=_over(work, "cache2"),
                              progress=False, make_figures=False)
        from uqkd.experiments.llm import _setup

        cfg = resolve_config(get_experiment("llm-budget"), "quick", _over(work))
        r, train, _test, dec, _sft = _setup(cfg, 0)
    return {"res": res, "res2": res2, "df": res.read(), "setup": (r, train, dec)}


def test_equal_budget_and_rows(spiky):
    df = spiky["df"]
    summ = df[df["record"] == "summary"]
    assert set(summ["method"]) == {"teacher", "untrained-student", "uniform", "adaptive"}
    assert set(summ["split"]) == {"transfer", "heldout"}
    st = summ[summ["method"].isin(["uniform", "adaptive"])]
    assert len(st) == 4 and (st["n_students"] == 2).all()
    assert (summ["budget"] == 6 * 8).all() and (st["budget_used"] == 48).all()
    assert (st["teacher_answers_total"] == 2 * 48).all() and (st["training_method"] == "averaging").all()
    for m in ("mse", "alignment", "accuracy"):
        assert st[f"{m}_mean"].notna().all() and (st[f"{m}_std"] >= 0).all()
    assert st["inter_var"].notna().all() and st["inter_var_se"].notna().all()
    al = df[df["record"] == "allocation"]
    per_student = al.groupby(["method", "student"])["k"].agg(["sum", "count"])
    assert len(per_student) == 4 and (per_student["sum"] == 48).all() and (per_student["count"] == 8).all()
    assert (al[al["method"] == "uniform"]["k"] == 6).all()
    ad = st[st["method"] == "adaptive"].iloc[0]
    ka = al[al["method"] == "adaptive"]["k"]
    assert (ad["k_min"], ad["k_max"]) == (ka.min(), ka.max()) and ad["k_mean"] == 6.0
    assert ad["k_min"] >= 3 and ad["k_min"] < ad["k_max"]  # the pilot floor; a non-uniform allocation
    assert ad["pilot_dispersion_mean"] > 0 and ad["pilot_dispersion_cv"] > 0
    assert st[st["method"] == "uniform"]["pilot_dispersion_mean"].isna().all()
    assert spiky["res"].figures and all(p.is_file() for p in spiky["res"].figures)
    assert "seconds" not in df.columns


def test_adaptive_k_follow_the_two_stage_allocation(spiky):
    from uqkd.aggregate import allocate_budget_two_stage

    al = spiky["df"]
    al = al[(al["record"] == "allocation") & (al["method"] == "adaptive")]
    n_nonuniform = 0
    for _, g in al.groupby("student"):
        nu = float(g["pilot_sample_df"].iloc[0])
        assert nu >= 2  # the dispersions' own degrees of freedom, at least pilot - 1
        k_ref, v_ref = allocate_budget_two_stage(g["pilot_dispersion"].to_numpy(float), 3, 48, sample_df=nu)
        assert g["k"].astype(int).tolist() == k_ref.tolist()
        assert np.allclose(g["pilot_dispersion_shrunk"], v_ref)
        n_nonuniform += g["k"].nunique() > 1
    assert n_nonuniform >= 1


def test_draws_are_named_by_scheme_and_student(spiky):
    """Student r's adaptive draws are those of ``uqkd llm sample --budget``'s sampler at the seed named by
    (scheme, r); different students and schemes get different draws."""
    from uqkd.experiments.llm_budget import budget_draws_seed
    from uqkd.llm.budget import budget_samples
    from uqkd.llm.generate import generate_samples

    res, train, dec = spiky["setup"]
    qs, ids = [it.question for it in train], [it.id for it in train]
    al = spiky["df"]
    al = al[(al["record"] == "allocation") & (al["method"] == "adaptive")]
    texts = {}
    for r in (0, 1):
        g, ks, _e, (d0, _v) = budget_samples(res.teacher, qs, ids, 3, 48, dec, budget_draws_seed(0, "adaptive", r),
                                             None, res.embedder)
        mine = al[al["student"] == r]
        assert mine["question_id"].tolist() == ids and mine["k"].astype(int).tolist() == ks
        assert np.allclose(mine["pilot_dispersion"], d0)
        texts[r] = g.texts
    assert texts[0] != texts[1]
    uni = generate_samples(res.teacher, qs, 3, dec, seed=budget_draws_seed(0, "uniform", 0)).texts
    assert [t[:3] for t in texts[0]] != uni  # the schemes' pilot/uniform draws are independent


def test_byte_identical_rerun(spiky):
    assert spiky["res2"].n_computed == 3
    assert spiky["res2"].results_csv.read_bytes() == spiky["res"].results_csv.read_bytes()


def test_claim_computes_on_the_run(spiky):
    c = _claim(spiky["df"])
    assert c.verdict in ("holds", "contradicted", "inconclusive", "not computable") and c.beyond
    if c.verdict != "not computable":
        assert "inter-var adaptive/uniform" in c.value and "MSE adaptive-uniform" in c.value


def test_uniform_allocation_is_reported_not_judged(work):
    """The plain hash embedder: the tiny teacher's pilot dispersions are all alike, shrinkage pools them and every
    adaptive student allocates uniformly; the claim says so instead of giving a verdict."""
    res = run_experiment("llm-budget", profile="quick", out=work / "out-uniform",
                         overrides=_over(work, n_train=4, budget_per_question=4, pilot=2), progress=False,
                         make_figures=False)
    df = res.read()
    ad = df[(df["record"] == "summary") & (df["method"] == "adaptive")]
    assert (ad["k_min"] == ad["k_max"]).all() and (ad["n_uniform_allocations"] == 2).all()
    c = _claim(df)
    assert c.verdict == "not computable"
    assert "allocation was uniform: shrinkage pooled the pilot dispersions" in c.value


# ----------------------------------------------------------------------------------------- the claim, crafted


def _table(iv_u=0.10, iv_a=0.05, se=0.004, mse_u=0.50, mse_a=0.49, sd=0.02, n=40, kmin=2, kmax=9, n_eval=200,
           used_a=None, bpq=3, pilot=2, disp=0.05):
    rows = []
    for split in ("transfer", "heldout"):
        for m, iv, mse in (("uniform", iv_u, mse_u), ("adaptive", iv_a, mse_a)):
            a = m == "adaptive"
            rows.append({"scheme": m, "record": "summary", "method": m, "split": split, "n_students": n,
                         "mse_mean": mse, "mse_std": sd, "inter_var": iv, "inter_var_se": se, "n_eval": n_eval,
                         "budget": 3 * 24, "budget_per_question": bpq, "pilot": pilot,
                         "budget_used": (used_a if used_a is not None and a else 72),
                         "k_min": kmin if a else bpq, "k_max": kmax if a else bpq, "k_mean": 3.0,
                         "k_sd": 1.2 if a and kmin < kmax else 0.0,
                         "n_uniform_allocations": (0 if kmin < kmax else n) if a else n,
                         "pilot_dispersion_mean": disp if a else float("nan"),
                         "pilot_dispersion_cv": 1.8 if a else float("nan")})
        rows.append({"scheme": "reference", "record": "summary", "method": "teacher", "split": split,
                     "n_students": 1, "mse_mean": 0.3, "mse_std": 0.0, "inter_var": 0.0, "inter_var_se": 0.0})
    rows.append({"scheme": "adaptive", "record": "allocation", "method": "adaptive", "student": 0, "k": 5})
    return pd.DataFrame(rows)


def test_claim_holds_with_much_lower_inter_var():
    c = _claim(_table())
    assert c.verdict == "holds", c
    assert "x0.5" in c.value and "held-out verdict: holds" in c.interval


def test_claim_contradicted_when_adaptive_is_more_variable():
    assert _claim(_table(iv_a=0.20)).verdict == "contradicted"


def test_claim_contradicted_when_adaptive_raises_mse():
    assert _claim(_table(mse_a=0.60)).verdict == "contradicted"


def test_claim_inconclusive_with_few_students_and_noisy_ratio():
    c = _claim(_table(iv_a=0.09, se=0.03, n=3, n_eval=10, sd=0.1))
    assert c.verdict == "inconclusive" and "MDE" in c.mde


def test_claim_uniform_allocation_message():
    c = _claim(_table(kmin=3, kmax=3))
    assert c.verdict == "not computable"
    assert "allocation was uniform: shrinkage pooled the pilot dispersions" in c.value
    c = _claim(_table(kmin=2, kmax=2, bpq=2, pilot=2))
    assert c.verdict == "not computable" and "budget per question equals the pilot" in c.value
    c = _claim(_table(kmin=3, kmax=3, disp=0.0))
    assert c.verdict == "not computable" and "no pilot showed any dispersion" in c.value


def test_claim_not_computable_on_nan_and_unequal_budgets():
    c = _claim(_table(iv_a=float("nan")))
    assert c.verdict == "not computable" and c.value.startswith("could not be computed")
    c = _claim(_table(used_a=80))
    assert c.verdict == "not computable" and "unequal budgets" in c.value


def test_claim_not_run_without_the_experiment():
    c = next(c for c in evaluate_claims({}) if c.claim_id == CLAIM)
    assert c.verdict == "not run"
