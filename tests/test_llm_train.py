"""Tests of uqkd.llm.train: answer-only loss, per-example weights, seeded order, LoRA (tiny models)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from uqkd.config import UserError  # noqa: E402
from uqkd.llm.generate import encode_prompt  # noqa: E402
from uqkd.llm.models import tiny_causal_lm  # noqa: E402
from uqkd.llm.train import TrainConfig, tokenize_rows, train_student  # noqa: E402

ROWS = [{"prompt": [{"role": "user", "content": f"Capital {i}?"}],
         "completion": [{"role": "assistant", "content": f"City {i}"}], "weight": 1.0} for i in range(6)]


@pytest.fixture(scope="module")
def lm():
    return tiny_causal_lm(seed=0, n_layers=2)


def _params(lm):
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def test_labels_mask_prompt(lm):
    d = tokenize_rows(lm, ROWS[:1], 512)[0]
    prompt = encode_prompt(lm, "Capital 0?")  # the ids generation uses
    n_prompt = len(prompt)
    assert d["input_ids"][:n_prompt] == prompt
    assert d["labels"][:n_prompt] == [-100] * n_prompt
    assert d["labels"][n_prompt:] == d["input_ids"][n_prompt:]
    comp = d["input_ids"][n_prompt:]
    assert lm.tokenizer.eos_token_id in comp  # the template's end-of-turn is a training target
    assert lm.tokenizer.decode(comp[:comp.index(lm.tokenizer.eos_token_id)]) == "City 0"


def test_training_lowers_loss_and_leaves_input_untouched(lm):
    before = _params(lm)
    tr, info = train_student(lm, ROWS, TrainConfig(lr=3e-3, epochs=4, batch_size=3), seed=0)
    assert info["losses"][-1] < info["losses"][0]
    assert info["n_steps"] == 8
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    assert tr.name != lm.name and tr.tokenizer is lm.tokenizer


def test_same_seed_same_weights_other_identity_other_order(lm):
    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=2)
    a, _ = train_student(lm, ROWS, cfg, seed=1, identity=("m", 0))
    b, _ = train_student(lm, ROWS, cfg, seed=1, identity=("m", 0))
    c, _ = train_student(lm, ROWS, cfg, seed=1, identity=("m", 1))
    pa, pb, pc = _params(a), _params(b), _params(c)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert not all(torch.equal(pa[n], pc[n]) for n in pa)


def test_zero_weights_do_not_move_the_model(lm):
    rows = [dict(r, weight=0.0) for r in ROWS]
    tr, _ = train_student(lm, rows, TrainConfig(lr=1e-2, epochs=1, batch_size=3), seed=0)
    p0 = _params(lm)
    assert all(torch.equal(p, p0[n]) for n, p in tr.model.named_parameters())


def test_lora_trains_and_merges(lm):
    pytest.importorskip("peft")
    tr, info = train_student(lm, ROWS, TrainConfig(lr=1e-2, epochs=2, batch_size=3, lora=True, lora_r=4), seed=0)
    names = [n for n, _ in tr.model.named_parameters()]
    assert not any("lora" in n for n in names)
    assert set(names) == {n for n, _ in lm.model.named_parameters()}
    p0 = _params(lm)
    changed = [n for n, p in tr.model.named_parameters() if not torch.equal(p, p0[n])]
    assert changed and all(("q_proj" in n or "v_proj" in n) for n in changed)


def test_errors(lm):
    with pytest.raises(UserError, match="empty dataset"):
        train_student(lm, [], TrainConfig())
    with pytest.raises(UserError, match="lr: expected a finite number > 0"):
        TrainConfig(lr=0)
    with pytest.raises(UserError, match="epochs"):
        TrainConfig(epochs=0)


def test_max_steps_trains_exactly_that_many_steps_across_epochs(lm):
    # 6 rows, batch 4: 2 steps per epoch; 5 steps = 2 full epochs + 1 step of a third, whatever `epochs` says
    tr, info = train_student(lm, ROWS, TrainConfig(lr=1e-3, epochs=1, batch_size=4, max_steps=5), seed=0)
    assert info["n_steps"] == 5 and len(info["losses"]) == 3
    # the first epochs are the same steps as an epochs-budget run of the same student
    a, ia = train_student(lm, ROWS, TrainConfig(lr=1e-3, epochs=2, batch_size=4), seed=0, identity=("x",))
    b, ib = train_student(lm, ROWS, TrainConfig(lr=1e-3, epochs=9, batch_size=4, max_steps=4), seed=0, identity=("x",))
    assert ia["losses"] == ib["losses"] and ia["n_steps"] == ib["n_steps"] == 4
    with pytest.raises(UserError, match="max_steps: expected an integer >= 0"):
        TrainConfig(max_steps=-1)


def test_lora_students_are_a_function_of_seed_and_identity(lm):
    """The adapters' random init comes from the student's identity, not from global torch state."""
    pytest.importorskip("peft")
    cfg = TrainConfig(lr=1e-2, epochs=1, batch_size=3, lora=True, lora_r=4)
    a, ia = train_student(lm, ROWS, cfg, seed=3, identity=("s", 0))
    torch.manual_seed(12345)  # global state moved between two runs: no effect
    b, _ = train_student(lm, ROWS, cfg, seed=3, identity=("s", 0))
    c, _ = train_student(lm, ROWS, cfg, seed=3, identity=("s", 1))
    pa, pb, pc = _params(a), _params(b), _params(c)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert not all(torch.equal(pa[n], pc[n]) for n in pa)
    # LoRA starts at the base model (B = 0): the first loss is the base model's own loss on the data
    _, full = train_student(lm, ROWS, TrainConfig(lr=1e-9, epochs=1, batch_size=3), seed=3, identity=("s", 0))
    assert ia["first_loss"] == pytest.approx(full["first_loss"], rel=1e-5)


def test_answer_position_logits_give_the_full_logits_loss(lm):
    """The loss with the vocabulary projection only at answer positions equals the full-logits loss, and so do
    its gradients (plain and under LoRA); a model outside the known architectures takes the full path."""
    from uqkd.llm.train import _answer_path, _collate, answer_loss, weighted_sequence_loss

    data = tokenize_rows(lm, ROWS, 512)
    ids, lab, mask, _ = _collate(data[:4], lm.tokenizer.pad_token_id)
    w = torch.tensor([1.0, 0.5, 2.0, 0.0])
    m = lm.model
    assert _answer_path(m) is not None
    full = weighted_sequence_loss(m(input_ids=ids, attention_mask=mask).logits, lab, w)
    g_full = torch.autograd.grad(full, [m.model.layers[0].self_attn.q_proj.weight])[0]
    fast = answer_loss(m, ids, mask, lab, w)
    g_fast = torch.autograd.grad(fast, [m.model.layers[0].self_attn.q_proj.weight])[0]
    assert fast.item() == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(g_fast, g_full, rtol=1e-5, atol=1e-7)
    pytest.importorskip("peft")
    import copy

    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(copy.deepcopy(m), LoraConfig(r=2, lora_alpha=4, task_type="CAUSAL_LM"))
    assert _answer_path(pm) is not None
    a = answer_loss(pm, ids, mask, lab, w)
    b = weighted_sequence_loss(pm(input_ids=ids, attention_mask=mask).logits, lab, w)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)

    class Other(torch.nn.Module):  # an unknown architecture: the full-logits path
        config = type("C", (), {"model_type": "gemma2"})()

    assert _answer_path(Other()) is None


def test_lora_target_modules_not_in_the_model_is_a_user_error(lm):
    pytest.importorskip("peft")
    with pytest.raises(UserError, match="lora_target_modules: no_such_proj"):
        train_student(lm, ROWS, TrainConfig(lora=True, lora_target_modules=("no_such_proj",)), seed=0)
