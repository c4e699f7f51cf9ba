"""Offline tabular data: Boston housing (mlxtend), diabetes (scikit-learn), a synthetic linear-Gaussian generator.

Every loader returns a :class:`TabularSplit`: features and target standardised with the
training split's statistics and an 80/20 split drawn from the given seed, as the paper does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._seeding import make_rng
from .._validation import check_array, check_choice, check_float, check_int

__all__ = [
    "TabularSplit",
    "load_boston",
    "load_diabetes",
    "make_linear_gaussian",
    "standardize_split",
    "load_tabular",
    "TABULAR_DATASETS",
]


@dataclass(frozen=True)
class TabularSplit:
    """A standardised train/test split.

    Attributes
    ----------
    X_train, X_test : arrays of shape (n_train, d), (n_test, d)
    y_train, y_test : arrays of shape (n_train,), (n_test,)
    name : str
    feature_names : tuple of str
    noise_scale_train, noise_scale_test : arrays or None
        For synthetic data, the relative noise standard deviation per input (mean square 1),
        used to make teacher noise heteroscedastic.
    """

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    name: str
    feature_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


BOSTON_FEATURES = (
    "CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT",
)


def standardize_split(
    X: np.ndarray,
    y: np.ndarray,
    *,
    test_size: float = 0.2,
    seed: int = 0,
    name: str = "data",
    feature_names: tuple[str, ...] = (),
    standardize_target: bool = True,
) -> TabularSplit:
    """Split 80/20 (seeded) and standardise features and target with training statistics.

    Parameters
    ----------
    X : array of shape (n, d)
    y : array of shape (n,)
    test_size : float in (0, 1)
    seed : int
        Seed of the split (derived with the dataset name as identity).
    """
    X = check_array(X, "X", ndim=2)
    y = check_array(y, "y", shape=(X.shape[0],))
    test_size = check_float(test_size, "test_size", min_value=0.0, exclusive_min=True, max_value=0.9)
    n = X.shape[0]
    n_test = max(1, int(round(test_size * n)))
    if n - n_test < 2:
        raise ValueError(f"X: expected at least {n_test + 2} rows for a {test_size:.0%} split, got {n}")
    perm = make_rng(seed, "split", name).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    ym, ys = (y[tr].mean(), y[tr].std()) if standardize_target else (0.0, 1.0)
    ys = ys if ys > 0 else 1.0
    return TabularSplit(
        X_train=(X[tr] - mu) / sd,
        X_test=(X[te] - mu) / sd,
        y_train=(y[tr] - ym) / ys,
        y_test=(y[te] - ym) / ys,
        name=name,
        feature_names=tuple(feature_names),
    )


def load_boston(seed: int = 0, test_size: float = 0.2, n_features: int = 13) -> TabularSplit:
    """Boston housing (506 x 13), shipped offline by ``mlxtend``.

    ``n_features=11`` drops CHAS and RAD, matching the published MLP scripts of sections 5
    and 7 (which kept only numeric-dtype columns of the OpenML frame); the default keeps all 13.
    """
    n_features = check_int(n_features, "n_features")
    if n_features not in (11, 13):
        raise ValueError(f"n_features: expected 13 (all) or 11 (drop CHAS, RAD), got {n_features}")
    from mlxtend.data import boston_housing_data

    X, y = boston_housing_data()
    names = BOSTON_FEATURES
    if n_features == 11:
        keep = [i for i, f in enumerate(BOSTON_FEATURES) if f not in ("CHAS", "RAD")]
        X, names = X[:, keep], tuple(BOSTON_FEATURES[i] for i in keep)
    return standardize_split(X, y, test_size=test_size, seed=seed, name="boston", feature_names=names)


def load_diabetes(seed: int = 0, test_size: float = 0.2) -> TabularSplit:
    """scikit-learn's diabetes regression data (442 x 10), bundled offline."""
    from sklearn.datasets import load_diabetes as _ld

    d = _ld()
    return standardize_split(
        d.data, d.target, test_size=test_size, seed=seed, name="diabetes", feature_names=tuple(d.feature_names)
    )


def make_linear_gaussian(
    n: int = 500,
    d: int = 10,
    *,
    coef: np.ndarray | None = None,
    noise: float = 0.5,
    heteroscedastic: float = 0.0,
    seed: int = 0,
    test_size: float = 0.2,
    standardize: bool = False,
) -> TabularSplit:
    r"""Synthetic linear-Gaussian data :math:`y = X\beta + \sigma(x)\,\varepsilon`.

    Parameters
    ----------
    n, d : int
        Rows and features; :math:`X \sim N(0, I_d)`.
    coef : array of shape (d,), optional
        True coefficients (default: drawn from N(0, 1) with the seed).
    noise : float
        Average noise standard deviation.
    heteroscedastic : float
        :math:`\sigma(x) = \text{noise}\cdot e^{h x_1}/\sqrt{E e^{2 h x_1}}`; 0 gives homoscedastic noise.
    standardize : bool
        Standardise with training statistics (off by default so ``coef`` stays the truth).
    """
    n = check_int(n, "n", min_value=4)
    d = check_int(d, "d", min_value=1)
    noise = check_float(noise, "noise", min_value=0.0)
    h = check_float(heteroscedastic, "heteroscedastic")
    rng = make_rng(seed, "make_linear_gaussian", n, d)
    X = rng.standard_normal((n, d))
    beta = rng.standard_normal(d) if coef is None else check_array(coef, "coef", shape=(d,))
    scale = np.exp(h * X[:, 0]) / np.sqrt(np.exp(2 * h * h))  # E exp(2 h x) = exp(2 h^2)
    y = X @ beta + noise * scale * rng.standard_normal(n)
    if standardize:
        return standardize_split(X, y, test_size=test_size, seed=seed, name="synthetic")
    n_test = max(1, int(round(test_size * n)))
    perm = make_rng(seed, "split", "synthetic").permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return TabularSplit(X[tr], X[te], y[tr], y[te], name="synthetic", feature_names=tuple(f"x{i}" for i in range(d)))


TABULAR_DATASETS: dict[str, Callable[..., TabularSplit]] = {
    "boston": load_boston,
    "diabetes": load_diabetes,
    "synthetic": make_linear_gaussian,
}


def load_tabular(name: str, seed: int = 0) -> TabularSplit:
    """Load a registered tabular dataset by name (``boston``, ``boston11``, ``diabetes``, ``synthetic``)."""
    valid = (*TABULAR_DATASETS, "boston11")
    check_choice(name, "dataset", valid)
    if name == "boston11":
        return load_boston(seed=seed, n_features=11)
    return TABULAR_DATASETS[name](seed=seed)
