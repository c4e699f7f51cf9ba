"""``uqkd llm sample --budget B --pilot K0``: two-stage allocation of teacher draws, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from uqkd.aggregate import allocate_budget_two_stage  # noqa: E402
from uqkd.cli import main  # noqa: E402
from uqkd.llm.models import save_lm, tiny_causal_lm  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("llmbudget")
    save_lm(tiny_causal_lm(seed=0, n_layers=4), d / "teacher")
    (d / "qa.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is the capital of C{i}?", "answer": f"City{i}"}) + "\n"
        for i in range(6)))
    return d


def _sample(work, out, *args, cache="cache"):
    return main(["llm", "sample", "--teacher", str(work / "teacher"), "--data", str(work / "qa.jsonl"),
                 "--max-new-tokens", "4", "--out", str(work / out), "--cache-dir", str(work / cache),
                 "--embedder", "hash", *args])


def _read(p):
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_budget_allocation_matches_two_stage_and_keeps_pilot(work, capsys):
    assert _sample(work, "b.jsonl", "--budget", "21", "--pilot", "2") == 0
    out = capsys.readouterr().out
    recs = _read(work / "b.jsonl")
    ks = np.array([r["k"] for r in recs])
    assert ks.sum() == 21 and all(len(r["samples"]) == r["k"] for r in recs)
    assert "budget 21 (pilot 2" in out
    k_ref, v_ref = allocate_budget_two_stage(np.array([r["pilot_dispersion"] for r in recs]), 2, 21)
    assert ks.tolist() == k_ref.tolist()
    assert np.allclose([r["pilot_dispersion_shrunk"] for r in recs], v_ref)
    assert len(set(ks.tolist())) > 1  # the tiny teacher's dispersions differ: the allocation is not uniform
    # the pilot draws are the first K0 answers, byte for byte, and sample j is the same as with --k (fresh cache)
    assert _sample(work, "p.jsonl", "--k", "2", cache="cache-pilot") == 0
    assert _sample(work, "m.jsonl", "--k", str(int(ks.max())), cache="cache-max") == 0
    pilot, big = _read(work / "p.jsonl"), _read(work / "m.jsonl")
    for r, p, m in zip(recs, pilot, big):
        assert r["samples"][:2] == p["samples"]
        assert r["samples"] == m["samples"][: r["k"]]
    # byte-identical rerun from a fresh cache
    assert _sample(work, "b2.jsonl", "--budget", "21", "--pilot", "2", cache="cache-rerun") == 0
    assert (work / "b2.jsonl").read_bytes() == (work / "b.jsonl").read_bytes()


def test_build_dataset_with_variable_k(work, capsys):
    if not (work / "b.jsonl").exists():
        assert _sample(work, "b.jsonl", "--budget", "21", "--pilot", "2") == 0
    recs = _read(work / "b.jsonl")
    for method in ("single", "multi-response", "averaging", "inverse-variance-loss"):
        assert main(["llm", "build-dataset", "--samples", str(work / "b.jsonl"), "--method", method,
                     "--out", str(work / f"t-{method}.jsonl"), "--embedder", "hash"]) == 0
    multi = _read(work / "t-multi-response.jsonl")
    assert len(multi) == sum(len([t for t in r["samples"] if t.strip()]) for r in recs)
    w = np.array([r["weight"] for r in _read(work / "t-inverse-variance-loss.jsonl")])
    assert np.isclose(w.mean(), 1.0) and np.all(w > 0)
    avg = _read(work / "t-averaging.jsonl")
    by_id = {r["id"]: r for r in recs}
    assert all(a["sample_index"] < by_id[a["id"]]["k"] for a in avg)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--budget", "11", "--pilot", "2"], r"--budget: expected an integer >= --pilot x questions = 2 x 6 = 12, got 11"),
        (["--budget", "20", "--pilot", "1"], "--pilot: expected an integer >= 2, got 1"),
        (["--budget", "20", "--k", "3"], "pass exactly one of --k"),
        ([], "pass exactly one of --k"),
    ],
)
def test_budget_bad_input_exits_2_before_loading(work, capsys, monkeypatch, args, match):
    import re

    import uqkd.llm.models as models

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_causal_lm", boom)
    rc = _sample(work, "x.jsonl", *args)
    err = capsys.readouterr().err
    assert rc == 2 and re.search(match, err), err
    assert not (work / "x.jsonl").exists()


def test_distill_samples_splits_variable_k_per_question(work, capsys, monkeypatch):
    """With a --budget file, student r gets draws r*m_i..(r+1)*m_i-1 of question i, m_i = k_i // students."""
    import uqkd.llm.cli as cli

    if not (work / "b.jsonl").exists():
        assert _sample(work, "b.jsonl", "--budget", "21", "--pilot", "2") == 0
    recs = _read(work / "b.jsonl")
    seen = []

    def fake_rows(own, method, emb, seed, index, fmt):
        seen.append([o["samples"] for o in own])
        raise cli.UserError("stop before training")

    monkeypatch.setattr(cli, "_training_rows", fake_rows)
    rc = main(["llm", "distill", "--samples", str(work / "b.jsonl"), "--students", "2", "--method", "single",
               "--teacher", str(work / "teacher"), "--out", str(work / "st"), "--embedder", "hash"])
    assert rc == 2 and "stop before training" in capsys.readouterr().err
    assert seen[0] == [r["samples"][: r["k"] // 2] for r in recs]
