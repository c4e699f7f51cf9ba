"""Adapter-only students load anywhere: their adapter_config.json names the base they were trained on (tiny models)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

pytest.importorskip("peft")
torch = pytest.importorskip("torch")

from uqkd.cli import main  # noqa: E402
from uqkd.llm.models import derive_student, load_causal_lm, save_lm, tiny_causal_lm  # noqa: E402
from uqkd.llm.train import TrainConfig, train_student  # noqa: E402

ROWS = [{"prompt": [{"role": "user", "content": f"Capital of C{i}?"}],
         "completion": [{"role": "assistant", "content": f"City{i}"}], "weight": 1.0} for i in range(6)]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_folder_loads_onto_its_own_base_from_any_cwd(tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    student = derive_student(load_causal_lm(str(tmp_path / "teacher"), device="cpu", dtype="float32"), 2)
    trained, _ = train_student(student, ROWS, TrainConfig(lr=2e-2, epochs=2, batch_size=3, lora=True, lora_r=4,
                                                          adapter_only=True), seed=0)
    out = tmp_path / "students"
    save_lm(student, out / "base")
    save_lm(trained, out / "student-000", adapter_only=True, adapter_base=out / "base")
    acfg = json.loads((out / "student-000" / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"] == str((out / "base").resolve())
    ids = torch.tensor([[5, 17, 23, 40, 41, 9]])
    want = _logits(trained.model, ids)
    monkeypatch.chdir(tmp_path / "teacher")  # peft resolves the base from the working directory: any will do
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(out / "student-000")).eval()
    assert torch.allclose(_logits(peft_model, ids), want, atol=1e-5)
    # the derived student has 2 layers, the teacher 4: the adapters on the teacher would be another model
    assert peft_model.get_base_model().config.num_hidden_layers == 2
    # uqkd's loader too, and after the whole output folder moved (uqkd.json keeps the base relative)
    assert torch.allclose(_logits(load_causal_lm(str(out / "student-000"), device="cpu").model, ids), want, atol=1e-5)
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    assert torch.allclose(_logits(load_causal_lm(str(moved / "student-000"), device="cpu").model, ids), want,
                          atol=1e-5)


def test_distill_adapter_only_then_evaluate_accepts_the_folder(tmp_path, capsys):
    save_lm(tiny_causal_lm(seed=0, n_layers=4), tmp_path / "teacher")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Capital of C{i}?", "answer": f"City{i}"}) + "\n"
                          for i in range(3)))
    common = ["--cache-dir", str(tmp_path / "cache"), "--embedder", "hash", "--device", "cpu"]
    out = tmp_path / "students"
    assert main(["llm", "distill", "--train", str(train), "--teacher", str(tmp_path / "teacher"),
                 "--student-every", "2", "--students", "2", "--same-data", "--trainer", "uqkd", "--epochs", "1",
                 "--batch-size", "3", "--lr", "1e-2", "--adapter-only", "--out", str(out), *common]) == 0
    assert f"adapter base: {out / 'base'}" in capsys.readouterr().out
    assert (out / "base" / "config.json").is_file() and not (out / "student-000" / "config.json").exists()
    for r in (0, 1):
        acfg = json.loads((out / f"student-{r:03d}" / "adapter_config.json").read_text())
        assert acfg["base_model_name_or_path"] == str((out / "base").resolve())
    assert main(["llm", "evaluate", "--students", str(out), "--data", str(qa), "--k", "2", "--max-new-tokens", "3",
                 "--out", str(tmp_path / "eval"), *common]) == 0
    capsys.readouterr()
    with open(tmp_path / "eval" / "per_student.csv") as f:
        assert [r["student"] for r in csv.DictReader(f)] == ["student-000", "student-001"]  # base/ is no student
    # the teacher row is labelled by the split it was scored on: training questions are not "heldout"
    for split, label in (("train", "train"), ("all", "all")):
        assert main(["llm", "evaluate", "--students", str(out), "--data", str(qa), "--k", "2", "--max-new-tokens", "3",
                     "--teacher", str(tmp_path / "teacher"), "--split", split, "--out", str(tmp_path / f"ev-{split}"),
                     *common]) == 0
        assert json.loads((tmp_path / f"ev-{split}" / "metrics.json").read_text())["teacher"]["split"] == label
    capsys.readouterr()
    # an adapter folder whose base is gone: one line naming it, before any model loads
    shutil.rmtree(out / "base")
    assert main(["llm", "evaluate", "--students", str(out / "student-000"), "--data", str(qa), "--k", "2",
                 "--out", str(tmp_path / "eval2"), *common]) == 2
    err = capsys.readouterr().err
    assert "uqkd: error: --students" in err and "base model" in err and "Traceback" not in err
