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


@pytest.mark.parametrize(
    "override, match",
    [
        ({"n_students": 1}, "n_students"),
        ({"methods": "single,best"}, "unknown method 'best'"),
        ({"k_values": "0,3"}, "k_values"),
        ({"temperature": 0}, "temperature"),
        ({"k_eval": 1}, "k_eval"),
        ({"output_designs": "published,bogus"}, "output_designs: expected one or more of published"),
    ],
)
def test_config_checks(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(get_experiment("llm-variance-aware"), "quick", override)


def test_variance_aware_tiny_end_to_end(tmp_path):
    pytest.importorskip("transformers")
    from uqkd.llm.models import save_lm, tiny_causal_lm

    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    over = {"teacher": str(tmp_path / "teacher"), "student_every": 2, "embedder": "hash", "n_train": 4,
            "n_eval": 3, "k_values": "2", "n_students": 2, "max_new_tokens": 4, "k_eval": 2, "epochs": 1,
            "batch_size": 4, "lr": 1e-3, "cache_dir": str(tmp_path / "cache"), "threads": 0}
    res = run_experiment("llm-variance-aware", profile="quick", out=tmp_path / "out", overrides=over, progress=False)
    import pandas as pd

    df = pd.read_csv(res.results_csv)
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
    mr = students[students["split"] == "heldout"].set_index("method")
    assert mr.loc["multi-response", "train_rows"] > mr.loc["single", "train_rows"]
    # same seed, fresh output directory and a warm sample cache: the same numbers
    res2 = run_experiment("llm-variance-aware", profile="quick", out=tmp_path / "out2", overrides=over, progress=False,
                          make_figures=False)
    assert res2.n_computed == 1
    assert res2.results_csv.read_bytes() == res.results_csv.read_bytes()  # byte-identical rerun


def test_other_llm_experiments_tiny(tmp_path):
    pytest.importorskip("transformers")
    import pandas as pd

    from uqkd.llm.models import save_lm, tiny_causal_lm

    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    over = {"teacher": str(tmp_path / "teacher"), "student_every": 2, "embedder": "hash", "n_train": 3, "n_eval": 2,
            "k": 2, "n_students": 2, "max_new_tokens": 3, "k_eval": 2, "epochs": 1, "batch_size": 4,
            "cache_dir": str(tmp_path / "cache"), "threads": 0, "temperatures": "0.5,1.5", "init_noises": "0,0.05"}
    expect = {"llm-teacher-noise": ("temperature", {0.5, 1.5}), "llm-init-noise": ("init_noise", {0.0, 0.05}),
              "llm-output": ("method", {"teacher", "untrained-student", "single"})}
    for name, (col, values) in expect.items():
        res = run_experiment(name, profile="quick", out=tmp_path / "out", overrides=over, progress=False,
                             make_figures=False)
        df = pd.read_csv(res.results_csv)
        if "record" in df:
            df = df[df["record"] == "summary"]
        assert set(df[col]) == values
        st = df[~df["method"].isin(["teacher", "untrained-student"])]
        assert (st["n_students"] == 2).all() and st["inter_var"].notna().all() and st["intra_var_mean"].notna().all()


def test_published_designs_hold_the_other_sources_fixed(tmp_path):
    """llm-output and llm-init-noise (noise 0): shared greedy teacher set, one data order, one init ->
    the students are identical (inter-student variance 0, parameter variance 0); with noise > 0 they differ."""
    pytest.importorskip("transformers")
    import pandas as pd

    from uqkd.llm.models import save_lm, tiny_causal_lm

    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    over = {"teacher": str(tmp_path / "teacher"), "student_every": 2, "embedder": "hash", "n_train": 3, "n_eval": 2,
            "k": 2, "n_students": 2, "max_new_tokens": 3, "k_eval": 2, "epochs": 1, "batch_size": 4, "lr": 1e-3,
            "cache_dir": str(tmp_path / "cache"), "threads": 0, "init_noises": "0,0.05", "track_params": 50}
    df = pd.read_csv(run_experiment("llm-output", profile="quick", out=tmp_path / "o", overrides=over,
                                    progress=False, make_figures=False).results_csv)
    st = df[df["method"] == "single"]
    assert set(st["output_design"]) == {"published", "per-student-order"}  # the quick profile runs both
    pub = st[st["output_design"] == "published"]
    assert (pub["inter_var"] == 0).all() and pub["design"].str.contains("shared-greedy, data_order=fixed").all()
    own = st[st["output_design"] == "per-student-order"]
    assert own["design"].str.contains("shared-greedy, data_order=per-student").all()
    res = run_experiment("llm-init-noise", profile="quick", out=tmp_path / "o", overrides=over, progress=False)
    df = pd.read_csv(res.results_csv)
    summ = df[df["record"] == "summary"]
    z, p = summ[summ["init_noise"] == 0], summ[summ["init_noise"] == 0.05]
    assert (z["inter_var"] == 0).all() and (z["param_var_before"] == 0).all() and (z["param_var_after"] == 0).all()
    assert (p["param_var_before"] > 0).all() and (p["param_var_after"] > 0).all()
    traj = df[df["record"] == "trajectory"]
    assert len(traj) == 2 * 2 * (1 + 1)  # 2 noise levels x 2 students x (before + 1 epoch)
    assert any(f.name == "llm_init_noise_params.png" for f in res.figures)
