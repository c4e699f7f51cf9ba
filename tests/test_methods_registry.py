"""One method registry for the tabular and the LLM methods (uqkd.methods.METHODS): names, aliases,
flags, domains, and errors naming the argument, the value and the choices."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

import uqkd.methods as M
from uqkd.config import UserError


@pytest.mark.parametrize("name", list(M.METHODS))
def test_every_method_resolves_by_its_canonical_name_and_each_alias_in_each_of_its_domains(name):
    m = M.METHODS[name]
    assert m.domains and set(m.domains) <= set(M.DOMAINS)
    for domain in (None, *m.domains):
        assert M.resolve_method(name, domain=domain) is m
        for alias in m.aliases:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert M.resolve_method(alias, domain=domain) is m
        for old in m.deprecated:
            with pytest.warns(FutureWarning, match=f"{old!r} is deprecated; use {name!r}"):
                assert M.resolve_method(old, domain=domain) is m
    assert set(m.behaviour) == set(m.domains)


def test_names_and_aliases_are_unique_across_the_registry():
    names = [n for m in M.METHODS.values() for n in (m.name, *m.aliases, *m.deprecated)]
    assert len(names) == len(set(names))


def test_aliases_work_where_the_experiments_use_them():
    assert M.resolve_method("wls", domain="tabular").name == "variance-weighting-wls"
    assert M.check_methods(("single", "shrinkage")) == ("single", "variance-weighting-shrinkage")
    with pytest.raises(UserError, match="methods: expected each method once, got variance-weighting-wls"):
        M.check_methods(("wls", "variance-weighting-wls"))


def test_the_domains_hold_the_methods_their_code_implements():
    assert M.method_names("llm") == ("single", "multi-response", "averaging", "variance-weighting",
                                      "inverse-variance-loss")
    from uqkd.experiments.llm import LLM_METHODS
    from uqkd.llm.select import METHODS as SELECT_METHODS

    assert LLM_METHODS == SELECT_METHODS == M.method_names("llm")


def test_flags_of_the_oracle_and_beyond_paper_methods():
    oracle = {n for n, m in M.METHODS.items() if m.oracle}
    assert oracle == {"variance-weighting-paper-oracle"}
    # the oracle method reads the noise-free mean and the true noise variance, nothing else does
    assert {n for n, m in M.METHODS.items() if {"teacher_mean", "noise_var"} & set(m.needs)} == oracle
    assert M.METHODS["variance-weighting-paper-oracle"].rule == "variance-weighting"
    assert M.METHODS["variance-weighting"].domains == ("llm",) and not M.METHODS["variance-weighting"].oracle
    assert {n for n, m in M.METHODS.items() if m.beyond_paper} == {
        "variance-weighting-wls", "variance-weighting-shrinkage", "inverse-variance-loss"}
    assert {n for n, m in M.METHODS.items() if m.needs_embedder} == {
        "averaging", "variance-weighting", "inverse-variance-loss"}
    assert [n for n, m in M.METHODS.items() if m.needs_student_samples] == ["variance-weighting"]
    from uqkd.experiments.llm_budget import LLM_BUDGET_METHODS

    # llm-budget samples the teacher only: every LLM method but the one that reads the student's samples
    assert LLM_BUDGET_METHODS == ("single", "multi-response", "averaging", "inverse-variance-loss")


def test_the_embedder_flag_matches_what_build_training_set_requires():
    from uqkd.llm.select import build_training_set

    recs = [{"id": "q", "question": "Capital of France?", "samples": ["Paris", "Lyon"],
             "student_samples": ["Paris", "Nice"]}]
    for name in M.method_names("llm"):
        if M.METHODS[name].needs_embedder:
            with pytest.raises(ValueError, match="embedder"):
                build_training_set(recs, name, None)
        else:
            rows, _ = build_training_set(recs, name, None)
            assert rows


@pytest.mark.parametrize("domain, name", [("tabular", "variance-weighting"), ("llm", "variance-weighting-wls"),
                                          (None, "nope"), ("llm", "")])
def test_unknown_names_give_an_error_naming_the_argument_the_value_and_the_choices(domain, name):
    with pytest.raises(UserError) as err:
        M.resolve_method(name, domain=domain, argname="--method")
    msg = str(err.value)
    assert msg.startswith("--method: expected one of ") and f"; got {name!r}" in msg
    for choice in M.method_names(domain):
        assert choice in msg


def test_the_tabular_targets_refuse_an_llm_method():
    import numpy as np

    with pytest.raises(UserError, match=r"method: expected one of single, averaging, .*; got 'multi-response' \(not a tabular method\)"):
        M.method_targets("multi-response", mean_k=np.zeros((1, 2)), var_k=np.zeros((1, 2)), k=2)


def test_a_deprecated_name_warns_and_resolves(monkeypatch):
    wls = M.METHODS["variance-weighting-wls"]
    monkeypatch.setitem(M.METHODS, wls.name, dataclasses.replace(wls, deprecated=("inverse-variance-wls",)))
    with pytest.warns(FutureWarning, match="--method: method name 'inverse-variance-wls' is deprecated; "
                                           "use 'variance-weighting-wls'"):
        assert M.resolve_method("inverse-variance-wls", domain="tabular", argname="--method").name == wls.name


def test_the_readme_method_table_matches_the_registry():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Methods: what each may know"):]
    section = section[:section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([\w-]+)` \| ([\w, ]+) \| .* \| (\**(?:yes|no)\**) \| (yes|no) \| (.*)\|$", line)
        if m:
            rows[m.group(1)] = (tuple(m.group(2).split(", ")), "yes" in m.group(3), m.group(4) == "yes",
                                tuple(re.findall(r"`([\w-]+)`", m.group(5))))
    assert rows == {n: (m.domains, m.oracle, m.beyond_paper, m.aliases) for n, m in M.METHODS.items()}
