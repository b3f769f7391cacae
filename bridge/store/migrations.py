"""Versioned schema migrations: ``migrations/<backend>/NNNN_name.sql``, applied in order.

A database whose schema is newer than the code is refused (never touched);
one that is behind is migrated at start-up (``storage.migrate``, the default)
or by ``bridge migrate``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from bridge.store.base import StoreUnavailable

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class SchemaError(StoreUnavailable):
    """The database's schema can't be used by this bridge as it is."""


@functools.cache
def migrations(backend: str) -> tuple[Migration, ...]:
    folder = resources.files("bridge.store").joinpath("migrations", backend)
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return tuple(sorted(found, key=lambda m: m.version))


def latest(backend: str) -> int:
    return migrations(backend)[-1].version


def pending(backend: str, current: int | None) -> list[Migration]:
    """What to apply to a database at ``current``; SchemaError if it is newer than the code."""
    newest = latest(backend)
    if current is not None and current > newest:
        raise SchemaError(
            f"the database schema is version {current}, newer than this bridge ({newest}); "
            "upgrade the bridge"
        )
    return [m for m in migrations(backend) if current is None or m.version > current]


def behind(backend: str, current: int | None) -> SchemaError:
    return SchemaError(
        f"the database schema is version {current or 0}, this bridge needs {latest(backend)}: "
        "run `bridge migrate` (or set storage.migrate: true)"
    )
