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


_VALUES_ROW = re.compile(r"VALUES \((?:\?, )*\?\)")


@functools.lru_cache(maxsize=512)
def many(sql: str, rows: int) -> str:
    """``sql`` with its one ``VALUES (?, ...)`` row repeated ``rows`` times."""
    match = _VALUES_ROW.search(sql)
    if match is None:
        raise ValueError("no VALUES (?, ...) row to repeat")
    row = match.group(0)[len("VALUES ") :]
    return sql[: match.start()] + "VALUES " + ", ".join([row] * rows) + sql[match.end() :]
