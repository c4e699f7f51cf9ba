"""Beyond the paper, section 4: ridge students' inter-student variance against the closed form (``B-ridge-closed-form``).

Reads ``ridge-teacher-noise-linear`` (:mod:`uqkd.experiments.ridge`). Its mutant is declared here too
(:data:`MUTANTS`), so the mutation test (:mod:`uqkd.report.mutants`) finds it by discovery.
"""

from __future__ import annotations

from typing import Any

from .claims import ClaimSpec, Mutant, register_claim
from .stats import NotComputable, Verdict, all_of, bonferroni_level, equivalence_test, first_mde

EXPERIMENT = "ridge-teacher-noise-linear"
#: agreement with the closed form within +-10% of it (the margin of section 4's F1)
MARGIN = 0.10


def _ridge_closed_form(tables: dict[str, Any]) -> tuple[Any, ...]:
    d = tables[EXPERIMENT]
    d = d[d["sigma"] > 0]
    if d.empty:
        raise NotComputable("no cell with sigma > 0")
    tests = []
    for _, r in d.iterrows():
        theory = float(r["theory_inter_student_var"])
        if not theory > 0:
            raise NotComputable(f"closed form {theory} at sigma={r['sigma']:g}, lambda={r['lam']:g}")
        tests.append(equivalence_test(f"sigma={r['sigma']:g}, lambda={r['lam']:g}",
                                      float(r["inter_student_var"]) / theory, float(r["inter_student_var_se"]) / theory,
                                      int(r["n_students"]) - 1, 1.0, MARGIN, m=len(d), n=int(r["n_students"])))
    worst = max(tests, key=lambda x: abs(x.estimate - 1))
    lvl = 1 - 2 * (1 - bonferroni_level(len(tests)))
    return (f"ratio of the Monte-Carlo inter-student variance of the test predictions (jackknife SE over students) "
            f"to the closed form mean_x x' sigma^2 A X'X A x, per (sigma, lambda) cell; equivalence within "
            f"+-{MARGIN:.0%} (two one-sided tests, {lvl:.2%} intervals, Bonferroni over {len(tests)} cells)",
            f"least favourable {worst.text()}",
            f"ratios {min(x.estimate for x in tests):.3g}..{max(x.estimate for x in tests):.3g}; holds if every "
            f"interval lies within [{1 - MARGIN:g}, {1 + MARGIN:g}]",
            Verdict(all_of(x.verdict for x in tests), mde=first_mde(tests)))


register_claim(ClaimSpec(
    "B-ridge-closed-form", "4", "Teacher noise propagates into ridge students as sigma^2 A X'X A, "
                                "A = (X'X + lambda P)^-1 (the shrunk counterpart of F1)",
    (EXPERIMENT,), _ridge_closed_form, beyond=True))


def _penalty_per_sample(setattr_: Any) -> None:
    from ..experiments import ridge

    fit = ridge.fit_ridge
    setattr_(ridge, "fit_ridge", lambda D, Y, lam: fit(D, Y, lam * len(D)))


MUTANTS: tuple[Mutant, ...] = (
    Mutant("ridge-penalty-per-sample", "the students' ridge penalty scaled by the sample size (a per-sample "
           "loss convention) while the closed form uses the total-loss one", (EXPERIMENT,), ("B-ridge-closed-form",),
           _penalty_per_sample),
)

#: the mutation test's run size: the quick profile
MUTANT_SIZES: dict[str, dict[str, Any]] = {EXPERIMENT: {}}

__all__ = ["MARGIN", "MUTANTS", "MUTANT_SIZES"]
