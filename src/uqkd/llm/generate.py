r"""Batched, seeded k-sample generation with an on-disk cache.

All ``n_prompts * k`` sequences are generated in large batches (one forward pass per new token
for the whole batch) rather than one sample per prompt per pass. Each sequence has its own
random stream: decoding is greedy over Gumbel-perturbed, warped logits,

.. math:: y_t = \arg\max_v \big(\tilde\ell_{t,v} + g_{t,v}\big),\qquad g_{t,v} = -\log(-\log u_{t,v}),

which is an exact draw from :math:`\mathrm{softmax}(\tilde\ell_t)` (the Gumbel-max trick), where
:math:`\tilde\ell_t` are the logits after repetition penalty, temperature, top-k and top-p. The
uniforms :math:`u` come from a generator named by (seed, prompt, sample index), so sample ``j``
of a prompt does not depend on the other prompts in the batch, on the batch size or on ``k``
(up to float rounding differences caused by padding). Global torch random state is untouched.

The cache stores one entry per (model name, prompt text, decoding parameters, seed, sample
index): a rerun, a larger ``k`` or a second method reuses every sample already drawn.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._seeding import seed_sequence
from .._validation import check_int
from ..config import UserError
from .models import LoadedLM

__all__ = ["DecodingConfig", "GenerationResult", "SampleCache", "format_prompt", "generate_samples", "clean_answer"]


@dataclass(frozen=True)
class DecodingConfig:
    """Decoding parameters (PAPER.md §7 LLM: temperature 1, top-k 50, repetition penalty 1.2).

    Raises ``UserError`` for out-of-range values, naming the parameter.
    """

    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.2
    max_new_tokens: int = 32
    do_sample: bool = True

    def __post_init__(self) -> None:
        if self.do_sample and not (self.temperature > 0):
            raise UserError(
                f"temperature: expected a value > 0 when sampling, got {self.temperature}; "
                "use --greedy (do_sample=False) for deterministic decoding"
            )
        if self.top_k < 0:
            raise UserError(f"top_k: expected an integer >= 0 (0 disables), got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise UserError(f"top_p: expected a number in (0, 1], got {self.top_p}")
        if not (self.repetition_penalty > 0):
            raise UserError(f"repetition_penalty: expected a number > 0, got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens: expected an integer >= 1, got {self.max_new_tokens}")


@dataclass
class GenerationResult:
    """k answers per prompt and generation statistics.

    Attributes
    ----------
    texts : list of list of str, shape (n_prompts, k)
    n_tokens : array of int, shape (n_prompts, k)
        New tokens per answer (as generated, before cleaning).
    n_empty : int
        Answers empty after cleaning (degenerate; kept as "" and counted).
    cache_hits, cache_misses : int
    seconds : float
        Wall time spent generating (excluding cache hits).
    generated_tokens : int
        Tokens generated in this call (cache misses only).
    """

    texts: list[list[str]]
    n_tokens: np.ndarray
    n_empty: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0
    generated_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class SampleCache:
    """On-disk cache of generated answers, one small JSON file per key (written atomically).

    Parameters
    ----------
    root : path
        Directory; created on first write.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: str, prompt: str, decoding: DecodingConfig, seed: int, index: int) -> str:
        blob = json.dumps([model, prompt, asdict(decoding), int(seed), int(index)], sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self._path(key)
        try:
            val = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            self.misses += 1
            return None
        self.hits += 1
        return val

    def put(self, key: str, value: dict[str, Any]) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh)
        os.replace(tmp, p)

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


def format_prompt(lm: LoadedLM, question: str) -> str:
    """The chat template for instruct models, ``Question: {q}\\nAnswer:`` for base models."""
    if lm.chat:
        return lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return f"Question: {question}\nAnswer:"


def clean_answer(text: str) -> str:
    """Strip whitespace and cut a base model's continuation at the next ``Question:``."""
    t = text.split("\nQuestion:", 1)[0]
    return t.strip()


def _row_seed(seed: int, prompt: str, index: int) -> int:
    st = seed_sequence(seed, "generate", prompt, int(index)).generate_state(2, dtype=np.uint32)
    return int(st[0]) << 32 | int(st[1])


class _GumbelSampler:
    """Logits processor: repetition penalty, temperature, top-k, top-p, then per-row Gumbel noise."""

    def __init__(self, dec: DecodingConfig, row_seeds: Sequence[int] | None, prompt_start: Sequence[int]) -> None:
        import torch

        self.dec = dec
        self.prompt_start = list(prompt_start)
        self.gens = None
        if row_seeds is not None:
            self.gens = [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in row_seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float().clone()  # (B, V)
        d = self.dec
        if d.repetition_penalty != 1.0:
            for b in range(scores.shape[0]):
                ids = torch.unique(input_ids[b, self.prompt_start[b]:])
                s = scores[b, ids]
                scores[b, ids] = torch.where(s < 0, s * d.repetition_penalty, s / d.repetition_penalty)
        if self.gens is None:
            return scores
        scores = scores / d.temperature
        if d.top_k and d.top_k < scores.shape[-1]:
            kth = torch.topk(scores, d.top_k, dim=-1).values[:, -1:]  # (B, 1)
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if d.top_p < 1.0:
            sorted_s, idx = torch.sort(scores, descending=True, dim=-1)
            cum = sorted_s.softmax(-1).cumsum(-1)
            drop = cum - sorted_s.softmax(-1) > d.top_p  # keep the smallest set reaching top_p
            scores = scores.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, dtype=torch.float64) for g in self.gens])
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))  # (B, V)
        return scores + gumbel.to(scores.dtype)


def _generate_batch(lm: LoadedLM, prompts: Sequence[str], seeds: Sequence[int] | None, dec: DecodingConfig) -> tuple[list[str], list[int]]:
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    tok = lm.tokenizer
    enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=not lm.chat)
    mask = enc["attention_mask"]  # (B, L)
    start = (mask.shape[1] - mask.sum(dim=1)).tolist()
    proc = _GumbelSampler(dec, seeds, start)
    eos = tok.eos_token_id
    gcfg = GenerationConfig(
        do_sample=False,
        max_new_tokens=dec.max_new_tokens,
        pad_token_id=tok.pad_token_id,
        eos_token_id=eos,
        bos_token_id=getattr(lm.model.config, "bos_token_id", None),
    )
    with torch.no_grad():
        out = lm.model.generate(
            input_ids=enc["input_ids"],
            attention_mask=mask,
            generation_config=gcfg,
            logits_processor=LogitsProcessorList([proc]),
        )  # (B, L + T)
    new = out[:, enc["input_ids"].shape[1]:]  # (B, T)
    texts, counts = [], []
    for row in new.tolist():
        n = len(row)
        if eos is not None and eos in row:
            n = row.index(eos) + 1
        counts.append(n)
        texts.append(tok.decode(row[:n], skip_special_tokens=True))
    return texts, counts


def generate_samples(
    lm: LoadedLM,
    questions: Sequence[str],
    k: int,
    decoding: DecodingConfig | None = None,
    *,
    seed: int = 0,
    cache: SampleCache | None = None,
    batch_size: int = 64,
) -> GenerationResult:
    """Generate ``k`` answers for each question, batched, seeded and cached.

    Parameters
    ----------
    lm : LoadedLM
    questions : sequence of str, length n_prompts >= 1
    k : int >= 1
        Samples per question (with greedy decoding all k are the same answer).
    decoding : DecodingConfig
    seed : int
        Root seed; sample j of a prompt uses the stream named by (seed, prompt, j).
    cache : SampleCache, optional
    batch_size : int
        Sequences per forward pass.

    Returns
    -------
    GenerationResult with ``texts`` of shape (n_prompts, k).

    Examples
    --------
    >>> from uqkd.llm.models import tiny_causal_lm
    >>> res = generate_samples(tiny_causal_lm(), ["Capital of France?"], k=2,
    ...                        decoding=DecodingConfig(max_new_tokens=4))
    >>> len(res.texts[0])
    2
    """
    try:
        k = check_int(k, "k", min_value=1)
        batch_size = check_int(batch_size, "batch_size", min_value=1)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    dec = decoding or DecodingConfig()
    if len(questions) == 0:
        raise UserError("questions: empty dataset (no questions to generate answers for)")
    prompts = [format_prompt(lm, q) for q in questions]
    n = len(prompts)
    texts: list[list[str]] = [[""] * k for _ in range(n)]
    ntok = np.zeros((n, k), dtype=np.int64)
    h0, m0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    todo: list[tuple[int, int]] = []
    keys: dict[tuple[int, int], str] = {}
    k_eff = k if dec.do_sample else 1
    for i, p in enumerate(prompts):
        for j in range(k_eff):
            if cache is not None:
                key = SampleCache.key(lm.name, p, dec, seed, j)
                keys[(i, j)] = key
                hit = cache.get(key)
                if hit is not None:
                    texts[i][j], ntok[i, j] = hit["text"], hit["n_tokens"]
                    continue
            todo.append((i, j))
    t0 = time.perf_counter()
    generated = 0
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        seeds = [_row_seed(seed, prompts[i], j) for i, j in chunk] if dec.do_sample else None
        outs, counts = _generate_batch(lm, [prompts[i] for i, _ in chunk], seeds, dec)
        for (i, j), t, c in zip(chunk, outs, counts):
            texts[i][j], ntok[i, j] = clean_answer(t), c
            generated += c
            if cache is not None:
                cache.put(keys[(i, j)], {"text": texts[i][j], "n_tokens": int(c)})
    secs = time.perf_counter() - t0
    if not dec.do_sample:
        for i in range(n):
            texts[i] = [texts[i][0]] * k
            ntok[i, :] = ntok[i, 0]
    n_empty = sum(1 for row in texts for t in row if not t)
    hits = (cache.hits - h0) if cache is not None else 0
    misses = (cache.misses - m0) if cache is not None else len(todo)
    return GenerationResult(texts, ntok, n_empty, hits, misses, secs, generated)
