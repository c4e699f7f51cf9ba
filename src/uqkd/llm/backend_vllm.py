"""Teacher backend for in-process vLLM (extra ``uqkd[vllm]``; needs a CUDA GPU in practice).

Spec: ``vllm:MODEL``, where ``MODEL`` is a local model directory, a Hugging Face hub id (resolved
by vLLM; offline with ``HF_HUB_OFFLINE=1``), or ``smollm2`` (the default teacher, de-quantised to
safetensors by :func:`uqkd.llm.models.load_causal_lm` once and served from the uqkd cache).

Every sequence is one request with its own ``SamplingParams(seed=...)``: ``temperature``,
``top_k`` (``-1`` for 0, "disabled"), ``top_p``, ``repetition_penalty`` and ``max_tokens``
(= ``max_new_tokens``); the seed is the row seed reduced to 31 bits (``row_seed % (2**31 - 1)``),
so sample ``j`` of a question is the same whatever else is in the batch. Greedy decoding
(``row_seeds`` None or ``do_sample`` False) uses ``temperature = 0``. Prompts go through the
model's chat template (``LLM.chat``) when the tokenizer has one, else the paper's
``Question: {q}\\nAnswer:`` format (``LLM.generate``), as for in-process models.

Reproducibility: the same seed gives the same answer on the same GPU type, vLLM version and
dtype; batch composition can still change float rounding (vLLM does not promise bit-identical
batched results).

:attr:`VLLMBackend.name` is ``vllm:MODEL|rev=REV|dtype=DTYPE``, where ``REV`` is the hub commit
(from the local Hugging Face cache once vLLM has the files) or, for a local directory, a content
fingerprint (config.json bytes, and each weight file's name, size and first and last MiB).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import UserError

__all__ = ["VLLMBackend", "INSTALL_HINT", "dir_content_fingerprint"]

INSTALL_HINT = "pip install 'uqkd[vllm]' (needs CUDA)"
_SEED_MOD = 2 ** 31 - 1
_WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")


def _import_vllm() -> Any:
    if importlib.util.find_spec("vllm") is None:
        raise UserError(f"teacher vllm:...: the vllm package is not installed; {INSTALL_HINT}")
    try:
        return importlib.import_module("vllm")
    except Exception as exc:  # noqa: BLE001 - a broken install (CUDA libraries, torch mismatch) is the user's to fix
        raise UserError(f"teacher vllm:...: importing vllm failed ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}); {INSTALL_HINT}") from None


def dir_content_fingerprint(path: str | Path) -> str:
    """16 hex digits from a model directory's config.json bytes and weight files (name, size, first/last MiB).

    Copy-stable (no paths or times), cheap on multi-GB weights.
    """
    p = Path(path)
    h = hashlib.sha256()
    cfg = p / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    files = sorted({f for pat in _WEIGHTS for f in p.glob(pat)} if p.is_dir() else {p})
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}|{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def _hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit of ``repo`` at ``revision`` in the local Hugging Face cache (no network), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(repo, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id or cache: no revision known
        return None
    return Path(hit).parent.name if isinstance(hit, str) else None


def _resolve_model(model: str) -> tuple[str, bool]:
    """``(what vLLM loads, is_local)`` for the part of the spec after ``vllm:``."""
    if model == "smollm2":
        from .models import load_causal_lm

        for _ in range(2):  # the first load ever converts the GGUF into the cache; then it loads from there
            lm = load_causal_lm("smollm2")
            d = Path(lm.model.name_or_path)
            del lm
            if (d / "config.json").is_file() and any(d.glob("*.safetensors")):
                return str(d), True
        raise UserError(f"teacher vllm:smollm2: no safetensors folder for smollm2 (got {d})")
    p = Path(model).expanduser()
    if p.exists():
        return str(p.resolve()), True
    return model, False


class VLLMBackend:
    """An in-process :class:`vllm.LLM` as a teacher (see the module docstring).

    Parameters
    ----------
    model : str
        Local directory, hub id or ``smollm2``.
    dtype : str
        vLLM ``dtype`` (``auto``, ``float16``, ``bfloat16``, ``float32``).
    revision : str, optional
        Hub revision to load (and to name).
    prompt_format : {"auto", "chat", "plain"}
        ``auto``: the chat template when the tokenizer has one.
    seed : int
        vLLM's engine seed (each request has its own seed anyway).
    **llm_kwargs
        More :class:`vllm.LLM` arguments, e.g. ``gpu_memory_utilization``, ``max_model_len``,
        ``enforce_eager``.
    """

    kind = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", revision: str | None = None, prompt_format: str = "auto",
                 seed: int = 0, **llm_kwargs: Any) -> None:
        if prompt_format not in ("auto", "chat", "plain"):
            raise UserError(f"prompt_format: expected one of auto, chat, plain; got {prompt_format!r}")
        vllm = _import_vllm()
        self.vllm = vllm
        self.spec_model = model
        target, local = _resolve_model(model)
        self.model = target
        self.dtype = str(dtype)
        kw = {"model": target, "dtype": self.dtype, "seed": int(seed), "trust_remote_code": False, **llm_kwargs}
        if revision:
            kw["revision"] = revision
        try:
            self.llm = vllm.LLM(**kw)
        except TypeError as exc:
            raise UserError(f"teacher vllm:{model}: {exc}") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(f"teacher vllm:{model}: vLLM could not load it ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]})") from None
        tok = self.llm.get_tokenizer()
        has_template = getattr(tok, "chat_template", None) is not None
        if prompt_format == "chat" and not has_template:
            raise UserError("prompt_format: 'chat' needs a tokenizer with a chat template; use 'plain'")
        self.chat = has_template if prompt_format == "auto" else prompt_format == "chat"
        rev = dir_content_fingerprint(target) if local else (_hub_commit(target, revision) or revision or "unresolved")
        self.revision = rev
        self.name = f"vllm:{model}|rev={rev}|dtype={self.dtype}"

    @classmethod
    def from_spec(cls, spec: str, *, dtype: str = "auto", **kwargs: Any) -> VLLMBackend:
        """The backend for ``vllm:MODEL``; ``UserError`` for a bad spec or a missing vllm."""
        if not isinstance(spec, str) or not spec.startswith("vllm:") or not spec[len("vllm:"):].strip():
            raise UserError(f"teacher {spec!r}: expected vllm:MODEL (a local model directory, a hub id or smollm2)")
        return cls(spec[len("vllm:"):].strip(), dtype=dtype, **kwargs)

    def __repr__(self) -> str:
        return f"VLLMBackend({self.name!r})"

    def sampling_params(self, seed: int | None, dec: Any) -> Any:
        """The :class:`vllm.SamplingParams` of one sequence (``seed`` None: greedy)."""
        common = {"max_tokens": int(dec.max_new_tokens), "repetition_penalty": float(dec.repetition_penalty)}
        if seed is None:
            return self.vllm.SamplingParams(temperature=0.0, **common)
        return self.vllm.SamplingParams(
            temperature=float(dec.temperature), top_k=int(dec.top_k) if dec.top_k > 0 else -1,
            top_p=float(dec.top_p), seed=int(seed) % _SEED_MOD, **common)

    def generate(self, questions: Sequence[str], row_seeds: Sequence[int] | None, decoding: Any) -> tuple[list[str], list[int]]:
        """Raw answers and new-token counts, one vLLM request per question, batched by vLLM."""
        n = len(questions)
        if row_seeds is not None and len(row_seeds) != n:
            raise ValueError(f"row_seeds: {len(row_seeds)} seeds for {n} questions")
        if n == 0:
            return [], []
        greedy = row_seeds is None or not getattr(decoding, "do_sample", True)
        params = [self.sampling_params(None if greedy else row_seeds[i], decoding) for i in range(n)]  # type: ignore[index]
        if self.chat:
            convs = [[{"role": "user", "content": q}] for q in questions]
            outs = self.llm.chat(convs, sampling_params=params, use_tqdm=False, add_generation_prompt=True)
        else:
            outs = self.llm.generate([f"Question: {q}\nAnswer:" for q in questions], params, use_tqdm=False)
        texts = [o.outputs[0].text for o in outs]
        counts = [len(o.outputs[0].token_ids) for o in outs]
        return texts, counts
