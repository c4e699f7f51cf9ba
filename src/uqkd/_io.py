"""Atomic file writes: a crash or interruption never leaves a partial or corrupt result file."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text"]


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``: never a partial file.

    The temporary file is created inside the ``try`` (not by ``mkstemp`` before it), so an
    interrupt (SIGINT/SIGTERM raise in the main thread between any two bytecodes) at any point
    leaves no temporary behind.

    ``durable=False`` skips the ``fsync`` before the rename: the write is still atomic for every
    process, but a power loss or kernel crash soon after may leave the file empty or short. Only
    for files whose damage is detected and repaired (the runner's checksummed cell records, which
    are then recomputed); results are always written durably.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a 64-bit random name, created with O_EXCL inside the try: no window in which a temporary
    # exists outside it; the mode is an ordinary file's under this process's umask
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)
