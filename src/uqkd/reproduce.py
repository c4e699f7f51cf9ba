"""``uqkd reproduce``: run every registered experiment of a profile, then build the report."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from .config import UserError
from .experiments import list_experiments
from .report.claims import ERROR, ClaimResult
from .report.report import build_report_and_claims
from .runner import run_experiment

__all__ = ["reproduce", "select_experiments", "exit_status", "claim_failures"]


def claim_failures(claims: Sequence[ClaimResult]) -> list[str]:
    """``"claim <id> (error: <Type>: message)"`` for every claim whose test raised."""
    return [f"claim {c.claim_id} ({ERROR}: {c.statistic.removeprefix('claim raised ')})"
            for c in claims if c.verdict == ERROR]


def exit_status(failed_experiments: Sequence[str], claims: Sequence[ClaimResult] = ()) -> int:
    """Exit status of ``uqkd reproduce``: 1 if an experiment failed or a claim raised an error, else 0.

    Verdicts (``contradicted``, ``inconclusive``, ``not computable``) never fail a run; an ``error``
    verdict does (the claim's code is broken).
    """
    return 1 if failed_experiments or claim_failures(claims) else 0


def select_experiments(only: Sequence[str] | None = None) -> list[str]:
    """Experiment names for ``--only`` filters: paper sections (``4``, ``§7``) or experiment names."""
    exps = list_experiments()
    if not only:
        return [e.name for e in exps]
    sections = {e.section for e in exps}
    names = {e.name for e in exps}
    chosen: list[str] = []
    for item in only:
        key = item.lstrip("§")
        if key in sections:
            chosen += [e.name for e in exps if e.section == key and e.name not in chosen]
        elif item in names:
            if item not in chosen:
                chosen.append(item)
        else:
            raise UserError(f"--only: unknown section or experiment {item!r}; valid sections: "
                            f"{', '.join(sorted(sections))}; experiments: {', '.join(sorted(names))}")
    return chosen


def reproduce(
    profile: str = "quick",
    out: str | Path = "results",
    only: Sequence[str] | None = None,
    workers: int | str = "auto",
    seed: int = 0,
    progress: bool = True,
    executor: str | None = None,
    ray_address: str | None = None,
) -> tuple[Path, Path, list[str]]:
    """Run (or resume) every selected experiment at ``profile`` and build the report.

    Returns
    -------
    (report.md, report.html, failures)
        ``failures`` lists the failed experiment names, then ``claim <id> (error: ...)`` for every
        claim whose code raised; the command exits non-zero when it is not empty (:func:`exit_status`).
    """
    if profile not in ("demo", "quick", "paper"):
        raise UserError(f"--profile: expected demo, quick or paper, got {profile!r}")
    names = select_experiments(only)
    failed: list[str] = []
    shared = None
    if executor not in (None, "local"):
        from .executors import make_executor

        shared = make_executor(1, executor, ray_address)  # one cluster connection for every experiment
    t_all = time.perf_counter()
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        try:
            res = run_experiment(name, profile=profile, out=out, workers=workers, seed=seed, progress=progress,
                                 executor=shared)
            print(f"[{i}/{len(names)}] {name}: {res.n_cells} cells ({res.n_computed} computed) "
                  f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        except UserError:
            raise
        except Exception as exc:  # keep going: the report lists it as not run
            failed.append(name)
            print(f"[{i}/{len(names)}] {name}: FAILED ({type(exc).__name__}: {exc})", file=sys.stderr)
            traceback.print_exc(limit=3, file=sys.stderr)
    if shared is not None:
        shared.close()
    md, html, claims = build_report_and_claims(out, expected=names)
    print(f"reproduce: {len(names) - len(failed)}/{len(names)} experiments in {time.perf_counter() - t_all:.0f}s",
          file=sys.stderr)
    errors = claim_failures(claims)
    for e in errors:
        print(f"reproduce: {e}", file=sys.stderr)
    return md, html, failed + errors
