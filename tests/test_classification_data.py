"""Offline classification loaders: shapes, stratified split, standardisation, covertype handling."""

from __future__ import annotations

import numpy as np
import pytest

from uqkd.config import UserError
from uqkd.data.classification import (
    CLASSIFICATION_DATASETS,
    load_classification,
    load_covertype,
    split_classification,
)


@pytest.mark.parametrize(
    "name,n,d,c",
    [("digits", 1797, 64, 10), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2), ("mnist", 5000, 784, 10)],
)
def test_loaders_shapes_and_standardisation(name, n, d, c):
    sp = load_classification(name, seed=0)
    assert sp.X_train.shape[1] == sp.X_test.shape[1] == d
    assert len(sp.y_train) + len(sp.y_test) == n
    assert abs(len(sp.y_test) / n - 0.2) < 0.01
    assert sp.n_classes == c and set(np.unique(sp.y_train)) == set(range(c))
    sd = sp.X_train.std(axis=0)
    assert np.allclose(sp.X_train.mean(axis=0), 0, atol=1e-8)
    assert np.allclose(sd[sd > 0], 1)


def test_split_is_stratified_seeded_and_disjoint():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = np.repeat(["a", "b", "c"], [200, 50, 50])
    a = split_classification(X, y, seed=1, name="t")
    b = split_classification(X, y, seed=1, name="t")
    c = split_classification(X, y, seed=2, name="t")
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert not np.array_equal(a.X_test, c.X_test)
    np.testing.assert_array_equal(np.bincount(a.y_test), [40, 10, 10])
    assert a.n_classes == 3


def test_split_validation():
    with pytest.raises(ValueError, match="y"):
        split_classification(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="y"):
        split_classification(np.zeros((10, 2)), np.zeros(10))  # one class
    with pytest.raises(ValueError, match="dataset"):
        load_classification("imagenet")


def test_covertype_missing_gives_user_error_saying_how(monkeypatch, tmp_path):
    monkeypatch.setenv("UQKD_COVTYPE", str(tmp_path / "nope.npz"))
    with pytest.raises(UserError, match="UQKD_COVTYPE"):
        load_covertype()
    monkeypatch.delenv("UQKD_COVTYPE")
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="fetch_covtype"):
        load_covertype()


def test_covertype_from_local_npz(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 54))
    y = rng.integers(1, 8, size=700)
    np.savez(tmp_path / "cov.npz", X=X, y=y)
    monkeypatch.setenv("UQKD_COVTYPE", str(tmp_path / "cov.npz"))
    sp = load_covertype(n_rows=500)
    assert len(sp.y_train) + len(sp.y_test) == 500
    assert sp.n_classes == 7 and sp.X_train.shape[1] == 54
    assert "covertype" in CLASSIFICATION_DATASETS
