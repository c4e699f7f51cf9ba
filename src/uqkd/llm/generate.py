r"""Batched, seeded k-sample generation with an on-disk cache.

All ``n_prompts * k`` sequences are generated in large batches (one forward pass per new token
for the whole batch) rather than one sample per prompt per pass. Each sequence has its own
random stream: decoding is greedy over Gumbel-perturbed, warped logits,

.. math:: y_t = \arg\max_v \big(\tilde\ell_{t,v} + g_{t,v}\big),\qquad g_{t,v} = -\log(-\log u_{t,v}),

which is an exact draw from :math:`\mathrm{softmax}(\tilde\ell_t)` (the Gumbel-max trick), where
:math:`\tilde\ell_t` are the logits after transformers' own vectorised processors
(``RepetitionPenaltyLogitsProcessor`` with the left padding excluded, ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``). The uniforms :math:`u_{t,v}` come from a counter-based
hash of (row seed, step t, token v) computed on the model's device (:func:`counter_uniforms`), and
the row seed is named by (seed, question, sample index), so sample ``j`` of a question does not
depend on the other questions in the batch, on the batch size or on ``k`` (up to float rounding
differences caused by padding). No per-row Python loop per token; global torch random state is
untouched. (Before this, uqkd drew the uniforms from one ``torch.Generator`` per row on the CPU;
the distribution is the same, the bytes are not.)

Generation stops at every end-of-turn id the model declares (:func:`stop_token_ids`). Prompts
longer than the model's context are an error naming the question, unless ``truncate=True``.

The cache stores one entry per (backend, model id and revision, device type and dtype, question, decoding parameters, seed, sample
index): a rerun, a larger ``k`` or a second method reuses every sample already drawn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
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

_LOG = logging.getLogger(__name__)

__all__ = ["DecodingConfig", "GenerationResult", "SampleCache", "format_prompt", "generate_samples", "clean_answer",
           "build_logits_processors", "counter_uniforms", "stop_token_ids", "encode_prompt", "model_identity"]


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
        if self.do_sample and not math.isfinite(self.temperature):
            raise UserError(f"temperature: expected a finite value > 0 when sampling, got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"top_k: expected an integer >= 0 (0 disables), got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise UserError(f"top_p: expected a number in (0, 1], got {self.top_p}")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise UserError(f"repetition_penalty: expected a finite number > 0, got {self.repetition_penalty}")
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
        """The cached value, or None (a miss). A damaged entry (not UTF-8, not JSON, not an object) is a
        miss with one warning naming the file, so the answer is generated again and the entry rewritten."""
        p = self._path(key)
        try:
            raw = p.read_bytes()
        except OSError:
            self.misses += 1
            return None
        try:
            val = json.loads(raw.decode("utf-8"))
            why = "" if isinstance(val, dict) else f"expected a JSON object, got {type(val).__name__}"
        except UnicodeDecodeError as exc:
            why = f"not UTF-8 (byte {exc.start})"
        except ValueError:
            why = "not valid JSON (truncated?)"
        if why:
            _LOG.warning("sample cache: %s: %s; regenerating it", p, why)
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


_M32 = 0xFFFFFFFF


def _mul32(x: Any, c: int) -> Any:
    """(x * c) mod 2**32 for int64 tensors with 0 <= x < 2**32, without int64 overflow."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _mix32(x: Any) -> Any:
    """A 32-bit avalanche hash (Wellons' lowbias32) on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniforms(row_seeds: Any, step: int, vocab_size: int) -> Any:
    r"""Uniforms :math:`u_{b,v} \in (0, 1)` that are a pure function of (row seed, step, token id).

    A counter-based generator: no state, so sequence ``b`` gets the same noise at step ``t``
    whatever else is in the batch, on any device. ``row_seeds`` is an int64 tensor (B,) on the
    target device holding 62-bit seeds; returns float64 (B, V).
    """
    import torch

    dev = row_seeds.device
    s0 = row_seeds & _M32  # (B,)
    s1 = (row_seeds >> 32) & _M32  # (B,)
    h = _mix32(s0 ^ _mix32(s1 ^ _mix32(torch.full_like(s0, int(step) & _M32) ^ 0x9E3779B9)))  # (B,)
    v = torch.arange(vocab_size, device=dev, dtype=torch.int64)  # (V,)
    x = _mix32(h[:, None] ^ _mix32(v[None, :] ^ 0x85EBCA6B))  # (B, V)
    x2 = _mix32(x ^ 0xC2B2AE35)  # a second word: 53 random bits in all
    bits = (x << 21) | (x2 >> 11)  # (B, V) < 2**53
    return (bits.to(torch.float64) + 0.5) * (2.0 ** -53)


class _SeededGumbel:
    """Logits processor adding per-sequence Gumbel noise: greedy decoding then samples softmax(scores)."""

    def __init__(self, row_seeds: Any, prompt_len: int) -> None:
        self.row_seeds = row_seeds  # (B,) int64 on the model's device
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.prompt_len
        u = counter_uniforms(self.row_seeds, step, scores.shape[-1])  # (B, V)
        gumbel = -torch.log(-torch.log(u))  # (B, V)
        return scores.float() + gumbel.to(torch.float32)


def build_logits_processors(dec: DecodingConfig, pad_counts: Any, row_seeds: Any | None, prompt_len: int) -> Any:
    """transformers' own processors (repetition penalty, temperature, top-k, top-p) plus seeded Gumbel noise.

    ``pad_counts`` (B,) are the left-padding lengths: padding is excluded from the repetition
    penalty (``prompt_ignore_length``), so a sequence's penalty does not depend on its batch.
    With ``row_seeds`` None only the repetition penalty applies (greedy decoding).
    """
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs: list[Any] = []
    if dec.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(dec.repetition_penalty, prompt_ignore_length=pad_counts))
    if row_seeds is not None:
        if dec.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(dec.temperature))
        if dec.top_k:
            procs.append(TopKLogitsWarper(dec.top_k))
        if dec.top_p < 1.0:
            procs.append(TopPLogitsWarper(dec.top_p))
        procs.append(_SeededGumbel(row_seeds, prompt_len))
    return LogitsProcessorList(procs)


def stop_token_ids(lm: LoadedLM) -> list[int]:
    """Every id that ends an answer: the tokenizer's EOS, the model's ``generation_config.eos_token_id``
    (often a list: Gemma ``<end_of_turn>``, Phi-3 ``<|end|>``) and the chat template's end-of-turn token."""
    ids: list[int] = []

    def add(v: Any) -> None:
        if v is None:
            return
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if x is not None and int(x) not in ids:
                ids.append(int(x))

    add(lm.tokenizer.eos_token_id)
    add(getattr(lm.model.generation_config, "eos_token_id", None))
    add(getattr(lm.model.config, "eos_token_id", None))
    if lm.chat:
        add(end_of_turn_id(lm.tokenizer))
    return ids


def end_of_turn_id(tok: Any) -> int | None:
    """The special token the chat template puts right after an assistant message, if any."""
    try:
        full = tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                       tokenize=True, return_dict=True)["input_ids"]
        gen = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True, return_dict=True,
                                      add_generation_prompt=True)["input_ids"]
    except Exception:  # noqa: BLE001 - templates that cannot render a toy conversation have no usable end-of-turn
        return None
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    for t in full[len(gen):]:
        if t in special:
            return int(t)
    return None


def encode_prompt(lm: LoadedLM, question: str) -> list[int]:
    """Prompt token ids: the chat template with the generation prompt, or ``Question: {q}\nAnswer:``.

    These are the ids TRL's SFTTrainer builds for the prompt of the same row (conversational or
    standard format), so generation sees exactly the context the student was trained on.
    """
    if lm.chat:
        return list(lm.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=True,
                                                     return_dict=True, add_generation_prompt=True)["input_ids"])
    return list(lm.tokenizer(f"Question: {question}\nAnswer:")["input_ids"])


def context_length(lm: LoadedLM) -> int | None:
    n = getattr(lm.model.config, "max_position_embeddings", None)
    return int(n) if n else None


def _generate_ids(lm: LoadedLM, prompt_ids: Sequence[Sequence[int]], seeds: Sequence[int] | None,
                  dec: DecodingConfig) -> tuple[list[str], list[int]]:
    import torch
    from transformers import GenerationConfig

    tok = lm.tokenizer
    dev = lm.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    L = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), L), pad, dtype=torch.long)  # (B, L), left padded
    mask = torch.zeros((len(prompt_ids), L), dtype=torch.long)  # (B, L)
    for b, p in enumerate(prompt_ids):
        ids[b, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[b, L - len(p):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pad_counts = (L - mask.sum(dim=1)).to(dev)  # (B,)
    row_seeds = None
    if seeds is not None:
        row_seeds = torch.tensor([int(s) & 0x3FFF_FFFF_FFFF_FFFF for s in seeds], dtype=torch.int64, device=dev)
    procs = build_logits_processors(dec, pad_counts, row_seeds, L)
    stops = stop_token_ids(lm)
    gcfg = GenerationConfig(
        do_sample=False,
        max_new_tokens=dec.max_new_tokens,
        pad_token_id=pad,
        eos_token_id=stops or None,
        bos_token_id=getattr(lm.model.config, "bos_token_id", None),
    )
    with torch.no_grad():
        out = lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=gcfg,
                                logits_processor=procs)  # (B, L + T)
    new = out[:, L:].tolist()  # (B, T)
    stop_set = set(stops)
    texts, counts = [], []
    for row in new:
        n = len(row)
        for t_i, t in enumerate(row):
            if t in stop_set:
                n = t_i + 1
                break
        counts.append(n)
        texts.append(tok.decode(row[:n], skip_special_tokens=True))
    return texts, counts


def _generate_batch(lm: LoadedLM, prompts: Sequence[str], seeds: Sequence[int] | None,
                    dec: DecodingConfig) -> tuple[list[str], list[int]]:
    """Generate from prompt *texts* (already formatted); kept for callers that format themselves."""
    enc = [lm.tokenizer(p, add_special_tokens=not lm.chat)["input_ids"] for p in prompts]
    return _generate_ids(lm, enc, seeds, dec)


def model_identity(teacher: Any) -> str:
    """The cache identity of a teacher: backend kind, model id and revision, and (in-process) device type and dtype."""
    if isinstance(teacher, LoadedLM):
        return f"hf|{teacher.name}|{teacher.revision}|{teacher.device.type}|{str(teacher.dtype).replace('torch.', '')}"
    return f"{teacher.kind}|{teacher.name}"


def generate_samples(
    lm: Any,
    questions: Sequence[str],
    k: int,
    decoding: DecodingConfig | None = None,
    *,
    seed: int = 0,
    cache: SampleCache | None = None,
    batch_size: int = 64,
    ids: Sequence[str] | None = None,
    truncate: bool = False,
    progress: bool = False,
) -> GenerationResult:
    """Generate ``k`` answers for each question, batched, seeded and cached.

    Parameters
    ----------
    lm : LoadedLM or TeacherBackend
        An in-process model, or a backend from :func:`uqkd.llm.backends.load_teacher`.
    questions : sequence of str, length n_prompts >= 1
    k : int >= 1
        Samples per question (with greedy decoding all k are the same answer).
    decoding : DecodingConfig
    seed : int
        Root seed; sample j of a question uses the stream named by (seed, question, j).
    cache : SampleCache, optional
    batch_size : int
        Sequences per forward pass (in-process) or per request batch (servers).
    ids : sequence of str, optional
        Question ids, used in error messages.
    truncate : bool
        In-process models: a prompt longer than the model's context is cut from the left
        (keeping the generation prompt) instead of raising ``UserError``.
    progress : bool
        Show a tqdm bar (sequences, tokens/s).

    Returns
    -------
    GenerationResult with ``texts`` of shape (n_prompts, k). ``extra["identical_questions"]``
    counts questions whose k sampled answers are all the same (zero dispersion), and a warning
    is logged when there are any: a teacher that ignores its sampling settings is caught here.

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
    for i, q in enumerate(questions):
        if not isinstance(q, str):
            raise UserError(f"questions: item {i} is {type(q).__name__}, expected a string")
    qids = [str(x) for x in ids] if ids is not None else [f"#{i}" for i in range(len(questions))]
    in_process = isinstance(lm, LoadedLM)
    n = len(questions)
    prompt_ids: list[list[int]] | None = None
    if in_process:
        prompt_ids = [encode_prompt(lm, q) for q in questions]
        ctx = context_length(lm)
        if ctx is not None:
            room = ctx - dec.max_new_tokens
            for i, p in enumerate(prompt_ids):
                if len(p) > room:
                    if not truncate or room < 1:
                        raise UserError(
                            f"question {qids[i]}: the prompt has {len(p)} tokens, but {lm.name} fits "
                            f"{ctx} positions ({room} with max_new_tokens={dec.max_new_tokens}); shorten it or "
                            "pass --truncate")
                    prompt_ids[i] = p[-room:]
    ident = model_identity(lm)
    texts: list[list[str]] = [[""] * k for _ in range(n)]
    ntok = np.zeros((n, k), dtype=np.int64)
    h0, m0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    todo: list[tuple[int, int]] = []
    keys: dict[tuple[int, int], str] = {}
    k_eff = k if dec.do_sample else 1
    for i, q in enumerate(questions):
        for j in range(k_eff):
            if cache is not None:
                key = SampleCache.key(ident, q, dec, seed, j)
                keys[(i, j)] = key
                hit = cache.get(key)
                if hit is not None:
                    if isinstance(hit.get("text"), str) and type(hit.get("n_tokens")) is int and hit["n_tokens"] >= 0:
                        texts[i][j], ntok[i, j] = hit["text"], hit["n_tokens"]
                        continue
                    _LOG.warning("sample cache: %s: expected {'text': str, 'n_tokens': int}, got keys %s; "
                                 "regenerating it", cache._path(key), sorted(hit)[:5])
                    cache.hits, cache.misses = cache.hits - 1, cache.misses + 1
            todo.append((i, j))
    t0 = time.perf_counter()
    generated = 0
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"generate {getattr(lm, 'name', '')}"[:40], unit="seq", leave=False)
    for b in range(0, len(todo), batch_size):
        chunk = todo[b:b + batch_size]
        seeds = [_row_seed(seed, questions[i], j) for i, j in chunk] if dec.do_sample else None
        if in_process:
            outs, counts = _generate_ids(lm, [prompt_ids[i] for i, _ in chunk], seeds, dec)
        else:
            outs, counts = lm.generate([questions[i] for i, _ in chunk], seeds, dec)
        for (i, j), t, c in zip(chunk, outs, counts):
            texts[i][j], ntok[i, j] = clean_answer(t), c
            generated += int(c)
            if cache is not None:
                cache.put(keys[(i, j)], {"text": texts[i][j], "n_tokens": int(c)})
        if bar is not None:
            bar.update(len(chunk))
            el = time.perf_counter() - t0
            bar.set_postfix(tok_s=f"{generated / el:.1f}" if el > 0 else "-")
    if bar is not None:
        bar.close()
    secs = time.perf_counter() - t0
    if not dec.do_sample:
        for i in range(n):
            texts[i] = [texts[i][0]] * k
            ntok[i, :] = ntok[i, 0]
    n_empty = sum(1 for row in texts for t in row if not t)
    hits = (cache.hits - h0) if cache is not None else 0
    misses = (cache.misses - m0) if cache is not None else len(todo)
    identical = sum(1 for row in texts if len(set(row)) == 1) if (dec.do_sample and k >= 2) else 0
    if identical:
        level = logging.WARNING
        what = "ALL" if identical == n else f"{identical} of {n}"
        _LOG.log(level, "%s questions got %d identical sampled answers from %s (zero dispersion): the teacher may "
                 "ignore its sampling settings (temperature/seed)", what, k, getattr(lm, "name", "?"))
    return GenerationResult(texts, ntok, n_empty, hits, misses, secs, generated,
                            extra={"identical_questions": identical})
