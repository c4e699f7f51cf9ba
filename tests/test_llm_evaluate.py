"""Tests of uqkd.llm.evaluate: per-model metrics and the across-student summary (tiny model, hashing embedder)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from uqkd.data.qa import QAItem  # noqa: E402
from uqkd.llm import evaluate as E  # noqa: E402
from uqkd.llm.embed import HashEmbedder  # noqa: E402
from uqkd.llm.evaluate import PER_MODEL_METRICS, ModelEval, evaluate_model, summarize_students  # noqa: E402
from uqkd.llm.generate import DecodingConfig, GenerationResult  # noqa: E402
from uqkd.llm.models import tiny_causal_lm  # noqa: E402

ITEMS = [QAItem("a", "Capital of France?", "Paris"), QAItem("b", "Capital of Italy?", "Rome", ("Roma",))]


def test_evaluate_tiny_model_ranges_and_determinism():
    lm = tiny_causal_lm(seed=2)
    emb = HashEmbedder(32)
    dec = DecodingConfig(max_new_tokens=5)
    a = evaluate_model(lm, ITEMS, emb, k=3, decoding=dec, seed=1)
    b = evaluate_model(lm, ITEMS, emb, k=3, decoding=dec, seed=1)
    assert set(a.metrics) == set(PER_MODEL_METRICS)
    import math

    assert math.isnan(a.metrics["alignment"])  # no teacher samples: alignment is not computed
    assert {k: v for k, v in a.metrics.items() if k != "alignment"} == {
        k: v for k, v in b.metrics.items() if k != "alignment"}
    assert evaluate_model(lm, ITEMS, emb, k=3, decoding=dec, seed=1, self_alignment=True).metrics["alignment"] > -1
    assert a.sample_emb.shape == (2, 3, 32) and a.greedy_emb.shape == (2, 32)
    assert 0 <= a.metrics["mse"] <= 4 and -1 <= a.metrics["cosine"] <= 1
    assert a.metrics["accuracy"] + a.metrics["hallucination"] + a.metrics["empty_rate"] == pytest.approx(1.0)
    assert a.metrics["intra_var"] >= 0


def test_metrics_on_known_answers(monkeypatch):
    answers = {"greedy": [["The capital of France is Paris."], ["Milan"]],
               "samples": [["Paris", "Paris", "Paris"], ["Rome", "Milan", ""]]}

    def fake(lm, qs, k, dec, **kw):
        texts = answers["greedy"] if not dec.do_sample else answers["samples"]
        return GenerationResult(texts, np.ones((len(qs), k), dtype=int))

    monkeypatch.setattr(E, "generate_samples", fake)
    emb = HashEmbedder(64)
    ev = evaluate_model(None, ITEMS, emb, k=3, decoding=DecodingConfig())
    m = ev.metrics
    assert m["exact_match"] == 0.5 and m["accuracy"] == 0.5 and m["hallucination"] == 0.5 and m["empty_rate"] == 0
    ref = emb.encode(["Paris", "Rome"])
    g = emb.encode(["The capital of France is Paris.", "Milan"])
    assert m["mse"] == pytest.approx(((g - ref) ** 2).sum(1).mean())
    assert m["cosine"] == pytest.approx((g * ref).sum(1).mean())
    s = emb.encode(["Paris"] * 3 + ["Rome", "Milan", ""]).reshape(2, 3, -1)
    assert m["intra_var"] == pytest.approx(np.mean([0.0, s[1].var(axis=0, ddof=1).sum()]))


def _ev(emb_g, metrics):
    return ModelEval([], [], np.asarray(emb_g, float), np.zeros((1, 2, 1)), metrics)


def test_summary_across_students():
    base = dict.fromkeys(PER_MODEL_METRICS, 0.0)
    e1 = _ev([[1.0, 0.0]], {**base, "mse": 1.0})
    e2 = _ev([[0.0, 1.0]], {**base, "mse": 3.0})
    s = summarize_students([e1, e2])
    assert s["mse_mean"] == 2.0 and s["mse_std"] == pytest.approx(np.sqrt(2.0))
    assert s["inter_var"] == pytest.approx(1.0)  # 0.5 + 0.5 summed over dimensions
    assert summarize_students([e1, e1])["inter_var"] == 0.0
    assert s["n_students"] == 2
