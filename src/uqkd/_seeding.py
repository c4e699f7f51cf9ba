"""Seeds derived from the identity of the work, never from a loop counter.

A unit of work (a sweep cell, a student, a block of students) is named by a tuple of
keys such as ``("variance-aware-linear", "alpha=0.1", "k=3", "teacher-draws")``. The
keys are hashed into a numpy ``SeedSequence`` spawn key together with the user's root
seed, so the random numbers a unit sees depend only on (root seed, identity): not on the
worker count, the chunk size or the order of execution.

Students are seeded in fixed blocks of :data:`STUDENT_BLOCK` so that drawing the noise for
1,000 students costs 16 generator constructions rather than 1,000, while student ``r``'s
numbers still do not depend on how many students run beside it: the whole block is always
drawn and then sliced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["key_to_int", "seed_sequence", "make_rng", "STUDENT_BLOCK", "student_draws", "student_fill", "student_normals",
           "student_uniforms"]

STUDENT_BLOCK = 64


def key_to_int(key: Any) -> int:
    """Hash one identity key (str, int, float, tuple) to a stable 32-bit integer.

    Python's ``hash`` is salted per process; this is not.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= int(key) < 2**32:
        return int(key)
    text = repr(key) if not isinstance(key, str) else key
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def seed_sequence(seed: int, *identity: Any) -> np.random.SeedSequence:
    """SeedSequence for the unit of work named by ``identity`` under root ``seed``.

    Examples
    --------
    >>> a = seed_sequence(0, "cell", "alpha=0.1")
    >>> b = seed_sequence(0, "cell", "alpha=0.1")
    >>> a.generate_state(2).tolist() == b.generate_state(2).tolist()
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=tuple(key_to_int(k) for k in identity))


def make_rng(seed: int, *identity: Any) -> np.random.Generator:
    """A Generator for the unit of work named by ``identity``."""
    return np.random.default_rng(seed_sequence(seed, *identity))


def _check_student_ids(student_ids: Any) -> np.ndarray:
    """``student_ids`` as a flat int64 array of at least one distinct, non-negative integer id."""
    try:
        raw = np.asarray(student_ids)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"student_ids: expected integer ids, got {type(student_ids).__name__} ({exc})") from None
    if raw.dtype.kind == "b" or raw.dtype.kind not in "iuf":
        raise TypeError(f"student_ids: expected integer ids, got an array of dtype {raw.dtype}")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        bad = raw.reshape(-1)[~(np.isfinite(raw) & (raw == np.round(raw))).reshape(-1)][0]
        raise ValueError(f"student_ids: expected integer ids, got {bad!r}")
    ids = raw.astype(np.int64).reshape(-1)
    if ids.size == 0:
        raise ValueError("student_ids: expected at least one student id")
    if ids.min() < 0:
        raise ValueError(f"student_ids: expected non-negative ids, got minimum {ids.min()}")
    uniq, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        dup = int(uniq[counts > 1][0])
        raise ValueError(f"student_ids: expected distinct ids (each id is one independent student), got id {dup} "
                         f"{int(counts[counts > 1][0])} times")
    return ids


def student_draws(
    seed: int,
    identity: Sequence[Any],
    student_ids: Any,
    draw: Callable[[np.random.Generator, int], np.ndarray],
) -> np.ndarray:
    """Per-student random arrays from block generators: ``draw(rng, STUDENT_BLOCK)`` -> (BLOCK, ...).

    The block holding student ``r`` is always drawn whole and then sliced, so student ``r``'s
    numbers depend only on (seed, identity, r, draw) and not on which other students are
    requested beside it.

    Returns
    -------
    array of shape (len(student_ids), ...)
    """
    ids = _check_student_ids(student_ids)
    out: np.ndarray | None = None
    for b in np.unique(ids // STUDENT_BLOCK).tolist():
        block = np.asarray(draw(make_rng(seed, *identity, "student-block", int(b)), STUDENT_BLOCK))
        if out is None:
            out = np.empty((ids.size, *block.shape[1:]), dtype=block.dtype)
        sel = np.nonzero(ids // STUDENT_BLOCK == b)[0]
        out[sel] = block[ids[sel] - b * STUDENT_BLOCK]
    if out is None:
        raise ValueError("student_ids: expected at least one student id")
    return out


def student_fill(
    seed: int,
    identity: Sequence[Any],
    student_ids: Any,
    outs: Sequence[np.ndarray],
    fill: Callable[[np.random.Generator, Sequence[np.ndarray]], None],
) -> None:
    """Like :func:`student_draws`, but the block generator writes straight into ``outs``.

    ``fill(rng, views)`` must fill each view, of shape ``(STUDENT_BLOCK, *out.shape[1:])``, in
    place (``Generator.standard_normal(out=...)``, ``standard_gamma(..., out=...)``), drawing
    exactly what :func:`student_draws` would draw for a block. A block whose students are
    requested whole and in order is filled in place (no temporary, no scatter); any other
    block is filled into a temporary and sliced, so student ``r``'s numbers are the same
    either way.

    Parameters
    ----------
    outs : sequence of C-contiguous arrays of shape (len(student_ids), ...)
    """
    ids = _check_student_ids(student_ids)
    for o in outs:
        if o.shape[0] != ids.size or not o.flags.c_contiguous:
            raise ValueError(f"outs: expected C-contiguous arrays with {ids.size} rows, got shape {o.shape}")
    blocks = ids // STUDENT_BLOCK
    for b in np.unique(blocks).tolist():
        rng = make_rng(seed, *identity, "student-block", int(b))
        sel = np.nonzero(blocks == b)[0]
        lo = int(sel[0])
        whole = sel.size == STUDENT_BLOCK and sel[-1] - lo == STUDENT_BLOCK - 1 and ids[lo] == b * STUDENT_BLOCK
        if whole and np.all(np.diff(ids[lo:lo + STUDENT_BLOCK]) == 1):
            fill(rng, [o[lo:lo + STUDENT_BLOCK] for o in outs])
        else:
            tmp = [np.empty((STUDENT_BLOCK, *o.shape[1:]), dtype=o.dtype) for o in outs]
            fill(rng, tmp)
            for o, t in zip(outs, tmp):
                o[sel] = t[ids[sel] - b * STUDENT_BLOCK]


def student_normals(
    seed: int, identity: Sequence[Any], student_ids: Any, shape: tuple[int, ...]
) -> np.ndarray:
    """Standard normal draws of ``shape`` for each student, shape ``(len(student_ids), *shape)``.

    Student ``r``'s draws depend only on (seed, identity, r, shape).
    """
    shape = tuple(shape)
    return student_draws(seed, identity, student_ids, lambda rng, b: rng.standard_normal((b, *shape)))


def student_uniforms(
    seed: int, identity: Sequence[Any], student_ids: Any, shape: tuple[int, ...]
) -> np.ndarray:
    """Uniform [0, 1) draws of ``shape`` per student, like :func:`student_normals`."""
    shape = tuple(shape)
    return student_draws(seed, identity, student_ids, lambda rng, b: rng.random((b, *shape)))
