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

Rows have ``id, prompt, completion, weight, teacher_var, method, sample_index`` in one of TRL's
prompt-completion formats (``conversational`` message lists, or ``standard`` strings); TRL's
SFTTrainer trains on them as they are, and :class:`uqkd.llm.train.WeightedSFTTrainer` also applies
``weight``. Every row also carries the teacher's uncertainty about its prompt, so that a user can
filter the set (:func:`uncertainty_columns`; all in the embedding space named by ``embedder``):

``teacher_var``
    the dispersion of the k teacher answers: per-dimension variance of their embeddings (ddof=1),
    averaged over dimensions (:func:`embedding_dispersion`); 0 when fewer than 2 answers.
``dispersion_df``
    its effective degrees of freedom, Satterthwaite's :math:`(m-1)\,\mathrm{tr}(S)^2/\mathrm{tr}(S^2)`
    with :math:`S` the sample covariance of the m non-empty answers' embeddings (plug-in; between
    m - 1, one direction of spread, and :math:`(m-1)^2`); 0 when m < 2 or all answers coincide.
    The inverse-variance weights use the conservative m - 1.
``n_clusters``, ``agreement``
    the answers grouped by complete-linkage clustering at cosine distance :data:`CLUSTER_DISTANCE`
    (every pair in a cluster at cosine similarity >= 0.85): the number of clusters and the share
    of the non-empty answers in the largest one (1.0: the teacher always says the same thing).
``dist_to_medoid``
    cosine distance of the chosen answer to the medoid answer (the one with the smallest summed
    cosine distance to the others); 0 for the medoid itself.
``k``, ``n_nonempty``
    teacher answers the row was chosen from, and how many of them were non-empty.
``embedder``, ``teacher``, ``decoding``
    the embedder id that measured all of the above, the teacher and its decoding settings (from the
    samples file).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._seeding import make_rng
from ..aggregate import inverse_variance_combine, inverse_variance_sample_weights
from ..config import UserError
from ..methods import METHODS as _REGISTRY
from ..methods import method_names, resolve_method
from .embed import Embedder

__all__ = [
    "METHODS",
    "embedding_dispersion",
    "nearest_to",
    "select_averaging",
    "select_variance_weighting",
    "build_training_set",
    "uncertainty_columns",
    "FORMATS",
    "CLUSTER_DISTANCE",
]

CLUSTER_DISTANCE = 0.15

#: the LLM methods of the one registry (:data:`uqkd.methods.METHODS`, domain ``llm``)
METHODS = method_names("llm")


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


def _cosine_distances(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=float)
    en = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - en @ en.T, 0.0, 2.0)


def uncertainty_columns(emb: np.ndarray) -> dict[str, Any]:
    """``dispersion_df``, ``n_clusters``, ``agreement``, ``medoid`` (an index) and ``distances`` (m x m cosine)
    of m answers' embeddings (m, d).

    Definitions in the module docstring. Deterministic: no randomness, ties broken by the lowest index.
    """
    e = np.asarray(emb, dtype=float)
    m = e.shape[0]
    if m == 0:
        raise ValueError("emb: expected at least one answer")
    if m >= 2:
        c = e - e.mean(axis=0)
        g = c @ c.T  # Gram matrix: tr(S) and tr(S^2) up to the same (m-1) factors
        t1, t2 = float(np.trace(g)), float(np.sum(g * g))
        df = float((m - 1) * t1 * t1 / t2) if t2 > 1e-24 else 0.0
    else:
        df = 0.0
    dist = _cosine_distances(e)
    if m >= 2:
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        cond = squareform(dist, checks=False)
        labels = fcluster(linkage(cond, method="complete"), t=CLUSTER_DISTANCE, criterion="distance")
        sizes = np.bincount(labels)
        n_cl, agree = int(np.count_nonzero(sizes)), float(sizes.max() / m)
    else:
        n_cl, agree = 1, 1.0
    return {"dispersion_df": df, "n_clusters": n_cl, "agreement": agree,
            "medoid": int(np.argmin(dist.sum(axis=1))), "distances": dist}


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
    max_dispersion: float | None = None,
    min_agreement: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn sample records into training rows for one student.

    Parameters
    ----------
    records : sequence of dict
        Lines of a samples file: ``id``, ``question``, ``samples`` (k teacher answers) and, for
        ``variance-weighting``, ``student_samples`` (the untrained student's answers).
    method : str
        One of :data:`METHODS` (or an alias in :data:`uqkd.methods.METHODS`).
    embedder : Embedder
        Needed by every method but ``single`` and ``multi-response``; with it, every row gets the
        uncertainty columns (module docstring), without it they are None. A record's own
        ``dispersion`` is used when its ``embedder`` is this embedder's ``name`` (or not recorded);
        a record measured with another embedder has its dispersion recomputed in this embedder's
        space over all its k answers, as ``uqkd llm sample`` measures it (never two spaces mixed).
    seed, student_index : int
        ``single`` draws answer j from the stream named by (seed, "single", id, student_index).
    format : {"conversational", "standard"}
        TRL's dataset formats. ``conversational``: ``prompt`` = ``[{"role": "user", "content": q}]``,
        ``completion`` = ``[{"role": "assistant", "content": a}]``, so TRL applies the student's
        chat template exactly as uqkd does. ``standard``: ``prompt`` = ``"Question: {q}\nAnswer:"``,
        ``completion`` = ``" " + a`` (TRL appends EOS), for models without a chat template.

    max_dispersion, min_agreement : float, optional
        Drop questions whose ``teacher_var`` is above ``max_dispersion``, or whose ``agreement`` is
        below ``min_agreement`` (a share in [0, 1]), before the weights are computed.

    Returns
    -------
    rows : list of dict
    info : dict
        ``n_questions``, ``n_skipped`` (questions whose answers were all empty), ``n_rows``,
        ``n_dropped_max_dispersion``, ``n_dropped_min_agreement`` and ``dropped`` (their ids),
        ``n_recomputed`` (records whose dispersion was recomputed in this embedder's space).

    Raises
    ------
    UserError
        Unknown method, no records, a missing field, or nothing left to train on.
    """
    method = resolve_method(method, domain="llm").name
    if format not in FORMATS:
        raise UserError(f"format: expected one of {', '.join(FORMATS)}; got {format!r}")
    if not records:
        raise UserError("samples: empty dataset (no questions)")
    needs_emb = _REGISTRY[method].needs_embedder
    if needs_emb and embedder is None:
        raise ValueError(f"embedder: method {method!r} needs an embedder")
    for name, v in (("max_dispersion", max_dispersion), ("min_agreement", min_agreement)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0):
            raise UserError(f"{name}: expected a finite number >= 0, got {v!r}")
    if min_agreement is not None and min_agreement > 1:
        raise UserError(f"min_agreement: expected a share in [0, 1], got {min_agreement!r}")
    rows: list[dict[str, Any]] = []
    skipped = 0
    dropped = {"max_dispersion": [], "min_agreement": []}
    recomputed = 0
    disp: list[float] = []
    ks: list[int] = []
    emb_name = getattr(embedder, "name", None)
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
        emb = embedder.encode([texts[j] for j in ok]) if embedder is not None else None
        # the sampling-time dispersion only where it was measured in this embedder's space: never two spaces mixed
        # (a record that does not name its embedder is taken to be in the given one's space, as before)
        same_space = dv is not None and (embedder is None or rec.get("embedder") in (None, emb_name))
        if same_space:
            tv: float | None = float(dv)
        elif dv is not None:  # measured in another space: recomputed as `uqkd llm sample` defines it (all k answers)
            tv = embedding_dispersion(embedder.encode(texts))
            recomputed += 1
        elif emb is not None:
            tv = embedding_dispersion(emb)
        else:
            tv = None
        unc = uncertainty_columns(emb) if emb is not None else None
        if max_dispersion is not None and tv is not None and tv > max_dispersion:
            dropped["max_dispersion"].append(qid)
            continue
        if min_agreement is not None and unc is not None and unc["agreement"] < min_agreement:
            dropped["min_agreement"].append(qid)
            continue
        prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else {}
        emb_id = emb_name if emb is not None else (rec.get("embedder") if dv is not None else None)
        base = {"id": qid, "prompt": _prompt(q, format), "teacher_var": tv, "method": method, "weight": 1.0,
                "dispersion_df": unc["dispersion_df"] if unc else None,
                "n_clusters": unc["n_clusters"] if unc else None, "agreement": unc["agreement"] if unc else None,
                "k": len(texts), "n_nonempty": len(ok), "embedder": emb_id, "teacher": rec.get("teacher"),
                "decoding": prov.get("decoding")}

        def row(j: int, base: dict[str, Any] = base, unc: Any = unc, ok: list[int] = ok,
                texts: list[str] = texts) -> dict[str, Any]:
            d = float(unc["distances"][ok.index(j), unc["medoid"]]) if unc else None
            return {**base, "completion": _completion(texts[j], format), "sample_index": j, "dist_to_medoid": d}

        if method == "single":
            j = ok[int(make_rng(seed, "single", qid, student_index).integers(len(ok)))]
            rows.append(row(j))
        elif method == "multi-response":
            rows.extend(row(j) for j in ok)
        elif method in ("averaging", "inverse-variance-loss"):
            j = ok[select_averaging(emb)]
            rows.append(row(j))
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
            rows.append(row(j))
    info = {"n_questions": len(records), "n_skipped": skipped, "n_rows": len(rows),
            "n_dropped_max_dispersion": len(dropped["max_dispersion"]),
            "n_dropped_min_agreement": len(dropped["min_agreement"]), "dropped": dropped,
            "n_recomputed": recomputed}
    if not rows and (dropped["max_dispersion"] or dropped["min_agreement"]):
        why = [f"{len(dropped[k])} by {k}={v:g}" for k, v in (("max_dispersion", max_dispersion),
                                                                 ("min_agreement", min_agreement)) if v is not None]
        raise UserError(f"samples: nothing to train on: the filters dropped every question ({', '.join(why)}; "
                        f"{skipped} had only empty answers); loosen them (the teacher_var and agreement columns "
                        "of an unfiltered build show the values)")
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
    return rows, info
