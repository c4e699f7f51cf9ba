import pytest

from uqkd.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("teacher-noise-linear", "bootstrap-linear", "variance-aware-linear"):
        assert name in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "nope"], "unknown experiment 'nope'; valid experiments:"),
        (["run", "variance-aware-linear", "--set", "bogus=1"], "unknown config key 'bogus'"),
        (["run", "variance-aware-linear", "--set", "n_students=1"], "n_students: expected an integer >= 2, got 1"),
        (["run", "variance-aware-linear", "--set", "alphas=x"], "alphas: expected a number, got 'x'"),
        (["run", "variance-aware-linear", "--set", "novalue"], "--set: expected KEY=VALUE"),
        (["run", "variance-aware-linear", "--profile", "huge"], "invalid choice: 'huge'"),
        (["run", "variance-aware-linear", "--workers", "0"], "expected a positive integer or 'auto'"),
        (["run", "variance-aware-linear", "--config", "/nonexistent.toml"], "file not found"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_run_writes_results_and_figures(tmp_path, capsys):
    argv = ["run", "teacher-noise-linear", "--out", str(tmp_path), "--set", "n_students=10", "--set",
            "sigmas=0,0.5,1", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    d = tmp_path / "teacher-noise-linear"
    assert (d / "results.csv").is_file() and (d / "config.json").is_file()
    png = d / "teacher_noise_linear.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3 computed" in out
    assert main(argv) == 0
    assert "0 computed, 3 reused" in capsys.readouterr().out


def test_methods_lists_the_registry_per_domain(capsys):
    from uqkd.methods import METHODS, method_names

    for domain in (None, "tabular", "llm"):
        assert main(["methods", *(["--domain", domain] if domain else [])]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [ln.split()[0] for ln in lines] == list(method_names(domain))
        for ln in lines:
            m = METHODS[ln.split()[0]]
            assert ("] oracle" in ln) == m.oracle and ("beyond the paper" in ln) == m.beyond_paper
            assert all(f"alias {a}" in ln for a in m.aliases)
    assert main(["methods", "--domain", "gpu"]) == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_show_names_the_old_name_of_a_renamed_setting(capsys, monkeypatch):
    from uqkd.experiments import get_experiment

    cls = get_experiment("llm-teacher-noise").config_cls
    monkeypatch.setattr(cls, "_renamed", {"temps": "temperatures"}, raising=False)
    assert main(["show", "llm-teacher-noise"]) == 0
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if ln.strip().startswith("temperatures =")][0].endswith("(formerly temps)")
    with pytest.warns(FutureWarning, match="'temps' is deprecated; use 'temperatures'"):
        from uqkd.runner import resolve_config

        assert resolve_config(get_experiment("llm-teacher-noise"), "quick", ["temps=0.5"]).temperatures == (0.5,)
