"""Typed configs from YAML: a dataclass per config, checked when it is read.

Every config class (the experiment, the features) is built by
:func:`dataclass_from_dict`, so each gets the same checks, each an error that
names the file and the key:

- an unknown key (``num_mel_binz: 40``);
- a value of the wrong type for the field's annotation: a float where a whole
  number is expected (``epochs: 12.5``), a string where a boolean or a number is
  (``preload: "no"``, ``batch_size: "64"``); a whole number is a valid float;
- a key set twice in one YAML mapping (by :class:`UniqueKeyLoader`; PyYAML would
  silently keep the last value).
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping sets the same key twice."""

    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(key, line, first_line)
        self.key, self.line, self.first_line = key, line, first_line

    def __str__(self) -> str:
        return (f"line {self.line}: duplicate key {self.key!r} (first set on line {self.first_line}); "
                f"keep only one of them")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key set twice in one mapping is a :class:`DuplicateKeyError`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by the keys beside it
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, line, seen[key])
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML's own error says so below
                pass
        return super().construct_mapping(node, deep=deep)


def load_yaml(stream: Any) -> Any:
    """Parse YAML text (or an open file) safely; a duplicate key raises :class:`DuplicateKeyError`."""
    return yaml.load(stream, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is an empty mapping).

    Invalid YAML, a duplicate key and a top level that is not a mapping raise
    ``error`` naming ``path`` (and the line).
    """
    try:
        with open(path) as handle:
            values = load_yaml(handle)
    except DuplicateKeyError as err:
        raise error(f"{path}, {err}") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise error(f"{path}: expected a mapping of key: value")
    return values


def dataclass_from_dict(cls: type[T], values: dict[str, Any], source: str, error: type[Exception]) -> T:
    """Build the dataclass ``cls`` from ``values``; unknown keys or bad values raise ``error`` naming ``source``.

    Each value is checked against its field's type annotation (:func:`check_types`)
    before ``cls`` is built, so its own checks (``__post_init__``) see values of the right types.
    """
    if not isinstance(values, dict):
        raise error(f"{source}: expected a mapping of key: value, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known, key=str)
    if unknown:
        raise error(f"{source}: unknown key(s) {', '.join(map(str, unknown))}; "
                    f"known keys: {', '.join(sorted(known))}")
    try:
        check_types(cls, values, error)
        return cls(**values)
    except (error, TypeError) as err:
        raise error(f"{source}: {err}") from None


def check_types(cls: type, values: dict[str, Any], error: type[Exception], prefix: str = "") -> None:
    """Raise ``error`` (``"<prefix><key>: expected ..., got ..."``) for the first value of the wrong type.

    ``values`` maps field names of the dataclass ``cls`` to values; names that are
    not fields are left to the caller.
    """
    hints = _field_types(cls)
    for name, value in values.items():
        if name in hints:
            problem = type_problem(value, hints[name])
            if problem:
                raise error(f"{prefix}{name}: {problem}")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in names}


def type_problem(value: Any, annotation: Any) -> str | None:
    """None when ``value`` (as read from YAML) fits ``annotation``, else ``"expected ..., got ..."``."""
    if _fits(value, annotation):
        return None
    problem = f"expected {describe_type(annotation)}, got {value!r}"
    if isinstance(value, str):
        try:
            unquoted = yaml.safe_load(value)
        except yaml.YAMLError:
            unquoted = value
        if not isinstance(unquoted, str) and _fits(unquoted, annotation):
            problem += " (a quoted string: write it without quotes)"
    return problem


def is_whole_number(value: Any) -> bool:
    """An ``int`` (YAML ``12``), not a float (``12.5``, ``12.0``) nor a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An ``int`` or a ``float``, not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return is_whole_number(value)
    if annotation is float:
        return is_number(value)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(item, args[0]) for item in value)
        return len(value) == len(args) and all(_fits(item, arg) for item, arg in zip(value, args))
    if origin is list:
        return isinstance(value, list) and (not args or all(_fits(item, args[0]) for item in value))
    if origin is dict:
        return isinstance(value, dict) and (not args or all(
            _fits(key, args[0]) and _fits(item, args[1]) for key, item in value.items()))
    if annotation is type(None):
        return value is None
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    raise TypeError(f"config field type {annotation!r} is not supported by spk.configs")


_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "null",
          Any: "any value"}


def describe_type(annotation: Any) -> str:
    """The annotation in words, as an error message shows it (``tuple[int, int]``: ``a list of 2 whole numbers``)."""
    if annotation in _NAMES:
        return _NAMES[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list [{', '.join(describe_type(arg) for arg in args)}]"
    if origin is list:
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping of key: value"
    return getattr(annotation, "__name__", str(annotation))


def _plural(annotation: Any) -> str:
    words = describe_type(annotation)
    for singular, plural in (("a whole number", "whole numbers"), ("a number", "numbers"), ("a string", "strings"),
                             ("true or false", "booleans")):
        if words == singular:
            return plural
    return f"items ({words})"
