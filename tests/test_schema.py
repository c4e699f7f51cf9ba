"""Named result tables (uqkd.schema): one file per table, the report reading old (one results.csv) and new folders."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from uqkd.config import option
from uqkd.experiments import base
from uqkd.experiments.base import Experiment
from uqkd.report.report import load_tables_checked
from uqkd.runner import run_experiment
from uqkd.schema import SUMMARY, join_tables, split_rows, summary_rows, table, table_file, table_names


def _rows():
    rows = []
    for m in ("single", "averaging"):
        rows.append({"record": "summary", "method": m, "n_students": 3, "inter_var": 0.5 if m == "single" else 0.2})
        rows += [{"record": "question", "method": m, "student": s, "question": q, "mse": float(s + q)}
                 for s in range(3) for q in range(2)]
        rows += [{"record": "question-inter", "method": m, "question": q, "inter_var": 0.1 * q} for q in range(2)]
    return rows


def test_split_and_join_give_back_the_tables():
    tables = split_rows(_rows())
    assert list(tables) == [SUMMARY, "question", "question-inter"]
    assert all("record" not in r for t in tables.values() for r in t)
    assert [len(t) for t in tables.values()] == [2, 12, 4]
    df = join_tables({n: pd.DataFrame(r) for n, r in tables.items()})
    assert table_names(df) == [SUMMARY, "question", "question-inter"]
    assert list(summary_rows(df)["method"]) == ["single", "averaging"]
    assert len(table(df, "question")) == 12 and len(table(df, "trajectory")) == 0
    # a frame without a record column is all summary rows
    plain = pd.DataFrame({"n_students": [2, 2]})
    assert summary_rows(plain) is plain and len(table(plain, "question")) == 0
    assert join_tables({SUMMARY: plain}) is plain


@pytest.mark.parametrize("bad", ["Question", "../x", "a b", ""])
def test_a_table_name_that_cannot_be_a_file_is_refused(bad):
    with pytest.raises(ValueError, match="record"):
        table_file(bad)
    with pytest.raises(ValueError, match="record"):
        split_rows([{"record": bad, "n_students": 2}])


def test_runner_writes_one_file_per_table_and_the_report_reads_it(tmp_path):
    res = run_experiment("init-noise-mlp", profile="quick", out=tmp_path, progress=False, make_figures=False,
                         overrides={"sigma_inits": (0.0, 0.1), "n_epochs": 3, "n_students": 3,
                                                                                  "n_track_students": 3})
    d = res.out_dir
    assert set(res.tables) == {"summary", "trajectory"}
    assert (d / "results.csv").is_file() and (d / "trajectory.csv").is_file()
    summ, traj = pd.read_csv(d / "results.csv"), pd.read_csv(d / "trajectory.csv")
    assert "record" not in summ.columns and "record" not in traj.columns
    assert len(summ) == 2 and len(traj) > 0
    meta = json.loads((d / "config.json").read_text())
    assert meta["tables"]["trajectory"]["file"] == "trajectory.csv" and meta["tables"]["trajectory"]["rows"] == len(traj)
    tables, _, damaged = load_tables_checked(tmp_path)
    assert damaged == {}
    pd.testing.assert_frame_equal(tables["init-noise-mlp"], res.read())
    assert len(summary_rows(tables["init-noise-mlp"])) == 2
    # a table edited after publishing is damage, named by its file
    (d / "trajectory.csv").write_text((d / "trajectory.csv").read_text().replace("0.", "1.", 1))
    _, _, damaged = load_tables_checked(tmp_path)
    assert "sha256 of its table" in damaged["init-noise-mlp"]


def test_an_old_folder_and_its_new_layout_read_the_same(tmp_path):
    """A results.csv holding every table (before one file per table) and the same rows split into files give the
    report the same frame."""
    old = tmp_path / "old" / "llm-variance-aware"
    old.mkdir(parents=True)
    full = pd.DataFrame(_rows())
    text = full.to_csv(index=False)
    import hashlib

    old.joinpath("results.csv").write_text(text)
    old.joinpath("config.json").write_text(json.dumps({"experiment": "llm-variance-aware",
                                                       "results_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    new = tmp_path / "new" / "llm-variance-aware"
    new.mkdir(parents=True)
    specs = {}
    for n, rows in split_rows(full.to_dict("records")).items():
        # NaN fields of other tables dropped, as the runner writes each table from its own rows
        t = pd.DataFrame(rows).dropna(axis=1, how="all").to_csv(index=False)
        new.joinpath(table_file(n)).write_text(t)
        specs[n] = {"file": table_file(n), "rows": len(rows), "sha256": hashlib.sha256(t.encode()).hexdigest()}
    new.joinpath("config.json").write_text(json.dumps({"experiment": "llm-variance-aware", "tables": specs,
                                                       "results_sha256": specs["summary"]["sha256"]}))
    a, _, da = load_tables_checked(tmp_path / "old")
    b, _, db = load_tables_checked(tmp_path / "new")
    assert da == db == {}
    x, y = a["llm-variance-aware"], b["llm-variance-aware"]
    assert table_names(x) == table_names(y) == [SUMMARY, "question", "question-inter"]
    for n in table_names(x):  # each table's rows in order (the old file interleaved the tables cell by cell)
        tx, ty = table(x, n).reset_index(drop=True), table(y, n).reset_index(drop=True)
        pd.testing.assert_frame_equal(tx, ty[tx.columns], check_dtype=False)
    assert np.isclose(summary_rows(y)["inter_var"].sum(), 0.7)
    shutil.rmtree(tmp_path / "old")


@dataclasses.dataclass(frozen=True)
class _TablesConfig:
    n_students: int = option(3, "students", min=2, max=10)
    with_questions: bool = option(True, "write a question table")


def _tables_cell(cfg, cell, seed):
    rows = [{"x": cell["x"], "n_students": cfg.n_students, "v": float(cell["x"] + seed)}]
    if cfg.with_questions:
        rows += [{"record": "question", "x": cell["x"], "question": q, "mse": float(q)} for q in range(2)]
    return rows


def test_a_table_the_rerun_no_longer_has_is_removed(tmp_path, monkeypatch):
    exp = Experiment(name="tables-test", section="9", description="", config_cls=_TablesConfig,
                     cells=lambda c: [{"x": 1}, {"x": 2}], run_cell=_tables_cell)
    monkeypatch.setitem(base.EXPERIMENTS, "tables-test", exp)  # gone from the registry after the test
    first = run_experiment("tables-test", out=tmp_path, progress=False)
    assert set(first.tables) == {"summary", "question"} and (first.out_dir / "question.csv").is_file()
    assert len(pd.read_csv(first.out_dir / "question.csv")) == 4
    again = run_experiment("tables-test", out=tmp_path, progress=False, overrides={"with_questions": False})
    assert set(again.tables) == {"summary"}
    assert not (again.out_dir / "question.csv").exists()  # the earlier unit's table is gone with it
    tables, _, damaged = load_tables_checked(tmp_path)
    assert damaged == {} and "record" not in tables["tables-test"].columns and len(tables["tables-test"]) == 2
