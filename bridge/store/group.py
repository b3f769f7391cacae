"""Group commit for a store whose writes are statements sent to a server (PostgreSQL).

Calls that arrive while a batch is being written queue up and go together in the next
batch: one statement, one round trip, one transaction, one WAL flush for all of them. No
caller hears back before the commit that holds its write. If a batch fails for any reason
but the database being out of reach, each of its items is written again on its own, so that
one caller's bad write is never another's failure. ``resolve`` and ``fail`` answer a batch's
callers; the SQLite store, which batches on its own thread, uses them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from bridge.store.base import StoreUnavailable

T = TypeVar("T")

BATCH = 500  # items one statement writes at most


def resolve(futures: Iterable[asyncio.Future[Any]], values: Iterable[Any]) -> None:
    """Each waiting caller's answer (a caller that went away still had its write committed)."""
    for future, value in zip(futures, values, strict=True):
        if not future.done():
            future.set_result(value)


def fail(futures: Iterable[asyncio.Future[Any]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


class GroupCommit(Generic[T]):
    def __init__(
        self,
        many: Callable[[list[T]], Awaitable[list[bool]]],
        one: Callable[[T], Awaitable[bool]],
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self._many = many  # the batch's items -> each one's result, in order
        self._one = one  # one item, in a transaction of its own
        self._observe = observe  # told how many items each successful commit held
        self._pending: list[tuple[T, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def flushed(self) -> None:
        """Return once everything queued so far is written (or refused)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
            try:
                await self._write(batch)
            except BaseException as exc:  # cancelled: no caller is left waiting for ever
                fail((f for _item, f in batch), StoreUnavailable(f"write interrupted: {exc!r}"))
                raise

    async def _write(self, batch: list[tuple[T, asyncio.Future[bool]]]) -> None:
        futures = [future for _item, future in batch]
        try:
            values = await self._many([item for item, _future in batch])
        except StoreUnavailable as exc:
            fail(futures, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                fail(futures, exc)
                return
            for item, future in batch:
                try:
                    value = await self._one(item)
                except Exception as one:
                    fail([future], one)
                else:
                    self._committed(1)
                    resolve([future], [value])
            return
        self._committed(len(batch))
        resolve(futures, values)

    def _committed(self, items: int) -> None:
        if self._observe is not None:
            self._observe(items)
