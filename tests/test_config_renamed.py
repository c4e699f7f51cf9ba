"""Renamed config fields: ``_renamed = {"old": "new"}`` on a config class keeps old names working
in config files and ``--set``, with a deprecation warning (uqkd.config)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from uqkd.config import ConfigError, build_config, option, parse_overrides, renamed_fields


@dataclasses.dataclass
class _Base:
    _renamed = {"n_epochs": "epochs"}
    epochs: int = option(10, "epochs", min=1, max=1000)
    threads: int = option(1, "threads", min=1, max=64)


@dataclasses.dataclass
class _Child(_Base):
    _renamed = {"num_threads": "threads", "ks": "k_values"}
    k_values: tuple[int, ...] = option((1, 2), "k values", min=1, max=100)


def test_renamed_is_merged_along_the_class_hierarchy_and_is_not_a_field():
    assert renamed_fields(_Child) == {"n_epochs": "epochs", "num_threads": "threads", "ks": "k_values"}
    assert renamed_fields(_Base) == {"n_epochs": "epochs"}
    assert "_renamed" not in {f.name for f in dataclasses.fields(_Child)}


def test_old_names_in_a_config_layer_are_read_as_the_new_ones_with_a_warning():
    with pytest.warns(FutureWarning, match=r"config file: config key 'n_epochs' is deprecated; use 'epochs'"):
        cfg = build_config(_Child, ({"n_epochs": 7, "ks": [3, 4]}, "config file"))
    assert (cfg.epochs, cfg.k_values, cfg.threads) == (7, (3, 4), 1)


def test_old_names_in_set_overrides_are_renamed_and_typed():
    with pytest.warns(FutureWarning, match="--set: config key 'num_threads' is deprecated; use 'threads'"):
        over = parse_overrides(_Child, ["num_threads=3", "ks=5,6"])
    assert over == {"threads": "3", "k_values": "5,6"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already renamed: no second warning
        cfg = build_config(_Child, (over, "--set"))
    assert (cfg.threads, cfg.k_values) == (3, (5, 6))


def test_new_names_give_no_warning_and_later_layers_win_across_names():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_config(_Child, ({"epochs": 4}, "profile")).epochs == 4
    with pytest.warns(FutureWarning):
        cfg = build_config(_Child, ({"epochs": 4}, "profile"), ({"n_epochs": 9}, "--set"))
    assert cfg.epochs == 9


def test_old_and_new_name_together_is_an_error_naming_both():
    with pytest.raises(ConfigError, match=r"n_epochs: given in --set together with its new name 'epochs'"):
        parse_overrides(_Child, ["n_epochs=3", "epochs=4"])


def test_old_names_still_go_through_range_checks_under_the_new_name():
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match=r"epochs: expected an integer >= 1, got 0"):
        build_config(_Child, ({"n_epochs": 0}, "file"))


def test_an_unrenamed_unknown_key_is_still_refused():
    with pytest.raises(ConfigError, match="unknown config key 'n_epoch'"):
        build_config(_Child, ({"n_epoch": 3}, "file"))


def test_a_rename_keeps_the_fingerprint_so_cell_records_stay_valid():
    from uqkd.config import config_fingerprint

    @dataclasses.dataclass
    class Old:
        n_epochs: int = option(10, "epochs", min=1, max=1000)
        threads: int = option(1, "threads", min=1, max=64)

    assert config_fingerprint(_Base(epochs=7)) == config_fingerprint(Old(n_epochs=7))
    assert config_fingerprint(_Base(epochs=7)) != config_fingerprint(Old(n_epochs=8))
