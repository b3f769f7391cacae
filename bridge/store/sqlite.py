"""The SQLite store: the embedded default. One file, WAL, ``synchronous=FULL``.

Group commit: operations queue up; whatever is queued together runs in ONE
transaction with ONE commit, and no caller hears back before that commit, so
concurrent webhooks share one fsync and each is acknowledged only once its event
is durable. The write connection lives in a process of its own
(``sqlite_writer``): each batch crosses a pipe, one frame out and one back, and
its statements run on the machine's other core while the event loop goes on
with the next webhooks. The new events of a commit, with their deliveries and
remembered purchases, are written by three multi-row INSERTs, not three
statements an event. If the writer process ends, the batch in flight fails
(its webhooks are answered 503, and the processor sends them again) and the
next batch starts a new writer.

What only reads for a person or a scraper (``/metrics``' queue, the admin API's lists
and counts) runs on a read-only connection on a thread of this process: never inside a
write batch nor on the event loop (with a deep backlog the queue's query takes tens of
milliseconds), and never waiting for a writer (WAL readers don't).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, ClassVar

from bridge import metrics
from bridge.model import Attempt, Customer, Delivery, Purchase
from bridge.store import params
from bridge.store.base import Finish, Ingest, QueueStats, StoredEvent, StoreUnavailable
from bridge.store.group import fail
from bridge.store.pipe import frame, read_frame
from bridge.store.rows import attempt_from_row, delivery_from_row
from bridge.store.sqlite_ops import OPS, NewEvent, Op, Outcome, connect_reader

_BATCH = 512

_Pending = tuple[Op, asyncio.Future[Any]]


def path_of(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (sqlite:///path/to/file.db)")
    path = url[len("sqlite:///") :]
    if not path:  # never a database in memory by accident: config.load refuses it too
        raise ValueError("sqlite:/// names no file (sqlite:///path/to/file.db, or :memory:)")
    return path


REDRIVE_CHUNK = 500  # deliveries redriven per commit


class SQLiteStore:
    # how the writer process is started (its arguments follow: path, synchronous, migrate)
    writer: ClassVar[tuple[str, ...]] = (sys.executable, "-m", "bridge.store.sqlite_writer")

    def __init__(self, url: str, synchronous: str = "FULL", migrate: bool = True) -> None:
        self.path = path_of(url)
        self.synchronous = synchronous
        self.auto_migrate = migrate
        self._io: ThreadPoolExecutor | None = None  # talks to the writer process
        self._writer: subprocess.Popen[bytes] | None = None
        self._reader: tuple[sqlite3.Connection, ThreadPoolExecutor] | None = None
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after new deliveries are committed (in this process)."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # --- the writer process and the reader ----------------------------------------------------

    async def open(self) -> None:
        if self._io is not None:
            return
        io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await asyncio.get_running_loop().run_in_executor(io, self._start)
        except BaseException:
            io.shutdown(wait=False)
            raise
        self._io = io
        if self.path != ":memory:":  # a second connection to :memory: is another database
            reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
            try:
                loop = asyncio.get_running_loop()
                reader = await loop.run_in_executor(reads, connect_reader, self.path)
            except sqlite3.Error as exc:
                reads.shutdown(wait=False)
                await self.close()
                raise StoreUnavailable(f"cannot open {self.path} to read: {exc}") from None
            self._reader = (reader, reads)

    async def close(self) -> None:
        if self._io is None:
            return
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])
        io, self._io = self._io, None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(io, self._stop)
        io.shutdown(wait=True)
        if self._reader is not None:
            (reader, reads), self._reader = self._reader, None
            await loop.run_in_executor(reads, reader.close)
            reads.shutdown(wait=True)

    def _start(self) -> None:
        """A writer process on the database (on the store's thread): it opens and migrates
        the database, and says whether it could."""
        command = [*self.writer, self.path, self.synchronous, "1" if self.auto_migrate else "0"]
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
            )
        except OSError as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        assert proc.stdout is not None
        hello = read_frame(proc.stdout)
        if hello is None or not hello[0]:
            _end(proc)
            if hello is None:
                raise StoreUnavailable(
                    f"cannot open {self.path}: its writer process ended ({proc.returncode})"
                )
            refusal = hello[1]
            if isinstance(refusal, (sqlite3.Error, OSError)):
                raise StoreUnavailable(f"cannot open {self.path}: {refusal}")
            raise refusal
        self._writer = proc

    def _stop(self) -> None:
        proc, self._writer = self._writer, None
        if proc is not None:
            _end(proc)

    def _exchange(self, batch: list[Op]) -> tuple[list[Outcome], list[int]]:
        """One batch through the writer process (on the store's thread): each operation's
        outcome, and the events each commit stored. A writer that has ended is replaced."""
        proc = self._writer
        if proc is None or proc.poll() is not None:
            self._stop()
            self._start()
            proc = self._writer
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(frame(batch))
            proc.stdin.flush()
            reply = read_frame(proc.stdout)
        except OSError:
            reply = None
        if reply is None:
            self._stop()
            raise StoreUnavailable(f"SQLite: the writer process ended ({proc.returncode})")
        outcomes, commits = reply
        return outcomes, commits

    async def _call(self, name: str, *args: Any) -> Any:
        return await self._submit((name, *args))

    async def _read(self, name: str, *args: Any) -> Any:
        """A read on the read-only connection, on its thread (with no such connection, a
        database in memory, in the writer process)."""
        if self._io is None:
            raise StoreUnavailable("the store is not open")
        if self._reader is None:
            return await self._call(name, *args)
        reader, reads = self._reader
        read = functools.partial(OPS[name], reader, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(reads, read)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from None

    def _submit(self, op: Op) -> asyncio.Future[Any]:
        if self._io is None:
            raise StoreUnavailable("the store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            try:
                await self._run_batch(batch)
            except BaseException as exc:  # cancelled: no caller is left waiting for ever
                fail((f for _op, f in batch), StoreUnavailable(f"write interrupted: {exc!r}"))
                raise

    async def _run_batch(self, batch: list[_Pending]) -> None:
        """All of ``batch`` in one transaction and one commit, in the writer process (which
        runs each operation again on its own if one fails, so that one caller's failure is
        never another's)."""
        io = self._io
        futures = [future for _op, future in batch]
        if io is None:
            fail(futures, StoreUnavailable("the store is not open"))
            return
        loop = asyncio.get_running_loop()
        try:
            outcomes, commits = await loop.run_in_executor(
                io, self._exchange, [op for op, _future in batch]
            )
        except Exception as exc:
            failure = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(repr(exc))
            fail(futures, failure)
            return
        # the webhooks each commit held (the worker's and the admin's operations share
        # commits too, but they are not what the histogram is about)
        for events in commits:
            if events:
                metrics.INGEST_BATCH.observe(events)
        for future, (ok, value) in zip(futures, outcomes, strict=True):
            if future.done():  # a caller that went away still had its write committed
                continue
            if ok:
                future.set_result(value)
            elif isinstance(value, sqlite3.Error):
                future.set_exception(StoreUnavailable(f"SQLite: {value}"))
            else:
                future.set_exception(value)

    # --- the Store protocol -------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("ping")

    async def ingest(self, item: Ingest, now: float) -> bool:
        record = NewEvent(
            event=params.event_values(item, now),
            deliveries=[(d.route, d.destination, d.order_key) for d in item.deliveries],
            fallback=params.order_fallback(item),
            refs=params.ref_values(item, now),
            link_refs=item.link_refs,
            cumulative=item.cumulative,
            now=now,
        )
        stored = bool(await self._call("ingest", record))
        if stored:
            self._notify()
        return stored

    async def purchase(self, source: str, refs: list[str]) -> Purchase | None:
        row = await self._call("purchase", source, refs)
        if row is None:
            return None
        customer = Customer(row["customer_id"], row["external_id"], row["email"], row["name"])
        return Purchase(row["txn_id"], customer)

    async def claim(
        self, destination: str, limit: int, now: float, lease: float, worker: str
    ) -> list[Delivery]:
        rows = await self._call("claim", destination, limit, now, now + lease, worker)
        return [delivery_from_row(row) for row in rows]

    async def finish(self, item: Finish, now: float) -> bool:
        return bool(
            await self._call("finish", params.finish_row(item, now), params.attempt_row(item))
        )

    async def release(self, worker: str | None, now: float) -> int:
        return int(await self._call("release", worker, now))

    async def next_due(self, destinations: Sequence[str]) -> float | None:
        due: float | None = await self._call("next_due", list(destinations))
        return due

    async def get(self, delivery_id: int) -> tuple[Delivery, list[Attempt]] | None:
        found = await self._read("get", delivery_id)
        if found is None:
            return None
        row, attempts = found
        return delivery_from_row(row), [attempt_from_row(a) for a in attempts]

    async def deliveries(
        self,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        key = {"status": status, "destination": destination, "since": since, "limit": limit}
        return [delivery_from_row(row) for row in await self._read("deliveries", key)]

    async def redrive(self, ids: list[int], now: float) -> list[int]:
        # a few hundred at a time, each in a commit of its own: the webhooks that come while a
        # large redrive runs are stored between its parts, not after all of it
        done: list[int] = []
        for start in range(0, len(ids), REDRIVE_CHUNK):
            done += await self._call("redrive", ids[start : start + REDRIVE_CHUNK], now)
        if done:
            self._notify()
        return done

    async def counts(self) -> dict[str, int]:
        return {row["status"]: row["n"] for row in await self._read("counts")}

    async def queue(self) -> dict[str, QueueStats]:
        rows = await self._read("queue")
        return {r["destination"]: QueueStats(r["depth"], r["oldest"], r["dead"]) for r in rows}

    async def events(self, limit: int = 100) -> list[StoredEvent]:
        return [
            StoredEvent(
                row["id"],
                row["source"],
                row["event_id"],
                row["type"],
                row["received_at"],
                json.loads(row["deliveries"] or "{}"),
            )
            for row in await self._read("events", limit)
        ]

    async def prune(self, events_before: float, refs_before: float) -> int:
        return int(await self._call("prune", events_before, refs_before))


def _end(proc: subprocess.Popen[bytes]) -> None:
    """A writer process's end: its input closed (it finishes and leaves), waited for."""
    for stream in (proc.stdin, proc.stdout):
        _close(stream)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _close(stream: IO[bytes] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):  # its other end is gone already
            stream.close()
