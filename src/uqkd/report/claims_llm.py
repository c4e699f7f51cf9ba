"""Claims tested by the LLM experiments (sections 4-7).

The student is the unit of replication. Result rows carry, per method, ``{metric}_mean`` and
``{metric}_std`` across ``n_students`` students, and ``inter_var`` (per-question variance across
the students' answers, averaged over ``n_eval`` questions) with ``inter_var_se``, its standard error
across questions. Differences of per-student metrics get Welch t intervals; ratios of variances
get delta-method intervals on the log scale (Welch-Satterthwaite degrees of freedom). A ratio that
needs ``inter_var_se`` where the table has none is ``not computable``.

Methods. The paper's claims (F5-llm, the hallucination claim) compare single-response KD with the
paper's methods only (:data:`PAPER_METHODS`: multi-response, averaging, variance weighting),
Bonferroni over the methods present; uqkd's own methods (``inverse-variance-loss``, ...) have a
separate beyond-the-paper claim.

Splits. Rows may carry a ``split`` column: ``transfer`` (questions the students were distilled on)
and ``heldout``; a table without it is held-out only. Every LLM claim is computed on each split
and shows both; the verdict is the transfer split's (the held-out verdict is shown beside), or the
held-out one's where there is no transfer split.

With the few students of the quick profile a real effect is usually ``inconclusive``; the
report then prints the minimum detectable effect at that number of students.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .claims import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    NOT_COMPUTABLE,
    ClaimSpec,
    Comparison,
    NotComputable,
    Verdict,
    all_of,
    any_of,
    bonferroni_level,
    difference_test,
    first_mde,
    log_ratio_test,
    register_claim,
    weighted_slope,
    welch,
)

__all__ = ["PAPER_METHODS", "TRANSFER", "HELDOUT", "splits", "hallucination_test", "inter_var_ratio_test",
           "mse_gain_llm"]

#: the paper's variance-aware methods (section 7)
PAPER_METHODS = ("multi-response", "averaging", "variance-weighting")
NOT_STUDENT_METHODS = ("single", "teacher", "untrained-student")
TRANSFER, HELDOUT = "transfer", "heldout"
_RANK = {HOLDS: 0, INCONCLUSIVE: 1, NOT_COMPUTABLE: 2, CONTRADICTED: 3}


def splits(df) -> dict:
    """``{split: rows}``, the transfer split first; a table without a ``split`` column is held-out only."""
    if "split" not in df.columns:
        return {HELDOUT: df}
    groups = {str(s): g for s, g in df.groupby("split", sort=False)}
    order = [s for s in (TRANSFER, HELDOUT) if s in groups] + [s for s in groups if s not in (TRANSFER, HELDOUT)]
    return {s: groups[s] for s in order}


@dataclass(frozen=True)
class SplitResult:
    value: str
    interval: str
    verdict: str
    mde: str = ""


def _safe(fn: Callable, d) -> SplitResult:
    try:
        return fn(d)
    except NotComputable as exc:
        return SplitResult(f"could not be computed: {exc}", "", NOT_COMPUTABLE)


def by_split(df, fn: Callable, statistic: str):
    """Run ``fn(rows) -> SplitResult`` on each split; verdict from the transfer split (else the first)."""
    res = {s: _safe(fn, d) for s, d in splits(df).items()}
    primary = TRANSFER if TRANSFER in res else next(iter(res))
    p = res[primary]
    name = {TRANSFER: "transfer", HELDOUT: "held-out"}
    shown = {s: r for s, r in res.items() if not (s == primary and r.verdict == NOT_COMPUTABLE)}
    value = " | ".join(f"{name.get(s, s)}: {r.value}" for s, r in shown.items())
    interval = " | ".join(" ".join(x for x in (f"{name.get(s, s)}: {r.interval}" if r.interval else "",
                                               f"[{name.get(s, s)} verdict: {r.verdict}]" if s != primary else "")
                                   if x)
                          for s, r in shown.items() if r.interval or s != primary)
    stat = statistic + f"; verdict from the {name.get(primary, primary)} split" + (
        ", other splits shown beside" if len(res) > 1 else "")
    if p.verdict == NOT_COMPUTABLE:
        why = p.value.removeprefix("could not be computed: ")
        return stat, value, interval, Verdict(NOT_COMPUTABLE, why=f"{name.get(primary, primary)} split: {why}")
    return stat, value, interval, Verdict(p.verdict, mde=p.mde)


def _by_method(df, k=None):
    d = df if k is None else df[df["k"] == k]
    return {m: g.iloc[0] for m, g in d.groupby("method")}


def _largest_k(df):
    ks = [k for k in df["k"].dropna().unique() if (df[df["k"] == k]["method"] == "single").any()]
    if not ks:
        raise NotComputable("no single-response rows")
    return max(ks)


def _n_eval_df(row) -> float | None:
    n = row.get("n_eval") if hasattr(row, "get") else None
    return float(n) - 1 if n is not None and np.isfinite(n) and n >= 2 else None


def _count(x) -> int | str:
    return int(x) if x is not None and np.isfinite(x) else "?"


def _inter_var_se(row) -> float:
    se = row.get("inter_var_se", float("nan"))
    if se is None or not np.isfinite(se):
        raise NotComputable("no inter_var_se (standard error across questions of the inter-student variance) in "
                            "the table: its interval cannot be computed")
    return float(se)


def mse_gain_llm(single, r, label: str, level: float) -> Comparison:
    """Welch t interval across students of ``single.mse - r.mse`` (> 0: lower error than single-response KD)."""
    diff, se, dof = welch(float(single["mse_mean"]), float(single["mse_std"]), int(single["n_students"]),
                          float(r["mse_mean"]), float(r["mse_std"]), int(r["n_students"]))
    return difference_test(label, diff, se, dof, ">", level=level, n=int(min(single["n_students"], r["n_students"])))


def inter_var_ratio_test(single, r, label: str, level: float) -> Comparison:
    """Delta-method interval of ``r.inter_var / single.inter_var`` (< 1: less inter-student variance)."""
    return log_ratio_test(label, float(r["inter_var"]), _inter_var_se(r), _n_eval_df(r) or np.inf,
                          float(single["inter_var"]), _inter_var_se(single), _n_eval_df(single) or np.inf, "<",
                          level=level, n=_count(r.get("n_eval")), unit="questions")


def hallucination_test(single, r, label: str, level: float = 0.95) -> Comparison:
    """Welch t interval of the difference in per-student hallucination rates, single minus ``r`` (> 0: fewer).

    Students are the replicates (``hallucination_mean`` / ``_std`` across ``n_students``), not the
    n_students x n_eval answers, which are not independent (one student answers every question).
    """
    diff, se, dof = welch(float(single["hallucination_mean"]), float(single["hallucination_std"]),
                          int(single["n_students"]), float(r["hallucination_mean"]), float(r["hallucination_std"]),
                          int(r["n_students"]))
    return difference_test(label, diff, se, dof, ">", level=level, n=int(min(single["n_students"], r["n_students"])))


def _t(x: Comparison) -> str:
    return x.text()


def _guard(fn: Callable[[], Comparison], label: str) -> Comparison:
    try:
        return fn()
    except NotComputable as exc:
        return Comparison.not_computable(label, str(exc))


def _why(tests) -> str:
    return next(x.why for x in tests if x.verdict == NOT_COMPUTABLE)


def _methods_present(rows, methods, what: str) -> list[str]:
    present = [m for m in methods if m in rows]
    if not present:
        raise NotComputable(f"no rows for {what}")
    return present


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _va_split(methods_of: Callable[[dict], list[str]], what: str) -> Callable:
    def run(d) -> SplitResult:
        k = _largest_k(d)
        rows = _by_method(d, k)
        s = rows["single"]
        ms = _methods_present(rows, methods_of(rows), what)
        lvl = bonferroni_level(len(ms))
        per = []
        for m in ms:
            r = rows[m]
            g = _guard(lambda r=r: mse_gain_llm(s, r, "MSE", lvl), "MSE")
            v = _guard(lambda r=r: inter_var_ratio_test(s, r, "inter-var", lvl), "inter-var")
            per.append((m, g, v, all_of([g.verdict, v.verdict])))
        best = min(per, key=lambda p: (_RANK[p[3]], -(p[1].estimate if np.isfinite(p[1].estimate) else -np.inf)))
        verdict = any_of(p[3] for p in per)
        desc = [f"{m}: {_t(g)}, {_t(v)} -> {vd}" for m, g, v, vd in per]
        if verdict == NOT_COMPUTABLE:
            raise NotComputable(_why(x for p in per for x in p[1:3]))
        return SplitResult(f"k={k}, best {best[0]}: {_t(best[1])}, {_t(best[2])}", "; ".join(desc), verdict,
                           first_mde([best[1], best[2]]))

    return run


def _paper_methods(rows) -> list[str]:
    return list(PAPER_METHODS)


def _uqkd_methods(rows) -> list[str]:
    return [m for m in rows if m not in PAPER_METHODS and m not in NOT_STUDENT_METHODS]


def _f5_llm(t):
    return by_split(t["llm-variance-aware"], _va_split(_paper_methods, "the paper's methods (" + ", ".join(PAPER_METHODS) + ")"),
                    "single-response KD minus each paper method (multi-response, averaging, variance-weighting) at "
                    "the largest k: embedding-space MSE (Welch t across students) and inter-student variance ratio "
                    "(delta method, SE across questions); holds if some method has MSE gain > 0 and ratio < 1, "
                    "intervals Bonferroni over the methods")


register_claim(ClaimSpec(
    "F5-llm", "7", "Variance-aware distillation (multi-response / averaging / variance weighting) lowers evaluation "
                   "error and inter-student variance of LLM students", ("llm-variance-aware",), _f5_llm))


def _b_uqkd_llm(t):
    return by_split(t["llm-variance-aware"], _va_split(_uqkd_methods, "uqkd's own methods (inverse-variance-loss, ...)"),
                    "single-response KD minus each of uqkd's own methods (inverse-variance-loss, ...) at the largest "
                    "k: embedding-space MSE (Welch t across students) and inter-student variance ratio (delta method); "
                    "holds if some method has MSE gain > 0 and ratio < 1, Bonferroni over the methods")


register_claim(ClaimSpec(
    "B-llm-uqkd-methods", "7", "uqkd's own LLM methods (inverse-variance loss) lower evaluation error and "
                               "inter-student variance of LLM students", ("llm-variance-aware",), _b_uqkd_llm,
    beyond=True))


def _hallu_split(d) -> SplitResult:
    k = _largest_k(d)
    rows = _by_method(d, k)
    s = rows["single"]
    ms = _methods_present(rows, PAPER_METHODS, "the paper's methods (" + ", ".join(PAPER_METHODS) + ")")
    lvl = bonferroni_level(len(ms))
    tests = [_guard(lambda m=m: hallucination_test(s, rows[m], m, lvl), m) for m in ms]
    best = min(tests, key=lambda x: (_RANK[x.verdict], -(x.estimate if np.isfinite(x.estimate) else -np.inf)))
    verdict = any_of(x.verdict for x in tests)
    if verdict == NOT_COMPUTABLE:
        raise NotComputable(_why(tests))
    teacher = rows.get("teacher")
    tv = f"teacher {teacher['hallucination_mean']:.2f}; " if teacher is not None else ""
    return SplitResult(f"single {s['hallucination_mean']:.2f}, best {best.label} "
                       f"{rows[best.label]['hallucination_mean']:.2f}: reduction {_t(best)}",
                       tv + "; ".join(f"{_t(x)} (rate {rows[x.label]['hallucination_mean']:.2f})" for x in tests),
                       verdict, best.mde if best.verdict == INCONCLUSIVE else "")


def _b_hallucination(t):
    return by_split(t["llm-variance-aware"], _hallu_split,
                    "hallucination rate (answer lacks every accepted alias), single-response KD minus each paper "
                    "method at the largest k: Welch t interval across per-student rates (students are the "
                    "replicates), Bonferroni over the methods; holds if some method's reduction > 0")


register_claim(ClaimSpec(
    "B-llm-hallucination", "7", "Variance-aware training sets (the paper's methods) reduce the hallucination rate of "
                                "LLM students on questions with known answers", ("llm-variance-aware",),
    _b_hallucination, beyond=True))


def _single_and(rows, ref: str, missing: str):
    """``(rows[ref], rows["single"], n_students)``; not computable without both rows or with < 2 students."""
    if ref not in rows or "single" not in rows:
        raise NotComputable(missing)
    st = rows["single"]
    n = int(st["n_students"])
    if n < 2:
        raise NotComputable(f"needs at least two students (got {n})")
    return rows[ref], st, n


def _f4_split(d) -> SplitResult:
    rows = _by_method(d)
    te, st, n = _single_and(rows, "teacher", "needs teacher and single rows")
    se_st = float(st["intra_var_std"]) / np.sqrt(n)
    te_se = te.get("intra_var_se", float("nan"))
    te_known = te_se is not None and np.isfinite(te_se)
    lvl = bonferroni_level(2)
    a = _guard(lambda: log_ratio_test("student/teacher intra", float(st["intra_var_mean"]), se_st, n - 1,
                                      float(te["intra_var_mean"]), float(te_se) if te_known else 0.0,
                                      _n_eval_df(te) or np.inf, "<", level=lvl, n=n, unit="students"),
               "student/teacher intra")
    b = _guard(lambda: log_ratio_test("intra/inter", float(st["intra_var_mean"]), se_st, n - 1,
                                      float(st["inter_var"]), _inter_var_se(st), _n_eval_df(st) or np.inf, "<",
                                      level=lvl, n=n, unit="students"), "intra/inter")
    verdict = all_of([a.verdict, b.verdict])
    if verdict == NOT_COMPUTABLE:
        raise NotComputable(_why((a, b)))
    return SplitResult(f"{_t(a)}; {_t(b)}",
                       f"student intra {st['intra_var_mean']:.3g} (sd {st['intra_var_std']:.2g}, {n} students), teacher "
                       f"{te['intra_var_mean']:.3g}" + ("" if te_known else " (no SE in the table: treated as fixed)")
                       + f", inter-student {st['inter_var']:.3g}", verdict, first_mde([a, b]))


def _f4_llm(t):
    return by_split(t["llm-output"], _f4_split,
                    "single-response students: intra-student variance / the teacher's own sample variance, and "
                    "intra-student / inter-student variance (delta method on the log scale, Bonferroni over the two); "
                    "holds if both are below 1 (own spread suppressed below the teacher's and below the spread "
                    "across students)")


register_claim(ClaimSpec(
    "F4-llm", "6", "Single-response KD suppresses LLM students' own output spread below the teacher's while "
                   "inter-student variance remains", ("llm-output",), _f4_llm))


def _f1_split(d) -> SplitResult:
    s = d[d["method"] == "single"].sort_values("temperature")
    if s["temperature"].nunique() < 2:
        raise NotComputable("needs at least two temperatures")
    se = np.array([_inter_var_se(r) for _, r in s.iterrows()])
    b, b_se = weighted_slope(s["temperature"].to_numpy(dtype=float), s["inter_var"].to_numpy(dtype=float), se)
    dfs = [x for x in (_n_eval_df(r) for _, r in s.iterrows()) if x is not None]
    x = difference_test("slope", b, b_se, min(dfs) if dfs else None, ">",
                        n=_count(s["n_eval"].min()) if "n_eval" in s else "?", unit="questions/temperature")
    tch = d[d["method"] == "teacher"].sort_values("temperature")
    rho_t = spearman(tch["temperature"], tch["intra_var_mean"]) if len(tch) >= 3 else float("nan")
    extra = f"; teacher sample-variance Spearman {rho_t:.2f}" if np.isfinite(rho_t) else ""
    return SplitResult(x.text(), f"{len(s)} temperatures{extra}", x.verdict, x.mde)


def _f1_llm(t):
    return by_split(t["llm-teacher-noise"], _f1_split,
                    "slope of the single-response students' inter-student variance on teacher temperature "
                    "(weighted by the SE across questions), 95% t interval; holds if above 0")


register_claim(ClaimSpec(
    "F1-llm", "4", "Noisier teachers (higher sampling temperature) give more variable LLM students",
    ("llm-teacher-noise",), _f1_llm))


def _learn_split(d) -> SplitResult:
    rows = _by_method(d)
    u, st, n = _single_and(rows, "untrained-student",
                           "needs single and untrained-student rows (rerun the experiment with this uqkd version)")
    # the untrained student is one deterministic model on the same questions: a fixed reference
    x = _guard(lambda: difference_test("alignment gain", float(st["alignment_mean"]) - float(u["alignment_mean"]),
                                       float(st["alignment_std"]) / np.sqrt(n), n - 1, ">", n=n, unit="students"),
               "alignment gain")
    if x.verdict == NOT_COMPUTABLE:
        raise NotComputable(x.why)
    te = rows.get("teacher")
    tv = f", teacher self-agreement {float(te['alignment_mean']):.3f}" if te is not None else ""
    return SplitResult(x.text(), f"students {float(st['alignment_mean']):.3f} (sd {float(st['alignment_std']):.2g}, "
                                 f"{n}) vs untrained {float(u['alignment_mean']):.3f}{tv}; accuracy "
                                 f"{float(st['accuracy_mean']):.2f} vs {float(u['accuracy_mean']):.2f}",
                       x.verdict, x.mde)


def _b_learn(t):
    return by_split(t["llm-output"], _learn_split,
                    "single-response students' alignment with the teacher's answers (mean SBERT cosine) minus the "
                    "untrained student's, on the same questions: one-sample t interval across students; holds if "
                    "above 0 (the students learned what they were distilled on; a precondition for reading the "
                    "other LLM rows)")


register_claim(ClaimSpec(
    "B-llm-students-learn", "6", "The distilled LLM students measurably learned the teacher's answers on the questions "
                                 "they were distilled on (sanity check of the CPU-sized setup)", ("llm-output",),
    _b_learn, beyond=True))
