"""Students: batched linear regression (numpy) and, in other modules, batched MLPs and causal LMs.

The torch-based names (``BatchedMLP``, ``distillation_targets``) are imported on first access,
so ``import uqkd`` works, and stays fast, without torch.
"""

from typing import Any

from .linear import BatchedLinearRegression, fit_ols_batched, fit_wls_batched, loo_predictions

__all__ = [
    "BatchedLinearRegression",
    "fit_ols_batched",
    "fit_wls_batched",
    "loo_predictions",
    "BatchedMLP",
    "distillation_targets",
]

_TORCH_NAMES = {"BatchedMLP": "mlp", "distillation_targets": "mlp"}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(f".{_TORCH_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
