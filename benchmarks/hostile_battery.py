"""A battery of hostile inputs to the ``uqkd`` command line and Python API (issue 12).

Each case is a subprocess (the CLI, or a short ``python -c`` of the public API) with a time limit,
classified automatically:

* ``clean``: the documented outcome: a one-line ``uqkd: error: ...`` (exit 2 for a user error, 1 for
  an environment failure) where an error is due, or success with correct output;
* ``traceback``: a Python traceback, an ``internal error`` line, a crash by signal, or a noisy
  error (more than one error line beside argparse's usage block);
* ``silent``: exit 0 where an error was due, or non-finite numbers where a number was due;
* ``lost``: a good result written earlier destroyed or made inconsistent;
* ``late``: an LLM argument error that came only after seconds of work (a model loaded), or a
  case that ran past its time limit.

Usage::

    PYTHONPATH=src python benchmarks/hostile_battery.py [--jobs 2] [--json out.json] [--only SUBSTR] [-v]

Prints a table of the failing cases and the totals line
``clean N / traceback N / silent N / lost N / late N (of TOTAL)``; exits 1 when any case fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LATE_S = 10.0  # an LLM argument error slower than this loaded something first
CLASSES = ("clean", "traceback", "silent", "lost", "late")


@dataclass
class Case:
    name: str
    group: str
    argv: list[str] | None = None  # CLI arguments after `python -m uqkd`
    code: str | None = None  # or: python -c code (public API)
    expect: str = "error"  # error | ok | either (a one-line error or success)
    timeout: float = 40.0
    llm: bool = False  # an LLM step: an error must come before any model loads
    setup: Callable[[Path], None] | None = None  # prepares the case's own folder
    check: Callable[[Path, str, str], str | None] | None = None  # -> None or a finding "class: why"
    env: dict[str, str] = field(default_factory=dict)
    preexec: Callable[[], None] | None = None
    signal_after: float | None = None  # send `sig` after this many seconds (interruption cases)
    signal_when: Callable[[Path], bool] | None = None  # or: send `sig` once this holds of the case's folder (polled)
    sig: int = signal.SIGKILL


@dataclass
class Result:
    name: str
    group: str
    cls: str
    why: str
    rc: int | None
    seconds: float
    stderr_tail: str


# ---------------------------------------------------------------------------------------------- fixtures

def _write(p: Path, data: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data, encoding="utf-8")
    return p


QA = "".join(json.dumps({"id": f"q{i}", "question": f"What is the capital of C{i}?", "answer": f"City{i}"}) + "\n"
             for i in range(3))
SAMPLES = "".join(json.dumps({"id": f"q{i}", "question": f"What is the capital of C{i}?", "answer": f"City{i}",
                              "samples": [f"City{i}", f"Town{i}"], "dispersion": 0.1, "k": 2}) + "\n"
                  for i in range(3))
TRAIN = "".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}", "weight": 1.0}) + "\n" for i in range(3))
TINY = ["teacher-noise-linear", "--set", "sigmas=0,1", "--set", "n_students=4", "--workers", "1", "--quiet"]


class Fixtures:
    """Shared read-only inputs, built once: QA files, a finished tiny run, a tiny saved model."""

    def __init__(self, root: Path, with_model: bool) -> None:
        self.root = root
        f = root / "fx"
        self.qa = _write(f / "qa.jsonl", QA)
        self.qa_list = _write(f / "qa.json", json.dumps([{"question": "Q?", "answer": "A"}]))
        self.empty = _write(f / "empty.jsonl", "")
        self.blank = _write(f / "blank.jsonl", "\n\n  \n")
        self.latin1 = _write(f / "latin1.jsonl", '{"question": "Capital of C\xf4te?", "answer": "A"}\n'.encode("latin-1"))
        self.badline = _write(f / "badline.jsonl", QA + "not json\n")
        self.badlist = _write(f / "badlist.json", '[{"question": "Q?", "answer": "A"},')
        self.noanswer = _write(f / "noanswer.jsonl", '{"question": "Q?"}\n')
        self.array_line = _write(f / "array.jsonl", "[1, 2]\n")
        self.dupids = _write(f / "dup.jsonl", '{"id": "a", "question": "Q?", "answer": "A"}\n'
                                             '{"id": "a", "question": "R?", "answer": "B"}\n')
        self.nullq = _write(f / "nullq.jsonl", '{"question": null, "answer": "A"}\n')
        self.samples = _write(f / "samples.jsonl", SAMPLES)
        self.samples_nosamples = _write(f / "samples-missing.jsonl", '{"id": "q0", "question": "Q?", "answer": "A"}\n')
        self.samples_badtype = _write(f / "samples-badtype.jsonl",
                                      '{"id": "q0", "question": "Q?", "answer": "A", "samples": "oops"}\n')
        self.train = _write(f / "train.jsonl", TRAIN)
        self.train_nan = _write(f / "train-nan.jsonl", '{"prompt": "Q?", "completion": "A", "weight": NaN}\n')
        self.train_null = _write(f / "train-null.jsonl", '{"prompt": "Q?", "completion": null, "weight": 1}\n')
        # every prompt fills max_length (192 tokens of the tiny character tokenizer): no answer token to learn
        self.train_long = _write(f / "train-long.jsonl", "".join(json.dumps(
            {"prompt": [{"role": "user", "content": "Q" * 300}], "completion": [{"role": "assistant", "content": "A"}]})
            + "\n" for _ in range(3)))
        self.afile = _write(f / "a-file.txt", "x")
        self.binary = _write(f / "binary.bin", bytes(range(256)) * 4)
        self.emptydir = f / "empty-dir"
        self.emptydir.mkdir()
        # a local "model" whose config.json is damaged, and one whose config.json is valid JSON but no model
        for name, cfg in (("corrupt-model", '{"model_type": "llama", "hidden_size": '),
                          ("nonsense-model", '{"model_type": "no-such-architecture"}'),
                          ("empty-config-model", "{}"),
                          ("binary-config-model", b"\xff\xfe\x00garbage")):
            _write(f / name / "config.json", cfg)
            _write(f / name / "model.safetensors", b"\x00" * 16)
        self.students_stub = f / "students-stub"  # passes every check before a load (the load itself then fails)
        _write(self.students_stub / "student-000" / "config.json", '{"model_type": "llama"}')
        _write(self.students_stub / "student-000" / "model.safetensors", b"\x00" * 16)
        self.students_corrupt = f / "students-corrupt"
        _write(self.students_corrupt / "student-000" / "config.json", '{"model_type": ')
        _write(self.students_corrupt / "student-000" / "model.safetensors", b"\x00" * 16)
        self.toml = {
            "good": _write(f / "good.toml", "n_students = 4\nsigmas = [0.0, 1.0]\n"),
            "bad-toml": _write(f / "bad.toml", "n_students = = 4\n"),
            "bad-json": _write(f / "bad.json", '{"n_students": 4,'),
            "json-list": _write(f / "list.json", "[1, 2]"),
            "wrong-type": _write(f / "wrongtype.toml", 'n_students = "many"\n'),
            "unknown-key": _write(f / "unknown.toml", "no_such_key = 1\n"),
            "nested": _write(f / "nested.toml", "[section]\nn_students = 4\n"),
            "latin1": _write(f / "latin1.toml", 'dataset = "b\xf4ston"\n'.encode("latin-1")),
            "binary": _write(f / "binary.toml", bytes(range(256))),
            "empty": _write(f / "empty.toml", ""),
            "nan-json": _write(f / "nan.json", '{"n_students": 4, "sigmas": [NaN]}'),
            "float-int": _write(f / "floatint.json", '{"n_students": 4.5}'),
            "bool-int": _write(f / "boolint.json", '{"n_students": true}'),
            "huge-json": _write(f / "huge.json", '{"n_students": 1e400}'),
            "yaml-suffix": _write(f / "c.yaml", "n_students: 4\n"),
            "unknown-suffix": _write(f / "c.ini", "n_students=4\n"),
        }
        # one finished tiny run, copied into each case that damages or reuses it
        self.good = root / "good"
        r = subprocess.run([PY, "-m", "uqkd", "run", *TINY, "--out", str(self.good)], capture_output=True, text=True,
                           cwd=ROOT, env=_env(), timeout=120)
        if r.returncode != 0:
            raise SystemExit(f"battery: could not make the reference run:\n{r.stderr}")
        r = subprocess.run([PY, "-m", "uqkd", "report", str(root / "good-report")], capture_output=True, text=True,
                           cwd=ROOT, env=_env(), timeout=120) if shutil.copytree(self.good, root / "good-report") else None
        md = root / "good-report" / "report.md"
        _BASELINE_HITS[0] = len(_DAMAGE.findall(md.read_text(errors="replace"))) if md.is_file() else 0
        self.model = None
        if with_model:
            m = root / "tiny-model"
            code = ("from uqkd.llm.models import save_lm, tiny_causal_lm; import sys; "
                    "save_lm(tiny_causal_lm(seed=0, n_layers=2), sys.argv[1])")
            r = subprocess.run([PY, "-c", code, str(m)], capture_output=True, text=True, cwd=ROOT, env=_env(),
                               timeout=180)
            self.model = m if r.returncode == 0 else None

    def copy_good(self, dest: Path) -> Path:
        shutil.copytree(self.good, dest)
        return dest


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("UQKD_CACHE", None)
    env.update(extra or {})
    return env


def _unit_digest(e: Path) -> dict[str, str]:
    """Hashes of the files one experiment folder publishes as a unit: results.csv, config.json, timings.json,
    figures."""
    if not e.is_dir():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(e.iterdir())
            if p.is_file() and (p.name in ("results.csv", "config.json", "timings.json") or p.suffix == ".png")}


def _digest(d: Path) -> dict[str, str]:
    """Hashes of the published files of each experiment folder under d (results.csv, config.json)."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name in ("results.csv", "config.json"):
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------------------------------------- classification

def _error_lines(stderr: str) -> list[str]:
    """stderr lines other than argparse's usage block, uqkd's own warnings and blank lines."""
    lines, in_usage = [], False
    for ln in stderr.splitlines():
        if ln.startswith(("uqkd: WARNING:", "warning:")):
            continue
        if ln.startswith("usage:"):
            in_usage = True
            continue
        if in_usage and ln.startswith(" "):
            continue
        in_usage = False
        if ln.strip():
            lines.append(ln)
    return lines


_NONFINITE = re.compile(r"(?<![\w.])(nan|inf|-inf|infinity)(?![\w])", re.IGNORECASE)


def classify(case: Case, rc: int | None, out: str, err: str, secs: float, timed_out: bool,
             finding: str | None) -> tuple[str, str]:
    if finding and finding.startswith("lost"):
        return "lost", finding.split(":", 1)[1].strip()
    text = out + err
    if "Traceback (most recent call last)" in text:
        last = [ln for ln in err.splitlines() if ln.strip()]
        return "traceback", (last[-1] if last else "traceback")[:160]
    if "internal error" in err:
        return "traceback", _error_lines(err)[0][:160]
    if timed_out:
        return "late", f"still running after {case.timeout:.0f}s"
    if rc is not None and rc < 0:
        return "traceback", f"killed by signal {-rc}"
    lines = _error_lines(err)
    if case.expect == "interrupt":  # SIGTERM/Ctrl-C: exit 130 with one line saying how to resume
        if finding:
            cls, why = finding.split(":", 1)
            return cls.strip(), why.strip()
        if rc == 130 and len(lines) <= 1:
            return "clean", (lines or ["exit 130"])[0][:160]
        if rc == 0:
            return "clean", "finished before the signal"
        return "traceback", f"exit {rc} with {len(lines)} error lines after the signal: {(lines or [''])[0][:100]}"
    if case.expect in ("error", "either") and rc != 0:
        if case.llm and secs > LATE_S and rc in (1, 2):
            return "late", f"error after {secs:.1f}s: {(lines or [''])[-1][:120]}"
        if rc not in (1, 2):
            return "traceback", f"exit {rc}: {(lines or [''])[0][:140]}"
        if len(lines) != 1 or not lines[0].startswith("uqkd: error:"):
            return "traceback", f"exit {rc} with {len(lines)} error lines: {(lines or [''])[0][:120]}"
        return "clean", lines[0][:160]
    if case.expect == "error":  # rc == 0
        return "silent", "exit 0: " + (out.strip().splitlines() or [""])[-1][:140]
    # expect ok / either, rc == 0 (or ok with an error)
    if rc != 0:
        return "traceback", f"exit {rc} on valid input: {(lines or [''])[0][:140]}"
    if finding:
        cls, why = finding.split(":", 1)
        return cls.strip(), why.strip()
    return "clean", (out.strip().splitlines() or ["ok"])[-1][:160]


def run_case(case: Case, tmp: Path) -> Result:
    d = tmp / re.sub(r"[^\w.-]+", "_", case.name)[:80]
    d.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(d)
    cmd = [PY, "-m", "uqkd", *case.argv] if case.argv is not None else [PY, "-c", case.code or ""]
    cmd = [c.replace("{d}", str(d)) for c in cmd]
    t0 = time.monotonic()
    timed_out = False
    proc = subprocess.Popen(cmd, cwd=d, env=_env(case.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", preexec_fn=case.preexec, start_new_session=True)
    try:
        if case.signal_after is not None or case.signal_when is not None:
            try:
                out, err = _until_signal(proc, case, d, t0)
            except subprocess.TimeoutExpired:
                if case.sig == signal.SIGKILL:
                    os.killpg(proc.pid, signal.SIGKILL)
                    out, err = proc.communicate()
                    proc.returncode = 0 if case.expect != "error" else proc.returncode  # the kill is the case
                else:
                    os.kill(proc.pid, case.sig)  # the main process only, as a terminal's Ctrl-C or `kill PID` would
                    try:
                        out, err = proc.communicate(timeout=case.timeout)
                    except subprocess.TimeoutExpired:
                        timed_out = True
                        os.killpg(proc.pid, signal.SIGKILL)
                        out, err = proc.communicate()
        else:
            out, err = proc.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    secs = time.monotonic() - t0
    finding = None
    if case.check:
        try:
            finding = case.check(d, out, err)
        except Exception as exc:  # noqa: BLE001 - a check that cannot even read the output is a finding
            finding = f"lost: check failed: {type(exc).__name__}: {exc}"
    cls, why = classify(case, proc.returncode, out, err, secs, timed_out, finding)
    return Result(case.name, case.group, cls, why, proc.returncode, round(secs, 2), err[-600:])


def _until_signal(proc: subprocess.Popen, case: Case, d: Path, t0: float) -> tuple[str, str]:
    """The process's output if it ends before the signal is due; ``TimeoutExpired`` when the signal is due:
    ``signal_after`` seconds passed, or ``signal_when(d)`` holds (polled every 20 ms, for at most ``timeout``)."""
    if case.signal_when is None:
        return proc.communicate(timeout=case.signal_after)
    while True:
        try:
            return proc.communicate(timeout=0.02)
        except subprocess.TimeoutExpired:
            if case.signal_when(d) or time.monotonic() - t0 > case.timeout:
                raise


# ---------------------------------------------------------------------------------------------- checks

def no_nonfinite(d: Path, out: str, err: str) -> str | None:
    m = _NONFINITE.search(out)
    return f"silent: non-finite number in output: {out[max(0, m.start() - 40):m.end() + 10]!r}" if m else None


def results_finite(sub: str) -> Callable[[Path, str, str], str | None]:
    def check(d: Path, out: str, err: str) -> str | None:
        p = d / sub
        if not p.is_file():
            return None
        text = p.read_text()
        rows = text.splitlines()[1:]
        if not rows:
            return "silent: results.csv has no rows"
        if re.search(r"(^|,)(-?inf|nan)(,|$)", text, re.IGNORECASE | re.MULTILINE):
            return "silent: results.csv holds inf/nan values"
        return None
    return check


def unchanged(sub: str, before: dict[str, dict[str, str]], only_csv: bool = False
              ) -> Callable[[Path, str, str], str | None]:
    """The published files under d/sub must be exactly what setup put there (or only results.csv: a rerun that
    recomputes a damaged cell may rewrite config.json's bookkeeping, never the results)."""
    def check(d: Path, out: str, err: str) -> str | None:
        now = _digest(d / sub)
        was = before[str(d)]
        if only_csv:
            now = {k: v for k, v in now.items() if k.endswith("results.csv")}
            was = {k: v for k, v in was.items() if k.endswith("results.csv")}
        if now != was:
            gone = sorted(set(was) - set(now))
            changed = sorted(k for k in was if k in now and now[k] != was[k])
            return f"lost: earlier results {'removed ' + str(gone) if gone else ''}{' changed ' + str(changed) if changed else ''}"
        return None
    return check


def consistent(sub: str) -> Callable[[Path, str, str], str | None]:
    """results.csv and config.json both present and parseable, rows for the config's grid."""
    def check(d: Path, out: str, err: str) -> str | None:
        e = d / sub
        csv, cfg = e / "results.csv", e / "config.json"
        if not csv.is_file() or not cfg.is_file():
            return f"lost: {'results.csv' if not csv.is_file() else 'config.json'} missing after the run"
        try:
            meta = json.loads(cfg.read_text())
        except Exception as exc:  # noqa: BLE001
            return f"lost: config.json unreadable: {exc}"
        n_rows = len(csv.read_text().splitlines()) - 1
        sig = (meta.get("config") or meta).get("sigmas")
        if sig is not None and n_rows != len(sig):
            return f"lost: results.csv has {n_rows} rows for {len(sig)} sigmas in config.json"
        return None
    return check


_DAMAGE = re.compile(r"damaged|unreadable|cannot|could not|invalid|skipped|corrupt|malformed|not readable|"
                     r"not utf-8|not valid|ignored|truncated|ragged|not a number|non-numeric", re.IGNORECASE)
_BASELINE_HITS: list[int] = [0]  # damage words in the report of the undamaged run


def report_notes_damage(d: Path, out: str, err: str) -> str | None:
    """A report built over damaged inputs must say so (or the command must fail with one line): it must hold more
    damage words than the report of the undamaged run."""
    md = d / "r" / "report.md"
    if not md.is_file():
        return "silent: exit 0 but no report.md"
    hits = len(_DAMAGE.findall(md.read_text(errors="replace")))
    if hits <= _BASELINE_HITS[0]:
        return "silent: report over damaged results does not mention the damage"
    return None


# ---------------------------------------------------------------------------------------------- cases

def build_cases(fx: Fixtures, tmp: Path) -> list[Case]:
    C: list[Case] = []
    add = C.append
    is_root = os.geteuid() == 0

    as_nobody = _drop_dac if is_root else None  # chmod does not stop root: drop its override capabilities

    # --- A. command line basics
    for name, argv in [
        ("no-command", []), ("unknown-command", ["frobnicate"]), ("run-no-experiment", ["run"]),
        ("run-unknown-experiment", ["run", "no-such-exp"]), ("run-typo-experiment", ["run", "teacher-noise-linea"]),
        ("run-unknown-option", ["run", *TINY, "--bogus"]), ("show-unknown-experiment", ["show", "nosuch"]),
        ("show-bad-profile", ["show", "teacher-noise-linear", "--profile", "nosuch"]),
        ("run-bad-profile", ["run", *TINY, "--profile", "nosuch"]),
        ("run-empty-profile", ["run", *TINY, "--profile", ""]),
        ("workers-0", ["run", *TINY[:-3], "--workers", "0"]), ("workers-neg", ["run", *TINY[:-3], "--workers", "-1"]),
        ("workers-abc", ["run", *TINY[:-3], "--workers", "abc"]), ("workers-float", ["run", *TINY[:-3], "--workers", "1.5"]),
        ("workers-empty", ["run", *TINY[:-3], "--workers", ""]),
        ("seed-abc", ["run", *TINY, "--seed", "abc"]), ("seed-float", ["run", *TINY, "--seed", "1.5"]),
        ("seed-neg", ["run", *TINY, "--seed", "-1"]), ("seed-nan", ["run", *TINY, "--seed", "nan"]),
        ("executor-bad", ["run", *TINY, "--executor", "nosuch"]),
        ("ray-address-without-ray-executor", ["run", *TINY, "--ray-address", "auto"]),
        ("ray-bad-address", ["run", *TINY, "--executor", "ray", "--ray-address", "256.0.0.1:1"]),
        ("reproduce-only-bad-section", ["reproduce", "--only", "9", "--out", "{d}/r"]),
        ("reproduce-only-unknown", ["reproduce", "--only", "nosuch-exp", "--out", "{d}/r"]),
        ("reproduce-bad-profile", ["reproduce", "--profile", "nosuch"]),
        ("reproduce-workers-0", ["reproduce", "--workers", "0", "--only", "4"]),
        ("report-missing-dir", ["report", "{d}/nowhere"]), ("report-a-file", ["report", str(fx.afile)]),
        ("report-empty-dir", ["report", str(fx.emptydir)]),
        ("verbose-after-command", ["list", "-v"]), ("debug-after-command", ["list", "--debug"]),
        ("llm-no-step", ["llm"]), ("llm-unknown-step", ["llm", "frobnicate"]),
    ]:
        add(Case(name, "cli", argv, timeout=60))
    # a huge worker count is fine if it is capped or refused on one line
    add(Case("workers-huge", "cli", ["run", *TINY[:-3], "--workers", "100000", "--out", "{d}/r", "--quiet"],
             expect="either", check=results_finite("r/teacher-noise-linear/results.csv")))
    add(Case("seed-huge", "cli", ["run", *TINY, "--seed", str(2 ** 200), "--out", "{d}/r"], expect="either",
             check=results_finite("r/teacher-noise-linear/results.csv")))
    add(Case("seed-large-ok", "cli", ["run", *TINY, "--seed", str(2 ** 64), "--out", "{d}/r"], expect="either",
             check=results_finite("r/teacher-noise-linear/results.csv")))
    for name, argv in [("list", ["list"]), ("version", ["--version"]), ("help", ["--help"]),
                       ("run-help", ["run", "--help"]), ("llm-sample-help", ["llm", "sample", "--help"]),
                       ("show-paper", ["show", "variance-aware-linear", "--profile", "paper"]),
                       ("vvv-list", ["-v", "-v", "-v", "list"])]:
        add(Case(name, "cli-ok", argv, expect="ok"))
    add(Case("tiny-run-ok", "cli-ok", ["run", *TINY, "--out", "{d}/r"], expect="ok",
             check=results_finite("r/teacher-noise-linear/results.csv")))

    # --- B. --set syntax, keys and types on the cheap linear experiment
    for name, sets in [
        ("set-no-equals", ["n_students"]), ("set-empty-key", ["=5"]), ("set-unknown-key", ["no_such_key=1"]),
        ("set-key-typo", ["n_student=5"]), ("set-int-abc", ["n_students=abc"]), ("set-int-float", ["n_students=1.5"]),
        ("set-int-empty", ["n_students="]), ("set-int-zero", ["n_students=0"]), ("set-int-neg", ["n_students=-5"]),
        ("set-int-nan", ["n_students=nan"]), ("set-int-inf", ["n_students=inf"]), ("set-int-1e30", ["n_students=1e30"]),
        ("set-int-huge", ["n_students=" + "9" * 30]), ("set-int-bool", ["n_students=true"]),
        ("set-list-empty", ["sigmas="]), ("set-list-words", ["sigmas=a,b"]), ("set-list-nan", ["sigmas=0,nan"]),
        ("set-list-inf", ["sigmas=0,inf"]), ("set-list-neg", ["sigmas=-1"]), ("set-list-huge", ["sigmas=1e308"]),
        ("set-list-dup", ["sigmas=0,0"]), ("set-list-hole", ["sigmas=0,,1"]), ("set-list-brackets", ["sigmas=[0,1"]),
        ("set-dataset-unknown", ["dataset=nosuch"]), ("set-literal-unknown", ["teacher_sampling=nosuch"]),
        ("set-dataset-empty", ["dataset="]), ("set-dataset-path", ["dataset=/etc/passwd"]),
    ]:
        argv = ["run", "teacher-noise-linear", "--workers", "1", "--quiet", "--out", "{d}/r"]
        if not any(s.startswith("n_students") for s in sets):
            argv += ["--set", "n_students=4"]
        if not any(s.startswith("sigmas") for s in sets):
            argv += ["--set", "sigmas=0,1"]
        for s in sets:
            argv += ["--set", s]
        add(Case(name, "set", argv, timeout=30))
    add(Case("set-duplicate-key", "set", ["run", *TINY, "--set", "n_students=5", "--out", "{d}/r"], expect="either",
             check=results_finite("r/teacher-noise-linear/results.csv")))

    # --- C. numeric settings of several experiments: NaN, inf, negative, huge (cheap otherwise)
    cheap = {
        "variance-aware-linear": ["alphas=0.5", "ks=1,2", "methods=single,averaging", "noise_models=homoscedastic",
                                  "n_students=3"],
        "adaptive-budget-linear": ["strengths=0", "budgets=2", "schemes=uniform", "rules=averaging", "n_students=3"],
        "bootstrap-linear": ["fractions=0.5", "targets=teacher", "teacher_noises=0", "n_students=3"],
        "teacher-noise-mlp": ["sigmas=0", "n_students=2", "n_epochs=1", "teacher_n_epochs=1", "hidden=2",
                              "teacher_hidden=2"],
        "student-entropy": ["datasets=wine", "students=logistic", "target_modes=argmax", "n_students=2",
                            "n_epochs=1", "teacher_hidden=2", "hidden=2"],
        "init-noise-mlp": ["sigma_inits=0", "n_students=2", "n_epochs=1", "hidden=2", "n_track_students=1"],
    }
    bad_values = {
        "variance-aware-linear": [("alphas", "nan"), ("alphas", "inf"), ("alphas", "-1"), ("alphas", "1e300"),
                                  ("ks", "0"), ("ks", "-2"), ("ks", "1e9"), ("hetero_strengths", "nan"),
                                  ("hetero_strengths", "-1"), ("methods", "nosuch"), ("noise_models", "nosuch"),
                                  ("methods", "single,single"), ("n_students", "1")],
        "adaptive-budget-linear": [("alpha", "nan"), ("alpha", "inf"), ("alpha", "-0.5"), ("alpha", "0"),
                                   ("budgets", "0"), ("budgets", "-1"), ("budgets", "1e12"), ("pilot_k", "1"),
                                   ("pilot_k", "0"), ("min_per_input", "0"), ("min_per_input", "-1"),
                                   ("strengths", "nan"), ("strengths", "inf"), ("target", "nosuch"),
                                   ("schemes", "nosuch"), ("rules", "nosuch")],
        "bootstrap-linear": [("fractions", "0"), ("fractions", "-0.1"), ("fractions", "1.5"), ("fractions", "nan"),
                             ("teacher_noises", "nan"), ("teacher_noises", "-1"), ("teacher_noises", "inf"),
                             ("targets", "nosuch")],
        "teacher-noise-mlp": [("lr", "nan"), ("lr", "0"), ("lr", "-1"), ("lr", "inf"), ("n_epochs", "0"),
                              ("hidden", "0"), ("hidden", "-4"), ("teacher_lr", "nan"), ("teacher", "nosuch"),
                              ("num_threads", "0"), ("num_threads", "-1"), ("sigmas", "nan")],
        "student-entropy": [("temperature", "0"), ("temperature", "nan"), ("temperature", "-1"),
                            ("sampled_k", "0"), ("datasets", "nosuch"), ("target_modes", "nosuch"),
                            ("students", "nosuch"), ("lr", "nan")],
        "init-noise-mlp": [("sigma_inits", "nan"), ("sigma_inits", "-0.1"), ("track_param", "-1"),
                           ("track_param", "99999999"), ("n_track_students", "-1"), ("n_track_students", "5"),
                           ("base_init", "nosuch")],
    }
    for exp, bad in bad_values.items():
        for key, val in bad:
            sets = [s for s in cheap[exp] if not s.startswith(key + "=")] + [f"{key}={val}"]
            argv = ["run", exp, "--workers", "1", "--quiet", "--out", "{d}/r"]
            for s in sets:
                argv += ["--set", s]
            add(Case(f"{exp}:{key}={val}", "settings", argv, timeout=45))
    # LLM experiment settings: the error must come before any model loads
    for key, val in [("top_p", "2"), ("top_p", "0"), ("top_k", "-1"), ("temperature", "0"), ("temperature", "nan"),
                     ("student_every", "0"), ("embedder", "hash:0"), ("embedder", "hash:abc"),
                     ("embedder", "/nonexistent/sbert"), ("data", "/nonexistent/qa.jsonl"), ("data", str(fx.latin1)),
                     ("data", str(fx.badline)), ("student", "/nonexistent/student"), ("batch_size", "0"),
                     ("lr", "nan"), ("n_students", "0"), ("k", "0"), ("max_new_tokens", "0"), ("device", "tpu"),
                     ("dtype", "float8"), ("teacher", "/nonexistent/model"), ("teacher", str(fx.root / "fx" / "corrupt-model"))]:
        exp = "llm-variance-aware" if key != "k" else "llm-output"
        label = {"/nonexistent/sbert": "missing-dir", "/nonexistent/qa.jsonl": "missing-file",
                 "/nonexistent/student": "missing-dir", "/nonexistent/model": "missing-dir"}.get(val, val)
        add(Case(f"{exp}:{key}={Path(label).name}", "llm-settings",
                 ["run", exp, "--profile", "demo", "--quiet", "--workers", "1", "--out", "{d}/r",
                  "--set", f"{key}={val}"] + ([] if key == "embedder" else ["--set", "embedder=hash"]),
                 llm=True, timeout=15))

    # --- D. --config files
    for name, path in [("config-missing", "{d}/nope.toml"), ("config-directory", str(fx.emptydir)),
                       *((f"config-{k}", str(v)) for k, v in fx.toml.items() if k != "good")]:
        exp = {"config-empty": "ok", "config-yaml-suffix": "ok", "config-unknown-suffix": "either"}.get(name, "error")
        add(Case(name, "config", ["run", *TINY, "--config", path, "--out", "{d}/r"], expect=exp))
    add(Case("config-good", "config", ["run", "teacher-noise-linear", "--workers", "1", "--quiet", "--config",
                                       str(fx.toml["good"]), "--out", "{d}/r"], expect="ok",
             check=results_finite("r/teacher-noise-linear/results.csv")))

    # --- E. --out problems
    add(Case("out-is-a-file", "out", ["run", *TINY, "--out", str(fx.afile)]))
    add(Case("out-below-a-file", "out", ["run", *TINY, "--out", str(fx.afile) + "/sub"]))
    add(Case("out-empty-string", "out", ["run", *TINY, "--out", ""], expect="either"))
    add(Case("out-dev-null", "out", ["run", *TINY, "--out", "/dev/null"]))
    add(Case("out-proc", "out", ["run", *TINY, "--out", "/proc/uqkd-hostile"]))

    def mk_readonly(d: Path) -> None:
        (d / "ro").mkdir()
        os.chmod(d / "ro", 0o555)
    add(Case("out-unwritable-dir", "out", ["run", *TINY, "--out", "{d}/ro"], setup=mk_readonly, preexec=as_nobody))

    def exp_dir_is_file(d: Path) -> None:
        _write(d / "r" / "teacher-noise-linear", "not a folder")
    add(Case("out-experiment-dir-is-file", "out", ["run", *TINY, "--out", "{d}/r"], setup=exp_dir_is_file))

    # a folder where a published file goes: the run fails on one line and publishes nothing (no figure or
    # timings.json without results.csv and config.json), and an earlier unit stays whole
    unit_before: dict[str, dict[str, str]] = {}

    def folder_in_the_way(name: str, good: bool) -> Callable[[Path], None]:
        def setup(d: Path) -> None:
            e = d / "r" / "teacher-noise-linear"
            if good:
                fx.copy_good(d / "r")
                (e / name).unlink()
            (e / name).mkdir(parents=True)
            unit_before[str(d)] = _unit_digest(e)
        return setup

    def one_unit(d: Path, out: str, err: str) -> str | None:
        now = _unit_digest(d / "r" / "teacher-noise-linear")
        was = unit_before[str(d)]
        if now != was:
            changed = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k))
            return f"lost: published in part ({', '.join(changed)} changed without the rest of the unit)"
        return None

    for name in ("results.csv", "config.json", "timings.json"):
        add(Case(f"out-{name.replace('.', '-')}-is-dir", "out", ["run", *TINY, "--out", "{d}/r"],
                 setup=folder_in_the_way(name, good=False), check=one_unit))
    for name in ("results.csv", "teacher_noise_linear.png"):
        add(Case(f"lost-{name.replace('.', '-')}-is-dir-rerun", "lost",
                 ["run", "teacher-noise-linear", "--set", "sigmas=0,0.5", "--set", "n_students=4", "--workers", "1",
                  "--quiet", "--out", "{d}/r"], setup=folder_in_the_way(name, good=True), check=one_unit))

    def cells_is_file(d: Path) -> None:
        _write(d / "r" / "teacher-noise-linear" / "cells", "x")
    add(Case("out-cells-is-file", "out", ["run", *TINY, "--out", "{d}/r"], setup=cells_is_file))

    def cell_file_is_dir(d: Path) -> None:
        fx.copy_good(d / "r")
        for p in list((d / "r" / "teacher-noise-linear" / "cells").iterdir())[:1]:
            p.unlink()
            p.mkdir()
    add(Case("out-cell-file-is-dir", "out", ["run", *TINY, "--out", "{d}/r"], setup=cell_file_is_dir,
             expect="either"))

    def fsize_limit() -> None:  # a "full disk": writes past 8 KiB fail with EFBIG
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    add(Case("out-disk-full", "out", ["run", *TINY, "--out", "{d}/r"], preexec=fsize_limit))
    add(Case("llm-out-disk-full", "out", ["llm", "build-dataset", "--samples", str(fx.samples), "--method",
                                          "multi-response", "--out", "{d}/t.jsonl"], preexec=lambda: _fsize(64)))
    add(Case("llm-out-is-dir", "out", ["llm", "build-dataset", "--samples", str(fx.samples), "--method", "single",
                                       "--out", str(fx.emptydir)]))
    add(Case("llm-out-below-file", "out", ["llm", "build-dataset", "--samples", str(fx.samples), "--method",
                                           "single", "--out", str(fx.afile) + "/t.jsonl"]))
    add(Case("llm-out-unwritable", "out", ["llm", "build-dataset", "--samples", str(fx.samples), "--method",
                                           "single", "--out", "{d}/ro/t.jsonl"], setup=mk_readonly, preexec=as_nobody))
    add(Case("cache-dir-is-file", "out", ["llm", "sample", "--data", str(fx.qa), "--k", "1", "--embedder", "hash",
                                          "--cache-dir", str(fx.afile), "--out", "{d}/s.jsonl"], llm=True, timeout=15))

    # --- F. lost results: an earlier good run must survive failures
    before: dict[str, dict[str, str]] = {}

    def with_good(extra: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
        def setup(d: Path) -> None:
            fx.copy_good(d / "r")
            if extra:
                extra(d)
            before[str(d)] = _digest(d / "r")
        return setup

    for name, argv, pre in [
        ("lost-bad-set", ["run", *TINY, "--set", "n_students=-1", "--out", "{d}/r"], None),
        ("lost-bad-config", ["run", *TINY, "--config", str(fx.toml["bad-toml"]), "--out", "{d}/r"], None),
        ("lost-unknown-key", ["run", *TINY, "--set", "nosuch=1", "--out", "{d}/r"], None),
        ("lost-disk-full", ["run", "teacher-noise-linear", "--set", "sigmas=0,0.5,1", "--set", "n_students=4",
                            "--workers", "1", "--quiet", "--out", "{d}/r"], fsize_limit),
        ("lost-report", ["report", "{d}/r"], None),
        ("lost-report-disk-full", ["report", "{d}/r"], fsize_limit),
    ]:
        add(Case(name, "lost", argv, expect="either", setup=with_good(), preexec=pre,
                 check=unchanged("r", before)))

    def ro_exp(d: Path) -> None:
        os.chmod(d / "r" / "teacher-noise-linear", 0o555)
        os.chmod(d / "r", 0o555)
    add(Case("lost-unwritable-rerun", "lost", ["run", "teacher-noise-linear", "--set", "sigmas=0,2", "--set",
                                               "n_students=4", "--workers", "1", "--quiet", "--out", "{d}/r"],
             setup=with_good(ro_exp), preexec=as_nobody, check=unchanged("r", before)))
    # interrupted mid-sweep, then resumed. The runner's testing hook (UQKD_TEST_HOLD_AFTER_CELLS) pauses the run
    # right after its HOLD-th new cell record, and the signal is sent once those records are on disk: the signal
    # lands mid-sweep for certain (records are written in bursts, so a timer or "N records on disk" alone often
    # came after every cell was done and the resume path went untested). The check then asserts the earlier
    # results survived, that fewer cells than the sweep's were done at the signal, and that rerunning the same
    # command reuses exactly those and ends byte-identical to an undisturbed run.
    hold = 3
    sweep_sigmas = [str(x / 10) for x in range(1, 40)]
    sweep = ["run", "teacher-noise-linear", "--set", "n_students=200", "--set", "sigmas=" + ",".join(sweep_sigmas),
             "--quiet", "--out", "{d}/r"]
    cells_before: dict[str, int] = {}
    cells_at_signal: dict[str, int] = {}

    def n_cells(d: Path) -> int:
        return len(list((d / "r" / "teacher-noise-linear" / "cells").glob("*.json")))

    def good_counted(d: Path) -> None:
        with_good()(d)
        cells_before[str(d)] = n_cells(d)

    def after_hold(d: Path) -> bool:
        new = n_cells(d) - cells_before[str(d)]
        if new >= hold:
            cells_at_signal[str(d)] = new
            return True
        return False

    def interrupted_then_resumed(workers: str) -> Callable[[Path, str, str], str | None]:
        def check(d: Path, out: str, err: str) -> str | None:
            lost = unchanged("r", before)(d, out, err)
            if lost:
                return lost
            at = cells_at_signal.get(str(d))
            if at is None:
                return "silent: the run ended before the signal: interruption and resume not exercised"
            if at >= len(sweep_sigmas):
                return f"silent: all {at} cells were done at the signal: the resume path was not exercised"
            done = n_cells(d) - cells_before[str(d)]
            argv = [c.replace("{d}", str(d)) for c in sweep] + ["--workers", workers]
            res = subprocess.run([PY, "-m", "uqkd", *argv], capture_output=True, text=True, cwd=d, env=_env(),
                                 timeout=120)
            ref_argv = [c.replace("{d}/r", str(d / "ref")) for c in sweep] + ["--workers", workers]
            ref = subprocess.run([PY, "-m", "uqkd", *ref_argv],
                                 capture_output=True, text=True, cwd=d, env=_env(), timeout=120)
            if res.returncode != 0 or ref.returncode != 0:
                return f"lost: the resume failed: {(res.stderr or ref.stderr).strip()[-160:]}"
            m = re.search(r"\((\d+) computed, (\d+) reused\)", res.stdout)
            want = (len(sweep_sigmas) - done, done)
            if m is None or (int(m.group(1)), int(m.group(2))) != want:
                return (f"lost: the resume did not reuse the {done} cells done at the signal "
                        f"(expected {want[0]} computed, {want[1]} reused; got {m.group(0) if m else res.stdout!r})")
            csv = d / "r" / "teacher-noise-linear" / "results.csv"
            if csv.read_bytes() != (d / "ref" / "teacher-noise-linear" / "results.csv").read_bytes():
                return "lost: the resumed results.csv differs from an undisturbed run's"
            return None
        return check

    hold_env = {"UQKD_TEST_HOLD_AFTER_CELLS": str(hold)}
    add(Case("lost-killed-run", "lost", [*sweep, "--workers", "1"], expect="either", setup=good_counted,
             signal_when=after_hold, env=hold_env, timeout=60, check=interrupted_then_resumed("1")))

    for sig, nm in ((signal.SIGTERM, "sigterm"), (signal.SIGINT, "sigint")):
        for workers in ("1", "2"):
            add(Case(f"lost-{nm}-run-workers-{workers}", "lost", [*sweep, "--workers", workers],
                     expect="interrupt", setup=good_counted, signal_when=after_hold, env=hold_env, sig=sig,
                     timeout=60, check=interrupted_then_resumed(workers), preexec=_default_sigint))

    def truncate_cell(d: Path) -> None:
        cells = sorted((d / "r" / "teacher-noise-linear" / "cells").iterdir())
        cells[0].write_bytes(cells[0].read_bytes()[:10])
    add(Case("lost-truncated-cell-rerun", "lost", ["run", *TINY, "--out", "{d}/r"], expect="ok",
             setup=with_good(truncate_cell), check=unchanged("r", before, only_csv=True)))

    def garble_cell(d: Path) -> None:
        cells = sorted((d / "r" / "teacher-noise-linear" / "cells").iterdir())
        cells[-1].write_bytes(b"\xff\xfe" + bytes(range(200)))
    add(Case("lost-binary-cell-rerun", "lost", ["run", *TINY, "--out", "{d}/r"], expect="ok",
             setup=with_good(garble_cell), check=unchanged("r", before, only_csv=True)))
    add(Case("lost-same-rerun", "lost", ["run", *TINY, "--out", "{d}/r"], expect="ok", setup=with_good(),
             check=unchanged("r", before)))
    add(Case("lost-other-settings-consistent", "lost", ["run", "teacher-noise-linear", "--set", "sigmas=0,0.5,1",
                                                        "--set", "n_students=4", "--workers", "1", "--quiet",
                                                        "--out", "{d}/r"],
             expect="ok", setup=with_good(), check=consistent("r/teacher-noise-linear")))

    # --- G. report over damaged result folders
    def damage(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        def setup(d: Path) -> None:
            fx.copy_good(d / "r")
            fn(d / "r" / "teacher-noise-linear")
        return setup

    lines = (fx.good / "teacher-noise-linear" / "results.csv").read_text().splitlines()
    for name, fn in [
        ("report-results-0-byte", lambda e: (e / "results.csv").write_bytes(b"")),
        ("report-results-binary", lambda e: (e / "results.csv").write_bytes(bytes(range(256)) * 8)),
        ("report-results-latin1", lambda e: (e / "results.csv").write_bytes(
            (lines[0] + "\n" + lines[1] + ",\xe9\n").encode("latin-1"))),
        ("report-results-ragged", lambda e: (e / "results.csv").write_text(
            lines[0] + "\n" + lines[1] + ",1,2,3\n" + "1,2\n")),
        ("report-results-truncated", lambda e: (e / "results.csv").write_text(
            "\n".join(lines)[: len("\n".join(lines)) // 2])),
        ("report-results-header-only", lambda e: (e / "results.csv").write_text(lines[0] + "\n")),
        ("report-results-text-numbers", lambda e: (e / "results.csv").write_text(
            lines[0] + "\n" + ",".join("abc" for _ in lines[0].split(",")) + "\n")),
        ("report-results-nan-values", lambda e: (e / "results.csv").write_text(
            lines[0] + "\n" + ",".join("nan" for _ in lines[0].split(",")) + "\n")),
        ("report-results-is-dir", lambda e: ((e / "results.csv").unlink(), (e / "results.csv").mkdir())),
        ("report-config-bad-json", lambda e: (e / "config.json").write_text("{not json")),
        ("report-config-0-byte", lambda e: (e / "config.json").write_bytes(b"")),
        ("report-config-binary", lambda e: (e / "config.json").write_bytes(b"\xff\xfe\x00\x01")),
        ("report-config-list", lambda e: (e / "config.json").write_text("[1, 2]")),
        ("report-config-missing", lambda e: (e / "config.json").unlink()),
        ("report-config-is-dir", lambda e: ((e / "config.json").unlink(), (e / "config.json").mkdir())),
        ("report-config-wrong-types", lambda e: (e / "config.json").write_text(
            json.dumps({"experiment": 5, "profile": [], "seed": "x", "config": "oops"}))),
    ]:
        add(Case(name, "report", ["report", "{d}/r"], expect="either", setup=damage(fn), check=report_notes_damage))
    add(Case("report-unknown-experiment-dir", "report", ["report", "{d}/r"], expect="either",
             setup=lambda d: (fx.copy_good(d / "r"), shutil.copytree(d / "r" / "teacher-noise-linear",
                                                                     d / "r" / "no-such-experiment")),
             check=None))
    add(Case("report-good", "report", ["report", "{d}/r"], expect="ok", setup=lambda d: fx.copy_good(d / "r"),
             check=None))

    # --- H. LLM steps: every argument error before any model loads (default teacher: a 30 s load)
    S = ["llm", "sample", "--out", "{d}/s.jsonl"]
    for name, args in [
        ("batch-size-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--batch-size", "0"]),
        ("batch-size-neg", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--batch-size", "-3"]),
        ("embedder-hash-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash:0"]),
        ("embedder-hash-abc", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash:abc"]),
        ("embedder-hash-neg", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash:-3"]),
        ("embedder-hash-empty", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash:"]),
        ("embedder-hash-float", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash:1.5"]),
        ("embedder-missing", ["--data", str(fx.qa), "--k", "2", "--embedder", "/nonexistent/sbert"]),
        ("embedder-a-file", ["--data", str(fx.qa), "--k", "2", "--embedder", str(fx.afile)]),
        ("embedder-empty-dir", ["--data", str(fx.qa), "--k", "2", "--embedder", str(fx.emptydir)]),
        ("embedder-corrupt-dir", ["--data", str(fx.qa), "--k", "2", "--embedder",
                                  str(fx.root / "fx" / "corrupt-model")]),
        ("student-missing", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--student", "/nonexistent/st"]),
        ("student-corrupt", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--student",
                             str(fx.root / "fx" / "corrupt-model")]),
        ("student-bad-hub-id", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--student", "a/b/c/d"]),
        ("student-every-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--student", "derived",
                             "--student-every", "0"]),
        ("student-every-neg", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--student-every", "-2"]),
        ("top-p-2", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--top-p", "2"]),
        ("top-p-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--top-p", "0"]),
        ("top-p-nan", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--top-p", "nan"]),
        ("top-k-neg", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--top-k", "-1"]),
        ("top-k-float", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--top-k", "1.5"]),
        ("temperature-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--temperature", "0"]),
        ("temperature-neg", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--temperature", "-1"]),
        ("temperature-nan", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--temperature", "nan"]),
        ("temperature-inf", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--temperature", "inf"]),
        ("repetition-penalty-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--repetition-penalty", "0"]),
        ("repetition-penalty-inf", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash",
                                    "--repetition-penalty", "inf"]),
        ("max-new-tokens-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--max-new-tokens", "0"]),
        ("data-missing", ["--data", "{d}/nope.jsonl", "--k", "2", "--embedder", "hash"]),
        ("data-empty", ["--data", str(fx.empty), "--k", "2", "--embedder", "hash"]),
        ("data-blank-lines", ["--data", str(fx.blank), "--k", "2", "--embedder", "hash"]),
        ("data-non-utf8", ["--data", str(fx.latin1), "--k", "2", "--embedder", "hash"]),
        ("data-binary", ["--data", str(fx.binary), "--k", "2", "--embedder", "hash"]),
        ("data-bad-jsonl-line", ["--data", str(fx.badline), "--k", "2", "--embedder", "hash"]),
        ("data-bad-json-list", ["--data", str(fx.badlist), "--k", "2", "--embedder", "hash"]),
        ("data-no-answer", ["--data", str(fx.noanswer), "--k", "2", "--embedder", "hash"]),
        ("data-array-line", ["--data", str(fx.array_line), "--k", "2", "--embedder", "hash"]),
        ("data-duplicate-ids", ["--data", str(fx.dupids), "--k", "2", "--embedder", "hash"]),
        ("data-null-question", ["--data", str(fx.nullq), "--k", "2", "--embedder", "hash"]),
        ("data-directory", ["--data", str(fx.emptydir), "--k", "2", "--embedder", "hash"]),
        ("qa-kinds-unknown", ["--k", "2", "--embedder", "hash", "--qa-kinds", "nosuch"]),
        ("k-0", ["--data", str(fx.qa), "--k", "0", "--embedder", "hash"]),
        ("k-neg", ["--data", str(fx.qa), "--k", "-1", "--embedder", "hash"]),
        ("k-and-budget", ["--data", str(fx.qa), "--k", "2", "--budget", "10", "--embedder", "hash"]),
        ("no-k-no-budget", ["--data", str(fx.qa), "--embedder", "hash"]),
        ("budget-0", ["--data", str(fx.qa), "--budget", "0", "--embedder", "hash"]),
        ("budget-neg", ["--data", str(fx.qa), "--budget", "-5", "--embedder", "hash"]),
        ("budget-too-small", ["--data", str(fx.qa), "--budget", "5", "--embedder", "hash"]),
        ("budget-float", ["--data", str(fx.qa), "--budget", "7.5", "--embedder", "hash"]),
        ("pilot-1", ["--data", str(fx.qa), "--budget", "12", "--pilot", "1", "--embedder", "hash"]),
        ("pilot-0", ["--data", str(fx.qa), "--budget", "12", "--pilot", "0", "--embedder", "hash"]),
        ("limit-neg", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--limit", "-1"]),
        ("concurrency-0", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--concurrency", "0"]),
        ("threads-neg", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--threads", "-1"]),
        ("device-bad", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--device", "tpu"]),
        ("device-cuda-99", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--device", "cuda:99"]),
        ("dtype-bad", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--dtype", "float8"]),
        ("split-bad", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--split", "test"]),
        ("teacher-missing", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher", "/nonexistent/m"]),
        ("teacher-corrupt-config", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher",
                                    str(fx.root / "fx" / "corrupt-model")]),
        ("teacher-binary-config", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher",
                                   str(fx.root / "fx" / "binary-config-model")]),
        ("teacher-unknown-arch", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher",
                                  str(fx.root / "fx" / "nonsense-model")]),
        ("teacher-empty-config", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher",
                                  str(fx.root / "fx" / "empty-config-model")]),
        ("teacher-a-file", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher", str(fx.afile)]),
        ("teacher-openai-bad-url", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher",
                                    "openai:not-a-url"]),
        ("teacher-vllm", ["--data", str(fx.qa), "--k", "2", "--embedder", "hash", "--teacher", "vllm:x"]),
    ]:
        add(Case(f"sample:{name}", "llm", S + args, llm=True, timeout=15))
    B = ["llm", "build-dataset", "--out", "{d}/t.jsonl"]
    for name, args in [
        ("samples-missing", ["--samples", "{d}/nope.jsonl", "--method", "single"]),
        ("samples-empty", ["--samples", str(fx.empty), "--method", "single"]),
        ("samples-non-utf8", ["--samples", str(fx.latin1), "--method", "single"]),
        ("samples-bad-line", ["--samples", str(fx.badline), "--method", "single"]),
        ("samples-directory", ["--samples", str(fx.emptydir), "--method", "single"]),
        ("samples-array-line", ["--samples", str(fx.array_line), "--method", "single"]),
        ("samples-no-samples-field", ["--samples", str(fx.samples_nosamples), "--method", "averaging",
                                      "--embedder", "hash"]),
        ("samples-string-samples", ["--samples", str(fx.samples_badtype), "--method", "single"]),
        ("method-unknown", ["--samples", str(fx.samples), "--method", "best"]),
        ("embedder-hash-0", ["--samples", str(fx.samples), "--method", "averaging", "--embedder", "hash:0"]),
        ("embedder-missing", ["--samples", str(fx.samples), "--method", "averaging", "--embedder", "/no/sbert"]),
        ("student-index-neg", ["--samples", str(fx.samples), "--method", "single", "--student-index", "-1"]),
        ("vw-without-student", ["--samples", str(fx.samples), "--method", "variance-weighting", "--embedder",
                                "hash"]),
        ("data-missing", ["--samples", str(fx.samples), "--method", "single", "--data", "{d}/nope.jsonl"]),
        ("data-mismatch", ["--samples", str(fx.samples), "--method", "single", "--data", str(fx.qa_list)]),
    ]:
        add(Case(f"build:{name}", "llm", B + args, llm=True, timeout=15))
    D = ["llm", "distill", "--out", "{d}/st", "--embedder", "hash"]
    for name, args in [
        ("batch-size-0", ["--train", str(fx.train), "--batch-size", "0"]),
        ("students-0", ["--samples", str(fx.samples), "--students", "0"]),
        ("student-every-0", ["--train", str(fx.train), "--student-every", "0"]),
        ("lr-nan", ["--train", str(fx.train), "--lr", "nan"]),
        ("lr-0", ["--train", str(fx.train), "--lr", "0"]),
        ("lr-inf", ["--train", str(fx.train), "--lr", "inf"]),
        ("epochs-0", ["--train", str(fx.train), "--epochs", "0"]),
        ("student-missing", ["--train", str(fx.train), "--student", "/nonexistent/st"]),
        ("student-corrupt", ["--train", str(fx.train), "--student", str(fx.root / "fx" / "corrupt-model")]),
        ("teacher-missing", ["--train", str(fx.train), "--teacher", "/nonexistent/t"]),
        ("train-missing", ["--train", "{d}/nope.jsonl"]),
        ("train-non-utf8", ["--train", str(fx.latin1)]),
        ("train-nan-weight", ["--train", str(fx.train_nan)]),
        ("train-null-completion", ["--train", str(fx.train_null)]),
        ("samples-missing", ["--samples", "{d}/nope.jsonl"]),
        ("samples-too-few", ["--samples", str(fx.samples), "--students", "5"]),
        ("k-per-student-neg", ["--samples", str(fx.samples), "--k-per-student", "-1"]),
        ("samples-embedder-hash-abc", ["--samples", str(fx.samples), "--embedder", "hash:abc"]),
        ("method-unknown", ["--samples", str(fx.samples), "--method", "best"]),
        ("lora-r-0", ["--train", str(fx.train), "--lora", "--lora-r", "0"]),
        ("lora-alpha-nan", ["--train", str(fx.train), "--lora", "--lora-alpha", "nan"]),
        ("adapter-only-no-lora", ["--train", str(fx.train), "--no-lora", "--adapter-only"]),
        ("grad-accum-0", ["--train", str(fx.train), "--gradient-accumulation-steps", "0"]),
        ("report-to-bogus", ["--train", str(fx.train), "--report-to", "bogus"]),
        ("out-is-a-file", ["--train", str(fx.train), "--out", str(fx.afile)]),
        ("train-and-samples", ["--train", str(fx.train), "--samples", str(fx.samples)]),
    ]:
        add(Case(f"distill:{name}", "llm", D + args, llm=True, timeout=15))
    E = ["llm", "evaluate", "--out", "{d}/ev", "--embedder", "hash", "--data", str(fx.qa)]
    for name, args in [
        ("students-missing", ["--students", "{d}/nowhere"]),
        ("students-empty-dir", ["--students", str(fx.emptydir)]),
        ("students-a-file", ["--students", str(fx.afile)]),
        ("students-corrupt-config", ["--students", str(fx.students_corrupt)]),
        ("students-corrupt-with-teacher", ["--students", str(fx.students_corrupt), "--teacher", "smollm2"]),
        ("k-1", ["--students", str(fx.students_stub), "--k", "1"]),
        ("top-p-2", ["--students", str(fx.students_stub), "--top-p", "2"]),
        ("top-k-neg", ["--students", str(fx.students_stub), "--top-k", "-1"]),
        ("embedder-hash-abc", ["--students", str(fx.students_stub), "--embedder", "hash:abc"]),
        ("data-missing", ["--students", str(fx.students_stub), "--data", "{d}/nope.jsonl"]),
        ("data-non-utf8", ["--students", str(fx.students_stub), "--data", str(fx.latin1)]),
        ("teacher-missing", ["--students", str(fx.students_stub), "--teacher", "/nonexistent/t"]),
        ("teacher-corrupt", ["--students", str(fx.students_stub), "--teacher",
                             str(fx.root / "fx" / "corrupt-model")]),
    ]:
        add(Case(f"evaluate:{name}", "llm", E + args, llm=True, timeout=15))
    # every argument valid, the student folder a stub: the load itself fails, on one line
    add(Case("evaluate:stub-student-load-fails", "llm", E + ["--students", str(fx.students_stub)], timeout=60))
    add(Case("distill:stub-student-load-fails", "llm", D + ["--train", str(fx.train), "--student",
                                                            str(fx.students_stub / "student-000")], timeout=60))
    # LLM successes on the tiny local model (documented outputs)
    if fx.model is not None:
        m = str(fx.model)
        add(Case("sample:tiny-ok", "llm-ok", S + ["--teacher", m, "--data", str(fx.qa), "--k", "2", "--embedder",
                                                  "hash", "--max-new-tokens", "2", "--cache-dir", "{d}/c"],
                 expect="ok", timeout=90, check=no_nonfinite))
        add(Case("sample:tiny-budget-ok", "llm-ok", S + ["--teacher", m, "--data", str(fx.qa), "--budget", "8",
                                                         "--embedder", "hash", "--max-new-tokens", "2",
                                                         "--cache-dir", "{d}/c"],
                 expect="ok", timeout=90, check=no_nonfinite))
    if fx.model is not None:
        m = str(fx.model)
        # a training set whose prompts all fill max_length: one line before the model loads, either trainer
        for trainer in ("trl", "uqkd"):
            add(Case(f"distill:no-answer-within-max-length-{trainer}", "llm",
                     D + ["--train", str(fx.train_long), "--student", m, "--trainer", trainer, "--cache-dir", "{d}/c"],
                     llm=True, timeout=60))

        def students(damage: str | None = None, hidden: bool = False) -> Callable[[Path], None]:
            def setup(d: Path) -> None:
                for r in range(3):
                    shutil.copytree(fx.model, d / "st" / f"student-{r:03d}")
                f = d / "st" / "student-001" / "model.safetensors"
                if damage == "half":  # a copy or a save cut short
                    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
                elif damage == "header":
                    data = f.read_bytes()
                    f.write_bytes(data[:8] + b"{garbage" + data[16:])
                if hidden:  # a re-distill killed while saving: its hidden staging folder, config.json unreadable
                    _write(d / "st" / ".student-000.tmp999999" / "config.json", '{"model_type": ')
            return setup

        EV = E + ["--students", "{d}/st", "--cache-dir", "{d}/c", "--k", "2", "--max-new-tokens", "2"]
        for how in ("half", "header"):
            add(Case(f"evaluate:damaged-safetensors-{how}", "llm", EV, setup=students(how), llm=True, timeout=60))

        def skipped_one(d: Path, out: str, err: str) -> str | None:
            m_ = json.loads((d / "ev" / "metrics.json").read_text())
            if sorted(m_.get("skipped") or {}) != ["student-001"] or m_["students"]["n_students"] != 2:
                return f"silent: metrics.json does not list the one damaged student as skipped: {m_.get('skipped')}"
            if "student-001 skipped" not in err or "skipped 1 damaged" not in out:
                return "silent: the skipped student is not reported on stderr and in the output"
            return None
        add(Case("evaluate:skip-damaged-ok", "llm-ok", EV + ["--skip-damaged"], setup=students("half"),
                 expect="ok", timeout=120, check=skipped_one))
        add(Case("evaluate:hidden-staging-folder-ok", "llm-ok", EV, setup=students(hidden=True), expect="ok",
                 timeout=120))

        def stale(d: Path) -> None:
            dead = subprocess.Popen([PY, "-c", "pass"])
            dead.wait()
            for name in (f".student-000.tmp{dead.pid}", f".trl-000.tmp{dead.pid}", ".trl-001"):
                _write(d / "st" / name / "config.json", '{"model_type": ')
            old = time.time() - 3600
            os.utime(d / "st" / ".trl-001", (old, old))

        def stale_removed(d: Path, out: str, err: str) -> str | None:
            left = sorted(p.name for p in (d / "st").iterdir() if p.name.startswith("."))
            return f"lost: stale temporaries left in --out: {left}" if left else None
        add(Case("distill:stale-temporaries-removed-ok", "llm-ok",
                 D + ["--train", str(fx.train), "--student", m, "--epochs", "1", "--cache-dir", "{d}/c"],
                 setup=stale, expect="ok", timeout=120, check=stale_removed))
    add(Case("sample:teacher-openai-unreachable", "llm", S + ["--data", str(fx.qa), "--k", "2", "--embedder", "hash",
                                                               "--teacher", "openai:http://127.0.0.1:9/v1#m"],
             timeout=60))
    add(Case("build:student-index-99-ok", "llm-ok", B + ["--samples", str(fx.samples), "--method", "single",
                                                         "--student-index", "99"], expect="ok"))
    add(Case("build:single-ok", "llm-ok", B + ["--samples", str(fx.samples), "--method", "single"], expect="ok"))
    add(Case("build:ivl-ok", "llm-ok", B + ["--samples", str(fx.samples), "--method", "inverse-variance-loss",
                                            "--embedder", "hash"], expect="ok", check=_train_weights_finite))

    # --- I. Python API
    api = [
        ("average-nan", "aggregate.average(np.array([[1.0, np.nan], [2.0, 3.0]]))"),
        ("average-inf", "aggregate.average(np.array([[1.0, np.inf], [2.0, 3.0]]))"),
        ("average-empty", "aggregate.average(np.zeros((3, 0)))"),
        ("average-scalar", "aggregate.average(np.float64(1.0))"),
        ("average-strings", "aggregate.average(np.array([['a', 'b']]))"),
        ("sample-variance-k1", "aggregate.sample_variance(np.ones((4, 1)))"),
        ("shrunk-variance-nan", "aggregate.shrunk_variance(np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]]))"),
        ("shrunk-variance-k1", "aggregate.shrunk_variance(np.ones((4, 1)))"),
        ("shrunk-variance-prior-neg", "aggregate.shrunk_variance(np.random.default_rng(0).normal(size=(5, 3)), prior_df=-1)"),
        ("shrunk-variance-prior-nan", "aggregate.shrunk_variance(np.random.default_rng(0).normal(size=(5, 3)), prior_df=float('nan'))"),
        ("ivc-negative-var", "aggregate.inverse_variance_combine(np.array([1.0, 2.0]), np.array([-0.5, 2.0]))"),
        # two zero-variance estimates: documented (they share the weight equally), so not a case here
        ("ivc-neg-var", "aggregate.inverse_variance_combine(np.array([1.0, 2.0]), np.array([0.0, -1.0]))"),
        ("ivc-nan-estimate", "aggregate.inverse_variance_combine(np.array([np.nan, 2.0]), np.array([0.5, 2.0]))"),
        ("ivc-inf-var", "aggregate.inverse_variance_combine(np.array([1.0, 2.0]), np.array([np.inf, np.inf]))"),
        ("ivc-shape-mismatch", "aggregate.inverse_variance_combine(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.0]))"),
        ("ivc-empty", "aggregate.inverse_variance_combine(np.array([]), np.array([]))"),
        ("ivc-bad-kind", "aggregate.inverse_variance_combine(np.array([1.0]), np.array([1.0]), kind='nosuch')"),
        ("ivw-negative", "aggregate.inverse_variance_weights(np.array([-1.0, 1.0]))"),
        ("alloc-negative-var", "aggregate.allocate_budget(np.array([1.0, -1.0]), 10)"),
        ("alloc-nan-var", "aggregate.allocate_budget(np.array([1.0, np.nan]), 10)"),
        ("alloc-budget-too-small", "aggregate.allocate_budget(np.array([1.0, 2.0, 3.0]), 2)"),
        ("alloc-budget-float", "aggregate.allocate_budget(np.array([1.0, 2.0]), 5.5)"),
        ("alloc-budget-nan", "aggregate.allocate_budget(np.array([1.0, 2.0]), float('nan'))"),
        ("alloc-weights-shape", "aggregate.allocate_budget(np.array([1.0, 2.0]), 10, np.array([1.0, 2.0, 3.0]))"),
        ("alloc-weights-neg", "aggregate.allocate_budget(np.array([1.0, 2.0]), 10, np.array([1.0, -2.0]))"),
        # (2, 2) variances are two batch rows, each allocated 10 (documented), so not a case here
        ("alloc-no-inputs", "aggregate.allocate_budget(np.ones((2, 0)), 10)"),
        ("alloc-two-stage-k0-1", "aggregate.allocate_budget_two_stage(np.array([1.0, 2.0]), 1, 10)"),
        ("alloc-two-stage-nan", "aggregate.allocate_budget_two_stage(np.array([1.0, np.nan]), 2, 10)"),
        ("alloc-two-stage-small", "aggregate.allocate_budget_two_stage(np.array([1.0, 2.0]), 2, 3)"),
        ("neyman-inf", "aggregate.neyman_allocation(np.array([1.0, np.inf]), 10)"),
        ("paper-oracle-neg-noise", "aggregate.paper_oracle_labels(np.ones(3), np.ones(3), np.ones(3), -1.0)"),
        ("iv-sample-weights-k0", "aggregate.inverse_variance_sample_weights(np.ones(3), 0)"),
        ("ols-cov-k0", "theory.ols_param_cov(np.random.default_rng(0).normal(size=(10, 2)), 0.5, k=0)"),
        ("ols-cov-neg-sigma", "theory.ols_param_cov(np.random.default_rng(0).normal(size=(10, 2)), -0.5)"),
        ("ols-cov-nan-X", "theory.ols_param_cov(np.full((10, 2), np.nan), 0.5)"),
        ("ols-cov-1d-X", "theory.ols_param_cov(np.ones(10), 0.5)"),
        ("ols-cov-singular", "theory.ols_param_cov(np.ones((10, 2)), 0.5)"),
        ("linear-fit-nan-y", "BatchedLinearRegression().fit(np.random.default_rng(0).normal(size=(10, 2)), np.full((3, 10), np.nan)).coef_"),
        ("linear-fit-shape", "BatchedLinearRegression().fit(np.random.default_rng(0).normal(size=(10, 2)), np.ones((3, 9)))"),
        ("linear-fit-neg-weight", "BatchedLinearRegression().fit(np.random.default_rng(0).normal(size=(10, 2)), np.ones((3, 10)), sample_weight=-np.ones(10))"),
        ("linear-rcond-nan", "BatchedLinearRegression(rcond=float('nan')).fit(np.random.default_rng(0).normal(size=(10, 2)), np.ones((3, 10))).coef_"),
        ("linear-rcond-neg-collinear", "BatchedLinearRegression(rcond=-1).fit(np.repeat(np.random.default_rng(0).normal(size=(10, 1)), 2, axis=1), np.random.default_rng(1).normal(size=(3, 10))).coef_"),
        ("linear-rcond-one", "BatchedLinearRegression(rcond=1.0).fit(np.random.default_rng(0).normal(size=(10, 2)), np.ones((3, 10))).coef_"),
        ("mlp-lr-huge", "__import__('uqkd.students.mlp', fromlist=['BatchedMLP']).BatchedMLP(lr=1e30, n_students=2, n_epochs=20).fit(np.random.default_rng(0).normal(size=(30, 3)), np.random.default_rng(1).normal(size=30)).predict(np.ones((2, 3)))"),
        ("metrics-mse-shape", "metrics.mse(np.ones((3, 4)), np.ones(5))"),
        ("metrics-entropy-neg", "metrics.predictive_entropy(np.array([[1.5, -0.5]]))"),
        ("run-experiment-bad-override", "uqkd.run_experiment('teacher-noise-linear', overrides={'n_students': -1}, out=TMP)"),
        ("run-experiment-unknown", "uqkd.run_experiment('nosuch', out=TMP)"),
    ]
    for name, expr in api:
        add(Case(f"api:{name}", "api", code=API_HARNESS.replace("EXPR", expr)))
    return C


def _drop_dac() -> None:
    """In the child, before exec: give up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (so root obeys chmod)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class Hdr(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    for cap in (1, 2):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: an exec'd root process gets no more than this
    h, d = Hdr(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(h), d) == 0:
        mask = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF
        d[0].effective &= mask
        d[0].permitted &= mask
        d[0].inheritable &= mask
        libc.capset(ctypes.byref(h), d)


def _default_sigint() -> None:
    """In the child: SIGINT's default disposition (a battery started in the background, under nohup or CI, passes
    SIGINT on ignored, and Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _fsize(n: int) -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


def _train_weights_finite(d: Path, out: str, err: str) -> str | None:
    p = d / "t.jsonl"
    if not p.is_file():
        return "lost: no training set written"
    for ln in p.read_text().splitlines():
        w = json.loads(ln).get("weight")
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            return f"silent: training weight {w!r}"
    return None


API_HARNESS = r"""
import sys, tempfile
import numpy as np
import uqkd
from uqkd import aggregate, theory, metrics
from uqkd.students import BatchedLinearRegression
TMP = tempfile.mkdtemp()
try:
    r = EXPR
except (ValueError, TypeError) as e:
    print("uqkd: error: " + type(e).__name__ + ": " + str(e).splitlines()[0] if str(e) else type(e).__name__,
          file=sys.stderr)
    sys.exit(2)
def finite(x):
    if isinstance(x, (tuple, list)):
        return all(finite(v) for v in x)
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return True
    return bool(np.all(np.isfinite(a)))
print("returned", "finite" if finite(r) else "NON-FINITE", repr(r)[:100].replace(chr(10), " "))
"""


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write per-case results as JSON")
    ap.add_argument("--only", default=None, metavar="SUBSTR", help="only cases whose name or group contains this")
    ap.add_argument("--no-model", action="store_true", help="skip building the tiny local model (and its cases)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case, not only failures")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="uqkd-hostile-"))
    os.chmod(tmp, 0o755)
    (tmp / "mpl").mkdir()
    os.environ["MPLCONFIGDIR"] = str(tmp / "mpl")
    try:
        fx = Fixtures(tmp, with_model=not args.no_model)
        cases = build_cases(fx, tmp / "cases")
        if args.only:
            cases = [c for c in cases if args.only in c.name or args.only in c.group]
        names = [c.name for c in cases]
        assert len(names) == len(set(names)), "duplicate case names"
        (tmp / "cases").mkdir(exist_ok=True)
        # spread the expensive (slow-failing) ones first so the pool finishes together
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda c: run_case(c, tmp / "cases"), cases))
    finally:
        for p in tmp.rglob("*"):  # read-only folders made by the cases
            if p.is_dir() and not p.is_symlink():
                try:
                    os.chmod(p, 0o755)
                except OSError:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)
    counts = {c: sum(r.cls == c for r in results) for c in CLASSES}
    bad = [r for r in results if r.cls != "clean"]
    shown = results if args.verbose else bad
    if shown:
        w = max(len(r.name) for r in shown)
        print(f"{'case':<{w}}  {'group':<12} {'class':<9} {'rc':>4} {'secs':>6}  finding")
        for r in sorted(shown, key=lambda r: (r.cls, r.group, r.name)):
            print(f"{r.name:<{w}}  {r.group:<12} {r.cls:<9} {str(r.rc):>4} {r.seconds:>6.1f}  {r.why}")
    print(f"clean {counts['clean']} / traceback {counts['traceback']} / silent {counts['silent']} / "
          f"lost {counts['lost']} / late {counts['late']} (of {len(results)}) in {time.monotonic() - t0:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
