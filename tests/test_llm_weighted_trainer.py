"""``uqkd.llm.WeightedSFTTrainer``: a public ``trl.SFTTrainer`` subclass honouring a ``weight`` column (tiny models)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from uqkd.llm.models import save_lm, tiny_causal_lm  # noqa: E402

WEIGHTS = [0.25, 1.0, 3.0]


def _rows(weights, equal_length=False):
    return [{"prompt": [{"role": "user", "content": f"Q{i}"}],
             "completion": [{"role": "assistant", "content": "ans" if equal_length else "ans" * (i + 1)}],
             "weight": w} for i, w in enumerate(weights)]


def _args(tmp_path, **kw):
    return SFTConfig(output_dir=str(tmp_path / "o"), report_to="none", bf16=False, per_device_train_batch_size=3,
                     save_strategy="no", disable_tqdm=True, **kw)


def _loss(trainer, model, examples):
    batch = trainer.data_collator([dict(x) for x in examples])
    with torch.no_grad():
        return float(trainer.compute_loss(model, dict(batch)))


def test_public_import_is_a_trl_trainer_and_import_uqkd_stays_light():
    from uqkd.llm import WeightedSFTTrainer
    from uqkd.llm.train import WeightedSFTTrainer as same

    assert issubclass(WeightedSFTTrainer, SFTTrainer) and same is WeightedSFTTrainer
    out = subprocess.run([sys.executable, "-c", "import sys, uqkd, uqkd.llm; "
                          "print(sorted(m for m in ('trl', 'torch', 'transformers') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_uqkd_config_no_longer_shadows_trl_name():
    import uqkd.llm.train as t

    assert "SFTConfig" not in t.__all__ and "TrainConfig" in t.__all__
    with pytest.warns(DeprecationWarning, match="TrainConfig"):
        assert t.SFTConfig is t.TrainConfig


def test_loss_is_trl_loss_reweighted_exactly(tmp_path):
    from uqkd.llm import WeightedSFTTrainer

    lm = tiny_causal_lm(seed=0, n_layers=1)
    model = lm.model.eval()
    ds = Dataset.from_list(_rows(WEIGHTS))
    plain = SFTTrainer(model=model, args=_args(tmp_path), train_dataset=ds, processing_class=lm.tokenizer)
    ex = WeightedSFTTrainer(model=model, args=_args(tmp_path), train_dataset=ds, processing_class=lm.tokenizer)
    tok = WeightedSFTTrainer(model=model, args=_args(tmp_path), train_dataset=ds, processing_class=lm.tokenizer,
                             loss_normalization="token")
    data = list(plain.train_dataset)
    # the weight column survives TRL's preparation and its removal of unused columns, in dataset order
    batch = next(iter(ex.get_train_dataloader()))
    assert "weight" in batch and sorted(batch["weight"].tolist()) == sorted(WEIGHTS)
    assert "weight" not in next(iter(plain.get_train_dataloader()))
    # per-example losses from TRL's own trainer (one example per batch = its token mean) and answer lengths
    per = [_loss(plain, model, [d]) for d in data]
    n_tok = [sum(x != -100 for x in d["labels"][1:]) for d in data]
    assert len(set(n_tok)) == 3  # unequal answers: the two normalisations differ
    trl_batch = _loss(plain, model, data)
    assert trl_batch == pytest.approx(sum(p * n for p, n in zip(per, n_tok)) / sum(n_tok), rel=1e-5)
    # "example": the weighted mean of TRL's per-example losses
    assert _loss(ex, model, data) == pytest.approx(sum(w * p for w, p in zip(WEIGHTS, per)) / 3, rel=1e-5)
    # "token": TRL's token mean with each token weighted by its example's weight
    assert _loss(tok, model, data) == pytest.approx(
        sum(w * p * n for w, p, n in zip(WEIGHTS, per, n_tok)) / sum(n_tok), rel=1e-5)
    # and the weighting is not a no-op
    assert abs(_loss(tok, model, data) - trl_batch) > 1e-3
    # weights all 1: "token" is exactly TRL's loss
    ones = Dataset.from_list(_rows([1.0, 1.0, 1.0]))
    tok1 = WeightedSFTTrainer(model=model, args=_args(tmp_path), train_dataset=ones, processing_class=lm.tokenizer,
                              loss_normalization="token")
    assert _loss(tok1, model, list(tok1.train_dataset)) == pytest.approx(trl_batch, rel=1e-6)
    # weights all 1 and equal answer lengths: "example" is TRL's loss too
    eq = Dataset.from_list(_rows([1.0, 1.0, 1.0], equal_length=True))
    p_eq = SFTTrainer(model=model, args=_args(tmp_path), train_dataset=eq, processing_class=lm.tokenizer)
    e_eq = WeightedSFTTrainer(model=model, args=_args(tmp_path), train_dataset=eq, processing_class=lm.tokenizer)
    assert _loss(e_eq, model, list(e_eq.train_dataset)) == pytest.approx(
        _loss(p_eq, model, list(p_eq.train_dataset)), rel=1e-6)


def test_training_uses_the_weights(tmp_path):
    """Zero weight on an example: its answer is not learnt; the same run unweighted learns it."""
    from uqkd.llm import WeightedSFTTrainer

    def train(weights):
        lm = tiny_causal_lm(seed=0, n_layers=1)
        rows = _rows(weights)
        rows[0]["completion"][0]["content"] = "zqzqzq"  # its own answer: nothing else teaches it
        ds = Dataset.from_list(rows)
        tr = WeightedSFTTrainer(model=lm.model, args=_args(tmp_path, learning_rate=1e-2, max_steps=6, seed=0,
                                                          lr_scheduler_type="constant"),
                                train_dataset=ds, processing_class=lm.tokenizer)
        first = {**list(tr.train_dataset)[0], "weight": 1.0}  # its plain loss, whatever its training weight
        before = _loss(tr, lm.model, [first])
        tr.train()
        lm.model.eval()
        return before, _loss(tr, lm.model, [first])

    before, zero = train([0.0, 1.0, 1.0])
    _, one = train([1.0, 1.0, 1.0])
    assert one < before - 1.0 and zero > one + 1.0


def test_bad_weights_and_packing_are_refused(tmp_path):
    from uqkd.llm import WeightedSFTTrainer

    lm = tiny_causal_lm(seed=0, n_layers=1)
    kw = {"model": lm.model, "processing_class": lm.tokenizer}
    with pytest.raises(ValueError, match="no 'weight' column"):
        WeightedSFTTrainer(args=_args(tmp_path), train_dataset=Dataset.from_list(
            [{k: v for k, v in r.items() if k != "weight"} for r in _rows(WEIGHTS)]), **kw)
    with pytest.raises(ValueError, match=r"row 2: weight: expected a finite number >= 0, got -1\.0"):
        WeightedSFTTrainer(args=_args(tmp_path), train_dataset=Dataset.from_list(_rows([1.0, -1.0, 2.0])), **kw)
    with pytest.raises(ValueError, match="packing=True"):
        WeightedSFTTrainer(args=_args(tmp_path, packing=True), train_dataset=Dataset.from_list(_rows(WEIGHTS)), **kw)
    with pytest.raises(ValueError, match="loss_normalization: expected one of example, token, got 'mean'"):
        WeightedSFTTrainer(args=_args(tmp_path), train_dataset=Dataset.from_list(_rows(WEIGHTS)),
                           loss_normalization="mean", **kw)


def _readme_example() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- readme-example: weighted-trainer -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README: the weighted-trainer example is missing"
    return textwrap.dedent(m.group(1))


def test_readme_example_runs_verbatim_on_a_tiny_model(tmp_path):
    code = _readme_example()
    line = 'model_id = "HuggingFaceTB/SmolLM2-135M-Instruct"'
    assert line in code
    save_lm(tiny_causal_lm(seed=0, n_layers=1), tmp_path / "tiny")
    code = code.replace(line, f"model_id = {str(tmp_path / 'tiny')!r}")  # the one substitution: a local model
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(WEIGHTS)))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "student" / "config.json").is_file() and any((tmp_path / "student").glob("*.safetensors"))
