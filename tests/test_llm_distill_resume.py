"""`uqkd llm distill` never overwrites a finished student silently; --report-to checks its package first."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from uqkd.cli import main  # noqa: E402
from uqkd.llm.models import save_lm, tiny_causal_lm  # noqa: E402

ROWS = [{"prompt": [{"role": "user", "content": f"Capital of C{i}?"}],
         "completion": [{"role": "assistant", "content": f"City{i}"}], "weight": 1.0} for i in range(4)]


@pytest.fixture()
def setup(tmp_path):
    save_lm(tiny_causal_lm(seed=0, n_layers=2), tmp_path / "teacher")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return tmp_path


def _distill(d, *extra, students=2):
    return main(["llm", "distill", "--train", str(d / "train.jsonl"), "--teacher", str(d / "teacher"),
                 "--students", str(students), "--same-data", "--trainer", "uqkd", "--epochs", "1", "--batch-size", "2",
                 "--lr", "1e-2", "--out", str(d / "out"), "--cache-dir", str(d / "cache"), "--device", "cpu", *extra])


def test_finished_students_are_kept_and_only_missing_ones_trained(setup, capsys):
    import shutil

    d = setup
    assert _distill(d, students=2) == 0
    shutil.rmtree(d / "out" / "student-001")  # as if the run had been killed before student 1 finished
    w0 = (d / "out" / "student-000" / "model.safetensors").read_bytes()
    mtime = (d / "out" / "student-000" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert _distill(d, students=2) == 0
    out = capsys.readouterr().out
    assert f"student 0: finished in {d / 'out' / 'student-000'}, skipped (resumed; --overwrite retrains it)" in out
    assert "student 1: 4 examples" in out and "student 0: 4 examples" not in out
    assert (d / "out" / "student-000" / "model.safetensors").stat().st_mtime_ns == mtime
    assert (d / "out" / "student-001" / "uqkd.json").is_file()
    # everything finished: nothing loads, nothing is written
    assert _distill(d, students=2) == 0
    assert "all 2 finished already; nothing to train" in capsys.readouterr().out
    # --overwrite retrains
    assert _distill(d, "--overwrite", students=2) == 0
    assert "skipped" not in capsys.readouterr().out
    assert (d / "out" / "student-000" / "model.safetensors").stat().st_mtime_ns != mtime
    assert (d / "out" / "student-000" / "model.safetensors").read_bytes() == w0  # deterministic retrain


def test_finished_student_with_other_settings_is_an_error(setup, capsys):
    d = setup
    assert _distill(d, students=1) == 0
    mtime = (d / "out" / "student-000" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert _distill(d, "--seed", "7", students=1) == 2
    err = capsys.readouterr().err
    assert err.startswith("uqkd: error: --out: ") and "seed 0 there, 7 now" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert (d / "out" / "student-000" / "model.safetensors").stat().st_mtime_ns == mtime


def test_report_to_package_checked_before_any_model_loads(setup, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    import uqkd.llm.models as models

    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **k: pytest.fail("a model loaded"))
    d = setup
    assert main(["llm", "distill", "--train", str(d / "train.jsonl"), "--teacher", str(d / "teacher"),
                 "--report-to", "tensorboard", "--out", str(d / "out2"), "--cache-dir", str(d / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("uqkd: error: --report-to tensorboard: needs the 'tensorboard' package, which is not "
                           "installed: pip install tensorboard")
    assert not (d / "out2").exists()


def test_distill_help_documents_the_training_knobs(capsys):
    with pytest.raises(SystemExit):
        main(["llm", "distill", "--help"])
    h = " ".join(capsys.readouterr().out.split())
    for flag in ("--lr LR learning rate", "--epochs EPOCHS passes", "--batch-size BATCH_SIZE examples",
                 "--overwrite retrain"):
        assert flag in h, flag
