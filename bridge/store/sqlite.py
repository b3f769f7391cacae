"""The SQLite store: the embedded default. One file, WAL, ``synchronous=FULL``.

Group commit: operations queue up; whatever is queued together runs in ONE
transaction with ONE commit, and no caller hears back before that commit, so
concurrent webhooks share one fsync and each is acknowledged only once its event
is durable. The write connection lives in a process of its own
(``sqlite_writer``): each batch crosses a pipe, one frame out and one back, and
its statements run on the machine's other core while the event loop goes on
with the next webhooks. The pipes are the event loop's own (no thread hands the
answers over), and the next batch goes while one is with the writer, so that
the writer never waits for the event loop between commits. The new events of a
commit, with their deliveries and remembered purchases, are written by three
multi-row INSERTs, not three statements an event. If the writer process ends,
the batches it had fail (their webhooks are answered 503, and the processor
sends them again) and the next batch starts a new writer.

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
import os
import pickle
import sqlite3
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, ClassVar, NamedTuple

from bridge import metrics
from bridge.model import Attempt, Customer, Delivery, Purchase
from bridge.store import params
from bridge.store.base import Finish, Ingest, QueueStats, StoredEvent, StoreUnavailable
from bridge.store.group import fail
from bridge.store.pipe import Frames, frame
from bridge.store.rows import attempt_from_row, delivery_from_row
from bridge.store.sqlite_ops import OPS, Op, Outcome, connect_reader, new_event

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.intake import Intake, RawHeaders, Verdict

_BATCH = 512
_IN_FLIGHT = 2  # batches with the writer at once: it runs one while the next is on its way

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
        self._io: ThreadPoolExecutor | None = None  # starts and waits for writer processes
        self._writer: subprocess.Popen[bytes] | None = None
        self._pipes: _Pipes | None = None  # to and from the writer, on the event loop
        self._starting: asyncio.Task[None] | None = None
        self._reader: tuple[sqlite3.Connection, ThreadPoolExecutor] | None = None
        self._pending: list[_Pending] = []  # the next batch, forming
        self._in_flight: deque[list[asyncio.Future[Any]]] = deque()  # with the writer
        self._scheduled = False  # a send is due at the event loop's next turn
        self._listeners: list[Callable[[], None]] = []
        self._table: bytes | None = None  # the table webhooks are admitted with (intake)
        self._tabled: _Replies | None = None  # the writer that has it

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
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._connect()
        except BaseException:
            io, self._io = self._io, None
            io.shutdown(wait=False)
            raise
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
        self._if_ended()  # a writer that ended while idle: no new one just to close
        if self._pipes is not None or self._pending or self._in_flight:
            with contextlib.suppress(StoreUnavailable):
                await self._call("ping")  # answered after everything queued before it
        io, self._io = self._io, None
        fail((f for _op, f in self._pending), StoreUnavailable("the store is closed"))
        self._pending = []
        proc = self._detach()
        loop = asyncio.get_running_loop()
        if proc is not None:
            await loop.run_in_executor(io, _end, proc)
        io.shutdown(wait=True)
        if self._reader is not None:
            (reader, reads), self._reader = self._reader, None
            await loop.run_in_executor(reads, reader.close)
            reads.shutdown(wait=True)

    async def _connect(self) -> None:
        """A writer process on the database, its pipes on the event loop: it opens and
        migrates the database, and says whether it could."""
        assert self._io is not None
        loop = asyncio.get_running_loop()
        proc, to_writer, from_writer = await loop.run_in_executor(self._io, self._spawn)
        hello: asyncio.Future[Any] = loop.create_future()
        write: asyncio.WriteTransport | None = None
        try:
            write, _ = await loop.connect_write_pipe(asyncio.Protocol, to_writer)
            read, replies = await loop.connect_read_pipe(lambda: _Replies(self, hello), from_writer)
        except BaseException:
            if write is not None:
                write.close()  # it owns its end of the pipe now
            else:
                _close(to_writer)
            _close(from_writer)
            await loop.run_in_executor(self._io, _end, proc)
            raise
        self._writer, self._pipes = proc, _Pipes(write, read, replies)
        try:
            opened, refusal = await hello
        except StoreUnavailable:
            opened, refusal = False, None
        if not opened:
            self._detach()  # if its pipe's end has not done it already
            await loop.run_in_executor(self._io, _end, proc)
            if refusal is None:
                raise StoreUnavailable(
                    f"cannot open {self.path}: its writer process ended ({proc.returncode})"
                )
            if isinstance(refusal, (sqlite3.Error, OSError)):
                raise StoreUnavailable(f"cannot open {self.path}: {refusal}")
            raise refusal
        if self._table is not None:
            self._tell()

    def _spawn(self) -> tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]:
        """The writer process (on the store's thread) and the bridge's ends of its pipes."""
        command = [*self.writer, self.path, self.synchronous, "1" if self.auto_migrate else "0"]
        child_in, to_writer = os.pipe()
        from_writer, child_out = os.pipe()
        try:
            proc = subprocess.Popen(
                command, stdin=child_in, stdout=child_out, start_new_session=True
            )
        except OSError as exc:
            for fd in (child_in, to_writer, from_writer, child_out):
                os.close(fd)
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        os.close(child_in)
        os.close(child_out)
        return proc, open(to_writer, "wb", buffering=0), open(from_writer, "rb", buffering=0)

    def _ended(self, replies: _Replies) -> None:
        """The writer's output ended: it has ended. Whatever it had not answered fails as
        unavailable (a webhook is answered 503, and sent again); the next batch starts a new
        writer."""
        if self._pipes is None or self._pipes.replies is not replies:
            return  # a writer that was closed, or one already replaced
        proc = self._detach()
        if proc is not None and self._io is not None:
            asyncio.get_running_loop().run_in_executor(self._io, _end, proc)
        failure = StoreUnavailable("SQLite: the writer process ended")
        while self._in_flight:
            fail(self._in_flight.popleft(), failure)
        if self._pending:
            self._send()

    def _detach(self) -> subprocess.Popen[bytes] | None:
        """The writer's pipes closed (it reads the end of its input, and leaves): its process,
        for the caller to wait for."""
        pipes, self._pipes = self._pipes, None
        proc, self._writer = self._writer, None
        if pipes is not None:
            pipes.to_writer.close()
            pipes.from_writer.close()
        return proc

    def _if_ended(self) -> None:
        """A writer that has ended, known before its pipe says so (the event loop may not have
        run since it ended, or not yet read the end of its output)."""
        if self._pipes is not None and self._writer is not None and self._writer.poll() is not None:
            self._ended(self._pipes.replies)

    async def _restart(self) -> None:
        try:
            await self._connect()
        except Exception as exc:  # those waiting hear why; the next batch tries again
            failure = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(repr(exc))
            fail((f for _op, f in self._pending), failure)
            self._pending = []
            return
        self._send()

    # --- batches ------------------------------------------------------------------------------

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((op, future))
        if not self._scheduled:  # what is queued in this turn of the loop goes together
            self._scheduled = True
            loop.call_soon(self._send)
        return future

    def _send(self) -> None:
        """The batches that can go to the writer now: at most ``_IN_FLIGHT`` at a time, each
        all that queued up while the ones before it were with the writer."""
        self._scheduled = False
        while self._pending and len(self._in_flight) < _IN_FLIGHT:
            self._if_ended()
            if self._pipes is None:
                if self._io is not None and (self._starting is None or self._starting.done()):
                    self._starting = asyncio.ensure_future(self._restart())
                return
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            if self._table is not None and self._tabled is not self._pipes.replies:
                self._tell()
            futures = [future for _op, future in batch]
            try:
                data = frame([op for op, _future in batch])
            except Exception as exc:  # an operation that cannot cross the pipe (a bug)
                fail(futures, StoreUnavailable(f"cannot send to the writer: {exc!r}"))
                continue
            self._in_flight.append(futures)
            self._pipes.to_writer.write(data)

    def _tell(self) -> None:
        """The table, sent to the writer ahead of any webhook: it builds its pipeline while the
        bridge starts (``/readyz``'s ping, queued after it, answers once it has)."""
        assert self._pipes is not None and self._table is not None
        told: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        told.add_done_callback(_seen)
        self._in_flight.append([told])
        self._pipes.to_writer.write(frame([("table", self._table)]))
        self._tabled = self._pipes.replies

    def _replied(self, reply: tuple[list[Outcome], list[int]]) -> None:
        """The writer's answer to the oldest batch with it: all of it committed in one
        transaction (or each operation again on its own, when one failed)."""
        futures = self._in_flight.popleft()
        outcomes, commits = reply
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
        if self._pending:
            self._send()

    # --- the Store protocol -------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("ping")

    async def ingest(self, item: Ingest, now: float) -> bool:
        stored = bool(await self._call("ingest", new_event(item, now)))
        if stored:
            self._notify()
        return stored

    def intake(self, config: Config) -> Intake:
        """Webhooks admitted by the writer process, with this table: it parses and plans each
        one inside the transaction that stores it (``sqlite_writer.Admission``)."""
        self._table, self._tabled = pickle.dumps(config), None
        return self._admit

    async def _admit(self, source: str, body: bytes, headers: RawHeaders, now: float) -> Verdict:
        verdict: Verdict = await self._call("admit", source, body, headers, now)
        if verdict.outcome == "accepted":
            self._notify()
        return verdict

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


class _Pipes(NamedTuple):
    to_writer: asyncio.WriteTransport
    from_writer: asyncio.ReadTransport
    replies: _Replies


class _Replies(asyncio.Protocol):
    """The writer's frames as its pipe brings them to the event loop: first whether the
    database opened, then each batch's answer, in the order the batches went."""

    def __init__(self, store: SQLiteStore, hello: asyncio.Future[Any]) -> None:
        self._store = store
        self._hello = hello
        self._frames = Frames()

    def data_received(self, data: bytes) -> None:
        for reply in self._frames.feed(data):
            if not self._hello.done():
                self._hello.set_result(reply)
            else:
                self._store._replied(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._hello.done():
            self._hello.set_exception(StoreUnavailable("the writer process ended"))
        self._store._ended(self)


def _seen(future: asyncio.Future[Any]) -> None:
    """A future no caller awaits (the table sent to a writer): its failure is the batch's,
    which its callers hear."""
    if not future.cancelled():
        future.exception()


def _end(proc: subprocess.Popen[bytes]) -> None:
    """A writer process's end, waited for (its input is closed: it finishes and leaves)."""
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _close(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError):  # its other end is gone already
        stream.close()
