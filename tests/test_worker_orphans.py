"""Sweep workers die with their parent: a `uqkd run --workers 2` killed with SIGKILL leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import uqkd

EXP = "variance-aware-linear"
SET = ["--set", "n_students=300", "--set", "alphas=0.1,1"]


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (psutil when installed, else /proc)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        kids: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                kids.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [pid]
        while todo:
            for c in kids.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) is dead
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_sigkilled_parent_leaves_no_workers(tmp_path):
    # the runner's testing hook holds the main process after its 3rd cell record: the sweep is mid-way for certain
    env = {**os.environ, "PYTHONPATH": str(Path(uqkd.__file__).parents[1]), "UQKD_TEST_HOLD_AFTER_CELLS": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "uqkd", "run", EXP, "--out", str(tmp_path / "out"), "--quiet",
                             "--workers", "2", *SET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    kids: list[int] = []
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            assert proc.poll() is None, "the run ended before it could be killed"
            kids = _children(proc.pid)
            if len(kids) >= 2 and len(list((tmp_path / "out" / EXP / "cells").glob("*.json"))) >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no 2 workers in time (children: {kids})")
        kids = _children(proc.pid)  # workers and the resource tracker
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t1 = time.monotonic()
        while time.monotonic() - t1 < 5.0 and any(_alive(k) for k in kids):
            time.sleep(0.1)
        alive = [k for k in kids if _alive(k)]
        assert not alive, f"still running 5 s after the parent's SIGKILL: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:  # never leave our own strays behind, even when the test fails
            if _alive(k):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
