"""A registry of named classes, so configs pick parts by name (ESPnet style).

``ENCODERS.build("lstm", {"hidden_size": 256}, input_dim=80)`` looks the class up
and calls it; an unknown name, or an option the class does not take, is an error
that lists what is available instead of being silently dropped.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


class RegistryError(ValueError):
    """A config names a part or an option that does not exist."""


class Registry:
    """Maps names to classes (or factories) of one kind, e.g. encoders or pooling layers."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable:
        """Class decorator: ``@ENCODERS.register("lstm")``."""

        def decorate(cls):
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        """The class registered as ``name``."""
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def options(self, name: str) -> list[str]:
        """Options that a config may set for ``name`` (its constructor's keyword arguments)."""
        signature = inspect.signature(self.get(name))
        return [p.name for p in signature.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def build(self, name: str, conf: dict[str, Any] | None = None, **fixed: Any) -> Any:
        """Instantiate ``name`` with options ``conf`` plus ``fixed`` arguments set by the caller."""
        conf = dict(conf or {})
        allowed = set(self.options(name)) - set(fixed)
        unknown = sorted(set(conf) - allowed)
        if unknown:
            raise RegistryError(
                f"{self.kind} {name!r} has no option(s) {', '.join(unknown)}; "
                f"its options are: {', '.join(sorted(allowed)) or '(none)'}")
        return self.get(name)(**conf, **fixed)
