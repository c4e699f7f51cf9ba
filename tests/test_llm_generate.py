"""Tests of uqkd.llm.generate on a tiny model built from a config (no download)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from uqkd.config import UserError  # noqa: E402
from uqkd.llm import generate as G  # noqa: E402
from uqkd.llm.generate import DecodingConfig, SampleCache, clean_answer, format_prompt, generate_samples  # noqa: E402
from uqkd.llm.models import tiny_causal_lm  # noqa: E402

QS = ["What is the capital of France?", "Name a colour.", "2+2?"]
DEC = DecodingConfig(max_new_tokens=6)


@pytest.fixture(scope="module")
def lm():
    return tiny_causal_lm(seed=1)


def test_shapes_and_seed_determinism(lm):
    a = generate_samples(lm, QS, 3, DEC, seed=5)
    b = generate_samples(lm, QS, 3, DEC, seed=5)
    c = generate_samples(lm, QS, 3, DEC, seed=6)
    assert len(a.texts) == 3 and all(len(r) == 3 for r in a.texts)
    assert a.n_tokens.shape == (3, 3)
    assert a.texts == b.texts
    assert a.texts != c.texts
    assert len({t for row in a.texts for t in row}) > 3  # samples differ within and across prompts


def test_sample_j_independent_of_batch_and_k(lm):
    full = generate_samples(lm, QS, 3, DEC, seed=2, batch_size=9)
    one = generate_samples(lm, QS[1:2], 2, DEC, seed=2, batch_size=1)
    assert one.texts[0] == full.texts[1][:2]


def test_greedy_repeats_one_answer(lm):
    g = generate_samples(lm, QS, 4, DecodingConfig(max_new_tokens=5, do_sample=False))
    assert all(len(set(r)) == 1 for r in g.texts)


def test_cache_hits_on_rerun(lm, tmp_path):
    cache = SampleCache(tmp_path)
    a = generate_samples(lm, QS, 2, DEC, seed=0, cache=cache)
    assert (a.cache_hits, a.cache_misses) == (0, 6)
    b = generate_samples(lm, QS, 3, DEC, seed=0, cache=cache)  # a larger k reuses the first two samples
    assert (b.cache_hits, b.cache_misses) == (6, 3)
    assert [r[:2] for r in b.texts] == a.texts
    c = generate_samples(lm, QS, 3, DEC, seed=0, cache=SampleCache(tmp_path))
    assert (c.cache_hits, c.cache_misses, c.generated_tokens) == (9, 0, 0)
    assert c.texts == b.texts


def test_prompt_formats():
    chat = tiny_causal_lm(chat=True)
    plain = tiny_causal_lm(chat=False)
    assert format_prompt(plain, "Why?") == "Question: Why?\nAnswer:"
    assert format_prompt(chat, "Why?").startswith("<user>Why?")
    assert clean_answer("  Paris\nQuestion: next") == "Paris"


def test_empty_answers_counted_not_fatal(lm, monkeypatch):
    monkeypatch.setattr(G, "_generate_ids", lambda lm, prompts, seeds, dec: (["   "] * len(prompts), [1] * len(prompts)))
    r = generate_samples(lm, QS, 2, DEC)
    assert r.n_empty == 6
    assert r.texts == [["", ""]] * 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, r"k: expected an integer >= 1, got 0"),
        ({"k": 2, "questions": []}, "empty dataset"),
    ],
)
def test_bad_arguments(lm, kwargs, match):
    args = {"questions": QS, **kwargs}
    with pytest.raises(UserError, match=match):
        generate_samples(lm, args["questions"], args["k"], DEC)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, r"temperature: expected a value > 0 when sampling, got 0.0"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_bad_decoding(kwargs, match):
    with pytest.raises(UserError, match=match):
        DecodingConfig(**kwargs)


def test_greedy_allows_zero_temperature():
    assert not DecodingConfig(temperature=0.0, do_sample=False).do_sample


def test_top_k_one_is_greedy(lm):
    s = generate_samples(lm, QS, 2, DecodingConfig(max_new_tokens=5, top_k=1, repetition_penalty=1.0), seed=3)
    g = generate_samples(lm, QS, 1, DecodingConfig(max_new_tokens=5, do_sample=False, repetition_penalty=1.0))
    assert [r[0] for r in s.texts] == [r[0] for r in g.texts]
    assert all(len(set(r)) == 1 for r in s.texts)
