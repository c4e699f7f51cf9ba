r"""Metrics of LLM students and their teacher on QA items with ground truth (PAPER.md, "Metrics").

Per model, on the evaluation questions, from its greedy answer :math:`a_i` and ``k`` sampled
answers :math:`a_{i1..ik}` (embeddings :math:`e(\cdot)` unit-norm SBERT):

- ``mse``: :math:`\frac1n\sum_i \lVert e(a_i) - e(r_i)\rVert^2` against the reference answer :math:`r_i`;
- ``cosine``: :math:`\frac1n\sum_i \cos(e(a_i), e(r_i))`;
- ``alignment``: mean cosine between :math:`a_i` and the teacher's sampled answers to question i;
- ``intra_var``: per question, variance across the k samples summed over dimensions, averaged;
- ``exact_match``: first sentence equals an alias (or ends with "is <alias>");
- ``accuracy``: the answer contains an alias; ``hallucination``: non-empty and contains no alias;
  ``empty_rate``: empty answers.

``mse``, ``cosine``, ``exact_match``, ``accuracy`` and ``hallucination`` need a reference answer: they
average over the questions that have one (``QAItem.answer`` not None) and are NaN when none has; per
question they are NaN where there is none. ``alignment``, ``intra_var``, ``inter_var`` and
``empty_rate`` need no reference (prompt-only, open-ended data).

Across students: ``inter_var`` (per question variance across the students' greedy-answer
embeddings, summed over dimensions, averaged over questions) and, for every per-model metric,
its mean and standard deviation across students.

Per question (:data:`QUESTION_METRICS`, in ``ModelEval.per_question``): the same quantities before
averaging over questions (``mse`` the squared distance of the greedy answer to the reference,
``alignment``, ``hallucination`` / ``accuracy`` as 0/1, ``intra_var`` the model's own sample
variance on that question). :func:`question_rows` writes them as ``record = "question"`` rows (one
per student and question) and the per-question inter-student variance as ``record =
"question-inter"`` rows, so the claims can resample students and questions (the right unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..data.qa import QAItem, contains_alias, exact_match
from ..metrics import inter_student_var, intra_student_var
from .embed import Embedder
from .generate import DecodingConfig, SampleCache, generate_samples
from .models import LoadedLM

__all__ = ["ModelEval", "evaluate_model", "summarize_students", "question_rows", "inter_var_per_question",
           "knowledge_change", "uncertainty_fidelity", "summarize_change", "PER_MODEL_METRICS", "QUESTION_METRICS",
           "CHANGE_METRICS"]

PER_MODEL_METRICS = ("mse", "cosine", "alignment", "intra_var", "exact_match", "accuracy", "hallucination", "empty_rate")
#: per-(model, question) values written as ``record = "question"`` rows
QUESTION_METRICS = ("mse", "alignment", "hallucination", "accuracy", "intra_var")


@dataclass
class ModelEval:
    """One model's answers, embeddings and metrics on the evaluation questions.

    Attributes
    ----------
    greedy : list of str, (n,)
    samples : list of list of str, (n, k)
    greedy_emb : array (n, d)
    sample_emb : array (n, k, d)
    metrics : dict of float, keys :data:`PER_MODEL_METRICS`
    per_question : dict of array (n,), keys :data:`QUESTION_METRICS` (empty when not computed)
    """

    greedy: list[str]
    samples: list[list[str]]
    greedy_emb: np.ndarray
    sample_emb: np.ndarray
    metrics: dict[str, float]
    per_question: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate_model(
    lm: LoadedLM,
    items: Sequence[QAItem],
    embedder: Embedder,
    *,
    k: int = 3,
    decoding: DecodingConfig | None = None,
    seed: int = 0,
    teacher_sample_emb: np.ndarray | None = None,
    cache: SampleCache | None = None,
    batch_size: int = 64,
    self_alignment: bool = False,
    progress: bool = False,
) -> ModelEval:
    """Generate a greedy answer and ``k`` samples per question and compute the per-model metrics.

    Parameters
    ----------
    teacher_sample_emb : array (n, k_T, d), optional
        Embeddings of the teacher's sampled answers (for ``alignment``). Without them
        ``alignment`` is NaN (not computed), unless ``self_alignment`` asks for the model's
        agreement with its own samples (the teacher's own row).
    progress : bool
        Show the generation progress bars (sequences, tokens/s).
    """
    dec = decoding or DecodingConfig()
    qs = [it.question for it in items]
    g = generate_samples(lm, qs, 1, replace(dec, do_sample=False), seed=seed, cache=cache, batch_size=batch_size,
                         progress=progress)
    s = generate_samples(lm, qs, k, dec, seed=seed, cache=cache, batch_size=batch_size, progress=progress)
    greedy = [row[0] for row in g.texts]
    n = len(items)
    has_ref = np.array([it.answer is not None for it in items], dtype=bool)  # prompts without a reference: NaN
    ge = embedder.encode(greedy)  # (n, d)
    ref = np.full_like(ge, np.nan)
    if has_ref.any():
        ref[has_ref] = embedder.encode([it.answer for it in items if it.answer is not None])
    se = embedder.encode([t for row in s.texts for t in row]).reshape(n, k, -1)  # (n, k, d)
    if teacher_sample_emb is not None:
        align_q = np.einsum("nd,nkd->nk", ge, np.asarray(teacher_sample_emb)).mean(axis=1)
    elif self_alignment:
        align_q = np.einsum("nd,nkd->nk", ge, se).mean(axis=1)
    else:
        align_q = np.full(n, np.nan)
    # per question (the unit the claims resample), then the per-model means as before
    def per_ref(f: Any) -> np.ndarray:  # a reference-based 0/1 per question, NaN without a reference
        return np.array([float(f(a, it)) if it.answer is not None else np.nan for a, it in zip(greedy, items)])

    def ref_mean(v: np.ndarray) -> float:  # mean over the questions with a reference (NaN when none has one)
        return float(v[has_ref].mean()) if has_ref.any() else float("nan")

    pq = {
        "mse": ((ge - ref) ** 2).sum(1),
        "alignment": align_q,
        "hallucination": per_ref(lambda a, it: bool(a) and not contains_alias(a, it.aliases)),
        "accuracy": per_ref(lambda a, it: contains_alias(a, it.aliases)),
        "intra_var": se.var(axis=1, ddof=1).sum(-1) if k >= 2 else np.zeros(n),
    }
    m = {
        "mse": ref_mean(pq["mse"]),
        "cosine": ref_mean((ge * ref).sum(1)),
        "alignment": float(np.einsum("nd,nkd->nk", ge, np.asarray(teacher_sample_emb)).mean())
        if teacher_sample_emb is not None
        else float(np.einsum("nd,nkd->nk", ge, se).mean()) if self_alignment else float("nan"),
        "intra_var": float(intra_student_var(se[None])) if k >= 2 else 0.0,
        "exact_match": ref_mean(per_ref(lambda a, it: exact_match(a, it.aliases))),
        "accuracy": ref_mean(pq["accuracy"]),
        "hallucination": ref_mean(pq["hallucination"]),
        "empty_rate": float(np.mean([not a for a in greedy])),
    }
    return ModelEval(greedy, s.texts, ge, se, m, pq)


#: per-(student, question) knowledge change, written beside :data:`QUESTION_METRICS` when a "before" exists
CHANGE_METRICS = ("accuracy_before", "hallucination_before", "learned_noise", "fixed")


def knowledge_change(after: ModelEval, before: ModelEval) -> dict[str, np.ndarray]:
    """Per question, what distillation changed in one student's greedy answer, against the same student before.

    Returns arrays (n,): ``accuracy_before`` and ``hallucination_before`` (0/1, the student before
    distillation); ``learned_noise``: on questions it answered correctly before, 1 if it no longer does
    (noise learned as knowledge), 0 if it still does, NaN on questions it had wrong; ``fixed``: on questions
    it had wrong before, 1 if it now answers correctly, else 0, NaN on questions it had right. The
    learned-noise rate is ``nanmean(learned_noise)``; the net accuracy change is ``accuracy - accuracy_before``.
    """
    a_b = np.asarray(before.per_question["accuracy"], dtype=float)  # (n,)
    a_a = np.asarray(after.per_question["accuracy"], dtype=float)  # (n,)
    if a_b.shape != a_a.shape:
        raise ValueError(f"before: expected the same {a_a.shape[0]} questions as after, got {a_b.shape[0]}")
    right = a_b == 1
    return {
        "accuracy_before": a_b,
        "hallucination_before": np.asarray(before.per_question["hallucination"], dtype=float),
        "learned_noise": np.where(right, 1.0 - a_a, np.nan),
        "fixed": np.where(right, np.nan, a_a),
    }


def uncertainty_fidelity(student: ModelEval, teacher_intra_var: np.ndarray) -> float:
    """Spearman rank correlation across questions between the teacher's per-question dispersion (the variance
    of its sampled answers) and the student's own: does the student stay uncertain where the teacher was?
    NaN when either is constant."""
    from scipy.stats import spearmanr

    x = np.asarray(teacher_intra_var, dtype=float)
    y = np.asarray(student.per_question["intra_var"], dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"teacher_intra_var: expected shape {y.shape}, got {x.shape}")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def summarize_change(evals: Sequence[ModelEval], before: Sequence[ModelEval] | None,
                     teacher_intra_var: np.ndarray | None = None) -> dict[str, Any]:
    """Across students, mean and std (ddof=1) of the per-student learned-noise rate, fix rate, accuracy before
    and net accuracy change (with ``before``, one per student) and of the uncertainty fidelity (with the
    teacher's per-question dispersion). A student with no question right (or wrong) before has no
    learned-noise (fix) rate: NaN, left out of the mean."""
    out: dict[str, Any] = {}
    per: dict[str, list[float]] = {}
    if before is not None:
        for e, b in zip(evals, before):
            ch = knowledge_change(e, b)
            for key in ("learned_noise", "fixed"):
                v = ch[key]
                per.setdefault(key, []).append(float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"))
            per.setdefault("accuracy_before", []).append(float(ch["accuracy_before"].mean()))
            per.setdefault("accuracy_change", []).append(float(e.per_question["accuracy"].mean()
                                                               - ch["accuracy_before"].mean()))
    if teacher_intra_var is not None:
        per["fidelity"] = [uncertainty_fidelity(e, teacher_intra_var) for e in evals]
    for key, vals in per.items():
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        out[f"{key}_mean"] = float(v.mean()) if v.size else float("nan")
        out[f"{key}_std"] = float(v.std(ddof=1)) if v.size >= 2 else float("nan")
    return out


def summarize_students(evals: Sequence[ModelEval]) -> dict[str, Any]:
    """Mean and standard deviation (ddof=1) across students of every per-model metric, plus ``inter_var``.

    Returns
    -------
    dict with ``{metric}_mean``, ``{metric}_std`` for :data:`PER_MODEL_METRICS`, ``inter_var``,
    ``inter_var_se`` (standard error across questions of the per-question inter-student variance)
    and ``n_students``.
    """
    out: dict[str, Any] = {"n_students": len(evals)}
    for key in PER_MODEL_METRICS:
        v = np.array([e.metrics[key] for e in evals], dtype=float)
        out[f"{key}_mean"] = float(v.mean()) if v.size else float("nan")
        out[f"{key}_std"] = float(v.std(ddof=1)) if v.size >= 2 else 0.0
    if len(evals) >= 2:
        emb = np.stack([e.greedy_emb for e in evals])  # (R, n, d)
        per_q = emb.var(axis=0, ddof=1).sum(axis=-1)  # (n,)
        out["inter_var"] = float(inter_student_var(emb))
        out["inter_var_se"] = float(per_q.std(ddof=1) / np.sqrt(len(per_q))) if len(per_q) >= 2 else float("nan")
    else:
        out["inter_var"], out["inter_var_se"] = 0.0, float("nan")
    return out


def inter_var_per_question(evals: Sequence[ModelEval]) -> np.ndarray:
    """Per question, the variance (ddof=1) across the students' greedy-answer embeddings, summed over
    dimensions: shape (n,); its mean is ``inter_var``. Needs at least two students."""
    emb = np.stack([e.greedy_emb for e in evals])  # (R, n, d)
    return emb.var(axis=0, ddof=1).sum(axis=-1)


def inter_deviations(evals: Sequence[ModelEval]) -> np.ndarray:
    r"""Per student and question, :math:`\frac{R}{R-1}\lVert e_{rq} - \bar e_q\rVert^2`: shape (R, n).

    Student r's share of the inter-student variance: its mean over students is
    :func:`inter_var_per_question` exactly, and a table of these lets a bootstrap resample the
    students (not only the questions) of an inter-student variance without storing embeddings.
    """
    emb = np.stack([e.greedy_emb for e in evals])  # (R, n, d)
    r = emb.shape[0]
    return r / (r - 1) * ((emb - emb.mean(axis=0)) ** 2).sum(axis=-1)


def question_rows(evals: Sequence[ModelEval], method: str, split: str,
                  before: Sequence[ModelEval] | None = None,
                  extra: dict[str, Sequence[np.ndarray]] | None = None) -> list[dict[str, Any]]:
    """Compact per-question rows of ``evals`` (the students of one method, or one model).

    ``record = "question"``: one row per (student, question) with ``student``, ``question`` (the
    index in the evaluation list, the same across methods) and the :data:`QUESTION_METRICS`; with
    ``before`` (each student's evaluation before distillation, on the same questions) also the
    :data:`CHANGE_METRICS` of :func:`knowledge_change` (NaN where a rate does not apply); ``extra`` adds
    columns given per student as (n,) arrays (e.g. ``target_correct``, the accuracy of the training labels);
    with two or more students, each of those rows also has ``inter_dev`` (:func:`inter_deviations`)
    and ``record = "question-inter"`` rows give each question's ``inter_var`` across the students. Models without per-question values give none.
    """
    out: list[dict[str, Any]] = []
    dev = inter_deviations(evals) if len(evals) >= 2 else None
    for r, e in enumerate(evals):
        if not e.per_question:
            return []
        cols = [np.asarray(e.per_question[k], dtype=float) for k in QUESTION_METRICS]
        names = list(QUESTION_METRICS)
        if before is not None:
            ch = knowledge_change(e, before[r])
            cols += [ch[k] for k in CHANGE_METRICS]
            names += list(CHANGE_METRICS)
        for key, per_student in (extra or {}).items():
            cols.append(np.asarray(per_student[r], dtype=float))
            names.append(key)
        for q in range(len(cols[0])):
            row = {"record": "question", "method": method, "split": split, "student": r, "question": q,
                   **{k: float(c[q]) for k, c in zip(names, cols)}}
            if dev is not None:
                row["inter_dev"] = float(dev[r, q])
            out.append(row)
    if len(evals) >= 2:
        iv = inter_var_per_question(evals)
        out += [{"record": "question-inter", "method": method, "split": split, "question": q, "inter_var": float(v)}
                for q, v in enumerate(iv)]
    return out
