"""MLP experiments (sections 4-7): registration, tiny cells, row columns, config checks, one full run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from uqkd.config import ConfigError, build_config  # noqa: E402
from uqkd.experiments import _designs as D  # noqa: E402
from uqkd.experiments import get_experiment  # noqa: E402
from uqkd.experiments.linear import LINEAR_METHODS  # noqa: E402

MLP_EXPERIMENTS = {"teacher-noise-mlp": "4", "init-noise-mlp": "5", "bootstrap-mlp": "5", "student-entropy": "6",
                   "variance-aware-mlp": "7"}
STAT_COLUMNS = {"mse_mean", "mse_std", "mse_sem", "train_mse_mean", "train_mse_std", "inter_student_var", "n_students"}


def _run(name, seed=0, cells=None, **over):
    exp = get_experiment(name)
    cfg = build_config(exp.config_cls, (over, "test"))
    cells = exp.cells(cfg) if cells is None else cells
    return [row for c in cells for row in exp.run_cell(cfg, c, seed)], cfg


@pytest.mark.parametrize("name,section", sorted(MLP_EXPERIMENTS.items()))
def test_registered_with_profiles(name, section):
    exp = get_experiment(name)
    assert exp.section == section
    assert {"quick", "paper"} <= set(exp.profiles)
    for prof in ("quick", "paper"):
        cfg = build_config(exp.config_cls, (exp.profiles[prof], prof))
        assert exp.cells(cfg)


def test_paper_profiles_use_published_settings():
    va = get_experiment("variance-aware-mlp")
    cfg = build_config(va.config_cls, (va.profiles["paper"], "paper"))
    assert (cfg.n_students, cfg.hidden, cfg.lr, cfg.n_epochs) == (1000, (16,), 0.01, 200)
    assert len(va.cells(cfg)) == 4 * 16
    ini = get_experiment("init-noise-mlp")
    cfg = build_config(ini.config_cls, (ini.profiles["paper"], "paper"))
    assert (cfg.n_students, cfg.hidden, cfg.n_epochs, len(cfg.sigma_inits)) == (10_000, (128,), 300, 9)


def _layer_shapes(model):
    return [tuple(W.shape[1:]) for W in model.coefs_]


def test_bootstrap_mlp_paper_profile_is_the_published_design(monkeypatch):
    """Teacher 1x128 and students 1x64, both Adam lr 1e-3 for 300 epochs, one shared student initialisation."""
    import uqkd.experiments.mlp as M

    exp = get_experiment("bootstrap-mlp")
    cfg = build_config(exp.config_cls, (exp.profiles["paper"], "paper"))
    assert (cfg.teacher, cfg.teacher_hidden, cfg.teacher_lr, cfg.teacher_n_epochs) == ("mlp", (128,), 1e-3, 300)
    assert (cfg.hidden, cfg.lr, cfg.n_epochs, cfg.student_init, cfg.n_students) == ((64,), 1e-3, 300, "shared", 1000)
    # the networks the cell builds (epochs cut for speed: the builders receive the config's settings)
    built = []
    real = D.mlp  # the one MLP builder (teachers and students)
    monkeypatch.setattr(D, "mlp", lambda **kw: built.append(kw) or real(**kw))
    M.regression_teacher.cache_clear()
    small = build_config(exp.config_cls, ({**exp.profiles["paper"], "n_students": 4, "n_epochs": 3,
                                           "teacher_n_epochs": 2}, "test"))
    (row,) = exp.run_cell(small, {"fraction": 0.5, "target": "teacher"}, 0)
    teacher_kw, student_kw = built
    assert (teacher_kw["hidden"], teacher_kw["lr"], teacher_kw["n_epochs"]) == ((128,), 1e-3, 2)
    assert (student_kw["hidden"], student_kw["lr"], student_kw["shared_init"]) == ((64,), 1e-3, True)
    M.regression_teacher.cache_clear()
    # one shared initialisation: identical students before training, whatever the cell
    model = real(**{**student_kw, "n_epochs": 0}).fit(np.zeros((5, 13)), np.zeros(5))
    assert _layer_shapes(model) == [(64, 13), (1, 64)]
    assert np.ptp(model.init_params_, axis=0).max() == 0.0
    per = real(**{**student_kw, "n_epochs": 0, "shared_init": False}).fit(np.zeros((5, 13)), np.zeros(5))
    assert np.ptp(per.init_params_, axis=0).max() > 0.0
    assert row["student_init"] == "shared"


def test_bootstrap_mlp_shared_init_leaves_only_resample_variance():
    """With one shared init, the full-size bootstrap spreads students less than per-student inits do."""
    kw = dict(fractions=(1.0,), targets=("teacher",), n_students=8, n_epochs=60, hidden=(8,), lr=0.01,
              teacher_hidden=(8,), teacher_n_epochs=30)
    shared, _ = _run("bootstrap-mlp", **kw)
    per, _ = _run("bootstrap-mlp", student_init="per-student", **kw)
    assert shared[0]["inter_student_var"] < per[0]["inter_student_var"]


def test_init_noise_mlp_default_is_the_published_design(monkeypatch):
    """Independent Kaiming base per student, ground-truth labels; shared base / teacher targets are settings."""
    exp = get_experiment("init-noise-mlp")
    cfg = build_config(exp.config_cls, (exp.profiles["paper"], "paper"))
    assert (cfg.base_init, cfg.target, cfg.hidden, cfg.lr, cfg.n_epochs) == ("per-student", "ground-truth", (128,),
                                                                             0.01, 300)
    rows, _ = _run("init-noise-mlp", sigma_inits=(0.0,), n_students=6, n_epochs=5, hidden=(16,), n_track_students=0)
    # sigma_init = 0 and still a spread before training: every student drew its own base
    assert rows[0]["param_var_before"] > 0
    shared, _ = _run("init-noise-mlp", sigma_inits=(0.0,), n_students=6, n_epochs=5, hidden=(16,),
                     n_track_students=0, base_init="shared")
    assert shared[0]["param_var_before"] == 0.0
    # ground truth: no teacher is fitted, and the students' labels are y_train
    import uqkd.experiments.mlp as M
    from uqkd.data.tabular import load_tabular

    def no_teacher(*a, **k):
        raise AssertionError("a teacher was fitted")

    seen = []
    real = D.mlp  # the one MLP builder (teachers and students)

    def spy(**kw):
        m = real(**kw)
        fit = m.fit
        m.fit = lambda X, y, **f: seen.append(np.asarray(y)) or fit(X, y, **f)
        return m

    monkeypatch.setattr(M, "regression_teacher", no_teacher)
    monkeypatch.setattr(D, "mlp", spy)
    _run("init-noise-mlp", sigma_inits=(0.1,), n_students=3, n_epochs=2, hidden=(4,), n_track_students=0)
    np.testing.assert_array_equal(seen[0], load_tabular("boston", seed=0).y_train)
    with pytest.raises(ConfigError, match="base_init"):
        build_config(exp.config_cls, ({"base_init": "tied"}, "test"))


def test_teacher_noise_mlp_rows_and_monotone_in_sigma():
    rows, _ = _run("teacher-noise-mlp", sigmas=(0.0, 2.0), n_students=8, n_epochs=80, hidden=(8,))
    assert [r["sigma"] for r in rows] == [0.0, 2.0]
    assert STAT_COLUMNS <= set(rows[0])
    assert rows[1]["mse_mean"] > rows[0]["mse_mean"]
    assert rows[1]["inter_student_var"] > 3 * rows[0]["inter_student_var"]


def test_init_noise_mlp_summary_and_trajectory():
    rows, cfg = _run("init-noise-mlp", sigma_inits=(0.0, 0.4), n_students=8, n_epochs=40, hidden=(16,),
                     n_track_students=2, base_init="shared", target="teacher", teacher_n_epochs=30)
    summ = [r for r in rows if r["record"] == "summary"]
    traj = [r for r in rows if r["record"] == "trajectory"]
    assert len(summ) == 2 and len(traj) == 2 * (cfg.n_epochs + 1)
    s0, s4 = summ
    # shared init, no noise: identical students (up to float rounding: students sit at different positions of
    # one batched matmul, whose summation order may differ by position on this torch/BLAS build)
    assert s0["param_var_before"] == 0.0 and s0["mse_std"] <= 1e-7 * max(s0["mse_mean"], 1e-12) + 1e-12
    assert s4["mse_std"] > 1e3 * s0["mse_std"]
    assert s4["param_var_before"] > 0 and s4["pred_var_after"] < s4["pred_var_before"]
    assert {"param_mean", "param_std", "param_s0", "param_s1", "epoch"} <= set(traj[0])


def test_bootstrap_mlp_variance_falls_with_fraction():
    rows, _ = _run("bootstrap-mlp", fractions=(0.2, 1.0), targets=("teacher",), n_students=8, n_epochs=60,
                   hidden=(16,), lr=0.01)
    assert rows[0]["inter_student_var"] > rows[1]["inter_student_var"]
    assert rows[0]["bootstrap_size"] < rows[1]["bootstrap_size"]


def test_student_entropy_rows():
    rows, _ = _run("student-entropy", datasets=("wine",), target_modes=("argmax", "soft"), n_students=2,
                   n_epochs=60, teacher_n_epochs=15, teacher_hidden=(16,), hidden=(8,))
    assert [(r["student"], r["target_mode"]) for r in rows] == [
        ("mlp", "argmax"), ("mlp", "soft"), ("logistic", "argmax"), ("logistic", "soft")]
    for r in rows:
        assert {"accuracy", "entropy", "entropy_correct", "entropy_incorrect", "ece", "nll", "teacher_entropy",
                "entropy_gap", "n_students"} <= set(r)
        assert 0 <= r["accuracy"] <= 1
    # argmax targets make the MLP student more confident than soft targets do
    assert rows[0]["entropy"] < rows[1]["entropy"]


def test_variance_aware_mlp_methods_mirror_linear():
    rows, _ = _run("variance-aware-mlp", alphas=(0.5,), ks=(1, 5), n_students=6, n_epochs=40, hidden=(8,))
    methods = list(LINEAR_METHODS)
    assert [r["method"] for r in rows] == methods * 2
    for r in rows:
        assert STAT_COLUMNS <= set(r) and r["oracle"] == LINEAR_METHODS[r["method"]][0]
    k1 = {r["method"]: r for r in rows if r["k"] == 1}
    for m in ("variance-weighting-paper-oracle", "variance-weighting-wls", "variance-weighting-shrinkage"):
        assert k1[m]["mse_mean"] == k1["averaging"]["mse_mean"]  # no per-input variance with one draw
    k5 = {r["method"]: r for r in rows if r["k"] == 5}
    assert k5["single"]["mse_mean"] == k1["single"]["mse_mean"]  # single does not depend on k
    assert k5["averaging"]["inter_student_var"] < k1["averaging"]["inter_student_var"]


@pytest.mark.parametrize(
    "name,over,arg",
    [
        ("variance-aware-mlp", {"methods": ("median",)}, "methods"),
        ("variance-aware-mlp", {"ks": (0,)}, "ks"),
        ("teacher-noise-mlp", {"n_students": 1}, "n_students"),
        ("init-noise-mlp", {"sigma_inits": (-0.1,)}, "sigma_inits"),
        ("bootstrap-mlp", {"fractions": (1.5,)}, "fractions"),
        ("student-entropy", {"datasets": ("imagenet",)}, "datasets"),
        ("student-entropy", {"temperature": 0.0}, "temperature"),
    ],
)
def test_config_errors_name_the_field(name, over, arg):
    exp = get_experiment(name)
    with pytest.raises(ConfigError, match=arg):
        build_config(exp.config_cls, (over, "test"))


def test_run_experiment_writes_results_and_figure(tmp_path):
    from uqkd.runner import run_experiment

    res = run_experiment("teacher-noise-mlp", profile="quick", out=tmp_path, progress=False,
                         overrides={"sigmas": (0.0, 1.0), "n_students": 4, "n_epochs": 20, "hidden": (4,)})
    import pandas as pd

    df = pd.read_csv(res.results_csv)
    assert len(df) == 2 and (df["n_students"] == 4).all()
    assert res.figures and all(p.is_file() for p in res.figures)
    # rerun resumes: nothing recomputed, same table
    again = run_experiment("teacher-noise-mlp", profile="quick", out=tmp_path, progress=False,
                           overrides={"sigmas": (0.0, 1.0), "n_students": 4, "n_epochs": 20, "hidden": (4,)})
    assert again.n_computed == 0
    np.testing.assert_allclose(pd.read_csv(again.results_csv)["mse_mean"], df["mse_mean"])


def test_results_do_not_depend_on_worker_count(tmp_path):
    """Two worker processes give the same table as one (every cell seeds itself from its identity)."""
    import pandas as pd

    from uqkd.runner import run_experiment

    over = {"alphas": (0.5,), "ks": (1, 3, 5), "n_students": 6, "n_epochs": 30, "hidden": (4,)}
    a = run_experiment("variance-aware-mlp", out=tmp_path / "w1", overrides=over, workers=1, progress=False,
                       make_figures=False)
    b = run_experiment("variance-aware-mlp", out=tmp_path / "w2", overrides=over, workers=2, progress=False,
                       make_figures=False)
    pd.testing.assert_frame_equal(pd.read_csv(a.results_csv), pd.read_csv(b.results_csv))


def test_paired_variance_ratio_covers_and_is_tighter_than_the_f_interval():
    """The paired share-t interval of a variance ratio (students the unit, the same students before and after)
    covers the true ratio at the nominal rate when coordinates have very different scales, and is far narrower
    than an F interval on R - 1 df, which ignores the pairing and the averaged coordinates."""
    from scipy.stats import f, t

    from uqkd.metrics import paired_variance_ratio

    rng = np.random.default_rng(0)
    R, P, sims, c = 50, 40, 400, 0.7
    hits, width_t, width_f = 0, [], []
    for _ in range(sims):
        sd = np.exp(rng.normal(0, 1, P))
        b = rng.normal(0, 1, (R, P)) * sd
        a = 0.8 * b + np.sqrt(c - 0.64) * rng.normal(0, 1, (R, P)) * sd  # Var(after) = c Var(before)
        r, se = paired_variance_ratio(b, a)
        h = t.ppf(0.975, R - 1) * se
        hits += abs(np.log(r) - np.log(c)) <= h
        width_t.append(2 * h)
        width_f.append(np.log(f.ppf(0.975, R - 1, R - 1) / f.ppf(0.025, R - 1, R - 1)))
    assert hits / sims >= 0.93 - 2 * np.sqrt(0.95 * 0.05 / sims)  # measured 0.94 at 1,000 simulations
    assert np.mean(width_t) < 0.5 * np.mean(width_f)
    with pytest.raises(ValueError, match="after: expected the shape of before"):
        paired_variance_ratio(np.ones((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="n_students >= 3"):
        paired_variance_ratio(np.ones((2, 3)), np.ones((2, 3)))
