"""The package's layering, read from the code's own imports (issue 32 item 3).

Layers, bottom to top: the numeric core (aggregate, theory, metrics, students, data, executors, ``plotting``,
``schema``), then the experiments (``uqkd.experiments.*``, which draw with :mod:`uqkd.plotting`), then the runner,
then the report (``report.stats`` -> ``report.claims`` / ``crossed`` -> ``claims_*`` -> ``mutants`` / ``report``),
then ``reproduce`` and the CLI. The report reads result tables, not experiment code: it imports experiments only
at call time (for descriptions and mutants). Experiments and claims are found by package discovery, so no module
imports a list of them, and module-level imports form no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = SRC / "uqkd"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """The uqkd modules ``name`` imports (module-level statements only, or every import in the file)."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module-level, including under if/try (not TYPE_CHECKING blocks)
        flat: list[ast.AST] = []
        stack = list(nodes)
        while stack:
            n = stack.pop()
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, (ast.If, ast.Try)):
                stack.extend(n.body + n.orelse + getattr(n, "handlers", []) + getattr(n, "finalbody", []))
            elif isinstance(n, ast.ExceptHandler):
                stack.extend(n.body)
            else:
                flat.append(n)
        nodes = flat
    found: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names if a.name.split(".")[0] == "uqkd"}
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg.split(".")
                base = base[: len(base) - (n.level - 1)]
                mod = ".".join(base + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            if mod.split(".")[0] != "uqkd":
                continue
            subs = {f"{mod}.{a.name}" for a in n.names if f"{mod}.{a.name}" in MODULES}
            found |= subs or {mod}
            if subs and len(subs) < len(n.names):
                found.add(mod)
    return {m for m in found if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    # a package's __init__ re-exports its children: an edge from a child to its package is not an import cycle
    # through code, so edges into ``__init__`` modules are kept only for the package's own face
    return {m: _imports(m, p, top_level_only) for m, p in MODULES.items()}


def test_the_import_graph_is_read():
    """Guards the checks below against a parser that finds nothing."""
    g = _graph(top_level_only=True)
    assert "uqkd.report.stats" in g["uqkd.report.claims"]
    assert "uqkd.report.stats" in g["uqkd.report.crossed"]
    assert "uqkd.experiments.base" in g["uqkd.experiments.linear"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_level_import_cycles():
    g = _graph(top_level_only=True)
    # edges from a package's modules to the package's __init__ (importing a sibling via the package face) are
    # resolved to the module itself by _imports where it names one; what remains must be acyclic
    assert _cycles(g) == []


def _layer_violations(rule: str, sources: list[str], forbidden: tuple[str, ...], top_level_only: bool) -> list[str]:
    g = _graph(top_level_only)
    return [f"{rule}: {m} imports {d}" for m in sources for d in sorted(g[m])
            if any(d == f or d.startswith(f + ".") for f in forbidden)]


def test_layers():
    core = [m for m in MODULES if m.split(".")[1:2] and m.split(".")[1] in {
        "_io", "_seeding", "_validation", "_malloc", "aggregate", "theory", "metrics", "decomposition", "students",
        "data", "executors", "plotting", "schema"}]
    experiments = [m for m in MODULES if m.startswith("uqkd.experiments.")]
    report = [m for m in MODULES if m.startswith("uqkd.report.")]
    assert len(core) >= 10 and len(experiments) >= 6 and len(report) >= 8
    bad = []
    # the core knows neither experiments nor the report nor the runner, at any level
    bad += _layer_violations("core", core, ("uqkd.experiments", "uqkd.report", "uqkd.runner", "uqkd.reproduce",
                                            "uqkd.cli"), top_level_only=False)
    # experiments draw with uqkd.plotting: they never import the report, the runner or the CLI
    bad += _layer_violations("experiments", experiments, ("uqkd.report", "uqkd.runner", "uqkd.reproduce", "uqkd.cli"),
                             top_level_only=False)
    # the report reads result tables: experiments only at call time
    bad += _layer_violations("report", report, ("uqkd.experiments", "uqkd.runner", "uqkd.reproduce", "uqkd.cli"),
                             top_level_only=True)
    # statistics are pure: nothing of uqkd
    bad += _layer_violations("stats", ["uqkd.report.stats"], ("uqkd",), top_level_only=False)
    assert bad == []


_ALONE = r"""
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "uqkd" or m.startswith("uqkd.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\n".join(failed))
"""


@pytest.mark.parametrize("group", ["uqkd.report", "uqkd.experiments", "core"])
def test_each_module_imports_alone(group):
    """Each module imported first (the others forgotten) imports: no cycle that depends on import order."""
    if group == "core":
        names = [m for m in MODULES if not m.startswith(("uqkd.report", "uqkd.experiments", "uqkd.llm"))]
    else:
        names = [m for m in MODULES if m.startswith(group)]
    r = subprocess.run([sys.executable, "-c", _ALONE, *names], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == ""


def test_the_report_imports_no_experiment_at_module_import():
    code = ("import sys, uqkd.report.report, uqkd.report.claims, uqkd.report.mutants; "
            "print(sorted(m for m in sys.modules if m.startswith('uqkd.experiments.') and m != 'uqkd.experiments.base'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_experiments_and_claims_are_discovered():
    """Discovery alone finds every experiment and every claims module's claims (no import list)."""
    code = r"""
from uqkd.experiments.base import experiment_modules, list_experiments
from uqkd.report.claims import all_claims, claim_modules
exps = list_experiments()
claims = all_claims()
print(len(exps), len(claims))
print(sorted(set(claim_modules()) - {c.test.__module__ for c in claims}))
print(sorted({e.run_cell.__module__ for e in exps} - set(experiment_modules())))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    counts, claims_without_claims, exps_elsewhere = r.stdout.strip().splitlines()
    n_exp, n_claims = map(int, counts.split())
    assert n_exp >= 15 and n_claims >= 29
    assert claims_without_claims == "[]"  # a claims_* module that registers nothing is a mistake
    assert exps_elsewhere == "[]"
