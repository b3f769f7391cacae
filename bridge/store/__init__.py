"""Storage backends behind one protocol; chosen by the table's ``storage.url``."""

from __future__ import annotations

from bridge.store.base import Finish, Ingest, Store, StoredEvent, StoreUnavailable
from bridge.store.sqlite import SQLiteStore

__all__ = [
    "Finish",
    "Ingest",
    "SQLiteStore",
    "Store",
    "StoreUnavailable",
    "StoredEvent",
    "connect",
]


def connect(url: str) -> Store:
    if url.startswith("sqlite:///"):
        return SQLiteStore(url)
    raise ValueError(f"unsupported storage.url {url.split(':', 1)[0]!r}: use sqlite:///path")
