"""Checks shared by the configuration sections: value types against annotations, ranges, unknown keys."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "check_type", "describe", "from_mapping", "positive"]


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key and the fix."""


def describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_type(key: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against a simple annotation (bool, int, float, str, dict, list, unions, Literal)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                return check_type(key, value, option)
            except ConfigError as error:
                errors.append(error)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(f"{key} must be {_annotation_name(annotation)}, got {describe(value)}.")
        )
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{key} must be one of {list(typing.get_args(annotation))}, got {describe(value)}.")
        return value
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"{key} must be null, got {describe(value)}.")
        return value
    if annotation is Any:
        return value
    expected = origin or annotation
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key} must be {_annotation_name(annotation)}, got {describe(value)}.")
    if isinstance(expected, type) and not isinstance(value, expected):
        raise ConfigError(f"{key} must be {_annotation_name(annotation)}, got {describe(value)}.")
    return value


def _annotation_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_annotation_name(option) for option in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(option) for option in typing.get_args(annotation))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             list: "a list", type(None): "null"}  # fmt: skip
    return names.get(origin or annotation, getattr(annotation, "__name__", str(annotation)))


def positive(key: str, value: int | float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{key} must be positive, got {value!r}.")


def from_mapping(cls: type, section: str, values: Any) -> Any:
    """A dataclass from a config mapping: unknown keys and wrong types raise :class:`ConfigError` naming the key."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"Section {section!r} must be a mapping, got {describe(values)}.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    if unknown := sorted(set(values) - known):
        raise ConfigError(f"Unknown key(s) {unknown} in section {section!r}; known: {sorted(known)}.")
    kwargs = {name: check_type(f"{section}.{name}", value, hints[name]) for name, value in values.items()}
    return cls(**kwargs)
