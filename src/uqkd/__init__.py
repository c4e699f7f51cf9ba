"""uqkd: uncertainty-aware knowledge distillation.

Measure how teacher noise, student initialisation and student sampling propagate into
distilled students, separate inter- from intra-student uncertainty, and distil with
variance-aware labels (averaging, inverse-variance weighting).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from . import aggregate, metrics, theory
from .aggregate import (
    allocate_budget,
    allocate_budget_two_stage,
    average,
    inverse_variance_combine,
    inverse_variance_weights,
    neyman_allocation,
    pooled_variance,
    sample_variance,
    shrunk_variance,
)
from .config import ConfigError, UserError
from .runner import RunResult, run_experiment

__all__ = [
    "__version__",
    "aggregate",
    "metrics",
    "theory",
    "average",
    "sample_variance",
    "pooled_variance",
    "shrunk_variance",
    "inverse_variance_weights",
    "inverse_variance_combine",
    "allocate_budget",
    "allocate_budget_two_stage",
    "neyman_allocation",
    "BatchedLinearRegression",
    "run_experiment",
    "RunResult",
    "ConfigError",
    "UserError",
]


def __getattr__(name: str) -> Any:
    if name == "BatchedLinearRegression":  # scikit-learn (about a second to import) on first use only
        from .students.estimators import BatchedLinearRegression

        return BatchedLinearRegression
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
