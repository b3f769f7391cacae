"""The SQLite store: the embedded default. One file, WAL, ``synchronous=FULL``.

One thread owns the connection. Every operation is queued to it; whatever is
queued together runs in ONE transaction (each operation in its own savepoint)
and ONE commit, and no caller hears back before that commit: group commit, so
that concurrent webhooks share one fsync and each is acknowledged only once its
event is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bridge import metrics
from bridge.model import Attempt, Customer, Delivery, Purchase
from bridge.store import params
from bridge.store.base import Finish, Ingest, QueueStats, StoredEvent, StoreUnavailable
from bridge.store.migrations import behind, pending
from bridge.store.rows import attempt_from_row, delivery_from_row
from bridge.store.sql import queries

T = TypeVar("T")
_BATCH = 512
_SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}  # nothing else reaches the PRAGMA
_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
)


def _statements(script: str) -> list[str]:
    """A migration's statements (sqlite3 runs one at a time inside our own transaction)."""
    out, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            out.append(buffer.strip())
            buffer = ""
    return [s for s in out if s]


_Op = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def path_of(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (sqlite:///path/to/file.db)")
    return url[len("sqlite:///") :] or ":memory:"


class SQLiteStore:
    def __init__(self, url: str, synchronous: str = "FULL", migrate: bool = True) -> None:
        self.path = path_of(url)
        self.synchronous = synchronous
        self.auto_migrate = migrate
        self._sql = queries("sqlite.sql")
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after new deliveries are committed (in this process)."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # --- the connection's thread --------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._ready.clear()
        self._open_error = None
        self._thread = threading.Thread(target=self._run, name="sqlite-store", daemon=True)
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self._open_error is not None:
            self._thread = None
            if isinstance(self._open_error, StoreUnavailable):
                raise self._open_error
            raise StoreUnavailable(f"cannot open {self.path}: {self._open_error}")

    async def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.executescript(self._sql["pragmas"])
            conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.synchronous]}")
            # a newer bridge's database is refused before anything here touches it
            has_versions = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            version = None
            if has_versions:
                version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            todo = pending("sqlite", version)
            if todo and not self.auto_migrate:
                raise behind("sqlite", version)
            for migration in todo:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_VERSIONS)
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (migration.version, time.time()),
                )
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError, StoreUnavailable) as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            metrics.INGEST_BATCH.observe(len(batch))
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        """All of ``batch`` in one transaction and one commit. If one operation fails, the
        transaction is rolled back and each is run again on its own, so that one caller's
        failure is never another's."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            values = [op[0](conn) for op in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if len(batch) > 1 and not _storage_failure(exc):
                for op in batch:
                    self._run_batch(conn, [op])
                return
            failure = StoreUnavailable(f"SQLite: {exc}") if isinstance(exc, sqlite3.Error) else exc
            for _fn, future, loop in batch:
                loop.call_soon_threadsafe(_settle, future, None, failure)
            return
        for (_fn, future, loop), value in zip(batch, values, strict=True):
            loop.call_soon_threadsafe(_settle, future, value, None)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, future, loop))
        return await future

    # --- the Store protocol -------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def ingest(self, item: Ingest, now: float) -> bool:
        sql = self._sql

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(sql["insert_event"], params.event_row(item, now)).fetchone()
            if row is None:
                return False
            resolved = None
            for ref in item.link_refs:
                found = conn.execute(
                    sql["find_ref"], {"source": item.event.source, "ref": ref}
                ).fetchone()
                if found is not None:
                    resolved = found["txn_id"]
                    break
            conn.executemany(
                sql["insert_delivery"], params.delivery_rows(item, row[0], resolved, now)
            )
            conn.executemany(sql["remember_ref"], params.ref_rows(item, now))
            if item.cumulative is not None:
                key = {"source": item.event.source, "ref": item.cumulative[0]}
                before = conn.execute(sql["refund_total"], key).fetchone()
                baseline = before["refunded"] if before is not None else 0
                conn.execute(sql["set_baseline"], {"baseline": baseline, "id": row[0]})
                conn.execute(
                    sql["set_refund_total"], {**key, "refunded": item.cumulative[1], "now": now}
                )
            return True

        stored = await self._call(op)
        if stored:
            self._notify()
        return stored

    async def purchase(self, source: str, refs: list[str]) -> Purchase | None:
        sql = self._sql["find_ref"]

        def op(conn: sqlite3.Connection) -> Purchase | None:
            for ref in refs:
                row = conn.execute(sql, {"source": source, "ref": ref}).fetchone()
                if row is not None:
                    return Purchase(
                        row["txn_id"],
                        Customer(row["customer_id"], row["external_id"], row["email"], row["name"]),
                    )
            return None

        return await self._call(op)

    async def claim(
        self, destination: str, limit: int, now: float, lease: float, worker: str
    ) -> list[Delivery]:
        sql = self._sql

        def op(conn: sqlite3.Connection) -> list[Delivery]:
            ids = [
                row[0]
                for row in conn.execute(
                    sql["claim"],
                    {
                        "destination": destination,
                        "limit": limit,
                        "now": now,
                        "lease_until": now + lease,
                        "worker": worker,
                    },
                ).fetchall()
            ]
            if not ids:
                return []
            rows = conn.execute(sql["select_claimed"], {"ids": json.dumps(ids)}).fetchall()
            return [delivery_from_row(row) for row in rows]

        return await self._call(op)

    async def finish(self, item: Finish, now: float) -> bool:
        sql = self._sql
        attempt = params.attempt_row(item)

        def op(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(sql["finish"], params.finish_row(item, now)).rowcount
            if changed and attempt is not None:
                conn.execute(sql["insert_attempt"], attempt)
            return bool(changed)

        return await self._call(op)

    async def release(self, worker: str | None, now: float) -> int:
        sql = self._sql["release"]
        params = {"worker": worker or "", "all_workers": worker is None, "now": now}
        return await self._call(lambda conn: conn.execute(sql, params).rowcount)

    async def next_due(self) -> float | None:
        sql = self._sql["next_due"]
        value = await self._call(lambda conn: conn.execute(sql).fetchone()[0])
        return None if value is None else float(value)

    async def get(self, delivery_id: int) -> tuple[Delivery, list[Attempt]] | None:
        sql = self._sql

        def op(conn: sqlite3.Connection) -> tuple[Delivery, list[Attempt]] | None:
            row = conn.execute(sql["get_delivery"], {"id": delivery_id}).fetchone()
            if row is None:
                return None
            attempts = conn.execute(sql["list_attempts"], {"id": delivery_id}).fetchall()
            return delivery_from_row(row), [attempt_from_row(a) for a in attempts]

        return await self._call(op)

    async def deliveries(
        self,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        sql = self._sql["list_deliveries"]
        params = {"status": status, "destination": destination, "since": since, "limit": limit}
        rows = await self._call(lambda conn: conn.execute(sql, params).fetchall())
        return [delivery_from_row(row) for row in rows]

    async def redrive(self, ids: list[int], now: float) -> list[int]:
        sql = self._sql["redrive"]

        def op(conn: sqlite3.Connection) -> list[int]:
            return [i for i in ids if conn.execute(sql, {"id": i, "now": now}).rowcount]

        done = await self._call(op)
        if done:
            self._notify()
        return done

    async def counts(self) -> dict[str, int]:
        sql = self._sql["count_by_status"]
        rows = await self._call(lambda conn: conn.execute(sql).fetchall())
        return {row["status"]: row["n"] for row in rows}

    async def queue(self) -> dict[str, QueueStats]:
        sql = self._sql["queue"]
        rows = await self._call(lambda conn: conn.execute(sql).fetchall())
        return {r["destination"]: QueueStats(r["depth"], r["oldest"], r["dead"]) for r in rows}

    async def events(self, limit: int = 100) -> list[StoredEvent]:
        sql = self._sql["list_events"]
        rows = await self._call(lambda conn: conn.execute(sql, {"limit": limit}).fetchall())
        return [
            StoredEvent(
                row["id"],
                row["source"],
                row["event_id"],
                row["type"],
                row["received_at"],
                json.loads(row["deliveries"] or "{}"),
            )
            for row in rows
        ]

    async def prune(self, events_before: float, refs_before: float) -> int:
        sql = self._sql

        def op(conn: sqlite3.Connection) -> int:
            pruned = conn.execute(sql["prune_events"], {"before": events_before}).rowcount
            conn.execute(sql["prune_refs"], {"before": refs_before})
            conn.execute(sql["prune_refund_totals"], {"before": refs_before})
            return int(pruned)

        return await self._call(op)


def _storage_failure(exc: BaseException) -> bool:
    """Failures of the database itself (full, read-only, locked, I/O): no retry one by one."""
    return isinstance(exc, sqlite3.OperationalError) and not isinstance(exc, sqlite3.IntegrityError)


def _settle(future: asyncio.Future[Any], value: Any, failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(value)
