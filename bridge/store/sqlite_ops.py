"""SQLite's operations: plain functions of a connection and their arguments.

The writer process (``sqlite_writer``) runs the writes, a batch of them in one transaction;
the store's read-only connection, on a thread of the bridge's own process, runs the reads.
Everything an operation takes and gives back is plain data (tuples, dicts, numbers, text), so
that it crosses the pipe between the two processes as it is. Nothing here imports the bridge's
side of the store (asyncio, metrics): the writer process starts fast.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

from bridge.store import params
from bridge.store.base import Ingest
from bridge.store.migrations import behind, pending
from bridge.store.sql import many, queries

ROWS = 256  # rows per multi-row INSERT (SQLite binds at most 32,766 values to a statement)
SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}  # nothing else reaches the PRAGMA
SQL = queries("sqlite.sql")


class NewEvent(NamedTuple):
    """An event to store, as the writer needs it: its row, its deliveries' routes,
    destinations and order keys, the purchase references to remember, and for a refund what
    to look up first."""

    event: tuple[Any, ...]  # source, event id, type, received at, payload
    deliveries: list[tuple[int, str, str | None]]  # route, destination, order key
    fallback: str  # the order key of a delivery that names none (and whose refund links none)
    refs: list[tuple[Any, ...]]  # the remembered purchase's rows
    link_refs: list[str]  # a refund's references to resolve into its purchase's id
    cumulative: tuple[str, int] | None  # a refund's order key and cumulative refunded total
    now: float

    @property
    def key(self) -> tuple[str, str]:
        return self.event[0], self.event[1]

    @property
    def looks_up(self) -> bool:
        return bool(self.link_refs) or self.cumulative is not None

    def delivery_rows(self, event_pk: int, resolved: str | None) -> list[tuple[Any, ...]]:
        return params.ordered_deliveries(
            self.deliveries, event_pk, resolved or self.fallback, self.now
        )


def new_event(item: Ingest, now: float) -> NewEvent:
    return NewEvent(
        event=params.event_values(item, now),
        deliveries=[(d.route, d.destination, d.order_key) for d in item.deliveries],
        fallback=params.order_fallback(item),
        refs=params.ref_values(item, now),
        link_refs=item.link_refs,
        cumulative=item.cumulative,
        now=now,
    )


# --- connections -------------------------------------------------------------------------------


def statements(script: str) -> list[str]:
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


def connect(path: str, synchronous: str, migrate: bool) -> sqlite3.Connection:
    """The write connection: WAL, ``synchronous``, the schema brought up to date (or refused
    when ``migrate`` is off and it is behind, or when it is newer than this bridge)."""
    if path != ":memory:":  # a table's sqlite:///data/bridge.db: its folder too
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=512)
    try:
        conn.row_factory = sqlite3.Row
        conn.executescript(SQL["pragmas"])
        conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
        # a newer bridge's database is refused before anything here touches it
        version = None
        if conn.execute(SQL["versions_found"]).fetchone():
            version = conn.execute(SQL["version"]).fetchone()[0]
        todo = pending("sqlite", version)
        if todo and not migrate:
            raise behind("sqlite", version)
        for migration in todo:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(SQL["versions_create"])
            # the first bridges' table, from before versioned migrations, holds the version
            # alone (its schema is 0001's)
            columns = {row["name"] for row in conn.execute(SQL["versions_columns"])}
            if "applied_at" not in columns:
                conn.execute(SQL["versions_add_applied_at"])
            # another process opening the file at the same time may have applied it since the
            # version was read: the write lock is ours now, so read it again
            done = conn.execute(SQL["version"]).fetchone()[0]
            if done is not None and done >= migration.version:
                conn.execute("COMMIT")
                continue
            for statement in statements(migration.sql):
                conn.execute(statement)
            conn.execute(SQL["version_applied"], (migration.version, time.time()))
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


# --- a batch: one transaction, one commit ------------------------------------------------------

Op = tuple[Any, ...]  # an operation's name, then its arguments
Outcome = tuple[bool, Any]  # (True, its value) or (False, the exception it raised)


def storage_failure(exc: BaseException) -> bool:
    """Failures of the database itself (full, read-only, locked, I/O): no retry one by one."""
    return isinstance(exc, sqlite3.OperationalError)


def run_batch(conn: sqlite3.Connection, batch: list[Op]) -> tuple[list[Outcome], list[int]]:
    """Each operation's outcome, all of ``batch`` in one transaction and one commit; and, for
    each commit made, how many events it stored. If one operation fails, the transaction is
    rolled back and each is run again on its own, so that one caller's failure is never
    another's; a failure of the database itself fails them all."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        values = _apply(conn, batch)
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if len(batch) > 1 and not storage_failure(exc):
            outcomes: list[Outcome] = []
            commits: list[int] = []
            for op in batch:
                one, committed = run_batch(conn, [op])
                outcomes += one
                commits += committed
            return outcomes, commits
        return [(False, exc)] * len(batch), []
    return [(True, value) for value in values], [sum(op[0] == "ingest" for op in batch)]


def _apply(conn: sqlite3.Connection, batch: list[Op]) -> list[Any]:
    """The batch's new events first, in bulk, then the rest in order (a refund that looks up
    its purchase sees a purchase of the same commit)."""
    bulk = [op[0] == "ingest" and not op[1].looks_up for op in batch]
    written = iter(write_events(conn, [op[1] for op, b in zip(batch, bulk, strict=True) if b]))
    return [
        next(written) if b else OPS[op[0]](conn, *op[1:]) for op, b in zip(batch, bulk, strict=True)
    ]


def _chunks(rows: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    return [rows[start : start + ROWS] for start in range(0, len(rows), ROWS)]


def _insert(conn: sqlite3.Connection, name: str, rows: list[tuple[Any, ...]]) -> None:
    for chunk in _chunks(rows):
        conn.execute(many(SQL[name], len(chunk)), list(chain.from_iterable(chunk)))


def write_events(conn: sqlite3.Connection, new: list[NewEvent]) -> list[bool]:
    """Insert the events, then the new ones' deliveries and remembered purchases: a few
    multi-row statements for the whole batch. True for each event stored; False for a
    duplicate (already stored, or earlier in the same batch)."""
    if not new:
        return []
    keys = [item.key for item in new]
    first = params.firsts(keys)
    stored: dict[tuple[str, str], int] = {}
    for rows in _chunks([new[index].event for index in first.values()]):
        cursor = conn.execute(
            many(SQL["insert_events"], len(rows)), list(chain.from_iterable(rows))
        )
        stored.update(((source, event_id), pk) for pk, source, event_id in cursor)
    deliveries: list[tuple[Any, ...]] = []
    refs: list[tuple[Any, ...]] = []
    for key, index in first.items():
        pk = stored.get(key)
        if pk is not None:
            deliveries += new[index].delivery_rows(pk, None)
            refs += new[index].refs
    _insert(conn, "insert_deliveries", deliveries)
    _insert(conn, "remember_refs", refs)
    return [first[key] == index and key in stored for index, key in enumerate(keys)]


# --- the operations ----------------------------------------------------------------------------


def ingest(conn: sqlite3.Connection, item: NewEvent) -> bool:
    """An event that looks something up first (a refund's purchase, a cumulative refund
    total): statements of its own, in the same commit as the rest of its batch."""
    row = conn.execute(many(SQL["insert_events"], 1), item.event).fetchone()
    if row is None:
        return False
    source = item.event[0]
    found = purchase(conn, source, item.link_refs)
    resolved = found["txn_id"] if found is not None else None
    _insert(conn, "insert_deliveries", item.delivery_rows(row[0], resolved))
    _insert(conn, "remember_refs", item.refs)
    if item.cumulative is not None:
        key = {"source": source, "ref": item.cumulative[0]}
        before = conn.execute(SQL["refund_total"], key).fetchone()
        baseline = before["refunded"] if before is not None else 0
        conn.execute(SQL["set_baseline"], {"baseline": baseline, "id": row[0]})
        conn.execute(
            SQL["set_refund_total"], {**key, "refunded": item.cumulative[1], "now": item.now}
        )
    return True


def ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def purchase(conn: sqlite3.Connection, source: str, refs: list[str]) -> dict[str, Any] | None:
    for ref in refs:
        row = conn.execute(SQL["find_ref"], {"source": source, "ref": ref}).fetchone()
        if row is not None:
            return dict(row)
    return None


def claim(
    conn: sqlite3.Connection,
    destination: str,
    limit: int,
    now: float,
    lease_until: float,
    worker: str,
) -> list[dict[str, Any]]:
    found = conn.execute(
        SQL["claim"],
        {
            "destination": destination,
            "limit": limit,
            "now": now,
            "lease_until": lease_until,
            "worker": worker,
        },
    ).fetchall()
    if not found:
        return []
    rows = conn.execute(SQL["select_claimed"], {"ids": json.dumps([r[0] for r in found])})
    return [dict(row) for row in rows]


def finish(conn: sqlite3.Connection, row: dict[str, Any], attempt: dict[str, Any] | None) -> bool:
    changed = conn.execute(SQL["finish"], row).rowcount
    if changed and attempt is not None:
        conn.execute(SQL["insert_attempt"], attempt)
    return bool(changed)


def release(conn: sqlite3.Connection, worker: str | None, now: float) -> int:
    key = {"worker": worker or "", "all_workers": worker is None, "now": now}
    return int(conn.execute(SQL["release"], key).rowcount)


def next_due(conn: sqlite3.Connection, destinations: list[str]) -> float | None:
    found = [conn.execute(SQL["next_due"], {"destination": d}).fetchone()[0] for d in destinations]
    due = [float(value) for value in found if value is not None]
    return min(due) if due else None


def redrive(conn: sqlite3.Connection, ids: list[int], now: float) -> list[int]:
    return [i for i in ids if conn.execute(SQL["redrive"], {"id": i, "now": now}).rowcount]


def prune(conn: sqlite3.Connection, events_before: float, refs_before: float) -> int:
    pruned = conn.execute(SQL["prune_events"], {"before": events_before}).rowcount
    conn.execute(SQL["prune_refs"], {"before": refs_before})
    conn.execute(SQL["prune_refund_totals"], {"before": refs_before})
    return int(pruned)


# reads: on the read-only connection (in the writer process only for a database in memory)


def get(
    conn: sqlite3.Connection, delivery_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    row = conn.execute(SQL["get_delivery"], {"id": delivery_id}).fetchone()
    if row is None:
        return None
    attempts = conn.execute(SQL["list_attempts"], {"id": delivery_id}).fetchall()
    return dict(row), [dict(a) for a in attempts]


def _all(conn: sqlite3.Connection, name: str, key: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(SQL[name], key)]


def deliveries(conn: sqlite3.Connection, key: dict[str, Any]) -> list[dict[str, Any]]:
    return _all(conn, "list_deliveries", key)


def counts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _all(conn, "count_by_status", {})


def queue(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _all(conn, "queue", {})


def events(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    return _all(conn, "list_events", {"limit": limit})


OPS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        ingest,
        ping,
        purchase,
        claim,
        finish,
        release,
        next_due,
        redrive,
        prune,
        get,
        deliveries,
        counts,
        queue,
        events,
    )
}
