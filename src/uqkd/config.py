"""Typed experiment configs: dataclass defaults, profiles, TOML/JSON files and KEY=VALUE overrides.

Precedence (later wins): dataclass defaults < profile < config file < ``--set`` overrides.
Unknown keys and ill-typed values raise :class:`ConfigError` naming the key and listing
the valid ones.

Range checks are declared on the fields (:func:`option` with ``min`` / ``gt`` / ``max``,
``choices``, ``nonempty``, ``unique``, ``pattern``) and checked by one function, :func:`check_options`, which
:func:`build_config` runs for every experiment config before constructing it (a config's
``__post_init__`` calls it too, for configs built in Python, then adds its relational checks).
A config that defines ``memory_estimate() -> (bytes, what)`` is refused when one cell would
need more than half of the machine's memory. Messages read ``<name>: expected <what>, got <value>``.

Renamed fields: a config class lists its old field names in a class attribute
``_renamed = {"old": "new"}`` (inherited and merged along the class hierarchy). Config files and
``--set`` still accept an old name: it is read as the new one with a :class:`FutureWarning`
("<source>: config key 'old' is deprecated; use 'new'"); giving both names is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
import types
import typing
import warnings
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
    "check_options",
    "check_memory",
    "machine_memory_bytes",
    "numeric_fields",
    "unbounded_fields",
    "renamed_fields",
]


class UserError(ValueError):
    """A mistake in what the user asked for; the CLI prints it on one line and exits with 2."""


class EnvironmentFailure(RuntimeError):
    """A failure of the machine, not of the request (a full disk, a killed worker): the CLI prints it on
    one line and exits with 1."""


class ConfigError(UserError):
    """An unknown config key, an ill-typed value or a value out of range."""


_BOUND_KEYS = ("min", "gt", "max", "choices", "nonempty", "unique", "pattern")


def option(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    gt: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    nonempty: bool = True,
    unique: bool = False,
    pattern: str | None = None,
) -> Any:
    """A dataclass field with a default, help text and declared range (tuples for sequences).

    Parameters
    ----------
    default, help
        The default value and one line for ``uqkd show``.
    min, gt, max : float, optional
        Inclusive lower bound, exclusive lower bound and inclusive upper bound of a number, or
        of every element of a tuple of numbers. Numbers must also be finite; integers are
        integer-typed by the field's annotation (``int``, ``tuple[int, ...]``).
    choices : tuple of str, optional
        The allowed values of a string, or of every element of a tuple of strings.
    nonempty : bool
        A tuple needs at least one element.
    unique : bool
        A tuple's elements must be distinct.
    pattern : str, optional
        A regular expression a string (or every string of a tuple) must match in full; the help text
        says what it means (``check_options`` quotes the help's values in its message).
    """
    if min is not None and gt is not None:
        raise ValueError("option: give min or gt, not both")
    meta = {"help": help, "min": min, "gt": gt, "max": max, "choices": choices, "nonempty": nonempty,
            "unique": unique, "pattern": pattern}
    return dataclasses.field(default=default, metadata=meta)


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
            items = [v.strip() for v in value.split(",")]
            if value.strip() and any(v == "" for v in items):
                raise ConfigError(f"{key}: expected a {_type_name(tp)} without empty items, "
                                  f"got {value!r}")
            items = [v for v in items if v != ""]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        if not items:
            raise ConfigError(f"{key}: expected a non-empty {_type_name(tp)}, got {value!r}")
        return tuple(_scalar(v, inner, key) for v in items)
    return _scalar(value, tp, key)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _field_kind(tp: Any) -> tuple[Any, bool, bool]:
    """(element type, is a tuple, may be None) of a config field annotation."""
    tp, optional = _strip_optional(tp)
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def numeric_fields(cls: type) -> list[str]:
    """Names of the fields of ``cls`` holding numbers (int, float or tuples of them; bool excluded)."""
    hints = _field_types(cls)
    return [f.name for f in dataclasses.fields(cls) if _field_kind(hints[f.name])[0] in (int, float)]


def unbounded_fields(cls: type) -> list[str]:
    """Numeric fields of ``cls`` lacking a declared lower (``min`` / ``gt``) or upper (``max``) bound."""
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
    return [n for n in numeric_fields(cls)
            if meta[n].get("max") is None or (meta[n].get("min") is None and meta[n].get("gt") is None)]


def _check_number(name: str, v: Any, inner: Any, many: bool, meta: Mapping[str, Any]) -> None:
    integer = inner is int
    noun = ("integers" if many else "an integer") if integer else ("finite values" if many else "a finite number")
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or (integer and not isinstance(v, numbers.Integral)):
        raise ConfigError(f"{name}: expected {'integers' if many else 'an integer'}, got {v!r}" if integer else
                          f"{name}: expected {'numbers' if many else 'a number'}, got {v!r}")
    lo, gt, hi = meta.get("min"), meta.get("gt"), meta.get("max")
    low = f" >= {_num(lo)}" if lo is not None else f" > {_num(gt)}" if gt is not None else ""
    if not math.isfinite(v):
        raise ConfigError(f"{name}: expected {noun}{low}, got {v}")
    if (lo is not None and v < lo) or (gt is not None and v <= gt):
        raise ConfigError(f"{name}: expected {noun}{low}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(f"{name}: expected {noun} <= {_num(hi)}, got {v}")


def check_options(cfg_or_cls: Any, values: Mapping[str, Any] | None = None) -> None:
    """Check every field against the range declared by :func:`option` (the one shared validator).

    ``check_options(cfg)`` checks a config instance; ``check_options(cls, values)`` checks a
    mapping of field values (missing ones take the defaults) before ``cls`` is constructed.
    Raises :class:`ConfigError` ``<name>: expected <what>, got <value>``.
    """
    cls = cfg_or_cls if isinstance(cfg_or_cls, type) else type(cfg_or_cls)
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if values is None:
            v = getattr(cfg_or_cls, f.name)
        elif f.name in values:
            v = values[f.name]
        elif f.default is not dataclasses.MISSING:
            v = f.default
        else:
            continue
        inner, many, optional = _field_kind(hints[f.name])
        meta = f.metadata
        if v is None and optional:
            continue
        items = tuple(v) if many and isinstance(v, (tuple, list)) else (v,)
        if many and not items and meta.get("nonempty", True):
            raise ConfigError(f"{f.name}: expected at least one value")
        if many and meta.get("unique"):
            dup = sorted({str(x) for x in items if items.count(x) > 1})
            if dup:
                raise ConfigError(f"{f.name}: expected each value once, got {', '.join(dup)} more than once")
        for x in items:
            if inner in (int, float):
                _check_number(f.name, x, inner, many, meta)
            elif typing.get_origin(inner) is typing.Literal and x not in typing.get_args(inner):
                want = ", ".join(map(str, typing.get_args(inner)))
                raise ConfigError(f"{f.name}: expected one of {want}; got {x!r}")
            elif meta.get("choices") is not None and x not in meta["choices"]:
                want = ", ".join(repr(c) if c == "" else c for c in meta["choices"])
                raise ConfigError(f"{f.name}: expected {'values among' if many else 'one of'} {want}; got {x!r}")
            elif meta.get("pattern") is not None and not (isinstance(x, str) and re.fullmatch(meta["pattern"], x)):
                raise ConfigError(f"{f.name}: expected {meta.get('help') or meta['pattern']}; got {x!r}")


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (psutil if installed, else ``os.sysconf``), or None."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - psutil missing or unusable: fall back
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def check_memory(cfg: Any) -> None:
    """Refuse a config whose ``memory_estimate()`` for one cell exceeds half of the machine's memory.

    ``memory_estimate() -> (bytes, names, detail)``: the estimated peak bytes of one cell, the
    settings it scales with (``"n_students, ks"``) and how the estimate is made up.
    """
    est = getattr(cfg, "memory_estimate", None)
    total = machine_memory_bytes()
    if not callable(est) or not total:
        return
    need, names, detail = est()
    if need > total / 2:
        raise ConfigError(f"{names}: expected settings whose arrays fit in half of this machine's memory "
                          f"({_bytes(total / 2)}), got an estimated {_bytes(need)} per cell ({detail}); "
                          "reduce them")


def renamed_fields(cls: type) -> dict[str, str]:
    """``{old name: new name}`` of ``cls``: its ``_renamed`` class attributes merged along the MRO
    (a subclass's entries win)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("_renamed", None) or {})
    return out


def _rename_keys(cls: type, data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``data`` with deprecated (renamed) keys mapped to their new names, warning once per key."""
    renamed = renamed_fields(cls)
    out: dict[str, Any] = {}
    for key, val in data.items():
        new = renamed.get(key)
        if new is None:
            out[key] = val
            continue
        if new in data or new in out:
            raise ConfigError(f"{key}: given in {source} together with its new name {new!r}; keep only {new!r}")
        warnings.warn(f"{source}: config key {key!r} is deprecated; use {new!r}", FutureWarning, stacklevel=3)
        out[new] = val
    return out


def _check_keys(cls: type, data: Mapping[str, Any], source: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {key!r} in {source}; valid keys: {', '.join(names)}")


def build_config(cls: type, *layers: tuple[Mapping[str, Any], str]) -> Any:
    """Build ``cls`` from layers of (mapping, source-name); later layers win.

    Old names of renamed fields (``cls._renamed``) are read as the new ones, with a deprecation warning.

    The declared ranges of every field are checked first (:func:`check_options`), then
    ``__post_init__`` runs its relational checks (a ``ValueError`` there becomes
    :class:`ConfigError`), then the memory estimate (:func:`check_memory`).
    """
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    for data, source in layers:
        data = _rename_keys(cls, data, source)
        _check_keys(cls, data, source)
        for key, val in data.items():
            values[key] = coerce_value(val, hints[key], key)
    check_options(cls, values)
    try:
        cfg = cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    check_memory(cfg)
    return cfg


def parse_overrides(cls: type, items: list[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (raw strings; typed by :func:`build_config`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        key = key.strip().replace("-", "_")
        out[key] = val.strip()
    out = _rename_keys(cls, out, "--set")
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
    """Stable short hash of a config's values.

    A field renamed through ``_renamed`` is hashed under its old name, so cell records written before
    the rename (whose ids hash this fingerprint) stay valid.
    """
    old = {new: prev for prev, new in renamed_fields(type(cfg)).items()}
    blob = json.dumps({old.get(k, k): v for k, v in config_to_dict(cfg).items()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe_fields(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each field: for ``uqkd show``-style help."""
    hints = _field_types(cls)
    return [
        (f.name, _type_name(hints[f.name]), f.default, f.metadata.get("help", ""))
        for f in dataclasses.fields(cls)
    ]
