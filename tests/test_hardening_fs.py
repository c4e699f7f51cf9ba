"""File-system errors (issue 12): a file in the way, a full disk while writing a cell or publishing, a figure that
cannot be written: one line and exit 1, the earlier published results intact, nothing half-written left,
and the rerun ends byte-identical to an undisturbed run."""

import errno
import os
import re

import pytest

from uqkd import runner
from uqkd.cli import main
from uqkd.config import EnvironmentFailure
from uqkd.runner import run_experiment

EXP = "variance-aware-linear"
TINY = {"n_students": 4, "alphas": "0.1", "ks": "1,3"}
SET = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def _run(out, **kw):
    return run_experiment(EXP, out=out, overrides=dict(TINY), progress=False, make_figures=False, workers=1, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ref")).results_csv.read_bytes()


def _leftovers(out):
    return [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".publish-")]


def _full_disk_on(monkeypatch, predicate):
    real = runner.atomic_write_text

    def write(path, text, **kw):
        if predicate(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text, **kw)

    monkeypatch.setattr(runner, "atomic_write_text", write)


@pytest.mark.parametrize("blocked", [EXP, f"{EXP}/cells"])
def test_a_file_in_the_way_of_the_output_folder(tmp_path, capsys, blocked):
    if "/" in blocked:
        (tmp_path / EXP).mkdir()
    (tmp_path / blocked).write_text("not a folder")
    message = f"--out: cannot create {str(tmp_path / EXP / 'cells')!r}: {str(tmp_path / blocked)!r} is a file in the way"
    with pytest.raises(EnvironmentFailure, match="^" + re.escape(message) + "$"):
        _run(tmp_path)
    rc = main(["run", EXP, "--out", str(tmp_path), "--quiet", "--workers", "1", *SET])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1
    assert err == [f"uqkd: error: {message}"]


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "results"
    f.write_text("x")
    rc = main(["run", EXP, "--out", str(f), "--quiet", "--workers", "1", *SET])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1
    assert err == [f"uqkd: error: --out: cannot create {str(f / EXP / 'cells')!r}: {str(f)!r} is a file in the way"]


def test_full_disk_while_writing_a_cell_then_resume(tmp_path, monkeypatch, capsys, reference):
    n = {"cells": 0}

    def third_cell(path):
        if path.parent.name == "cells":
            n["cells"] += 1
            return n["cells"] == 3
        return False

    _full_disk_on(monkeypatch, third_cell)
    rc = main(["run", EXP, "--out", str(tmp_path), "--quiet", "--workers", "1", *SET])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("uqkd: error: No space left on device: ")
    assert err[0].endswith("(the disk is full; free space and rerun (finished cells are kept))")
    assert len(list((tmp_path / EXP / "cells").glob("*.json"))) == 2
    assert not (tmp_path / EXP / "results.csv").exists() and not _leftovers(tmp_path)
    monkeypatch.undo()
    res = _run(tmp_path)
    assert res.n_computed == res.n_cells - 2
    assert res.results_csv.read_bytes() == reference


@pytest.mark.parametrize("victim", ["results.csv", "config.json"])
def test_full_disk_while_publishing_keeps_the_earlier_results(tmp_path, monkeypatch, reference, victim):
    first = _run(tmp_path)
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir() if p.is_file()}
    _full_disk_on(monkeypatch, lambda p: p.name == victim and p.parent.name.startswith(".publish-"))
    with pytest.raises(OSError, match="No space left on device"):
        run_experiment(EXP, out=tmp_path, overrides={**TINY, "n_students": 5}, progress=False, make_figures=False,
                       workers=1)
    after = {p.name: p.read_bytes() for p in first.out_dir.iterdir() if p.is_file()}
    assert after == before  # the published unit is untouched: results.csv and its config.json still match
    assert not _leftovers(tmp_path)
    monkeypatch.undo()
    from uqkd.report.report import load_tables_checked

    assert load_tables_checked(tmp_path)[2] == {}
    assert _run(tmp_path).results_csv.read_bytes() == reference


def test_a_figure_that_cannot_be_written_keeps_the_earlier_results(tmp_path, monkeypatch):
    first = _run(tmp_path)
    before = first.results_csv.read_bytes()
    from uqkd.experiments import get_experiment

    exp = get_experiment(EXP)

    def bad_plot(df, cfg, d):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(d / "fig.png"))

    import dataclasses

    monkeypatch.setitem(runner.__dict__, "get_experiment", lambda name: dataclasses.replace(exp, plot=bad_plot))
    with pytest.raises(OSError, match="No space left on device"):
        run_experiment(EXP, out=tmp_path, overrides={**TINY, "n_students": 5}, progress=False, workers=1)
    assert first.results_csv.read_bytes() == before and not _leftovers(tmp_path)
