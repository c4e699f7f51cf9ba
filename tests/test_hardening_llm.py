"""Hardening, third pass (issue 33), the LLM steps: a training set with no answer token within max_length fails
before any model loads (TRL and uqkd trainers alike); a damaged student is named (or skipped with --skip-damaged);
hidden folders are never students, and a killed distill's temporaries are removed by the next one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("transformers")

from uqkd.cli import main  # noqa: E402
from uqkd.config import UserError  # noqa: E402
from uqkd.llm import cli as llm_cli  # noqa: E402
from uqkd.llm import models  # noqa: E402
from uqkd.llm.models import save_lm, tiny_causal_lm  # noqa: E402

NO_ANSWER = ("uqkd: error: train: no row has answer tokens within max_length (192 tokens): the prompt of every one "
             "of the 3 rows fills it; shorten the prompts")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("llm-hardening")
    save_lm(tiny_causal_lm(seed=0, n_layers=2), d / "model")
    long_rows = [{"prompt": [{"role": "user", "content": "Q" * 300}],
                  "completion": [{"role": "assistant", "content": "A"}], "weight": 1.0}] * 3
    (d / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long_rows))
    (d / "long-standard.jsonl").write_text("".join(json.dumps({"prompt": "Q" * 300 + "?", "completion": "A"}) + "\n"
                                                   for _ in range(3)))
    (d / "qa.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "question": f"Capital of C{i}?",
                                                    "answer": f"City{i}"}) + "\n" for i in range(2)))
    students = d / "students"
    for r in range(3):
        save_lm(tiny_causal_lm(seed=r, n_layers=2), students / f"student-{r:03d}")
    return d


def _err_lines(capsys):
    """stderr without blank lines, our warnings and transformers' weight-loading progress bar."""
    return [ln for ln in capsys.readouterr().err.splitlines()
            if ln.strip() and not ln.startswith(("warning:", "Loading weights"))]


def _no_model_load(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_causal_lm", refuse)


# ---------------------------------------------------------------------------------------------- 1. no answer tokens

@pytest.mark.parametrize("trainer", ["trl", "uqkd"])
@pytest.mark.parametrize("train", ["long.jsonl", "long-standard.jsonl"])
def test_no_answer_within_max_length_is_one_line_before_the_model_loads(work, capsys, monkeypatch, trainer, train):
    _no_model_load(monkeypatch)
    rc = main(["llm", "distill", "--train", str(work / train), "--student", str(work / "model"), "--trainer",
               trainer, "--embedder", "hash", "--cache-dir", str(work / "cache"), "--out", str(work / "st")])
    assert rc == 2
    assert _err_lines(capsys) == [NO_ANSWER]
    assert not (work / "st").exists()


def test_no_answer_within_max_length_after_the_load_when_the_tokenizer_alone_cannot_be_read(work, capsys,
                                                                                             monkeypatch):
    """A tokenizer that cannot be had without the model (a GGUF not yet converted): the TRL path still gives the
    clean error (train_student_trl checks it before TRL), not TRL's num_samples=0."""
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **kw: None)
    rc = main(["llm", "distill", "--train", str(work / "long.jsonl"), "--student", str(work / "model"),
               "--embedder", "hash", "--cache-dir", str(work / "cache"), "--out", str(work / "st")])
    assert rc == 2
    assert _err_lines(capsys) == [NO_ANSWER]


def test_trl_api_checks_answer_tokens_before_the_trainer():
    from uqkd.llm.train import TrainConfig, train_student_trl

    rows = [{"prompt": "Q" * 100, "completion": "A"}] * 2
    with pytest.raises(UserError, match=r"^train: no row has answer tokens within max_length \(16 tokens\): the "
                                        r"prompt of every one of the 2 rows fills it; shorten the prompts$"):
        train_student_trl(tiny_causal_lm(seed=0, n_layers=1, chat=False), rows, TrainConfig(max_length=16))


def test_load_tokenizer_reads_a_model_folder_without_its_weights(work, tmp_path):
    tok = models.load_tokenizer(str(work / "model"))
    assert tok is not None and tok("ab")["input_ids"] == tiny_causal_lm(n_layers=1).tokenizer("ab")["input_ids"]
    assert models.load_tokenizer(str(tmp_path / "nothing-here")) is None


# ---------------------------------------------------------------------------------------------- 2. damaged student

def _damaged_copy(work, tmp_path, how):
    import shutil

    d = tmp_path / "students"
    shutil.copytree(work / "students", d)
    f = d / "student-001" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if how == "half" else data[:8] + b"{garbage" + data[16:])
    return d


EVAL = ["--embedder", "hash", "--k", "2", "--max-new-tokens", "2", "--limit", "2"]


@pytest.mark.parametrize("how, detail", [("half", "incomplete metadata, file not fully covered"),
                                         ("header", "invalid JSON in header: key must be a string at line 1 "
                                                    "column 2")])
def test_damaged_student_is_named_before_any_model_loads(work, tmp_path, capsys, monkeypatch, how, detail):
    d = _damaged_copy(work, tmp_path, how)
    _no_model_load(monkeypatch)
    rc = main(["llm", "evaluate", "--students", str(d), "--data", str(work / "qa.jsonl"), "--out",
               str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "c"), *EVAL])
    assert rc == 2
    assert _err_lines(capsys) == [
        f"uqkd: error: --students: student folder {str(d / 'student-001')!r}: "
        f"{str(d / 'student-001' / 'model.safetensors')!r} is damaged ({detail}); re-distill it, or pass "
        "--skip-damaged to evaluate the others"]
    assert not (tmp_path / "ev").exists()


def test_skip_damaged_evaluates_the_others_and_reports_the_skipped(work, tmp_path, capsys):
    d = _damaged_copy(work, tmp_path, "half")
    rc = main(["llm", "evaluate", "--students", str(d), "--data", str(work / "qa.jsonl"), "--out",
               str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "c"), "--skip-damaged", *EVAL])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    why = f"{str(d / 'student-001' / 'model.safetensors')!r} is damaged (incomplete metadata, file not fully covered)"
    assert f"warning: student student-001 skipped (--skip-damaged): {why}" in cap.err.splitlines()
    assert "skipped 1 damaged student(s) (--skip-damaged): student-001" in cap.out.splitlines()
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["skipped"] == {"student-001": why}
    assert m["students"]["n_students"] == 2
    per = (tmp_path / "ev" / "per_student.csv").read_text()
    assert "student-000" in per and "student-002" in per and "student-001" not in per


def test_skip_damaged_with_every_student_damaged_is_an_error(work, tmp_path, capsys):
    d = _damaged_copy(work, tmp_path, "half")
    for r in (0, 2):
        (d / f"student-{r:03d}" / "model.safetensors").write_bytes(b"\x00" * 4)
    rc = main(["llm", "evaluate", "--students", str(d), "--data", str(work / "qa.jsonl"), "--out",
               str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "c"), "--skip-damaged", *EVAL])
    lines = _err_lines(capsys)
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith(f"uqkd: error: --students: every student folder in {str(d)!r} is damaged (")
    assert "student-000: " in lines[0] and "header too small" in lines[0]


# ---------------------------------------------------------------------------------------------- 5. hidden folders

def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_hidden_folders_are_never_students(work, tmp_path):
    import shutil

    d = tmp_path / "students"
    shutil.copytree(work / "students", d)
    half = d / ".student-000.tmp4242"  # a distill killed while saving: config.json written, nothing else readable
    half.mkdir()
    (half / "config.json").write_text('{"model_type": ')
    dirs, skipped = llm_cli._check_student_dirs(d)
    assert [p.name for p in dirs] == ["student-000", "student-001", "student-002"] and skipped == {}


def test_distill_removes_only_stale_temporaries(tmp_path):
    out = tmp_path / "st"
    out.mkdir()
    dead = _dead_pid()
    old = time.time() - 3600
    stale = [f".student-000.tmp{dead}", f".student-000.old{dead}", f".trl-000.tmp{dead}",
             f".student-002.tmp{os.getpid()}", ".trl-001"]  # own pid / no pid: stale when older than this process
    live = [f".student-003.tmp{os.getpid()}", ".trl-002", f".student-004.tmp{os.getppid()}"]
    other = [".keep", "student-000", f".student-000.tmp{dead}x"]
    for name in [*stale, *live, *other, f".student-001.old{dead}"]:
        (out / name).mkdir()
        (out / name / "config.json").write_text(json.dumps({"name": name}))
    for name in (f".student-002.tmp{os.getpid()}", ".trl-001"):
        os.utime(out / name, (old, old))
    llm_cli._remove_stale_distill_temporaries(out)
    # killed between save_lm's two renames: the earlier student-001 is put back, not deleted
    assert sorted(p.name for p in out.iterdir()) == sorted([*live, *other, "student-001"])
    assert json.loads((out / "student-001" / "config.json").read_text()) == {"name": f".student-001.old{dead}"}


def test_evaluate_after_a_distill_killed_while_saving(work, tmp_path, capsys):
    """End to end: a re-distill into an existing --out killed mid-save leaves a hidden staging folder; evaluate
    ignores it and the next distill removes it."""
    out = tmp_path / "st"
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Q{i}?"}],
                                         "completion": [{"role": "assistant", "content": f"A{i}"}]}) + "\n"
                             for i in range(3)))
    args = ["llm", "distill", "--train", str(train), "--student", str(work / "model"), "--embedder", "hash",
            "--cache-dir", str(tmp_path / "c"), "--epochs", "1", "--out", str(out)]
    assert main(args) == 0
    dead = _dead_pid()
    left = out / f".student-000.tmp{dead}"
    left.mkdir()
    (left / "config.json").write_text('{"model_type": ')
    capsys.readouterr()
    assert main(["llm", "evaluate", "--students", str(out), "--data", str(work / "qa.jsonl"), "--out",
                 str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "c"), *EVAL]) == 0
    assert left.exists()
    assert main(args) == 0
    assert not left.exists() and sorted(p.name for p in out.iterdir()) == ["student-000"]
