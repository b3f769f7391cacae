"""Named SQL: a ``.sql`` file holds queries, each after a ``-- name: NAME`` line."""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@functools.cache
def queries(filename: str) -> dict[str, str]:
    text = resources.files("bridge.store").joinpath("sql", filename).read_text("utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
