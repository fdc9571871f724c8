"""Words for messages: counts with their nouns in the right number ("1 epoch", "3 epochs")."""

from __future__ import annotations


def count(n: int | float, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, pluralized unless n is 1 (with `plural`, or by adding an s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
