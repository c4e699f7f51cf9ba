r"""Supervised fine-tuning of a causal LM student on (prompt, completion, weight) rows.

The loss is the token cross-entropy on the answer tokens only (prompt tokens are masked),
averaged per example, and weighted per example (PAPER.md §7 LLM; the weights of
``inverse-variance-loss``):

.. math:: L = \frac1B \sum_{i \in \text{batch}} w_i\, \frac{1}{|A_i|} \sum_{t \in A_i} -\log p_\theta(y_{i,t} \mid y_{i,<t}, x_i)

The data order of each epoch comes from a generator named by (seed, identity, epoch), so a
student's training is a pure function of its seed and identity. Optional LoRA (``peft``) is
merged back into the weights after training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .._seeding import make_rng
from ..config import UserError
from .generate import format_prompt
from .models import LoadedLM, clone_lm

__all__ = ["SFTConfig", "train_student", "tokenize_rows"]


@dataclass(frozen=True)
class SFTConfig:
    """Fine-tuning hyper-parameters (paper: lr 5e-5, batch 10, 3 epochs)."""

    lr: float = 5e-5
    epochs: int = 3
    batch_size: int = 10
    max_length: int = 192
    weight_decay: float = 0.0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        if not (self.lr > 0):
            raise UserError(f"lr: expected a number > 0, got {self.lr}")
        if self.epochs < 1:
            raise UserError(f"epochs: expected an integer >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch_size: expected an integer >= 1, got {self.batch_size}")
        if self.max_length < 8:
            raise UserError(f"max_length: expected an integer >= 8, got {self.max_length}")
        if self.lora and self.lora_r < 1:
            raise UserError(f"lora_r: expected an integer >= 1, got {self.lora_r}")


def tokenize_rows(lm: LoadedLM, rows: Sequence[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """Token ids and labels (-100 on prompt tokens) for each row; the completion ends with EOS."""
    tok = lm.tokenizer
    out = []
    for r in rows:
        p_ids = tok(format_prompt(lm, r["prompt"]), add_special_tokens=not lm.chat)["input_ids"]
        c_ids = tok(str(r["completion"]), add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            c_ids = c_ids + [tok.eos_token_id]
        ids = (p_ids + c_ids)[:max_length]
        labels = ([-100] * len(p_ids) + c_ids)[:max_length]
        if all(lab == -100 for lab in labels):
            continue  # prompt alone fills max_length: nothing to learn from
        out.append({"input_ids": ids, "labels": labels, "weight": float(r.get("weight", 1.0))})
    return out


def _collate(batch: list[dict[str, Any]], pad_id: int) -> tuple[Any, Any, Any, Any]:
    import torch

    L = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)  # (B, L)
    lab = torch.full((len(batch), L), -100, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(batch), L), dtype=torch.long)  # (B, L)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        lab[i, :n] = torch.tensor(b["labels"])
        mask[i, :n] = 1
    w = torch.tensor([b["weight"] for b in batch], dtype=torch.float32)  # (B,)
    return ids, lab, mask, w


def train_student(
    student: LoadedLM,
    rows: Sequence[dict[str, Any]],
    cfg: SFTConfig | None = None,
    *,
    seed: int = 0,
    identity: Sequence[Any] = (),
) -> tuple[LoadedLM, dict[str, Any]]:
    """Fine-tune a copy of ``student`` on ``rows``; the input model is left unchanged.

    Parameters
    ----------
    student : LoadedLM
    rows : sequence of dict with ``prompt``, ``completion`` and optional ``weight``
    cfg : SFTConfig
    seed : int
    identity : sequence
        Names the student (e.g. method, k, student index): data order and any torch randomness
        derive from (seed, identity).

    Returns
    -------
    trained : LoadedLM
    info : dict
        ``losses`` (mean weighted loss per epoch), ``n_examples``, ``n_steps``.
    """
    import torch

    cfg = cfg or SFTConfig()
    if not rows:
        raise UserError("train: empty dataset (no training rows)")
    data = tokenize_rows(student, rows, cfg.max_length)
    if not data:
        raise UserError("train: no row has answer tokens within max_length")
    ident = tuple(identity)
    tag = hashlib.sha256(json.dumps([asdict(cfg), seed, [str(i) for i in ident], len(rows)]).encode()).hexdigest()[:10]
    lm = clone_lm(student, f"{student.name}|sft:{tag}")
    model = lm.model
    if cfg.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise UserError("lora: needs the 'peft' package: pip install 'uqkd[llm]'") from None
        model = get_peft_model(
            model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM")
        )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    steps = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(make_rng(seed, *ident, "torch").integers(2**62)))
        model.train()
        for epoch in range(cfg.epochs):
            order = make_rng(seed, *ident, "data-order", epoch).permutation(len(data))
            tot, cnt = 0.0, 0
            for b in range(0, len(order), cfg.batch_size):
                batch = [data[i] for i in order[b:b + cfg.batch_size]]
                ids, lab, mask, w = _collate(batch, pad)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, L-1, V)
                tgt = lab[:, 1:]  # (B, L-1)
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="none"
                ).view(tgt.shape)  # (B, L-1)
                valid = (tgt != -100).float()
                per_ex = (nll * valid).sum(1) / valid.sum(1).clamp_min(1.0)  # (B,)
                loss = (w * per_ex).sum() / len(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                tot += float(loss.detach()) * len(batch)
                cnt += len(batch)
            losses.append(tot / max(cnt, 1))
        model.eval()
    if cfg.lora:
        model = model.merge_and_unload()
        lm.model = model
    return lm, {"losses": losses, "n_examples": len(data), "n_steps": steps}
