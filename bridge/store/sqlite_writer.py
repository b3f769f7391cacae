"""The SQLite store's writer: a process of its own that holds the write connection.

    python -m bridge.store.sqlite_writer PATH SYNCHRONOUS MIGRATE

The bridge starts it and talks to it over its standard input and output, a frame each way
per batch (a 4-byte length, then a pickle): first the writer answers whether the database
opened (``(True, None)`` or ``(False, exception)``), then, for each batch of operations it
reads, it runs them in one transaction and one commit and writes back each one's outcome
and the commits made. Running the statements here, on the machine's other core, leaves the
bridge's event loop to the webhooks; so does admitting them here: a webhook the bridge has
verified comes as its body and headers (``admit``), and is parsed, planned by the table (sent
once, ``table``) and stored in the same batch; and so does building requests here: the
deliveries of sales it claims for the worker leave with their bodies (``Admission.prepare``).
The writer ends when its input does (the bridge closed it, or the bridge is gone); signals
meant for the bridge (a terminal's Ctrl-C) don't end it before the bridge's last commit.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
from typing import IO, TYPE_CHECKING, Any

from bridge.store import sqlite_ops
from bridge.store.base import BURST
from bridge.store.pipe import frame, read_frame
from bridge.store.sqlite_ops import NewEvent, Op, Outcome

if TYPE_CHECKING:
    import sqlite3

    from bridge.intake import RawHeaders, Verdict
    from bridge.pipeline import Pipeline


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it crosses the pipe as it is, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class Admission:
    """Webhooks admitted with the table the bridge sent (a writer that only stores, the CLI's,
    is sent none, and never imports the pipeline)."""

    def __init__(self) -> None:
        self._pipe: Pipeline | None = None

    def table(self, table: bytes) -> None:
        from bridge.pipeline import Pipeline

        self._pipe = Pipeline(pickle.loads(table))

    def __call__(
        self, source: str, body: bytes, headers: RawHeaders, now: float
    ) -> tuple[Verdict, NewEvent | None]:
        from starlette.datastructures import Headers

        from bridge.intake import admit

        if self._pipe is None:
            raise RuntimeError("the writer was sent a webhook before its table")
        depth = self._pipe.config.server.max_depth
        verdict, item = admit(self._pipe, source, body, Headers(raw=headers), depth)
        return verdict, None if item is None else sqlite_ops.new_event(item, now)

    def prepare(self, rows: list[dict[str, Any]]) -> None:
        """Claimed deliveries' request bodies, for the sales among them (``Pipeline.prepare``):
        each such row gains ``prepared`` and loses its event's text, which the worker then has
        no use for (an event's four deliveries each carried it across the pipe)."""
        if self._pipe is None:
            return
        for row in rows:
            if row["refund_baseline"]:
                continue  # a cumulative refund: the worker sends what is new of it
            try:
                event = self._pipe.stored_event(
                    row["source"], row["event_id"], row["event_type"], row["payload"]
                )
                prepared = self._pipe.prepare(event, row["destination"], row["route"])
            except Exception:  # the worker builds it, and reports what fails as it does
                continue
            if prepared is not None:
                row["prepared"], row["payload"] = prepared, None


def run(
    conn: sqlite3.Connection, batch: list[Op], admission: Admission
) -> tuple[list[Outcome], list[int]]:
    """``sqlite_ops.run_batch`` for a batch that may hold webhooks to admit: each becomes its
    verdict, and those with something to store an ``ingest`` of the batch's transaction."""
    outcomes: list[Outcome | None] = [None] * len(batch)
    verdicts: dict[int, Verdict] = {}
    writes: list[tuple[int, Op]] = []
    for index, op in enumerate(batch):
        if op[0] in ("table", "admit"):
            try:
                if op[0] == "table":
                    admission.table(op[1])
                    outcomes[index] = (True, None)
                    continue
                verdict, record = admission(*op[1:])
            except Exception as exc:  # a bug: this webhook's failure, not its batch's
                outcomes[index] = (False, exc)
                continue
            if record is None:
                outcomes[index] = (True, verdict)
            else:
                verdicts[index] = verdict
                writes.append((index, ("ingest", record)))
        else:
            writes.append((index, op))
    commits: list[int] = []
    if writes:
        done, commits = sqlite_ops.run_batch(conn, [op for _index, op in writes])
        # webhooks first: a batch that answers a burst of them is not held up building request
        # bodies (its claims' are built by the worker, as PostgreSQL's are)
        burst = sum(op[0] in ("admit", "ingest") for op in batch) >= BURST
        for (index, op), (ok, value) in zip(writes, done, strict=True):
            said: Any = verdicts.get(index)
            if ok and said is not None:
                value = said if value else said._replace(outcome="duplicate")
            elif ok and op[0] == "claim" and not burst:
                admission.prepare(value)
            outcomes[index] = (ok, value)
    answered = [outcome for outcome in outcomes if outcome is not None]
    assert len(answered) == len(batch)
    return answered, commits


def serve(path: str, synchronous: str, migrate: bool, inp: IO[bytes], out: IO[bytes]) -> None:
    try:
        conn = sqlite_ops.connect(path, synchronous, migrate)
    except Exception as exc:
        out.write(frame((False, portable(exc))))
        out.flush()
        return
    out.write(frame((True, None)))
    out.flush()
    admission = Admission()
    try:
        while (batch := read_frame(inp)) is not None:
            outcomes, commits = run(conn, batch, admission)
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
