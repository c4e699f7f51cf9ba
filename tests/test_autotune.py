"""The MLP kernel autotuner: measures once per key per host, keeps the fastest, caches it on disk."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from uqkd.config import UserError
from uqkd.students import _autotune
from uqkd.students import mlp as mlp_module
from uqkd.students.mlp import BatchedMLP

DEFAULT = "fused-onednn" if mlp_module.ONEDNN_GEMM else "fused-bmm"


@pytest.fixture
def tuner(tmp_path, monkeypatch):
    """A private cache folder, an empty memo, autotuning on even for small fits; counts measurements."""
    monkeypatch.setenv("UQKD_CACHE", str(tmp_path))
    monkeypatch.delenv("UQKD_AUTOTUNE", raising=False)
    monkeypatch.setattr(mlp_module, "AUTOTUNE_MIN_WORK_RATIO", 0.0)
    _autotune.clear_memo()
    calls = []
    real = _autotune.measure

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(_autotune, "measure", counting)
    yield calls
    _autotune.clear_memo()


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    return X, X[:, 0] + 0.3 * rng.normal(size=(8, 60))


def fit(data, **kw):
    X, Y = data
    return BatchedMLP(hidden=(6,), n_epochs=5, lr=0.01, **kw).fit(X, Y)


def slow_down(monkeypatch, gemm: str, seconds: float = 0.03):
    """Make the fused kernel's trials with one GEMM variant artificially slow (the trials pass ``epochs``)."""
    real = BatchedMLP._train_chunk

    def train_chunk(self, *a, epochs=None, **k):
        if epochs is not None and getattr(self, "_gemm", "onednn") == gemm:
            time.sleep(seconds)
        return real(self, *a, epochs=epochs, **k)

    monkeypatch.setattr(BatchedMLP, "_train_chunk", train_chunk)


def test_measure_picks_the_faster_and_prefers_the_default_within_the_margin():
    fast, slow = (lambda: time.sleep(0.001) or 1.0), (lambda: time.sleep(0.001) or 2.0)
    assert _autotune.measure({"a": slow, "b": fast}, reps=2)[0] == "b"
    assert _autotune.measure({"a": slow, "b": fast}, reps=2, prefer="a")[0] == "b"  # 2x is beyond the margin
    assert _autotune.measure({"a": lambda: 1.02, "b": lambda: 1.0}, prefer="a")[0] == "a"
    assert _autotune.measure({"a": lambda: 1.1, "b": lambda: 1.0}, prefer="a")[0] == "b"
    # a candidate left out by admit never runs
    assert _autotune.measure({"a": lambda: 1.0, "b": lambda: pytest.fail("ran")}, admit=lambda n, s: n != "b")[0] == "a"


@pytest.mark.parametrize("slow", ["onednn", "bmm"])
def test_the_autotuner_picks_the_faster_variant(tuner, data, monkeypatch, slow):
    if slow == "bmm" and not mlp_module.ONEDNN_GEMM:
        pytest.skip("torch built without oneDNN: one fused variant only")
    slow_down(monkeypatch, slow)
    m = fit(data)
    assert len(tuner) == 1
    assert m.kernel_ == ("fused-bmm" if slow == "onednn" else "fused-onednn")
    assert m._gemm == ("bmm" if slow == "onednn" else "onednn")
    # the tuned fit gives exactly the numbers of a fit pinned to the chosen variant
    pinned = fit(data, backend=m.kernel_)
    np.testing.assert_array_equal(m.params_, pinned.params_)


def test_a_cached_choice_is_reused_in_process_and_from_disk(tuner, data, monkeypatch):
    slow_down(monkeypatch, "onednn")
    first = fit(data)
    fit(data)
    assert len(tuner) == 1  # in-process memo
    _autotune.clear_memo()  # as a fresh (worker) process
    again = fit(data)
    assert len(tuner) == 1  # read from the disk cache, not re-measured
    assert again.kernel_ == first.kernel_ == "fused-bmm"
    doc = json.loads(_autotune.cache_file().read_text())
    assert doc["fingerprint"] == _autotune.host_fingerprint()
    (entry,) = doc["choices"].values()
    assert entry["variant"] == "fused-bmm" and "fused-onednn@10000000" in entry["seconds_per_unit"]


@pytest.mark.skipif(not mlp_module.ONEDNN_GEMM, reason="torch built without oneDNN: one fused variant only")
def test_workers_use_the_first_writers_choice(tuner, data, monkeypatch):
    slow_down(monkeypatch, "onednn")
    assert fit(data).kernel_ == "fused-bmm"
    path = _autotune.cache_file()
    doc = json.loads(path.read_text())
    for entry in doc["choices"].values():  # another process wrote a different choice first
        entry["variant"], entry["candidate"] = "fused-onednn", "fused-onednn@10000000"
    path.write_text(json.dumps(doc))
    _autotune.clear_memo()
    assert fit(data).kernel_ == "fused-onednn"
    assert len(tuner) == 1


def test_autotune_off_gives_the_default_variant_and_measures_nothing(tuner, data, monkeypatch):
    slow_down(monkeypatch, "onednn")
    monkeypatch.setenv("UQKD_AUTOTUNE", "0")
    m = fit(data)
    assert m.kernel_ == DEFAULT and not tuner
    assert not _autotune.cache_file().exists()
    monkeypatch.setenv("UQKD_AUTOTUNE", "fused-bmm")  # a pinned variant
    assert fit(data).kernel_ == "fused-bmm" and not tuner
    monkeypatch.setenv("UQKD_AUTOTUNE", "fastest")
    with pytest.raises(UserError, match="UQKD_AUTOTUNE: expected .*got 'fastest'"):
        fit(data)
    monkeypatch.delenv("UQKD_AUTOTUNE")
    with pytest.raises(ValueError, match="backend"):
        fit(data, backend="fused-mkl")
    # float64 keeps its bit-exact MKL path and small fits keep the defaults: nothing measured
    assert fit(data, dtype="float64").kernel_ == "fused-bmm" and not tuner
    monkeypatch.setattr(mlp_module, "AUTOTUNE_MIN_WORK_RATIO", 4.0)
    assert fit(data).kernel_ == DEFAULT and not tuner


@pytest.mark.parametrize("garbage", ["{not json", "[]", '{"format": 1, "fingerprint": {}, "choices": 3}', ""])
def test_a_corrupt_cache_file_is_remeasured_not_fatal(tuner, data, garbage):
    path = _autotune.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(garbage)
    m = fit(data)
    assert len(tuner) == 1 and m.kernel_ in _autotune.VARIANTS
    doc = json.loads(path.read_text())  # rewritten whole
    assert len(doc["choices"]) == 1


def test_the_cache_key_includes_the_host_fingerprint(tuner, data, monkeypatch):
    fit(data)
    here = _autotune.cache_file()
    fp = _autotune.host_fingerprint()
    assert {"cpu", "caches", "torch", "mkl", "onednn", "cpu_count"} <= set(fp)
    other = dict(fp, cpu="Another CPU", caches={"L2": "512K", "L3": "8192K"})
    _autotune.clear_memo()
    monkeypatch.setattr(_autotune, "_fingerprint", other)
    assert _autotune.cache_file() != here
    fit(data)
    assert len(tuner) == 2  # another host: measured again, into its own file
    assert json.loads(_autotune.cache_file().read_text())["fingerprint"] == other
    # and the thread count is part of the key
    fit(data, num_threads=1)
    fit(data, num_threads=2)
    keys = json.loads(_autotune.cache_file().read_text())["choices"]
    assert any("threads=1" in k for k in keys) and any("threads=2" in k for k in keys)
