"""The llm step commands check their flags by the shared check_options, against the declarations the LLM
experiment configs use (uqkd.llm.cli._check_flags)."""

from __future__ import annotations

import argparse

import pytest

from uqkd.config import ConfigError, UserError
from uqkd.experiments import get_experiment
from uqkd.llm.cli import _check_flags
from uqkd.runner import resolve_config


@pytest.mark.parametrize("dest, value", [("lr", 2.0), ("lr", float("nan")), ("epochs", 0), ("batch_size", 0),
                                         ("threads", -1), ("device", "tpu"), ("lora_r", 0), ("student_every", 0)])
def test_a_flag_and_the_experiment_setting_of_the_same_name_refuse_alike(dest, value):
    with pytest.raises(UserError) as flag:
        _check_flags(argparse.Namespace(**{dest: value}), dest)
    with pytest.raises(ConfigError) as setting:
        resolve_config(get_experiment("llm-teacher-noise"), "quick", {dest: value})
    flag_msg, setting_msg = str(flag.value), str(setting.value)
    assert flag_msg.startswith(f"--{dest.replace('_', '-')}: ")
    assert flag_msg.split(": ", 1)[1] == setting_msg.split(": ", 1)[1]


@pytest.mark.parametrize("dest, bad, low, good", [("k", 0, 1, 1), ("pilot", 1, 2, 2), ("budget", 0, 1, 1),
                                                  ("concurrency", 0, 1, 8), ("students", 0, 1, 1),
                                                  ("gradient_accumulation_steps", 0, 1, 4)])
def test_the_step_only_flags_have_declared_ranges(dest, bad, low, good):
    flag = "--" + dest.replace("_", "-")
    with pytest.raises(UserError, match=f"^{flag}: expected an integer >= {low}, got {bad}$"):
        _check_flags(argparse.Namespace(**{dest: bad}), dest)
    _check_flags(argparse.Namespace(**{dest: good}), dest)
