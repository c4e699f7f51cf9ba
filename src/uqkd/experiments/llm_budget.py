r"""Beyond the paper, LLM: uniform vs uncertainty-allocated teacher sampling at an equal budget (``llm-budget``).

The LLM counterpart of ``adaptive-budget-linear`` / ``-mlp``. Every student gets a total of
:math:`B = b\,n` teacher answers over its :math:`n` training questions (``b`` =
``budget_per_question``), spent by one of two schemes:

* ``uniform``: :math:`k_i = b` answers to every question (the paper's recipe);
* ``adaptive``: two-stage, exactly as ``uqkd llm sample --budget B --pilot K0`` does
  (:func:`uqkd.llm.budget.budget_samples`): a pilot of :math:`k_0` answers per question, their
  SBERT dispersions shrunk by empirical Bayes, the remaining :math:`B - n k_0` answers allocated
  :math:`\propto \tilde s_i` (:func:`uqkd.aggregate.allocate_budget_two_stage`); the pilot answers
  are kept. Every student runs its own pilot, so the cost of estimating the dispersion is in
  the measured variance.

Each student's training set is built from its :math:`k_i` answers by one training-set method
(``method``, default ``averaging``: the answer closest to the mean embedding, the paper's
averaging method) and the students are trained and evaluated by the pipeline of the other LLM
experiments (:func:`uqkd.llm.pipeline.run_method`) on the transfer (distilled-on) and held-out
questions.

Seeds. Student r of scheme s draws answer j to question q from the stream named by
(seed, "llm-budget-draws", s, r) and (q, j): every (scheme, student, question, draw) has its
own draw, so the two schemes are independent samples (the claim's intervals assume this).
Training data order, evaluation sampling and the teacher's own figures use the identities of
``run_method`` (shared by both schemes).

Rows (``record`` column): ``summary`` rows, one per (method, split), where ``method`` is the
scheme (``uniform``, ``adaptive``) or ``teacher`` / ``untrained-student`` (the ``reference``
cell), with the budget (``budget``, ``budget_per_question``, ``pilot``), what every student
spent (``budget_used``; the schemes spend exactly ``budget``), the k_i statistics over students
and questions (``k_min``, ``k_mean``, ``k_max``, ``k_sd`` the mean within-student SD) and
``n_uniform_allocations`` (students whose allocation came out with every k_i equal),
``pilot_dispersion_mean`` and ``pilot_dispersion_cv`` (mean within-student coefficient of
variation across questions: the automatic shrinkage pools the pilot dispersions completely, and
the allocation is uniform, unless it exceeds sqrt(2/(k0-1))); and ``allocation`` rows, one per (scheme,
student, question), with ``k`` and (adaptive) the pilot dispersion and its shrunk value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import option
from ..methods import METHODS, method_names
from ._deviations import BEYOND_THE_PAPER, LLM_SETTING
from .base import Experiment, register
from .llm import (
    DEMO,
    DESIGN_NOTE,
    PAPER,
    QUICK,
    LLMConfig,
    _bar_plot,
    _setup,
    _teacher_eval,
    _untrained_evals,
    _untrained_rows,
)

__all__ = ["LLMBudgetConfig", "LLM_BUDGET_SCHEMES", "LLM_BUDGET_METHODS", "budget_draws_seed"]

#: name -> one-line description
LLM_BUDGET_SCHEMES: dict[str, str] = {
    "uniform": "k_i = B / n teacher answers to every question (the paper's recipe)",
    "adaptive": "pilot of k0 answers per question, shrunk SBERT dispersions, the rest allocated in proportion "
                "to them (uqkd llm sample --budget)",
}
#: the registry's LLM methods that use only the teacher's answers (variance-weighting also needs student samples)
LLM_BUDGET_METHODS = tuple(m for m in method_names("llm") if not METHODS[m].needs_student_samples)
REFERENCE = "reference"


@dataclass(frozen=True)
class LLMBudgetConfig(LLMConfig):
    """``llm-budget``: the shared LLM settings plus the teacher-answer budget and its allocation schemes."""

    budget_per_question: int = option(3, "teacher answers per question on average: total budget B = this x n_train",
                                      min=2, max=100_000)
    pilot: int = option(2, "adaptive scheme: pilot answers per question k0 (>= 2, <= budget_per_question), kept",
                       min=2, max=100_000)
    schemes: tuple[str, ...] = option(tuple(LLM_BUDGET_SCHEMES), "allocation schemes: " + ", ".join(LLM_BUDGET_SCHEMES),
                                      choices=tuple(LLM_BUDGET_SCHEMES), unique=True)
    method: str = option("averaging", "training-set method built from each question's k_i answers: "
                                      + ", ".join(LLM_BUDGET_METHODS), choices=LLM_BUDGET_METHODS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.budget_per_question < self.pilot:
            raise ValueError(f"budget_per_question: expected an integer >= pilot ({self.pilot}), "
                             f"got {self.budget_per_question}")
        if self.teacher_answers not in ("", "draws"):
            raise ValueError(f"teacher_answers: llm-budget gives every student its own draws (draws); "
                             f"got {self.teacher_answers!r}")


def budget_draws_seed(seed: int, scheme: str, student: int) -> int:
    """The generation seed of student ``student``'s teacher answers under ``scheme`` (answer j to question q
    then comes from the stream named by (this seed, q, j))."""
    from ..llm.pipeline import derived_seed

    return derived_seed(seed, "llm-budget-draws", scheme, int(student))


def _cells(cfg: LLMBudgetConfig) -> list[dict[str, Any]]:
    return [{"scheme": REFERENCE}] + [{"scheme": s} for s in cfg.schemes]


def _draws(res: Any, train: Any, cfg: LLMBudgetConfig, scheme: str, dec: Any, gen_seed: int,
           budget: int) -> tuple[list[list[str]], list[int], list[Any], list[float], list[float], Any]:
    """One student's teacher answers: (texts, k_i, embeddings, pilot dispersion, shrunk, generation)."""
    from ..llm.budget import budget_samples
    from ..llm.generate import generate_samples

    qs, ids = [it.question for it in train], [it.id for it in train]
    n = len(qs)
    if scheme == "uniform":
        k = cfg.budget_per_question
        g = generate_samples(res.teacher, qs, k, dec, seed=gen_seed, cache=res.cache, ids=ids)
        emb = res.embedder.encode([t for row in g.texts for t in row]).reshape(n, k, -1)
        nan = [float("nan")] * n
        return [list(r) for r in g.texts], [k] * n, list(emb), nan, nan, g
    g, ks, emb, (d0, v) = budget_samples(res.teacher, qs, ids, cfg.pilot, budget, dec, gen_seed, res.cache,
                                         res.embedder)
    return g.texts, ks, emb, d0, v, g


def _k_stats(ks_by_student: list[list[int]], budget: int) -> dict[str, Any]:
    import numpy as np

    ks = np.array(ks_by_student, dtype=float)  # (R, n)
    used = ks.sum(axis=1)
    if not np.all(used == budget):  # the allocation's contract; a broken allocator must not produce results
        raise RuntimeError(f"llm-budget: students spent {sorted(set(used.tolist()))} teacher answers, budget {budget}")
    return {"budget_used": int(used[0]), "teacher_answers_total": int(used.sum()), "k_min": int(ks.min()),
            "k_mean": float(ks.mean()), "k_max": int(ks.max()), "k_sd": float(ks.std(axis=1).mean()),
            "n_uniform_allocations": int(np.sum(ks.min(axis=1) == ks.max(axis=1)))}


def _pilot_stats(alloc: list[dict[str, Any]], n_students: int) -> dict[str, float]:
    """Mean pilot dispersion and the mean within-student coefficient of variation (NaN for ``uniform``)."""
    import numpy as np

    d = np.array([a["pilot_dispersion"] for a in alloc], dtype=float).reshape(n_students, -1)
    if not np.isfinite(d).all():
        return {"pilot_dispersion_mean": float("nan"), "pilot_dispersion_cv": float("nan")}
    m = d.mean(axis=1)
    cv = np.where(m > 0, d.std(axis=1, ddof=1) / np.where(m > 0, m, 1.0), 0.0) if d.shape[1] > 1 else np.zeros_like(m)
    return {"pilot_dispersion_mean": float(m.mean()), "pilot_dispersion_cv": float(cv.mean())}


def _run(cfg: LLMBudgetConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    from ..llm.evaluate import question_rows
    from ..llm.pipeline import method_question_rows, method_rows, run_method, teacher_row
    from ..llm.select import embedding_dispersion

    scheme = str(cell["scheme"])
    res, train, test, dec, sft = _setup(cfg, seed)
    eval_dec = replace(dec, temperature=cfg.eval_temperature)
    if cfg.epochs_times_k:
        sft = replace(sft, epochs=sft.epochs * cfg.budget_per_question)
    n = len(train)
    budget = cfg.budget_per_question * n
    common = {"budget": budget, "budget_per_question": cfg.budget_per_question, "pilot": cfg.pilot,
              "training_method": cfg.method, "n_train": n, "n_eval": len(test), "epochs": sft.epochs}
    tev = _teacher_eval(res, test, cfg, dec, seed)
    ttr = _teacher_eval(res, train, cfg, dec, seed, "teacher-eval-transfer")
    if scheme == REFERENCE:
        rows = [teacher_row(ttr, "transfer"), teacher_row(tev, "heldout")]
        un, unq = _untrained_rows(res, train, test, cfg, eval_dec, seed, ttr.sample_emb, tev.sample_emb)
        qrows = question_rows([ttr], "teacher", "transfer") + question_rows([tev], "teacher", "heldout") + unq
        return ([{**cell, **r, **common, "record": "summary"} for r in rows + un]
                + [{**cell, **q, **common} for q in qrows])

    ks_by_student: list[list[int]] = []
    alloc: list[dict[str, Any]] = []

    def records(r: int, base: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        texts, ks, emb, d0, v, g = _draws(res, train, cfg, scheme, dec, budget_draws_seed(seed, scheme, r), budget)
        ks_by_student.append(list(ks))
        recs = []
        for i, it in enumerate(train):
            recs.append({**it.to_dict(), "teacher": res.teacher.name, "samples": texts[i], "k": ks[i],
                         "dispersion": embedding_dispersion(emb[i]), "n_empty": sum(1 for t in texts[i] if not t)})
            alloc.append({"student": r, "question_id": it.id, "k": ks[i], "pilot_dispersion": d0[i],
                          "pilot_dispersion_shrunk": v[i],
                          "pilot_sample_df": g.extra.get("pilot_sample_df", float("nan"))})
        return recs, {"teacher_hits": g.cache_hits, "teacher_misses": g.cache_misses, "teacher_empty": g.n_empty,
                      "teacher_tokens": g.generated_tokens, "teacher_seconds": g.seconds}

    # every student's "before" (the untrained student; its generation is cached by the reference cell) and the
    # teacher's per-question dispersion: knowledge change and uncertainty fidelity per student
    before = _untrained_evals(res, train, test, cfg, eval_dec, seed, ttr.sample_emb, tev.sample_emb)
    t_intra = {"transfer": ttr.per_question["intra_var"], "heldout": tev.per_question["intra_var"]}
    mr = run_method(res, cfg.method, train, test, k=cfg.budget_per_question, n_students=cfg.n_students, dec=dec,
                    eval_dec=eval_dec, k_eval=cfg.k_eval, sft=sft, seed=seed, teacher_eval_emb=tev.sample_emb,
                    teacher_transfer_emb=ttr.sample_emb, multi_response_epochs_scale=cfg.multi_response_epochs_scale,
                    teacher_answers="draws", data_order=cfg.data_order, records_fn=records, before=before,
                    teacher_intra=t_intra)
    kst = {**_k_stats(ks_by_student, budget), **_pilot_stats(alloc, cfg.n_students)}
    design = (f"{scheme} allocation of B={budget} teacher answers ({cfg.budget_per_question}/question"
              + (f", pilot {cfg.pilot}" if scheme == "adaptive" else "") + f"), own draws per student, "
              f"{cfg.method} training set, data_order={cfg.data_order}")
    out = []
    for r in method_rows(mr):
        r.setdefault("record", "summary")
        out.append({**cell, **r, "method": scheme, **common, **kst, "design": design})
    out += [{**cell, **q, "method": scheme, **common} for q in method_question_rows(mr)]
    out += [{**cell, "record": "allocation", "method": scheme, **a, "budget": budget,
             "budget_per_question": cfg.budget_per_question, "pilot": cfg.pilot} for a in alloc]
    return out


def _summary_rows(df: Any) -> Any:
    return df[df["record"] == "summary"] if "record" in df else df


_SUMMARY_COLS = ("split", "method", "n_students", "budget", "budget_used", "pilot", "k_min", "k_mean", "k_max",
                 "k_sd", "n_uniform_allocations", "pilot_dispersion_cv", "mse_mean", "mse_std", "cosine_mean", "alignment_mean",
                 "accuracy_mean", "hallucination_mean", "intra_var_mean", "inter_var", "inter_var_se")


def _summary(df: Any) -> Any:
    d = _summary_rows(df)
    return d[[c for c in _SUMMARY_COLS if c in d.columns]]


def _plot(df: Any, cfg: LLMBudgetConfig, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from ..plotting import save_figure

    d = _summary_rows(df).sort_values(["split", "method"])
    paths = [_bar_plot(d, out_dir / "llm_budget.png", "method,split",
                       "Equal teacher budget: uniform vs adaptive allocation (mean ± std across students)",
                       ("mse", "alignment", "accuracy", "inter_var"))]
    al = df[(df["record"] == "allocation") & (df["method"] == "adaptive")] if "record" in df else df.iloc[0:0]
    al = al[al["pilot_dispersion"].notna()] if len(al) else al
    if len(al):
        fig, ax = plt.subplots(figsize=(4.6, 3.4))
        for st, g in al.groupby("student"):
            ax.plot(g["pilot_dispersion"], g["k"], "o", ms=3, alpha=0.6, label=f"student {st}")
        ax.axhline(cfg.budget_per_question, color="grey", lw=0.8, ls="--", label="uniform k")
        ax.set(xlabel="pilot SBERT dispersion", ylabel="teacher answers k_i",
               title="adaptive allocation per question")
        ax.grid(alpha=0.3)
        if al["student"].nunique() <= 6:
            ax.legend(fontsize=7)
        paths.append(save_figure(fig, out_dir / "llm_budget_allocation.png"))
    return paths


def _budget_profile(base: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {**base, **over}


register(
    Experiment(
        name="llm-budget",
        section="7",
        description="beyond the paper: equal-budget uniform vs uncertainty-allocated (two-stage, pilot dispersion) "
                    "teacher sampling for LLM students, averaging training sets",
        config_cls=LLMBudgetConfig,
        cells=_cells,
        run_cell=_run,
        plot=_plot,
        summary=_summary,
        notes=(DESIGN_NOTE + " "
               "Both schemes spend exactly B = budget_per_question x n_train teacher answers per student "
               "(budget_used). The adaptive scheme is the two-stage allocation of `uqkd llm sample --budget`; "
               "n_uniform_allocations counts students whose allocation came out uniform (shrinkage pooled the "
               "pilot dispersions), in which case the comparison says nothing about allocation."),
        profiles={
            "quick": _budget_profile(QUICK, budget_per_question=8, pilot=4, n_students=5),
            "demo": _budget_profile(DEMO, budget_per_question=3, pilot=2, n_students=2, n_train=6, n_eval=3),
            "paper": _budget_profile(PAPER, budget_per_question=10, pilot=4, n_students=10),  # 3 pilot df: less pooling
        },
        deviations=(BEYOND_THE_PAPER, *LLM_SETTING),
    )
)
