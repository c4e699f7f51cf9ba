"""The LLM engine: library logits processors, counter-based seeded noise, dtype, end-of-turn, context checks,
TRL-identical tokenisation, weighted loss on TRL, safe saves (tiny models, offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from uqkd.config import UserError  # noqa: E402
from uqkd.llm.generate import (  # noqa: E402
    DecodingConfig,
    build_logits_processors,
    counter_uniforms,
    encode_prompt,
    generate_samples,
    stop_token_ids,
)
from uqkd.llm.models import load_causal_lm, save_lm, tiny_causal_lm  # noqa: E402
from uqkd.llm.train import TrainConfig, tokenize_rows, train_student, weighted_sequence_loss  # noqa: E402


def _old_warp(input_ids, scores, dec, prompt_start):
    """The hand-written processing uqkd used before (reference): repetition penalty per row, then warpers."""
    scores = scores.float().clone()
    for b in range(scores.shape[0]):
        ids = torch.unique(input_ids[b, prompt_start[b]:])
        s = scores[b, ids]
        scores[b, ids] = torch.where(s < 0, s * dec.repetition_penalty, s / dec.repetition_penalty)
    scores = scores / dec.temperature
    kth = torch.topk(scores, dec.top_k, dim=-1).values[:, -1:]
    scores = scores.masked_fill(scores < kth, float("-inf"))
    sorted_s, idx = torch.sort(scores, descending=True, dim=-1)
    cum = sorted_s.softmax(-1).cumsum(-1)
    drop = cum - sorted_s.softmax(-1) > dec.top_p
    return scores.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))


def test_library_processors_equal_the_previous_hand_written_warping():
    g = torch.Generator().manual_seed(0)
    B, L, V = 5, 9, 40
    dec = DecodingConfig(temperature=0.7, top_k=12, top_p=0.8, repetition_penalty=1.3)
    ids = torch.randint(0, V, (B, L), generator=g)
    pad = torch.tensor([0, 3, 1, 0, 5])
    scores = torch.randn(B, V, generator=g) * 3
    procs = build_logits_processors(dec, pad, None, L)  # no seeds: deterministic part only
    lib = procs(ids, scores.clone())
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    for w in (TemperatureLogitsWarper(dec.temperature), TopKLogitsWarper(dec.top_k), TopPLogitsWarper(dec.top_p)):
        lib = w(ids, lib)
    ref = _old_warp(ids, scores.clone(), dec, pad.tolist())
    assert torch.equal(torch.isinf(lib), torch.isinf(ref))
    fin = torch.isfinite(ref)
    assert torch.allclose(lib[fin], ref[fin], atol=1e-6)


def test_counter_noise_samples_softmax_and_is_a_pure_function_of_seed_step_token():
    V = 6
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, -3.0])
    seeds = torch.arange(20000, dtype=torch.int64) * 7919 + 12345
    u = counter_uniforms(seeds, 3, V)
    assert u.min() > 0 and u.max() < 1
    pick = torch.argmax(logits[None] - torch.log(-torch.log(u)), dim=-1)
    counts = np.bincount(pick.numpy(), minlength=V)
    from scipy.stats import chisquare

    p = torch.softmax(logits.double(), -1).numpy()
    p = p / p.sum()
    assert chisquare(counts, p * counts.sum()).pvalue > 1e-3
    # same (seed, step, token) -> same number, whatever the batch; other step -> other numbers
    assert torch.equal(counter_uniforms(seeds[5:6], 3, V)[0], u[5])
    assert not torch.equal(counter_uniforms(seeds[5:6], 4, V)[0], u[5])
    # uniform marginal (KS) on one token across seeds
    from scipy.stats import kstest

    assert kstest(u[:, 2].numpy(), "uniform").pvalue > 1e-3


def test_sample_j_does_not_depend_on_batch_composition():
    lm = tiny_causal_lm(seed=3, n_layers=2)
    dec = DecodingConfig(max_new_tokens=6)
    a = generate_samples(lm, ["Capital of France?", "x"], 3, dec, seed=1, batch_size=64).texts
    b = generate_samples(lm, ["Capital of France?"], 3, dec, seed=1, batch_size=1).texts
    assert a[0] == b[0]
    assert len(set(a[0])) > 1  # really sampling


def test_bfloat16_on_cpu_end_to_end():
    lm = tiny_causal_lm(seed=0, n_layers=2, dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.device.type == "cpu"
    r1 = generate_samples(lm, ["Capital?"], 2, DecodingConfig(max_new_tokens=5), seed=0)
    r2 = generate_samples(lm, ["Capital?"], 2, DecodingConfig(max_new_tokens=5), seed=0)
    assert r1.texts == r2.texts  # same seed, same device and dtype: same bytes
    rows = [{"prompt": [{"role": "user", "content": "Capital?"}], "completion": [{"role": "assistant", "content": "Rome"}]}]
    tr, info = train_student(lm, rows, TrainConfig(lr=1e-3, epochs=1, batch_size=1))
    assert tr.dtype == torch.bfloat16 and np.isfinite(info["losses"][-1])


def test_end_of_turn_other_than_eos_is_trained_on_and_stops_generation():
    lm = tiny_causal_lm(seed=1, n_layers=2, hidden_size=32, end_of_turn="<end_of_turn>")
    eot = lm.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert eot != lm.tokenizer.eos_token_id
    assert {lm.tokenizer.eos_token_id, eot} <= set(stop_token_ids(lm))
    rows = [{"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "ab"}]}] * 8
    d = tokenize_rows(lm, rows[:1], 64)[0]
    assert eot in d["labels"] and lm.tokenizer.eos_token_id not in d["labels"]
    tr, _ = train_student(lm, rows, TrainConfig(lr=2e-2, epochs=60, batch_size=8))
    r = generate_samples(tr, ["Q"], 1, DecodingConfig(max_new_tokens=20, do_sample=False, repetition_penalty=1.0))
    assert r.texts[0][0] == "ab"
    assert r.n_tokens[0, 0] == 3  # "a", "b", <end_of_turn>: stopped there, not at max_new_tokens


def test_over_long_prompt_is_a_one_line_error_naming_the_question():
    lm = tiny_causal_lm(seed=0, n_layers=1)  # 512 positions
    q = "x" * 2000
    with pytest.raises(UserError, match=r"question q7: the prompt has \d+ tokens, but .* fits 512 positions") as e:
        generate_samples(lm, [q], 1, DecodingConfig(max_new_tokens=4), ids=["q7"])
    assert "\n" not in str(e.value)
    r = generate_samples(lm, [q], 1, DecodingConfig(max_new_tokens=4), ids=["q7"], truncate=True)
    assert len(r.texts) == 1


def test_device_and_dtype_arguments_are_checked_before_loading():
    with pytest.raises(UserError, match="device: expected one of auto, cpu, cuda, cuda:N"):
        load_causal_lm("smollm2", device="gpu0")
    with pytest.raises(UserError, match="dtype: expected one of auto, float32, bfloat16, float16; got 'fp8'"):
        load_causal_lm("smollm2", dtype="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            load_causal_lm("smollm2", device="cuda")


def test_zero_dispersion_is_detected(caplog):
    lm = tiny_causal_lm(seed=0, n_layers=1)
    dec = DecodingConfig(max_new_tokens=3, temperature=1e-4)  # practically greedy
    with caplog.at_level("WARNING", logger="uqkd.llm.generate"):
        r = generate_samples(lm, ["a", "b"], 3, dec, seed=0)
    assert r.extra["identical_questions"] == 2
    assert "ALL questions got 3 identical sampled answers" in caplog.text


# ------------------------------------------------------------------ TRL
def test_trl_recognises_rows_and_tokenises_them_as_uqkd_does(tmp_path):
    pytest.importorskip("trl")
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    from uqkd.llm.train import trl_trainer

    lm = tiny_causal_lm(seed=0, n_layers=1)
    rows = [{"id": str(i), "prompt": [{"role": "user", "content": f"Capital {i}?"}],
             "completion": [{"role": "assistant", "content": f"City {i}"}], "weight": 0.5 + i, "teacher_var": 0.1}
            for i in range(4)]
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset("json", data_files=str(p), split="train")
    assert is_conversational(ds[0])
    tr = trl_trainer(lm, list(ds), TrainConfig(batch_size=2), output_dir=str(tmp_path / "o"))
    ours = tokenize_rows(lm, rows, 192)
    for a, b in zip(tr.train_dataset, ours):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
    assert [round(x["weight"], 6) for x in tr.train_dataset] == [0.5, 1.5, 2.5, 3.5]
    # standard format: TRL appends EOS like uqkd does
    std = [{"prompt": "Question: Q\nAnswer:", "completion": " A"}]
    tr2 = trl_trainer(tiny_causal_lm(seed=0, n_layers=1, chat=False), std, TrainConfig(batch_size=1),
                      output_dir=str(tmp_path / "o2"))
    assert tr2.train_dataset[0]["input_ids"] == tokenize_rows(tiny_causal_lm(seed=0, n_layers=1, chat=False), std,
                                                              192)[0]["input_ids"]


def test_weights_change_the_gradient_exactly_as_hand_computed_and_trl_loss_is_the_same(tmp_path):
    pytest.importorskip("trl")
    from uqkd.llm.train import _collate, trl_trainer

    lm = tiny_causal_lm(seed=0, n_layers=1)
    lm.model.double()
    rows = [{"prompt": [{"role": "user", "content": f"Q{i}"}],
             "completion": [{"role": "assistant", "content": "ans" * (i + 1)}], "weight": w}
            for i, w in enumerate([0.25, 1.0, 3.0])]
    data = tokenize_rows(lm, rows, 192)
    ids, lab, mask, w = _collate(data, 0)

    def grad(loss):
        lm.model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in lm.model.parameters()])

    g_w = grad(weighted_sequence_loss(lm.model(input_ids=ids, attention_mask=mask).logits, lab, w))
    g_hand = 0
    for i in range(3):
        one = tokenize_rows(lm, rows[i:i + 1], 192)
        i1, l1, m1, _ = _collate(one, 0)
        g_hand = g_hand + rows[i]["weight"] * grad(weighted_sequence_loss(
            lm.model(input_ids=i1, attention_mask=m1).logits, l1, torch.ones(1))) / 3
    # (Llama RMSNorm runs in float32 even in a float64 model: float32-level agreement)
    assert torch.allclose(g_w, g_hand, atol=1e-7, rtol=1e-6)
    assert not torch.allclose(g_w, sum(grad(weighted_sequence_loss(lm.model(input_ids=ids, attention_mask=mask).logits,
                                                                  lab, torch.ones(3))) for _ in [0]), atol=1e-3)
    # TRL path: its collator + compute_loss give the same loss on the same batch
    tr = trl_trainer(lm, rows, TrainConfig(batch_size=3), output_dir=str(tmp_path / "o"))
    batch = tr.data_collator([dict(x) for x in tr.train_dataset])
    assert torch.allclose(batch["weight"].double(), w.double())
    l_trl = tr.compute_loss(lm.model, dict(batch))
    l_ours = weighted_sequence_loss(lm.model(input_ids=ids, attention_mask=mask).logits, lab, w)
    assert torch.allclose(l_trl, l_ours, atol=1e-10)


@pytest.mark.parametrize("row, msg", [
    ({"prompt": "q", "completion": None}, "row 1: 'completion' is missing or null"),
    ({"prompt": "q", "completion": "a", "weight": float("nan")}, "weight: expected a finite number >= 0, got nan"),
    ({"prompt": "q", "completion": "a", "weight": -1}, "weight: expected a finite number >= 0, got -1"),
    ({"prompt": "q", "completion": "a", "weight": float("inf")}, "weight: expected a finite number >= 0, got inf"),
    ({"prompt": [{"role": "user", "content": "q"}], "completion": "a"}, "both be strings .* or both message lists"),
])
def test_training_guards(row, msg):
    with pytest.raises(UserError, match=msg):
        train_student(tiny_causal_lm(seed=0, n_layers=1), [row], TrainConfig(epochs=1))


def test_non_finite_lr_and_divergence_stop_training():
    with pytest.raises(UserError, match="lr: expected a finite number > 0, got inf"):
        TrainConfig(lr=float("inf"))
    lm = tiny_causal_lm(seed=0, n_layers=1)
    rows = [{"prompt": "q", "completion": "a"}] * 2
    with pytest.raises(UserError, match="(loss became|non-finite)"):
        train_student(lm, rows, TrainConfig(lr=1e30, epochs=3, batch_size=1))


_SAVE_SCRIPT = r"""
import sys, time
from uqkd.llm.models import tiny_causal_lm, save_lm
import uqkd.llm.models as M
lm = tiny_causal_lm(seed=5, n_layers=1)
orig = lm.tokenizer.save_pretrained
def slow(*a, **k):
    print("SAVING", flush=True); time.sleep(60); return orig(*a, **k)
lm.tokenizer.save_pretrained = slow
save_lm(lm, sys.argv[1], {"student_index": 1})
"""


def test_killing_a_re_distil_during_the_save_keeps_the_earlier_student(tmp_path):
    target = tmp_path / "student-000"
    save_lm(tiny_causal_lm(seed=1, n_layers=1), target, {"student_index": 0, "method": "averaging"})
    assert (target / "README.md").read_text().count("averaging") == 1  # model card
    proc = subprocess.Popen([sys.executable, "-c", _SAVE_SCRIPT, str(target)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "SAVING"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    again = load_causal_lm(str(target), device="cpu", dtype="float32")
    assert json.loads((target / "uqkd.json").read_text())["student_index"] == 0
    assert again.n_layers == 1
    assert encode_prompt(again, "x")
