"""Build ``report.md`` and a self-contained ``report.html`` from results already on disk.

Reads only ``DIR/<experiment>/results.csv``, ``config.json`` and the PNG figures; never
recomputes. The claims table at the top comes from :mod:`uqkd.report.claims`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from .._io import atomic_write_text
from .claims import (
    CODE_CHECK,
    CONTRADICTED,
    DAMAGED,
    ERROR,
    HOLDS,
    INCONCLUSIVE,
    NOT_COMPUTABLE,
    NOT_RUN,
    VERDICTS,
    ClaimResult,
    evaluate_claims,
)

log = logging.getLogger("uqkd")

__all__ = ["load_tables", "load_tables_checked", "build_report", "build_report_and_claims", "claims_summary", "VERDICT_LEGEND",
           "SECTIONS", "HTML_MAX_ROWS", "md_inline", "verdict_class"]

#: each verdict and what it means (the legend under the claims tables)
_LEGEND = (
    (HOLDS, "the interval lies on the claimed side (agreement with a closed form: equivalence, the interval "
            "within the stated margin of the theory by two one-sided tests)"),
    (CONTRADICTED, "the interval excludes the claimed direction (agreement: it lies outside the margin)"),
    (INCONCLUSIVE, "the interval straddles the threshold, with the minimum detectable effect (MDE) at this run's "
                   "sample size and 80% power beside it (agreement: the smallest margin the run could establish; "
                   "LLM comparisons below 5 students per group are always inconclusive)"),
    (NOT_COMPUTABLE, "a statistic is NaN/inf or cannot be formed, with the reason"),
    (NOT_RUN, "an experiment is missing"),
    (DAMAGED, "an experiment's results are damaged (skipped, the reason shown)"),
    (ERROR, "the claim's code raised (type and message shown)"),
)

#: what each verdict means, printed under the claims tables
VERDICT_LEGEND = "Verdicts: " + "; ".join(f"`{v}` = {meaning}" for v, meaning in _LEGEND) + "."

#: the line under the "Code checks" heading
CODE_CHECK_NOTE = ("These claims check the code: no realistic mutant of it can move their verdicts, so they are "
                   "listed apart from the findings about distillation, with the verdict beside each.")

DEVIATIONS_TITLE = "Deviations from the published scripts"

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
    from ..schema import join_tables

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
    listed = meta.get("tables")
    if listed is None:  # written before one file per table: results.csv holds every table
        return _read_table(csv_path, meta.get("results_sha256"), summary=True), meta
    if not (isinstance(listed, dict) and "summary" in listed
            and all(isinstance(v, dict) and isinstance(v.get("file"), str) for v in listed.values())):
        raise _Damaged(meta_path, "tables: expected {table: {file, rows, sha256}} with a summary table")
    frames = {}
    for tname, spec in listed.items():
        fname = spec["file"]
        if tname != "summary" and ("/" in fname or "\\" in fname or not fname.endswith(".csv") or fname.startswith(".")):
            raise _Damaged(meta_path, f"tables: {tname!r} names the file {fname!r}, not a CSV file of this folder")
        path = d / fname
        if not os.path.lexists(path):
            raise _Damaged(path, f"missing (config.json lists it as the {tname} table: deleted or moved)")
        frames[tname] = _read_table(path, spec.get("sha256") if tname != "summary" else meta.get("results_sha256"),
                                    summary=tname == "summary")
    return join_tables(frames), meta


def _read_table(path: Path, want: Any, summary: bool) -> Any:
    """A result table's CSV, read only if it is whole: :class:`_Damaged` naming the damage otherwise."""
    import csv
    import hashlib
    import io

    import pandas as pd

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _Damaged(path, f"unreadable ({exc.strerror or exc})") from None
    if not raw:
        raise _Damaged(path, "empty (0 bytes)")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise _Damaged(path, f"binary data (a NUL byte at byte {nul})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Damaged(path, f"not UTF-8 text (byte {exc.start})") from None
    if not text.endswith("\n"):
        raise _Damaged(path, f"line {text.count(chr(10)) + 1} is cut short (no final newline: truncated)")
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise _Damaged(path, f"not a CSV table ({exc})") from None
    header = lines[0] if lines else []
    body = [(i, r) for i, r in enumerate(lines[1:], 2) if r]
    if len(set(header)) != len(header) or any(not h.strip() for h in header):
        raise _Damaged(path, "line 1 (the header) has an empty or repeated column name")
    if not body:
        raise _Damaged(path, "no data rows (only a header)")
    for i, r in body:
        if len(r) != len(header):
            raise _Damaged(path, f"line {i} has {len(r)} fields, the header {len(header)} (ragged)")
    if summary and "n_students" not in header:
        raise _Damaged(path, "no n_students column (a cut header, or not a uqkd results table)")
    if want is not None and hashlib.sha256(raw).hexdigest() != want:
        key = "results_sha256" if summary else "sha256 of its table"
        raise _Damaged(path, f"does not match the {key} in config.json (edited, cut short or from "
                             "another run); rerun the experiment to rebuild it from its cell records")
    try:
        return pd.read_csv(io.StringIO(text))
    except Exception as exc:  # noqa: BLE001 - any parse failure is damage
        raise _Damaged(path, f"cannot be parsed ({type(exc).__name__}: {exc})") from None


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


#: key-number rows the HTML shows before "N more rows" (a table at most this + 3 rows long is shown whole)
HTML_MAX_ROWS = 12


def _table_data(df: Any, *, max_rows: int | None = None) -> dict[str, Any]:
    """A table for the HTML template: column names, which are numeric, the formatted rows shown, how many left out."""
    import pandas as pd

    numeric = [df[c].dtype.kind in "fiu" for c in df.columns]
    rows = [["" if (not isinstance(v, str) and pd.isna(v)) else str(v) for v in r]
            for r in _fmt_df(df).itertuples(index=False, name=None)]
    shown = rows if max_rows is None or len(rows) <= max_rows + 3 else rows[:max_rows]
    return {"columns": [str(c) for c in df.columns], "numeric": numeric, "rows": shown,
            "more": len(rows) - len(shown), "total": len(rows), "titles": [_column_text(str(c)) for c in df.columns]}


def _column_text(column: str) -> str:
    """A column's meaning and unit as :mod:`uqkd.schema` declares them ("" for an undeclared column)."""
    from ..schema import COLUMNS, canonical_name

    col = COLUMNS.get(canonical_name(column))
    return "" if col is None else col.meaning + (f" [{col.unit}]" if col.unit else "")


def _columns_md(df: Any) -> str:
    """The declared columns of a key-number table, one clause each ("" if none is declared)."""
    parts = [f"`{c}`: {_column_text(str(c))}" for c in df.columns if _column_text(str(c))]
    return "Columns: " + "; ".join(parts) + "." if parts else ""


def _tables_md(meta: dict[str, Any]) -> str:
    """Which files hold the experiment's tables (from config.json; "" for a folder of one results.csv)."""
    listed = meta.get("tables")
    if not isinstance(listed, dict) or len(listed) < 2:
        return ""
    return "Tables: " + ", ".join(f"`{spec.get('file')}` ({name}, {spec.get('rows', '?')} rows)"
                                  for name, spec in listed.items() if isinstance(spec, dict)) + "."


_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")


def md_inline(text: Any) -> Markup:
    """Markdown's inline ```code``` and ``**bold**`` in ``text`` as safe HTML (``<code>``, ``<strong>``).

    The text is HTML-escaped first and only then are the two markups converted, so nothing in it can
    inject markup; backticks without a partner and any other markdown stay as written.
    """
    out = []
    for i, part in enumerate(_CODE_SPAN.split(str(text))):
        if i % 2:
            out.append(f"<code>{escape(part)}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", str(escape(part))))
    return Markup("".join(out))


def verdict_class(verdict: str) -> str:
    """The CSS class of a verdict's badge: ``v-holds``, ``v-not-run``, ... (one per :data:`VERDICTS`)."""
    return "v-" + re.sub(r"[^a-z0-9]+", "-", str(verdict).lower()).strip("-")


def _claims_frame(results: list[ClaimResult]) -> Any:
    import pandas as pd

    rows = [
        {"id": r.claim_id, "§": r.section, "claim": r.claim, "statistic": r.statistic, "value": r.value,
         "interval": r.interval, "verdict": r.verdict_text}
        for r in results
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


def _verdict_counts(results: list[ClaimResult]) -> list[dict[str, Any]]:
    """The counts of a section's summary line: holds, contradicted, inconclusive always, the others when present."""
    out = []
    for v in VERDICTS:
        n = sum(r.verdict == v for r in results)
        if n or v in (HOLDS, CONTRADICTED, INCONCLUSIVE):
            label = "hold" if v == HOLDS else ("error" if n == 1 else "errors") if v == ERROR else v
            out.append({"verdict": v, "n": n, "text": f"{n} {label}"})
    return out


def build_report(root: str | Path, *, expected: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``root/report.md`` and ``root/report.html``; return their paths (see :func:`build_report_and_claims`)."""
    md, html_path, _ = build_report_and_claims(root, expected=expected)
    return md, html_path


def _deviation_rows(name: str, exp: Any) -> list[dict[str, str]]:
    def one_line(text: str) -> str:  # a markdown table cell holds no line break
        return " ".join(str(text).split())

    return [{"experiment": name, "setting": one_line(d.setting), "published script": one_line(d.published),
             "uqkd": one_line(d.uqkd), "why": one_line(d.why)} for d in (getattr(exp, "deviations", ()) or ())]


def _deviations_md(rows: list[dict[str, str]], *, with_experiment: bool) -> str:
    import pandas as pd

    cols = (["experiment"] if with_experiment else []) + ["setting", "published script", "uqkd", "why"]
    return _md_table(pd.DataFrame(rows, columns=cols))


def _render_html(ctx: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = md_inline
    env.filters["plain"] = lambda text: re.sub(r"`|\*\*", "", str(text))  # for attributes (tooltips)
    env.filters["vclass"] = verdict_class
    return env.get_template("report.html.j2").render(**ctx)


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
    damaged; the claims that read it get the verdict ``damaged`` with the reason. Claims of kind
    ``code check`` are listed in their own section after the findings. The HTML is rendered from
    ``templates/report.html.j2``: coloured verdict badges, a summary line per section, a table of
    contents, "not run" claims folded into one line per section, wide tables in scrolling boxes,
    long key-number tables cut to :data:`HTML_MAX_ROWS` rows (all rows are in ``report.md``).
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
    profiles = sorted({m.get("profile", "?") for m in metas.values()})
    intro = (f"Results in `{root}`; profile(s): {', '.join(profiles)}. Verdicts are computed from the numbers "
             "in the result tables, never written by hand: a claim the data contradict is reported as "
             "contradicted, one the data cannot decide as inconclusive with the effect this run could detect.")
    md += [intro, ""]
    findings = [c for c in claims if not c.code_check]
    checks = [c for c in claims if c.code_check]
    parts = [("claims-paper", "Claims of the paper", [c for c in findings if not c.beyond]),
             ("claims-beyond", "Beyond the paper", [c for c in findings if c.beyond])]
    if checks:
        parts.append(("code-checks", "Code checks", checks))
    claim_sections = []
    for anchor, title, part in parts:
        summary = f"{title}: {claims_summary(part)}"
        md += [f"## {title}", "", summary, ""]
        if anchor == "code-checks":
            md += [CODE_CHECK_NOTE, ""]
        md += [_md_table(_claims_frame(part)), ""]
        not_run = [c for c in part if c.verdict == NOT_RUN]
        claim_sections.append({
            "id": anchor, "title": title, "counts": _verdict_counts(part), "n": len(part),
            "rows": [c for c in part if c.verdict != NOT_RUN], "not_run": not_run,
            "not_run_missing": sorted({e for c in not_run for e in c.experiments if e not in tables}),
        })
    md += [VERDICT_LEGEND, ""]
    errors = [c for c in claims if c.verdict == ERROR]
    errors_msg = damaged_msg = ""
    if errors:
        errors_msg = "Claims that raised an error: " + "; ".join(f"{c.claim_id} ({c.statistic})" for c in errors)
        md += [f"**{errors_msg}**", ""]
    if damaged:
        damaged_msg = "Damaged results, skipped (rerun the experiment to rebuild them): " + "; ".join(
            f"{n} ({why})" for n, why in damaged.items())
        md += [f"**{damaged_msg}**", ""]
    missing = [e for e in (expected or []) if e not in tables and e not in damaged]
    if missing:
        md += [f"Not run: {', '.join(missing)}", ""]
    by_section: dict[str, list[str]] = {}
    for name in tables:
        sec = metas[name].get("section") or (exps[name].section if name in exps else "?")
        by_section.setdefault(str(sec), []).append(name)
    deviations = [row for sec in sorted(by_section) for name in by_section[sec]
                  for row in _deviation_rows(name, exps.get(name))]
    exp_sections = []
    for sec in sorted(by_section):
        title = f"§{sec} {SECTIONS.get(sec, '')}".strip()
        md += [f"## {title}", ""]
        items = []
        for name in by_section[sec]:
            meta = metas[name]
            exp = exps.get(name)
            desc = exp.description if exp is not None else ""
            md += [f"### `{name}`", "", desc, ""]
            notes = getattr(exp, "notes", "") if exp is not None else ""
            if notes:
                md += [notes, ""]
            figures = []
            for png in sorted((root / name).glob("*.png")):
                md += [f"![{png.stem}]({name}/{png.name})", ""]
                figures.append({"alt": png.stem, "b64": base64.b64encode(png.read_bytes()).decode()})
            key_error, key, extra_tables = "", None, []
            try:
                summ = _summary(name, tables[name])
                extra = _extra_tables(name, tables[name])
            except Exception as exc:  # noqa: BLE001 - a table the summary cannot read: say so, build the rest
                key_error = f"Key numbers could not be built from this table ({type(exc).__name__}: {exc})."
                log.warning("report: %s: %s", root / name / "results.csv", key_error)
                md += [key_error, ""]
            else:
                md += ["Key numbers:", "", _md_table(summ), ""]
                md += [line for text in (_columns_md(summ), _tables_md(meta)) if text for line in (text, "")]
                key = _table_data(summ, max_rows=HTML_MAX_ROWS)
                for label, tbl in extra.items():
                    md += [f"{label}:", "", _md_table(tbl), ""]
                    extra_tables.append({"label": label, "table": _table_data(tbl, max_rows=HTML_MAX_ROWS)})
            devs = _deviation_rows(name, exp)
            md += ["Deviations from the published script:" + ("" if devs else " none listed."), ""]
            if devs:
                md += [_deviations_md(devs, with_experiment=False), ""]
            cfg = meta.get("config", {})
            vers = meta.get("versions", {})
            settings = (f"profile `{meta.get('profile', '?')}`, seed {meta.get('seed', '?')}, "
                        + ", ".join(f"{k}={v}" for k, v in cfg.items())
                        + "; versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if k != "platform"))
            md += [f"Settings: {settings}", ""]
            items.append({
                "name": name, "id": f"exp-{name}", "description": desc, "notes": notes, "figures": figures,
                "claims": [c for c in claims if name in c.experiments], "key": key, "key_error": key_error,
                "extra": extra_tables, "deviations": devs, "settings": settings,
            })
        exp_sections.append({"id": f"sec-{sec}", "title": title, "experiments": items})
    md += [f"## {DEVIATIONS_TITLE}", ""]
    md += [_deviations_md(deviations, with_experiment=True) if deviations
           else "None listed for the experiments in this report.", ""]
    ctx = {
        "intro": intro, "claim_sections": claim_sections, "legend": _LEGEND, "code_check": CODE_CHECK,
        "code_check_note": CODE_CHECK_NOTE, "errors_msg": errors_msg, "damaged": damaged,
        "damaged_msg": damaged_msg, "missing": missing, "deviations_title": DEVIATIONS_TITLE,
        "deviations": deviations, "exp_sections": exp_sections,
        "deviation_groups": [{"experiment": e["name"], "rows": e["deviations"]}
                             for sec in exp_sections for e in sec["experiments"] if e["deviations"]],
    }
    md_path, html_path = root / "report.md", root / "report.html"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, _render_html(ctx))
    return md_path, html_path, claims
