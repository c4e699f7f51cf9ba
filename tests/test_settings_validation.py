"""The shared settings validator: declared ranges on every config field, one message style, exit 2."""

from __future__ import annotations

import dataclasses

import pytest

import uqkd.config as C
from uqkd.cli import main
from uqkd.config import ConfigError, build_config, check_options, numeric_fields, option, unbounded_fields
from uqkd.experiments import get_experiment, list_experiments
from uqkd.experiments.base import Experiment, register

GIB = 1024**3


def _cli(capsys, tmp_path, experiment, *sets):
    argv = ["run", experiment, "--out", str(tmp_path), "--quiet", "--workers", "1"]
    for s in sets:
        argv += ["--set", s]
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize(
    "experiment, sets, message",
    [
        ("teacher-noise-mlp", ["lr=inf"], "lr: expected a finite number > 0, got inf"),
        ("teacher-noise-linear", ["sigmas=0,,1"],
         "sigmas: expected a comma-separated list of float without empty items, got '0,,1'"),
        ("variance-aware-linear", ["methods=single,single"],
         "methods: expected each method once, got single more than once"),
        ("llm-variance-aware", ["methods=single,averaging,single"],
         "methods: expected each value once, got single more than once"),
        ("student-entropy", ["lr=inf"], "lr: expected a finite number > 0, got inf"),
        ("student-entropy", ["temperature=inf"], "temperature: expected a finite number > 0, got inf"),
        ("teacher-noise-linear", ["sigmas=0.5,nan"], "sigmas: expected finite values >= 0, got nan"),
        ("teacher-noise-mlp", ["sigmas=nan"], "sigmas: expected finite values >= 0, got nan"),
        ("teacher-noise-linear", ["sigmas=1e308"], "sigmas: expected finite values <= 1000, got 1e+308"),
        ("bootstrap-linear", ["teacher_noises=1e308"], "teacher_noises: expected finite values <= 1000, got 1e+308"),
        ("variance-aware-linear", ["alphas=1e308"], "alphas: expected finite values <= 1000, got 1e+308"),
        ("variance-aware-mlp", ["teacher_hidden=0"], "teacher_hidden: expected integers >= 1, got 0"),
        ("teacher-noise-mlp", ["teacher_hidden=16,-4"], "teacher_hidden: expected integers >= 1, got -4"),
        ("bootstrap-mlp", ["teacher_hidden=1.5"], "teacher_hidden: expected an integer, got '1.5'"),
        ("student-entropy", ["hidden=0"], "hidden: expected integers >= 1, got 0"),
        ("student-entropy", ["teacher_hidden=-1"], "teacher_hidden: expected integers >= 1, got -1"),
        ("init-noise-mlp", ["track_param=100000"],
         "track_param: expected an integer < 1921 (parameters of the student), got 100000"),
        ("init-noise-mlp", ["track_param=-1"], "track_param: expected an integer >= 0, got -1"),
        ("variance-aware-linear", ["n_students=2000000"], "n_students: expected an integer <= 1000000, got 2000000"),
        ("variance-aware-linear", ["ks=1,200000"], "ks: expected integers <= 100000, got 200000"),
        ("variance-aware-linear", ["noise_models=flat"],
         "noise_models: expected values among homoscedastic, heteroscedastic; got 'flat'"),
        ("adaptive-budget-linear", ["alpha=inf"], "alpha: expected a finite number > 0, got inf"),
        ("llm-init-noise", ["init_noises=0,inf"], "init_noises: expected finite values >= 0, got inf"),
        ("llm-teacher-noise", ["temperatures=inf"], "temperatures: expected finite values > 0, got inf"),
    ],
)
def test_bad_setting_exits_2_with_one_line(capsys, tmp_path, experiment, sets, message):
    rc, err = _cli(capsys, tmp_path, experiment, *sets)
    assert rc == 2
    assert err == f"uqkd: error: {message}\n"
    assert not (tmp_path / experiment / "results.csv").exists()


def test_memory_refusal_names_the_settings_and_the_bytes(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "machine_memory_bytes", lambda: 64 * GIB)
    rc, err = _cli(capsys, tmp_path, "variance-aware-linear", "n_students=100000", "ks=10000",
                   "teacher_sampling=draws")
    assert rc == 2
    assert err == (
        "uqkd: error: n_students, ks, teacher_sampling: expected settings whose arrays fit in half of this machine's "
        "memory (32.00 GiB), got an estimated 8.84 TiB per cell (n_students=100000 x n=405 training inputs x "
        "k=10000 draws (teacher_sampling=draws), float64); reduce them\n")
    # the same students with exact sampling (two numbers per input, not k) fit
    cfg = build_config(get_experiment("variance-aware-linear").config_cls,
                       ({"n_students": 100000, "ks": "10000", "teacher_sampling": "exact"}, "test"))
    assert cfg.memory_estimate()[0] < 32 * GIB


def test_memory_estimate_of_mlp_students(monkeypatch):
    monkeypatch.setattr(C, "machine_memory_bytes", lambda: 64 * GIB)
    exp = get_experiment("variance-aware-mlp")
    build_config(exp.config_cls, ({"n_students": 10_000}, "test"))  # paper-sized: fits
    with pytest.raises(ConfigError, match=r"^n_students, hidden: expected settings whose arrays fit .* TiB per cell"):
        build_config(exp.config_cls, ({"n_students": 1_000_000, "hidden": "100000"}, "test"))


def test_paper_profiles_fit_a_16_gib_machine(monkeypatch):
    from uqkd.runner import resolve_config

    monkeypatch.setattr(C, "machine_memory_bytes", lambda: 16 * GIB)
    for exp in list_experiments():
        resolve_config(exp, "paper")


def test_every_numeric_setting_of_every_experiment_declares_bounds():
    """A new experiment cannot forget a range check: every number has a lower and an upper bound."""
    exps = list_experiments()
    assert len(exps) >= 10
    for exp in exps:
        assert numeric_fields(exp.config_cls), exp.name
        assert unbounded_fields(exp.config_cls) == [], exp.name
        # and the defaults of every profile satisfy them
        check_options(build_config(exp.config_cls, (exp.profiles["quick"], "quick")))


def test_register_refuses_a_config_without_bounds():
    @dataclasses.dataclass(frozen=True)
    class Loose:
        n_students: int = option(10, "students", min=2, max=100)
        lr: float = option(0.1, "learning rate", gt=0)  # no upper bound

    exp = Experiment(name="loose-test", section="9", description="", config_cls=Loose, cells=lambda c: [{}],
                     run_cell=lambda c, cell, s: [])
    with pytest.raises(ValueError, match=r"'loose-test': numeric settings without declared bounds .*: lr$"):
        register(exp)


@pytest.mark.parametrize("bad", ["scipy.special", ("scipy.special", ""), ["scipy.special"]])
def test_register_refuses_plot_imports_that_are_not_a_tuple_of_module_names(bad):
    # a bare string would be imported letter by letter, mid-sweep
    @dataclasses.dataclass(frozen=True)
    class Tight:
        n_students: int = option(10, "students", min=2, max=100)

    exp = Experiment(name="imports-test", section="9", description="", config_cls=Tight, cells=lambda c: [{}],
                     run_cell=lambda c, cell, s: [], plot_imports=bad)
    with pytest.raises(ValueError, match=r"'imports-test': plot_imports: expected a tuple of module names, got "):
        register(exp)


def test_configs_built_in_python_are_checked_too():
    from uqkd.experiments.linear import VarianceAwareLinearConfig
    from uqkd.experiments.mlp import VarianceAwareMLPConfig

    with pytest.raises(ConfigError, match=r"^alphas: expected finite values > 0, got inf$"):
        VarianceAwareLinearConfig(alphas=(0.1, float("inf")))
    with pytest.raises(ConfigError, match=r"^teacher_hidden: expected integers >= 1, got 0$"):
        VarianceAwareMLPConfig(teacher_hidden=(0,))
    with pytest.raises(ConfigError, match=r"^n_students: expected an integer, got 2.5$"):
        VarianceAwareMLPConfig(n_students=2.5)
    with pytest.raises(ConfigError, match=r"^teacher_sampling: expected one of exact, draws; got 'all'$"):
        VarianceAwareLinearConfig(teacher_sampling="all")
    with pytest.raises(ConfigError, match=r"^ks: expected at least one value$"):
        VarianceAwareLinearConfig(ks=())
