"""Atomic file writes: a crash or interruption never leaves a partial or corrupt result file."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "remove_stale_temporaries", "is_stale_temporary"]


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


# ------------------------------------------------------------------------------------------ stale temporaries

_IMPORTED_AT = time.time()


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch; Linux ``/proc``), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22, starttime, after the comm field
        btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                     if ln.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def is_stale_temporary(path: Path, pid: int | None) -> bool:
    """Whether the temporary ``path`` was left by a process that no longer runs (killed mid-write).

    With the writer's ``pid`` (from the temporary's name): stale when no process has that pid, or when the process
    that has it started after the temporary was last modified (the pid was reused, e.g. this very process). Without
    a pid: stale when last modified before this process started. Seconds of slack either way: a temporary
    a live writer is filling is never taken.
    """
    try:
        mtime = path.lstat().st_mtime
    except OSError:
        return False
    slack = 2.0
    if pid is None:
        mine = _process_start_time(os.getpid())
        return mtime < (mine if mine is not None else _IMPORTED_AT) - slack
    if not _pid_alive(pid):
        return True
    started = _process_start_time(pid)
    return started is not None and started > mtime + slack


def remove_stale_temporaries(folder: Path, pattern: str) -> list[Path]:
    """Remove the entries of ``folder`` (files or folders) whose names match ``pattern`` (a regular expression,
    matched in full, with an optional named group ``pid``) and that :func:`is_stale_temporary` calls stale.

    Returns what was removed. Nothing is raised: an entry that cannot be removed stays.
    """
    removed: list[Path] = []
    rx = re.compile(pattern)
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = rx.fullmatch(p.name)
        if m is None:
            continue
        pid = m.groupdict().get("pid")
        if not is_stale_temporary(p, int(pid) if pid else None):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        removed.append(p)
    return removed
