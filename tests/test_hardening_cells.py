"""Cell records are verified on load: anything but this cell's intact record is recomputed, with one warning."""

import json
import logging

import pytest

from uqkd.runner import run_experiment

EXP = "variance-aware-linear"
TINY = {"n_students": 4, "alphas": "0.1", "ks": "1,3"}


def _run(out, **kw):
    return run_experiment(EXP, out=out, overrides=dict(TINY), progress=False, make_figures=False, workers=1, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    res = _run(tmp_path_factory.mktemp("ref"))
    return res.results_csv.read_bytes(), sorted((res.out_dir / "cells").glob("*.json"))


def _tamper_number(p):
    rec = json.loads(p.read_text())
    rec["rows"][0]["mse_mean"] = 123.0
    p.write_text(json.dumps(rec))


def _other_cell(p):
    others = [q for q in p.parent.glob("*.json") if q != p]
    p.write_bytes(others[0].read_bytes())


def _empty_rows(p):
    rec = json.loads(p.read_text())
    rec["rows"] = []
    p.write_text(json.dumps(rec))


def _wrong_fingerprint(p):
    rec = json.loads(p.read_text())
    rec["config_fingerprint"] = "0" * 16
    p.write_text(json.dumps(rec))


DAMAGE = {
    "tampered number": _tamper_number,
    "another cell's record": _other_cell,
    "rows: []": _empty_rows,
    "wrong fingerprint": _wrong_fingerprint,
    "{}": lambda p: p.write_text("{}"),
    "null": lambda p: p.write_text("null"),
    "non-UTF-8": lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:40]),
    "0 bytes": lambda p: p.write_bytes(b""),
    "a list": lambda p: p.write_text("[1, 2]"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_cell_is_recomputed_and_results_are_identical(kind, reference, tmp_path, caplog):
    ref_csv, _ = reference
    first = _run(tmp_path)
    victim = sorted((first.out_dir / "cells").glob("*.json"))[1]
    DAMAGE[kind](victim)
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        res = _run(tmp_path)
    assert res.n_computed == 1
    assert res.results_csv.read_bytes() == ref_csv
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 cell record(s) failed verification" in warnings[0].getMessage()
    assert victim.name in warnings[0].getMessage()
    # the recomputed record is now verified: a third run computes nothing
    assert _run(tmp_path).n_computed == 0


def test_undamaged_rerun_reuses_everything_silently(tmp_path, caplog):
    _run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        assert _run(tmp_path).n_computed == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_stale_temporary_files_are_removed(tmp_path):
    res = _run(tmp_path)
    stale = res.out_dir / "cells" / ".abc.json.123.tmp"
    stale.write_text("half")
    _run(tmp_path)
    assert not list(res.out_dir.rglob("*.tmp"))


def test_inf_statistic_is_a_user_error_not_a_result(tmp_path):
    from uqkd.config import UserError

    with pytest.raises(UserError, match=r"sigma.*is inf|overflow|expected"):
        run_experiment("teacher-noise-linear", out=tmp_path, overrides={"n_students": 3, "sigmas": "1e300"},
                       progress=False, make_figures=False, workers=1)
    assert not (tmp_path / "teacher-noise-linear" / "results.csv").exists()
