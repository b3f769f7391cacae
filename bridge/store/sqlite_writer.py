"""The SQLite store's writer: a process of its own that holds the write connection.

    python -m bridge.store.sqlite_writer PATH SYNCHRONOUS MIGRATE

The bridge starts it and talks to it over its standard input and output, a frame each way
per batch (a 4-byte length, then a pickle): first the writer answers whether the database
opened (``(True, None)`` or ``(False, exception)``), then, for each batch of operations it
reads, it runs them in one transaction and one commit and writes back each one's outcome
and the commits made. Running the statements here, on the machine's other core, leaves the
bridge's event loop to the webhooks. The writer ends when its input does (the bridge closed
it, or the bridge is gone); signals meant for the bridge (a terminal's Ctrl-C) don't end it
before the bridge's last commit.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
from typing import IO

from bridge.store import sqlite_ops
from bridge.store.pipe import frame, read_frame


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it crosses the pipe as it is, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def serve(path: str, synchronous: str, migrate: bool, inp: IO[bytes], out: IO[bytes]) -> None:
    try:
        conn = sqlite_ops.connect(path, synchronous, migrate)
    except Exception as exc:
        out.write(frame((False, portable(exc))))
        out.flush()
        return
    out.write(frame((True, None)))
    out.flush()
    try:
        while (batch := read_frame(inp)) is not None:
            outcomes, commits = sqlite_ops.run_batch(conn, batch)
            outcomes = [(ok, v if ok else portable(v)) for ok, v in outcomes]
            out.write(frame((outcomes, commits)))
            out.flush()
    finally:
        conn.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, synchronous, migrate = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    # frames go out on the original standard output; anything printed goes to standard error
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(BrokenPipeError):  # the bridge is gone
        serve(path, synchronous, migrate, sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
