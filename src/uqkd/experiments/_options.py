"""Declared ranges shared by the experiment configs (keyword arguments of :func:`uqkd.config.option`).

One place for the bounds every experiment uses, so two experiments cannot disagree on what a
valid ``n_students`` or learning rate is, plus the memory estimates of the tabular cells
(checked by :func:`uqkd.config.check_memory`). Upper bounds are generous sanity limits:
values beyond them overflow (noise scales), exhaust memory or run for days.
"""

from __future__ import annotations

import functools
from typing import Any

#: students per cell (inter-student variance needs two)
N_STUDENTS: dict[str, Any] = {"min": 2, "max": 1_000_000}
#: teacher draws per input
DRAWS: dict[str, Any] = {"min": 1, "max": 100_000}
#: teacher noise variance as a fraction of Var(y_train): >= 0 (sigmas, teacher_noises) or > 0 (alphas)
NOISE: dict[str, Any] = {"min": 0, "max": 1e3}
POSITIVE_NOISE: dict[str, Any] = {"gt": 0, "max": 1e3}
#: heteroscedastic strength h of g(x) ~ exp(h z(x)) (z standardised: |h| = 10 is a ~1e20 variance ratio)
STRENGTH: dict[str, Any] = {"min": 0, "max": 10}
#: relative weight noise of an initialisation (W <- W (1 + eps), eps ~ N(0, sigma_init^2))
INIT_NOISE: dict[str, Any] = {"min": 0, "max": 10}
#: MLP hidden layer widths
WIDTHS: dict[str, Any] = {"min": 1, "max": 100_000}
#: Adam learning rates
LR: dict[str, Any] = {"gt": 0, "max": 10}
#: full-batch epochs
EPOCHS: dict[str, Any] = {"min": 1, "max": 1_000_000}
#: torch threads per cell process
THREADS: dict[str, Any] = {"min": 1, "max": 1024}
#: fraction of the training set
FRACTION: dict[str, Any] = {"gt": 0, "max": 1}
#: softmax temperatures
TEMPERATURE: dict[str, Any] = {"gt": 0, "max": 1e3}
#: tabular regression datasets
TABULAR = ("boston", "boston11", "diabetes", "synthetic")


@functools.lru_cache(maxsize=8)
def n_train_and_features(dataset: str) -> tuple[int, int]:
    """(training rows, features) of a tabular dataset (its split does not depend on the seed's value)."""
    from ..data.tabular import load_tabular

    split = load_tabular(dataset, seed=0)
    return int(split.X_train.shape[0]), int(split.X_train.shape[1])


def mlp_param_count(n_features: int, hidden: tuple[int, ...], n_out: int = 1) -> int:
    """Weights and biases of an MLP ``n_features -> hidden... -> n_out``."""
    sizes = [n_features, *hidden, n_out]
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def mlp_memory(cfg: Any, extra_rn: int = 8) -> tuple[float, str, str]:
    """Peak bytes of one cell of R MLP students on a tabular dataset (``memory_estimate``).

    :class:`uqkd.students.mlp.BatchedMLP` trains students in cache-sized chunks, so activations do
    not grow with R; what does is about six float64 copies of every student's parameters
    (weights, gradient, Adam's two moments, the initial and final vectors), ``extra_rn`` (R, n)
    float64 arrays (labels, weights, predictions) and a tracked-parameter trajectory if any.
    """
    n, p = n_train_and_features(cfg.dataset)
    R = cfg.n_students
    P = mlp_param_count(p, tuple(cfg.hidden))
    traj = cfg.n_epochs + 1 if hasattr(cfg, "track_param") else 0
    need = 8.0 * R * (6 * P + extra_rn * n + traj)
    return need, "n_students, hidden", (f"n_students={R} x ({P} parameters per student x 6 copies + n={n} "
                                        f"training inputs x {extra_rn} label-sized arrays), float64")
