"""Question answering data with ground truth: a country-facts set built offline, and user JSONL/JSON files.

Every item has an id, a question, a reference answer and the accepted answer aliases used for
exact-match accuracy and the hallucination rate (PAPER.md, "Metrics").

The default set is built from the ``countryinfo`` package (no network): capitals, continents
(regions), demonyms and the reverse capital question. The train/eval split is a deterministic
function of each item's id and the seed, so adding or removing items never moves the others.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._seeding import key_to_int
from .._validation import check_float
from ..config import UserError

__all__ = [
    "QAItem",
    "QA_KINDS",
    "countryinfo_qa",
    "split_qa",
    "load_qa",
    "load_prompts",
    "read_utf8",
    "save_qa_jsonl",
    "normalize_answer",
    "contains_alias",
    "exact_match",
]

QA_KINDS = ("capital", "continent", "demonym", "country-of-capital")

_REGION_ALIASES = {
    "Americas": ("Americas", "America", "North America", "South America", "Central America", "Caribbean"),
    "Europe": ("Europe",),
    "Asia": ("Asia",),
    "Africa": ("Africa",),
    "Oceania": ("Oceania", "Australia", "Pacific"),
    "Antarctic": ("Antarctica", "Antarctic"),
}


@dataclass(frozen=True)
class QAItem:
    """One question with its reference answer and accepted aliases.

    Attributes
    ----------
    id : str
        Stable identifier (seeds and splits derive from it).
    question : str
    answer : str or None
        Reference answer (embedded for the embedding-space metrics); None for a prompt without one
        (open-ended instruction data): the reference-based metrics skip it.
    aliases : tuple of str
        Accepted answers for exact match and hallucination; always contains ``answer``.
    """

    id: str
    question: str
    answer: str | None
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise ValueError(f"question: expected non-empty text for item {self.id!r}")
        al = tuple(dict.fromkeys(a for a in (self.answer, *self.aliases) if a and a.strip()))
        object.__setattr__(self, "aliases", al)

    @property
    def has_reference(self) -> bool:
        """Whether the item has a reference answer (the reference-based metrics need one)."""
        return self.answer is not None

    def to_dict(self) -> dict[str, Any]:
        if self.answer is None:
            return {"id": self.id, "question": self.question}
        return {"id": self.id, "question": self.question, "answer": self.answer, "aliases": list(self.aliases)}


def normalize_answer(text: str) -> str:
    """Lower-case, strip accents, punctuation, articles and extra spaces (SQuAD-style normalisation).

    Examples
    --------
    >>> normalize_answer("  The Paris!  ")
    'paris'
    """
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    t = re.sub(r"[^\w\s]", " ", t)
    t = re.sub(r"\b(a|an|the)\b", " ", t)
    return " ".join(t.split())


def contains_alias(answer: str, aliases: Sequence[str]) -> bool:
    """Whether the normalised answer contains a normalised alias as a whole-word phrase."""
    a = f" {normalize_answer(answer)} "
    return any(n and f" {n} " in a for n in (normalize_answer(x) for x in aliases))


def exact_match(answer: str, aliases: Sequence[str]) -> bool:
    """Whether the answer's first line, normalised, equals a normalised alias, or the answer's
    first sentence ends with ``is <alias>`` (e.g. "The capital of France is Paris.")."""
    first = answer.strip().split("\n", 1)[0] if answer.strip() else ""
    sent = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    n = normalize_answer(sent)
    for x in aliases:
        nx = normalize_answer(x)
        if nx and (n == nx or n.endswith(f" is {nx}")):
            return True
    return False


def _countries() -> list[Any]:
    try:
        import countryinfo
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError(
            "the default QA set needs the 'countryinfo' package: pip install 'uqkd[llm]' "
            "(or pass your own --data QA.jsonl)"
        ) from exc
    return list(countryinfo.all_countries())


def countryinfo_qa(kinds: Iterable[str] = QA_KINDS) -> list[QAItem]:
    """Country-fact questions with ground truth from the offline ``countryinfo`` package.

    Parameters
    ----------
    kinds : iterable of str
        Any of ``capital``, ``continent``, ``demonym``, ``country-of-capital``.

    Returns
    -------
    list of QAItem, sorted by id (deterministic).
    """
    kinds = tuple(kinds)
    for k in kinds:
        if k not in QA_KINDS:
            raise UserError(f"qa kinds: expected any of {', '.join(QA_KINDS)}; got {k!r}")
    items: dict[str, QAItem] = {}
    for c in _countries():
        try:
            name = c.name()
            info = c.info()
        except Exception:  # noqa: BLE001 - a broken record is skipped, never fatal
            continue
        iso = (info.get("ISO") or {}).get("alpha3") or name
        alts = tuple(a for a in (info.get("altSpellings") or []) if isinstance(a, str) and len(a) > 3)
        capital = info.get("capital")
        if isinstance(capital, list):
            capital = capital[0] if capital else None
        if not isinstance(capital, str):
            capital = None
        region = info.get("region")
        demonym = info.get("demonym") if isinstance(info.get("demonym"), str) else None
        if "capital" in kinds and capital:
            items[f"capital:{iso}"] = QAItem(f"capital:{iso}", f"What is the capital of {name}?", capital, (capital,))
        if "country-of-capital" in kinds and capital:
            items[f"country-of-capital:{iso}"] = QAItem(
                f"country-of-capital:{iso}", f"{capital} is the capital of which country?", name, (name, *alts)
            )
        if "continent" in kinds and region in _REGION_ALIASES:
            items[f"continent:{iso}"] = QAItem(
                f"continent:{iso}", f"On which continent is {name}?", region, _REGION_ALIASES[region]
            )
        if "demonym" in kinds and demonym:
            items[f"demonym:{iso}"] = QAItem(
                f"demonym:{iso}", f"What is the demonym for people from {name}?", demonym, (demonym,)
            )
    # Drop ambiguous duplicate questions (same text, different answers).
    by_q: dict[str, list[QAItem]] = {}
    for it in items.values():
        by_q.setdefault(it.question, []).append(it)
    return sorted((v[0] for v in by_q.values() if len(v) == 1), key=lambda i: i.id)


def split_qa(items: Sequence[QAItem], eval_fraction: float = 0.2, seed: int = 0) -> tuple[list[QAItem], list[QAItem]]:
    """Deterministic train/eval split by a hash of (seed, item id).

    An item's side depends only on its id and the seed, never on the other items. Both lists
    are ordered by the same hash (a seeded shuffle), so taking the first n is a random subset.

    Returns
    -------
    train, eval : lists of QAItem
    """
    check_float(eval_fraction, "eval_fraction", min_value=0.0, max_value=1.0)

    def h(it: QAItem) -> int:
        return key_to_int(f"{seed}|{it.id}")

    ordered = sorted(items, key=lambda it: (h(it), it.id))
    cut = int(eval_fraction * 2**32)
    train = [it for it in ordered if key_to_int(f"split|{seed}|{it.id}") >= cut]
    test = [it for it in ordered if key_to_int(f"split|{seed}|{it.id}") < cut]
    return train, test


#: prompt columns recognised without --prompt-column, in this order
PROMPT_COLUMNS = ("question", "prompt", "messages")
#: reference columns recognised without --reference-column, in this order
REFERENCE_COLUMNS = ("answer", "completion")
#: file suffix -> the ``datasets`` builder that reads it
_DATASETS_BUILDERS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow"}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def _content(m: Any) -> str | None:
    """The text of a chat message's ``content`` (a string, or a list of ``{"type": "text", "text"}`` parts)."""
    c = m.get("content") if isinstance(m, dict) else None
    if isinstance(c, str):
        return c
    if isinstance(c, list) and all(isinstance(x, dict) for x in c):
        return "".join(str(x.get("text") or "") for x in c if x.get("type", "text") == "text")
    return None


def _check_messages(msgs: list[Any], where: str, col: str) -> None:
    if not msgs or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and _content(m) is not None
                           for m in msgs):
        raise UserError(f"{where}: {col!r}: expected text or a non-empty list of chat messages "
                        "({'role': ..., 'content': ...})")


def _prompt_from_messages(msgs: list[Any], where: str, col: str) -> tuple[str, str | None]:
    """(the last user turn, the assistant turn that follows it or None)."""
    _check_messages(msgs, where, col)
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if not users:
        raise UserError(f"{where}: {col!r}: no user turn (the prompt is the last user message)")
    i = users[-1]
    ref = next((_content(m) for m in msgs[i + 1:] if m["role"] == "assistant"), None)
    return _content(msgs[i]) or "", ref


def _reference_from_value(v: Any, where: str, col: str) -> str | None:
    if v is None or (isinstance(v, float) and v != v):  # null, or an empty CSV cell
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        _check_messages(v, where, col)
        said = [_content(m) for m in v if m["role"] == "assistant"]
        return said[-1] if said else None
    raise UserError(f"{where}: {col!r}: expected text or a list of chat messages, got {type(v).__name__}")


def _item_from_row(row: dict[str, Any], where: str, index: int, pcol: str, rcol: str | None) -> QAItem:
    pv = row.get(pcol)
    ref = None
    if isinstance(pv, list):
        q, ref = _prompt_from_messages(pv, where, pcol)
    else:
        q = pv if isinstance(pv, str) else None
    if q is None or not q.strip():
        raise UserError(f"{where}: missing or empty {pcol!r}")
    if rcol is not None and row.get(rcol) is not None:  # an explicit reference wins over a trailing assistant turn
        ref = _reference_from_value(row.get(rcol), where, rcol)
    aliases = row.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list) or not all(isinstance(x, str) for x in aliases):
        raise UserError(f"{where}: 'aliases' must be a list of strings")
    qid = row.get("id")
    qid = f"q{index:06d}" if qid is None or qid == "" else qid
    return QAItem(str(qid), q.strip(), ref.strip() if ref is not None else None, tuple(aliases))


def _resolve_columns(columns: Sequence[str], source: str, prompt_column: str | None,
                     reference_column: str | None) -> tuple[str, str | None]:
    avail = ", ".join(map(str, columns)) or "none"
    if prompt_column:
        if prompt_column not in columns:
            raise UserError(f"--prompt-column: no column {prompt_column!r} in {source}; available columns: {avail}")
        pcol = prompt_column
    else:
        found = next((c for c in PROMPT_COLUMNS if c in columns), None)
        if found is None:
            raise UserError(f"--data: {source} has no prompt column (expected one of {', '.join(PROMPT_COLUMNS)}, or "
                            f"pass --prompt-column NAME); available columns: {avail}")
        pcol = found
    if reference_column:
        if reference_column not in columns:
            raise UserError(f"--reference-column: no column {reference_column!r} in {source}; "
                            f"available columns: {avail}")
        return pcol, reference_column
    return pcol, next((c for c in REFERENCE_COLUMNS if c in columns and c != pcol), None)


def _looks_like_hub_id(spec: str) -> bool:
    return (bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", spec))
            and not spec.lower().endswith(tuple(_DATASETS_BUILDERS) + _JSON_SUFFIXES))


def _datasets_rows(spec: str, p: Path, flag: str) -> tuple[list[dict[str, Any]], list[str], str]:
    """Rows, columns and a name of a CSV/Parquet file, a ``save_to_disk`` folder or a hub dataset id, read with ``datasets`` (one split: ``train`` when there are several)."""
    import logging

    try:
        import datasets
    except ImportError:  # pragma: no cover - depends on the install
        raise UserError(f"{flag}: reading {spec!r} needs the 'datasets' package: pip install datasets") from None
    from datasets.utils import logging as ds_logging

    bars_were_on = ds_logging.is_progress_bar_enabled() if hasattr(ds_logging, "is_progress_bar_enabled") else False
    quiet = [logging.getLogger(n) for n in ("huggingface_hub", "datasets", "fsspec")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    hub = False
    try:
        if p.is_dir():
            ds = datasets.load_from_disk(str(p))
        elif p.is_file():
            ds = datasets.load_dataset(_DATASETS_BUILDERS[p.suffix.lower()], data_files=str(p))
        else:
            hub = True
            ds = datasets.load_dataset(spec)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader/network failure is one line naming the input
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if hub:
            raise UserError(f"{flag}: {spec!r} is not a local file or folder, and loading it as a Hugging Face hub "
                            f"dataset failed (offline, or no such dataset?): {why}") from None
        raise UserError(f"{flag}: cannot read {spec!r} with datasets: {type(exc).__name__}: {why}") from None
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
        if bars_were_on:
            datasets.enable_progress_bars()
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if not names:
            raise UserError(f"{flag}: empty dataset: {spec!r} has no splits")
        split = "train" if "train" in ds else names[0] if len(names) == 1 else None
        if split is None:
            raise UserError(f"{flag}: {spec!r} has the splits {', '.join(names)} and none is 'train'; save the one "
                            "to use on its own (Dataset.save_to_disk or to_json)")
        ds = ds[split]
        spec = f"{spec} (split {split})" if len(names) > 1 else spec
    return ds.to_list(), list(ds.column_names), spec


def load_prompts(spec: str | Path, prompt_column: str | None = None, reference_column: str | None = None,
                 *, flag: str = "--data", require_reference: bool = False) -> list[QAItem]:
    """Prompts, with their reference answers where there are any, from a file, a folder or a hub dataset id.

    ``spec`` is a JSONL / JSON (a list of objects) file, read line by line (errors name the line); a CSV or
    Parquet file or a folder saved with ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``), read
    with ``datasets``; or a Hugging Face hub dataset id (``datasets.load_dataset(id)``; its ``train`` split when
    it has several).

    Columns: the prompt is ``prompt_column``, else the first of :data:`PROMPT_COLUMNS` present
    (``question``, ``prompt`` (text or chat messages) or ``messages`` (chat: the last user turn is the
    prompt, an assistant turn after it the reference)); the reference is ``reference_column``, else
    ``answer`` or ``completion`` (text or messages: the last assistant turn), where present. Rows without
    one have ``answer = None``. ``aliases`` (accepted answers) and ``id`` are optional.

    Raises
    ------
    UserError
        A missing file, unreadable data, a named column that is absent (listing the columns there), no
        prompt column, a bad row (naming the file and line), no rows, duplicate ids, or (with
        ``require_reference``) a row without a reference.
    """
    spec = str(spec)
    p = Path(spec).expanduser()
    rows_where: list[tuple[Any, str]]
    if p.is_file() and p.suffix.lower() not in _DATASETS_BUILDERS:  # JSONL / JSON: our reader names the line
        text = read_utf8(p, flag)
        if text.lstrip().startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{p}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
            rows_where = [(obj, f"{p}: item {i + 1}") for i, obj in enumerate(data)]
        else:
            rows_where = [(obj, f"{p}: line {n}") for n, obj in iter_jsonl_text(text, p)]
        for obj, where in rows_where:
            if not isinstance(obj, dict):
                raise UserError(f"{where}: expected a JSON object with a prompt ({', '.join(PROMPT_COLUMNS)}), got "
                                f"{type(obj).__name__}")
        columns = list(dict.fromkeys(k for obj, _ in rows_where for k in obj))
        source = str(p)
    elif p.exists() or _looks_like_hub_id(spec):
        if p.is_dir() and not any((p / f).is_file() for f in ("state.json", "dataset_dict.json")):
            raise UserError(f"{flag}: not a file, nor a folder saved with datasets' save_to_disk (no state.json or "
                            f"dataset_dict.json): {spec!r}")
        if p.exists() and not p.is_dir() and not p.is_file():
            raise UserError(f"{flag}: not a file or folder: {spec!r}")
        rows, columns, source = _datasets_rows(spec, p, flag)
        rows_where = [(r, f"{source}: row {i + 1}") for i, r in enumerate(rows)]
    else:
        raise UserError(f"{flag}: file not found: {spec!r} (expected a JSONL/JSON/CSV/Parquet file, a folder saved "
                        "with datasets' save_to_disk, or a hub dataset id)")
    if not rows_where:
        raise UserError(f"{source}: empty dataset (no questions)")
    pcol, rcol = _resolve_columns(columns, source, prompt_column, reference_column)
    items = []
    for i, (obj, where) in enumerate(rows_where):
        it = _item_from_row(obj, where, i, pcol, rcol)
        if require_reference and it.answer is None:
            raise UserError(f"{where}: missing 'answer' (a string)")
        items.append(it)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        from collections import Counter

        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise UserError(f"{source}: duplicate question id {dup!r}")
    return items


def read_utf8(path: str | Path, flag: str | None = None) -> str:
    """The text of ``path``; bytes that are not UTF-8 are a :class:`UserError` naming the file, line and byte
    (and the command-line ``flag`` the file came from, when given)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise UserError(f"{flag + ': ' if flag else ''}{p}: cannot read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{flag + ': ' if flag else ''}{p}: line {line}: not UTF-8 text "
                        f"(byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None


def iter_jsonl_text(text: str, source: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object)`` for each non-blank JSONL line; a malformed line is a
    :class:`UserError` naming ``source`` and the line."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: line {lineno}: invalid JSON: {exc.msg}") from None


def load_qa(path: str | Path) -> list[QAItem]:
    """Read a QA file whose every row has a reference answer: JSONL (one ``{"question", "answer", "aliases"?,
    "id"?}`` per line), the paper's JSON list of ``{"question", "answer"}``, or any input :func:`load_prompts`
    reads. For prompts without references use :func:`load_prompts`.

    Raises
    ------
    UserError
        Missing file, a malformed line (naming the file and line), a row without an answer, or no items.
    """
    return load_prompts(path, require_reference=True)


def save_qa_jsonl(items: Sequence[QAItem], path: str | Path) -> Path:
    """Write items as JSONL (the format :func:`load_qa` reads)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from .._io import atomic_write_text

    atomic_write_text(p, "".join(json.dumps(it.to_dict(), ensure_ascii=False) + "\n" for it in items))
    return p
