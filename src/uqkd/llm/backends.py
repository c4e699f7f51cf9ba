"""Teacher backends: one small interface over in-process transformers, OpenAI-compatible servers and vLLM.

A backend turns *questions* (raw user text) into answers::

    texts, n_tokens = backend.generate(questions, row_seeds, decoding)

``row_seeds[i]`` names the random stream of sequence ``i`` (``None`` for greedy decoding), so
sample ``j`` of a question is the same whatever else is in the batch. Every backend has a
``name`` that identifies it in the sample cache: backend kind, model id and revision (or a
content hash of local weights), so samples from different backends or model versions never mix.

Specs understood by :func:`load_teacher`:

- ``openai:http://HOST:PORT/v1#MODEL``: any OpenAI-compatible chat-completions server
  (:mod:`uqkd.llm.backend_openai`); the API key comes from ``$UQKD_OPENAI_API_KEY`` or
  ``$OPENAI_API_KEY`` (servers on your own machine usually need none);
- ``vllm:MODEL``: in-process vLLM (:mod:`uqkd.llm.backend_vllm`, extra ``uqkd[vllm]``, CUDA);
- anything else: an in-process Hugging Face model (:func:`uqkd.llm.models.load_causal_lm`).

Reproducibility: the ``hf`` backend gives the same bytes for the same seed on the same device
and dtype; ``vllm`` seeds every request; an OpenAI-compatible server receives the per-sample
seed, but whether it honours it is up to the server (best effort).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..config import UserError

__all__ = ["TeacherBackend", "HFBackend", "load_teacher", "backend_kind"]


@runtime_checkable
class TeacherBackend(Protocol):
    """What :func:`uqkd.llm.generate.generate_samples` needs from a teacher."""

    name: str
    kind: str

    def generate(self, questions: Sequence[str], row_seeds: Sequence[int] | None, decoding: Any) -> tuple[list[str], list[int]]:
        """Answers (raw, before cleaning) and new-token counts, one per question."""
        ...


class HFBackend:
    """In-process transformers model (:class:`uqkd.llm.models.LoadedLM`)."""

    kind = "hf"

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.name = lm.name

    def generate(self, questions: Sequence[str], row_seeds: Sequence[int] | None, decoding: Any) -> tuple[list[str], list[int]]:
        from .generate import _generate_ids, encode_prompt

        return _generate_ids(self.lm, [encode_prompt(self.lm, q) for q in questions], row_seeds, decoding)


def backend_kind(spec: str) -> str:
    """``"openai"``, ``"vllm"`` or ``"hf"`` for a teacher spec."""
    if spec.startswith("openai:"):
        return "openai"
    if spec.startswith("vllm:"):
        return "vllm"
    return "hf"


def load_teacher(spec: str, *, cache_dir: str | Path | None = None, device: str = "auto", dtype: str = "auto",
                 **kwargs: Any) -> Any:
    """A teacher for ``spec``: a :class:`~uqkd.llm.models.LoadedLM` (``hf``) or a backend object.

    ``generate_samples`` accepts either. Keyword arguments go to the backend
    (e.g. ``concurrency`` and ``timeout`` for ``openai``).
    """
    kind = backend_kind(spec)
    if kind == "openai":
        from .backend_openai import OpenAIBackend

        return OpenAIBackend.from_spec(spec, **kwargs)
    if kind == "vllm":
        from .backend_vllm import VLLMBackend

        return VLLMBackend.from_spec(spec, dtype=dtype, **kwargs)
    if kwargs:
        raise UserError(f"teacher {spec!r}: options {sorted(kwargs)} apply only to server backends")
    from .models import load_causal_lm

    return load_causal_lm(spec, cache_dir=cache_dir, device=device, dtype=dtype)
