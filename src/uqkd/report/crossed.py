r"""Crossed random-effects intervals for LLM comparisons: students x questions, with Satterthwaite df.

An LLM result is a students x questions table per group (method, temperature): every student
answers every question, and the groups answer the same questions. A value is modelled as

.. math:: y_{gsq} = \mu_g + s_{gs} + q_q + (gq)_{gq} + e_{gsq},

students nested in their group, questions crossed with everything, a group x question
interaction and a residual (the crossed mixed model with the method x question term). A linear
contrast of the group means, :math:`\hat\theta = \sum_g c_g \bar y_g`, then has

.. math::

    \widehat{\mathrm{Var}}(\hat\theta) = \sum_g c_g^2 \frac{v_{S,g}}{S_g}
        + \frac{v_Q}{Q} - \sum_g c_g^2 \frac{m_{E,g}}{S_g Q},

where :math:`v_{S,g}` is the variance of group g's student means (estimates
:math:`\sigma^2_s + \sigma^2_e/Q`), :math:`v_Q` the variance across questions of the contrast of
per-question group means (estimates the interaction and residual parts; the question effect
cancels) and :math:`m_{E,g}` group g's residual mean square (removes the residual counted twice).
These are the ANOVA (method-of-moments) estimates of the mixed model's variance components, exact
for balanced tables; the degrees of freedom of the linear combination of mean squares are
Satterthwaite's. When a variance component estimate is negative the total is floored at the
residual part (its own df).

**Paired students.** Student ``r`` of every method at one k is distilled from the same teacher
draws (its draw index), so the methods' students are paired. With ``paired=True`` (every group
with the same number of students) the contrast is formed per (student, question) first,
:math:`d_{rq} = \sum_g c_g y_{grq}`, and its mean's variance is the two-way crossed one,
:math:`v_R/S + v_Q/Q - m_E/(SQ)`: the shared draw index cancels from the comparison. A pairing
that is not real (independent students) leaves the interval valid, with fewer df.

A group with one row (the teacher, the untrained student) is a fixed reference per question: it
has no student or residual term of its own.

Coverage is checked by simulation in ``tests/test_llm_crossed.py``: at 5 students x 24 questions,
A/A data with student, question, interaction and residual effects, the 95% interval covers
>= 0.93 (the crossed bootstrap it replaces covered 0.89 at 5 x 50 and 0.80 at 3 x 24). Below
:data:`MIN_STUDENTS` students per group a comparison's verdict is ``inconclusive`` whatever its
interval ("fewer than 5 students"): intervals are not checked there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import (
    INCONCLUSIVE,
    POWER,
    Comparison,
    NotComputable,
    mde_text,
    mde_two_sample,
    t_interval,
    verdict_from_interval,
)

__all__ = ["MIN_STUDENTS", "FEW_STUDENTS", "METHOD_TEXT", "CrossedEstimate", "crossed_contrast", "contrast_test",
           "log_ratio_contrast_test"]

#: fewest students per group whose interval coverage is checked (below: inconclusive)
MIN_STUDENTS = 5
FEW_STUDENTS = f"fewer than {MIN_STUDENTS} students per group: inconclusive whatever the interval"
METHOD_TEXT = ("crossed mixed model (students nested in method, questions crossed, method x question interaction; "
               "ANOVA variance components, Satterthwaite df), students paired by teacher-draw index across methods; "
               f"inconclusive below {MIN_STUDENTS} students per group")


@dataclass(frozen=True)
class CrossedEstimate:
    """A contrast of group means with its standard error, Satterthwaite df and the smallest group's size."""

    estimate: float
    se: float
    df: float
    n_students: int  # the smallest number of students in a multi-student group
    n_questions: int
    paired: bool


def _check(tables: Sequence[np.ndarray]) -> list[np.ndarray]:
    ys = [np.atleast_2d(np.asarray(t, dtype=float)) for t in tables]
    if not ys:
        raise NotComputable("no groups to compare")
    qs = {y.shape[1] for y in ys}
    if len(qs) != 1:
        raise NotComputable(f"the groups compared answer different numbers of questions ({sorted(qs)})")
    if any(not np.all(np.isfinite(y)) for y in ys):
        raise NotComputable("a per-question value is NaN or infinite")
    (nq,) = qs
    if nq < 2:
        raise NotComputable(f"needs at least two questions (got {nq})")
    return ys


def _two_way(d: np.ndarray) -> tuple[float, float, float]:
    """``(v_R, v_Q, m_E)`` of a rows x columns table: variance of row means, of column means, residual mean square."""
    s, q = d.shape
    rm, cm, gm = d.mean(axis=1), d.mean(axis=0), d.mean()
    v_r = float(rm.var(ddof=1)) if s > 1 else 0.0
    v_q = float(cm.var(ddof=1))
    if s > 1:
        resid = d - rm[:, None] - cm[None, :] + gm
        m_e = float(np.sum(resid**2) / ((s - 1) * (q - 1)))
    else:
        m_e = 0.0
    return v_r, v_q, m_e


def _satterthwaite(terms: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """``(sum of terms, Satterthwaite df)`` of ``[(term, its df), ...]`` (terms may be negative)."""
    total = float(sum(t for t, _ in terms))
    den = sum(t * t / d for t, d in terms if d > 0 and t != 0)
    return total, (total * total / den if den > 0 else float("inf"))


def crossed_contrast(tables: Sequence[np.ndarray], weights: Sequence[float], *, paired: bool = False) -> CrossedEstimate:
    """The contrast ``sum_g weights[g] * mean(tables[g])`` with its crossed mixed-model SE and Satterthwaite df.

    Parameters
    ----------
    tables : sequence of arrays (S_g, Q)
        One students x questions table per group, the same questions in the same order; a one-model
        reference is a (1, Q) table.
    weights : sequence of float
        The contrast (``[1, -1]``: a difference; ``[1]``: one group's mean).
    paired : bool
        Students of the multi-student groups are paired by row index (the same teacher draws); needs
        the same number of students in each.
    """
    ys = _check(tables)
    c = np.asarray(weights, dtype=float)
    if c.shape != (len(ys),) or not np.all(np.isfinite(c)):
        raise ValueError(f"weights: expected {len(ys)} finite numbers, got {weights!r}")
    nq = ys[0].shape[1]
    multi = [y.shape[0] for y in ys if y.shape[0] > 1]
    est = float(sum(w * y.mean() for w, y in zip(c, ys, strict=True)))
    if paired and multi and len(set(multi)) == 1:
        s = multi[0]
        d = sum(w * (y if y.shape[0] > 1 else np.broadcast_to(y, (s, nq))) for w, y in zip(c, ys, strict=True))
        v_r, v_q, m_e = _two_way(np.asarray(d))
        terms = [(v_r / s, s - 1), (v_q / nq, nq - 1), (-m_e / (s * nq), (s - 1) * (nq - 1))]
        floor = (m_e / (s * nq), (s - 1) * (nq - 1))
        was_paired = True
    else:
        cq = sum(w * y.mean(axis=0) for w, y in zip(c, ys, strict=True))
        terms = [(float(np.var(cq, ddof=1)) / nq, nq - 1)]
        floor_t, floor_d = [], []
        for w, y in zip(c, ys, strict=True):
            s = y.shape[0]
            if s < 2 or w == 0:
                continue
            v_r, _, m_e = _two_way(y)
            terms += [(w * w * v_r / s, s - 1), (-w * w * m_e / (s * nq), (s - 1) * (nq - 1))]
            floor_t.append(w * w * m_e / (s * nq))
            floor_d.append((s - 1) * (nq - 1))
        floor = _satterthwaite(list(zip(floor_t, floor_d))) if floor_t else (0.0, float("inf"))
        was_paired = False
    var, df = _satterthwaite(terms)
    if not var > floor[0]:
        var, df = floor
    if not var > 0:
        raise NotComputable("no spread across students or questions: no interval")
    return CrossedEstimate(est, float(np.sqrt(var)), float(df), min(multi) if multi else 1, nq, was_paired)


def _unit(ce: CrossedEstimate) -> str:
    return f"students/group x {ce.n_questions} questions"


def _few(ce: CrossedEstimate) -> bool:
    return ce.n_students < MIN_STUDENTS


def contrast_test(label: str, tables: Sequence[np.ndarray], weights: Sequence[float], direction: str, *,
                  level: float = 0.95, paired: bool = False, threshold: float = 0.0,
                  scale: float | None = None) -> Comparison:
    """A t interval (Satterthwaite df) for a contrast of group means and its verdict against ``threshold``.

    ``scale`` is the size of the values compared: an estimate within ``1e-10 * scale`` of the threshold
    with an interval of that width is rounding error (identical groups), reported as not computable.
    With fewer than :data:`MIN_STUDENTS` students in a group the verdict is ``inconclusive``.
    """
    ce = crossed_contrast(tables, weights, paired=paired)
    if scale is not None and ce.se <= 1e-10 * max(scale, np.finfo(float).tiny):
        raise NotComputable(f"{label}: no spread across students or questions (the groups are identical): no interval")
    lo, hi = t_interval(ce.estimate, ce.se, ce.df, level)
    v = verdict_from_interval(lo, hi, direction, threshold)
    mde = ""
    if _few(ce):
        v, mde = INCONCLUSIVE, f"{FEW_STUDENTS} (smallest group {ce.n_students})"
    elif v == INCONCLUSIVE:
        mde = mde_text(mde_two_sample(ce.se, 1 - level, POWER, ce.df), ce.n_students, _unit(ce))
    return Comparison(label, ce.estimate, lo, hi, v, mde)


def log_ratio_contrast_test(label: str, num: np.ndarray, den: np.ndarray, direction: str, *, level: float = 0.95,
                            paired: bool = False) -> Comparison:
    """Interval for ``mean(num) / mean(den)`` of two students x questions tables of non-negative shares
    (e.g. each student's share ``inter_dev`` of the per-question inter-student variance): the t interval of
    the log ratio from the linearised shares ``num / mean(num) - den / mean(den)`` (delta method) with the
    crossed mixed-model SE and Satterthwaite df; verdict against a ratio of 1."""
    a, b = _check([num, den])
    ma, mb = float(a.mean()), float(b.mean())
    if not (ma > 0 and mb > 0):
        raise NotComputable(f"{label}: a ratio of non-positive values ({ma:.3g} / {mb:.3g})")
    ce = crossed_contrast([a / ma, b / mb], [1.0, -1.0], paired=paired)
    # the shares are skewed (squared deviations) and the student term carries most of their spread: Satterthwaite
    # df counted the question term too and came out near 20 at 5 students, covering 0.92 with strong student
    # effects; capped at the smallest group's student df (S - 1) it covers 0.94-0.98 at 5 x 24 (conservative where
    # student effects are weak; tests/test_llm_crossed.py)
    s_df = ce.n_students - 1
    df = min(ce.df, float(s_df)) if s_df > 0 else ce.df
    ce = CrossedEstimate(ce.estimate, ce.se, df, ce.n_students, ce.n_questions, ce.paired)
    lr = float(np.log(ma / mb))
    lo, hi = t_interval(lr, ce.se, ce.df, level)
    v = verdict_from_interval(lo, hi, direction, 0.0)
    mde = ""
    if _few(ce):
        v, mde = INCONCLUSIVE, f"{FEW_STUDENTS} (smallest group {ce.n_students})"
    elif v == INCONCLUSIVE:
        d = mde_two_sample(ce.se, 1 - level, POWER, ce.df)
        mde = mde_text(float(np.exp(-d if direction == "<" else d)), ce.n_students, _unit(ce), ratio=True)
    return Comparison(label, float(np.exp(lr)), float(np.exp(lo)), float(np.exp(hi)), v, mde, ratio=True)


def describe(ce: CrossedEstimate) -> dict[str, Any]:
    """The estimate's fields as a dict (for tables and tests)."""
    return dict(estimate=ce.estimate, se=ce.se, df=ce.df, n_students=ce.n_students, n_questions=ce.n_questions,
                paired=ce.paired)
