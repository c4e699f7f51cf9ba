"""``uqkd llm sample --estimate``: generations and tokens counted with the teacher's own prompt encoding, nothing
generated; the cost with a price."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("transformers")

from uqkd.cli import main  # noqa: E402
from uqkd.llm.models import save_lm, tiny_causal_lm  # noqa: E402

QS = ["What is the capital of C1?", "Write a long poem about the sea and its many moods.", "Hi"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("est")
    save_lm(tiny_causal_lm(seed=0, n_layers=2), d / "teacher")
    (d / "p.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QS))
    return d


def _num(label, out):
    m = re.search(rf"{label}: (?:at most )?([\d,.]+)", out)
    assert m, out
    return float(m.group(1).replace(",", ""))


def test_estimate_counts_the_teachers_prompt_tokens_and_generates_nothing(work, capsys):
    from uqkd.llm.generate import encode_prompt
    from uqkd.llm.models import load_causal_lm

    cache = work / "cache"
    rc = main(["llm", "sample", "--teacher", str(work / "teacher"), "--data", str(work / "p.jsonl"), "--k", "5",
               "--max-new-tokens", "7", "--estimate", "--price-per-1m-tokens", "2", "--cache-dir", str(cache)])
    out = capsys.readouterr().out
    assert rc == 0 and "nothing generated" in out
    lm = load_causal_lm(str(work / "teacher"), device="cpu", dtype="float32")
    expected = 5 * sum(len(encode_prompt(lm, q)) for q in QS)
    assert _num("generations", out) == 15
    assert _num("prompt tokens", out) == expected
    assert _num("answer tokens", out) == 15 * 7
    assert _num("cost", out) == pytest.approx(round((expected + 105) * 2 / 1e6, 4))
    assert not (cache / "samples").exists()  # no generation, no sample cached


def test_estimate_output_price_and_errors(work, capsys):
    base = ["llm", "sample", "--teacher", str(work / "teacher"), "--data", str(work / "p.jsonl"), "--k", "2",
            "--max-new-tokens", "10"]
    assert main([*base, "--estimate", "--price-per-1m-tokens", "0", "--price-per-1m-output-tokens", "1000000"]) == 0
    assert _num("cost", capsys.readouterr().out) == 60  # 6 generations x 10 tokens x 1 per token; prompts free
    assert main([*base, "--price-per-1m-tokens", "1", "--out", str(work / "s.jsonl")]) == 2
    assert "--price-per-1m-tokens: only used with --estimate" in capsys.readouterr().err
    assert main([*base, "--estimate", "--price-per-1m-tokens", "-1"]) == 2
    assert "--price-per-1m-tokens: expected a finite number >= 0, got -1" in capsys.readouterr().err
    assert main(base) == 2
    assert "--out: required" in capsys.readouterr().err
