"""The Ray executor against a real local Ray cluster: a head and worker nodes on this machine.

The cluster is started with the ``ray`` CLI (``ray start --head`` plus ``ray start
--address``), each node in its own process session and temporary directory, addressed as
127.0.0.1 (Ray advertises this machine's own IP between nodes; nothing leaves the
machine), and killed by session in teardown (never ``ray stop``, which would stop every
Ray process on the machine). Token authentication is off for this throwaway loopback
cluster: Ray reads its auth mode once per process, so a token set by a fixture after
``import ray`` would not reach the driver.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray")

import ray  # noqa: E402
from ray import cloudpickle  # noqa: E402

from uqkd.cli import main  # noqa: E402
from uqkd.config import UserError  # noqa: E402
from uqkd.executors_ray import RayExecutor, ray_map  # noqa: E402
from uqkd.runner import SweepInterrupted, _run_cell_task, run_experiment  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the test cluster is Linux-only (/proc)")

# Test-only task functions travel to the Ray workers by value (workers cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXP = "variance-aware-linear"
SMALL = {"n_students": 50, "alphas": (0.1, 1.0), "ks": (1, 3, 10), "hetero_strengths": (1.5,)}  # 2 x 3 x 2 noise models = 12 cells
# 30 cells of a few tenths of a second each: long enough to kill a node while one runs.
SLOW = {"n_students": 2000, "alphas": (0.1, 0.5, 1.0), "ks": (1, 3, 10, 20, 30)}
N_METHODS = 5
# Quick node-death detection (defaults take ~15 s): 1 s checks, dead after 5 misses.
HEALTH = '{"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000, ' \
         '"health_check_timeout_ms": 2000, "health_check_failure_threshold": 5}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or pytest.skip("the `ray` command is not installed"))


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])  # fields after "(comm)": state ppid pgrp session


def _processes_in_session(sid: int) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and _session_of(int(d.name)) == sid:
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                out.append((int(d.name), cmd))
    return out


class _Node:
    """One ``ray start`` node; its daemons and worker processes share one process session."""

    def __init__(self, args: list[str], temp_dir: Path, env: dict[str, str]) -> None:
        cmd = [_ray_cli(), "start", *args, "--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
               "--object-store-memory=150000000", f"--dashboard-agent-listen-port={_free_port()}"]
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.sid = proc.pid
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if proc.returncode != 0:
            self.kill()
            raise RuntimeError(f"`ray start` failed ({proc.returncode}):\n{out[-3000:]}")

    def processes(self) -> list[tuple[int, str]]:
        return _processes_in_session(self.sid)

    def running(self, task_name: str) -> list[int]:
        """Worker processes of this node executing ``task_name`` now (Ray titles them ``ray::NAME``)."""
        return [pid for pid, cmd in self.processes() if cmd.startswith(f"ray::{task_name}")]

    def alive(self) -> bool:
        return any("raylet" in cmd for _, cmd in self.processes())

    def kill(self) -> None:
        try:
            os.killpg(self.sid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _Cluster:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.nodes = root, env, []
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self.head = self._start(["--head", f"--port={port}", "--include-dashboard=false",
                                 f"--dashboard-port={_free_port()}", f"--system-config={HEALTH}"], "head")

    def _start(self, args: list[str], name: str) -> _Node:
        node = _Node(args, self.root / name, self.env)
        self.nodes.append(node)
        return node

    def add_node(self, name: str) -> _Node:
        return self._start([f"--address={self.address}"], name)

    def stop(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(self.nodes):
            node.kill()


@pytest.fixture(scope="module")
def ray_env():
    """Ray settings for this module's processes: no usage stats, no auth token (see the module docstring)."""
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield dict(os.environ)
        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_env):
    # A short root: Ray's unix sockets live under it (paths are limited to ~107 bytes).
    root = Path(tempfile.mkdtemp(prefix="uqkd-ray-", dir="/tmp"))
    c = None
    try:
        c = _Cluster(root, ray_env)
        c.add_node("w1")
        yield c
    finally:
        if c is not None:
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _run(out, overrides=SMALL, **kw):
    return run_experiment(EXP, out=out, overrides=dict(overrides), progress=False, make_figures=False, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """results.csv of SMALL, in-process."""
    return _run(tmp_path_factory.mktemp("ref")).results_csv.read_bytes()


def test_ray_sweep_is_bit_identical_to_in_process(cluster, tmp_path, reference):
    res = _run(tmp_path, executor="ray", ray_address=cluster.address)
    assert res.n_computed == res.n_cells == 12
    assert res.results_csv.read_bytes() == reference
    # The driver disconnected, and the cluster it joined (not started) still runs.
    assert not ray.is_initialized()
    assert cluster.head.alive() and all(n.alive() for n in cluster.nodes)


def test_sweep_survives_killing_a_worker_node(cluster, tmp_path, tmp_path_factory):
    expected = _run(tmp_path_factory.mktemp("slowref"), SLOW).results_csv.read_bytes()
    victim = cluster.add_node("victim")
    out = tmp_path / "k"
    cells = out / EXP / "cells"
    seen: dict[str, object] = {}
    stop = threading.Event()

    def kill_mid_sweep() -> None:
        # Wait (bounded) until some cells are saved and the victim node is running one, then kill the node.
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            running = victim.running("_run_cell_task")
            if running and cells.is_dir():
                n_done = len(list(cells.glob("*.json")))
                if n_done:
                    seen.update(running=running, n_done=n_done)
                    victim.kill()
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_mid_sweep, daemon=True)
    killer.start()
    try:
        res = _run(out, SLOW, executor="ray", ray_address=cluster.address)
    finally:
        stop.set()
        killer.join()
        victim.kill()
    assert seen, "the victim node never ran a cell while the sweep was under way"
    assert 0 < seen["n_done"] < res.n_cells
    assert not victim.alive()
    df = pd.read_csv(res.results_csv)
    assert len(df) == res.n_cells * N_METHODS
    assert not df.duplicated(["noise", "hetero_strength", "alpha", "k", "method"]).any()
    assert res.n_computed == res.n_cells == len(list(cells.glob("*.json")))
    assert res.results_csv.read_bytes() == expected


def test_interrupted_ray_run_resumes_only_missing_cells(cluster, tmp_path, reference, monkeypatch):
    with pytest.raises(SweepInterrupted):
        _run(tmp_path, executor="ray", ray_address=cluster.address, stop_after=4)
    assert not ray.is_initialized()
    assert not (tmp_path / EXP / "results.csv").exists()
    assert len(list((tmp_path / EXP / "cells").glob("*.json"))) == 4
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # "auto" joins the cluster RAY_ADDRESS names
    res = _run(tmp_path, executor="ray", ray_address="auto")
    assert res.n_computed == res.n_cells - 4
    assert res.results_csv.read_bytes() == reference
    assert _run(tmp_path, executor="ray", ray_address=cluster.address).n_computed == 0


def test_unreachable_address_is_named(tmp_path, capsys):
    addr = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(UserError, match=re.escape(f"--ray-address {addr}: cannot reach a Ray head node")):
        _run(tmp_path, executor="ray", ray_address=addr)
    rc = main(["run", EXP, "--executor", "ray", "--ray-address", addr, "--out", str(tmp_path), "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("uqkd: error: --ray-address") and addr in err[0]
    with pytest.raises(UserError, match="expected 'auto' or HOST:PORT"):
        RayExecutor("not-an-address")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ADDRESS", addr)
        with pytest.raises(UserError, match=re.escape(f"--ray-address auto: RAY_ADDRESS {addr}: cannot reach")):
            RayExecutor("auto")
    assert not ray.is_initialized()


def _fail_on_two(i: int) -> int:
    if i == 2:
        raise ValueError("cell 2: teacher variance must be >= 0, got -1.0")
    time.sleep(0.2)
    return i


def test_user_error_in_a_task_surfaces_once_with_its_message(cluster, capfd):
    with RayExecutor(cluster.address) as ex:
        with pytest.raises(ValueError) as err:
            list(ex.map_unordered(_fail_on_two, [(i,) for i in range(6)]))
        assert type(err.value) is ValueError  # the original type, not a RayTaskError wrapper
        assert str(err.value) == "cell 2: teacher variance must be >= 0, got -1.0"
        # A UserError raised inside a sweep cell reaches the driver (and the CLI's one-line message) as such.
        with pytest.raises(UserError) as err:
            list(ex.map_unordered(_run_cell_task, [("no-such-experiment", None, {}, 0)]))
        assert type(err.value) is UserError
        assert str(err.value).startswith("unknown experiment 'no-such-experiment'; valid experiments: ")
    assert not ray.is_initialized()
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "RayTaskError" not in captured.err + captured.out


def _where(i: int, shared: np.ndarray) -> tuple[str, int]:
    time.sleep(0.5)
    return ray.get_runtime_context().get_node_id(), i * int(shared.sum())


def test_ray_map_uses_both_nodes_and_shares_inputs_once(cluster):
    big = np.arange(300_000, dtype=np.int64)
    ray.init(address=cluster.address)  # a caller's own connection: used as it is, left open
    try:
        shared = RayExecutor._share([(big, 1), (big, 2), ("x", 3)])
        assert isinstance(shared[0][0], ray.ObjectRef) and shared[0][0] == shared[1][0]
        assert shared[2] == ("x", 3)
        n = 16  # 16 x 0.5 s: long enough that the second node's worker starts even on a loaded machine
        out = dict(ray_map(_where, [(i, big) for i in range(n)], num_cpus=1))
        assert sorted(out) == list(range(n))
        assert [out[i][1] for i in range(n)] == [i * int(big.sum()) for i in range(n)]
        assert len({node for node, _ in out.values()}) == 2  # head and worker node both ran tasks
        assert ray.is_initialized()
        ex = RayExecutor(cluster.address, num_gpus=1)
        with pytest.warns(RuntimeWarning, match=r"GPU=1 \(the cluster has 0\)"):
            ex._check_feasible()
        ex.close()
        assert ray.is_initialized()
    finally:
        ray.shutdown()


def test_default_starts_and_stops_a_private_local_instance(ray_env, tmp_path, reference):
    res = _run(tmp_path, executor="ray")
    assert res.results_csv.read_bytes() == reference
    assert not ray.is_initialized()


def test_missing_ray_names_the_extra_to_install(monkeypatch):
    from uqkd.executors import make_executor

    monkeypatch.setitem(sys.modules, "uqkd.executors_ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=re.escape("pip install 'uqkd[ray]'")):
        make_executor(kind="ray")


def test_llm_cells_run_on_the_cluster_bit_identical(cluster, tmp_path):
    """LLM experiment cells (tiny teacher on disk, self-distilled LoRA students) as Ray tasks on the two-node
    cluster: the same results.csv as in-process."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from uqkd.llm.models import save_lm, tiny_causal_lm

    save_lm(tiny_causal_lm(seed=0, n_layers=2), tmp_path / "teacher")
    over = {"teacher": str(tmp_path / "teacher"), "embedder": "hash", "n_train": 3, "n_eval": 2, "k": 2,
            "n_students": 2, "max_new_tokens": 3, "k_eval": 2, "epochs": 1, "batch_size": 4, "threads": 1,
            "temperatures": "0.5,1.5", "cache_dir": str(tmp_path / "cache")}
    ref = run_experiment("llm-teacher-noise", profile="quick", out=tmp_path / "ref", overrides=over, progress=False,
                         make_figures=False)
    over["cache_dir"] = str(tmp_path / "cache2")  # a cold sample cache on the cluster: everything recomputed
    res = run_experiment("llm-teacher-noise", profile="quick", out=tmp_path / "ray", overrides=over, progress=False,
                         make_figures=False, executor="ray", ray_address=cluster.address)
    assert res.n_computed == res.n_cells == 2
    strip = [ln for ln in ref.results_csv.read_text().splitlines()]
    got = [ln for ln in res.results_csv.read_text().splitlines()]
    assert got == strip
