"""Storage backends behind one protocol; chosen by the table's ``storage.url``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.store.base import Finish, Ingest, Store, StoredEvent, StoreUnavailable

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    """``SQLiteStore`` on first use: the store's writer process imports this package too,
    and needs none of the bridge's side of the store."""
    if name == "SQLiteStore":
        from bridge.store.sqlite import SQLiteStore

        return SQLiteStore
    raise AttributeError(name)


def connect(url: str, migrate: bool = True, synchronous: str = "FULL") -> Store:
    """``sqlite:///path`` or ``postgresql://...`` (needs the ``postgres`` extra)."""
    if url.startswith("sqlite:///"):
        from bridge.store.sqlite import SQLiteStore

        return SQLiteStore(url, synchronous=synchronous, migrate=migrate)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from bridge.store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError(
                "storage.url is PostgreSQL but psycopg is not installed: "
                "pip install 'payment-webhook-bridge[postgres]'"
            ) from exc
        return PostgresStore(url, migrate=migrate)
    raise ValueError(
        f"unsupported storage.url scheme {url.split(':', 1)[0]!r}: use sqlite:///path or postgresql://..."
    )
