"""The SQLite store's writer process: its life beside the bridge's.

The statements run in a process of their own; these tests check what that adds: a writer
that dies is replaced without losing an acknowledged event, a bridge that dies takes its
writer with it, and a Ctrl-C meant for the bridge does not end the writer first; and what
it builds for the worker as it claims deliveries.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import config as config_module
from bridge.model import NewDelivery, ProviderEvent
from bridge.store import Ingest, SQLiteStore, StoreUnavailable, sqlite_ops
from bridge.store.sqlite_writer import Admission, run
from tests.conftest import fixture, table_yaml

NOW = 1_700_000_000.0


def item(n: int) -> Ingest:
    event = ProviderEvent("stripe", f"evt_{n}", "invoice.paid", int(NOW), {"id": f"evt_{n}"})
    return Ingest(event, json.dumps({"id": f"evt_{n}"}), [NewDelivery(0, "dub", f"in_{n}")])


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (ended, not yet waited for by its parent) is not alive
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def writer_pid(store: SQLiteStore) -> int:
    assert store._writer is not None
    return store._writer.pid


def test_a_writer_that_dies_is_replaced_by_the_next_batch(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
    runner.run(store.open())
    try:
        assert runner.run(store.ingest(item(1), NOW))
        first = writer_pid(store)
        os.kill(first, signal.SIGKILL)
        assert gone_within(first, 10)
        # the next write starts a new writer; what was acknowledged before is still there
        assert runner.run(store.ingest(item(2), NOW))
        assert writer_pid(store) != first
        assert not runner.run(store.ingest(item(1), NOW))  # a duplicate: it was kept
        assert runner.run(store.counts()) == {"pending": 2}
    finally:
        runner.run(store.close())


def test_a_batch_whose_writer_dies_fails_as_unavailable_not_as_a_crash(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    """The writer ends while a batch is in flight: its callers hear StoreUnavailable (a
    webhook is answered 503 and sent again), and the next batch has a writer again."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
    runner.run(store.open())
    try:
        pid = writer_pid(store)
        # a batch that takes the writer a while: another connection holds the write lock
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")

        async def killed_in_flight() -> BaseException | None:
            write = asyncio.ensure_future(store.ingest(item(1), NOW))
            await asyncio.sleep(0.5)  # the batch is with the writer, waiting for the lock
            os.kill(pid, signal.SIGKILL)
            try:
                await write
            except BaseException as exc:
                return exc
            return None

        failure = runner.run(killed_in_flight())
        other.execute("ROLLBACK")
        other.close()
        assert isinstance(failure, StoreUnavailable), failure
        assert "writer process ended" in str(failure)
        assert runner.run(store.ingest(item(1), NOW))  # not stored before: stored now
    finally:
        runner.run(store.close())


def test_closing_a_store_whose_writer_died_starts_no_new_one(
    tmp_path: Path, runner: asyncio.Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
    runner.run(store.open())
    assert runner.run(store.ingest(item(1), NOW))
    pid = writer_pid(store)
    os.kill(pid, signal.SIGKILL)
    assert gone_within(pid, 10)
    spawned: list[int] = []
    spawn = store._spawn

    def counted() -> Any:
        spawned.append(1)
        return spawn()

    monkeypatch.setattr(store, "_spawn", counted)
    runner.run(store.close())
    assert spawned == []
    reopened = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
    runner.run(reopened.open())
    try:
        assert runner.run(reopened.counts()) == {"pending": 1}
    finally:
        runner.run(reopened.close())


def test_the_next_batch_goes_to_the_writer_while_one_is_with_it_and_both_fail_if_it_dies(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    """The writer has the next batch in hand while it runs one (the event loop does not wait
    for the first's answer to send it); when the writer dies, every batch it had fails as
    unavailable, and no caller waits for ever."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
    runner.run(store.open())
    try:
        pid = writer_pid(store)
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the first batch waits for this lock

        async def two_in_flight() -> list[BaseException | bool]:
            first = asyncio.ensure_future(store.ingest(item(1), NOW))
            await asyncio.sleep(0.3)
            second = asyncio.ensure_future(store.ingest(item(2), NOW))
            await asyncio.sleep(0.3)
            assert len(store._in_flight) == 2 and not store._pending
            os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                return list(await asyncio.gather(first, second, return_exceptions=True))

        outcomes = runner.run(two_in_flight())
        other.execute("ROLLBACK")
        other.close()
        assert [type(o) for o in outcomes] == [StoreUnavailable, StoreUnavailable], outcomes
        assert runner.run(store.ingest(item(2), NOW))  # a new writer, and nothing was stored
        assert runner.run(store.ingest(item(1), NOW))
    finally:
        runner.run(store.close())


def test_the_writer_ends_with_the_bridge_even_when_the_bridge_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from bridge.store import SQLiteStore

        async def main():
            store = SQLiteStore("sqlite:///{tmp_path}/k.db")
            await store.open()
            print(store._writer.pid, flush=True)
            time.sleep(60)

        asyncio.run(main())
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as bridge:
        try:
            assert bridge.stdout is not None
            pid = int(bridge.stdout.readline())
            assert alive(pid)
        finally:
            bridge.kill()
            bridge.wait()
    assert gone_within(pid, 10), "the writer outlived its bridge"


def test_a_ctrl_c_for_the_bridge_does_not_end_the_writer_before_it(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    """A terminal's Ctrl-C goes to its foreground process group: the writer is in a session
    of its own, and ignores SIGINT and SIGTERM sent to it anyway (it ends with its input)."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
    runner.run(store.open())
    try:
        pid = writer_pid(store)
        assert os.getpgid(pid) != os.getpgid(0)
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        assert alive(pid)
        assert runner.run(store.ingest(item(1), NOW))
        assert writer_pid(store) == pid
    finally:
        runner.run(store.close())
    assert gone_within(pid, 10)


def test_claims_leave_with_their_sale_bodies_unless_their_batch_answers_a_burst(
    tmp_path: Path,
) -> None:
    (tmp_path / "bridge.yaml").write_text(table_yaml("http://sinks.test", tmp_path / "b.db"))
    table = pickle.dumps(config_module.load(tmp_path / "bridge.yaml"))
    conn = sqlite_ops.connect(str(tmp_path / "b.db"), "FULL", True)
    admission = Admission()
    run(conn, [("table", table)], admission)

    def webhook(n: int) -> tuple[Any, ...]:
        event = fixture("invoice.paid.json")
        event["id"], event["data"]["object"]["id"] = f"evt_{n}", f"in_{n}"
        return ("admit", "stripe", json.dumps(event).encode(), [], NOW)

    def claim(destination: str) -> tuple[Any, ...]:
        return ("claim", destination, 10, NOW, NOW + 60, "w")

    (accepted,), _commits = run(conn, [webhook(1)], admission)
    assert accepted[1].outcome == "accepted"
    # with a burst of webhooks to answer: the worker builds the claimed sales' requests itself
    *stored, (_ok, rows) = run(conn, [*map(webhook, range(2, 10)), claim("dub")], admission)[0]
    assert [verdict.outcome for _ok, verdict in stored] == ["accepted"] * 8
    assert len(rows) == 9 and all("prepared" not in row and row["payload"] for row in rows)
    # with a webhook or two, or alone: each claimed sale leaves with its body, without its
    # event's text
    for batch in ([webhook(10), claim("umami")], [claim("shop")]):
        *_stored, (_ok, rows) = run(conn, batch, admission)[0]
        assert len(rows) == 10 and all(json.loads(row["prepared"]) for row in rows)
        assert all(row["payload"] is None for row in rows)
    conn.close()
