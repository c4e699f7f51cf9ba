"""Students: batched linear regression (numpy) and, in other modules, batched MLPs and causal LMs."""

from .linear import BatchedLinearRegression, fit_ols_batched, fit_wls_batched, loo_predictions

__all__ = ["BatchedLinearRegression", "fit_ols_batched", "fit_wls_batched", "loo_predictions"]
