"""Registries map the names used in YAML files to the classes that implement them.

Each kind (layer, loss, optimizer, schedule, initializer, dataset) has one registry; a class
registers itself where it is defined:

    LAYERS = Registry("layer")

    @LAYERS.register("relu")
    class ReLU(Layer): ...

An unknown name is a `ConfigError` that lists the valid names and suggests the closest one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from nncli.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering an object under `name` (and `aliases`, which resolve to it)."""

        def add(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._entries:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
                self._entries[key] = obj
                self._canonical[key] = name
            obj.registered_name = name  # type: ignore[attr-defined]
            return obj

        return add

    def get(self, name: str) -> T:
        if not isinstance(name, str):
            raise ConfigError(f"expected the name of a {self.kind}, got {name!r}")
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise ConfigError(
                f'unknown {self.kind} "{name}"{did_you_mean(name, list(self._entries))}; valid names: {valid}'
            ) from None

    def create(self, name: str, options: dict[str, Any] | None = None) -> Any:
        """Call the entry registered as `name` with `options` as keyword arguments.

        Option names are checked against the entry's signature first, so that a typo is a
        `ConfigError` keyed by the option (with a suggestion) rather than a `TypeError`.
        """
        factory = self.get(name)
        options = dict(options or {})
        check_options(factory, options)
        return factory(**options)

    def canonical(self, name: str) -> str:
        self.get(name)
        return self._canonical[name]

    def names(self) -> list[str]:
        """Canonical names, sorted (aliases left out)."""
        return sorted(set(self._canonical.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def accepted_options(factory: Callable) -> tuple[list[str], list[str]]:
    """(all keyword names, required keyword names) of a class or function."""
    params = inspect.signature(factory).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
    ]
    return names, required


def check_options(factory: Callable, options: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Raise `ConfigError` for an option `factory` does not take, or a required one missing."""
    names, required = accepted_options(factory)
    names = [n for n in names if n not in skip]
    for key in options:
        if key not in names:
            valid = ", ".join(names) if names else "none"
            raise ConfigError(
                f"unknown option{did_you_mean(str(key), names)}; valid options: {valid}", key=str(key)
            )
    missing = [key for key in required if key not in skip and key not in options]
    if len(missing) == 1:
        raise ConfigError("this option is required", key=missing[0])
    if missing:  # all of them at once, not one per attempt
        raise ConfigError(f"missing required options {', '.join(missing)}")
