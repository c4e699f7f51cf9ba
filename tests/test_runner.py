import json

import pandas as pd
import pytest

from uqkd.config import ConfigError, UserError
from uqkd.runner import SweepInterrupted, run_experiment

SMALL = {"n_students": 20, "alphas": "0.1,1.0", "ks": "1,3,10"}


def _run(out, **kw):
    return run_experiment("variance-aware-linear", out=out, overrides=dict(SMALL), progress=False,
                          make_figures=False, **kw)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    ref = _run(tmp_path / "a")
    with pytest.raises(SweepInterrupted):
        _run(tmp_path / "b", stop_after=5)
    assert not (tmp_path / "b" / "variance-aware-linear" / "results.csv").exists()
    assert len(list((tmp_path / "b" / "variance-aware-linear" / "cells").glob("*.json"))) == 5
    res = _run(tmp_path / "b")
    assert res.n_computed == ref.n_cells - 5
    assert res.results_csv.read_bytes() == ref.results_csv.read_bytes()
    again = _run(tmp_path / "b")
    assert again.n_computed == 0
    assert not list((tmp_path / "b").rglob("*.tmp"))


def test_worker_count_does_not_change_results(tmp_path):
    one = _run(tmp_path / "one", workers=1)
    two = _run(tmp_path / "two", workers=2)
    assert one.results_csv.read_bytes() == two.results_csv.read_bytes()


def test_seed_changes_results_and_is_recorded(tmp_path):
    a = _run(tmp_path / "s0", seed=0)
    b = _run(tmp_path / "s1", seed=1)
    assert a.results_csv.read_bytes() != b.results_csv.read_bytes()
    meta = json.loads((tmp_path / "s1" / "variance-aware-linear" / "config.json").read_text())
    assert meta["seed"] == 1 and meta["config"]["n_students"] == 20 and "numpy" in meta["versions"]


def test_results_table_is_tidy(tmp_path):
    res = _run(tmp_path / "t")
    df = pd.read_csv(res.results_csv)
    for col in ("noise", "alpha", "k", "method", "oracle", "mse_mean", "mse_std", "inter_student_var", "n_students"):
        assert col in df.columns
    # homoscedastic + heteroscedastic at 4 strengths, x 2 alphas x 3 ks x 5 methods
    assert len(df) == (1 + 4) * 2 * 3 * 5
    assert not df.duplicated(["noise", "hetero_strength", "alpha", "k", "method"]).any()
    assert (df["n_students"] == 20).all()


def test_config_errors(tmp_path):
    with pytest.raises(UserError, match="unknown experiment 'nope'; valid experiments: .*variance-aware-linear"):
        run_experiment("nope", out=tmp_path)
    with pytest.raises(ConfigError, match="unknown config key 'alpha' in --set; valid keys: dataset, alphas"):
        run_experiment("variance-aware-linear", out=tmp_path, overrides=["alpha=1"])
    with pytest.raises(ConfigError, match="n_students: expected an integer, got 'many'"):
        run_experiment("variance-aware-linear", out=tmp_path, overrides=["n_students=many"])
    with pytest.raises(ConfigError, match="ks: expected integers >= 1, got 0"):
        run_experiment("variance-aware-linear", out=tmp_path, overrides=["ks=0,1"])
    with pytest.raises(ConfigError, match="methods: expected one of .*; got 'magic'"):
        run_experiment("variance-aware-linear", out=tmp_path, overrides=["methods=magic"])


def test_config_file_and_overrides_precedence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('n_students = 30\nks = [1, 2]\nalphas = [0.5]\nnoise_models = ["homoscedastic"]\n')
    res = run_experiment("variance-aware-linear", out=tmp_path, config_file=cfg, overrides=["ks=4"],
                         progress=False, make_figures=False)
    df = pd.read_csv(res.results_csv)
    assert set(df["k"]) == {4} and set(df["n_students"]) == {30}
    bad = tmp_path / "bad.toml"
    bad.write_text("bogus = 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'bogus' in --config"):
        run_experiment("variance-aware-linear", out=tmp_path, config_file=bad)


def _square(x):
    return x * x


def test_auto_executor_stays_in_process_on_a_short_sweep_and_splits_a_long_one():
    from uqkd.executors import AutoExecutor

    tasks = [(i,) for i in range(12)]
    short = AutoExecutor(max_workers=1, min_parallel_s=60.0)
    try:
        got = dict(short.map_unordered(_square, tasks))
    finally:
        short.close()
    assert not short.spawned and got == {i: i * i for i in range(12)}
    long_ = AutoExecutor(max_workers=1, min_parallel_s=0.0)  # any remaining cost pays: spawn after cell 1
    try:
        pairs = list(long_.map_unordered(_square, tasks))
    finally:
        long_.close()
    assert long_.spawned
    assert sorted(i for i, _ in pairs) == list(range(12)) and dict(pairs) == {i: i * i for i in range(12)}


@pytest.mark.parametrize("startup_s", [1.0, 0.0])  # 0: the pool starts after the first cell
def test_workers_auto_gives_the_in_process_results(tmp_path, monkeypatch, startup_s):
    import uqkd.executors

    monkeypatch.setattr(uqkd.executors, "WORKER_STARTUP_S", startup_s)
    one = _run(tmp_path / "one", workers=1)
    auto = _run(tmp_path / "auto", workers="auto")
    assert one.results_csv.read_bytes() == auto.results_csv.read_bytes()


def test_rerun_with_the_same_seed_is_byte_identical_and_timings_go_apart(tmp_path):
    a = _run(tmp_path / "a")
    b = _run(tmp_path / "b")
    for f in ("results.csv", "config.json"):
        assert (a.out_dir / f).read_bytes() == (b.out_dir / f).read_bytes(), f
    assert "seconds" not in (a.out_dir / "config.json").read_text()
    t = json.loads((a.out_dir / "timings.json").read_text())
    assert t["experiment"] == "variance-aware-linear"
    assert len(t["cell_seconds"]) == a.n_cells and t["cells_computed_this_run"] == a.n_cells
    assert t["cell_seconds_total"] == pytest.approx(sum(t["cell_seconds"].values()))
    resumed = _run(tmp_path / "a")  # a resumed run keeps the cells' recorded seconds
    assert json.loads((resumed.out_dir / "timings.json").read_text())["cell_seconds"] == t["cell_seconds"]


_PUBLISH_PROBE = """
import sys
from uqkd import runner
seen = []
publish = runner._publish
def probe(*a, **k):
    seen.append("scipy.special" in sys.modules)
    return publish(*a, **k)
runner._publish = probe
runner.run_experiment("variance-aware-linear", out=sys.argv[1], workers=int(sys.argv[2]), progress=False,
                      overrides={"n_students": 20, "alphas": "0.1,1.0", "ks": "1,3,10,20,30,40,50"})
print("preimported" if seen[0] else "not-preimported")
"""


@pytest.mark.parametrize("workers, expected", [(1, "not-preimported"), (2, "preimported")])
def test_plot_imports_load_mid_sweep_only_while_workers_run(tmp_path, workers, expected):
    # variance-aware-linear declares plot_imports=("scipy.special",) for the fit it draws: with a pool the
    # runner imports it while the workers compute; in-process it leaves it to the plot (after the sweep)
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _PUBLISH_PROBE, str(tmp_path), str(workers)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-1] == expected
    assert (tmp_path / "variance-aware-linear" / "variance_aware_linear_homoscedastic.png").is_file()


def test_command_line_entry_freezes_the_heap_on_exit_but_a_call_with_argv_does_not(monkeypatch, capsys):
    import gc

    from uqkd.cli import main

    gc.unfreeze()
    try:
        assert main(["list"]) == 0
        assert gc.get_freeze_count() == 0  # an in-process caller (a test, a notebook) keeps its collector
        monkeypatch.setattr("sys.argv", ["uqkd", "list"])
        assert main() == 0
        assert gc.get_freeze_count() > 0  # the command's last act: shutdown skips tracing the heap
        monkeypatch.setattr("sys.argv", ["uqkd", "run", "no-such-experiment"])
        assert main() == 2  # on the way out of an error too
    finally:
        gc.unfreeze()
    assert "no-such-experiment" in capsys.readouterr().err
