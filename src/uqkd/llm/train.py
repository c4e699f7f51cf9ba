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
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .._seeding import make_rng
from ..config import UserError
from .models import LoadedLM, clone_lm

__all__ = ["TrainConfig", "train_student", "tokenize_rows", "tokenize_row", "check_row", "check_answer_tokens",
           "weighted_sequence_loss",
           "answer_loss",
           "trl_trainer", "train_student_trl"]


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyper-parameters of a uqkd student (paper: lr 5e-5, batch 10, 3 epochs).

    Not TRL's ``trl.SFTConfig`` (that one configures :class:`uqkd.llm.WeightedSFTTrainer`); this class was called
    ``SFTConfig`` before, a name kept as a deprecated alias.
    """

    lr: float = 5e-5
    epochs: int = 3
    batch_size: int = 10
    max_length: int = 192
    weight_decay: float = 0.0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_target_modules: tuple[str, ...] = ()
    adapter_only: bool = False
    #: > 0: train for exactly this many optimiser steps (epochs cycle, each with its own data order;
    #: ``epochs`` is then ignored): the equal-optimiser-steps comparison of methods
    max_steps: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr: expected a finite number > 0, got {self.lr}")
        if self.epochs < 1:
            raise UserError(f"epochs: expected an integer >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch_size: expected an integer >= 1, got {self.batch_size}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 0:
            raise UserError(f"max_steps: expected an integer >= 0 (0: epochs decide), got {self.max_steps!r}")
        if self.max_length < 8:
            raise UserError(f"max_length: expected an integer >= 8, got {self.max_length}")
        if self.lora and self.lora_r < 1:
            raise UserError(f"lora_r: expected an integer >= 1, got {self.lora_r}")
        if self.lora and not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise UserError(f"lora_alpha: expected a finite number > 0, got {self.lora_alpha}")
        if self.adapter_only and not self.lora:
            raise UserError("adapter_only: needs lora=True (--lora)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight_decay: expected a finite number >= 0, got {self.weight_decay}")


def __getattr__(name: str) -> Any:
    if name == "SFTConfig":  # the old name of TrainConfig, which shadowed trl.SFTConfig
        import warnings

        warnings.warn("uqkd.llm.train.SFTConfig is deprecated: use uqkd.llm.train.TrainConfig (trl.SFTConfig is "
                      "TRL's own config, for uqkd.llm.WeightedSFTTrainer)", DeprecationWarning, stacklevel=2)
        return TrainConfig
    if name == "WeightedSFTTrainer":
        from .weighted_trainer import WeightedSFTTrainer

        return WeightedSFTTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fail(n: int, msg: str) -> UserError:
    return UserError(f"train: row {n + 1}: {msg}")


def _check_messages(m: Any, n: int, field: str) -> None:
    if not isinstance(m, list) or not m or not all(isinstance(x, dict) and isinstance(x.get("role"), str)
                                                   and isinstance(x.get("content"), str) for x in m):
        raise _fail(n, f"{field}: expected a string or a non-empty list of {{'role', 'content'}} messages with "
                       f"string content, got {m!r:.80}")


def check_row(r: Any, n: int = 0) -> str:
    """Validate one training row; returns ``"conversational"`` or ``"standard"``.

    Raises ``UserError`` naming the row for a missing, null or non-string prompt/completion, mixed
    formats, or a weight that is not a finite number >= 0.
    """
    if not isinstance(r, dict):
        raise _fail(n, f"expected a JSON object, got {type(r).__name__}")
    for f in ("prompt", "completion"):
        if f not in r or r[f] is None:
            raise _fail(n, f"{f!r} is missing or null")
    p, c = r["prompt"], r["completion"]
    if isinstance(p, str) and isinstance(c, str):
        fmt = "standard"
    elif isinstance(p, list) and isinstance(c, list):
        _check_messages(p, n, "prompt")
        _check_messages(c, n, "completion")
        fmt = "conversational"
    else:
        raise _fail(n, f"prompt and completion must both be strings (standard format) or both message lists "
                       f"(conversational format); got {type(p).__name__} and {type(c).__name__}")
    w = r.get("weight", 1.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)) or float(w) < 0:
        raise _fail(n, f"weight: expected a finite number >= 0, got {w!r}")
    return fmt


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_row(tok: Any, row: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside the completion) of one row, exactly as TRL's SFTTrainer builds them.

    Conversational rows (``prompt``/``completion`` message lists) go through the tokenizer's chat
    template: the prompt with the generation prompt, then prompt + completion; the completion is
    what follows their common prefix, so it ends with the template's own end-of-turn token.
    Standard rows (strings) are concatenated and the tokenizer's EOS is appended to the completion
    when missing. (TRL 1.x ``SFTTrainer._prepare_dataset``, ``completion_only_loss=True``.)
    """
    if isinstance(row["prompt"], list):
        p_ids = tok.apply_chat_template(row["prompt"], tokenize=True, return_dict=True,
                                        add_generation_prompt=True)["input_ids"]
        pc_ids = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                         return_dict=True)["input_ids"]
    else:
        comp = row["completion"]
        if tok.eos_token is not None and not comp.endswith(tok.eos_token):
            comp = comp + tok.eos_token
        p_ids = tok(text=row["prompt"])["input_ids"]
        pc_ids = tok(text=row["prompt"] + comp)["input_ids"]
    n = _common_prefix(p_ids, pc_ids)
    pc_ids = list(pc_ids)
    return pc_ids, [-100] * n + pc_ids[n:]


def tokenize_rows(lm: LoadedLM, rows: Sequence[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """:func:`tokenize_row` for every row, truncated to ``max_length`` (keep the start), rows without
    answer tokens dropped, with the per-example ``weight``."""
    out = []
    fmts = set()
    for n, r in enumerate(rows):
        fmts.add(check_row(r, n))
        ids, labels = tokenize_row(lm.tokenizer, r)
        ids, labels = ids[:max_length], labels[:max_length]
        if all(lab == -100 for lab in labels):
            continue  # prompt alone fills max_length: nothing to learn from
        out.append({"input_ids": ids, "labels": labels, "weight": float(r.get("weight", 1.0))})
    if len(fmts) > 1:
        raise UserError("train: rows mix the conversational and the standard format; build one training set per format")
    return out


def _no_answer_tokens(n_rows: int, max_length: int) -> UserError:
    return UserError(f"train: no row has answer tokens within max_length ({max_length} tokens): the prompt of every "
                     f"one of the {n_rows} rows fills it; shorten the prompts")


def check_answer_tokens(tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int) -> None:
    """``UserError`` unless some row keeps an answer token within ``max_length`` (TRL would otherwise drop every
    row and fail deep inside with ``num_samples=0``).

    Cheap: rows are tokenised (as :func:`tokenize_row`, with the tokenizer alone: no model needed) only until the
    first one that keeps an answer token, normally the first row.
    """
    for n, r in enumerate(rows):
        check_row(r, n)
        _, labels = tokenize_row(tokenizer, r)
        if any(lab != -100 for lab in labels[:max_length]):
            return
    raise _no_answer_tokens(len(rows), max_length)


def weighted_sequence_loss(logits: Any, labels: Any, weights: Any) -> Any:
    r"""Per-example weighted mean of per-example token-mean cross-entropy on the completion tokens.

    :math:`L = \frac1B \sum_i w_i \frac{1}{|A_i|} \sum_{t \in A_i} -\log p(y_{i,t})`, with
    ``logits`` (B, L, V), ``labels`` (B, L) (-100 ignored; shifted by one inside), ``weights`` (B,).
    TRL's default instead averages over all completion tokens of the batch (long answers count
    more); with equal weights and equal answer lengths the two coincide.
    """
    import torch

    lg = logits[:, :-1]  # (B, L-1, V)
    if lg.dtype in (torch.float16, torch.bfloat16):
        lg = lg.float()
    tgt = labels[:, 1:]  # (B, L-1)
    nll = torch.nn.functional.cross_entropy(
        lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="none"
    ).view(tgt.shape)  # (B, L-1)
    valid = (tgt != -100).to(nll.dtype)
    per_ex = (nll * valid).sum(1) / valid.sum(1).clamp_min(1.0)  # (B,)
    return (weights.to(per_ex.dtype) * per_ex).sum() / per_ex.shape[0]


#: architectures whose logits are exactly ``lm_head(last_hidden_state)`` (no soft-capping or logit scaling), for
#: which :func:`answer_loss` computes logits only at the answer positions
ANSWER_LOGITS_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2")


def _answer_path(model: Any) -> tuple[Any, Any] | None:
    """``(decoder body, lm_head)`` of a causal LM (peft-wrapped or not) whose logits are the head applied to the
    body's last hidden state; None for any other model (the caller then takes the full-logits path)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(hf, "config", None)
    if getattr(cfg, "model_type", None) not in ANSWER_LOGITS_TYPES:
        return None
    body = getattr(hf, getattr(hf, "base_model_prefix", ""), None)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if body is None or head is None or body is hf:
        return None
    return body, head


def answer_loss(model: Any, ids: Any, mask: Any, labels: Any, weights: Any) -> Any:
    r""":func:`weighted_sequence_loss` of ``model`` on a batch, with the vocabulary projection computed only at the
    positions that predict an answer token.

    The loss reads the logits of the answer positions only (the prompt is masked), so projecting every position
    onto the vocabulary (49,152 columns for SmolLM2) wastes the head's matmul and a (B, L, V) logits tensor and its
    gradient on the prompt. For architectures in :data:`ANSWER_LOGITS_TYPES` the decoder's last hidden state is
    gathered at those positions first: the same loss (up to float summation order), measured faster in
    ``benchmarks/bench_llm_train.py``. Other models take the full-logits path.
    """
    import torch

    path = _answer_path(model)
    if path is None:
        return weighted_sequence_loss(model(input_ids=ids, attention_mask=mask).logits, labels, weights)
    body, head = path
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, d)
    tgt = labels[:, 1:]  # (B, L-1)
    sel = tgt != -100  # (B, L-1)
    h = hidden[:, :-1][sel]  # (T, d): the positions that predict an answer token
    lg = head(h)  # (T, V)
    if lg.dtype in (torch.float16, torch.bfloat16):
        lg = lg.float()
    nll = torch.nn.functional.cross_entropy(lg, tgt[sel], reduction="none")  # (T,)
    row = sel.nonzero(as_tuple=True)[0]  # (T,): the example of each answer token
    b = ids.shape[0]
    per_ex = torch.zeros(b, dtype=nll.dtype, device=nll.device).index_add(0, row, nll)  # (B,)
    per_ex = per_ex / sel.sum(1).clamp_min(1).to(nll.dtype)
    return (weights.to(per_ex.dtype) * per_ex).sum() / b


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


def check_finite_params(model: Any, when: str) -> None:
    """``UserError`` when any parameter is NaN or infinite."""
    import torch

    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise UserError(f"train: parameter {name} became non-finite {when}; training stopped "
                            "(lower the learning rate)")


def _rng_devices(model: Any) -> list[Any]:
    """The devices whose generators ``fork_rng`` saves and restores: on a GPU every CUDA device
    (``torch.manual_seed`` reseeds them all), so training leaves the caller's global random state as it was."""
    import torch

    dev = next(model.parameters()).device
    return list(range(torch.cuda.device_count())) if dev.type == "cuda" else []


def train_student(
    student: LoadedLM,
    rows: Sequence[dict[str, Any]],
    cfg: TrainConfig | None = None,
    *,
    seed: int = 0,
    identity: Sequence[Any] = (),
    on_epoch_end: Any = None,
    progress: bool = False,
) -> tuple[LoadedLM, dict[str, Any]]:
    """Fine-tune a copy of ``student`` on ``rows``; the input model is left unchanged.

    ``on_epoch_end(model, epoch)``, when given, is called after every epoch (e.g. to track a
    parameter's trajectory). ``progress`` shows a tqdm bar of optimiser steps with the running loss.

    Parameters
    ----------
    student : LoadedLM
    rows : sequence of dict with ``prompt``, ``completion`` and optional ``weight``
    cfg : TrainConfig
    seed : int
    identity : sequence
        Names the student (e.g. method, k, student index): data order and any torch randomness
        derive from (seed, identity).

    Returns
    -------
    trained : LoadedLM
    info : dict
        ``losses`` (mean weighted loss per epoch), ``first_loss`` (the loss of the first batch, before
        any update), ``n_examples``, ``n_steps``.
    """
    import torch

    cfg = cfg or TrainConfig()
    if not rows:
        raise UserError("train: empty dataset (no training rows)")
    data = tokenize_rows(student, rows, cfg.max_length)
    if not data:
        raise _no_answer_tokens(len(rows), cfg.max_length)
    ident = tuple(identity)
    tag = hashlib.sha256(json.dumps([asdict(cfg), seed, [str(i) for i in ident], len(rows)]).encode()).hexdigest()[:10]
    lm = clone_lm(student, f"{student.name}|sft:{tag}")
    model = lm.model
    if cfg.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise UserError("lora: needs the 'peft' package: pip install 'uqkd[llm]'") from None
        # the adapters' random init (A ~ Kaiming uniform; B = 0) from a generator named by the student, so the
        # student is a pure function of (seed, identity), untouched global torch state
        with torch.random.fork_rng(devices=_rng_devices(model)):
            torch.manual_seed(int(make_rng(seed, *ident, "lora-init").integers(2**62)))
            try:
                model = get_peft_model(
                    model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                      task_type="CAUSAL_LM", target_modules=list(cfg.lora_target_modules) or None)
                )
            except ValueError as exc:  # e.g. target modules not in the model
                raise UserError(f"lora_target_modules: {', '.join(cfg.lora_target_modules) or '(peft default)'}: "
                                f"{exc}".splitlines()[0]) from None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    dev = lm.device
    losses: list[float] = []
    steps = 0
    bar = None
    per_epoch = -(-len(data) // cfg.batch_size)
    n_total = cfg.max_steps or cfg.epochs * per_epoch
    n_epochs = -(-n_total // per_epoch)  # the last epoch may stop part-way (max_steps)
    first_loss = float("nan")
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_total, desc=f"train {student.name}"[:40], unit="step", leave=False)
    with torch.random.fork_rng(devices=_rng_devices(model)):
        torch.manual_seed(int(make_rng(seed, *ident, "torch").integers(2**62)))
        model.train()
        for epoch in range(n_epochs):
            order = make_rng(seed, *ident, "data-order", epoch).permutation(len(data))
            tot, cnt = 0.0, 0
            for b in range(0, len(order), cfg.batch_size):
                if steps >= n_total:
                    break
                batch = [data[i] for i in order[b:b + cfg.batch_size]]
                ids, lab, mask, w = _collate(batch, pad)
                ids, lab, mask, w = ids.to(dev), lab.to(dev), mask.to(dev), w.to(dev)
                loss = answer_loss(model, ids, mask, lab, w)
                if not torch.isfinite(loss):
                    raise UserError(f"train: the loss became {float(loss)} at epoch {epoch + 1}, step {steps + 1}; "
                                    f"training stopped (lower the learning rate, now {cfg.lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if steps == 0:
                    first_loss = float(loss.detach())
                steps += 1
                tot += float(loss.detach()) * len(batch)
                cnt += len(batch)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{tot / cnt:.3f}", epoch=epoch + 1)
            losses.append(tot / max(cnt, 1))
            check_finite_params(model, f"after epoch {epoch + 1}")
            if on_epoch_end is not None:
                on_epoch_end(model, epoch + 1)
        model.eval()
    if bar is not None:
        bar.close()
    if cfg.lora and not cfg.adapter_only:
        model = model.merge_and_unload()
    lm.model = model
    return lm, {"losses": losses, "first_loss": first_loss, "n_examples": len(data), "n_steps": steps}


# --------------------------------------------------------------------------- TRL path
def _uqkd_trl_trainer_class() -> Any:
    """:class:`uqkd.llm.weighted_trainer.WeightedSFTTrainer` whose non-finite loss is a one-line ``UserError``
    (built lazily: TRL is imported only when used)."""
    from .weighted_trainer import WeightedSFTTrainer

    class _UqkdTrainer(WeightedSFTTrainer):
        def _check_loss(self, loss: Any) -> None:
            import torch

            if not torch.isfinite(loss):
                raise UserError(f"train: the loss became {float(loss)} at step {self.state.global_step + 1}; "
                                f"training stopped (lower the learning rate, now {self.args.learning_rate})")

    return _UqkdTrainer


def trl_trainer(student: LoadedLM, rows: Sequence[dict[str, Any]], cfg: TrainConfig | None = None, *, seed: int = 0,
                output_dir: str = "", peft_config: Any = None, **trl_args: Any) -> Any:
    """A :class:`~uqkd.llm.weighted_trainer.WeightedSFTTrainer` over ``rows`` (a ``datasets.Dataset`` of prompt/completion/weight).

    ``trl_args`` go to ``trl.SFTConfig`` (e.g. ``gradient_accumulation_steps``, ``lr_scheduler_type``,
    ``report_to``, ``save_strategy``); the model is trained in place.
    """
    import tempfile

    import torch
    from datasets import Dataset
    from trl import SFTConfig as TRLConfig

    cfg = cfg or TrainConfig()
    for n, r in enumerate(rows):
        check_row(r, n)
    check_answer_tokens(student.tokenizer, rows, cfg.max_length)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"],
                               "weight": float(r.get("weight", 1.0))} for r in rows])
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    Trainer = _uqkd_trl_trainer_class()
    pad = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    args = {
        "output_dir": output_dir or tempfile.mkdtemp(prefix="uqkd-trl-"),
        "learning_rate": cfg.lr, "num_train_epochs": cfg.epochs, "per_device_train_batch_size": cfg.batch_size,
        "weight_decay": cfg.weight_decay, "max_length": cfg.max_length, "completion_only_loss": True,
        "seed": int(seed) % (2**31), "data_seed": int(seed) % (2**31), "report_to": "none", "save_strategy": "no",
        "logging_steps": 1, "lr_scheduler_type": "constant", "warmup_steps": 0,
        "disable_tqdm": not sys.stderr.isatty(),  # TRL's step bar (with the loss) on a terminal
        "bf16": student.dtype == torch.bfloat16, "fp16": student.dtype == torch.float16,
        "use_cpu": student.device.type == "cpu", "dataset_num_proc": None, "max_grad_norm": 0.0,
        "max_steps": cfg.max_steps or -1,
        **trl_args,
    }
    return Trainer(model=student.model, args=TRLConfig(**args), train_dataset=data,
                   processing_class=student.tokenizer, data_collator=DataCollatorForLanguageModeling(pad_token_id=pad),
                   peft_config=peft_config)


def train_student_trl(student: LoadedLM, rows: Sequence[dict[str, Any]], cfg: TrainConfig | None = None, *,
                      seed: int = 0, identity: Sequence[Any] = (), output_dir: str = "",
                      **trl_args: Any) -> tuple[LoadedLM, dict[str, Any]]:
    """Like :func:`train_student`, on TRL (:class:`~uqkd.llm.weighted_trainer.WeightedSFTTrainer`); the input model is left unchanged."""
    cfg = cfg or TrainConfig()
    if not rows:
        raise UserError("train: empty dataset (no training rows)")
    for n, r in enumerate(rows):
        check_row(r, n)
    check_answer_tokens(student.tokenizer, rows, cfg.max_length)  # before the copy of the model and TRL's set-up
    ident = tuple(identity)
    tag = hashlib.sha256(json.dumps([asdict(cfg), seed, [str(i) for i in ident], len(rows), "trl"]).encode()).hexdigest()[:10]
    lm = clone_lm(student, f"{student.name}|trl:{tag}")
    peft = None
    if cfg.lora:
        from peft import LoraConfig

        peft = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=list(cfg.lora_target_modules) or None)
    tr = trl_trainer(lm, rows, cfg, seed=int(make_rng(seed, *ident, "trl").integers(2**31)), output_dir=output_dir,
                     peft_config=peft, **trl_args)
    tr.train()
    model = tr.model
    check_finite_params(model, "after training")
    if cfg.lora and not cfg.adapter_only:
        model = model.merge_and_unload()
    lm.model = model.eval()
    losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
    return lm, {"losses": losses or [float("nan")], "n_examples": len(tr.train_dataset), "n_steps": tr.state.global_step}
