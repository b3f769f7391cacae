"""The PostgreSQL store: several bridge replicas on one database.

psycopg 3 (async) with a connection pool. Claims use ``FOR UPDATE SKIP LOCKED``
with leases, so replicas never claim the same delivery; dedupe is the unique
(source, event id) index, so two replicas receiving one event at the same
moment store it once. Each ingest commits with ``pg_notify``, which wakes
every replica's worker through ``LISTEN`` (polling stays as the fallback).

Group commit, as on SQLite: the new events that concurrent webhooks bring (all
but refunds that look up their purchase) queue up, and whatever queued together
is written by ONE statement, in one round trip and one transaction, so that
they share one WAL flush; no caller hears back before that commit. The worker's
outcomes are written the same way, and a claim is one statement.

When the database can't be reached every call raises StoreUnavailable (the
webhook answers 503 and nothing is half-written: each write is one transaction),
and the pool reconnects by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import psycopg
import psycopg_pool
import structlog
from psycopg.rows import dict_row

from bridge import metrics
from bridge.model import Attempt, Customer, Delivery, Purchase
from bridge.store import params
from bridge.store.base import Finish, Ingest, QueueStats, StoredEvent, StoreUnavailable
from bridge.store.group import GroupCommit
from bridge.store.migrations import behind, pending
from bridge.store.rows import attempt_from_row, delivery_from_row
from bridge.store.sql import queries

log = structlog.get_logger("bridge.store")

CHANNEL = "bridge_deliveries"
# the database itself failing (no connection, shutting down, out of resources, I/O), which
# retrying a batch item by item cannot help; other errors are one statement's (SQLSTATE class
# 54, program limit exceeded, is an OperationalError too, and one oversized row must not get
# every webhook of its commit a 503)
_DOWN_CLASSES = ("08", "53", "57", "58", "XX")


def _down(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing, not one statement."""
    if isinstance(exc, (psycopg.InterfaceError, psycopg_pool.PoolTimeout)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith(_DOWN_CLASSES)


_MIGRATION_LOCK = 7_400_202_611  # pg_advisory_xact_lock key: one replica migrates at a time


class PostgresStore:
    def __init__(
        self,
        url: str,
        migrate: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        # longer than this without a connection: the webhook answers 503, the processor retries
        timeout: float = 1.5,
    ) -> None:
        self.url = url
        self.auto_migrate = migrate
        self._sql = queries("postgres.sql")
        self._pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 3},
            reconnect_timeout=0,  # keep trying for ever; the database may be down for a while
        )
        self._listeners: list[Callable[[], None]] = []
        self._listen_task: asyncio.Task[None] | None = None
        self._ingests = GroupCommit(
            self._write_events, self._ingest_one, metrics.INGEST_BATCH.observe
        )
        self._finishes = GroupCommit(self._write_finishes, self._finish_one)

    # --- connections ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        try:
            async with self._pool.connection() as conn:
                yield cast("psycopg.AsyncConnection[dict[str, Any]]", conn)
        except psycopg.Error as exc:
            if not _down(exc):
                raise
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}"[:300]) from None

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                if not _down(exc):
                    raise
                raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}"[:300]) from None

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever any replica commits new deliveries."""
        self._listeners.append(callback)

    async def open(self) -> None:
        # one connection first: a refused login or a missing database is the server's reason,
        # at once, where the pool would wait its ten seconds and say it has no connection
        try:
            first = await psycopg.AsyncConnection.connect(self.url, connect_timeout=3)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreUnavailable(f"cannot reach PostgreSQL: {reason}"[:300]) from None
        await first.close()
        try:
            await self._pool.open(wait=True, timeout=10)
        except psycopg.Error as exc:
            if not _down(exc):
                raise
            await self._pool.close()
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}"[:300]) from None
        try:
            await self._migrate()
        except psycopg.Error as exc:  # no right to create, no schema to create in, ...
            await self._pool.close()
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreUnavailable(f"cannot migrate the schema: {message}"[:300]) from None
        except BaseException:
            await self._pool.close()
            raise
        if self._listeners:
            self._listen_task = asyncio.create_task(self._listen())

    async def _migrate(self) -> None:
        async with self._tx() as conn:
            sql = self._sql
            await conn.execute(sql["migration_lock"], {"key": _MIGRATION_LOCK})
            # read first, create only what is missing: a user without CREATE rights on the
            # schema (tables migrated by their owner) opens a database that is up to date
            row = await (await conn.execute(sql["versions_found"])).fetchone()
            current = None
            if row and row["found"]:
                row = await (await conn.execute(sql["version"])).fetchone()
                current = row["v"] if row else None
            todo = pending("postgres", current)
            if todo and not self.auto_migrate:
                raise behind("postgres", current)
            if todo:
                await conn.execute(sql["versions_create"])
            for migration in todo:
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    sql["version_applied"],
                    {"version": migration.version, "applied_at": time.time()},
                )
                log.info("applied migration", version=migration.version, name=migration.name)

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; reconnect with backoff when it drops."""
        wait = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=3
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    wait = 0.5
                    for callback in self._listeners:
                        callback()  # catch up with whatever was committed while deaf
                    async for _notify in conn.notifies():
                        for callback in self._listeners:
                            callback()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: poll until it is back
                log.debug("LISTEN connection lost", error=str(exc)[:200])
            await asyncio.sleep(wait)
            wait = min(wait * 2, 10.0)

    async def close(self) -> None:
        await self._ingests.flushed()  # what was queued is written (or refused) first
        await self._finishes.flushed()
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        await self._pool.close()

    # --- the Store protocol -------------------------------------------------------------------

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT 1")

    async def ingest(self, item: Ingest, now: float) -> bool:
        if item.looks_up:
            stored = await self._ingest_one((item, now))
            metrics.INGEST_BATCH.observe(1)  # a commit of its own
            return stored
        return await self._ingests((item, now))

    async def _write_events(self, batch: list[tuple[Ingest, float]]) -> list[bool]:
        """True for each event stored; False for a duplicate (already stored, or earlier in
        the same batch)."""
        first = params.firsts([(item.event.source, item.event.id) for item, _now in batch])
        chosen = list(first.values())
        columns = _columns([batch[index] for index in chosen])
        async with self._conn() as conn:
            cursor = await conn.execute(self._sql["insert_new_events"], columns)
            stored = {chosen[row["n"] - 1] for row in await cursor.fetchall()}
        return [index in stored for index in range(len(batch))]

    async def _ingest_one(self, queued: tuple[Ingest, float]) -> bool:
        """One event in a transaction of its own: a refund that looks up its purchase, or
        an event of a batch that failed."""
        item, now = queued
        sql = self._sql
        async with self._tx() as conn:
            cursor = await conn.execute(sql["insert_event"], params.event_row(item, now))
            row = await cursor.fetchone()
            if row is None:
                return False
            resolved = None
            for ref in item.link_refs:
                found = await (
                    await conn.execute(sql["find_ref"], {"source": item.event.source, "ref": ref})
                ).fetchone()
                if found is not None:
                    resolved = found["txn_id"]
                    break
            async with conn.cursor() as cur:
                await cur.executemany(
                    sql["insert_delivery"], params.delivery_rows(item, row["id"], resolved, now)
                )
                refs = params.ref_rows(item, now)
                if refs:
                    await cur.executemany(sql["remember_ref"], refs)
            if item.cumulative is not None:
                key = {"source": item.event.source, "ref": item.cumulative[0]}
                # the row exists before it is locked, so that two first refunds of one order
                # queue on it instead of both reading nothing
                await conn.execute(sql["refund_total_row"], {**key, "now": now})
                before = await (await conn.execute(sql["refund_total"], key)).fetchone()
                baseline = before["refunded"] if before is not None else 0
                await conn.execute(sql["set_baseline"], {"baseline": baseline, "id": row["id"]})
                await conn.execute(
                    sql["set_refund_total"], {**key, "refunded": item.cumulative[1], "now": now}
                )
            destinations = ",".join(sorted({d.destination for d in item.deliveries}))
            await conn.execute(sql["notify"], {"destinations": destinations})
            return True

    async def purchase(self, source: str, refs: list[str]) -> Purchase | None:
        async with self._conn() as conn:
            for ref in refs:
                row = await (
                    await conn.execute(self._sql["find_ref"], {"source": source, "ref": ref})
                ).fetchone()
                if row is not None:
                    return Purchase(
                        row["txn_id"],
                        Customer(row["customer_id"], row["external_id"], row["email"], row["name"]),
                    )
        return None

    async def claim(
        self, destination: str, limit: int, now: float, lease: float, worker: str
    ) -> list[Delivery]:
        params = {
            "destination": destination,
            "limit": limit,
            "now": now,
            "lease_until": now + lease,
            "worker": worker,
        }
        async with self._conn() as conn:
            rows = await (await conn.execute(self._sql["claim"], params)).fetchall()
        return [delivery_from_row(row) for row in rows]

    async def finish(self, item: Finish, now: float) -> bool:
        return await self._finishes((item, now))

    async def _write_finishes(self, batch: list[tuple[Finish, float]]) -> list[bool]:
        """The outcomes of several deliveries and their attempts, in one statement. True for
        each delivery that was still the finisher's to finish."""
        if len({item.delivery_id for item, _now in batch}) < len(batch):
            raise ValueError("one delivery finished twice in a batch")  # each goes on its own
        finishes = [params.finish_row(item, now) for item, now in batch]
        attempts = [row for item, _now in batch if (row := params.attempt_row(item)) is not None]
        columns = {key: [row[key] for row in finishes] for key in params.FINISH_COLUMNS}
        columns.update(
            {f"a_{key}": [row[key] for row in attempts] for key in params.ATTEMPT_COLUMNS}
        )
        async with self._conn() as conn:
            cursor = await conn.execute(self._sql["finish_many"], columns)
            done = {row["id"] for row in await cursor.fetchall()}
        return [item.delivery_id in done for item, _now in batch]

    async def _finish_one(self, queued: tuple[Finish, float]) -> bool:
        item, now = queued
        attempt = params.attempt_row(item)
        async with self._tx() as conn:
            finished = await conn.execute(self._sql["finish"], params.finish_row(item, now))
            changed = finished.rowcount
            if changed and attempt is not None:
                await conn.execute(self._sql["insert_attempt"], attempt)
        return bool(changed)

    async def release(self, worker: str | None, now: float) -> int:
        # after the finishes already asked for (a stopping worker's last ones): one landing
        # after the release would make a delivered delivery pending again
        await self._finishes.flushed()
        params = {"worker": worker or "", "all_workers": worker is None, "now": now}
        async with self._conn() as conn:
            return (await conn.execute(self._sql["release"], params)).rowcount

    async def next_due(self, destinations: Sequence[str]) -> float | None:
        async with self._conn() as conn:
            params = {"destinations": list(destinations)}
            row = await (await conn.execute(self._sql["next_due"], params)).fetchone()
        value = row["min"] if row else None
        return None if value is None else float(value)

    async def get(self, delivery_id: int) -> tuple[Delivery, list[Attempt]] | None:
        async with self._conn() as conn:
            row = await (
                await conn.execute(self._sql["get_delivery"], {"id": delivery_id})
            ).fetchone()
            if row is None:
                return None
            attempts = await (
                await conn.execute(self._sql["list_attempts"], {"id": delivery_id})
            ).fetchall()
        return delivery_from_row(row), [attempt_from_row(a) for a in attempts]

    async def deliveries(
        self,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        params = {"status": status, "destination": destination, "since": since, "limit": limit}
        async with self._conn() as conn:
            rows = await (await conn.execute(self._sql["list_deliveries"], params)).fetchall()
        return [delivery_from_row(row) for row in rows]

    async def redrive(self, ids: list[int], now: float) -> list[int]:
        async with self._conn() as conn:
            rows = await (
                await conn.execute(self._sql["redrive"], {"ids": ids, "now": now})
            ).fetchall()
            if rows:
                await conn.execute(self._sql["notify"], {"destinations": ""})
        done = {r["id"] for r in rows}
        return list(dict.fromkeys(i for i in ids if i in done))  # each once, as asked

    async def counts(self) -> dict[str, int]:
        async with self._conn() as conn:
            rows = await (await conn.execute(self._sql["count_by_status"])).fetchall()
        return {row["status"]: row["n"] for row in rows}

    async def queue(self) -> dict[str, QueueStats]:
        async with self._conn() as conn:
            rows = await (await conn.execute(self._sql["queue"])).fetchall()
        return {r["destination"]: QueueStats(r["depth"], r["oldest"], r["dead"]) for r in rows}

    async def events(self, limit: int = 100) -> list[StoredEvent]:
        async with self._conn() as conn:
            rows = await (await conn.execute(self._sql["list_events"], {"limit": limit})).fetchall()
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
        async with self._tx() as conn:
            pruned = (
                await conn.execute(self._sql["prune_events"], {"before": events_before})
            ).rowcount
            await conn.execute(self._sql["prune_refs"], {"before": refs_before})
            await conn.execute(self._sql["prune_refund_totals"], {"before": refs_before})
        return pruned


def _columns(batch: list[tuple[Ingest, float]]) -> dict[str, Any]:
    """``insert_new_events``' parameters: one array per column; a delivery or remembered ref
    names its event by its 1-based position in the events' arrays."""
    events = [params.event_values(item, now) for item, now in batch]
    deliveries = [
        row
        for n, (item, now) in enumerate(batch, 1)
        for row in params.delivery_values(item, n, None, now)
    ]
    refs = [
        (n, *row) for n, (item, now) in enumerate(batch, 1) for row in params.ref_values(item, now)
    ]
    destinations = {d.destination for item, _now in batch for d in item.deliveries}
    return {
        **_arrays("", params.EVENT_COLUMNS, events),
        **_arrays("d_", ("event", *params.DELIVERY_COLUMNS[1:]), deliveries),
        **_arrays("r_", ("event", *params.REF_COLUMNS), refs),
        "destinations": ",".join(sorted(destinations)),
    }


def _arrays(prefix: str, names: Sequence[str], rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Rows as one array per column, each named ``prefix`` + its column's name."""
    columns = zip(*rows, strict=True) if rows else [()] * len(names)
    return {prefix + name: list(column) for name, column in zip(names, columns, strict=True)}
