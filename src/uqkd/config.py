"""Typed experiment configs: dataclass defaults, profiles, TOML/JSON files and KEY=VALUE overrides.

Precedence (later wins): dataclass defaults < profile < config file < ``--set`` overrides.
Unknown keys and ill-typed values raise :class:`ConfigError` naming the key and listing
the valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "UserError",
    "EnvironmentFailure",
    "option",
    "build_config",
    "config_to_dict",
    "config_fingerprint",
    "parse_overrides",
    "load_config_file",
    "coerce_value",
]


class UserError(ValueError):
    """A mistake in what the user asked for; the CLI prints it on one line and exits with 2."""


class EnvironmentFailure(RuntimeError):
    """A failure of the machine, not of the request (a full disk, a killed worker): the CLI prints it on
    one line and exits with 1."""


class ConfigError(UserError):
    """An unknown config key, an ill-typed value or a value out of range."""


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and help text (tuples for sequences)."""
    return dataclasses.field(default=default, metadata={"help": help})


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    tp, opt = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        name = f"comma-separated list of {getattr(inner, '__name__', inner)}"
    elif origin is typing.Literal:
        name = "one of " + ", ".join(map(str, typing.get_args(tp)))
    else:
        name = getattr(tp, "__name__", str(tp))
    return name + (" or none" if opt else "")


def _scalar(value: Any, tp: Any, key: str) -> Any:
    if typing.get_origin(tp) is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, allowed))}; got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """Coerce a value from a file or the command line to the field type ``tp``."""
    tp, optional = _strip_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip() != ""]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        if not items:
            raise ConfigError(f"{key}: expected a non-empty {_type_name(tp)}, got {value!r}")
        return tuple(_scalar(v, inner, key) for v in items)
    return _scalar(value, tp, key)


def _check_keys(cls: type, data: Mapping[str, Any], source: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {key!r} in {source}; valid keys: {', '.join(names)}")


def build_config(cls: type, *layers: tuple[Mapping[str, Any], str]) -> Any:
    """Build ``cls`` from layers of (mapping, source-name); later layers win.

    ``__post_init__`` range checks that raise ``ValueError`` become :class:`ConfigError`.
    """
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    for data, source in layers:
        _check_keys(cls, data, source)
        for key, val in data.items():
            values[key] = coerce_value(val, hints[key], key)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def parse_overrides(cls: type, items: list[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (raw strings; typed by :func:`build_config`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        key = key.strip().replace("-", "_")
        out[key] = val.strip()
    _check_keys(cls, out, "--set")
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``), JSON (``.json``) or YAML (``.yaml``/``.yml``) file of config fields."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {str(p)!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {str(p)!r} is not UTF-8 text (byte {exc.start})") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's
        raise ConfigError(f"--config: cannot parse {str(p)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: expected a table of config keys in {str(p)!r}")
    return data


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def config_fingerprint(cfg: Any) -> str:
    """Stable short hash of a config's values."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe_fields(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each field: for ``uqkd show``-style help."""
    hints = _field_types(cls)
    return [
        (f.name, _type_name(hints[f.name]), f.default, f.metadata.get("help", ""))
        for f in dataclasses.fields(cls)
    ]
