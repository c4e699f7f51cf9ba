"""Two-stage allocation of a teacher-sampling budget over questions (``uqkd llm sample --budget``, ``llm-budget``).

A pilot of ``pilot`` answers per question, their SBERT dispersions shrunk by empirical Bayes and
the rest of the budget allocated by them (:func:`uqkd.aggregate.allocate_budget_two_stage`,
Neyman: :math:`k_i \\propto \\tilde s_i`, floor ``pilot``). The pilot answers are kept: sample j of a
question is drawn from the stream named by (seed, question, j), so they are the first ``pilot``
answers of every question whatever the allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["budget_samples"]


def budget_samples(teacher: Any, qs: Sequence[str], ids: Sequence[str], pilot: int, budget: int, dec: Any, seed: int,
                   cache: Any, emb: Any, *, batch_size: int = 64, truncate: bool = False,
                   progress: bool = False) -> tuple[Any, list[int], list[Any], tuple[list[float], list[float]]]:
    """Two-stage sampling: ``pilot`` answers per question, then ``budget`` allocated by shrunk dispersion.

    Returns
    -------
    (generation, k, embeddings, (pilot dispersions, shrunk pilot dispersions))
        ``generation.texts[i]`` holds the ``k[i]`` answers of question i (``sum(k) == budget``),
        ``embeddings[i]`` their embeddings (k_i, d). When no pilot shows any dispersion the
        budget is spread evenly (nothing to allocate by).
    """
    from ..aggregate import allocate_budget_two_stage, dispersion_sample_df
    from .generate import generate_samples
    from .select import embedding_dispersion

    qs, ids = list(qs), list(ids)
    g0 = generate_samples(teacher, qs, pilot, dec, seed=seed, cache=cache, batch_size=batch_size,
                          ids=ids, truncate=truncate, progress=progress)
    e0 = emb.encode([t for row in g0.texts for t in row]).reshape(len(qs), pilot, -1)
    d0 = np.array([embedding_dispersion(x) for x in e0])
    nu = float("nan")
    if np.all(d0 == 0):  # no dispersion anywhere: nothing to allocate by; spread the budget evenly
        v = d0.copy()
        ks = np.full(len(qs), budget // len(qs))
        ks[: budget - int(ks.sum())] += 1
    else:
        # an SBERT dispersion sums 384 per-dimension variances: far more than pilot - 1 degrees of freedom
        nu = dispersion_sample_df(e0)
        ks, v = allocate_budget_two_stage(d0, pilot, budget, sample_df=nu)
    ks = [int(x) for x in ks]
    texts = [list(r) for r in g0.texts]
    ntok = [[int(c) for c in r] for r in np.asarray(g0.n_tokens).tolist()]
    stats = {"seconds": g0.seconds, "tokens": g0.generated_tokens, "hits": g0.cache_hits, "misses": g0.cache_misses}
    for kk in sorted(set(ks) - {pilot}):
        idx = [i for i, x in enumerate(ks) if x == kk]
        gi = generate_samples(teacher, [qs[i] for i in idx], kk, dec, seed=seed, cache=cache,
                              batch_size=batch_size, ids=[ids[i] for i in idx], truncate=truncate, progress=progress)
        for i, row in zip(idx, gi.texts):
            if row[:pilot] != texts[i]:  # per-sequence seeding guarantees this; a broken backend does not
                raise RuntimeError(f"question {ids[i]}: the top-up redrew different pilot answers")
            texts[i] = list(row)
        for i, row in zip(idx, np.asarray(gi.n_tokens).tolist()):
            ntok[i] = [int(c) for c in row]
        stats["seconds"] += gi.seconds
        stats["tokens"] += gi.generated_tokens
        stats["hits"] += gi.cache_hits
        stats["misses"] += gi.cache_misses
    e = [emb.encode(t) for t in texts]
    g0.texts = texts
    g0.seconds, g0.generated_tokens = stats["seconds"], stats["tokens"]
    g0.cache_hits, g0.cache_misses = stats["hits"], stats["misses"]
    g0.n_empty = sum(1 for row in texts for t in row if not t)
    g0.extra["pilot_sample_df"] = nu
    g0.extra["n_tokens"] = ntok  # per question, k_i counts (g0.n_tokens keeps the pilot's rectangle)
    g0.extra["identical_questions"] = sum(1 for row in texts if len(row) >= 2 and len(set(row)) == 1)
    return g0, ks, e, ([float(x) for x in d0], [float(x) for x in v])
