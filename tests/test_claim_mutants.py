"""Every finding can fail: each tabular claim's realistic mutants (:mod:`uqkd.report.mutants`) move its verdict.

Each experiment runs at its mutation-test size (:data:`uqkd.report.mutants.SIZES`, in-process, caches
cleared) as shipped and with one mutant applied; every claim the mutant lists must leave the shipped verdict.
The table of (claim, mutant, shipped verdict, mutated verdict) is printed (``pytest -s``).
"""

from __future__ import annotations

import pytest

from uqkd.report.claims import CLAIMS, CODE_CHECK, CONTRADICTED, HOLDS, evaluate_claims
from uqkd.report.mutants import LLM_MUTANTS, MUTANTS, SIZES, clear_caches, mutants_for
from uqkd.report.report import load_tables
from uqkd.runner import run_experiment

#: mutants of experiments that take more than a few seconds at quick (MLP students at 300 epochs): CI's slow run
SLOW = {"init-noise-mlp", "bootstrap-mlp", "student-entropy", "variance-aware-mlp"}


def _verdicts(experiments, out) -> dict[str, str]:
    clear_caches()
    try:
        for e in experiments:
            run_experiment(e, profile="quick", out=out, overrides=SIZES[e], progress=False, make_figures=False)
    finally:
        clear_caches()
    tables, _ = load_tables(out)
    return {c.claim_id: c.verdict for c in evaluate_claims(tables) if set(c.experiments) <= set(experiments)}


_SHIPPED: dict[tuple[str, ...], dict[str, str]] = {}


@pytest.fixture
def shipped(tmp_path_factory):
    def get(experiments: tuple[str, ...]) -> dict[str, str]:
        if experiments not in _SHIPPED:
            _SHIPPED[experiments] = _verdicts(experiments, tmp_path_factory.mktemp("shipped"))
        return _SHIPPED[experiments]
    return get


@pytest.mark.parametrize("mutant", [pytest.param(m, marks=pytest.mark.slow) if set(m.experiments) & SLOW else m
                                    for m in MUTANTS], ids=[m.name for m in MUTANTS])
def test_mutant_moves_every_claim_it_names(mutant, shipped, monkeypatch, tmp_path):
    base = shipped(mutant.experiments)
    mutant.apply(monkeypatch.setattr)
    bad = _verdicts(mutant.experiments, tmp_path)
    for cid in mutant.claims:
        print(f"| {cid} | {mutant.name}: {mutant.description} | {base[cid]} | {bad[cid]} |")
        assert base[cid] in (HOLDS, CONTRADICTED), f"{cid}: shipped verdict {base[cid]} at the test size"
        assert bad[cid] != base[cid], f"{cid} still {bad[cid]} with {mutant.name}"
        # a real verdict, not a statistic that could not be formed
        assert bad[cid] in (HOLDS, CONTRADICTED, "inconclusive"), f"{cid}: {bad[cid]} with {mutant.name}"


def test_every_finding_declares_a_mutant_and_code_checks_are_labelled():
    names = {c.claim_id for c in CLAIMS}
    for m in MUTANTS:
        assert set(m.claims) <= names and set(m.experiments) <= set(SIZES), m.name
    assert {c for c, _, _ in LLM_MUTANTS} <= names
    for c in CLAIMS:
        if c.kind == CODE_CHECK:
            continue
        assert mutants_for(c.claim_id), f"{c.claim_id} has no mutant"
    checks = {c.claim_id for c in CLAIMS if c.kind == CODE_CHECK}
    assert checks == {"S7-paper-variance-weighting", "S5-bootstrap-teacher"}
    assert not any(set(m.claims) & checks for m in MUTANTS)


def test_the_llm_mutant_tests_exist():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).parent.parent
    for _, _, ref in LLM_MUTANTS:
        path, name = ref.split("::")
        spec = importlib.util.spec_from_file_location(Path(path).stem, root / path)
        assert spec and (root / path).is_file(), ref
        assert f"def {name}(" in (root / path).read_text(), ref


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_still_finds_the_code_it_mutates(mutant, monkeypatch):
    """Fast guard for the slow mutation runs: a rename of the mutated function (as when the MLP designs
    moved to experiments/_designs.py) must fail here, in the default suite, not only in CI's slow run."""
    calls = []
    mutant.apply(lambda obj, name, value: calls.append((obj, name, value)) or monkeypatch.setattr(obj, name, value))
    assert calls, f"{mutant.name} patched nothing"
    for _obj, name, value in calls:
        assert callable(value), f"{mutant.name}: {name} replaced by a non-callable"
