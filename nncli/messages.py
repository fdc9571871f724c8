"""Words for messages: counts with their nouns in the right number ("1 epoch", "3 epochs") and
the suggestion for a misspelt name (' (did you mean "adam"?)')."""

from __future__ import annotations

import difflib


def count(n: int | float, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, pluralized unless n is 1 (with `plural`, or by adding an s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def did_you_mean(name: str, choices: list[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
