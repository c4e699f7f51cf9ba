"""The quick profile decides every tabular claim: its design has the power for the effects the paper profile measures.

Fast tests: for each claim quick used to leave inconclusive, the minimum detectable effect of the quick design
(the report's own formulas, with the replication read from the registered quick profile and the spread per
replicate measured at quick) lies below the effect the paper profile measures, so shrinking quick back fails here.
A slow test runs every tabular experiment at quick and asserts that each tabular finding holds or is contradicted.

Measured on 2 cores, 2026-12-08: the paper profiles of bootstrap-mlp (1,000 students, 10 fractions) and
student-entropy (4 datasets, 20 students per cell), and init-noise-mlp at 1,000 students x 300 epochs and
sigma_init 0, 0.1, 0.4 (the paper profile's 10,000 students x 9 sigma_init was not run).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as tdist

from uqkd.experiments import get_experiment
from uqkd.report.claims import ALPHA, POWER, mde_variance_ratio
from uqkd.runner import resolve_config

#: effects at the paper profile (see the module docstring)
PAPER_EFFECT = {
    "S5-bootstrap-teacher-mlp": 0.353,  # largest teacher/ground-truth variance ratio over the fractions (at 0.1)
    "S5-init-noise-params": 1.088,  # parameter variance after/before, the smallest over sigma_init > 0 (0.4)
    "F4": 0.0510,  # student minus teacher entropy (nats) under argmax, mean over the 4 teachers
    "B-soft-sampled-labels": 0.00085,  # |gap| with soft labels minus with argmax (nats), mean over teachers
}
#: spread per replicate at quick (2026-12-08): sd across teachers, or sd of a student's linearised share
QUICK_SPREAD = {
    "S5-init-noise-params": 0.0026 * np.sqrt(200),  # SE of the log ratio x sqrt(students)
    "F4": 0.0175,  # sd of the per-teacher entropy gap (24 teachers)
    "B-soft-sampled-labels": 0.00072,  # sd of the per-teacher soft-minus-argmax |gap| (24 teachers)
}


def _quick(name: str):
    exp = get_experiment(name)
    return resolve_config(exp, "quick", {})


def _t_mde(spread: float, n: int, m: int = 1) -> float:
    """MDE of a two-sided t test at level 1 - ALPHA/m with n replicates (the report's mde_two_sample)."""
    df = n - 1
    return float((tdist.ppf(1 - ALPHA / (2 * m), df) + tdist.ppf(POWER, df)) * spread / np.sqrt(n))


def test_bootstrap_teacher_mlp_quick_detects_the_paper_ratio():
    cfg = _quick("bootstrap-mlp")
    R, m = cfg.n_students, len(cfg.fractions)
    mde = mde_variance_ratio(R - 1, R - 1, "<", alpha=ALPHA / m)
    assert PAPER_EFFECT["S5-bootstrap-teacher-mlp"] < mde, (R, m, mde)  # ratios below the MDE are detected
    assert cfg.n_epochs == get_experiment("bootstrap-mlp").config_cls().n_epochs == 300  # the paper's training


def test_init_noise_params_quick_detects_the_paper_ratio():
    cfg = _quick("init-noise-mlp")
    m = sum(s > 0 for s in cfg.sigma_inits)
    mde = _t_mde(QUICK_SPREAD["S5-init-noise-params"], cfg.n_students, m)
    assert mde < abs(np.log(PAPER_EFFECT["S5-init-noise-params"])), mde
    assert cfg.n_epochs == 300  # at 100 epochs the spread has not grown yet: another effect


def test_student_entropy_quick_detects_the_paper_gaps():
    cfg = _quick("student-entropy")
    n_teachers = cfg.n_teachers * len(cfg.datasets)
    assert _t_mde(QUICK_SPREAD["F4"], n_teachers) < PAPER_EFFECT["F4"]
    assert _t_mde(QUICK_SPREAD["B-soft-sampled-labels"], n_teachers, m=2) < PAPER_EFFECT["B-soft-sampled-labels"]


TABULAR = ("teacher-noise-linear", "teacher-noise-mlp", "init-noise-mlp", "bootstrap-linear", "bootstrap-mlp",
           "student-entropy", "variance-aware-linear", "variance-aware-mlp", "adaptive-budget-linear",
           "adaptive-budget-mlp")


@pytest.mark.slow
def test_quick_decides_every_tabular_claim(tmp_path):
    """uqkd reproduce --profile quick on the tabular experiments (about 75 s with --workers auto on 2 cores):
    every tabular finding holds or is contradicted, every code check holds."""
    from uqkd.report.claims import evaluate_claims
    from uqkd.report.report import load_tables
    from uqkd.runner import run_experiment

    for name in TABULAR:
        run_experiment(name, profile="quick", out=tmp_path, workers="auto", progress=False, make_figures=False)
    tables, _ = load_tables(tmp_path)
    claims = [c for c in evaluate_claims(tables) if set(c.experiments) <= set(TABULAR)]
    assert len(claims) == 19
    undecided = {c.claim_id: c.verdict_text for c in claims
                 if c.verdict not in (("holds",) if c.code_check else ("holds", "contradicted"))}
    assert not undecided
