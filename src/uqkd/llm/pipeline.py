"""The end-to-end LLM distillation pipeline used by the experiments.

teacher samples (k per question, per student) -> training set per method -> R students fine-tuned
-> evaluation of every student and of the teacher -> one row per method with mean and spread.

Seeds derive from identities: teacher draws of student ``r`` from ("teacher-draws", r), the
untrained student's samples from ("student-init-draws", r), training from ("sft", method, k, r),
evaluation sampling from ("eval", r). Teacher draws are shared across methods (a paired design)
and nested across k (sample j is the same whatever k is), and they are cached on disk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._seeding import seed_sequence
from ..data.qa import QAItem, countryinfo_qa, load_qa, split_qa
from ..methods import resolve_method
from .embed import Embedder, load_embedder
from .evaluate import ModelEval, evaluate_model, question_rows, summarize_change, summarize_students
from .generate import DecodingConfig, SampleCache, generate_samples
from .models import LoadedLM, default_cache_dir, derive_student, load_causal_lm, perturb_weights
from .select import build_training_set, embedding_dispersion
from .train import TrainConfig, train_student

__all__ = ["Resources", "get_resources", "derived_seed", "teacher_records", "run_method", "load_items", "method_rows",
           "target_accuracy",
           "method_question_rows", "teacher_row"]


def derived_seed(seed: int, *identity: Any) -> int:
    """A 62-bit integer seed for the work named by ``identity``."""
    st = seed_sequence(seed, *identity).generate_state(2, dtype=np.uint32)
    return (int(st[0]) << 30) ^ int(st[1])


@dataclass
class Resources:
    """Models loaded once per process and shared by cells."""

    teacher: LoadedLM
    student: LoadedLM
    embedder: Embedder
    cache: SampleCache
    extra: dict[str, Any] = field(default_factory=dict)


_RES: dict[tuple[Any, ...], Resources] = {}


def get_resources(
    teacher: str,
    student: str,
    student_every: int,
    embedder: str,
    cache_dir: str | Path | None = None,
    threads: int = 0,
    device: str = "auto",
    dtype: str = "auto",
) -> Resources:
    """Load (or reuse) teacher, student, embedder and sample cache.

    ``student == ""`` derives the student from the teacher: with ``student_every == 1`` it is the teacher's
    own weights (self-distillation, uqkd's CPU design), with ``student_every = m > 1`` the teacher cut to
    every m-th decoder layer (:func:`~uqkd.llm.models.derive_student`).
    """
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    key = (teacher, student, student_every, embedder, str(cache_root), device, dtype)
    if key not in _RES:
        t = load_causal_lm(teacher, cache_dir=cache_root, device=device, dtype=dtype)
        if student:
            s = load_causal_lm(student, cache_dir=cache_root, device=device, dtype=dtype)
        elif student_every == 1:
            # self-distillation (the CPU default): the student starts as the teacher. The weights are shared,
            # not copied: every step that changes a student (training, init noise) works on its own copy.
            s = LoadedLM(f"{t.name}|every=1", t.model, t.tokenizer, t.chat, t.revision)
        else:
            s = derive_student(t, student_every)
        _RES[key] = Resources(t, s, load_embedder(embedder, device=device), SampleCache(cache_root / "samples"))
    return _RES[key]


def load_items(data: str, kinds: Sequence[str], n_train: int, n_eval: int, seed: int = 0) -> tuple[list[QAItem], list[QAItem]]:
    """Train and eval questions: the countryinfo set (``data == ""``) or a user file, split by id hash."""
    items = countryinfo_qa(kinds) if not data else load_qa(data)
    train, test = split_qa(items, 0.2, seed=seed)
    return train[:n_train], test[:n_eval]


def teacher_records(
    res: Resources,
    items: Sequence[QAItem],
    k: int,
    dec: DecodingConfig,
    seed: int,
    student_index: int,
    *,
    student_k: int = 0,
    student_lm: LoadedLM | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample records (the ``uqkd llm sample`` format) for one student's teacher draws."""
    qs = [it.question for it in items]
    g = generate_samples(res.teacher, qs, k, dec, seed=derived_seed(seed, "teacher-draws", student_index),
                         cache=res.cache)
    emb = res.embedder.encode([t for row in g.texts for t in row]).reshape(len(qs), k, -1)  # (n, k, d)
    recs = []
    for i, it in enumerate(items):
        recs.append({**it.to_dict(), "teacher": res.teacher.name, "samples": g.texts[i],
                     "dispersion": embedding_dispersion(emb[i]), "n_empty": sum(1 for t in g.texts[i] if not t)})
    info = {"teacher_hits": g.cache_hits, "teacher_misses": g.cache_misses, "teacher_empty": g.n_empty,
            "teacher_tokens": g.generated_tokens, "teacher_seconds": g.seconds}
    if student_k:
        slm = student_lm or res.student
        sg = generate_samples(slm, qs, student_k, dec, seed=derived_seed(seed, "student-init-draws", student_index),
                              cache=res.cache)
        for i, r in enumerate(recs):
            r["student_samples"] = sg.texts[i]
    return recs, info


@dataclass
class MethodResult:
    """Evaluations of one method's students plus bookkeeping."""

    method: str
    evals: list[ModelEval]
    info: dict[str, Any]


TEACHER_ANSWERS = ("draws", "shared-greedy", "shared-draws")
DATA_ORDERS = ("fixed", "per-student")


def _param_probe(model: Any, n: int, seed: int) -> tuple[list[tuple[str, int]], Any]:
    """A fixed, seeded sample of (parameter name, flat index): the probe for parameter variance."""
    from .._seeding import make_rng

    names = [(name, p.numel()) for name, p in model.named_parameters()]
    sizes = np.array([s for _, s in names], dtype=np.int64)
    rng = make_rng(seed, "param-probe")
    flat = np.sort(rng.choice(int(sizes.sum()), size=min(n, int(sizes.sum())), replace=False))
    bounds = np.cumsum(sizes)
    out = []
    for f in flat:
        j = int(np.searchsorted(bounds, f, side="right"))
        out.append((names[j][0], int(f - (bounds[j] - sizes[j]))))
    return out, None


def _plain_name(name: str) -> str:
    """A parameter's name without peft's wrapping (``base_model.model.`` prefix, ``.base_layer`` infix)."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _probe_values(model: Any, probe: list[tuple[str, int]]) -> np.ndarray:
    """The probe's values; under LoRA (before the merge) the frozen base weights, which training leaves as they
    are: the parameter-variance design of llm-init-noise fine-tunes all weights (its profiles set lora=false)."""
    params = {_plain_name(n): p for n, p in model.named_parameters()}
    return np.array([float(params[n].detach().reshape(-1)[i]) for n, i in probe])


def target_accuracy(rows: Sequence[dict[str, Any]], items: Sequence[QAItem]) -> np.ndarray:
    """Per question of ``items``, the share of a student's training labels that state a right fact (contain an
    accepted alias): 0/1 for one label per question, a fraction for multi-response; NaN for a question without
    rows (all its teacher answers were empty) or without reference aliases. The noise the student is taught, before
    any training: shape (n,)."""
    from ..data.qa import contains_alias

    by_id: dict[str, list[float]] = {}
    aliases = {it.id: it.aliases for it in items}
    for r in rows:
        c = r["completion"]
        text = c[-1]["content"] if isinstance(c, list) else str(c)
        al = aliases.get(str(r["id"]))
        if al:
            by_id.setdefault(str(r["id"]), []).append(float(contains_alias(text, al)))
    return np.array([float(np.mean(by_id[it.id])) if it.id in by_id else np.nan for it in items])


def run_method(
    res: Resources,
    method: str,
    train_items: Sequence[QAItem],
    eval_items: Sequence[QAItem],
    *,
    k: int,
    n_students: int,
    dec: DecodingConfig,
    eval_dec: DecodingConfig,
    k_eval: int,
    sft: TrainConfig,
    seed: int,
    teacher_eval_emb: np.ndarray | None,
    init_noise: float = 0.0,
    multi_response_epochs_scale: float = 1.0,
    teacher_answers: str = "draws",
    data_order: str = "fixed",
    teacher_transfer_emb: np.ndarray | None = None,
    track_params: int = 0,
    records_fn: Any = None,
    before: dict[str, ModelEval] | None = None,
    teacher_intra: dict[str, np.ndarray] | None = None,
) -> MethodResult:
    """Distil ``n_students`` students with one method and evaluate them on held-out and transfer questions.

    What varies across students is named by the design:

    - ``teacher_answers``: ``draws`` (student r gets its own k teacher draws), ``shared-greedy``
      (every student trains on the same greedy teacher answers: the published §5/§6 LLM scripts),
      ``shared-draws`` (the same k draws for every student);
    - ``data_order``: ``fixed`` (one data order for all students) or ``per-student``;
    - ``init_noise`` > 0: relative weight noise named by (seed, r).

    ``info["transfer"]`` holds the evaluations on ``train_items`` (the questions distilled on);
    ``track_params`` > 0 records that many probe parameters before and after training and the
    first probe's value after every epoch (``info["params_before"]``, ``["params_after"]``,
    ``["trajectory"]``).
    ``records_fn(r, base)``, when given, returns student r's ``(sample records, info)`` in place of
    :func:`teacher_records` (e.g. a variable number of teacher draws per question: ``llm-budget``).

    Knowledge change: ``before`` (``{"transfer": ModelEval, "heldout": ModelEval}`` of the student before
    distillation, shared by every student) is each student's "before" when there is no init noise; with
    ``init_noise`` > 0 and ``before`` given, each student's perturbed starting point is evaluated instead
    (``info["before"]``: per split, one evaluation per student). ``teacher_intra`` (per split, the
    teacher's per-question sample variance) gives each student's uncertainty fidelity.
    """
    if teacher_answers not in TEACHER_ANSWERS:
        raise ValueError(f"teacher_answers: expected one of {', '.join(TEACHER_ANSWERS)}; got {teacher_answers!r}")
    if data_order not in DATA_ORDERS:
        raise ValueError(f"data_order: expected one of {', '.join(DATA_ORDERS)}; got {data_order!r}")
    evals: list[ModelEval] = []
    transfer: list[ModelEval] = []
    info: dict[str, Any] = {"n_skipped": 0, "teacher_empty": 0, "train_rows": 0, "final_loss": [], "first_loss": [],
                            "target_correct": [],
                            "n_steps": [], "params_before": [], "params_after": [], "trajectory": []}
    befores: dict[str, list[ModelEval]] = {"transfer": [], "heldout": []}
    probe = _param_probe(res.student.model, track_params, seed)[0] if track_params else None
    t0 = time.perf_counter()
    for r in range(n_students):
        base = res.student
        if init_noise > 0:
            base = perturb_weights(base, init_noise, seed, "init-noise", r)
        if before is not None:
            for split, items in (("transfer", train_items), ("heldout", eval_items)):
                befores[split].append(before[split] if init_noise == 0 else evaluate_model(
                    base, items, res.embedder, k=k_eval, decoding=eval_dec,
                    seed=derived_seed(seed, "eval-before", split, r)))
        draw_index = r if teacher_answers == "draws" else 0
        tdec = replace(dec, do_sample=False) if teacher_answers == "shared-greedy" else dec
        sk = k if resolve_method(method, domain="llm").needs_student_samples else 0  # its own samples too
        if records_fn is not None:
            recs, tinfo = records_fn(r, base)
        else:
            recs, tinfo = teacher_records(res, train_items, k, tdec, seed, draw_index, student_k=sk, student_lm=base)
        rows, binfo = build_training_set(recs, method, res.embedder, seed=seed, student_index=draw_index,
                                         format="conversational" if base.chat else "standard")
        info["target_correct"].append(target_accuracy(rows, train_items))
        cfg = sft
        if method == "multi-response" and multi_response_epochs_scale != 1.0:
            cfg = replace(sft, epochs=max(1, int(round(sft.epochs * multi_response_epochs_scale))))
        # data_order=fixed holds every source but the teacher's answers fixed: one data order and one LoRA
        # adapter init for all students of a method (both derive from this identity)
        ident = ("sft", method, k, r) if data_order == "per-student" else ("sft", method, k)
        traj: list[float] = []
        cb = None
        if probe is not None:
            info["params_before"].append(_probe_values(base.model, probe))
            traj.append(float(info["params_before"][-1][0]))

            def cb(model: Any, epoch: int, _t: list[float] = traj) -> None:
                _t.append(float(_probe_values(model, probe[:1])[0]))
        trained, trinfo = train_student(base, rows, cfg, seed=seed, identity=ident, on_epoch_end=cb)
        if probe is not None:
            info["params_after"].append(_probe_values(trained.model, probe))
            info["trajectory"].append(traj)
        evals.append(evaluate_model(trained, eval_items, res.embedder, k=k_eval, decoding=eval_dec,
                                    seed=derived_seed(seed, "eval", r), teacher_sample_emb=teacher_eval_emb))
        transfer.append(evaluate_model(trained, train_items, res.embedder, k=k_eval, decoding=eval_dec,
                                       seed=derived_seed(seed, "eval-transfer", r),
                                       teacher_sample_emb=teacher_transfer_emb))
        info["n_skipped"] += binfo["n_skipped"]
        info["teacher_empty"] += tinfo["teacher_empty"]
        info["train_rows"] += binfo["n_rows"]
        info["final_loss"].append(trinfo["losses"][-1])
        info["first_loss"].append(trinfo.get("first_loss", float("nan")))
        info["n_steps"].append(trinfo.get("n_steps", 0))
        del trained
    info["final_loss"] = float(np.mean(info["final_loss"]))
    info["first_loss"] = float(np.mean(info["first_loss"]))
    info["steps_per_student"] = list(info["n_steps"])
    info["n_steps"] = int(round(float(np.mean(info["n_steps"]))))
    info["before"] = befores if before is not None else None
    info["teacher_intra"] = teacher_intra
    info["seconds"] = time.perf_counter() - t0  # logged, never written to results.csv (reruns stay byte-identical)
    info["transfer"] = transfer
    info["design"] = f"teacher_answers={teacher_answers}, data_order={data_order}, init_noise={init_noise}"
    return MethodResult(method, evals, info)


def method_rows(mr: MethodResult) -> list[dict[str, Any]]:
    """Two results rows (``split`` = ``transfer``, ``heldout``): mean/std across students of every metric,
    inter-student variance with its standard error, the design and bookkeeping (no wall-clock values)."""
    import logging

    logging.getLogger(__name__).info("method %s: %d students in %.1f s", mr.method, len(mr.evals),
                                     mr.info.get("seconds", float("nan")))
    common = {
        "design": mr.info.get("design", ""),
        "train_rows": mr.info["train_rows"],
        "skipped_questions": mr.info["n_skipped"],
        "teacher_empty_answers": mr.info["teacher_empty"],
        "final_train_loss": mr.info["final_loss"],
        "first_train_loss": mr.info.get("first_loss", float("nan")),
        "optimizer_steps": mr.info.get("n_steps", 0),
        "optimizer_steps_min": min(mr.info.get("steps_per_student") or [0]),
        "optimizer_steps_max": max(mr.info.get("steps_per_student") or [0]),
    }
    out = []
    bef = mr.info.get("before") or {}
    ti = mr.info.get("teacher_intra") or {}
    tc = [np.asarray(x, dtype=float) for x in mr.info.get("target_correct") or []]
    per_student = [float(np.nanmean(x)) if np.isfinite(x).any() else np.nan for x in tc]
    v = np.array([x for x in per_student if np.isfinite(x)])
    labels = ({"target_accuracy_mean": float(v.mean()) if v.size else float("nan"),
               "target_accuracy_std": float(v.std(ddof=1)) if v.size >= 2 else float("nan")} if tc else {})
    for split, evs in (("transfer", mr.info.get("transfer") or []), ("heldout", mr.evals)):
        if evs:
            change = summarize_change(evs, bef.get(split) or None, ti.get(split))
            out.append({"method": mr.method, "split": split, **summarize_students(evs), **change,
                        **(labels if split == "transfer" else {}), **common})
    return out


def method_question_rows(mr: MethodResult) -> list[dict[str, Any]]:
    """Per-question rows of both splits (:func:`uqkd.llm.evaluate.question_rows`): ``record = "question"``
    (one per student and question) and ``record = "question-inter"`` (per question, across students)."""
    out: list[dict[str, Any]] = []
    bef = mr.info.get("before") or {}
    tc = mr.info.get("target_correct") or []
    for split, evs in (("transfer", mr.info.get("transfer") or []), ("heldout", mr.evals)):
        if evs:
            extra = {"target_correct": tc} if split == "transfer" and len(tc) == len(evs) else None
            out += question_rows(evs, mr.method, split, before=bef.get(split) or None, extra=extra)
    return out


def method_row(mr: MethodResult) -> dict[str, Any]:
    """The held-out row of :func:`method_rows` (kept for callers of the one-row form)."""
    return [r for r in method_rows(mr) if r["split"] == "heldout"][0]


def teacher_row(ev: ModelEval, split: str = "heldout") -> dict[str, Any]:
    """The teacher's own figures in the same columns (std 0, one model, inter_var 0)."""
    row: dict[str, Any] = {"method": "teacher", "split": split, "n_students": 1}
    for key, v in ev.metrics.items():
        row[f"{key}_mean"] = v
        row[f"{key}_std"] = 0.0
    row["inter_var"] = 0.0
    row["inter_var_se"] = 0.0
    return row
