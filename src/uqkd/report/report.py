"""Build ``report.md`` and a self-contained ``report.html`` from results already on disk.

Reads only ``DIR/<experiment>/results.csv``, ``config.json`` and the PNG figures; never
recomputes. The claims table at the top comes from :mod:`uqkd.report.claims`.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from .claims import (
    CONTRADICTED,
    DAMAGED,
    ERROR,
    HOLDS,
    INCONCLUSIVE,
    NOT_COMPUTABLE,
    NOT_RUN,
    ClaimResult,
    evaluate_claims,
)

log = logging.getLogger("uqkd")

__all__ = ["load_tables", "load_tables_checked", "build_report", "build_report_and_claims", "claims_summary", "VERDICT_LEGEND", "SECTIONS"]

#: what each verdict means, printed under the claims tables
VERDICT_LEGEND = (
    "Verdicts: `holds` = the interval lies on the claimed side (closed forms: every Monte-Carlo estimate within "
    "its 95% band); `contradicted` = the interval excludes the claimed direction (closed forms: outside the "
    "99.9% band); `inconclusive` = the interval straddles the threshold, with the minimum detectable effect "
    "(MDE) at this run's sample size and 80% power beside it; `not computable` = a statistic is NaN/inf or "
    "cannot be formed, with the reason; `not run` = an experiment is missing; `damaged` = an experiment's "
    "results are damaged (skipped, the reason shown); `error` = the claim's code raised (type and message shown)."
)

SECTIONS = {
    "4": "Teacher output uncertainty",
    "5": "Student initialisation uncertainty",
    "6": "Student output uncertainty",
    "7": "Variance-aware distillation",
}


def load_tables(root: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``({experiment: DataFrame}, {experiment: config.json})`` for every intact experiment under ``root``.

    A damaged experiment (see :func:`load_tables_checked`) is left out with a one-line warning.
    """
    tables, metas, _ = load_tables_checked(root)
    return tables, metas


def load_tables_checked(root: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, str]]:
    """Like :func:`load_tables`, plus ``{experiment: why it was skipped}`` for damaged experiments.

    An experiment is skipped, with one warning line naming the file and the damage, when its
    ``results.csv`` is missing beside a ``config.json``, unreadable, not UTF-8, empty, binary, has no
    data rows, a cut or repeated header, a row of another width than the header, a last line cut
    short, or does not match the ``results_sha256`` recorded in ``config.json``; or when
    ``config.json`` is unreadable, not JSON or not this experiment's record.
    """
    root = Path(root)
    tables: dict[str, Any] = {}
    metas: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    dirs = sorted({p.parent for pat in ("*/results.csv", "*/config.json") for p in root.glob(pat)})
    for d in dirs:
        name = d.name
        try:
            tables[name], metas[name] = _load_one(d)
        except _Damaged as exc:
            skipped[name] = str(exc)
            log.warning("report: skipping %s: %s", exc.path, exc)
    return tables, metas, skipped


class _Damaged(Exception):
    def __init__(self, path: Path, why: str) -> None:
        super().__init__(why)
        self.path = path


def _load_one(d: Path) -> tuple[Any, dict[str, Any]]:
    import csv
    import hashlib
    import io

    import pandas as pd

    name = d.name
    csv_path, meta_path = d / "results.csv", d / "config.json"
    meta: dict[str, Any] = {}
    if os.path.lexists(meta_path):
        try:
            meta = json.loads(meta_path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise _Damaged(meta_path, f"unreadable ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise _Damaged(meta_path, f"not UTF-8 text (byte {exc.start})") from None
        except ValueError as exc:
            raise _Damaged(meta_path, f"not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise _Damaged(meta_path, f"expected a JSON object, got {type(meta).__name__}")
        if meta.get("experiment", name) != name:
            raise _Damaged(meta_path, f"records experiment {meta.get('experiment')!r}, not {name!r}")
        for key, typ in (("config", dict), ("versions", dict), ("results_sha256", str)):
            if key in meta and not isinstance(meta[key], typ):
                raise _Damaged(meta_path, f"{key} is {type(meta[key]).__name__}, expected {typ.__name__}")
    if not os.path.lexists(csv_path):
        raise _Damaged(csv_path, "missing (config.json is there: the results were deleted or moved)")
    if not os.path.lexists(meta_path):
        raise _Damaged(meta_path, "missing (results.csv is there without the record of its settings and "
                                  "checksum: rerun the experiment to rebuild both from its cell records)")
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise _Damaged(csv_path, f"unreadable ({exc.strerror or exc})") from None
    if not raw:
        raise _Damaged(csv_path, "empty (0 bytes)")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise _Damaged(csv_path, f"binary data (a NUL byte at byte {nul})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Damaged(csv_path, f"not UTF-8 text (byte {exc.start})") from None
    if not text.endswith("\n"):
        raise _Damaged(csv_path, f"line {text.count(chr(10)) + 1} is cut short (no final newline: truncated)")
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise _Damaged(csv_path, f"not a CSV table ({exc})") from None
    header = lines[0] if lines else []
    body = [(i, r) for i, r in enumerate(lines[1:], 2) if r]
    if len(set(header)) != len(header) or any(not h.strip() for h in header):
        raise _Damaged(csv_path, "line 1 (the header) has an empty or repeated column name")
    if not body:
        raise _Damaged(csv_path, "no data rows (only a header)")
    for i, r in body:
        if len(r) != len(header):
            raise _Damaged(csv_path, f"line {i} has {len(r)} fields, the header {len(header)} (ragged)")
    if "n_students" not in header:
        raise _Damaged(csv_path, "no n_students column (a cut header, or not a uqkd results table)")
    want = meta.get("results_sha256")
    if want is not None and hashlib.sha256(raw).hexdigest() != want:
        raise _Damaged(csv_path, "does not match the results_sha256 in config.json (edited, cut short or from "
                                 "another run); rerun the experiment to rebuild it from its cell records")
    try:
        df = pd.read_csv(io.StringIO(text))
    except Exception as exc:  # noqa: BLE001 - any parse failure is damage
        raise _Damaged(csv_path, f"cannot be parsed ({type(exc).__name__}: {exc})") from None
    return df, meta


def _summary(name: str, df: Any) -> Any:
    from ..experiments import EXPERIMENTS, list_experiments

    list_experiments()
    exp = EXPERIMENTS.get(name)
    if exp is not None and getattr(exp, "summary", None) is not None:
        return exp.summary(df)
    return df.head(30)


def _extra_tables(name: str, df: Any) -> dict[str, Any]:
    """The experiment's further labelled tables (``Experiment.tables``), e.g. fits across cells."""
    from ..experiments import EXPERIMENTS, list_experiments

    list_experiments()
    exp = EXPERIMENTS.get(name)
    if exp is None or getattr(exp, "tables", None) is None:
        return {}
    return exp.tables(df)


def _fmt_df(df: Any) -> Any:
    out = df.copy()
    for c in out.columns:
        if out[c].dtype.kind == "f":
            out[c] = out[c].map(lambda v: "" if not np.isfinite(v) else f"{v:.4g}")
    return out


def _md_table(df: Any) -> str:
    df = _fmt_df(df)
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.tolist()) + " |")
    return "\n".join(lines)


def _html_table(df: Any) -> str:
    return _fmt_df(df).to_html(index=False, border=0, classes="tbl", escape=True)


def _claims_frame(results: list[ClaimResult], beyond: bool) -> Any:
    import pandas as pd

    rows = [
        {"id": r.claim_id, "§": r.section, "claim": r.claim, "statistic": r.statistic, "value": r.value,
         "interval": r.interval, "verdict": r.verdict_text}
        for r in results if r.beyond == beyond
    ]
    return pd.DataFrame(rows, columns=["id", "§", "claim", "statistic", "value", "interval", "verdict"])


def claims_summary(results: list[ClaimResult]) -> str:
    """``"3 hold, 1 contradicted, 2 inconclusive, 0 errors (6 evaluated; 1 not computable; 1 on damaged results;
    2 not run)."``"""
    n = {v: sum(r.verdict == v for r in results) for v in (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_COMPUTABLE,
                                                            NOT_RUN, DAMAGED, ERROR)}
    evaluated = len(results) - n[NOT_RUN] - n[DAMAGED]
    extra = [f"{n[NOT_COMPUTABLE]} not computable"] if n[NOT_COMPUTABLE] else []
    extra += [f"{n[DAMAGED]} on damaged results"] if n[DAMAGED] else []
    extra += [f"{n[NOT_RUN]} not run"] if n[NOT_RUN] else []
    return (f"{n[HOLDS]} hold, {n[CONTRADICTED]} contradicted, {n[INCONCLUSIVE]} inconclusive, "
            f"{n[ERROR]} error{'' if n[ERROR] == 1 else 's'} ({evaluated} evaluated"
            + "".join(f"; {e}" for e in extra) + ").")


def build_report(root: str | Path, *, expected: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``root/report.md`` and ``root/report.html``; return their paths (see :func:`build_report_and_claims`)."""
    md, html_path, _ = build_report_and_claims(root, expected=expected)
    return md, html_path


def build_report_and_claims(root: str | Path, *, expected: list[str] | None = None
                            ) -> tuple[Path, Path, list[ClaimResult]]:
    """Write ``root/report.md`` and ``root/report.html``; return their paths and the evaluated claims.

    Parameters
    ----------
    root : path
        A results directory holding ``<experiment>/results.csv`` folders.
    expected : list of str, optional
        Experiments that should be present; missing ones are listed as not run.

    A damaged experiment (:func:`load_tables_checked`) is skipped with a warning and listed as
    damaged; the claims that read it get the verdict ``damaged`` with the reason.
    """
    from ..config import UserError
    from ..experiments import list_experiments

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"report: results directory not found: {str(root)!r}")
    tables, metas, damaged = load_tables_checked(root)
    if not tables and not damaged:
        raise UserError(f"report: no results found under {str(root)!r} (expected <experiment>/results.csv)")
    claims = evaluate_claims(tables, damaged=damaged)
    exps = {e.name: e for e in list_experiments()}
    md: list[str] = ["# uqkd reproduction report", ""]
    h: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'><title>uqkd reproduction report</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}",
        ".tbl{border-collapse:collapse;font-size:13px;margin:1em 0}.tbl td,.tbl th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left;vertical-align:top}img{max-width:100%;border:1px solid #eee}"
        "code{background:#f4f4f4;padding:0 3px}</style></head><body>",
        "<h1>uqkd reproduction report</h1>",
    ]
    profiles = sorted({m.get("profile", "?") for m in metas.values()})
    intro = (f"Results in `{root}`; profile(s): {', '.join(profiles)}. Verdicts are computed from the numbers "
             "in the result tables, never written by hand: a claim the data contradict is reported as "
             "contradicted, one the data cannot decide as inconclusive with the effect this run could detect.")
    md += [intro, ""]
    h.append(f"<p>{html.escape(intro)}</p>")
    paper = [c for c in claims if not c.beyond]
    beyond = [c for c in claims if c.beyond]
    s_paper, s_beyond = f"Claims of the paper: {claims_summary(paper)}", f"Beyond the paper: {claims_summary(beyond)}"
    errors = [c for c in claims if c.verdict == ERROR]
    md += ["## Claims of the paper", "", s_paper, "", _md_table(_claims_frame(claims, False)), ""]
    h += ["<h2>Claims of the paper</h2>", f"<p>{html.escape(s_paper)}</p>", _html_table(_claims_frame(claims, False))]
    md += ["## Beyond the paper", "", s_beyond, "", _md_table(_claims_frame(claims, True)), "", VERDICT_LEGEND, ""]
    h += ["<h2>Beyond the paper</h2>", f"<p>{html.escape(s_beyond)}</p>", _html_table(_claims_frame(claims, True)),
          f"<p><small>{html.escape(VERDICT_LEGEND)}</small></p>"]
    if errors:
        msg = "Claims that raised an error: " + "; ".join(f"{c.claim_id} ({c.statistic})" for c in errors)
        md += [f"**{msg}**", ""]
        h.append(f"<p><strong>{html.escape(msg)}</strong></p>")
    if damaged:
        msg = "Damaged results, skipped (rerun the experiment to rebuild them): " + "; ".join(
            f"{n} ({why})" for n, why in damaged.items())
        md += [f"**{msg}**", ""]
        h.append(f"<p><strong>{html.escape(msg)}</strong></p>")
    missing = [e for e in (expected or []) if e not in tables and e not in damaged]
    if missing:
        md += [f"Not run: {', '.join(missing)}", ""]
        h.append(f"<p>Not run: {html.escape(', '.join(missing))}</p>")
    by_section: dict[str, list[str]] = {}
    for name in tables:
        sec = metas[name].get("section") or (exps[name].section if name in exps else "?")
        by_section.setdefault(str(sec), []).append(name)
    for sec in sorted(by_section):
        title = f"§{sec} {SECTIONS.get(sec, '')}".strip()
        md += [f"## {title}", ""]
        h.append(f"<h2>{html.escape(title)}</h2>")
        for name in by_section[sec]:
            meta = metas[name]
            desc = exps[name].description if name in exps else ""
            md += [f"### `{name}`", "", desc, ""]
            h += [f"<h3><code>{html.escape(name)}</code></h3>", f"<p>{html.escape(desc)}</p>"]
            notes = getattr(exps.get(name), "notes", "") if name in exps else ""
            if notes:
                md += [notes, ""]
                h.append(f"<p>{html.escape(notes)}</p>")
            for png in sorted((root / name).glob("*.png")):
                md += [f"![{png.stem}]({name}/{png.name})", ""]
                b64 = base64.b64encode(png.read_bytes()).decode()
                h.append(f"<p><img alt='{html.escape(png.stem)}' src='data:image/png;base64,{b64}'></p>")
            try:
                summ = _summary(name, tables[name])
                extra = _extra_tables(name, tables[name])
            except Exception as exc:  # noqa: BLE001 - a table the summary cannot read: say so, build the rest
                msg = f"Key numbers could not be built from this table ({type(exc).__name__}: {exc})."
                log.warning("report: %s: %s", root / name / "results.csv", msg)
                md += [msg, ""]
                h.append(f"<p>{html.escape(msg)}</p>")
            else:
                md += ["Key numbers:", "", _md_table(summ), ""]
                h += ["<p>Key numbers:</p>", _html_table(summ)]
                for label, tbl in extra.items():
                    md += [f"{label}:", "", _md_table(tbl), ""]
                    h += [f"<p>{html.escape(label)}:</p>", _html_table(tbl)]
            cfg = meta.get("config", {})
            vers = meta.get("versions", {})
            settings = (f"profile `{meta.get('profile', '?')}`, seed {meta.get('seed', '?')}, "
                        + ", ".join(f"{k}={v}" for k, v in cfg.items())
                        + "; versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if k != "platform"))
            md += [f"Settings: {settings}", ""]
            h.append(f"<p><small>Settings: {html.escape(settings)}</small></p>")
    h.append("</body></html>")
    md_path, html_path = root / "report.md", root / "report.html"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, "\n".join(h))
    return md_path, html_path, claims
