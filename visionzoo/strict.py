"""Strict parsing of plain dicts into dataclasses, shared by the config loader (`visionzoo.config`) and the
data-set registry (`visionzoo.datasets.registry`): one place decides what "wrong type" means.

It sits below both (it imports nothing of visionzoo), so the registry can type `data.params` without
importing the config package, which itself imports the tasks.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

_UNION_TYPES = (Union, getattr(types, "UnionType", Union))  # X | Y is types.UnionType on Python >= 3.10

__all__ = ["ConfigError", "Mismatch", "coerce", "from_dict", "params_from_dict", "type_name"]


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the file, key and value."""


class Mismatch(Exception):
    """A value does not have the type a field declares."""


def type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in _UNION_TYPES:
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp, key: str, where: str):
    """`value` as type `tp` (ints widen to float, nested dataclasses are parsed); Mismatch when it is not one."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in _UNION_TYPES:
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, key, where)
            except (Mismatch, ConfigError):
                continue
        raise Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise Mismatch
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise Mismatch
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise Mismatch
        return from_dict(tp, value, where, prefix=key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise Mismatch
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise Mismatch
        args = typing.get_args(tp)
        if args:
            return {k: coerce(v, args[1], f"{key}.{k}", where) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise Mismatch
    raise TypeError(f"config schema: unsupported type {tp!r} for {key}")


def from_dict(cls, data: dict, where: str = "config", prefix: str = ""):
    """Build dataclass `cls` from `data`, strictly: unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'{hint}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        try:
            kwargs[name] = coerce(value, hints[name], prefix + name, where)
        except Mismatch:
            raise ConfigError(
                f"{where}: '{prefix}{name}' = {value!r} has the wrong type: expected {type_name(hints[name])}"
            ) from None
    return cls(**kwargs)


def params_from_dict(cls, data: dict, prefix: str, what: str):
    """Dataclass `cls` from a free-form parameter mapping such as `data.params`. An unknown key is named
    with the closest known one and the whole known list (a typo must not be silently ignored); a wrong
    type names key, value and expected type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), names, n=1)
        raise ConfigError(f"{prefix}{k} is not a {what}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (known: {', '.join(names)})")
    kwargs = {}
    for key, value in data.items():
        try:
            kwargs[key] = coerce(value, hints[key], prefix + key, what)
        except Mismatch:
            raise ConfigError(f"{prefix}{key} = {value!r} has the wrong type: expected {type_name(hints[key])}") \
                from None
    return cls(**kwargs)
