"""Durations in the table: a number of seconds, or a string such as ``500ms``, ``5m``, ``3d``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds as a float; ValueError names the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 500ms, 5m, 3d")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("a duration must be a finite number of seconds >= 0") from None
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        try:
            number = Decimal(match.group(1))
        except InvalidOperation:  # pragma: no cover - the pattern admits only digits
            raise ValueError(f"not a duration: {value!r}") from None
        seconds = float(number * Decimal(str(_UNITS[match.group(2) or "s"])))
    else:
        raise ValueError(
            f"not a duration: {str(value)[:32]!r} (a number of seconds, or 500ms, 5m, 2h, 3d)"
        )
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("a duration must be a finite number of seconds >= 0")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
