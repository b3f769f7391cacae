"""GroupCommit: batching, one answer per caller, and failures kept to their own caller."""

from __future__ import annotations

import asyncio

import pytest

from bridge.store.base import StoreUnavailable
from bridge.store.group import GroupCommit


class Backend:
    """Writes ints: ``many`` answers each one's parity; a negative int spoils any batch it is
    in and fails on its own too; ``down`` makes every write fail as a lost database would."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.down = False

    async def many(self, items: list[int]) -> list[bool]:
        await asyncio.sleep(0)  # a round trip
        self.batches.append(items)
        if self.down:
            raise StoreUnavailable("database down")
        if any(i < 0 for i in items):
            raise ValueError("a bad row")
        return [i % 2 == 0 for i in items]

    async def one(self, item: int) -> bool:
        self.alone.append(item)
        if item < 0:
            raise ValueError(f"bad row {item}")
        return item % 2 == 0


def test_calls_made_while_a_batch_is_written_go_together_in_the_next() -> None:
    async def body() -> None:
        backend = Backend()
        sizes: list[int] = []
        group = GroupCommit(backend.many, backend.one, sizes.append)
        answers = await asyncio.gather(*(group(i) for i in range(10)))
        assert answers == [i % 2 == 0 for i in range(10)]
        assert backend.batches == [list(range(10))]  # all queued before the first write
        assert sizes == [10]
        late = asyncio.gather(*(group(i) for i in range(10, 13)))
        assert await late == [True, False, True]
        assert backend.batches[1:] == [[10, 11, 12]]
        assert backend.alone == []

    asyncio.run(body())


def test_a_bad_item_fails_alone_and_the_others_are_written_one_by_one() -> None:
    async def body() -> None:
        backend = Backend()
        group = GroupCommit(backend.many, backend.one)
        answers = await asyncio.gather(*(group(i) for i in (2, -1, 3)), return_exceptions=True)
        assert answers[0] is True and answers[2] is False
        assert isinstance(answers[1], ValueError) and "bad row -1" in str(answers[1])
        assert backend.alone == [2, -1, 3]

    asyncio.run(body())


def test_a_batch_of_one_that_fails_is_not_written_again() -> None:
    async def body() -> None:
        backend = Backend()
        group = GroupCommit(backend.many, backend.one)
        with pytest.raises(ValueError, match="a bad row"):
            await group(-5)
        assert backend.alone == []

    asyncio.run(body())


def test_a_lost_database_fails_every_caller_at_once() -> None:
    async def body() -> None:
        backend = Backend()
        backend.down = True
        group = GroupCommit(backend.many, backend.one)
        answers = await asyncio.gather(*(group(i) for i in range(4)), return_exceptions=True)
        assert all(isinstance(a, StoreUnavailable) for a in answers)
        assert backend.alone == []  # no one-by-one retry against a database that is gone

    asyncio.run(body())


def test_no_caller_waits_for_ever_when_the_writer_is_cancelled() -> None:
    async def body() -> None:
        started = asyncio.Event()

        async def hang(items: list[int]) -> list[bool]:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        group = GroupCommit(hang, Backend().one)
        callers = asyncio.gather(*(group(i) for i in range(3)), return_exceptions=True)
        await started.wait()
        assert group._flusher is not None
        group._flusher.cancel()
        answers = await asyncio.wait_for(callers, 5)
        assert all(isinstance(a, StoreUnavailable) for a in answers), answers
        await group.flushed()

    asyncio.run(body())


def test_only_commits_that_succeeded_are_observed() -> None:
    """The batch-size observer hears of commits that held their items: a lost database's batch
    is none; a batch that failed for one bad item is none, its good items' own commits are."""

    async def body() -> None:
        backend = Backend()
        sizes: list[int] = []
        group = GroupCommit(backend.many, backend.one, sizes.append)
        await asyncio.gather(*(group(i) for i in (2, -1, 3)), return_exceptions=True)
        assert sizes == [1, 1]  # 2 and 3, each alone; -1 failed
        backend.down = True
        await asyncio.gather(*(group(i) for i in range(4)), return_exceptions=True)
        assert sizes == [1, 1]

    asyncio.run(body())
