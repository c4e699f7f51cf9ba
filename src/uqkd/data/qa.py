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
    answer : str
        Reference answer (embedded for the embedding-space metrics).
    aliases : tuple of str
        Accepted answers for exact match and hallucination; always contains ``answer``.
    """

    id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise ValueError(f"question: expected non-empty text for item {self.id!r}")
        al = tuple(dict.fromkeys(a for a in (self.answer, *self.aliases) if a and a.strip()))
        object.__setattr__(self, "aliases", al)

    def to_dict(self) -> dict[str, Any]:
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


def _item_from_obj(obj: Any, where: str, index: int) -> QAItem:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object with 'question' and 'answer', got {type(obj).__name__}")
    q, a = obj.get("question"), obj.get("answer")
    if not isinstance(q, str) or not q.strip():
        raise UserError(f"{where}: missing or empty 'question'")
    if not isinstance(a, str):
        raise UserError(f"{where}: missing 'answer' (a string)")
    aliases = obj.get("aliases", [])
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list) or not all(isinstance(x, str) for x in aliases):
        raise UserError(f"{where}: 'aliases' must be a list of strings")
    qid = obj.get("id", f"q{index:06d}")
    return QAItem(str(qid), q.strip(), a.strip(), tuple(aliases))


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
    """Read a QA file: JSONL (one ``{"question", "answer", "aliases"?, "id"?}`` per line) or the
    paper's JSON list of ``{"question", "answer"}``.

    Raises
    ------
    UserError
        Missing file, a malformed line (naming the file and line), or no items.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--data: {'not a file' if p.exists() else 'file not found'}: {str(p)!r}")
    text = read_utf8(p, "--data")
    items: list[QAItem] = []
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
        for i, obj in enumerate(data):
            items.append(_item_from_obj(obj, f"{p}: item {i + 1}", i))
    else:
        for lineno, obj in iter_jsonl_text(text, p):
            items.append(_item_from_obj(obj, f"{p}: line {lineno}", lineno - 1))
    if not items:
        raise UserError(f"{p}: empty dataset (no questions)")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{p}: duplicate question id {dup!r}")
    return items


def save_qa_jsonl(items: Sequence[QAItem], path: str | Path) -> Path:
    """Write items as JSONL (the format :func:`load_qa` reads)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from .._io import atomic_write_text

    atomic_write_text(p, "".join(json.dumps(it.to_dict(), ensure_ascii=False) + "\n" for it in items))
    return p
