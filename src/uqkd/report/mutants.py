"""Realistic mutations of the code each tabular claim tests: a claim that holds must stop holding under them.

A verdict that no realistic bug can move is not a finding. Each :class:`Mutant` names one bug a
person could plausibly write (the square root of a noise variance forgotten, the mean of k draws
replaced by one draw, inverse-variance weights inverted, a pilot ignored, variances attached to
the wrong inputs, ...), the experiments it changes and the claims it must move. ``tests/
test_claim_mutants.py`` runs each experiment at its quick size twice, as shipped and with the
mutant applied (in-process, caches cleared), and asserts that every listed claim's verdict moves
away from the shipped one (``holds`` -> ``contradicted``/``inconclusive``; ``contradicted`` ->
``holds``/``inconclusive``). Claims no mutant can move are registered as code checks
(:data:`uqkd.report.claims.CODE_CHECK`) and shown in their own report section.

The LLM claims' mutants act on synthetic students x questions tables (the LLM pipeline is too slow
to run twice per bug in a test): see ``tests/test_llm_knowledge_change.py``,
``tests/test_llm_cluster_stats.py`` and :data:`LLM_MUTANTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .claims import Mutant, all_claims, claim_modules

__all__ = ["Mutant", "MUTANTS", "LLM_MUTANTS", "SIZES", "clear_caches", "mutants_for"]


#: run sizes of the mutation test (in-process, seconds each): the quick profile, made smaller where it stays decisive
_BUILTIN_SIZES: dict[str, dict[str, Any]] = {
    "teacher-noise-linear": {},
    "variance-aware-linear": {},
    "bootstrap-linear": {},
    "adaptive-budget-linear": {},
    "teacher-noise-mlp": {"sigmas": (0.0, 2.0)},
    "variance-aware-mlp": {"n_students": 60, "ks": (1, 3, 10, 30), "alphas": (0.5, 1.0)},
    "student-entropy": {},
    "init-noise-mlp": {"sigma_inits": (0.0, 0.2)},
    "bootstrap-mlp": {},
}


def _wrap(module: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]], setattr_: Any) -> None:
    setattr_(module, name, make(getattr(module, name)))


def _noise_sd_is_variance(setattr_: Any) -> None:
    from ..experiments import linear as L

    _wrap(L, "teacher_moments", lambda f: lambda mu, nv, *a, **k: f(mu, np.asarray(nv) ** 2, *a, **k), setattr_)


def _noise_halved(setattr_: Any) -> None:
    from ..experiments import linear as L

    _wrap(L, "teacher_moments", lambda f: lambda mu, nv, *a, **k: f(mu, np.asarray(nv) * 0.5, *a, **k), setattr_)


def _mlp_noise_dropped(setattr_: Any) -> None:
    from ..experiments import mlp as M

    _wrap(M, "teacher_moments", lambda f: lambda mu, nv, *a, **k: f(mu, np.asarray(nv) * 0.0, *a, **k), setattr_)


def _average_is_first_draw(setattr_: Any) -> None:
    from .. import aggregate

    _wrap(aggregate, "average", lambda f: lambda ts: np.asarray(ts)[:, 0], setattr_)


def _weights_inverted(setattr_: Any) -> None:
    from .. import aggregate

    _wrap(aggregate, "_weights_from_shrunk_variance", lambda f: lambda v, k, s2, axis=-1: 1.0 / f(v, k, s2, axis),
          setattr_)


def _variances_misaligned(setattr_: Any) -> None:
    from .. import aggregate

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def rolled(*a: Any, **k: Any) -> Any:
            axis = k.get("axis", a[3] if len(a) > 3 else -1)
            return np.roll(f(*a, **k), 1, axis=axis)
        return rolled

    _wrap(aggregate, "shrunk_variance_from_moments", make, setattr_)


def _pilot_ignored(setattr_: Any) -> None:
    from .. import aggregate

    _wrap(aggregate, "allocate_budget_two_stage",
          lambda f: lambda pilot_var, *a, **k: f(np.ones_like(np.asarray(pilot_var, dtype=float)), *a, **k), setattr_)


def _pilot_misaligned(setattr_: Any) -> None:
    from .. import aggregate

    _wrap(aggregate, "allocate_budget_two_stage",
          lambda f: lambda pilot_var, *a, **k: f(np.roll(np.asarray(pilot_var, dtype=float), 1), *a, **k), setattr_)


def _resample_weights_dropped(setattr_: Any) -> None:
    from ..students import linear as SL

    _wrap(SL, "fit_wls", lambda f: lambda X, Y, W, *a, **k: f(X, Y, np.ones_like(W), *a, **k), setattr_)


def _teacher_label_noise_dropped(setattr_: Any) -> None:
    from ..experiments import linear as L

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def draws(seed: Any, identity: Any, ids: Any, fn: Any) -> Any:
            out = f(seed, identity, ids, fn)
            return out * 0.0 if identity and identity[-1] == "noise" else out
        return draws

    _wrap(L, "student_draws", make, setattr_)


def _teacher_is_the_labels(setattr_: Any) -> None:
    import dataclasses

    from ..experiments import mlp as M

    _wrap(M, "teacher_for", lambda f: lambda cfg, seed: dataclasses.replace(f(cfg, seed), mu_train=f(cfg, seed).split.y_train),
          setattr_)


def _soft_is_argmax(setattr_: Any) -> None:
    from ..students import mlp as SM

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def targets(proba: Any, mode: str = "argmax", *a: Any, **k: Any) -> Any:
            return f(proba, "argmax" if mode == "soft" else mode, *a, **k)
        return targets

    _wrap(SM, "distillation_targets", make, setattr_)


def _init_snapshot_aliased(setattr_: Any) -> None:
    from ..students import mlp as SM

    cls = SM.BatchedMLP
    _wrap(cls, "param_vectors", lambda f: lambda self, which="final": f(self, "final"), setattr_)


def _students_scored_hard(setattr_: Any) -> None:
    from ..experiments import mlp as M

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def hard(proba: Any, y: Any) -> Any:
            p = np.asarray(proba)
            return f(np.eye(p.shape[-1])[p.argmax(axis=-1)], y)  # predict() where predict_proba() belongs
        return hard

    _wrap(M, "_mean_summaries", make, setattr_)


def _no_training(setattr_: Any) -> None:
    import dataclasses

    from ..experiments import mlp as M

    _wrap(M, "mlp_students", lambda f: lambda cfg, *a, **k: f(dataclasses.replace(cfg, lr=1e-12), *a, **k), setattr_)


_BUILTIN_MUTANTS: tuple[Mutant, ...] = (
    Mutant("noise-sd-is-variance", "teacher noise drawn with sd = its variance (the square root forgotten)",
           ("teacher-noise-linear",), ("F1", "B-closed-form-mse"), _noise_sd_is_variance),
    Mutant("noise-halved", "the teacher's noise variance halved (a stray 1/2 from a half-variance convention)",
           ("teacher-noise-linear",), ("F1", "B-closed-form-mse"), _noise_halved),
    Mutant("average-is-first-draw", "averaging keeps the first of the k draws (the 1/k removed)",
           ("variance-aware-linear",), ("F2", "F5-linear"), _average_is_first_draw),
    Mutant("weights-inverted", "inverse-variance weights inverted (weights proportional to the variance)",
           ("variance-aware-linear",), ("F3", "B-oracle-free-linear"), _weights_inverted),
    Mutant("variances-misaligned", "shrunk per-input variances attached to the wrong inputs (shifted by one)",
           ("variance-aware-linear",), ("F3", "B-oracle-free-linear"), _variances_misaligned),
    Mutant("resample-weights-dropped", "the bootstrap counts are not used: every student fits the full training set",
           ("bootstrap-linear",), ("S5-bootstrap-size",), _resample_weights_dropped),
    Mutant("teacher-label-noise-dropped", "the noisy-teacher cells never add their label noise",
           ("bootstrap-linear",), ("B-bootstrap-noisy-teacher",), _teacher_label_noise_dropped),
    Mutant("pilot-ignored", "the two-stage allocation ignores the pilot variances (all equal)",
           ("adaptive-budget-linear",), ("B-adaptive-budget-linear",), _pilot_ignored),
    Mutant("pilot-misaligned", "pilot variances attached to the wrong inputs (shifted by one)",
           ("adaptive-budget-linear",), ("B-adaptive-budget-linear",), _pilot_misaligned),
    Mutant("mlp-noise-dropped", "the MLP students' teacher noise is never added",
           ("teacher-noise-mlp",), ("F1-mlp",), _mlp_noise_dropped),
    Mutant("mlp-average-is-first-draw", "averaging keeps the first of the k draws (MLP students)",
           ("variance-aware-mlp",), ("F5-mlp", "F2-mlp"), _average_is_first_draw),
    Mutant("students-scored-hard", "the students' entropy computed from their hard predictions (predict where "
           "predict_proba belongs)", ("student-entropy",), ("F4",), _students_scored_hard),
    Mutant("no-training", "the optimiser never moves the perturbed students (learning rate lost)",
           ("init-noise-mlp",), ("B-init-noise-function-space",), _no_training),
    Mutant("init-snapshot-aliased", "the 'before' parameter snapshot aliases the trained weights (a reference, not a "
           "copy)", ("init-noise-mlp",), ("S5-init-noise-params",), _init_snapshot_aliased),
    Mutant("teacher-is-the-labels", "the teacher's outputs replaced by the training labels (the teacher fit skipped)",
           ("bootstrap-mlp",), ("S5-bootstrap-teacher-mlp",), _teacher_is_the_labels),
    Mutant("soft-is-argmax", "soft-label targets built as one-hot argmax labels",
           ("student-entropy",), ("B-soft-sampled-labels",), _soft_is_argmax),
)

def _discovered() -> tuple[tuple[Mutant, ...], dict[str, dict[str, Any]]]:
    """Mutants and mutation-test sizes declared next to their claims: a claims module may define ``MUTANTS`` (a
    tuple of :class:`Mutant`) and ``MUTANT_SIZES`` (``{experiment: overrides}``; an experiment it omits runs at its
    quick profile), so a new experiment's claim brings its mutant without an edit here."""
    import importlib

    all_claims()
    muts: list[Mutant] = []
    sizes: dict[str, dict[str, Any]] = {}
    for name in claim_modules():
        mod = importlib.import_module(name)
        found = getattr(mod, "MUTANTS", ())
        if not (isinstance(found, tuple) and all(isinstance(m, Mutant) for m in found)):
            raise TypeError(f"{name}.MUTANTS: expected a tuple of Mutant, got {found!r}")
        muts.extend(found)
        for m in found:
            for e in m.experiments:
                sizes.setdefault(e, {})
        sizes.update(getattr(mod, "MUTANT_SIZES", {}))
    return tuple(muts), sizes


_FOUND_MUTANTS, _FOUND_SIZES = _discovered()
#: every tabular mutant: the built-in ones above and those declared by claims modules
MUTANTS: tuple[Mutant, ...] = (*_BUILTIN_MUTANTS, *_FOUND_MUTANTS)
#: run sizes of the mutation test per experiment
SIZES: dict[str, dict[str, Any]] = {**_FOUND_SIZES, **_BUILTIN_SIZES}


#: the LLM claims' mutants: (claim, mutant description, the test that applies it to a synthetic table)
LLM_MUTANTS: tuple[tuple[str, str, str], ...] = (
    ("F5-llm", "averaging's students distilled like single-response KD (its selection lost)",
     "tests/test_llm_cluster_stats.py::test_f5_llm_holds_contradicted_inconclusive_with_question_rows"),
    ("B-llm-uqkd-methods", "inverse-variance loss weights ignored (it trains like single)",
     "tests/test_llm_cluster_stats.py::test_f5_llm_only_iv_loss_improves_is_not_holds_with_question_rows"),
    ("B-llm-hallucination", "the method's students hallucinate like single's",
     "tests/test_llm_cluster_stats.py::test_hallucination_by_students_with_question_rows"),
    ("F4-llm", "the students' own spread as large as across students (intra not suppressed)",
     "tests/test_llm_cluster_stats.py::test_f4_llm_with_question_rows"),
    ("F1-llm", "the teacher temperature does not reach the sampler (inter-variance falls with it)",
     "tests/test_llm_cluster_stats.py::test_f1_llm_slope_with_question_rows"),
    ("B-llm-students-learn", "the students are not trained (alignment at or below the untrained student's)",
     "tests/test_llm_cluster_stats.py::test_students_learn_with_question_rows"),
    ("B-llm-learned-noise", "averaging picks the answer farthest from the mean",
     "tests/test_llm_knowledge_change.py::test_learned_noise_claim_holds_and_its_mutant_is_contradicted"),
    ("B-llm-label-noise", "the methods select labels no better than single",
     "tests/test_llm_knowledge_change.py::test_label_noise_claim_and_its_mutant"),
    ("B-llm-uncertainty-fidelity", "before and after swapped (the start scored as the distilled student)",
     "tests/test_llm_knowledge_change.py::test_fidelity_claim_verdicts"),
    ("B-llm-adaptive-budget", "adaptive students more variable than uniform ones (allocation inverted)",
     "tests/test_llm_budget_experiment.py::test_claim_contradicted_when_adaptive_is_more_variable"),
)


def mutants_for(claim_id: str) -> list[str]:
    """Names (or descriptions, for LLM claims) of the mutants declared for ``claim_id``."""
    return [m.name for m in MUTANTS if claim_id in m.claims] + [d for c, d, _ in LLM_MUTANTS if c == claim_id]


def clear_caches() -> None:
    """Forget every in-process memo of the experiment modules (teachers, draws, fitted students), so a run with
    or without a mutant computes its numbers afresh."""
    import importlib
    import sys

    loaded = sorted(m for m in sys.modules if m.startswith("uqkd.experiments."))
    for name in (*loaded, "uqkd.data.tabular", "uqkd.data.classification"):
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - optional module
            continue
        for attr in vars(mod).values():
            if callable(getattr(attr, "cache_clear", None)):
                attr.cache_clear()
        for key, attr in vars(mod).items():
            if key.endswith("_CACHE") and hasattr(attr, "clear"):
                attr.clear()
