"""Every ``uqkd llm`` argument error comes before any model loads (issue 12: "late errors").

Each case runs the CLI in process with the model, teacher and embedder loaders replaced by ones that fail the
test, and asserts exit status 2 (1 for a file-system problem), one error line naming the problem, and that no
loader was called. A subprocess case also checks that torch is not even imported before such an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uqkd.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("argchecks")
    (d / "qa.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is the capital of C{i}?", "answer": f"City{i}"}) + "\n"
        for i in range(3)))
    (d / "latin1.jsonl").write_bytes('{"question": "C\xf4te?", "answer": "A"}\n'.encode("latin-1"))
    (d / "badline.jsonl").write_text('{"question": "Q?", "answer": "A"}\nnot json\n')
    (d / "samples.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is the capital of C{i}?", "answer": f"City{i}",
                    "samples": [f"City{i}", f"Town{i}"], "k": 2}) + "\n" for i in range(3)))
    (d / "nosamples.jsonl").write_text('{"id": "q0", "question": "Q?", "answer": "A"}\n')
    (d / "train.jsonl").write_text('{"prompt": "Q?", "completion": "A", "weight": 1.0}\n')
    (d / "a-file").write_text("x")
    for name, cfg in (("corrupt", '{"model_type": "llama", "hidden_size": '), ("no-type", "{}"),
                      ("stub", '{"model_type": "llama"}')):
        (d / name).mkdir()
        (d / name / "config.json").write_text(cfg)
        (d / name / "model.safetensors").write_bytes(b"\0" * 16)
    (d / "students" / "student-000").mkdir(parents=True)
    (d / "students" / "student-000" / "config.json").write_text('{"model_type": ')
    (d / "students" / "student-000" / "model.safetensors").write_bytes(b"\0" * 16)
    (d / "stub-students").mkdir()
    os.symlink(d / "stub", d / "stub-students" / "student-000")
    return d


@pytest.fixture()
def no_loads(monkeypatch):
    """Any model, teacher or embedder load fails the test."""
    from uqkd.llm import backends, embed, models

    def boom(*a, **k):
        raise AssertionError(f"a model was loaded before the argument error: {a!r}")

    monkeypatch.setattr(models, "load_causal_lm", boom)
    monkeypatch.setattr(backends, "load_teacher", boom)
    monkeypatch.setattr(embed, "load_embedder", boom)
    monkeypatch.setattr(embed.SBERTEmbedder, "__init__", boom)


def _run(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    return rc, lines


def _sample(fx, *args):
    return ["llm", "sample", "--data", str(fx / "qa.jsonl"), "--k", "2", "--embedder", "hash",
            "--cache-dir", str(fx / "cache"), "--out", str(fx / "out" / "s.jsonl"), *args]


SAMPLE_CASES = [
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--student", "derived", "--student-every", "0"], "--student-every: expected an integer >= 1, got 0"),
    (["--embedder", "hash:0"], "hash dimension '0' is not a positive integer"),
    (["--embedder", "hash:abc"], "hash dimension 'abc' is not a positive integer"),
    (["--embedder", "/nonexistent/sbert"], "--embedder '/nonexistent/sbert': no such directory"),
    (["--embedder", "{fx}/corrupt"], "corrupt/config.json' is unreadable or not valid JSON"),
    (["--student", "/nonexistent/student"], "--student '/nonexistent/student': no such file or directory"),
    (["--student", "{fx}/corrupt"], "--student .*corrupt/config.json' is unreadable or not valid JSON"),
    (["--student", "a/b/c"], "--student 'a/b/c': no such file or directory"),
    (["--top-p", "2"], r"top_p: expected a number in \(0, 1\], got 2.0"),
    (["--top-p", "0"], r"top_p: expected a number in \(0, 1\], got 0.0"),
    (["--top-k", "-1"], "top_k: expected an integer >= 0"),
    (["--temperature", "inf"], "temperature: expected a finite value > 0 when sampling, got inf"),
    (["--repetition-penalty", "inf"], "repetition_penalty: expected a finite number > 0, got inf"),
    (["--max-new-tokens", "0"], "max_new_tokens: expected an integer >= 1, got 0"),
    (["--data", "{fx}/nope.jsonl"], "--data: file not found"),
    (["--data", "{fx}/latin1.jsonl"], "--data: .*latin1.jsonl: line 1: not UTF-8 text"),
    (["--data", "{fx}/badline.jsonl"], "badline.jsonl: line 2: invalid JSON"),
    (["--data", "{fx}"], "--data: not a file"),
    (["--k", "0"], "--k: expected an integer >= 1, got 0"),
    (["--limit", "-1"], "--limit: expected an integer >= 0"),
    (["--threads", "-1"], "--threads: expected an integer >= 0"),
    (["--device", "tpu"], r"--device: expected auto \(CUDA when available\), cpu, mps, cuda, cuda:N; got .tpu."),
    (["--teacher", "{fx}/corrupt"], "--teacher .*corrupt/config.json' is unreadable or not valid JSON"),
    (["--teacher", "{fx}/no-type"], "--teacher .*no-type/config.json' names no model_type"),
    (["--teacher", "{fx}/a-file"], "not a model directory or a .gguf file"),
]


@pytest.mark.parametrize("args, match", SAMPLE_CASES, ids=[" ".join(a) for a, _ in SAMPLE_CASES])
def test_sample_argument_errors_before_any_load(fx, capsys, no_loads, args, match):
    import re

    argv = _sample(fx, *[a.replace("{fx}", str(fx)) for a in args])
    if "--k" in args:  # the case replaces --k
        i = argv.index("--k")
        del argv[i:i + 2]
    rc, lines = _run(capsys, argv)
    assert rc == 2, lines
    assert len(lines) == 1 and lines[0].startswith("uqkd: error: "), lines
    assert re.search(match, lines[0]), lines[0]


BUDGET_CASES = [
    (["--budget", "0"], "--budget: expected an integer >= 1, got 0"),
    (["--budget", "12", "--pilot", "1"], "--pilot: expected an integer >= 2, got 1"),
    (["--budget", "5"], r"--budget: expected an integer >= --pilot x questions = 2 x 3 = 6, got 5"),
]


@pytest.mark.parametrize("args, match", BUDGET_CASES, ids=[" ".join(a) for a, _ in BUDGET_CASES])
def test_sample_budget_errors_before_any_load(fx, capsys, no_loads, args, match):
    import re

    argv = _sample(fx, *args)
    i = argv.index("--k")
    del argv[i:i + 2]
    rc, lines = _run(capsys, argv)
    assert rc == 2 and len(lines) == 1 and re.search(match, lines[0]), lines


@pytest.mark.parametrize("flag, value, match", [
    ("--cache-dir", "{fx}/a-file", "--cache-dir: .*a-file' is a file, not a folder"),
    ("--out", "{fx}", "--out: .* is a folder; pass a file path"),
    ("--out", "{fx}/a-file/s.jsonl", "--out: cannot create .*a-file' is a file, not a folder"),
])
def test_sample_unwritable_output_is_exit_1_before_any_load(fx, capsys, no_loads, flag, value, match):
    import re

    argv = _sample(fx)
    i = argv.index(flag)
    argv[i + 1] = value.replace("{fx}", str(fx))
    rc, lines = _run(capsys, argv)
    assert rc == 1 and len(lines) == 1 and re.search(match, lines[0]), lines


BUILD_CASES = [
    (["--samples", "{fx}/samples.jsonl", "--method", "single", "--student-index", "-1"],
     "--student-index: expected an integer >= 0, got -1"),
    (["--samples", "{fx}/nosamples.jsonl", "--method", "averaging", "--embedder", "hash"],
     "record 1: 'samples' must be a non-empty list"),
    (["--samples", "{fx}/samples.jsonl", "--method", "averaging", "--embedder", "hash:abc"],
     "hash dimension 'abc'"),
    (["--samples", "{fx}/samples.jsonl", "--method", "variance-weighting", "--embedder", "hash"],
     "variance-weighting needs the untrained student's answers"),
    (["--samples", "{fx}/latin1.jsonl", "--method", "single"], "--samples: .*latin1.jsonl: line 1: not UTF-8 text"),
]


@pytest.mark.parametrize("args, match", BUILD_CASES, ids=[a[-1] for a, _ in BUILD_CASES])
def test_build_dataset_argument_errors_before_any_load(fx, capsys, no_loads, args, match):
    import re

    rc, lines = _run(capsys, ["llm", "build-dataset", "--out", str(fx / "out" / "t.jsonl"),
                              *[a.replace("{fx}", str(fx)) for a in args]])
    assert rc == 2 and len(lines) == 1 and re.search(match, lines[0]), lines


DISTILL_CASES = [
    (["--train", "{fx}/train.jsonl", "--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--train", "{fx}/train.jsonl", "--student-every", "0"], "--student-every: expected an integer >= 1, got 0"),
    (["--train", "{fx}/train.jsonl", "--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
    (["--train", "{fx}/train.jsonl", "--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--train", "{fx}/train.jsonl", "--lora", "--lora-alpha", "nan"], "--lora-alpha: expected a finite number"),
    (["--train", "{fx}/train.jsonl", "--report-to", "bogus"], "--report-to: expected none or one or more of"),
    (["--train", "{fx}/train.jsonl", "--student", "{fx}/corrupt"], "--student .*config.json' is unreadable"),
    (["--train", "{fx}/train.jsonl", "--teacher", "/nonexistent/t"], "--teacher '/nonexistent/t': no such file"),
    (["--samples", "{fx}/samples.jsonl", "--k-per-student", "-1"], "--k-per-student: expected an integer >= 1"),
    (["--samples", "{fx}/samples.jsonl", "--embedder", "hash:0"], "hash dimension '0'"),
    (["--samples", "{fx}/samples.jsonl", "--method", "best"], "--method: expected one of"),
]


@pytest.mark.parametrize("args, match", DISTILL_CASES, ids=[" ".join(a[2:]) for a, _ in DISTILL_CASES])
def test_distill_argument_errors_before_any_load(fx, capsys, no_loads, args, match):
    import re

    rc, lines = _run(capsys, ["llm", "distill", "--out", str(fx / "out" / "st"), "--embedder", "hash",
                              "--cache-dir", str(fx / "cache"), *[a.replace("{fx}", str(fx)) for a in args]])
    assert rc == 2 and len(lines) == 1 and re.search(match, lines[0]), lines


def test_distill_out_that_is_a_file_is_exit_1_before_any_load(fx, capsys, no_loads):
    rc, lines = _run(capsys, ["llm", "distill", "--train", str(fx / "train.jsonl"), "--out", str(fx / "a-file"),
                              "--cache-dir", str(fx / "cache")])
    assert rc == 1 and len(lines) == 1 and "is a file, not a folder" in lines[0], lines


EVAL_CASES = [
    (["--students", "{fx}/students"], "--students .*student-000/config.json' is unreadable or not valid JSON"),
    (["--students", "{fx}/students", "--teacher", "smollm2"], "student-000/config.json' is unreadable"),
    (["--students", "{fx}/stub-students", "--k", "1"], "--k: expected an integer >= 2, got 1"),
    (["--students", "{fx}/stub-students", "--top-p", "2"], r"top_p: expected a number in \(0, 1\]"),
    (["--students", "{fx}/stub-students", "--embedder", "hash:abc"], "hash dimension 'abc'"),
    (["--students", "{fx}/stub-students", "--data", "{fx}/nope.jsonl"], "--data: file not found"),
    (["--students", "{fx}/stub-students", "--teacher", "{fx}/corrupt"], "--teacher .*config.json' is unreadable"),
    (["--students", "{fx}/a-file"], "--students: .*a-file' is a file"),
]


@pytest.mark.parametrize("args, match", EVAL_CASES, ids=[" ".join(a[2:]) or a[1] for a, _ in EVAL_CASES])
def test_evaluate_argument_errors_before_any_load(fx, capsys, no_loads, args, match):
    import re

    rc, lines = _run(capsys, ["llm", "evaluate", "--out", str(fx / "out" / "ev"), "--embedder", "hash",
                              "--data", str(fx / "qa.jsonl"), "--cache-dir", str(fx / "cache"),
                              *[a.replace("{fx}", str(fx)) for a in args]])
    assert rc == 2 and len(lines) == 1 and re.search(match, lines[0]), lines


def test_errors_come_before_torch_is_imported(fx):
    """In a fresh process, with the default 30-second teacher: the error comes first, and torch is never imported."""
    code = ("import sys; from uqkd.cli import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules, 'transformers' in sys.modules); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    for args in (["--embedder", "hash:abc"], ["--top-p", "2"], ["--student", str(fx / "corrupt")],
                 ["--batch-size", "0"]):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-c", code, "llm", "sample", "--data", str(fx / "qa.jsonl"), "--k", "2",
                            "--out", str(fx / "out" / "s.jsonl"), *args], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stdout.split() == ["False", "False"], (args, r.stdout)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert time.monotonic() - t0 < 30


def test_corrupt_local_config_is_one_line_naming_the_file_at_load(fx):
    """Loading (not only the up-front check) names the damaged config.json."""
    from uqkd.config import UserError
    from uqkd.llm.models import load_causal_lm

    with pytest.raises(UserError, match=r"corrupt/config.json' is unreadable or not valid JSON"):
        load_causal_lm(str(fx / "corrupt"), device="cpu", dtype="float32")
    with pytest.raises(UserError, match=r"no-type/config.json' names no model_type"):
        load_causal_lm(str(fx / "no-type"), device="cpu", dtype="float32")


def test_hub_id_not_in_offline_cache_is_caught_up_front(monkeypatch):
    from uqkd.config import UserError
    from uqkd.llm.models import check_model_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        check_model_spec("nosuch-owner-xyz/nosuch-model-xyz", "--teacher")
    check_model_spec("derived", "--student", allow=("derived",))
    check_model_spec("openai:http://127.0.0.1:1/v1#m", "--teacher")  # left to its backend


def test_report_to_choices_cover_transformers_integrations():
    pytest.importorskip("transformers")
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from uqkd.llm.cli import _REPORT_TO

    assert set(INTEGRATION_TO_CALLBACK) <= set(_REPORT_TO)
