"""The SQLite store's connections: what they are set to do, shown by what they do."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.store import sqlite_ops

IN_CREATE = 0x100

# Batches of big events with four deliveries each, as the writer stores them. From the third,
# SQLite keeps a statement journal for the deliveries' multi-row INSERT that outgrows its
# in-memory spill threshold (64 KiB): with temporary files allowed, it becomes a file.
BATCHES = textwrap.dedent(
    """
    import sys
    from bridge.store import sqlite_ops

    conn = sqlite_ops.connect(sys.argv[1], "FULL", True)
    if sys.argv[2] == "files":
        conn.execute("PRAGMA temp_store = FILE")
    payload = '{"id": "evt", "pad": "' + "x" * 3000 + '"}'
    destinations = [(0, "dub", None), (0, "umami", None), (0, "shop", None), (0, "vouch", None)]
    for batch in range(4):
        events = [
            sqlite_ops.NewEvent(
                ("stripe", f"evt_{batch}_{n}", "invoice.paid", 1.0, payload),
                destinations, f"in_{batch}_{n}", [], [], None, 1.0,
            )
            for n in range(64)
        ]
        conn.execute("BEGIN IMMEDIATE")
        assert all(sqlite_ops.write_events(conn, events))
        conn.execute("COMMIT")
    """
)


def files_created(tmp_path: Path, name: str, mode: str) -> int:
    """How many files SQLite created in its temporary directory while storing the batches
    (each is unlinked as soon as it is open: only a watch on the directory sees it)."""
    temp = tmp_path / f"{name}-temp"
    temp.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if watch < 0:
        pytest.skip("inotify is not available here")
    try:
        assert libc.inotify_add_watch(watch, str(temp).encode(), IN_CREATE) >= 0
        subprocess.run(
            [sys.executable, "-c", BATCHES, str(tmp_path / f"{name}.db"), mode],
            env={**os.environ, "SQLITE_TMPDIR": str(temp)},
            check=True,
            timeout=120,
        )
        try:
            events = os.read(watch, 65536)
        except BlockingIOError:
            return 0
        return events.count(b"etilqs_")  # SQLite's temporary files' prefix
    finally:
        os.close(watch)


def test_the_writer_connection_stores_big_batches_without_temporary_files(
    tmp_path: Path,
) -> None:
    # the same batches on a connection allowed temporary files make at least one: the watch
    # sees them, so the none below is the setting's doing
    assert files_created(tmp_path, "allowed", "files") >= 1
    assert files_created(tmp_path, "writer", "as-connected") == 0


def test_the_read_connection_keeps_its_temporary_data_in_memory(tmp_path: Path) -> None:
    sqlite_ops.connect(str(tmp_path / "bridge.db"), "FULL", True).close()
    reader = sqlite_ops.connect_reader(str(tmp_path / "bridge.db"))
    try:
        assert reader.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
    finally:
        reader.close()


OLD_ORDER_INDEX = """
DROP INDEX deliveries_order;
CREATE INDEX deliveries_order ON deliveries (destination, order_key, id)
    WHERE status IN ('pending', 'in_flight');
"""


def wal_pages_a_webhook(path: Path, script: str = "") -> float:
    """Pages written to the WAL a stored webhook (four deliveries each, random order keys), in
    batches of 16 into a queue that already holds 4,096 events."""
    conn = sqlite_ops.connect(str(path), "FULL", True)
    try:
        conn.executescript(script)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        payload = '{"id": "evt", "pad": "' + "x" * 3000 + '"}'
        destinations: list[tuple[int, str, str | None]] = [
            (0, name, None) for name in ("dub", "umami", "shop", "vouch")
        ]

        def batch(start: int, size: int) -> None:
            events = [
                sqlite_ops.NewEvent(
                    ("stripe", f"evt_{n}", "invoice.paid", 1.0, payload),
                    destinations,
                    f"in_{(n * 2654435761) % 2**32:08x}",  # scattered, as invoice ids are
                    [],
                    [],
                    None,
                    1.0,
                )
                for n in range(start, start + size)
            ]
            conn.execute("BEGIN IMMEDIATE")
            assert all(sqlite_ops.write_events(conn, events))
            conn.execute("COMMIT")

        for start in range(0, 4096, 256):
            batch(start, 256)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for start in range(4096, 4096 + 32 * 16, 16):
            batch(start, 16)
        frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        return float(frames) / (32 * 16)
    finally:
        conn.close()


def test_an_events_deliveries_share_their_order_index_pages(tmp_path: Path) -> None:
    # the order index leads with the order key: a webhook's four deliveries sit in one of its
    # leaves, not in four (one per destination) as with the index 0001 made
    before = wal_pages_a_webhook(tmp_path / "before.db", OLD_ORDER_INDEX)
    now = wal_pages_a_webhook(tmp_path / "now.db")
    assert now <= before - 2.5, (now, before)
