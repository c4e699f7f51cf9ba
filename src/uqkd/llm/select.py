r"""Training sets built from k teacher answers per question (PAPER.md §7, LLM).

Methods
-------
``single``
    one teacher answer per question, drawn at random (standard KD).
``multi-response``
    all k (non-empty) answers.
``averaging``
    the answer whose embedding is most cosine-similar to the mean embedding of the k answers.
``variance-weighting``
    the paper's fusion with the untrained student's own k samples: with teacher and student mean
    embeddings :math:`\mu_T, \mu_S` and variances :math:`v_T, v_S` (per-dimension variance
    averaged over dimensions),
    :math:`\mu_{VA} = (\mu_T / v_T + \mu_S / v_S) / (1/v_T + 1/v_S)`; train on the teacher answer
    closest (cosine) to :math:`\mu_{VA}`.
``inverse-variance-loss``
    oracle-free: the averaging answer, with per-example loss weight
    :math:`w_i \propto 1 / \tilde v_{T,i}` where :math:`\tilde v_{T,i} = (v_{T,i} + \bar v_T)/2` is the
    teacher's dispersion shrunk half-way towards its mean over questions
    (:func:`uqkd.aggregate.inverse_variance_sample_weights` with prior degrees of freedom k - 1;
    the automatic prior assumes chi-square variances, which embedding dispersions averaged over
    dimensions are not), normalised to mean one. Confident (low-dispersion) questions weigh more,
    at most twice the average.

Rows have ``id, prompt, completion, weight, teacher_var, method, sample_index`` and the uncertainty's
provenance ``k`` (teacher answers the row was chosen from), ``embedder`` (the id of the embedder that
measured ``teacher_var``), ``teacher`` and ``decoding`` (from the samples file) in one of TRL's
prompt-completion formats (``conversational`` message lists, or ``standard`` strings); TRL's
SFTTrainer trains on them as they are, and :class:`uqkd.llm.train.WeightedSFTTrainer` also applies
``weight``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._seeding import make_rng
from ..aggregate import inverse_variance_combine, inverse_variance_sample_weights
from ..config import UserError
from .embed import Embedder

__all__ = [
    "METHODS",
    "embedding_dispersion",
    "nearest_to",
    "select_averaging",
    "select_variance_weighting",
    "build_training_set",
    "FORMATS",
]

METHODS = ("single", "multi-response", "averaging", "variance-weighting", "inverse-variance-loss")


def embedding_dispersion(emb: np.ndarray) -> float:
    r"""Per-dimension variance of k embeddings (ddof=1; 0 when k = 1), averaged over dimensions.

    Parameters
    ----------
    emb : array of shape (k, d)
    """
    e = np.asarray(emb, dtype=float)
    if e.ndim != 2 or e.shape[0] < 1:
        raise ValueError(f"emb: expected shape (k, d) with k >= 1, got {e.shape}")
    if e.shape[0] == 1:
        return 0.0
    return float(e.var(axis=0, ddof=1).mean())


def nearest_to(emb: np.ndarray, target: np.ndarray) -> int:
    """Index of the row of ``emb`` (k, d) with the largest cosine similarity to ``target`` (d,)."""
    e = np.asarray(emb, dtype=float)
    t = np.asarray(target, dtype=float)
    en = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    tn = t / max(float(np.linalg.norm(t)), 1e-12)
    return int(np.argmax(en @ tn))


def select_averaging(emb: np.ndarray) -> int:
    """Index of the answer nearest (cosine) the mean embedding of the k answers (``emb`` (k, d))."""
    return nearest_to(emb, np.asarray(emb, dtype=float).mean(axis=0))


def select_variance_weighting(teacher_emb: np.ndarray, student_emb: np.ndarray) -> tuple[int, np.ndarray]:
    r"""The paper's variance-weighted target: index of the teacher answer nearest :math:`\mu_{VA}`.

    Parameters
    ----------
    teacher_emb : array (k_T, d)
    student_emb : array (k_S, d)

    Returns
    -------
    index : int
    mu_va : array (d,)
    """
    t = np.asarray(teacher_emb, dtype=float)
    s = np.asarray(student_emb, dtype=float)
    est = np.stack([t.mean(axis=0), s.mean(axis=0)])  # (2, d)
    v = np.array([embedding_dispersion(t), embedding_dispersion(s)])  # (2,)
    if v.sum() == 0:
        v = np.array([0.0, 1.0])  # both deterministic: trust the teacher
    mu, _ = inverse_variance_combine(est, np.broadcast_to(v[:, None], est.shape).copy())
    return nearest_to(t, mu), mu


FORMATS = ("conversational", "standard")


def _prompt(q: str, fmt: str) -> Any:
    return [{"role": "user", "content": q}] if fmt == "conversational" else f"Question: {q}\nAnswer:"


def _completion(a: str, fmt: str) -> Any:
    return [{"role": "assistant", "content": a}] if fmt == "conversational" else " " + a


def _nonempty(texts: Sequence[str]) -> list[int]:
    return [j for j, t in enumerate(texts) if t and t.strip()]


def build_training_set(
    records: Sequence[dict[str, Any]],
    method: str,
    embedder: Embedder | None = None,
    *,
    seed: int = 0,
    student_index: int = 0,
    format: str = "conversational",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn sample records into training rows for one student.

    Parameters
    ----------
    records : sequence of dict
        Lines of a samples file: ``id``, ``question``, ``samples`` (k teacher answers) and, for
        ``variance-weighting``, ``student_samples`` (the untrained student's answers).
    method : str
        One of :data:`METHODS`.
    embedder : Embedder
        Needed by every method but ``single`` and ``multi-response``.
    seed, student_index : int
        ``single`` draws answer j from the stream named by (seed, "single", id, student_index).
    format : {"conversational", "standard"}
        TRL's dataset formats. ``conversational``: ``prompt`` = ``[{"role": "user", "content": q}]``,
        ``completion`` = ``[{"role": "assistant", "content": a}]``, so TRL applies the student's
        chat template exactly as uqkd does. ``standard``: ``prompt`` = ``"Question: {q}\nAnswer:"``,
        ``completion`` = ``" " + a`` (TRL appends EOS), for models without a chat template.

    Returns
    -------
    rows : list of dict
    info : dict
        ``n_questions``, ``n_skipped`` (questions whose answers were all empty), ``n_rows``.

    Raises
    ------
    UserError
        Unknown method, no records, a missing field, or nothing left to train on.
    """
    if method not in METHODS:
        raise UserError(f"method: expected one of {', '.join(METHODS)}; got {method!r}")
    if format not in FORMATS:
        raise UserError(f"format: expected one of {', '.join(FORMATS)}; got {format!r}")
    if not records:
        raise UserError("samples: empty dataset (no questions)")
    needs_emb = method in ("averaging", "variance-weighting", "inverse-variance-loss")
    if needs_emb and embedder is None:
        raise ValueError(f"embedder: method {method!r} needs an embedder")
    rows: list[dict[str, Any]] = []
    skipped = 0
    disp: list[float] = []
    ks: list[int] = []
    for n, rec in enumerate(records):
        for f in ("id", "question", "samples"):
            if f not in rec:
                raise UserError(f"samples: record {n + 1} has no {f!r} field")
        texts = rec["samples"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise UserError(f"samples: record {n + 1}: 'samples' must be a list of strings, got {texts!r:.80}")
        if not isinstance(rec["question"], str):
            raise UserError(f"samples: record {n + 1}: 'question' must be a string, got {rec['question']!r:.80}")
        dv = rec.get("dispersion")
        if dv is not None and (isinstance(dv, bool) or not isinstance(dv, (int, float)) or not np.isfinite(dv)
                               or dv < 0):
            raise UserError(f"samples: record {n + 1}: 'dispersion' must be a finite number >= 0, got {dv!r}")
        ok = _nonempty(texts)
        if not ok:
            skipped += 1
            continue
        qid, q = str(rec["id"]), rec["question"]
        emb = embedder.encode([texts[j] for j in ok]) if needs_emb else None
        tv = float(rec["dispersion"]) if "dispersion" in rec and rec["dispersion"] is not None else (
            embedding_dispersion(emb) if emb is not None else None)
        prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else {}
        emb_id = (rec.get("embedder") if rec.get("dispersion") is not None
                  else getattr(embedder, "name", None) if emb is not None else None)
        base = {"id": qid, "prompt": _prompt(q, format), "teacher_var": tv, "method": method, "weight": 1.0,
                "k": len(texts), "embedder": emb_id, "teacher": rec.get("teacher"),
                "decoding": prov.get("decoding")}
        if method == "single":
            j = ok[int(make_rng(seed, "single", qid, student_index).integers(len(ok)))]
            rows.append({**base, "completion": _completion(texts[j], format), "sample_index": j})
        elif method == "multi-response":
            rows.extend({**base, "completion": _completion(texts[j], format), "sample_index": j} for j in ok)
        elif method in ("averaging", "inverse-variance-loss"):
            j = ok[select_averaging(emb)]
            rows.append({**base, "completion": _completion(texts[j], format), "sample_index": j})
            disp.append(tv)
            ks.append(len(texts))
        else:  # variance-weighting
            ss = rec.get("student_samples")
            if ss is None:
                raise UserError(
                    f"samples: record {n + 1} ({qid}) has no 'student_samples'; variance-weighting needs the "
                    "untrained student's answers (run `uqkd llm sample --student derived` (or a model) to add them)"
                )
            s_ok = [t for t in ss if isinstance(t, str) and t.strip()] or [""]
            j = ok[select_variance_weighting(emb, embedder.encode(s_ok))[0]]
            rows.append({**base, "completion": _completion(texts[j], format), "sample_index": j})
    if not rows:
        raise UserError(f"samples: nothing to train on ({skipped} questions had only empty answers)")
    if method == "inverse-variance-loss":
        # variable k per question (``uqkd llm sample --budget``): shrink with the smallest k's degrees of
        # freedom (conservative), then weight question i by k_i / s~_i^2
        k = min(ks) if ks else 1
        d = np.asarray([np.nan if x is None else x for x in disp], dtype=float)
        ok_d = k >= 2 and np.all(np.isfinite(d)) and d.mean() > 0
        w = inverse_variance_sample_weights(d, k, prior_df=k - 1, axis=0) if ok_d else np.ones(len(d))
        if ok_d:
            w = w * np.asarray(ks, dtype=float) / k
        w = np.minimum(w / w.mean(), 10.0)
        w = w / w.mean()
        for r, wi in zip(rows, w):
            r["weight"] = float(wi)
    return rows, {"n_questions": len(records), "n_skipped": skipped, "n_rows": len(rows)}
