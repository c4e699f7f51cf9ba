"""Offline data loaders."""

from .tabular import (
    TABULAR_DATASETS,
    TabularSplit,
    load_boston,
    load_diabetes,
    load_tabular,
    make_linear_gaussian,
    standardize_split,
)

__all__ = [
    "TABULAR_DATASETS",
    "TabularSplit",
    "load_boston",
    "load_diabetes",
    "load_tabular",
    "make_linear_gaussian",
    "standardize_split",
]
