"""Report loading (issue 12): a damaged experiment is skipped with one warning naming the file and the damage,
the rest of the report is built, and the claims that read it say ``damaged: <why>``; a NaN a claim needs gives
``could not be computed``, never a verdict."""

import json
import logging
import re
import shutil

import numpy as np
import pytest

from uqkd.cli import main
from uqkd.report.claims import DAMAGED, NOT_COMPUTABLE, NOT_RUN, evaluate_claims
from uqkd.report.report import build_report_and_claims, claims_summary, load_tables_checked
from uqkd.runner import run_experiment

EXP = "variance-aware-linear"
OTHER = "teacher-noise-linear"
SETTINGS = {EXP: {"n_students": 20, "alphas": "0.1,1", "ks": "1,3"}, OTHER: {"n_students": 20}}


def _run(out, name):
    return run_experiment(name, out=out, overrides=dict(SETTINGS[name]), progress=False, make_figures=False, workers=1)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("pristine")
    for name in SETTINGS:
        _run(out, name)
    _, _, claims = build_report_and_claims(out)
    return out, {c.claim_id: c for c in claims}


@pytest.fixture
def results(pristine, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(pristine[0], out)
    return out


def _csv(out):
    return out / EXP / "results.csv"


def _cfg(out):
    return out / EXP / "config.json"


def _set_cfg(out, **changes):
    meta = json.loads(_cfg(out).read_text())
    meta.update(changes)
    _cfg(out).write_text(json.dumps(meta))


def _lines(p):
    return p.read_bytes().splitlines(keepends=True)


def _nan_value(out):
    """Write NaN into a statistic of row 2 (what a bad edit or a damaged copy leaves)."""
    lines = _lines(_csv(out))
    cols = lines[2].split(b",")
    cols[2] = b"nan"
    lines[2] = b",".join(cols)
    _csv(out).write_bytes(b"".join(lines))


def _latin1(out):
    raw = _csv(out).read_bytes()
    i = raw.index(b"single")
    _csv(out).write_bytes(raw[:i] + b"\xe9" + raw[i + 1:])
    return i


HEADER_LEN = len(b"alpha,hetero_strength,inter_student_var,inter_student_var_se,k,method,mse_mean,mse_sem,mse_std,"
                 b"n_students,noise,noise_var_max_min,optimal_wls_inter_student_var,oracle,theory_inter_student_var,"
                 b"theory_mse\n")
CHECKSUM = ("does not match the results_sha256 in config.json (edited, cut short or from another run); "
            "rerun the experiment to rebuild it from its cell records")

# kind -> (damage(out) -> optional value for the message, damaged file, expected reason (a format string))
DAMAGE = {
    "0-byte results.csv": (lambda o: _csv(o).write_bytes(b""), "results.csv", "empty (0 bytes)"),
    "binary results.csv": (lambda o: _csv(o).write_bytes(b"PK\x03\x04\x00\x00garbage\n"), "results.csv",
                           "binary data (a NUL byte at byte 4)"),
    "non-UTF-8 results.csv": (_latin1, "results.csv", "not UTF-8 text (byte {})"),
    "cut inside the header": (lambda o: _csv(o).write_bytes(_csv(o).read_bytes()[:30]), "results.csv",
                              "line 1 is cut short (no final newline: truncated)"),
    "header only": (lambda o: _csv(o).write_bytes(_lines(_csv(o))[0]), "results.csv",
                    "no data rows (only a header)"),
    "truncated row": (lambda o: _csv(o).write_bytes(_csv(o).read_bytes()[:HEADER_LEN + 250]), "results.csv",
                      "line {} is cut short (no final newline: truncated)"),
    "truncated at a row end": (lambda o: _csv(o).write_bytes(b"".join(_lines(_csv(o))[:-3])), "results.csv",
                               CHECKSUM),
    "ragged row": (lambda o: _csv(o).write_bytes(b"".join(
        ln.rstrip(b"\n") + b",7\n" if i == 3 else ln for i, ln in enumerate(_lines(_csv(o))))), "results.csv",
                   "line 4 has 20 fields, the header 19 (ragged)"),
    "repeated column name": (lambda o: _csv(o).write_bytes(_csv(o).read_bytes().replace(b"mse_sem", b"mse_std", 1)),
                             "results.csv", "line 1 (the header) has an empty or repeated column name"),
    "no n_students column": (lambda o: _csv(o).write_bytes(_csv(o).read_bytes().replace(b"n_students", b"n", 1)),
                             "results.csv", "no n_students column (a cut header, or not a uqkd results table)"),
    "NaN written into a value": (_nan_value, "results.csv", CHECKSUM),
    "results.csv deleted": (lambda o: _csv(o).unlink(), "results.csv",
                            "missing (config.json is there: the results were deleted or moved)"),
    "results.csv is a folder": (lambda o: (_csv(o).unlink(), _csv(o).mkdir()), "results.csv",
                                "unreadable (Is a directory)"),
    "config.json deleted": (lambda o: _cfg(o).unlink(), "config.json",
                            "missing (results.csv is there without the record of its settings and checksum: rerun "
                            "the experiment to rebuild both from its cell records)"),
    "0-byte config.json": (lambda o: _cfg(o).write_bytes(b""), "config.json",
                           "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    "non-UTF-8 config.json": (lambda o: _cfg(o).write_bytes(b'{"experiment": "caf\xe9"}'), "config.json",
                              "not UTF-8 text (byte 19)"),
    "truncated config.json": (lambda o: _cfg(o).write_bytes(_cfg(o).read_bytes()[:50]), "config.json",
                              "not valid JSON ({})"),
    "config.json is null": (lambda o: _cfg(o).write_text("null"), "config.json",
                            "expected a JSON object, got NoneType"),
    "config.json is a list": (lambda o: _cfg(o).write_text("[1, 2]"), "config.json", "expected a JSON object, got list"),
    "another experiment's config.json": (lambda o: shutil.copy(o / OTHER / "config.json", _cfg(o)), "config.json",
                                         f"records experiment {OTHER!r}, not {EXP!r}"),
    "config is not a table": (lambda o: _set_cfg(o, config=[1, 2]), "config.json", "config is list, expected dict"),
    "checksum is not a string": (lambda o: _set_cfg(o, results_sha256=5), "config.json",
                                 "results_sha256 is int, expected str"),
}


def _expected_reason(kind, out, token):
    why = DAMAGE[kind][2]
    if "{}" not in why:
        return why
    if kind == "non-UTF-8 results.csv":
        return why.format(token)
    if kind == "truncated row":
        return why.format(_csv(out).read_bytes().count(b"\n") + 1)
    try:
        json.loads(_cfg(out).read_text())
    except ValueError as exc:
        return why.format(exc)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_experiment_is_skipped_with_one_warning(kind, pristine, results, caplog):
    ref_tables, _, ref_skipped = load_tables_checked(pristine[0])
    assert ref_skipped == {}
    damage, fname, _ = DAMAGE[kind]
    token = damage(results)
    why = _expected_reason(kind, results, token)
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        tables, metas, skipped = load_tables_checked(results)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"report: skipping {results / EXP / fname}: {why}"]
    assert skipped == {EXP: why}
    assert EXP not in tables and EXP not in metas
    # the rest is loaded as if nothing had happened
    assert list(tables) == [OTHER]
    assert tables[OTHER].equals(ref_tables[OTHER])


@pytest.mark.parametrize("kind", ["truncated row", "non-UTF-8 config.json"])
def test_report_is_built_around_a_damaged_experiment(kind, pristine, results, caplog):
    out, ref = pristine
    DAMAGE[kind][0](results)
    why = load_tables_checked(results)[2][EXP]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        md, html, claims = build_report_and_claims(results, expected=[OTHER, EXP, "bootstrap-linear"])
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    text = md.read_text()
    assert f"**Damaged results, skipped (rerun the experiment to rebuild them): {EXP} ({why})**" in text
    assert "Not run: bootstrap-linear\n" in text  # the damaged experiment is not listed as not run
    assert f"### `{OTHER}`" in text and f"### `{EXP}`" not in text
    assert "<html" in html.read_text()
    for c in claims:
        if EXP in c.experiments:
            assert c.verdict == DAMAGED
            assert c.value == f"damaged: {EXP}: {why}"
            assert c.verdict in text and c.value.replace("|", "\\|") in text
        else:  # every other claim is exactly what the undisturbed report says
            assert (c.verdict, c.statistic, c.value, c.interval) == (
                ref[c.claim_id].verdict, ref[c.claim_id].statistic, ref[c.claim_id].value, ref[c.claim_id].interval)
    assert sum(c.verdict == DAMAGED for c in claims) >= 4
    for beyond, title in ((False, "Claims of the paper"), (True, "Beyond the paper")):
        part = [c for c in claims if c.beyond == beyond and not c.code_check]
        n = sum(c.verdict == DAMAGED for c in part)
        assert f"{title}: {claims_summary(part)}" in text
        assert (f"; {n} on damaged results" in claims_summary(part)) == (n > 0)


def test_report_cli_prints_one_warning_line_and_exits_0(results):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import uqkd

    DAMAGE["ragged row"][0](results)
    env = {**os.environ, "PYTHONPATH": str(Path(uqkd.__file__).parents[1])}
    p = subprocess.run([sys.executable, "-m", "uqkd", "report", str(results)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert err == [f"uqkd: WARNING: report: skipping {_csv(results)}: line 4 has 20 fields, the header 19 (ragged)"]
    assert (results / "report.md").is_file() and (results / "report.html").is_file()


def test_everything_damaged_still_gives_a_report(results, caplog):
    for name in SETTINGS:
        (results / name / "results.csv").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        assert main(["report", str(results)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"report: skipping {results / n / 'results.csv'}: empty (0 bytes)" for n in sorted(SETTINGS)]
    text = (results / "report.md").read_text()
    assert "Damaged results, skipped" in text and "0 hold, 0 contradicted, 0 inconclusive, 0 errors" in text


def test_rerunning_the_experiment_repairs_it_byte_identically(results, caplog):
    ref = _csv(results).read_bytes()
    DAMAGE["truncated at a row end"][0](results)
    assert EXP in load_tables_checked(results)[2]
    res = _run(results, EXP)
    assert res.n_computed == 0  # every cell record is intact: only the tables are published again
    assert _csv(results).read_bytes() == ref
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        assert load_tables_checked(results)[2] == {}
    assert not caplog.records


def test_config_json_records_the_checksum_of_results_csv(results):
    import hashlib

    meta = json.loads(_cfg(results).read_text())
    assert meta["results_sha256"] == hashlib.sha256(_csv(results).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------- NaN in a used column


def test_legacy_table_without_checksum_loads_and_nan_gives_not_computable(pristine, results):
    meta = json.loads(_cfg(results).read_text())
    del meta["results_sha256"]  # a table published before checksums: structural checks only
    _cfg(results).write_text(json.dumps(meta))
    lines = _lines(_csv(results))
    header = lines[0].decode().rstrip("\n").split(",")
    row = lines[3].decode().rstrip("\n").split(",")
    row[header.index("k")] = "nan"
    lines[3] = (",".join(row) + "\n").encode()
    _csv(results).write_bytes(b"".join(lines))
    tables, _, skipped = load_tables_checked(results)
    assert skipped == {} and np.isnan(tables[EXP]["k"][2])
    for c in evaluate_claims(tables):
        if EXP in c.experiments:
            assert c.verdict == NOT_COMPUTABLE
            assert c.value == f"could not be computed: NaN in a row-identifying column: {EXP} column k (row 2)"


@pytest.mark.parametrize("column", ["k", "alpha", "method", "n_students", "hetero_strength"])
def test_nan_in_a_key_column_is_not_computable(pristine, column):
    tables, _, _ = load_tables_checked(pristine[0])
    df = tables[EXP].copy()
    df[column] = df[column].astype(object if column == "method" else float)
    df.loc[5, column] = np.nan
    for c in evaluate_claims({**tables, EXP: df}):
        if EXP in c.experiments:
            assert (c.verdict, c.value) == (
                NOT_COMPUTABLE, f"could not be computed: NaN in a row-identifying column: {EXP} column {column} (row 5)")


@pytest.mark.parametrize("columns, used", [
    (["inter_student_var"], True),
    (["mse_mean"], True),
    (["mse_std", "mse_sem"], True),
    (["mse_std"], False),  # the claims fall back to mse_sem * sqrt(n): same numbers
])
def test_nan_in_a_statistic_is_not_computable_or_unused(pristine, columns, used):
    """Every claim the NaN changes reports ``not computable`` with a reason; none turns into another verdict."""
    tables, _, _ = load_tables_checked(pristine[0])
    ref = {c.claim_id: c for c in evaluate_claims(tables)}
    df = tables[EXP].copy()
    rows = [0, int(np.flatnonzero(df["method"] == "averaging")[-1])]
    df.loc[rows, columns] = np.nan
    changed = [c for c in evaluate_claims({**tables, EXP: df})
               if (c.verdict, c.value, c.interval) != (ref[c.claim_id].verdict, ref[c.claim_id].value,
                                                       ref[c.claim_id].interval)]
    assert bool(changed) == used, [c.claim_id for c in changed]
    for c in changed:
        assert c.verdict == NOT_COMPUTABLE, (c.claim_id, c.verdict, c.value)
        assert re.match(r"could not be computed: \S", c.value)


def test_claim_raising_on_a_nan_is_not_computable_not_error(pristine):
    from uqkd.report.claims import ClaimSpec, _evaluate_one

    tables, _, _ = load_tables_checked(pristine[0])
    df = tables[OTHER].copy()
    df.loc[1, "param_cov_lr_df"] = np.nan  # row 0 (sigma 0) is NaN by design; row 1 is not
    spec = ClaimSpec("T", "4", "t", (OTHER,), lambda t: ("s", int(t[OTHER]["param_cov_lr_df"].iloc[1]), "", "holds"))
    r = _evaluate_one(spec, {OTHER: df})
    assert r.verdict == NOT_COMPUTABLE
    assert r.value == (f"could not be computed: NaN in {OTHER} column param_cov_lr_df (row 0, 1); "
                       f"{OTHER} column param_cov_lr_p (row 0); {OTHER} column param_cov_lr_stat (row 0) "
                       "(ValueError: cannot convert float NaN to integer)")
    bug = ClaimSpec("U", "4", "t", (OTHER,), lambda t: 1 / 0)
    assert _evaluate_one(bug, {OTHER: df}).verdict == "error"


def test_missing_experiment_is_still_not_run(pristine):
    tables, _, _ = load_tables_checked(pristine[0])
    del tables[EXP]
    verdicts = {c.claim_id: c.verdict for c in evaluate_claims(tables)}
    ids = [c.claim_id for c in evaluate_claims({}) if EXP in c.experiments]
    assert ids and all(verdicts[i] == NOT_RUN for i in ids)


def test_legacy_table_missing_a_column_still_gives_a_report(results, caplog):
    """A table without a column a claim reads (another uqkd version) is that claim's ``error`` (the
    designed verdict, tests/test_claims_verdicts.py); the report is still built around it."""
    import pandas as pd

    meta = json.loads(_cfg(results).read_text())
    del meta["results_sha256"]
    _cfg(results).write_text(json.dumps(meta))
    df = pd.read_csv(_csv(results)).drop(columns=["mse_mean"])
    _csv(results).write_text(df.to_csv(index=False))
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        md, _, claims = build_report_and_claims(results)
    missing = [c for c in claims if EXP in c.experiments and "mse_mean" in c.statistic]
    assert missing and all(c.verdict == "error" and c.statistic == "claim raised KeyError: 'mse_mean'"
                           for c in missing)
    text = md.read_text()
    assert f"### `{EXP}`" in text and f"### `{OTHER}`" in text
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(m.startswith(f"report: {_csv(results)}: Key numbers could not be built") for m in warned)
