r"""The variance-aware distillation methods: one registry for every tabular student family.

Each method turns a student's k teacher draws per input into the targets its student is fit
to: labels ``(R, n)`` and optional per-input loss weights ``(R, n)``. The student family
decides only how a target is fit (OLS / WLS in closed form, a batched MLP by weighted Adam)
and what the *reference* prediction of the shrinkage method is (a held-out student
prediction: leave-one-out for OLS, two-fold cross-fitting for an MLP).
``variance-aware-linear``, ``variance-aware-mlp`` and the ``adaptive-budget-*`` experiments
(label rules ``averaging`` and ``wls``) all dispatch through :func:`method_targets`.

Methods (``oracle`` marks those that use information a user distilling a real teacher lacks):

* ``single``: standard KD, one teacher draw per input.
* ``averaging``: the mean of the k draws, :math:`\bar y_i`.
* ``variance-weighting-paper-oracle`` (oracle): the published rule
  (:func:`uqkd.aggregate.paper_oracle_labels`), :math:`\bar y_i` weighted against the
  noise-free teacher mean with the true noise variance, the draws' variance taken with ddof=0.
* ``variance-weighting-wls``: labels :math:`\bar y_i` with loss weights :math:`k/\tilde s_i^2`,
  :math:`\tilde s_i^2` the shrunk per-input sample variance
  (:func:`uqkd.aggregate.inverse_variance_sample_weights`; with per-input counts
  :math:`k_i`, :func:`uqkd.aggregate.shrunk_variance_unequal_k`).
* ``variance-weighting-shrinkage``: :math:`\bar y_i` shrunk towards the reference prediction
  by inverse variances (:func:`uqkd.aggregate.shrinkage_labels`).

With one draw per input (k = 1) there is no per-input variance information and every method
but ``single`` is ``averaging``: the labels are the draw itself, no weights.

Pure numpy; no torch.

Examples
--------
>>> import numpy as np
>>> mean_k, var_k = np.array([[1.0, 2.0, 3.0]]), np.array([[0.5, 1.0, 2.0]])
>>> labels, w = method_targets("averaging", mean_k=mean_k, var_k=var_k, k=4)
>>> labels is mean_k, w is None
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import aggregate

__all__ = ["DistillationMethod", "MethodTargets", "METHODS", "get_method", "check_methods", "method_table",
           "method_targets"]


class MethodTargets(NamedTuple):
    """What R students of one method are fit to: ``labels`` (R, n) and ``sample_weight`` (R, n) or None."""

    labels: np.ndarray
    sample_weight: np.ndarray | None


@dataclass(frozen=True)
class DistillationMethod:
    """A registered method.

    Attributes
    ----------
    name : str
    oracle : bool
        Whether the method uses oracle information (the noise-free teacher mean, the true noise level).
    description : str
        One line for tables and ``uqkd show``.
    needs : tuple of str
        The inputs of :func:`method_targets` beyond ``mean_k``, ``var_k`` and ``k`` it reads.
    weighted : bool
        Whether it returns per-input loss weights.
    """

    name: str
    oracle: bool
    description: str
    needs: tuple[str, ...] = ()
    weighted: bool = False


METHODS: dict[str, DistillationMethod] = {m.name: m for m in (
    DistillationMethod("single", False, "standard KD: one teacher draw per input", needs=("single",)),
    DistillationMethod("averaging", False, "mean of the k teacher draws per input"),
    DistillationMethod("variance-weighting-paper-oracle", True,
                       "published rule: mean_k weighted against the noise-free teacher mean with the true noise "
                       "variance", needs=("teacher_mean", "noise_var")),
    DistillationMethod("variance-weighting-wls", False,
                       "oracle-free: weighted least squares on mean_k, weights k / shrunk per-input variance of the "
                       "draws", weighted=True),
    DistillationMethod("variance-weighting-shrinkage", False,
                       "oracle-free: mean_k shrunk towards a held-out student prediction (leave-one-out for OLS, "
                       "two-fold cross-fitted for MLPs) by inverse variances", needs=("reference",)),
)}


def get_method(name: str, argname: str = "method") -> DistillationMethod:
    """Look up a method; an unknown name raises ``ValueError`` listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"{argname}: unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def check_methods(methods: tuple[str, ...], argname: str = "methods") -> None:
    """Check a config's list of method names (each registered, none twice)."""
    for m in methods:
        get_method(m, argname)
    dup = sorted({m for m in methods if list(methods).count(m) > 1})
    if dup:
        raise ValueError(f"{argname}: expected each method once, got {', '.join(dup)} more than once")


def method_table() -> dict[str, tuple[bool, str]]:
    """``{name: (oracle, description)}`` of every registered method."""
    return {m.name: (m.oracle, m.description) for m in METHODS.values()}


def _unequal_k_weights(var_k: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Precisions k_i / shrunk sample variance of the k_i draws, (R, n), for per-input counts k_i."""
    kk = np.broadcast_to(k, var_k.shape)
    v = aggregate.shrunk_variance_unequal_k(var_k, kk, axis=-1)  # (R, n)
    floor = 1e-12 * np.maximum(v.mean(axis=-1, keepdims=True), 1e-300)
    return kk / np.maximum(v, floor)


def _shrunk_variance(var_k: Any, k: int, cache: dict[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(s2, shrunk s2)`` of ``var_k`` along the inputs, memoised in ``cache`` for this very array."""
    hit = cache.get(("shrunk_variance", k))
    if hit is not None and hit[0] is var_k:
        return hit[1], hit[2]
    from ._validation import check_variances

    s2 = check_variances(var_k, "teacher_var")  # the name inverse_variance_sample_weights gives it
    v = aggregate.shrunk_variance_from_moments(s2, k, axis=1)
    cache[("shrunk_variance", k)] = (var_k, s2, v)  # holds var_k: its id cannot be reused meanwhile
    return s2, v


def method_targets(
    name: str,
    *,
    mean_k: np.ndarray,
    var_k: np.ndarray | None,
    k: int | np.ndarray,
    single: np.ndarray | None = None,
    noise_var: np.ndarray | None = None,
    teacher_mean: np.ndarray | None = None,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
    cache: dict[Any, Any] | None = None,
) -> MethodTargets:
    r"""Labels and loss weights one method gives R students.

    Parameters
    ----------
    name : str
        A key of :data:`METHODS`.
    mean_k : array (R, n)
        Mean of each student's k draws per input.
    var_k : array (R, n) or None
        Their sample variance (ddof=1); zero (or ignored) where k = 1. Only the
        variance-weighting methods read it.
    k : int or int array broadcastable to (R, n)
        Draws per input: one count for every input, or per-input counts :math:`k_i`
        (``averaging`` and ``variance-weighting-wls`` only; the weights then use
        :func:`uqkd.aggregate.shrunk_variance_unequal_k`).
    single : array (R, n), optional
        One teacher draw per input (``single``).
    noise_var, teacher_mean : arrays (n,), optional
        The true per-draw noise variance and the noise-free teacher mean: oracle
        information, read by ``variance-weighting-paper-oracle`` only.
    reference : callable, optional
        ``reference(labels) -> (R, n)``: held-out student predictions of ``labels``
        (``variance-weighting-shrinkage``).
    cache : dict, optional
        Scratch space for calls on the same ``var_k`` (every method of one sweep cell): the
        shrunk variances that ``variance-weighting-wls`` and ``variance-weighting-shrinkage`` both
        use are computed once. The numbers are the same with or without it; an entry is used only
        for the very ``var_k`` object (and k) it was computed from.

    Returns
    -------
    MethodTargets
        ``labels`` (R, n), ``mean_k`` itself (the same object) wherever the method reduces to
        averaging; ``sample_weight`` (R, n) or None.
    """
    m = get_method(name)
    if m.name == "single":
        if single is None:
            raise ValueError("single: method 'single' needs the single-draw labels")
        return MethodTargets(single, None)
    if np.ndim(k) > 0:  # per-input draw counts (adaptive allocation)
        if m.name == "averaging":
            return MethodTargets(mean_k, None)
        if m.name == "variance-weighting-wls":
            return MethodTargets(mean_k, _unequal_k_weights(var_k, np.asarray(k)))
        raise ValueError(f"k: method {m.name!r} needs one draw count for every input, got per-input counts")
    k = int(k)
    if m.name == "averaging" or k == 1:
        return MethodTargets(mean_k, None)
    if m.name == "variance-weighting-paper-oracle":
        if noise_var is None or teacher_mean is None:
            raise ValueError("noise_var, teacher_mean: the paper-oracle method needs both (oracle information)")
        var0 = var_k * (k - 1) / k  # ddof=0 variance of the draws, as the published script
        return MethodTargets(aggregate.paper_oracle_labels(mean_k, var0, np.asarray(teacher_mean)[None, :],
                                                           np.asarray(noise_var)[None, :]), None)
    if m.name == "variance-weighting-wls":
        if cache is None:
            return MethodTargets(mean_k, aggregate.inverse_variance_sample_weights(var_k, k, axis=1))  # (R, n)
        s2, v = _shrunk_variance(var_k, k, cache)
        return MethodTargets(mean_k, aggregate._weights_from_shrunk_variance(v, k, s2, axis=1))
    if m.name == "variance-weighting-shrinkage":
        if reference is None:
            raise ValueError("reference: the shrinkage method needs a held-out student prediction")
        v = (aggregate.shrunk_variance_from_moments(var_k, k, axis=1) if cache is None
             else _shrunk_variance(var_k, k, cache)[1]) / k  # Var(mean_k) estimate (R, n)
        cv = reference(mean_k)  # (R, n)
        tau2 = aggregate.crossfit_variance(mean_k, cv, v, axis=1)  # (R, 1)
        return MethodTargets(aggregate.shrinkage_labels(mean_k, v, cv, tau2), None)
    raise AssertionError(f"method {m.name!r} is registered but has no rule")  # pragma: no cover
