"""Argument checks shared by every configurable class.

Each raises `ConfigError` keyed by the argument's name, so that the config loader can report
`file:line model[2].linear.units: expected a positive integer, got -3`.
"""

from __future__ import annotations

import numbers

from nncli.errors import ConfigError
from nncli.messages import did_you_mean


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


MAX_SEED = 2**63 - 1  # a seed fits a signed 64-bit integer


def shown(value: object) -> str:
    """`repr(value)`, but an integer too long to read (or to print: Python refuses beyond 4,300
    digits) as its number of digits."""
    if _is_int(value) and abs(int(value)) >= 10**30:
        try:
            return f"a number of {len(str(abs(int(value)))):,} digits"
        except ValueError:
            return f"a number of about {int(abs(int(value)).bit_length() * 0.30103) + 1:,} digits"
    return repr(value)


def _fail(key: str, expected: str, value: object):
    raise ConfigError(f"expected {expected}, got {shown(value)}", key=key)


def seed(key: str, value: object) -> int:
    """A seed: an integer from 0 to 2^63 - 1."""
    if not _is_int(value) or not 0 <= value <= MAX_SEED:
        _fail(key, "a non-negative integer up to 2^63 - 1", value)
    return int(value)


def positive_int(key: str, value: object) -> int:
    if not _is_int(value) or value <= 0:
        _fail(key, "a positive integer", value)
    return int(value)


def non_negative_int(key: str, value: object) -> int:
    if not _is_int(value) or value < 0:
        _fail(key, "a non-negative integer", value)
    return int(value)


def positive_float(key: str, value: object) -> float:
    if not _is_real(value) or not value > 0 or value != value or value == float("inf"):
        _fail(key, "a positive number", value)
    return float(value)


def non_negative_float(key: str, value: object) -> float:
    if not _is_real(value) or not value >= 0 or value == float("inf"):
        _fail(key, "a non-negative number", value)
    return float(value)


def real(key: str, value: object) -> float:
    if not _is_real(value) or value != value or abs(value) == float("inf"):
        _fail(key, "a finite number", value)
    return float(value)


def fraction(key: str, value: object, *, closed_low: bool = True, closed_high: bool = False) -> float:
    """A number in [0, 1) by default; the bounds' openness is adjustable."""
    ok = (
        _is_real(value)
        and (value >= 0 if closed_low else value > 0)
        and (value <= 1 if closed_high else value < 1)
    )
    if not ok:
        low, high = "[" if closed_low else "(", "]" if closed_high else ")"
        _fail(key, f"a number in {low}0, 1{high}", value)
    return float(value)


def boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        _fail(key, "true or false", value)
    return value


def one_of(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        hint = did_you_mean(value, list(choices)) if isinstance(value, str) else ""
        raise ConfigError(f"expected one of {', '.join(choices)}, got {value!r}{hint}", key=key)
    return value  # type: ignore[return-value]
