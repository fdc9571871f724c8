"""Registries map the names used in YAML files to the classes that implement them.

Each kind (layer, loss, optimizer, schedule, initializer, dataset) has one registry; a class
registers itself where it is defined:

    LAYERS = Registry("layer")

    @LAYERS.register("relu")
    class ReLU(Layer): ...

An unknown name is a `ConfigError` that lists the valid names and suggests the closest one.
Names other libraries use (Keras' `Dense`, `categorical_crossentropy`) are not accepted, but
a class can list them as `hints` so that the error names its nncli name:

    @LAYERS.register("linear", hints=("dense",))      # unknown layer "Dense" (nncli calls it "linear")

and an option another library spells differently as `option_hints` on the class
(`{"rate": "p"}` for dropout). Hints compare names without case or underscores.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from nncli.errors import ConfigError
from nncli.messages import did_you_mean

T = TypeVar("T")


def _plain(name: str) -> str:
    """A name as hints compare it: `MaxPooling2D`, `max_pooling2d` -> `maxpooling2d`."""
    return name.lower().replace("_", "")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._canonical: dict[str, str] = {}
        self._hints: dict[str, str] = {}  # plain name -> what the error says about it

    def register(self, name: str, *aliases: str, hints: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering an object under `name` (and `aliases`, which resolve to it).
        `hints` are other libraries' names for it: not accepted, but named in the error."""

        def add(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._entries:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
                self._entries[key] = obj
                self._canonical[key] = name
            for other in hints:
                self.hint(other, f'nncli calls it "{name}"')
            obj.registered_name = name  # type: ignore[attr-defined]
            return obj

        return add

    def hint(self, other: str, text: str) -> None:
        """Say `text` in the error for the unknown name `other` (compared without case or
        underscores): what to write instead."""
        self._hints[_plain(other)] = text

    def suggestion(self, name: str) -> str:
        """' (...)' for an unknown `name`: its hint, the registered name it spells in other
        case or underscores, or the closest name; '' when nothing is close."""
        if _plain(name) in self._hints:
            return f" ({self._hints[_plain(name)]})"
        same = [key for key in self._entries if _plain(key) == _plain(name)]
        if same:
            return f' (did you mean "{same[0]}"?)'
        return did_you_mean(name, list(self._entries))

    def get(self, name: str) -> T:
        if not isinstance(name, str):
            raise ConfigError(f"expected the name of a {self.kind}, got {name!r}")
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise ConfigError(
                f'unknown {self.kind} "{name}"{self.suggestion(name)}; valid names: {valid}'
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


def check_options(factory: Callable, options: dict[str, Any], skip: tuple[str, ...] = (),
                  also: tuple[str, ...] = ()) -> None:
    """Raise `ConfigError` for an option `factory` does not take, or a required one missing.
    An option named in the factory's `option_hints` ({other library's name: nncli's, or a
    tuple of nncli's where one option of theirs is several here}) gets nncli's names in the
    error. `also`: the options the caller takes out of `options` before (the optimizer's
    weight decay, for the regularizer), named among the valid ones and suggested for typos."""
    names, required = accepted_options(factory)
    names = [n for n in names if n not in skip]
    valid_names = [*names, *(n for n in also if n not in names)]
    hints = {_plain(k): (v,) if isinstance(v, str) else tuple(v)
             for k, v in getattr(factory, "option_hints", {}).items()}
    hints = {k: v for k, v in hints.items() if all(name in valid_names for name in v)}
    for key in options:
        if key not in names:
            valid = ", ".join(valid_names) if valid_names else "none"
            hint = hints.get(_plain(str(key)))
            if hint:
                called = " and ".join(f'"{name}"' for name in hint)
                suggestion = f" (nncli calls {'it' if len(hint) == 1 else 'them'} {called})"
            else:
                suggestion = did_you_mean(str(key), valid_names)
            raise ConfigError(f"unknown option{suggestion}; valid options: {valid}", key=str(key))
    missing = [key for key in required if key not in skip and key not in options]
    if len(missing) == 1:
        raise ConfigError("this option is required", key=missing[0])
    if missing:  # all of them at once, not one per attempt
        raise ConfigError(f"missing required options {', '.join(missing)}")
