"""Claims tested by the LLM experiments (sections 4-7).

Unit of replication. The student is the unit: a rate or an error is a per-student figure, and
students of one method answer the same questions as the students of another. Result tables carry
``record = "summary"`` rows (per method: ``{metric}_mean`` / ``_std`` across ``n_students``,
``inter_var`` with ``inter_var_se``) and per-question rows (``record = "question"``: one per student
and question with ``mse``, ``alignment``, ``hallucination``, ``accuracy``, ``intra_var``; ``record =
"question-inter"``: per method and question, the inter-student variance ``inter_var``).

With per-question rows every LLM mean difference, ratio and slope gets a t interval from a crossed
mixed model (:mod:`uqkd.report.crossed`): students nested in their method, questions crossed with
every method, a method x question interaction and a residual; ANOVA (method-of-moments) variance
components and Satterthwaite degrees of freedom. Student r of every method at one k is distilled
from the same teacher draws (its draw index), so comparisons between methods pair students by that
index; temperatures have their own draws and are not paired. Below 5 students per group a
comparison is ``inconclusive`` whatever its interval (coverage is checked by simulation from 5
students x 24 questions up, ``tests/test_llm_crossed.py``; the crossed cluster bootstrap used
before covered 0.80 at 3 x 24 and 0.89 at 5 x 50). The statistics:

- differences of mean per-student MSE, hallucination rate, alignment, learned-noise and label
  accuracy rates (students x questions);
- ratios of inter-student variances (F5-llm, B-llm-uqkd-methods): each question row carries
  ``inter_dev`` = R/(R-1) * ||e_rq - mean_r e_rq||^2, student r's share of question q's inter-student
  variance (its mean over students is that variance exactly); the log ratio's interval is the t
  interval of the linearised shares (delta method) under the same model. Tables without
  ``inter_dev`` cannot put students in the interval and are never more than inconclusive;
- F4-llm: the students' intra-student variance over the teacher's own sample variance (one model: a
  fixed reference per question) and over the inter-student variance (``inter_dev``), paired by student;
- F1-llm: the least-squares slope of the mean inter-student variance on the teacher temperature, a
  contrast of the temperatures' means.

The uncertainty-fidelity claim (a rank correlation per student) keeps its crossed cluster bootstrap
(:mod:`uqkd.report.cluster_bootstrap`).

Tables without per-question rows (results written before uqkd had them) fall back to Welch t intervals
across students from the summary rows and delta-method log-ratio intervals from ``inter_var_se``
(standard error across questions); the statistic text then says ``(no per-question rows: Welch across
students)``. A ratio that needs ``inter_var_se`` where the table has none is ``not computable``. When
the inter-student variance is exactly 0 on every question (the published llm-output design trains
bit-identical students: shared greedy teacher set, fixed data order, no init noise), the parts that
need it are ``not computable`` with that reason, never NaN.

Methods. The paper's claims (F5-llm, the hallucination claim) compare single-response KD with the
paper's methods only (:data:`PAPER_METHODS`: multi-response, averaging, variance weighting),
Bonferroni over the methods present; uqkd's own methods (``inverse-variance-loss``, ...) have a
separate beyond-the-paper claim.

Splits. Rows may carry a ``split`` column: ``transfer`` (questions the students were distilled on)
and ``heldout``; a table without it is held-out only. Every LLM claim is computed on each split
and shows both; the verdict is the transfer split's (the held-out verdict is shown beside), or the
held-out one's where there is no transfer split.

With the few students of the quick profile a real effect is usually ``inconclusive``; the
report then prints the minimum detectable effect at that number of students and questions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..schema import summary_rows, table
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
    t_interval,
    weighted_slope,
    welch,
)
from .cluster_bootstrap import N_BOOT, bootstrap_comparison
from .crossed import FEW_STUDENTS, METHOD_TEXT, MIN_STUDENTS, contrast_test, crossed_contrast, log_ratio_contrast_test

__all__ = ["PAPER_METHODS", "TRANSFER", "HELDOUT", "splits", "hallucination_test", "inter_var_ratio_test",
           "mse_gain_llm", "summary_rows", "has_question_rows", "question_table", "inter_table", "BOOTSTRAP_TEXT",
           "WELCH_FALLBACK"]

#: the paper's variance-aware methods (section 7)
PAPER_METHODS = ("multi-response", "averaging", "variance-weighting")
NOT_STUDENT_METHODS = ("single", "teacher", "untrained-student")
TRANSFER, HELDOUT = "transfer", "heldout"
_RANK = {HOLDS: 0, INCONCLUSIVE: 1, NOT_COMPUTABLE: 2, CONTRADICTED: 3}


#: how the statistic text names the resampling
BOOTSTRAP_TEXT = (f"{METHOD_TEXT}; variance ratios: t on the log scale over each student's share of the variance "
                  "(delta method, the same model)")
WELCH_FALLBACK = "(no per-question rows: Welch across students)"


def has_question_rows(df) -> bool:
    """Whether ``df`` holds per-(student, question) rows (the ``question`` table)."""
    return bool(len(table(df, "question")))


def _method_rows(d, record: str, method: str):
    rows = table(d, record)
    return rows[rows["method"] == method]


def question_table(d, method: str, metric: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(values (n_students, n_questions), question ids)`` of ``method`` from its ``question`` rows.

    Raises :class:`NotComputable` without such rows or when a student lacks a question.
    """
    q = _method_rows(d, "question", method)
    if not len(q):
        raise NotComputable(f"no per-question rows for {method}")
    if metric not in q.columns:
        raise NotComputable(f"no per-question {metric} for {method}")
    tab = q.pivot_table(index="student", columns="question", values=metric, aggfunc="first", dropna=False)
    if tab.isna().to_numpy().any():
        raise NotComputable(f"{method}: per-question {metric} missing for some student and question")
    return tab.to_numpy(dtype=float), tuple(int(c) for c in tab.columns)


def inter_table(d, method: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(per-question inter-student variance (1, n_questions), question ids)`` of ``method``."""
    q = _method_rows(d, "question-inter", method).sort_values("question")
    if not len(q) or q["inter_var"].isna().any():
        raise NotComputable(f"no per-question inter-student variance for {method}")
    return q["inter_var"].to_numpy(dtype=float)[None, :], tuple(int(c) for c in q["question"])


def inter_group(d, method: str) -> tuple[tuple[np.ndarray, tuple[int, ...]], bool]:
    """The inter-student variance of ``method`` as a bootstrap group: ``((table, question ids), students?)``.

    With ``inter_dev`` in the question rows (each student's share, :func:`uqkd.llm.evaluate.inter_deviations`)
    the table is students x questions and the bootstrap resamples students too (a student unlike the
    others moves every question); tables without it give the (1, Q) per-question variances, questions
    resampled only (too narrow with few students; the unit text says so).
    """
    q = _method_rows(d, "question", method)
    if len(q) and "inter_dev" in q.columns and q["inter_dev"].notna().all():
        return question_table(d, method, "inter_dev"), True
    return inter_table(d, method), False


def _inter_unit(*resampled: bool) -> str:
    return ("students and questions (paired across groups; each student's share of the per-question variance)"
            if all(resampled) else "questions (paired across groups; students not resampled: too narrow with few "
                                   "students)")


def _paired(*tables: tuple[np.ndarray, tuple[int, ...]]) -> list[np.ndarray]:
    ids = {t[1] for t in tables}
    if len(ids) != 1:
        raise NotComputable("the groups compared do not answer the same questions")
    return [t[0] for t in tables]


def _unit(s: int, nq: int) -> str:
    return f"students/method x {nq} questions"


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
    """Run ``fn(rows, split) -> SplitResult`` on each split; verdict from the transfer split (else the first)."""
    res = {s: _safe(lambda x, s=s: fn(x, s), d) for s, d in splits(df).items()}
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
    d = summary_rows(df)
    d = d if k is None else d[d["k"] == k]
    return {m: g.iloc[0] for m, g in d.groupby("method")}


def _at_k(df, k):
    return df[df["k"] == k]


def _largest_k(df):
    df = summary_rows(df)
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


def _stat_text(df, text: str, bootstrap: str, welch_text: str, crossed: bool = True) -> str:
    """``text`` with how its intervals were formed: the bootstrap (per-question rows; ``crossed``: followed
    by :data:`BOOTSTRAP_TEXT`) or the Welch fallback."""
    boot = f"{bootstrap}; {BOOTSTRAP_TEXT}" if crossed else bootstrap
    how = boot if has_question_rows(df) else f"{welch_text} {WELCH_FALLBACK}"
    return text.replace("{how}", how)


# ----------------------------------------------------------------------- crossed-bootstrap comparisons


def boot_difference(d, a: str, b: str, metric: str, label: str, direction: str, level: float,
                    identity: tuple = (), *, paired: bool = True, threshold: float = 0.0) -> Comparison:
    """``mean(a) - mean(b)`` of a per-(student, question) ``metric`` by the crossed mixed model
    (:mod:`uqkd.report.crossed`): students paired by teacher-draw index when both are student groups of
    the same size, questions crossed. A one-model group (teacher, untrained) is a fixed reference.
    (``identity`` is kept for callers; the interval is analytic.)"""
    ys = _paired(question_table(d, a, metric), question_table(d, b, metric))
    return contrast_test(label, ys, [1.0, -1.0], direction, level=level, paired=paired, threshold=threshold,
                         scale=float(max(np.abs(y).max() for y in ys)))


def boot_inter_ratio(d, single: str, m: str, label: str, level: float, identity: tuple = (), *,
                     paired: bool = True) -> Comparison:
    """``inter_var(m) / inter_var(single)`` from each student's share of the per-question inter-student
    variance (``inter_dev``): the share-t on the log scale (:func:`uqkd.report.crossed.log_ratio_contrast_test`),
    students paired by draw index. Tables without ``inter_dev`` fall back to the (1, Q) per-question
    variances (questions only; too narrow with few students: the verdict is then inconclusive)."""
    (a, ra), (b, rb) = inter_group(d, single), inter_group(d, m)
    ys = _paired(a, b)
    if not np.any(ys[0] > 0):
        raise NotComputable(f"{label}: the {single} students' inter-student variance is 0 on every question")
    c = log_ratio_contrast_test(label, ys[1], ys[0], "<", level=level, paired=paired)
    if not (ra and rb):
        return Comparison(c.label, c.estimate, c.lo, c.hi, INCONCLUSIVE if c.verdict != NOT_COMPUTABLE else c.verdict,
                          "no per-student shares (inter_dev) in the table: students not resampled, interval too "
                          "narrow; rerun with this uqkd version", ratio=True)
    return c


def _va_split(methods_of: Callable[[dict], list[str]], what: str, claim_id: str) -> Callable:
    def run(d, split) -> SplitResult:
        k = _largest_k(d)
        rows = _by_method(d, k)
        s = rows["single"]
        ms = _methods_present(rows, methods_of(rows), what)
        lvl = bonferroni_level(len(ms))
        dk = _at_k(d, k)
        boot = has_question_rows(dk)
        per = []
        for m in ms:
            r = rows[m]
            if boot:
                g = _guard(lambda m=m: boot_difference(dk, "single", m, "mse", "MSE", ">", lvl,
                                                       (claim_id, split, k, m, "mse")), "MSE")
                v = _guard(lambda m=m: boot_inter_ratio(dk, "single", m, "inter-var", lvl,
                                                        (claim_id, split, k, m, "inter-var")), "inter-var")
            else:
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


_VA_BOOT = ("MSE difference and inter-student variance ratio (from each student's share of the per-question "
            "inter-student variance, inter_dev) by the crossed mixed model")
_VA_WELCH = ("MSE difference by a Welch t interval across students, inter-student variance ratio by the delta "
             "method (SE across questions)")


#: llm-variance-aware step budgets: the verdict uses the compute-matched one where both were run
VERDICT_BUDGET, PUBLISHED_BUDGET = "equal-steps", "epochs"


def by_budget(df, run: Callable):
    """``run(rows)`` per step budget of llm-variance-aware (rows without a budget, the teacher and the untrained
    student, go with every budget). The verdict is the ``equal-steps`` (compute-matched: every method the
    optimiser steps of single-response KD) budget's where it was run, so "a method beats single" cannot come
    from training longer; the published ``epochs`` budget is shown beside. A table without ``step_budget``
    is one budget."""
    if "step_budget" not in df.columns or df["step_budget"].dropna().nunique() < 1:
        return run(df)
    budgets = list(dict.fromkeys(str(x) for x in df["step_budget"].dropna()))
    budgets.sort(key=lambda x: x != VERDICT_BUDGET)
    res = {b: run(df[df["step_budget"].isna() | (df["step_budget"] == b)]) for b in budgets}
    first = budgets[0]
    stat, value, interval, verdict = res[first]
    if verdict.verdict == NOT_COMPUTABLE:
        verdict = Verdict(NOT_COMPUTABLE, mde=verdict.mde, why=f"step budget {first}: {verdict.why}")
    if len(budgets) == 1:
        return stat + f"; step budget {first}", value, interval, verdict
    beside = "; ".join(f"[step budget {b}: {res[b][3].verdict}: {res[b][1]}]" for b in budgets[1:])
    why = ("compute-matched: every method the optimiser steps of single-response KD" if first == VERDICT_BUDGET
           else "")
    return (stat + f"; verdict from step budget {first}" + (f" ({why})" if why else "") + ", "
            + ", ".join(budgets[1:]) + " shown beside", value, " ".join(x for x in (interval, beside) if x), verdict)


def _f5_llm(t):
    return by_budget(t["llm-variance-aware"], _f5_llm_rows)


def _f5_llm_rows(df):
    return by_split(df, _va_split(_paper_methods, "the paper's methods (" + ", ".join(PAPER_METHODS) + ")", "F5-llm"),
                    _stat_text(df, "single-response KD minus each paper method (multi-response, averaging, "
                               "variance-weighting) at the largest k: embedding-space MSE (the unit: per-student "
                               "means over questions) and inter-student variance ratio ({how}); holds if some "
                               "method has MSE gain > 0 and ratio < 1, intervals Bonferroni over the methods",
                               _VA_BOOT, _VA_WELCH))


register_claim(ClaimSpec(
    "F5-llm", "7", "Variance-aware distillation (multi-response / averaging / variance weighting) lowers evaluation "
                   "error and inter-student variance of LLM students", ("llm-variance-aware",), _f5_llm))


def _b_uqkd_llm(t):
    return by_budget(t["llm-variance-aware"], _b_uqkd_llm_rows)


def _b_uqkd_llm_rows(df):
    return by_split(df, _va_split(_uqkd_methods, "uqkd's own methods (inverse-variance-loss, ...)",
                                  "B-llm-uqkd-methods"),
                    _stat_text(df, "single-response KD minus each of uqkd's own methods (inverse-variance-loss, "
                               "...) at the largest k: embedding-space MSE and inter-student variance ratio ({how}); "
                               "holds if some method has MSE gain > 0 and ratio < 1, Bonferroni over the methods",
                               _VA_BOOT, _VA_WELCH))


register_claim(ClaimSpec(
    "B-llm-uqkd-methods", "7", "uqkd's own LLM methods (inverse-variance loss) lower evaluation error and "
                               "inter-student variance of LLM students", ("llm-variance-aware",), _b_uqkd_llm,
    beyond=True))


def _hallu_split(d, split) -> SplitResult:
    k = _largest_k(d)
    rows = _by_method(d, k)
    s = rows["single"]
    ms = _methods_present(rows, PAPER_METHODS, "the paper's methods (" + ", ".join(PAPER_METHODS) + ")")
    lvl = bonferroni_level(len(ms))
    dk = _at_k(d, k)
    if has_question_rows(dk):
        tests = [_guard(lambda m=m: boot_difference(dk, "single", m, "hallucination", m, ">", lvl,
                                                    ("B-llm-hallucination", split, k, m)), m) for m in ms]
    else:
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
    return by_budget(t["llm-variance-aware"], _b_hallucination_rows)


def _b_hallucination_rows(df):
    return by_split(df, _hallu_split,
                    _stat_text(df, "hallucination rate (answer lacks every accepted alias), single-response KD minus "
                               "each paper method at the largest k: {how}, Bonferroni over the methods; holds if "
                               "some method's reduction > 0",
                               "difference of per-student rates (students x questions of 0/1 answers)",
                               "Welch t interval across per-student rates (students are the replicates)"))


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


IDENTICAL_STUDENTS = ("students are identical under this design (no between-student source of randomness: shared "
                      "greedy teacher set, fixed data order, no init noise); run with data_order=per-student")


def zero_inter_reason(row) -> str:
    """Why an inter-student variance of exactly 0 on every question leaves a ratio undefined, from ``design``."""
    design = row.get("design") if hasattr(row, "get") else None
    design = design if isinstance(design, str) else ""
    ta = re.search(r"teacher_answers=([\w-]+)", design)
    do = re.search(r"data_order=([\w-]+)", design)
    noise = re.search(r"init_noise=([-+\d.eE]+)", design)
    if ta and do and noise:
        if ta.group(1) == "shared-greedy" and do.group(1) == "fixed" and float(noise.group(1)) == 0:
            return IDENTICAL_STUDENTS
        if ta.group(1) == "shared-draws" and do.group(1) == "fixed" and float(noise.group(1)) == 0:
            return IDENTICAL_STUDENTS.replace("shared greedy teacher set", "shared teacher draws")
        return f"the inter-student variance is exactly 0 on every question: the students' answers are identical ({design})"
    return ("the inter-student variance is exactly 0 on every question: the students' answers are identical (with no "
            "between-student source of randomness, e.g. a shared greedy teacher set, fixed data order and no init "
            "noise, run with data_order=per-student)")


_REMAINS = "inter-student variance remains (intra/inter)"

#: llm-output's published design (the §6 LLM script); the other ``output_design`` values are uqkd's
PUBLISHED_DESIGN = "published"


def by_design(df, run: Callable):
    """``run(rows)`` on llm-output's published design, the labelled uqkd designs shown beside.

    ``run`` returns ``(statistic, value, interval, Verdict)``. The verdict is the published design's,
    except where that design leaves the statistic undefined because its students are identical
    (:data:`IDENTICAL_STUDENTS`): then the verdict comes from the first uqkd design, and the text
    says so. A table without ``output_design`` is one design.
    """
    if "output_design" not in df.columns or df["output_design"].nunique() < 2:
        return run(df)
    designs = list(dict.fromkeys(str(x) for x in df["output_design"]))
    designs.sort(key=lambda x: x != PUBLISHED_DESIGN)
    res = {x: run(df[df["output_design"] == x]) for x in designs}
    first = designs[0]
    stat, value, interval, verdict = res[first]
    others = designs[1:]
    if first == PUBLISHED_DESIGN and verdict.verdict == NOT_COMPUTABLE and IDENTICAL_STUDENTS in verdict.why:
        alt = others[0]
        a_stat, a_value, a_interval, a_verdict = res[alt]
        return (a_stat + f"; verdict from the labelled uqkd design output_design={alt} (the published design's "
                         "students are identical)",
                f"published design: could not be computed ({verdict.why}) | uqkd design {alt}: {a_value}",
                a_interval, a_verdict)
    beside = "; ".join(f"[uqkd design {x}: {res[x][3].verdict}: {res[x][1]}]" for x in others)
    return (stat + f"; verdict from output_design={first}", value, " ".join(t for t in (interval, beside) if t),
            verdict)


def _f4_split(d, split) -> SplitResult:
    rows = _by_method(d)
    te, st, n = _single_and(rows, "teacher", "needs teacher and single rows")
    lvl = bonferroni_level(2)
    if has_question_rows(d):
        a = _guard(lambda: _f4_boot_intra(d, lvl, split), "student/teacher intra")
        b = _guard(lambda: _f4_boot_remains(d, st, lvl, split), _REMAINS)
        te_note = ""
    else:
        se_st = float(st["intra_var_std"]) / np.sqrt(n)
        te_se = te.get("intra_var_se", float("nan"))
        te_known = te_se is not None and np.isfinite(te_se)
        a = _guard(lambda: log_ratio_test("student/teacher intra", float(st["intra_var_mean"]), se_st, n - 1,
                                          float(te["intra_var_mean"]), float(te_se) if te_known else 0.0,
                                          _n_eval_df(te) or np.inf, "<", level=lvl, n=n, unit="students"),
                   "student/teacher intra")

        def remains() -> Comparison:
            if float(st["inter_var"]) == 0:
                raise NotComputable(zero_inter_reason(st))
            return log_ratio_test(_REMAINS, float(st["intra_var_mean"]), se_st, n - 1, float(st["inter_var"]),
                                  _inter_var_se(st), _n_eval_df(st) or np.inf, "<", level=lvl, n=n, unit="students")

        b = _guard(remains, _REMAINS)
        te_note = "" if te_known else " (no SE in the table: treated as fixed)"
    verdict = all_of([a.verdict, b.verdict])
    if verdict == NOT_COMPUTABLE:
        nc = [x for x in (a, b) if x.verdict == NOT_COMPUTABLE]
        ok = [x for x in (a, b) if x.verdict != NOT_COMPUTABLE]
        raise NotComputable("; ".join(f"{x.label}: {x.why}" for x in nc)
                            + "".join(f" (other part: {_t(x)} -> {x.verdict})" for x in ok))
    return SplitResult(f"{_t(a)}; {_t(b)}",
                       f"student intra {st['intra_var_mean']:.3g} (sd {st['intra_var_std']:.2g}, {n} students), teacher "
                       f"{te['intra_var_mean']:.3g}{te_note}, inter-student {st['inter_var']:.3g}", verdict,
                       first_mde([a, b]))


def _f4_boot_intra(d, lvl: float, split) -> Comparison:
    """Students' intra-student variance (students x questions) over the teacher's own (one model)."""
    ys = _paired(question_table(d, "single", "intra_var"), question_table(d, "teacher", "intra_var"))
    if not np.any(ys[1] > 0):
        raise NotComputable("the teacher's own sample variance is 0 on every question")
    return log_ratio_contrast_test("student/teacher intra", ys[0], ys[1], "<", level=lvl, paired=True)


def _f4_boot_remains(d, st, lvl: float, split) -> Comparison:
    """Students' intra-student variance (students x questions) over the inter-student variance (students x
    questions from ``inter_dev``; questions only for older tables), one question resample for both."""
    inter, rs = inter_group(d, "single")
    if not np.any(inter[0] > 0):
        raise NotComputable(zero_inter_reason(st))
    ys = _paired(question_table(d, "single", "intra_var"), inter)
    c = log_ratio_contrast_test(_REMAINS, ys[0], ys[1], "<", level=lvl, paired=True)
    if not rs:
        return Comparison(c.label, c.estimate, c.lo, c.hi, INCONCLUSIVE, "no per-student shares (inter_dev) in the "
                          "table: the inter-student variance is not resampled over students", ratio=True)
    return c


def _f4_llm(t):
    return by_design(t["llm-output"], _f4_design)


def _f4_design(df):
    return by_split(df, _f4_split,
                    _stat_text(df, "single-response students: intra-student variance / the teacher's own sample "
                               "variance, and intra-student / inter-student variance ({how}, Bonferroni over the "
                               "two); holds if both are below 1 (own spread suppressed below the teacher's and "
                               "below the spread across students)",
                               "ratios of grand means; the students' intra-student variance resampled over students "
                               "and questions, the teacher's and the inter-student variance over questions (the same "
                               "question resample)",
                               "delta method on the log scale"))


register_claim(ClaimSpec(
    "F4-llm", "6", "Single-response KD suppresses LLM students' own output spread below the teacher's while "
                   "inter-student variance remains", ("llm-output",), _f4_llm))


def _f1_split(d, split) -> SplitResult:
    s = summary_rows(d)
    s = s[s["method"] == "single"].sort_values("temperature")
    if s["temperature"].nunique() < 2:
        raise NotComputable("needs at least two temperatures")
    if has_question_rows(d):
        temps = [float(x) for x in s["temperature"]]
        groups = [inter_group(d[d["temperature"] == tt], "single") for tt in temps]
        ys = _paired(*(g for g, _ in groups))
        xc = np.array(temps) - np.mean(temps)
        if not np.sum(xc**2) > 0:
            raise NotComputable("a slope needs at least two distinct temperatures")
        # the slope of the group means on temperature is a contrast of them; temperatures have their own teacher
        # draws, so their students are not paired
        x = contrast_test("slope", ys, xc / np.sum(xc**2), ">", paired=False,
                          scale=float(max(np.abs(y).max() for y in ys)))
        if not all(r for _, r in groups):
            x = Comparison(x.label, x.estimate, x.lo, x.hi, INCONCLUSIVE if x.verdict != NOT_COMPUTABLE else x.verdict,
                           "no per-student shares (inter_dev) in the table: students not resampled")
    else:
        se = np.array([_inter_var_se(r) for _, r in s.iterrows()])
        b, b_se = weighted_slope(s["temperature"].to_numpy(dtype=float), s["inter_var"].to_numpy(dtype=float), se)
        dfs = [x for x in (_n_eval_df(r) for _, r in s.iterrows()) if x is not None]
        x = difference_test("slope", b, b_se, min(dfs) if dfs else None, ">",
                            n=_count(s["n_eval"].min()) if "n_eval" in s else "?", unit="questions/temperature")
    tch = summary_rows(d)
    tch = tch[tch["method"] == "teacher"].sort_values("temperature")
    rho_t = spearman(tch["temperature"], tch["intra_var_mean"]) if len(tch) >= 3 else float("nan")
    extra = f"; teacher sample-variance Spearman {rho_t:.2f}" if np.isfinite(rho_t) else ""
    return SplitResult(x.text(), f"{len(s)} temperatures{extra}", x.verdict, x.mde)


def _f1_llm(t):
    df = t["llm-teacher-noise"]
    return by_split(df, _f1_split,
                    _stat_text(df, "slope of the single-response students' inter-student variance on teacher "
                               "temperature ({how}); holds if above 0",
                               "least-squares slope of the mean per-question inter-student variance on "
                               "temperature, a contrast of the temperatures' means of each student's share of "
                               "the variance (inter_dev), 95% t interval from the crossed mixed model (students "
                               "nested in temperature, questions crossed, temperature x question interaction; "
                               "Satterthwaite df; temperatures not paired: each has its own teacher draws; "
                               "inconclusive below 5 students per temperature)",
                               "weighted by the SE across questions, 95% t interval", crossed=False))


register_claim(ClaimSpec(
    "F1-llm", "4", "Noisier teachers (higher sampling temperature) give more variable LLM students",
    ("llm-teacher-noise",), _f1_llm))


def _learn_split(d, split) -> SplitResult:
    rows = _by_method(d)
    u, st, n = _single_and(rows, "untrained-student",
                           "needs single and untrained-student rows (rerun the experiment with this uqkd version)")
    if has_question_rows(d):
        x = _guard(lambda: boot_difference(d, "single", "untrained-student", "alignment", "alignment gain", ">", 0.95,
                                           ("B-llm-students-learn", split)), "alignment gain")
    else:
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
    return by_design(t["llm-output"], _learn_design)


def _learn_design(df):
    return by_split(df, _learn_split,
                    _stat_text(df, "single-response students' alignment with the teacher's answers (mean SBERT "
                               "cosine) minus the untrained student's, on the same questions: {how}; holds if above "
                               "0 (the students learned what they were distilled on; a precondition for reading the "
                               "other LLM rows)",
                               "students x questions against the one untrained model, paired by question",
                               "one-sample t interval across students"))


register_claim(ClaimSpec(
    "B-llm-students-learn", "6", "The distilled LLM students measurably learned the teacher's answers on the questions "
                                 "they were distilled on (sanity check of the CPU-sized setup)", ("llm-output",),
    _b_learn, beyond=True))


# ----------------------------------------------------------------------- knowledge change, uncertainty fidelity


def rate_tables(d, a: str, b: str, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Students x questions tables of a conditional per-question rate (``learned_noise``: NaN where the student
    had the question wrong before; ``fixed``: NaN where it had it right) for methods ``a`` and ``b``, kept on the
    questions where every student of both has a value (with one shared starting point, the questions the
    student had right, or wrong, before). Returns ``(table_a, table_b, n_questions_kept)``."""
    out = []
    for m in (a, b):
        q = _method_rows(d, "question", m)
        if not len(q) or metric not in q.columns:
            raise NotComputable(f"no per-question {metric} for {m} (rerun the experiment with this uqkd version)")
        out.append(q.pivot_table(index="student", columns="question", values=metric, aggfunc="first",
                                 dropna=False))
    ta, tb = out
    cols = [c for c in ta.columns if c in tb.columns and ta[c].notna().all() and tb[c].notna().all()]
    if len(cols) < 2:
        raise NotComputable(f"{metric}: fewer than two questions where every student has a rate")
    return ta[cols].to_numpy(dtype=float), tb[cols].to_numpy(dtype=float), len(cols)


def boot_rate_difference(d, a: str, b: str, metric: str, label: str, direction: str, level: float,
                         identity: tuple = ()) -> Comparison:
    """``rate(a) - rate(b)`` of a conditional per-question rate (:func:`rate_tables`) by the crossed mixed
    model, students paired by draw index."""
    ya, yb, nq = rate_tables(d, a, b, metric)
    return contrast_test(label, [ya, yb], [1.0, -1.0], direction, level=level, paired=True, scale=1.0)


def rate_interval(d, m: str, metric: str, identity: tuple) -> str:
    """``"0.42 [0.30, 0.55]"``: a method's conditional per-question rate with its 95% crossed-bootstrap interval
    (students and questions resampled), on the questions where every student has a value."""
    try:
        y, _, _ = rate_tables(d, m, m, metric)
        ce = crossed_contrast([y], [1.0])
        lo, hi = t_interval(ce.estimate, ce.se, ce.df)
    except NotComputable:
        return f"{_mean_rate(d, m, metric):.2f}"
    return f"{ce.estimate:.2f} [{max(lo, 0.0):.2f}, {min(hi, 1.0):.2f}]"


def _mean_rate(d, m: str, metric: str) -> float:
    q = _method_rows(d, "question", m)
    return float(np.nanmean(q[metric].to_numpy(dtype=float))) if len(q) and metric in q.columns else float("nan")


def _learned_split(d, split) -> SplitResult:
    k = _largest_k(d)
    rows = _by_method(d, k)
    ms = _methods_present(rows, PAPER_METHODS, "the paper's methods (" + ", ".join(PAPER_METHODS) + ")")
    if "single" not in rows:
        raise NotComputable("needs single-response rows")
    lvl = bonferroni_level(len(ms))
    dk = _at_k(d, k)
    if not has_question_rows(dk):
        raise NotComputable("needs per-question rows (rerun the experiment with this uqkd version)")
    tests = [_guard(lambda m=m: boot_rate_difference(dk, "single", m, "learned_noise", m, ">", lvl,
                                                     ("B-llm-learned-noise", split, k, m)), m) for m in ms]

    def single_learns() -> Comparison:  # the first half: single-response KD makes right answers wrong at all
        y, _, nq = rate_tables(dk, "single", "single", "learned_noise")
        return contrast_test("single learned noise", [y], [1.0], ">", scale=1.0)

    base = _guard(single_learns, "single learned noise")
    verdict = all_of([base.verdict, any_of(x.verdict for x in tests)])
    if verdict == NOT_COMPUTABLE:
        raise NotComputable(_why(tests))
    best = min(tests, key=lambda x: (_RANK[x.verdict], -(x.estimate if np.isfinite(x.estimate) else -np.inf)))

    def desc(m: str) -> str:
        r = rows[m]
        return (f"{m}: learned noise {rate_interval(dk, m, 'learned_noise', ('B-llm-learned-noise', split, k, m))}, "
                f"fixed {_mean_rate(dk, m, 'fixed'):.2f}, "
                f"accuracy {float(r.get('accuracy_before_mean', np.nan)):.2f} -> {float(r['accuracy_mean']):.2f}")

    return SplitResult(f"k={k}; {desc('single')}; best {best.label}: reduction {_t(best)}",
                       "; ".join([desc(m) for m in ms] + [_t(base)] + [_t(x) for x in tests]), verdict,
                       best.mde if best.verdict == INCONCLUSIVE else base.mde)


def _va_claim(split_fn: Callable, statistic: str) -> Callable:
    """A claim on llm-variance-aware: ``split_fn`` per split (:func:`by_split`) within each step budget
    (:func:`by_budget`), with a fixed statistic text."""
    def run(t):
        return by_budget(t["llm-variance-aware"], lambda df: by_split(df, split_fn, statistic))

    return run


_b_learned = _va_claim(_learned_split,
                    "learned-noise rate: of the questions a student answered correctly before distillation (greedy, "
                    "an accepted alias), the share it answers wrongly after; single-response KD minus each paper "
                    "method at the largest k, on the questions the shared starting point had right; "
                    f"{BOOTSTRAP_TEXT}; Bonferroni over the methods; holds if single's learned-noise rate > 0 and "
                    "some method's reduction > 0 (fix rate and net accuracy change shown beside: a method that "
                    "changes the student less also fixes less)")


register_claim(ClaimSpec(
    "B-llm-learned-noise", "7", "Single-response KD teaches the teacher's sampling noise as knowledge (right answers "
                                "made wrong); the paper's variance-aware methods teach less of it",
    ("llm-variance-aware",), _b_learned, beyond=True))


def _label_split(d, split) -> SplitResult:
    if split != TRANSFER:
        raise NotComputable("training labels exist only for the questions distilled on (the transfer split)")
    k = _largest_k(d)
    rows = _by_method(d, k)
    ms = _methods_present(rows, PAPER_METHODS, "the paper's methods (" + ", ".join(PAPER_METHODS) + ")")
    lvl = bonferroni_level(len(ms))
    dk = _at_k(d, k)
    if not has_question_rows(dk):
        raise NotComputable("needs per-question rows")
    tests = [_guard(lambda m=m: boot_rate_difference(dk, m, "single", "target_correct", m, ">", lvl,
                                                     ("B-llm-label-noise", split, k, m)), m) for m in ms]
    verdict = any_of(x.verdict for x in tests)
    if verdict == NOT_COMPUTABLE:
        raise NotComputable(_why(tests))
    best = min(tests, key=lambda x: (_RANK[x.verdict], -(x.estimate if np.isfinite(x.estimate) else -np.inf)))
    acc = {m: rate_interval(dk, m, "target_correct", ("B-llm-label-noise", split, k, m)) for m in ("single", *ms)}
    te = rows.get("teacher")
    greedy = f"; the teacher's greedy answers {float(te['accuracy_mean']):.2f}" if te is not None else ""
    return SplitResult(f"k={k}; label accuracy single {acc['single']}, best {best.label} {acc[best.label]}: "
                       f"gain {_t(best)}",
                       "; ".join(f"{m}: {acc[m]}" for m in ms) + greedy + "; " + "; ".join(_t(x) for x in tests),
                       verdict, best.mde if best.verdict == INCONCLUSIVE else "")


_b_label = _va_claim(_label_split,
                     "label accuracy: the share of a student's training labels (the teacher answers its method "
                     "selected) that state a right fact (contain an accepted alias), per question of the transfer "
                     "split; each paper method minus single-response KD at the largest k; "
                     f"{BOOTSTRAP_TEXT}; Bonferroni over the methods; holds if some method's gain > 0 (the noise a "
                     "student is taught, measured before any training)")

register_claim(ClaimSpec(
    "B-llm-label-noise", "7", "The paper's variance-aware methods build LLM training sets with fewer wrong facts than "
                              "single-response KD (less teacher noise to learn)", ("llm-variance-aware",), _b_label,
    beyond=True))


def fidelity_bootstrap(teacher: np.ndarray, tables, identity: tuple,
                       n_boot: int = N_BOOT) -> tuple[np.ndarray, np.ndarray]:
    """Uncertainty fidelity of each group and its crossed-bootstrap resamples.

    A group's fidelity is the mean over its students of the Spearman correlation across questions between the
    teacher's per-question dispersion ``teacher`` (Q,) and the student's (a row of the group's (S_g, Q) table).
    Questions are resampled jointly for the teacher and every group (paired), students within each group with two
    or more. Students whose dispersion is constant across questions have no rank correlation and are left out of
    the estimate and of every resample. Returns ``(estimate (G,), resamples (n_boot, G))``; a resample whose
    resampled questions leave a group without a correlation is NaN (:func:`bootstrap_comparison` counts them).
    """
    from scipy.stats import rankdata

    from .._seeding import make_rng

    t = np.asarray(teacher, dtype=float)
    ys = [np.asarray(y, dtype=float) for y in tables]
    if not np.isfinite(t).all() or not all(np.isfinite(y).all() for y in ys):
        raise NotComputable("a per-question dispersion is NaN or infinite")
    q_n = t.shape[0]
    if q_n < 3 or any(y.shape[1] != q_n for y in ys):
        raise NotComputable(f"needs the same three or more questions for the teacher and every group (got {q_n})")
    if np.ptp(t) == 0:
        raise NotComputable("the teacher's dispersion is the same on every question (no rank correlation)")
    ys = [y[np.ptp(y, axis=1) > 0] for y in ys]
    if any(y.shape[0] == 0 for y in ys):
        raise NotComputable("a group's dispersion is the same on every question for every student")

    def rho(tq: np.ndarray, yq: np.ndarray) -> np.ndarray:  # tq (B, Q), yq (B, S, Q) -> (B,)
        rt = rankdata(tq, axis=-1)
        ry = rankdata(yq, axis=-1)
        rt = rt - rt.mean(-1, keepdims=True)
        ry = ry - ry.mean(-1, keepdims=True)
        num = (rt[:, None, :] * ry).sum(-1)
        den = np.sqrt((rt ** 2).sum(-1)[:, None] * (ry ** 2).sum(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = num / den  # (B, S): NaN where a resample leaves a dispersion constant
        return r.mean(axis=1)

    est = np.array([rho(t[None], y[None])[0] for y in ys])
    rng = make_rng(0, "fidelity-bootstrap", *[str(i) for i in identity])
    qi = rng.integers(q_n, size=(n_boot, q_n))  # (B, Q): shared by the teacher and every group
    boot = np.empty((n_boot, len(ys)))
    for g, y in enumerate(ys):
        s_n = y.shape[0]
        si = rng.integers(s_n, size=(n_boot, s_n)) if s_n >= 2 else np.zeros((n_boot, 1), dtype=int)  # (B, S)
        boot[:, g] = rho(t[qi], y[si[:, :, None], qi[:, None, :]])
    return est, boot


def _fidelity_split(d, split) -> SplitResult:
    k = _largest_k(d)
    dk = _at_k(d, k)
    if not has_question_rows(dk):
        raise NotComputable("needs per-question rows")
    tq = _method_rows(dk, "question", "teacher")
    if not len(tq):
        raise NotComputable("needs the teacher's per-question rows")
    single, ids = question_table(dk, "single", "intra_var")
    start, ids0 = question_table(dk, "untrained-student", "intra_var")
    if ids0 != ids:
        raise NotComputable("the untrained student and the students answer different questions")
    t = tq.groupby("question")["intra_var"].first().reindex(list(ids)).to_numpy(dtype=float)
    est, boot = fidelity_bootstrap(t, [single, start], ("B-llm-uncertainty-fidelity", split, k))
    x = bootstrap_comparison("fidelity change", float(est[0] - est[1]), boot[:, 0] - boot[:, 1], "<", level=0.95,
                             n=single.shape[0], unit=_unit(single.shape[0], single.shape[1]), scale=1.0)
    if single.shape[0] < MIN_STUDENTS:
        x = Comparison(x.label, x.estimate, x.lo, x.hi, INCONCLUSIVE, f"{FEW_STUDENTS} (smallest group {single.shape[0]})")
    rows = _by_method(dk, k)
    others = ", ".join(f"{m} {float(r['fidelity_mean']):.2f}" for m, r in rows.items()
                       if "fidelity_mean" in r and np.isfinite(r["fidelity_mean"])
                       and m not in ("single", "teacher", "untrained-student"))
    return SplitResult(f"k={k}: fidelity before {est[1]:.2f}, after single-response KD {est[0]:.2f}; {x.text()}",
                       f"the other methods' mean per-student fidelity: {others}" if others else "", x.verdict, x.mde)


_b_fidelity = _va_claim(_fidelity_split,
                    "uncertainty fidelity: Spearman correlation across questions between the teacher's per-question "
                    "dispersion (variance of its sampled answers' SBERT embeddings) and a student's own, averaged over "
                    "students; after single-response KD minus before (the untrained student on the same questions); "
                    "crossed cluster bootstrap, questions resampled jointly for the teacher and both groups, students "
                    f"within, {N_BOOT} resamples, 95% percentile interval; holds if below 0 (distillation erodes the "
                    "student's uncertainty where the teacher's was: the paper's intra-student claim, question by "
                    "question)")


register_claim(ClaimSpec(
    "B-llm-uncertainty-fidelity", "6", "Single-response KD erodes the student's per-question uncertainty: after "
                                      "distillation its answer dispersion tracks the teacher's less than before",
    ("llm-variance-aware",), _b_fidelity, beyond=True))
