"""Tests of uqkd.llm.select: training-set builders (no model needed: a hashing embedder)."""

from __future__ import annotations

import numpy as np
import pytest

from uqkd.config import UserError
from uqkd.llm.embed import HashEmbedder
from uqkd.llm.select import (
    METHODS,
    build_training_set,
    embedding_dispersion,
    nearest_to,
    select_averaging,
    select_variance_weighting,
)

EMB = HashEmbedder(64)


def _rec(i, samples, **kw):
    return {"id": f"q{i}", "question": f"Question {i}?", "samples": samples, **kw}


RECORDS = [
    _rec(0, ["Paris", "Paris", "Paris is the capital", "London"]),
    _rec(1, ["Berlin", "Bonn", "Berlin", ""]),
    _rec(2, ["Tokyo", "Tokyo", "Tokyo", "Tokyo"]),
]


def test_dispersion_and_nearest():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert embedding_dispersion(e) == pytest.approx(np.mean(e.var(axis=0, ddof=1)))
    assert embedding_dispersion(e[:1]) == 0.0
    assert nearest_to(e, np.array([0.9, 0.1])) == 0
    assert select_averaging(e) == 2  # [1, 1] points along the mean direction
    with pytest.raises(ValueError, match="shape"):
        embedding_dispersion(np.zeros(3))


def test_variance_weighting_trusts_the_less_variable_source():
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.9, 0.1]])
    # a confident student near teacher answer 0 pulls the fused target there
    s_conf = np.array([[1.0, 0.0, 0.0], [0.99, 0.01, 0.0]])
    j, mu = select_variance_weighting(t, s_conf)
    assert j == 0
    # a very dispersed student leaves the teacher mean in charge: same pick as averaging
    s_noisy = np.array([[50.0, -50.0, 0.0], [-50.0, 50.0, 0.0], [0.0, 0.0, 60.0]])
    assert select_variance_weighting(t, s_noisy)[0] == select_averaging(t)


def test_single_is_seeded_by_identity():
    a, _ = build_training_set(RECORDS, "single", seed=0, student_index=0)
    b, _ = build_training_set(RECORDS, "single", seed=0, student_index=0)
    assert a == b
    picks = {tuple(r["sample_index"] for r in build_training_set(RECORDS, "single", seed=0, student_index=s)[0])
             for s in range(8)}
    assert len(picks) > 1  # students draw different teacher answers
    for s in range(8):  # never the empty answer of q1
        row = build_training_set(RECORDS, "single", seed=0, student_index=s)[0][1]
        assert row["completion"][0]["content"] == RECORDS[1]["samples"][row["sample_index"]] != ""


def test_multi_response_uses_all_nonempty():
    rows, info = build_training_set(RECORDS, "multi-response")
    assert info["n_rows"] == len(rows) == 4 + 3 + 4
    assert all(r["completion"] for r in rows)
    assert {"prompt", "completion", "weight", "teacher_var"} <= set(rows[0])


def test_averaging_picks_consensus():
    rows, _ = build_training_set(RECORDS, "averaging", EMB)
    assert rows[0]["completion"][0]["content"] == "Paris"
    assert rows[1]["completion"][0]["content"] == "Berlin"
    assert all(r["weight"] == 1.0 for r in rows)


def test_inverse_variance_loss_weights():
    recs = [_rec(i, s) for i, s in enumerate(
        [["a", "a", "a", "a b"], ["x y", "foo bar", "baz", "qq zz"], ["m", "m", "m", "m"], ["p", "p r", "t", "p"]])]
    rows, _ = build_training_set(recs, "inverse-variance-loss", EMB)
    w = np.array([r["weight"] for r in rows])
    tv = np.array([r["teacher_var"] for r in rows])
    assert w.mean() == pytest.approx(1.0)
    assert np.argmax(w) == np.argmin(tv) and np.argmin(w) == np.argmax(tv)


def test_variance_weighting_needs_student_samples():
    with pytest.raises(UserError, match="student_samples"):
        build_training_set(RECORDS, "variance-weighting", EMB)
    recs = [dict(r, student_samples=["Paris", "Paris"]) for r in RECORDS]
    rows, _ = build_training_set(recs, "variance-weighting", EMB)
    assert rows[0]["completion"][0]["content"] == "Paris"


def test_errors_and_skips():
    with pytest.raises(UserError, match="method: expected one of"):
        build_training_set(RECORDS, "mean", EMB)
    with pytest.raises(UserError, match="empty dataset"):
        build_training_set([], "single")
    with pytest.raises(UserError, match="nothing to train on"):
        build_training_set([_rec(0, ["", " "])], "single")
    rows, info = build_training_set(RECORDS + [_rec(9, ["", ""])], "single")
    assert info["n_skipped"] == 1 and len(rows) == 3
    with pytest.raises(UserError, match="no 'samples'"):
        build_training_set([{"id": "a", "question": "b"}], "single")
    assert set(METHODS) == {"single", "multi-response", "averaging", "variance-weighting", "inverse-variance-loss"}


def test_formats_are_trl_prompt_completion():
    conv, _ = build_training_set(RECORDS, "single", seed=0)
    std, _ = build_training_set(RECORDS, "single", seed=0, format="standard")
    assert conv[0]["prompt"] == [{"role": "user", "content": RECORDS[0]["question"]}]
    assert conv[0]["completion"][0]["role"] == "assistant"
    assert std[0]["prompt"] == f"Question: {RECORDS[0]['question']}\nAnswer:"
    assert std[0]["completion"] == " " + conv[0]["completion"][0]["content"]
    with pytest.raises(UserError, match="format: expected one of conversational, standard; got 'chatml'"):
        build_training_set(RECORDS, "single", format="chatml")


@pytest.mark.parametrize("bad, msg", [
    ({"samples": [None, "x"]}, "'samples' must be a list of strings"),
    ({"dispersion": float("nan")}, "'dispersion' must be a finite number >= 0"),
    ({"dispersion": -1.0}, "'dispersion' must be a finite number >= 0"),
    ({"question": None}, "'question' must be a string"),
])
def test_bad_sample_records_are_errors(bad, msg):
    recs = [dict(RECORDS[0], **bad)]
    with pytest.raises(UserError, match=msg):
        build_training_set(recs, "single")
