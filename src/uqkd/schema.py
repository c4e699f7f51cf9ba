"""Result tables: their names, files and columns, declared once.

An experiment's ``run_cell`` returns rows; a row's ``record`` names the table it belongs to (no ``record``:
the ``summary`` table). The runner writes one CSV file per table (:data:`TABLES`: ``results.csv`` holds the
summary table, as it always has, so readers of the key numbers need nothing new; ``question.csv``,
``question-inter.csv``, ``trajectory.csv``, ``allocation.csv`` the others) and lists them, with a checksum each,
in ``config.json`` under ``tables``. Folders written before (one ``results.csv`` holding every table, told apart
by its ``record`` column) read the same: :func:`join_tables` gives the report and the claims the one frame
they read in both cases, and :func:`table` / :func:`summary_rows` pick a named table out of it (the one loader
call for "the summary rows", whatever the layout).

:data:`COLUMNS` gives the meaning and unit of the columns the claims and the report read; :data:`ALIASES` maps an
older name of a concept to its name here (``inter_var`` is the inter-student variance), and :func:`canonical_name`
resolves one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RECORD", "SUMMARY", "Table", "TABLES", "Column", "COLUMNS", "ALIASES", "canonical_name", "table_file",
           "split_rows", "join_tables", "table", "summary_rows", "table_names"]

#: the row field naming a row's table
RECORD = "record"
#: the table of key numbers: one row per cell (and method), what every claim reads
SUMMARY = "summary"


@dataclass(frozen=True)
class Table:
    """A named result table: its file in an experiment's folder and what one row is."""

    name: str
    file: str
    row: str


TABLES: dict[str, Table] = {t.name: t for t in (
    Table(SUMMARY, "results.csv", "one cell (and method): statistics across its students"),
    Table("question", "question.csv", "one student (or the teacher) and one question (LLM experiments)"),
    Table("question-inter", "question-inter.csv", "one method and question: variance across students (LLM)"),
    Table("trajectory", "trajectory.csv", "one student group at one training step (a learning curve)"),
    Table("allocation", "allocation.csv", "one student's teacher-sample allocation per question (budget experiments)"),
)}

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def table_file(name: str) -> str:
    """The file a table is written to: declared in :data:`TABLES`, else ``<name>.csv`` (a table name is lower-case
    letters, digits and dashes)."""
    if name in TABLES:
        return TABLES[name].file
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"record: expected a table name of lower-case letters, digits and dashes, got {name!r}")
    return f"{name}.csv"


@dataclass(frozen=True)
class Column:
    """What a column holds and its unit."""

    meaning: str
    unit: str = ""


#: the columns the claims and the report read across experiments (per-experiment columns are documented with them)
COLUMNS: dict[str, Column] = {
    "n_students": Column("students in the cell (the replicates of every across-student statistic)", "count"),
    "method": Column("distillation method (uqkd.methods)"),
    "inter_student_var": Column("variance of the students' predictions across students, averaged over test inputs "
                                "(ddof=1)", "target units squared"),
    "inter_student_var_se": Column("jackknife standard error of inter_student_var over students",
                                   "target units squared"),
    "theory_inter_student_var": Column("closed-form inter_student_var", "target units squared"),
    "mse_mean": Column("test MSE against ground truth, mean over students", "target units squared"),
    "mse_std": Column("test MSE, standard deviation over students (ddof=1)", "target units squared"),
    "mse_sem": Column("standard error of mse_mean (mse_std / sqrt(n_students))", "target units squared"),
    "sigma": Column("teacher noise variance as a fraction of Var(y_train)", "fraction"),
    "noise_var": Column("teacher noise variance sigma * Var(y_train)", "target units squared"),
    "k": Column("teacher draws per input (or per question)", "count"),
    "param_var_mc": Column("Monte-Carlo parameter variance across students, mean over parameters", "parameter units "
                           "squared"),
    "param_var_theory": Column("closed-form parameter variance, mean over parameters", "parameter units squared"),
}

#: older or alternative names of a concept -> its name in :data:`COLUMNS`
ALIASES: dict[str, str] = {
    "inter_var": "inter_student_var",
    "inter_var_se": "inter_student_var_se",
}


def canonical_name(column: str) -> str:
    """The declared name of ``column`` (itself where it has no alias)."""
    return ALIASES.get(column, column)


def split_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by table (a row's ``record``; none: ``summary``), in order, without the ``record`` field.
    The summary table comes first, then the others in order of first appearance."""
    out: dict[str, list[dict[str, Any]]] = {SUMMARY: []}
    for r in rows:
        name = r.get(RECORD, SUMMARY)
        name = SUMMARY if name is None else name
        table_file(name)  # a name that cannot be a file fails here
        out.setdefault(name, []).append({k: v for k, v in r.items() if k != RECORD})
    return out


def join_tables(tables: Mapping[str, Any], order: Sequence[str] | None = None) -> Any:
    """One frame of an experiment's tables (``{name: DataFrame}``), as a single ``results.csv`` held them: with a
    ``record`` column naming each row's table where there is more than one table, without it where the summary is
    the only one."""
    import pandas as pd

    names = [n for n in (order or tables) if n in tables]
    if names == [SUMMARY]:
        return tables[SUMMARY]
    parts = []
    for n in names:
        df = tables[n]
        parts.append(df if RECORD in df.columns else df.assign(**{RECORD: n}))
    return pd.concat(parts, ignore_index=True, sort=False)


def table_names(df: Any) -> list[str]:
    """The tables a frame holds (``summary`` alone for a frame without a ``record`` column)."""
    if RECORD not in getattr(df, "columns", ()):
        return [SUMMARY]
    return list(dict.fromkeys(SUMMARY if not isinstance(v, str) else v for v in df[RECORD]))


def table(df: Any, name: str) -> Any:
    """The rows of table ``name`` in a frame from :func:`join_tables` or an old ``results.csv`` (a frame without a
    ``record`` column is all summary rows; a summary row may also carry an empty ``record``)."""
    if RECORD not in df.columns:
        return df if name == SUMMARY else df.iloc[0:0]
    rec = df[RECORD]
    return df[(rec == name) | rec.isna()] if name == SUMMARY else df[rec == name]


def summary_rows(df: Any) -> Any:
    """The summary table of a frame (see :func:`table`)."""
    return table(df, SUMMARY)
