"""Typed-config helpers shared by every component's ``XxxConfig`` dataclass.

Each component owns its config dataclass (``BackboneConfig`` beside the backbone, and so on);
this module only converts between dataclasses and plain dicts, applies YAML overrides and
``--set key=value`` strings, and rejects unknown keys with the list of valid ones.

A config class whose mapping picks one of several subclasses (the stage kinds) defines a
classmethod ``config_class_for(data, where) -> type``: :func:`from_dict` builds the class it
returns (which may also raise a clearer error for a key of another subclass).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from wrel.core.bounded import MAX_CONFIG_BYTES, read_limited, safe_yaml_load

T = TypeVar("T")

__all__ = [
    "from_dict",
    "to_dict",
    "merge",
    "parse_assignment",
    "apply_overrides",
    "load_yaml",
    "flatten",
]


def to_dict(cfg: Any) -> Any:
    """Convert a (nested) config dataclass to plain JSON-able Python values."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {value!r} does not match {tp}: {'; '.join(errors)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):  # lists, mappings, dates, bools and inf (for int) are refused
        what = "an integer" if tp is int else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where}: expected {what}, got {value!r}")
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        try:
            return tp(value)
        except (ValueError, OverflowError):
            raise ValueError(f"{where}: expected {what}, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str | int | float):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ValueError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursively; unknown keys raise ``ValueError``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    pick = getattr(cls, "config_class_for", None)
    target: Any = cls if pick is None else pick(data, where)  # e.g. a stage kind's class
    hints = typing.get_type_hints(target)
    fields = {f.name: f for f in dataclasses.fields(target) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key(s) {[prefix + k for k in unknown]} for {target.__name__}; "
            f"valid keys: {sorted(fields)}"
        )
    kwargs = {
        name: _coerce(hints[name], value, f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    return target(**kwargs)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, others replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_assignment(text: str) -> dict[str, Any]:
    """Turn ``"a.b.c=value"`` into ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML."""
    import yaml

    if "=" not in text:
        raise ValueError(f"--set expects key=value (for example optim.lr=3e-5), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set: bad key in {text!r}")
    try:
        value = safe_yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"--set {key}: {_yaml_problem(err)}") from err
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML overrides file (a mapping at the top level).

    Bounded (:mod:`wrel.core.bounded`): at most 16 MiB, nesting at most 64 levels, and no
    aliases (``*name``), so a small file cannot expand into gigabytes.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    raw = read_limited(path, MAX_CONFIG_BYTES, "config file", "a config holds overrides only")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text: {err}") from err
    try:
        data = safe_yaml_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path}: {_yaml_problem(err)}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping at its top level")
    return data


def _yaml_problem(err: Exception) -> str:
    """One line for a YAML error; language tags (``!!python/object``) get their own advice."""
    import yaml

    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if problem and mark is not None:
        text = f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    else:
        text = " ".join(str(err).split())
    if isinstance(err, yaml.constructor.ConstructorError):
        return (
            f"unsupported YAML tag ({text}); wrel reads plain YAML (mappings, lists, "
            "strings, numbers, booleans): tags such as !!python/object are refused"
        )
    return f"invalid YAML: {text}"


def apply_overrides(
    cls: type[T],
    base: T | dict[str, Any] | None = None,
    *,
    yaml_files: typing.Sequence[str | Path] = (),
    assignments: typing.Sequence[str] = (),
) -> T:
    """Resolve a config: defaults of ``cls`` <- ``base`` <- YAML files <- ``key=value`` strings."""
    data: dict[str, Any] = to_dict(base) if base is not None else to_dict(cls())
    for path in yaml_files:
        data = merge(data, load_yaml(path))
    for text in assignments:
        data = merge(data, parse_assignment(text))
    return from_dict(cls, data)


def dumps(cfg: Any) -> str:
    """JSON text of a config, for run folders and checkpoints."""
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config dict as dotted keys: ``{"a": {"b": 1}, "s": [{"e": 2}]}`` -> ``{"a.b": 1,
    "s.length": 1, "s[0].e": 2}`` (lists of dicts by index, other lists kept as values)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {f"{prefix}.length": len(value)}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}
