"""The SQLite store: the embedded default. One file, WAL, ``synchronous=FULL``.

Group commit: operations queue up; whatever is queued together runs in ONE
transaction with ONE commit, and no caller hears back before that commit, so
concurrent webhooks share one fsync and each is acknowledged only once its event
is durable. The statements run on the event loop's thread (they take
microseconds, and running them there spares a thread hand-off per operation);
BEGIN (which may wait for another process's lock) and COMMIT (the fsync) run on
a thread of their own. The new events of a commit, with their deliveries and
remembered purchases, are written by three multi-row INSERTs, not three
statements an event.

What only reads for a person or a scraper (``/metrics``' queue, the admin API's lists
and counts) runs on a second, read-only connection on a thread of its own: never
inside a write batch nor on the event loop (with a deep backlog the queue's query
takes tens of milliseconds), and never waiting for a writer (WAL readers don't).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from bridge import metrics
from bridge.model import Attempt, Customer, Delivery, Purchase
from bridge.store import params
from bridge.store.base import Finish, Ingest, QueueStats, StoredEvent, StoreUnavailable
from bridge.store.group import fail, resolve
from bridge.store.migrations import behind, pending
from bridge.store.rows import attempt_from_row, delivery_from_row
from bridge.store.sql import many, queries

T = TypeVar("T")
_BATCH = 512
_ROWS = 256  # rows per multi-row INSERT (SQLite binds at most 32,766 values to a statement)
_SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}  # nothing else reaches the PRAGMA


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


@dataclass(frozen=True)
class _NewEvent:
    """An ingest with nothing to look up (no refund to link, no cumulative total): written
    together with the other such events of its commit, a few statements for all of them."""

    item: Ingest
    now: float


@dataclass(frozen=True)
class _LinkedEvent:
    """An ingest that looks something up first (a refund's purchase, a cumulative refund
    total): statements of its own, in the same commit as the rest of its batch."""

    write: Callable[[sqlite3.Connection], bool]

    def __call__(self, conn: sqlite3.Connection) -> bool:
        return self.write(conn)


_Op = tuple[Callable[[sqlite3.Connection], Any] | _NewEvent, asyncio.Future[Any]]


def path_of(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (sqlite:///path/to/file.db)")
    path = url[len("sqlite:///") :]
    if not path:  # never a database in memory by accident: config.load refuses it too
        raise ValueError("sqlite:/// names no file (sqlite:///path/to/file.db, or :memory:)")
    return path


REDRIVE_CHUNK = 500  # deliveries redriven per commit


class SQLiteStore:
    def __init__(self, url: str, synchronous: str = "FULL", migrate: bool = True) -> None:
        self.path = path_of(url)
        self.synchronous = synchronous
        self.auto_migrate = migrate
        self._sql = queries("sqlite.sql")
        self._conn: sqlite3.Connection | None = None
        self._io: ThreadPoolExecutor | None = None
        self._reader: tuple[sqlite3.Connection, ThreadPoolExecutor] | None = None
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after new deliveries are committed (in this process)."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # --- the connection ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._io, self._connect)
        except (sqlite3.Error, OSError, StoreUnavailable) as exc:
            self._io.shutdown(wait=False)
            self._io = None
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        if self.path != ":memory:":  # a second connection to :memory: is another database
            reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
            try:
                loop = asyncio.get_running_loop()
                reader = await loop.run_in_executor(reads, self._connect_reader)
            except sqlite3.Error as exc:
                reads.shutdown(wait=False)
                await self.close()
                raise StoreUnavailable(f"cannot open {self.path} to read: {exc}") from None
            self._reader = (reader, reads)

    async def close(self) -> None:
        if self._conn is None:
            return
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])
        conn, self._conn = self._conn, None
        assert self._io is not None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, conn.close)
        self._io.shutdown(wait=True)
        self._io = None
        if self._reader is not None:
            (reader, reads), self._reader = self._reader, None
            await loop.run_in_executor(reads, reader.close)
            reads.shutdown(wait=True)

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":  # a table's sqlite:///data/bridge.db: its folder too
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.executescript(self._sql["pragmas"])
            conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.synchronous]}")
            # a newer bridge's database is refused before anything here touches it
            sql = self._sql
            version = None
            if conn.execute(sql["versions_found"]).fetchone():
                version = conn.execute(sql["version"]).fetchone()[0]
            todo = pending("sqlite", version)
            if todo and not self.auto_migrate:
                raise behind("sqlite", version)
            for migration in todo:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(sql["versions_create"])
                # the first bridges' table, from before versioned migrations, holds the version
                # alone (its schema is 0001's)
                columns = {row["name"] for row in conn.execute(sql["versions_columns"])}
                if "applied_at" not in columns:
                    conn.execute(sql["versions_add_applied_at"])
                # another process opening the file at the same time may have applied it since
                # the version was read: the write lock is ours now, so read it again
                done = conn.execute(sql["version"]).fetchone()[0]
                if done is not None and done >= migration.version:
                    conn.execute("COMMIT")
                    continue
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(sql["version_applied"], (migration.version, time.time()))
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        value: T = await self._submit(fn)
        return value

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on the read-only connection, on its thread (with no such connection, an
        in-memory database, with the writes)."""
        if self._conn is None:
            raise StoreUnavailable("the store is not open")
        if self._reader is None:
            return await self._call(fn)
        reader, reads = self._reader
        try:
            return await asyncio.get_running_loop().run_in_executor(reads, fn, reader)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from None

    def _submit(self, op: Callable[[sqlite3.Connection], Any] | _NewEvent) -> asyncio.Future[Any]:
        if self._conn is None:
            raise StoreUnavailable("the store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Op]) -> None:
        """All of ``batch`` in one transaction and one commit. If one operation fails, the
        transaction is rolled back and each is run again on its own, so that one caller's
        failure is never another's."""
        conn, io = self._conn, self._io
        assert conn is not None and io is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(io, conn.execute, "BEGIN IMMEDIATE")
            values = self._apply(conn, batch)
            await loop.run_in_executor(io, conn.execute, "COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await loop.run_in_executor(io, conn.execute, "ROLLBACK")
            if len(batch) > 1 and not _storage_failure(exc):
                for op in batch:
                    await self._run_batch([op])
                return
            failure = StoreUnavailable(f"SQLite: {exc}") if isinstance(exc, sqlite3.Error) else exc
            fail((future for _fn, future in batch), failure)
            return
        # the webhooks whose events this commit held (the worker's and the admin's operations
        # share it too, but they are not what the histogram is about)
        events = sum(isinstance(op, (_NewEvent, _LinkedEvent)) for op, _future in batch)
        if events:
            metrics.INGEST_BATCH.observe(events)
        resolve((future for _fn, future in batch), values)

    def _apply(self, conn: sqlite3.Connection, batch: list[_Op]) -> list[Any]:
        """Each operation's value: the batch's new events first, in bulk, then the rest in
        order (a refund that looks up its purchase sees a purchase of the same commit)."""
        new = [op for op, _future in batch if isinstance(op, _NewEvent)]
        written = iter(self._write_events(conn, new))
        return [next(written) if isinstance(op, _NewEvent) else op(conn) for op, _future in batch]

    def _write_events(self, conn: sqlite3.Connection, new: list[_NewEvent]) -> list[bool]:
        """Insert the events, then the new ones' deliveries and remembered purchases: a few
        multi-row statements for the whole batch. True for each event stored; False for a
        duplicate (already stored, or earlier in the same batch)."""
        if not new:
            return []
        keys, first = params.first_of_each([op.item for op in new])
        chosen = [new[index] for index in first.values()]
        stored: dict[tuple[str, str], int] = {}
        for rows in _chunks([params.event_values(op.item, op.now) for op in chosen]):
            cursor = conn.execute(many(self._sql["insert_events"], len(rows)), _flat(rows))
            stored.update(((source, event_id), pk) for pk, source, event_id in cursor)
        deliveries: list[tuple[Any, ...]] = []
        refs: list[tuple[Any, ...]] = []
        for key, index in first.items():
            pk = stored.get(key)
            if pk is not None:
                op = new[index]
                deliveries += params.delivery_values(op.item, pk, None, op.now)
                refs += params.ref_values(op.item, op.now)
        self._insert(conn, "insert_deliveries", deliveries)
        self._insert(conn, "remember_refs", refs)
        return [first[key] == index and key in stored for index, key in enumerate(keys)]

    def _insert(self, conn: sqlite3.Connection, name: str, rows: list[tuple[Any, ...]]) -> None:
        for chunk in _chunks(rows):
            conn.execute(many(self._sql[name], len(chunk)), _flat(chunk))

    # --- the Store protocol -------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def ingest(self, item: Ingest, now: float) -> bool:
        if not item.looks_up:
            stored = bool(await self._submit(_NewEvent(item, now)))
            if stored:
                self._notify()
            return stored
        sql = self._sql

        def op(conn: sqlite3.Connection) -> bool:
            insert = many(sql["insert_events"], 1)
            row = conn.execute(insert, params.event_values(item, now)).fetchone()
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
            self._insert(
                conn, "insert_deliveries", params.delivery_values(item, row[0], resolved, now)
            )
            self._insert(conn, "remember_refs", params.ref_values(item, now))
            if item.cumulative is not None:
                key = {"source": item.event.source, "ref": item.cumulative[0]}
                before = conn.execute(sql["refund_total"], key).fetchone()
                baseline = before["refunded"] if before is not None else 0
                conn.execute(sql["set_baseline"], {"baseline": baseline, "id": row[0]})
                conn.execute(
                    sql["set_refund_total"], {**key, "refunded": item.cumulative[1], "now": now}
                )
            return True

        stored = bool(await self._submit(_LinkedEvent(op)))
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

    async def next_due(self, destinations: Sequence[str]) -> float | None:
        sql = self._sql["next_due"]

        def op(conn: sqlite3.Connection) -> float | None:
            found = [conn.execute(sql, {"destination": d}).fetchone()[0] for d in destinations]
            due = [float(value) for value in found if value is not None]
            return min(due) if due else None

        return await self._call(op)

    async def get(self, delivery_id: int) -> tuple[Delivery, list[Attempt]] | None:
        sql = self._sql

        def op(conn: sqlite3.Connection) -> tuple[Delivery, list[Attempt]] | None:
            row = conn.execute(sql["get_delivery"], {"id": delivery_id}).fetchone()
            if row is None:
                return None
            attempts = conn.execute(sql["list_attempts"], {"id": delivery_id}).fetchall()
            return delivery_from_row(row), [attempt_from_row(a) for a in attempts]

        return await self._read(op)

    async def deliveries(
        self,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        sql = self._sql["list_deliveries"]
        params = {"status": status, "destination": destination, "since": since, "limit": limit}
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [delivery_from_row(row) for row in rows]

    async def redrive(self, ids: list[int], now: float) -> list[int]:
        sql = self._sql["redrive"]

        def op(chunk: list[int]) -> Callable[[sqlite3.Connection], list[int]]:
            return lambda conn: [
                i for i in chunk if conn.execute(sql, {"id": i, "now": now}).rowcount
            ]

        # a few hundred at a time, each in a commit of its own: the webhooks that come while a
        # large redrive runs are stored between its parts, not after all of it
        done: list[int] = []
        for start in range(0, len(ids), REDRIVE_CHUNK):
            done += await self._call(op(ids[start : start + REDRIVE_CHUNK]))
        if done:
            self._notify()
        return done

    async def counts(self) -> dict[str, int]:
        sql = self._sql["count_by_status"]
        rows = await self._read(lambda conn: conn.execute(sql).fetchall())
        return {row["status"]: row["n"] for row in rows}

    async def queue(self) -> dict[str, QueueStats]:
        sql = self._sql["queue"]
        rows = await self._read(lambda conn: conn.execute(sql).fetchall())
        return {r["destination"]: QueueStats(r["depth"], r["oldest"], r["dead"]) for r in rows}

    async def events(self, limit: int = 100) -> list[StoredEvent]:
        sql = self._sql["list_events"]
        rows = await self._read(lambda conn: conn.execute(sql, {"limit": limit}).fetchall())
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


def _chunks(rows: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    return [rows[start : start + _ROWS] for start in range(0, len(rows), _ROWS)]


def _flat(rows: list[tuple[Any, ...]]) -> list[Any]:
    return list(chain.from_iterable(rows))


def _storage_failure(exc: BaseException) -> bool:
    """Failures of the database itself (full, read-only, locked, I/O): no retry one by one."""
    return isinstance(exc, sqlite3.OperationalError)
