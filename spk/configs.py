"""Typed configs from YAML: a dataclass per config, unknown keys are errors that name them."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], values: dict[str, Any], source: str, error: type[Exception]) -> T:
    """Build the dataclass ``cls`` from ``values``; unknown keys or bad values raise ``error`` naming ``source``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except (error, TypeError) as err:
        raise error(f"{source}: {err}") from None


def read_yaml_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is an empty mapping)."""
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise error(f"{path}: expected a mapping of key: value")
    return values
