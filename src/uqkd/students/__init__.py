"""Students: batched linear regression (numpy) and, in other modules, batched MLPs and causal LMs.

Every tabular family follows one protocol (:class:`uqkd.students.protocol.StudentFamily`):
``fit(X, targets (R, n), sample_weight (R, n) | None)``, ``predict(X) -> (R, m)`` and
``held_out_predictions(X, targets) -> (R, n)``; students are rows everywhere.

The torch-based names (``BatchedMLP``, ``distillation_targets``) are imported on first access,
so ``import uqkd`` works, and stays fast, without torch.
"""

from typing import Any

from .linear import fit_ols, fit_wls, fit_wls_multi, loo_predictions

__all__ = [
    "StudentFamily",
    "SingleStudent",
    "BatchedLinearRegression",
    "fit_ols",
    "fit_wls",
    "fit_wls_multi",
    "loo_predictions",
    "BatchedMLP",
    "distillation_targets",
]

#: names imported on first access: torch (mlp) and scikit-learn (estimators, protocol) are not imported by ``import uqkd``
_TORCH_NAMES = {"BatchedMLP": "mlp", "distillation_targets": "mlp", "BatchedLinearRegression": "estimators",
                "SingleStudent": "protocol", "StudentFamily": "protocol"}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(f".{_TORCH_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
