"""Choose the fused MLP kernel's variant by measuring it on the host (like cuDNN's benchmark mode).

Constants tuned on one machine (oneDNN against MKL's bmm for the first-layer GEMMs, the activation
budget that sets the chunk size) do not carry to another. :func:`choose` times candidate variants
on a small slice of the real problem and keeps the fastest, once per key per host:

* in-process memo: a second fit of the same key measures nothing;
* on disk, ``$UQKD_CACHE/autotune/mlp-<fingerprint hash>.json`` (``~/.cache/uqkd`` without
  ``UQKD_CACHE``): one file per host fingerprint (:func:`host_fingerprint`: CPU model, L2/L3 sizes,
  CPU count, torch version, MKL / oneDNN availability), written atomically. The measurement runs
  under an exclusive lock on ``<file>.lock`` and re-reads the file first, so concurrent worker
  processes measure a key once and all use the first writer's choice (one choice per key per host:
  every cell of a sweep trains with the same variant, whatever its worker).
  A corrupt or unreadable file is ignored (re-measured and rewritten), never fatal.

``UQKD_AUTOTUNE``: unset / ``1`` / ``on``: measure; ``0`` / ``off``: uqkd's defaults (no
measurement, no file); a variant name (:data:`VARIANTS`) pins it. Anything else is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..config import UserError

__all__ = ["VARIANTS", "autotune_mode", "host_fingerprint", "cache_file", "choose", "clear_memo"]

#: Kernel variants of :class:`uqkd.students.mlp.BatchedMLP` (``backend=`` or ``UQKD_AUTOTUNE=`` pins one).
VARIANTS = ("fused-onednn", "fused-bmm", "autograd")
_OFF = ("0", "off", "false", "no", "default")
_ON = ("", "1", "on", "true", "yes", "auto")
FORMAT = 1

_memo: dict[tuple[str, str], dict[str, Any]] = {}
_fingerprint: dict[str, Any] | None = None


def autotune_mode() -> str:
    """``"on"``, ``"off"`` or a pinned variant, from ``UQKD_AUTOTUNE``; a bad value is a :class:`UserError`."""
    raw = os.environ.get("UQKD_AUTOTUNE", "")
    v = raw.strip().lower()
    if v in _ON:
        return "on"
    if v in _OFF:
        return "off"
    if v in VARIANTS:
        return v
    raise UserError(f"UQKD_AUTOTUNE: expected 1/on (measure), 0/off (defaults) or a variant "
                    f"({', '.join(VARIANTS)}), got {raw!r}")


def clear_memo() -> None:
    """Forget this process's choices (and fingerprint); the disk cache stays."""
    global _fingerprint
    _memo.clear()
    _fingerprint = None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cache_sizes() -> dict[str, str]:
    out: dict[str, str] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    with contextlib.suppress(OSError):
        for idx in sorted(base.glob("index*")):
            with contextlib.suppress(OSError):
                level = (idx / "level").read_text().strip()
                kind = (idx / "type").read_text().strip() if (idx / "type").exists() else ""
                if level in ("2", "3") and kind != "Instruction":
                    out[f"L{level}"] = (idx / "size").read_text().strip()
    return out


def host_fingerprint() -> dict[str, Any]:
    """What the choice depends on besides the problem: CPU, caches, CPU count, torch and its BLAS backends."""
    global _fingerprint
    if _fingerprint is None:
        import torch

        _fingerprint = {
            "cpu": _cpu_model(),
            "caches": _cache_sizes(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "torch": torch.__version__,
            "mkl": bool(torch.backends.mkl.is_available()),
            "onednn": bool(torch.backends.mkldnn.is_available()),
        }
    return dict(_fingerprint)


def _fingerprint_hash(fp: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``$UQKD_CACHE`` or ``~/.cache/uqkd`` (as :func:`uqkd.llm.models.default_cache_dir`)."""
    return Path(os.environ.get("UQKD_CACHE") or Path.home() / ".cache" / "uqkd")


def cache_file(fp: Mapping[str, Any] | None = None) -> Path:
    """The host's autotuning file: ``<cache>/autotune/mlp-<hash of the fingerprint>.json``."""
    return cache_dir() / "autotune" / f"mlp-{_fingerprint_hash(host_fingerprint() if fp is None else fp)}.json"


def _read(path: Path, fp: Mapping[str, Any]) -> dict[str, Any]:
    """The file's choices, or {} when it is missing, corrupt or for another fingerprint."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not (isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("fingerprint") == dict(fp)
            and isinstance(doc.get("choices"), dict)):
        return {}
    return {k: v for k, v in doc["choices"].items() if isinstance(v, dict) and v.get("variant") in VARIANTS}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` + ".lock" (none where fcntl or the folder is unavailable)."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(str(path) + ".lock", "a+")  # noqa: SIM115 - closed below
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fh.close()  # releases the lock


def measure(candidates: Mapping[str, Callable[[], float]], *, reps: int = 3, prefer: str | None = None,
            margin: float = 0.03, admit: Callable[[str, float], bool] | None = None) -> tuple[str, dict[str, float]]:
    """Time each candidate (a callable returning seconds per unit of work, e.g. per student-epoch).

    One warm-up call each, then ``reps`` interleaved rounds (each candidate once per round, so a busy
    spell hits all of them); a candidate over 2x the best after a round is dropped. The minimum per
    candidate wins; ``prefer`` (the default) keeps its place unless another is faster by ``margin``.
    ``admit(name, best warm-up time so far)``, when given, may leave a candidate out before it runs
    (one whose first call is expensive, e.g. the autograd path's one-off import of torch's optimiser
    machinery, about a second).
    """
    best: dict[str, float] = {}
    for name, fn in candidates.items():
        so_far = min(best.values(), default=float("inf"))
        if admit is not None and best and not admit(name, so_far):
            continue
        best[name] = float(fn())  # warm-up: first-touch of buffers, oneDNN primitive creation
    alive = list(best)
    best = dict.fromkeys(best, float("inf"))
    for _ in range(max(1, reps)):
        for name in alive:
            best[name] = min(best[name], float(candidates[name]()))
        top = min(best[a] for a in alive)
        alive = [a for a in alive if best[a] <= 2.0 * top]
    winner = min(best, key=lambda k: best[k])
    if prefer in best and best[prefer] <= (1.0 + margin) * best[winner]:
        winner = prefer
    return winner, best


def choose(key: str, candidates: Callable[[], Mapping[str, Callable[[], float]]], *, prefer: str | None = None,
           admit: Callable[[str, float], bool] | None = None) -> str:
    """The candidate for ``key`` on this host: memo, else the disk cache, else measured now and stored.

    ``candidates`` builds the timing callables, named ``"<variant>"`` or ``"<variant>@<detail>"``
    (called only when a measurement is needed). Returns the winning candidate's name.
    """
    fp = host_fingerprint()
    fph = _fingerprint_hash(fp)
    hit = _memo.get((fph, key))
    if hit is not None:
        return str(hit["variant"])
    path = cache_file(fp)
    choices = _read(path, fp)
    if key not in choices:
        with _locked(path):
            choices = _read(path, fp)  # first writer wins: another process may have measured meanwhile
            if key not in choices:
                cands = candidates()
                winner, times = measure(cands, prefer=prefer, admit=admit)
                choices[key] = {"variant": winner.split("@")[0], "candidate": winner,
                                "seconds_per_unit": {k: (v if v != float("inf") else None) for k, v in times.items()},
                                "not_timed": sorted(set(cands) - set(times)),
                                "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
                doc = {"format": FORMAT, "fingerprint": fp, "choices": choices}
                with contextlib.suppress(OSError):  # a read-only cache folder: this process remembers it
                    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True), durable=False)
    _memo[(fph, key)] = choices[key]
    return str(choices[key].get("candidate", choices[key]["variant"]))
