r"""The distillation methods: one registry for the tabular and the LLM methods.

Every method is one :class:`DistillationMethod` in :data:`METHODS` (the one public registry),
keyed by its canonical name, with the domains it applies to (``tabular``, ``llm``), its flags
(``oracle``: uses information a user distilling a real teacher lacks; ``needs_embedder``;
``beyond_paper``: a uqkd method, not the paper's), its aliases (other accepted names; a
``deprecated`` alias is an old name, accepted with a :class:`FutureWarning`), and where its
behaviour lives (``behaviour``): tabular methods turn a student's k teacher draws per input into
targets (:func:`method_targets`), LLM methods select training rows from k sampled answers
(:func:`uqkd.llm.select.build_training_set`). :func:`resolve_method` looks a name up (canonical
or alias, within a domain); :func:`method_names` gives the choices of a domain, from which the
configs' and the command line's choices and help are generated.

Tabular methods: the student family decides only how a target is fit (OLS / WLS in closed form,
a batched MLP by weighted Adam) and what the *reference* prediction of the shrinkage method is
(a held-out student prediction: leave-one-out for OLS, two-fold cross-fitting for an MLP).
``variance-aware-linear``, ``variance-aware-mlp`` and the ``adaptive-budget-*`` experiments
(label rules ``averaging`` and ``wls``) all dispatch through :func:`method_targets`.

* ``single``: standard KD, one teacher draw per input.
* ``averaging``: the mean of the k draws, :math:`\bar y_i`.
* ``variance-weighting-paper-oracle`` (oracle): the published rule
  (:func:`uqkd.aggregate.paper_oracle_labels`), :math:`\bar y_i` weighted against the
  noise-free teacher mean with the true noise variance, the draws' variance taken with ddof=0.
  The same rule as the LLM method ``variance-weighting`` (``rule``), which weighs the teacher's
  answers against the untrained student's own samples instead: oracle information in the
  tabular design only, so the two keep distinct names.
* ``variance-weighting-wls`` (alias ``wls``): labels :math:`\bar y_i` with loss weights
  :math:`k/\tilde s_i^2`, :math:`\tilde s_i^2` the shrunk per-input sample variance
  (:func:`uqkd.aggregate.inverse_variance_sample_weights`; with per-input counts
  :math:`k_i`, :func:`uqkd.aggregate.shrunk_variance_unequal_k`).
* ``variance-weighting-shrinkage`` (alias ``shrinkage``): :math:`\bar y_i` shrunk towards the
  reference prediction by inverse variances (:func:`uqkd.aggregate.shrinkage_labels`).

With one draw per input (k = 1) there is no per-input variance information and every tabular
method but ``single`` is ``averaging``: the labels are the draw itself, no weights.

LLM methods (``uqkd.llm.select``): ``single``, ``multi-response``, ``averaging``,
``variance-weighting`` (the paper's) and ``inverse-variance-loss`` (uqkd's; the rule of
``variance-weighting-wls``). ``single`` and ``averaging`` are one entry each, for both domains.

Pure numpy; no torch.

Examples
--------
>>> import numpy as np
>>> mean_k, var_k = np.array([[1.0, 2.0, 3.0]]), np.array([[0.5, 1.0, 2.0]])
>>> labels, w = method_targets("averaging", mean_k=mean_k, var_k=var_k, k=4)
>>> labels is mean_k, w is None
(True, True)
>>> resolve_method("wls", domain="tabular").name
'variance-weighting-wls'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import aggregate
from .config import UserError

__all__ = ["DistillationMethod", "MethodTargets", "METHODS", "DOMAINS", "resolve_method", "method_names",
           "check_methods", "method_table", "method_targets"]

#: the domains a method applies to
DOMAINS = ("tabular", "llm")
#: where each domain's methods get their behaviour
BEHAVIOUR = {"tabular": "targets: uqkd.methods.method_targets", "llm": "selection: uqkd.llm.select.build_training_set"}


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
        The canonical name (what result tables carry).
    oracle : bool
        Whether the method uses oracle information (the noise-free teacher mean, the true noise level).
    description : str
        One line for tables and ``uqkd show``.
    needs : tuple of str
        Tabular: the inputs of :func:`method_targets` beyond ``mean_k``, ``var_k`` and ``k`` it reads.
    weighted : bool
        Whether it returns per-input loss weights.
    domains : tuple of str
        Where it applies: ``tabular`` (:func:`method_targets`), ``llm`` (:func:`uqkd.llm.select.build_training_set`).
    needs_embedder : bool
        LLM: whether selecting its training rows embeds the answers.
    needs_student_samples : bool
        LLM: whether it also reads the untrained student's own sampled answers.
    beyond_paper : bool
        A uqkd method, not one of the paper's.
    aliases : tuple of str
        Other accepted names.
    deprecated : tuple of str
        Old names, still accepted, with a :class:`FutureWarning` naming the canonical one.
    rule : str
        The canonical name of the method whose rule this one applies with other inputs ("" when none).
    """

    name: str
    oracle: bool
    description: str
    needs: tuple[str, ...] = ()
    weighted: bool = False
    domains: tuple[str, ...] = ("tabular",)
    needs_embedder: bool = False
    needs_student_samples: bool = False
    beyond_paper: bool = False
    aliases: tuple[str, ...] = ()
    deprecated: tuple[str, ...] = ()
    rule: str = ""

    @property
    def behaviour(self) -> dict[str, str]:
        """``{domain: where the behaviour lives}``: targets (tabular) or selection (LLM)."""
        return {d: BEHAVIOUR[d] for d in self.domains}


METHODS: dict[str, DistillationMethod] = {m.name: m for m in (
    DistillationMethod("single", False, "standard KD: one teacher draw per input", needs=("single",),
                       domains=("tabular", "llm")),
    DistillationMethod("multi-response", False, "all k teacher answers per question as training rows",
                       domains=("llm",)),
    DistillationMethod("averaging", False, "mean of the k teacher draws per input (LLM: the answer nearest the "
                       "mean embedding of the k)", domains=("tabular", "llm"), needs_embedder=True),
    DistillationMethod("variance-weighting-paper-oracle", True,
                       "published rule: mean_k weighted against the noise-free teacher mean with the true noise "
                       "variance", needs=("teacher_mean", "noise_var"), rule="variance-weighting"),
    DistillationMethod("variance-weighting-wls", False,
                       "oracle-free: weighted least squares on mean_k, weights k / shrunk per-input variance of the "
                       "draws", weighted=True, beyond_paper=True, aliases=("wls",)),
    DistillationMethod("variance-weighting-shrinkage", False,
                       "oracle-free: mean_k shrunk towards a held-out student prediction (leave-one-out for OLS, "
                       "two-fold cross-fitted for MLPs) by inverse variances", needs=("reference",),
                       beyond_paper=True, aliases=("shrinkage",)),
    DistillationMethod("variance-weighting", False,
                       "published rule: the teacher answer nearest the inverse-variance combination of the teacher's "
                       "and the untrained student's mean answer embeddings", domains=("llm",), needs_embedder=True,
                       needs_student_samples=True),
    DistillationMethod("inverse-variance-loss", False,
                       "the averaging answer, its loss weighted by the inverse shrunk embedding dispersion "
                       "of the k answers", weighted=True, domains=("llm",), needs_embedder=True, beyond_paper=True,
                       rule="variance-weighting-wls"),
)}


def _lookup(domain: str | None) -> dict[str, tuple[DistillationMethod, bool]]:
    """``{accepted name: (method, deprecated?)}`` of a domain (every domain when None)."""
    out: dict[str, tuple[DistillationMethod, bool]] = {}
    for m in METHODS.values():
        if domain is None or domain in m.domains:
            out[m.name] = (m, False)
            out.update({a: (m, False) for a in m.aliases})
            out.update({a: (m, True) for a in m.deprecated})
    return out


def method_names(domain: str | None = None) -> tuple[str, ...]:
    """Canonical names of the methods of ``domain`` (``tabular``, ``llm``; None: all), in registry order."""
    if domain is not None and domain not in DOMAINS:
        raise UserError(f"domain: expected one of {', '.join(DOMAINS)}; got {domain!r}")
    return tuple(m.name for m in METHODS.values() if domain is None or domain in m.domains)


def resolve_method(name: str, *, domain: str | None = None, argname: str = "method") -> DistillationMethod:
    """The method a name (canonical or alias) denotes within ``domain``.

    Raises
    ------
    UserError
        ``<argname>: expected one of <the domain's methods>; got <name>`` for an unknown name.
    """
    table = _lookup(domain)
    hit = table.get(name) if isinstance(name, str) else None
    if hit is None:
        raise UserError(f"{argname}: expected one of {', '.join(method_names(domain))}; got {name!r}"
                        + (f" (not a{'n' if domain == 'llm' else ''} {domain} method)" if name in _lookup(None) else ""))
    m, deprecated = hit
    if deprecated:
        warnings.warn(f"{argname}: method name {name!r} is deprecated; use {m.name!r}", FutureWarning, stacklevel=2)
    return m


def get_method(name: str, argname: str = "method") -> DistillationMethod:
    """:func:`resolve_method` over the tabular methods (kept for callers of the old name)."""
    return resolve_method(name, domain="tabular", argname=argname)


def check_methods(methods: Iterable[str], argname: str = "methods", domain: str = "tabular") -> tuple[str, ...]:
    """Check a config's list of method names (each registered in ``domain``, none twice); their canonical names."""
    names = tuple(resolve_method(m, domain=domain, argname=argname).name for m in methods)
    dup = sorted({m for m in names if names.count(m) > 1})
    if dup:
        raise UserError(f"{argname}: expected each method once, got {', '.join(dup)} more than once")
    return names


def method_table(domain: str = "tabular") -> dict[str, tuple[bool, str]]:
    """``{name: (oracle, description)}`` of every method of ``domain``."""
    return {m.name: (m.oracle, m.description) for m in METHODS.values() if domain in m.domains}


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
        A tabular method of :data:`METHODS` (canonical name or alias).
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
    m = resolve_method(name, domain="tabular")
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
