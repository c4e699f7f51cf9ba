"""``uqkd llm build-dataset``: the uncertainty columns, the filters, the dataset card and the embedder rule.

Samples files are written here by hand (no model), with the ``hash`` embedder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("datasets")

from uqkd.cli import main  # noqa: E402
from uqkd.llm.embed import HashEmbedder  # noqa: E402
from uqkd.llm.select import embedding_dispersion, uncertainty_columns  # noqa: E402

# q0: the teacher always agrees; q1: two camps; q2: every answer different
ANSWERS = {
    "q0": ["Paris", "Paris", "Paris", "Paris"],
    "q1": ["Berlin", "Berlin", "Berlin", "a large ocean full of water"],
    "q2": ["red", "the number forty two", "Mount Everest is tall", "quantum chromodynamics"],
}


def _samples(path, embedder="hash:64", n_tokens=True):
    emb = HashEmbedder(int(embedder.split(":")[1]))
    rows = []
    for qid, texts in ANSWERS.items():
        r = {"id": qid, "question": f"Question {qid}?", "samples": texts, "teacher": "tiny-teacher",
             "dispersion": embedding_dispersion(emb.encode(texts)), "k": len(texts), "embedder": emb.name,
             "provenance": {"model": "tiny-teacher", "decoding": {"temperature": 1.0, "max_new_tokens": 8},
                            "seed": 7, "stream_seed": 123, "embedder_spec": embedder}}
        if n_tokens:
            r["n_tokens"] = [len(t.split()) + 1 for t in texts]
        rows.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _read(p):
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_uncertainty_columns_properties():
    e = HashEmbedder(64)
    same = uncertainty_columns(e.encode(ANSWERS["q0"]))
    assert same["n_clusters"] == 1 and same["agreement"] == 1.0 and same["dispersion_df"] == 0.0
    two = uncertainty_columns(e.encode(ANSWERS["q1"]))
    assert two["n_clusters"] == 2 and two["agreement"] == 0.75 and ANSWERS["q1"][two["medoid"]] == "Berlin"
    m = len(ANSWERS["q1"])
    assert (m - 1) - 1e-9 <= two["dispersion_df"] <= (m - 1) ** 2 + 1e-9
    spread = uncertainty_columns(e.encode(ANSWERS["q2"]))
    assert spread["n_clusters"] == 4 and spread["agreement"] == 0.25
    assert spread["dispersion_df"] > two["dispersion_df"]  # spread in many directions, not one


def test_rows_carry_uncertainty_load_with_datasets_and_card(tmp_path, capsys):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    s = tmp_path / "s.jsonl"
    recs = _samples(s)
    out = tmp_path / "train.jsonl"
    assert main(["llm", "build-dataset", "--samples", str(s), "--method", "multi-response", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = _read(out)
    assert len(rows) == 12
    for r in rows:
        assert {"teacher_var", "dispersion_df", "n_clusters", "agreement", "dist_to_medoid", "k", "weight",
                "embedder", "teacher", "decoding", "n_nonempty"} <= set(r)
        assert r["embedder"] == "hash:64" and r["teacher"] == "tiny-teacher" and r["k"] == 4
        assert r["decoding"]["max_new_tokens"] == 8
    by = {r["id"]: r for r in rows}
    assert by["q0"]["teacher_var"] == 0 and by["q2"]["teacher_var"] > by["q1"]["teacher_var"] > 0
    assert {r["dist_to_medoid"] for r in rows if r["id"] == "q0"} == {0.0}
    assert max(r["dist_to_medoid"] for r in rows if r["id"] == "q1") > 0.15  # the odd answer is far from the medoid
    ds = load_dataset("json", data_files=str(out), split="train")
    assert ds.num_rows == 12 and {"agreement", "n_clusters", "dispersion_df"} <= set(ds.column_names)
    assert len(ds.filter(lambda r: r["agreement"] >= 0.75)) == 8
    card_path = tmp_path / "train.jsonl.README.md"
    assert f"dataset card: {card_path}" in printed
    card = DatasetCard.load(card_path)
    meta = card.data.to_dict()
    assert meta["uqkd"]["teacher"] == "tiny-teacher" and meta["uqkd"]["embedder"] == "hash:64"
    assert meta["uqkd"]["method"] == "multi-response" and meta["uqkd"]["seed"] == 7
    total = sum(sum(r["n_tokens"]) for r in recs)
    assert f"{total:,} answer tokens generated" in card.text and "temperature=1.0" in card.text


def test_out_folder_is_a_hub_layout(tmp_path):
    from datasets import load_dataset

    s = tmp_path / "s.jsonl"
    _samples(s, n_tokens=False)
    out = tmp_path / "myset"
    assert main(["llm", "build-dataset", "--samples", str(s), "--method", "averaging", "--out", str(out)]) == 0
    assert (out / "train.jsonl").is_file() and (out / "README.md").is_file()
    assert "token counts not recorded" in (out / "README.md").read_text()
    ds = load_dataset(str(out), split="train")  # the card's configs name the data file
    assert ds.num_rows == 3


@pytest.mark.parametrize("flag, value, kept, why", [
    ("--min-agreement", "0.8", {"q0"}, "agreement below"),
    ("--min-agreement", "0.5", {"q0", "q1"}, "agreement below"),
])
def test_filters_drop_and_say_so(tmp_path, capsys, flag, value, kept, why):
    s = tmp_path / "s.jsonl"
    _samples(s)
    out = tmp_path / "t.jsonl"
    assert main(["llm", "build-dataset", "--samples", str(s), "--method", "inverse-variance-loss",
                 "--out", str(out), flag, value]) == 0
    printed = capsys.readouterr().out
    rows = _read(out)
    assert {r["id"] for r in rows} == kept
    assert f"dropped {3 - len(kept)} of 3 prompts ({why}" in printed
    assert abs(np.mean([r["weight"] for r in rows]) - 1.0) < 1e-9  # weights normalised over the kept prompts


def test_max_dispersion_uses_the_recorded_dispersion(tmp_path, capsys):
    s = tmp_path / "s.jsonl"
    recs = _samples(s)
    cut = (recs[1]["dispersion"] + recs[2]["dispersion"]) / 2
    out = tmp_path / "t.jsonl"
    assert main(["llm", "build-dataset", "--samples", str(s), "--method", "averaging", "--out", str(out),
                 "--max-dispersion", repr(cut)]) == 0
    assert {r["id"] for r in _read(out)} == {"q0", "q1"}
    assert "dropped 1 of 3 prompts (teacher dispersion above" in capsys.readouterr().out
    # a filter that drops everything is an error, not an empty file
    s.write_text("".join(x + "\n" for x in s.read_text().splitlines()[1:]))  # q1, q2: the teacher is unsure
    assert main(["llm", "build-dataset", "--samples", str(s), "--method", "averaging", "--out", str(out),
                 "--max-dispersion", "0", "--min-agreement", "1"]) == 2
    assert "filters dropped every question" in capsys.readouterr().err


def test_another_embedder_recomputes_never_mixes(tmp_path, capsys):
    s = tmp_path / "s.jsonl"
    recs = _samples(s, embedder="hash:64")
    out = tmp_path / "t.jsonl"
    assert main(["llm", "build-dataset", "--samples", str(s), "--method", "averaging", "--out", str(out),
                 "--embedder", "hash:16"]) == 0
    assert "3 dispersions recomputed with hash:16" in capsys.readouterr().out
    e16 = HashEmbedder(16)
    for r, rec in zip(_read(out), recs):
        assert r["embedder"] == "hash:16"
        assert r["teacher_var"] == pytest.approx(embedding_dispersion(e16.encode(rec["samples"])))
    assert any(r["teacher_var"] != pytest.approx(rec["dispersion"]) for r, rec in zip(_read(out), recs))
    # the default is the samples' own embedder: the recorded dispersions are kept as they are
    assert main(["llm", "build-dataset", "--samples", str(s), "--method", "averaging", "--out", str(out)]) == 0
    assert "recomputed" not in capsys.readouterr().out
    assert [r["teacher_var"] for r in _read(out)] == [rec["dispersion"] for rec in recs]


@pytest.mark.parametrize("args, match", [
    (["--min-agreement", "1.5"], "--min-agreement: expected a share in [0, 1], got 1.5"),
    (["--max-dispersion", "-1"], "--max-dispersion: expected a finite number >= 0, got -1"),
    (["--max-dispersion", "nan"], "--max-dispersion: expected a finite number >= 0, got nan"),
])
def test_bad_filters_exit_2(tmp_path, capsys, args, match):
    s = tmp_path / "s.jsonl"
    _samples(s)
    rc = main(["llm", "build-dataset", "--samples", str(s), "--method", "averaging",
               "--out", str(tmp_path / "t.jsonl"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err


def test_records_without_an_embedder_keep_their_dispersion_and_empty_answers_count():
    """Records that do not name their embedder (the experiments' own) keep their dispersion as before; a record from
    another space is recomputed over all k answers, empty ones included, as `uqkd llm sample` measures it."""
    from uqkd.llm.select import build_training_set

    e = HashEmbedder(32)
    texts = ["Rome", "", "Roma", "Rome"]
    legacy = [{"id": "a", "question": "Capital of Italy?", "samples": texts, "dispersion": 0.123}]
    rows, info = build_training_set(legacy, "averaging", e)
    assert rows[0]["teacher_var"] == 0.123 and info["n_recomputed"] == 0
    assert rows[0]["n_nonempty"] == 3 and rows[0]["k"] == 4
    other = [{**legacy[0], "embedder": "hash:64"}]
    rows, info = build_training_set(other, "averaging", e)
    assert info["n_recomputed"] == 1
    assert rows[0]["teacher_var"] == pytest.approx(embedding_dispersion(e.encode(texts)))
    assert rows[0]["teacher_var"] != pytest.approx(embedding_dispersion(e.encode(["Rome", "Roma", "Rome"])))
