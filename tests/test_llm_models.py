"""Tests of uqkd.llm.models: derived students, weight noise, saving/loading, errors (tiny models, offline)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from uqkd.config import UserError  # noqa: E402
from uqkd.llm.models import derive_student, load_causal_lm, perturb_weights, save_lm, tiny_causal_lm  # noqa: E402


@pytest.fixture(scope="module")
def teacher():
    return tiny_causal_lm(seed=0, n_layers=6)


def test_tiny_model_is_deterministic():
    a, b = tiny_causal_lm(seed=3), tiny_causal_lm(seed=3)
    c = tiny_causal_lm(seed=4)
    pa = dict(a.model.named_parameters())
    assert all(torch.equal(p, pa[n]) for n, p in b.model.named_parameters())
    assert not all(torch.equal(p, pa[n]) for n, p in c.model.named_parameters())


@pytest.mark.parametrize("every, kept", [(1, [0, 1, 2, 3, 4, 5]), (2, [1, 3, 5]), (3, [2, 5]), (4, [3]), (10, [5])])
def test_derive_student_keeps_every_mth_layer(teacher, every, kept):
    s = derive_student(teacher, every)
    assert s.n_layers == len(kept)
    assert s.tokenizer is teacher.tokenizer
    tl, sl = teacher.model.model.layers, s.model.model.layers
    for new, old in enumerate(kept):
        assert torch.equal(sl[new].mlp.down_proj.weight, tl[old].mlp.down_proj.weight)
    assert torch.equal(s.model.model.embed_tokens.weight, teacher.model.model.embed_tokens.weight)
    if every > 1:
        assert s.n_params < teacher.n_params
    ids = teacher.tokenizer("hello", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = s.model(input_ids=ids).logits
    assert out.shape[-1] == teacher.model.config.vocab_size


def test_derive_every_one_reproduces_teacher(teacher):
    s = derive_student(teacher, 1)
    ids = teacher.tokenizer("abc", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(s.model(input_ids=ids).logits, teacher.model(input_ids=ids).logits, atol=1e-5)


def test_perturb_weights_relative_and_seeded(teacher):
    a = perturb_weights(teacher, 0.1, 0, "student", 1)
    b = perturb_weights(teacher, 0.1, 0, "student", 1)
    c = perturb_weights(teacher, 0.1, 0, "student", 2)
    z = perturb_weights(teacher, 0.0, 0, "student", 1)
    w0 = teacher.model.model.layers[0].mlp.up_proj.weight
    wa = a.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(wa, b.model.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(wa, c.model.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(z.model.model.layers[0].mlp.up_proj.weight, w0)
    rel = ((wa - w0) / w0.abs().clamp_min(1e-12)).std().item()
    assert 0.08 < rel < 0.12  # eps ~ N(0,1) * p
    assert not torch.equal(teacher.model.model.layers[0].mlp.up_proj.weight, wa)  # teacher untouched


def test_save_and_load_roundtrip(teacher, tmp_path):
    s = derive_student(teacher, 2)
    save_lm(s, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    back = load_causal_lm(str(tmp_path / "m"))
    assert back.chat == s.chat and back.n_layers == 3
    ids = teacher.tokenizer("xyz", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(back.model(input_ids=ids).logits, s.model(input_ids=ids).logits, atol=1e-5)


def test_missing_model_names_it_and_says_how(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(UserError, match="such-model.*no such file or directory.*smollm2"):
        load_causal_lm(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty.*no \*\.safetensors"):
        load_causal_lm(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="expected a model name or path"):
        load_causal_lm("  ")


def test_offline_hub_id_is_a_clear_error():
    with pytest.raises(UserError, match="'nobody-uqkd/no-such-model-xyz': not in the local Hugging Face cache"):
        load_causal_lm("nobody-uqkd/no-such-model-xyz")
