"""Any prompt set (issue 31): prompts with or without references, in JSONL/JSON/CSV/Parquet files, ``datasets``
folders and hub ids, through ``uqkd llm sample | build-dataset | distill | evaluate``."""

from __future__ import annotations

import json

import pytest

from uqkd.config import UserError
from uqkd.data.qa import load_prompts

datasets = pytest.importorskip("datasets")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _chat(*turns):
    return [{"role": r, "content": c} for r, c in turns]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    f = {
        "prompt_only": _jsonl(d / "prompt-only.jsonl", [{"prompt": f"Write a line about topic {i}."} for i in range(4)]),
        "prompt_completion": _jsonl(d / "pc.jsonl", [
            {"prompt": _chat(("system", "Be brief."), ("user", "Name a colour.")),
             "completion": _chat(("assistant", "Blue"))},
            {"prompt": "Name a fruit.", "completion": "Apple"},
            {"prompt": "Name a tree."}]),
        "messages": _jsonl(d / "messages.jsonl", [
            {"messages": _chat(("user", "Hi"), ("assistant", "Hello"), ("user", "Capital of France?"),
                               ("assistant", "Paris"))},
            {"messages": _chat(("system", "You are terse."), ("user", "Tell me a joke."))},
            {"messages": _chat(("user", "Say yes."), ("assistant", "Yes"))}]),
    }
    datasets.Dataset.from_list([{"instruction": f"Describe item {i}.", "output": None if i % 2 else f"Item {i}"}
                                for i in range(3)]).save_to_disk(str(d / "disk"))
    f["disk"] = d / "disk"
    datasets.Dataset.from_list([{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": None}]).to_csv(
        str(d / "q.csv"), index=False)
    f["csv"] = d / "q.csv"
    datasets.Dataset.from_list([{"prompt": "P1", "completion": "C1"}]).to_parquet(str(d / "q.parquet"))
    f["parquet"] = d / "q.parquet"
    return f


def test_load_prompts_columns_and_formats(files):
    it = load_prompts(files["prompt_only"])
    assert [i.question for i in it] == [f"Write a line about topic {i}." for i in range(4)]
    assert all(i.answer is None and not i.has_reference and "answer" not in i.to_dict() for i in it)
    pc = load_prompts(files["prompt_completion"])
    # a chat prompt: its last user turn; a chat completion: its assistant turn
    assert [(i.question, i.answer) for i in pc] == [("Name a colour.", "Blue"), ("Name a fruit.", "Apple"),
                                                    ("Name a tree.", None)]
    m = load_prompts(files["messages"])
    # the last user turn is the prompt, the trailing assistant turn the reference
    assert [(i.question, i.answer) for i in m] == [("Capital of France?", "Paris"), ("Tell me a joke.", None),
                                                   ("Say yes.", "Yes")]
    disk = load_prompts(str(files["disk"]), "instruction", "output")
    assert [(i.question, i.answer) for i in disk] == [("Describe item 0.", "Item 0"), ("Describe item 1.", None),
                                                      ("Describe item 2.", "Item 2")]
    assert [(i.question, i.answer) for i in load_prompts(files["csv"])] == [("Q1?", "A1"), ("Q2?", None)]
    assert [(i.question, i.answer) for i in load_prompts(files["parquet"])] == [("P1", "C1")]
    # an explicit --reference-column wins; a prompt-only load_qa still refuses rows without an answer
    from uqkd.data.qa import load_qa

    with pytest.raises(UserError, match=r"line 1: missing 'answer'"):
        load_qa(files["prompt_only"])


@pytest.mark.parametrize("kw, match", [
    ({"prompt_column": "text"}, r"^--prompt-column: no column 'text' in .*disk; available columns: instruction, "
                                r"output$"),
    ({"prompt_column": "instruction", "reference_column": "gold"},
     r"^--reference-column: no column 'gold' in .*available columns: instruction, output$"),
    ({}, r"^--data: .*disk has no prompt column \(expected one of question, prompt, messages, or pass "
         r"--prompt-column NAME\); available columns: instruction, output$"),
])
def test_missing_column_lists_the_columns(files, kw, match):
    with pytest.raises(UserError, match=match):
        load_prompts(str(files["disk"]), **kw)


def test_bad_rows_name_the_line(tmp_path):
    p = _jsonl(tmp_path / "bad.jsonl", [{"messages": _chat(("user", "a"))}, {"messages": _chat(("assistant", "b"))}])
    with pytest.raises(UserError, match=r"bad\.jsonl: line 2: 'messages': no user turn"):
        load_prompts(p)
    p = _jsonl(tmp_path / "bad2.jsonl", [{"prompt": "a"}, {"prompt": 3}])
    with pytest.raises(UserError, match=r"bad2\.jsonl: line 2: missing or empty 'prompt'"):
        load_prompts(p)


# --- the CLI with a tiny model ------------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")

from uqkd.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from uqkd.llm.models import save_lm, tiny_causal_lm

    d = tmp_path_factory.mktemp("prompts-teacher")
    save_lm(tiny_causal_lm(seed=0, n_layers=4), d / "teacher")
    return d


def _common(d):
    return ["--cache-dir", str(d / "cache"), "--embedder", "hash", "--max-new-tokens", "4"]


def test_offline_hub_id_is_one_line(teacher, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = teacher / "never.jsonl"
    rc = main(["llm", "sample", "--teacher", str(teacher / "teacher"), "--data", "someone-xyz/no-such-prompts",
               "--k", "2", "--out", str(out), *_common(teacher)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.startswith("uqkd: error: --data: 'someone-xyz/no-such-prompts' is not a local file or folder")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_sample_missing_column_cli(files, teacher, capsys):
    rc = main(["llm", "sample", "--teacher", str(teacher / "teacher"), "--data", str(files["disk"]),
               "--prompt-column", "text", "--k", "2", "--out", str(teacher / "x.jsonl"), *_common(teacher)])
    err = capsys.readouterr().err
    assert rc == 2 and "--prompt-column: no column 'text'" in err and "instruction, output" in err
    assert not (teacher / "x.jsonl").exists()


@pytest.mark.parametrize("name, extra, n, n_ref", [
    ("prompt_only", [], 4, 0),
    ("prompt_completion", [], 3, 2),
    ("messages", [], 3, 2),
    ("disk", ["--prompt-column", "instruction", "--reference-column", "output"], 3, 2),
])
def test_sample_and_build_any_prompt_set(files, teacher, capsys, name, extra, n, n_ref):
    t, d = str(teacher / "teacher"), teacher
    s = d / f"s-{name}.jsonl"
    assert main(["llm", "sample", "--teacher", t, "--data", str(files[name]), *extra, "--k", "3",
                 "--student", "derived", "--student-every", "2", "--out", str(s), *_common(d)]) == 0
    out = capsys.readouterr().out
    assert f"sampled {n} questions x k=3" in out
    assert ("no reference answers" in out) == (n_ref == 0)
    recs = [json.loads(x) for x in s.read_text().splitlines()]
    assert len(recs) == n and sum("answer" in r for r in recs) == n_ref
    assert all(len(r["samples"]) == 3 and r["dispersion"] >= 0 and r["embedder"] == "hash:64" for r in recs)
    for method in ("averaging", "inverse-variance-loss", "variance-weighting", "single"):
        tr = d / f"t-{name}-{method}.jsonl"
        assert main(["llm", "build-dataset", "--samples", str(s), "--method", method, "--data", str(files[name]),
                     *extra, "--out", str(tr), *_common(d)[:4]]) == 0
    capsys.readouterr()
    # every row carries its uncertainty and where it came from, and loads with datasets as it is
    ds = datasets.load_dataset("json", data_files=str(d / f"t-{name}-inverse-variance-loss.jsonl"), split="train")
    assert len(ds) == n
    assert {"prompt", "completion", "weight", "teacher_var", "k", "embedder", "teacher", "decoding"} <= set(
        ds.column_names)
    by_id = {r["id"]: r for r in recs}
    for row in ds:
        assert row["teacher_var"] == pytest.approx(by_id[row["id"]]["dispersion"])
        assert row["k"] == 3 and row["embedder"] == "hash:64" and row["teacher"] == recs[0]["teacher"]
        assert row["decoding"]["temperature"] == 1.0 and row["decoding"]["max_new_tokens"] == 4
        assert row["prompt"][0]["content"] == by_id[row["id"]]["question"]
    assert sum(ds["weight"]) == pytest.approx(n)  # inverse-variance weights keep mean one
    assert len(set(ds["weight"])) > 1 or len({r["dispersion"] for r in recs}) == 1


def test_distill_and_evaluate_prompt_only(files, teacher, capsys):
    t, d = str(teacher / "teacher"), teacher
    s = d / "s-eval.jsonl"
    assert main(["llm", "sample", "--teacher", t, "--data", str(files["prompt_only"]), "--k", "2",
                 "--out", str(s), *_common(d)]) == 0
    assert main(["llm", "distill", "--samples", str(s), "--method", "averaging", "--teacher", t,
                 "--student-every", "2", "--students", "2", "--epochs", "1", "--trainer", "uqkd",
                 "--out", str(d / "st"), *_common(d)[:4]]) == 0
    capsys.readouterr()
    assert main(["llm", "evaluate", "--students", str(d / "st"), "--data", str(files["prompt_only"]), "--teacher", t,
                 "--k", "2", "--out", str(d / "ev"), *_common(d)]) == 0
    out = capsys.readouterr().out
    for key in ("mse", "cosine", "exact_match", "accuracy", "hallucination"):
        assert f"{key:<14} no reference" in out
    m = json.loads((d / "ev" / "metrics.json").read_text())
    assert m["n_with_reference"] == 0 and m["reference_metrics"].startswith("not computed")
    assert m["students"]["mse_mean"] is None and m["students"]["accuracy_mean"] is None
    assert m["students"]["intra_var_mean"] >= 0 and m["students"]["inter_var"] >= 0
    assert -1.0 <= m["students"]["alignment_mean"] <= 1.0 + 1e-6
    # a mixed file: reference metrics over the rows with a reference only
    assert main(["llm", "evaluate", "--students", str(d / "st"), "--data", str(files["messages"]),
                 "--k", "2", "--out", str(d / "ev2"), *_common(d)]) == 0
    out = capsys.readouterr().out
    assert "no reference" not in out and "over the 2 of 3 questions with a reference" in out
    m2 = json.loads((d / "ev2" / "metrics.json").read_text())
    assert m2["n_with_reference"] == 2 and 0.0 <= m2["students"]["accuracy_mean"] <= 1.0
    assert m2["students"]["mse_mean"] >= 0
