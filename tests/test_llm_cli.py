"""Tests of ``uqkd llm`` subcommands end to end on a tiny saved model, and their bad-input errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from uqkd.cli import main  # noqa: E402
from uqkd.llm.models import save_lm, tiny_causal_lm  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("llmcli")
    save_lm(tiny_causal_lm(seed=0, n_layers=4), d / "teacher")
    qa = d / "qa.jsonl"
    qa.write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is the capital of C{i}?", "answer": f"City{i}"}) + "\n"
        for i in range(6)))
    return d


def _common(work):
    return ["--cache-dir", str(work / "cache"), "--embedder", "hash"]


def test_pipeline_sample_build_distill_evaluate(work, capsys):
    t = str(work / "teacher")
    rc = main(["llm", "sample", "--teacher", t, "--data", str(work / "qa.jsonl"), "--split", "all", "--k", "3",
               "--max-new-tokens", "4", "--student", "derived", "--student-every", "2",
               "--out", str(work / "s.jsonl"), *_common(work)])
    assert rc == 0
    recs = [json.loads(x) for x in (work / "s.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and all(len(r["samples"]) == 3 and len(r["student_samples"]) == 3 for r in recs)
    assert all(r["dispersion"] >= 0 and r["answer"].startswith("City") for r in recs)
    # rerun: every sample from the cache
    assert main(["llm", "sample", "--teacher", t, "--data", str(work / "qa.jsonl"), "--split", "all", "--k", "3",
                 "--max-new-tokens", "4", "--out", str(work / "s2.jsonl"), *_common(work)]) == 0
    assert "18 hits / 0 misses" in capsys.readouterr().out
    for method in ("single", "multi-response", "averaging", "variance-weighting", "inverse-variance-loss"):
        assert main(["llm", "build-dataset", "--samples", str(work / "s.jsonl"), "--method", method,
                     "--out", str(work / f"train-{method}.jsonl"), *_common(work)]) == 0
    rows = [json.loads(x) for x in (work / "train-averaging.jsonl").read_text().splitlines()]
    assert {"prompt", "completion", "weight", "teacher_var"} <= set(rows[0])
    assert isinstance(rows[0]["prompt"], list) and rows[0]["completion"][0]["role"] == "assistant"
    # the file as plain TRL sees it: datasets loads it, TRL calls it conversational, tokenises it as uqkd does
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    from uqkd.llm.models import load_causal_lm
    from uqkd.llm.train import TrainConfig, tokenize_rows, trl_trainer

    ds = load_dataset("json", data_files=str(work / "train-inverse-variance-loss.jsonl"), split="train")
    assert is_conversational(ds[0]) and "weight" in ds.column_names
    st = load_causal_lm(t, device="cpu", dtype="float32")
    tr = trl_trainer(st, list(ds), TrainConfig(batch_size=2), output_dir=str(work / "trl-check"))
    ours = tokenize_rows(st, list(ds), 192)
    assert [x["input_ids"] for x in tr.train_dataset] == [x["input_ids"] for x in ours]
    assert [x["labels"] for x in tr.train_dataset] == [x["labels"] for x in ours]
    assert [round(x["weight"], 9) for x in tr.train_dataset] == [round(x["weight"], 9) for x in ours]
    assert recs[0]["provenance"]["backend"] == "hf" and len(recs[0]["question_sha"]) == 16
    # the old "same answers, other order" design must be asked for explicitly
    assert main(["llm", "distill", "--train", str(work / "train-averaging.jsonl"), "--teacher", t,
                 "--students", "2", "--out", str(work / "x"), *_common(work)]) == 2
    assert "--same-data" in capsys.readouterr().err
    assert main(["llm", "distill", "--samples", str(work / "s.jsonl"), "--method", "averaging", "--teacher", t,
                 "--student-every", "2", "--students", "3", "--epochs", "1", "--lr", "1e-3",
                 "--out", str(work / "students"), *_common(work)]) == 0
    assert sorted(p.name for p in (work / "students").iterdir()) == ["student-000", "student-001", "student-002"]
    meta = json.loads((work / "students" / "student-001" / "uqkd.json").read_text())
    assert meta["design"].startswith("teacher-draws") and meta["trainer"] == "trl"
    assert "teacher-draws" in (work / "students" / "student-001" / "README.md").read_text()
    assert main(["llm", "evaluate", "--students", str(work / "students"), "--data", str(work / "qa.jsonl"),
                 "--split", "all", "--teacher", t, "--k", "2", "--max-new-tokens", "4",
                 "--out", str(work / "eval"), *_common(work)]) == 0
    m = json.loads((work / "eval" / "metrics.json").read_text())
    assert m["students"]["n_students"] == 3 and m["teacher"]["method"] == "teacher"
    # the teacher's own row: agreement of its greedy answer with its own samples, a cosine in [-1, 1]
    assert m["teacher"]["alignment_mean"] is not None and -1.0 <= m["teacher"]["alignment_mean"] <= 1.0 + 1e-6
    for key in ("mse", "cosine", "alignment", "exact_match", "accuracy", "hallucination", "intra_var"):
        assert f"{key}_mean" in m["students"] and f"{key}_std" in m["students"]
    assert m["students"]["inter_var"] >= 0
    assert (work / "eval" / "per_student.csv").read_text().count("\n") == 4


@pytest.mark.parametrize(
    "args, match",
    [
        (["--k", "0"], "--k: expected an integer >= 1, got 0"),
        (["--k", "2", "--temperature", "0"], "temperature: expected a value > 0 when sampling, got 0.0"),
        (["--k", "2", "--teacher", "/nonexistent/my-model"], "'/nonexistent/my-model'.*smollm2"),
    ],
)
def test_sample_bad_input(work, capsys, args, match):
    import re

    rc = main(["llm", "sample", "--data", str(work / "qa.jsonl"), "--out", str(work / "x.jsonl"),
               "--teacher", str(work / "teacher"), *_common(work), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert re.search(match, err), err
    assert err.count("\n") <= 2  # usage-free one-line error


def test_empty_and_malformed_data(work, capsys):
    (work / "empty.jsonl").write_text("")
    rc = main(["llm", "sample", "--data", str(work / "empty.jsonl"), "--k", "2", "--out", str(work / "x.jsonl"),
               "--teacher", str(work / "teacher"), *_common(work)])
    assert rc == 2 and "empty dataset" in capsys.readouterr().err
    (work / "bad.jsonl").write_text('{"question": "a?", "answer": "b"}\nnot json\n')
    rc = main(["llm", "sample", "--data", str(work / "bad.jsonl"), "--k", "2", "--out", str(work / "x.jsonl"),
               "--teacher", str(work / "teacher"), *_common(work)])
    assert rc == 2 and "bad.jsonl: line 2: invalid JSON" in capsys.readouterr().err
    (work / "empty-samples.jsonl").write_text("\n")
    rc = main(["llm", "build-dataset", "--samples", str(work / "empty-samples.jsonl"), "--method", "single",
               "--out", str(work / "t.jsonl")])
    assert rc == 2 and "empty dataset" in capsys.readouterr().err
    rc = main(["llm", "build-dataset", "--samples", str(work / "empty-samples.jsonl"), "--method", "best",
               "--out", str(work / "t.jsonl")])
    assert rc == 2 and "--method: expected one of single" in capsys.readouterr().err
    rc = main(["llm", "evaluate", "--students", str(work / "nowhere"), "--out", str(work / "e")])
    assert rc == 2 and "--students: directory not found" in capsys.readouterr().err


def test_sample_uses_every_question_by_default_and_evaluate_without_teacher_says_so(work, capsys):
    t = str(work / "teacher")
    assert main(["llm", "sample", "--teacher", t, "--data", str(work / "qa.jsonl"), "--k", "2",
                 "--max-new-tokens", "3", "--out", str(work / "all.jsonl"), *_common(work)]) == 0
    out = capsys.readouterr().out
    assert len((work / "all.jsonl").read_text().splitlines()) == 6 and "all 6 questions" in out
    assert main(["llm", "sample", "--teacher", t, "--data", str(work / "qa.jsonl"), "--k", "2", "--split", "train",
                 "--max-new-tokens", "3", "--out", str(work / "tr.jsonl"), *_common(work)]) == 0
    assert "held out" in capsys.readouterr().out
    assert main(["llm", "build-dataset", "--samples", str(work / "all.jsonl"), "--method", "single",
                 "--out", str(work / "t.jsonl"), *_common(work)]) == 0
    assert main(["llm", "distill", "--train", str(work / "t.jsonl"), "--teacher", t, "--student-every", "2",
                 "--epochs", "1", "--trainer", "uqkd", "--out", str(work / "st"), *_common(work)]) == 0
    capsys.readouterr()
    assert main(["llm", "evaluate", "--students", str(work / "st"), "--data", str(work / "qa.jsonl"), "--k", "2",
                 "--max-new-tokens", "3", "--out", str(work / "ev"), *_common(work)]) == 0
    assert "alignment      not computed" in capsys.readouterr().out
    m = json.loads((work / "ev" / "metrics.json").read_text())
    assert m["students"]["alignment_mean"] is None and m["alignment"].startswith("not computed")
