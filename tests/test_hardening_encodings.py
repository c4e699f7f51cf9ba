"""Bytes that are not UTF-8 (issue 12, encodings): one line naming the file (and line), or a recompute with a warning.

Cell records that are not UTF-8, ``{}`` or ``null`` are covered case by case in test_hardening_cells.py;
results.csv / config.json of the report in test_hardening_report.py.
"""

import json
import logging
import re

import pytest

from uqkd.cli import main
from uqkd.config import ConfigError, UserError
from uqkd.data.qa import load_qa, read_utf8
from uqkd.runner import run_experiment

EXP = "variance-aware-linear"
TINY = {"n_students": 4, "alphas": "0.1", "ks": "1,3"}
LATIN1 = "caf\u00e9".encode("latin-1")  # b"caf\xe9": a valid Latin-1 word, invalid UTF-8


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------------------- --config


def test_config_file_not_utf8_is_one_line_naming_the_file(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'n_students = 4\n# ' + LATIN1 + b"\n")
    rc = main(["run", EXP, "--out", str(tmp_path / "out"), "--config", str(cfg), "--quiet", "--workers", "1"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert line == f"uqkd: error: --config: {str(cfg)!r} is not UTF-8 text (byte 20)"
    assert not (tmp_path / "out" / EXP / "results.csv").exists()


def test_config_file_not_utf8_python_api(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_bytes(b'{"n_students": 4, "x": "' + LATIN1 + b'"}')
    with pytest.raises(ConfigError, match=re.escape(f"--config: {str(cfg)!r} is not UTF-8 text (byte 27)")):
        run_experiment(EXP, out=tmp_path / "out", config_file=cfg, progress=False)


# ------------------------------------------------------------------------------------------ QA file


def test_qa_file_not_utf8_names_file_line_and_byte(tmp_path):
    p = tmp_path / "qa.jsonl"
    good = b'{"question": "Capital of France?", "answer": "Paris"}\n'
    p.write_bytes(good + b'{"question": "' + LATIN1 + b'?", "answer": "x"}\n')
    with pytest.raises(UserError) as ei:
        load_qa(p)
    assert str(ei.value) == f"--data: {p}: line 2: not UTF-8 text (byte {len(good) + 17}: b'\\xe9')"


def test_qa_json_list_not_utf8(tmp_path):
    p = tmp_path / "paper.json"
    p.write_bytes(b'[{"question": "a?",\n "answer": "' + LATIN1 + b'"}]')
    with pytest.raises(UserError, match=r"paper\.json: line 2: not UTF-8 text \(byte 35: b'\\xe9'\)"):
        load_qa(p)


def test_read_utf8_reads_utf8_and_names_unreadable_files(tmp_path):
    p = tmp_path / "ok.txt"
    p.write_text("caf\u00e9\n", encoding="utf-8")
    assert read_utf8(p) == "caf\u00e9\n"
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(UserError, match=r"d: cannot read \(Is a directory\)"):
        read_utf8(d)


# ------------------------------------------------------------------------------ samples / train JSONL


@pytest.mark.parametrize("flag", ["--samples"])
def test_samples_jsonl_not_utf8_names_the_file(tmp_path, capsys, flag):
    p = tmp_path / "samples.jsonl"
    p.write_bytes(b'{"id": "q1", "question": "' + LATIN1 + b'?"}\n')
    rc = main(["llm", "build-dataset", flag, str(p), "--method", "single", "--out", str(tmp_path / "t.jsonl")])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert line == f"uqkd: error: {flag}: {p}: line 1: not UTF-8 text (byte 29: b'\\xe9')"


def test_samples_jsonl_not_utf8_is_one_line_today(tmp_path, capsys):
    """What the CLI already guarantees: exit 2 and one line, no traceback."""
    p = tmp_path / "samples.jsonl"
    p.write_bytes(b'{"id": "q1", "question": "' + LATIN1 + b'?"}\n')
    rc = main(["llm", "build-dataset", "--samples", str(p), "--method", "single", "--out", str(tmp_path / "t.jsonl")])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "not UTF-8" in line


# ------------------------------------------------------------------------------------- sample cache

CACHE_DAMAGE = {
    "non-UTF-8": (b'{"text": "' + LATIN1 + b'", "n_tokens": 1}', "not UTF-8 (byte 13)"),
    "truncated": (b'{"text": "Par', "not valid JSON (truncated?)"),
    "null": (b"null", "expected a JSON object, got NoneType"),
    "a list": (b"[1]", "expected a JSON object, got list"),
}


@pytest.mark.parametrize("kind", list(CACHE_DAMAGE))
def test_sample_cache_damaged_entry_is_a_miss_with_one_warning(tmp_path, caplog, kind):
    from uqkd.llm.generate import SampleCache

    cache = SampleCache(tmp_path)
    key = "ab" + "0" * 62
    cache.put(key, {"text": "Paris", "n_tokens": 2})
    assert cache.get(key) == {"text": "Paris", "n_tokens": 2}
    path = tmp_path / "ab" / f"{key}.json"
    data, why = CACHE_DAMAGE[kind]
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        assert cache.get(key) is None
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert msgs == [f"sample cache: {path}: {why}; regenerating it"]
    assert (cache.hits, cache.misses) == (1, 1)
    cache.put(key, {"text": "Paris", "n_tokens": 2})  # regenerated and rewritten: a hit again
    assert cache.get(key) == {"text": "Paris", "n_tokens": 2}


def test_generate_samples_regenerates_damaged_cache_entries_identically(tmp_path, caplog):
    pytest.importorskip("transformers")
    from uqkd.llm.generate import DecodingConfig, SampleCache, generate_samples
    from uqkd.llm.models import tiny_causal_lm

    lm = tiny_causal_lm(seed=1)
    dec = DecodingConfig(max_new_tokens=4)
    qs = ["What is the capital of France?", "2+2?"]
    ref = generate_samples(lm, qs, 2, dec, seed=0, cache=SampleCache(tmp_path))
    entries = sorted(tmp_path.rglob("*.json"))
    assert len(entries) == 4
    entries[0].write_bytes(b"\xff\xfe\x00")
    entries[1].write_text("{}")
    entries[2].write_text(json.dumps({"text": "x", "n_tokens": "many"}))
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        again = generate_samples(lm, qs, 2, dec, seed=0, cache=SampleCache(tmp_path))
    assert again.texts == ref.texts
    assert (again.cache_hits, again.cache_misses) == (1, 3)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 3 and all(m.startswith("sample cache: ") and "regenerating it" in m for m in warned)
    assert {str(e) for e in entries[:3]} == {m.split(": ")[1] for m in warned}
    third = generate_samples(lm, qs, 2, dec, seed=0, cache=SampleCache(tmp_path))
    assert (third.cache_hits, third.cache_misses) == (4, 0)


# ------------------------------------------------------------------------------------- cell records


def test_cell_record_with_a_latin1_byte_in_a_string_is_recomputed(tmp_path, caplog):
    kw = dict(out=tmp_path, overrides=dict(TINY), progress=False, make_figures=False, workers=1)
    ref = run_experiment(EXP, **kw)
    ref_csv = ref.results_csv.read_bytes()
    victim = sorted((ref.out_dir / "cells").glob("*.json"))[0]
    raw = victim.read_bytes()
    victim.write_bytes(raw.replace(b'"experiment": "', b'"experiment": "\xe9', 1))
    with caplog.at_level(logging.WARNING, logger="uqkd"):
        res = run_experiment(EXP, **kw)
    assert res.n_computed == 1 and res.results_csv.read_bytes() == ref_csv
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(msgs) == 1 and f"{victim.name}: not UTF-8" in msgs[0]
