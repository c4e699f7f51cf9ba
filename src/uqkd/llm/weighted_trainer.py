r"""``WeightedSFTTrainer``: TRL's ``SFTTrainer`` that honours a per-example ``weight`` column.

A drop-in for :class:`trl.SFTTrainer`: TRL's own ``trl.SFTConfig``, any Hugging Face causal LM (an object or a
hub id / path, with or without ``peft_config``), TRL's tokenisation and collator. The train dataset must carry a
``weight`` column (a finite number >= 0 per example, e.g. from ``uqkd llm build-dataset``); a plain ``SFTTrainer``
drops that column and trains unweighted.

``loss_normalization`` picks the loss:

- ``"example"`` (default, uqkd's): :math:`\frac1B \sum_i w_i \bar\ell_i`, the weighted mean over the batch of
  each example's mean token loss on its completion (each example counts w_i whatever its answer length);
- ``"token"``: TRL's token mean with each token weighted by its example's weight,
  :math:`\sum_i w_i \sum_{t} \ell_{i,t} / N_\text{tokens}` (all weights 1: exactly TRL's loss, gradient
  accumulation included).

Packing and ``padding_free`` put several examples in one row, which per-example weights do not support: they are
refused.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from trl import SFTTrainer

__all__ = ["WeightedSFTTrainer", "WeightCollator", "LOSS_NORMALIZATIONS"]

LOSS_NORMALIZATIONS = ("example", "token")


class WeightCollator:
    """Wraps a collator (TRL's by default) and adds the examples' ``weight`` as a (B,) float tensor (1.0 where an
    example has none, e.g. an unweighted eval set)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        w = [float(e.get("weight", 1.0)) for e in examples]
        out = self.inner([{k: v for k, v in e.items() if k != "weight"} for e in examples])
        out["weight"] = torch.tensor(w, dtype=torch.float32)
        return out

    def __getattr__(self, name: str) -> Any:  # pad_token_id, padding_free, ... of the wrapped collator
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _check_weights(dataset: Any, what: str) -> None:
    cols = getattr(dataset, "column_names", None)
    if cols is None:  # an IterableDataset without known columns: checked per batch in compute_loss
        return
    if "weight" not in cols:
        raise ValueError(f"WeightedSFTTrainer: the {what} dataset has no 'weight' column (columns: {', '.join(cols)}); "
                         "add one (per-example loss weight), or train with trl.SFTTrainer for unweighted loss")
    for n, w in enumerate(dataset["weight"]):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"WeightedSFTTrainer: {what} dataset row {n + 1}: weight: expected a finite number "
                             f">= 0, got {w!r}")


class WeightedSFTTrainer(SFTTrainer):
    """:class:`trl.SFTTrainer` with per-example loss weights from the dataset's ``weight`` column.

    Parameters: those of :class:`trl.SFTTrainer`, plus ``loss_normalization`` (``"example"``, default, or
    ``"token"``; see the module docstring). Everything else is TRL's: conversational and standard
    prompt-completion datasets, completion-only loss, gradient accumulation, LR schedule, bf16, checkpoints,
    ``report_to``, PEFT.
    """

    def __init__(self, *args: Any, loss_normalization: str = "example", **kwargs: Any) -> None:
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(f"loss_normalization: expected one of {', '.join(LOSS_NORMALIZATIONS)}, "
                             f"got {loss_normalization!r}")
        cfg = kwargs.get("args", args[1] if len(args) > 1 else None)
        for flag in ("packing", "padding_free"):
            if getattr(cfg, flag, False):
                raise ValueError(f"WeightedSFTTrainer: {flag}=True puts several examples in one row; per-example "
                                 f"weights need {flag}=False")
        self.loss_normalization = loss_normalization
        super().__init__(*args, **kwargs)
        if self.train_dataset is not None:
            _check_weights(self.train_dataset, "train")
        self.data_collator = WeightCollator(self.data_collator)
        if loss_normalization == "example":
            # a per-example mean is not a token sum: the Trainer divides by the accumulation steps
            self.model_accepts_loss_kwargs = False
            self.loss_is_scaled_for_ga = False

    def _set_signature_columns_if_needed(self) -> None:
        # keep `weight` through `remove_unused_columns` (TRL keeps only the model's inputs)
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and "weight" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "weight"]

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        w = inputs.pop("weight", None)
        labels = inputs.pop("labels")
        fwd = {k: v for k, v in inputs.items() if k not in ("use_cache", "output_router_logits")}
        out = model(**fwd, use_cache=False)
        logits = out.logits[:, :-1]  # (B, L-1, V)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        tgt = labels[:, 1:]  # (B, L-1)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                ignore_index=-100, reduction="none").view(tgt.shape)
        valid = (tgt != -100).to(nll.dtype)
        if w is None:
            w = torch.ones(tgt.shape[0])
        w = w.to(device=nll.device, dtype=nll.dtype)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"WeightedSFTTrainer: weights must be finite and >= 0, got {w.tolist()}")
        tok_sum = (nll * valid).sum(1)  # (B,)
        if self.loss_normalization == "example":
            loss = (w * tok_sum / valid.sum(1).clamp_min(1.0)).sum() / tgt.shape[0]
        else:
            n = valid.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (w * tok_sum).sum() / torch.as_tensor(n, device=nll.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._check_loss(loss)
        return (loss, out) if return_outputs else loss

    def _check_loss(self, loss: Any) -> None:
        """Hook for a non-finite loss (uqkd's own trainer stops with an error there)."""
