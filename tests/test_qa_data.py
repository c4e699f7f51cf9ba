"""Tests of uqkd.data.qa: the countryinfo QA set, splits, file loading and alias matching."""

from __future__ import annotations

import json

import pytest

from uqkd.config import UserError
from uqkd.data.qa import (
    QAItem,
    contains_alias,
    countryinfo_qa,
    exact_match,
    load_qa,
    normalize_answer,
    save_qa_jsonl,
    split_qa,
)


def test_countryinfo_qa_is_deterministic_and_has_aliases():
    a = countryinfo_qa(("capital", "continent"))
    b = countryinfo_qa(("capital", "continent"))
    assert [i.to_dict() for i in a] == [i.to_dict() for i in b]
    assert len(a) > 300
    by_id = {i.id: i for i in a}
    assert by_id["capital:FRA"].answer == "Paris"
    assert "Europe" in by_id["continent:FRA"].aliases
    assert all(i.answer in i.aliases for i in a)
    assert len({i.question for i in a}) == len(a)


def test_countryinfo_unknown_kind():
    with pytest.raises(UserError, match="qa kinds"):
        countryinfo_qa(("capitals",))


def test_split_depends_only_on_id_and_seed():
    items = countryinfo_qa(("capital",))
    tr, ev = split_qa(items, 0.2, seed=0)
    assert len(tr) + len(ev) == len(items)
    assert not {i.id for i in tr} & {i.id for i in ev}
    assert 0.1 < len(ev) / len(items) < 0.3
    # removing items does not move the others
    tr2, ev2 = split_qa(items[::2], 0.2, seed=0)
    assert {i.id for i in ev2} == {i.id for i in ev} & {i.id for i in items[::2]}
    # same seed: same order; other seed: another split
    assert [i.id for i in split_qa(items, 0.2, seed=0)[0]] == [i.id for i in tr]
    assert {i.id for i in split_qa(items, 0.2, seed=1)[1]} != {i.id for i in ev}


def test_load_jsonl_and_json_list(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text('{"question": "Capital of France?", "answer": "Paris", "aliases": ["Paris, France"]}\n\n'
                 '{"question": "2+2?", "answer": "4", "id": "math"}\n')
    items = load_qa(p)
    assert [i.id for i in items] == ["q000000", "math"]
    assert items[0].aliases == ("Paris", "Paris, France")
    q = tmp_path / "paper.json"
    q.write_text(json.dumps([{"question": "a?", "answer": "b"}, {"question": "c?", "answer": "d"}]))
    assert [i.answer for i in load_qa(q)] == ["b", "d"]
    r = save_qa_jsonl(items, tmp_path / "out.jsonl")
    assert [i.to_dict() for i in load_qa(r)] == [i.to_dict() for i in items]


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"question": "a?", "answer": "b"}\n{"question": "c?", "answer": \n', r"bad\.jsonl: line 2: invalid JSON"),
        ('{"question": "a?", "answer": "b"}\n{"answer": "b"}\n', r"bad\.jsonl: line 2: missing or empty 'question'"),
        ('{"question": "a?", "answer": "b", "aliases": [1]}\n', r"line 1: 'aliases' must be a list of strings"),
        ("\n\n", r"empty dataset"),
        ('{"question": "a?", "answer": "b", "id": "x"}\n{"question": "c?", "answer": "d", "id": "x"}\n', "duplicate"),
    ],
)
def test_load_errors_name_file_and_line(tmp_path, text, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(UserError, match=match):
        load_qa(p)


def test_load_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_qa(tmp_path / "nope.jsonl")


def test_alias_matching():
    assert normalize_answer("The  Paris!") == "paris"
    assert contains_alias("I think it is Paris, of course.", ["Paris"])
    assert not contains_alias("Parisian food", ["Paris"])
    assert contains_alias("São Paulo", ["Sao Paulo"])
    assert exact_match("The capital of France is Paris. It is big.", ["Paris"])
    assert exact_match("Paris", ["Paris"])
    assert not exact_match("Lyon, not Paris", ["Paris"])
    assert not exact_match("", ["Paris"])


def test_item_validation():
    with pytest.raises(ValueError, match="question"):
        QAItem("x", "  ", "a")
