"""How far the ingest ratio could go: the bridge under wrk with parts of its work taken away.

    python -m bench.bounds [--rounds N]

Rounds alternate, each side a fresh process measured as in `python -m bench`'s ingest phase
(wrk, 64 connections, one-second warm-up): the verify-only app; the bridge; the bridge with
its worker stopped; the same with only the event's row written, no routing and no log line
(what an "inbox" design, which stores the raw event, acknowledges, and routes it and writes
its deliveries afterwards, could reach at most); the bridge with its worker stopped and its
SQLite statements made free (each batch still begins and commits, empty). What the last one
reaches is as far as any change to the statements or to the worker's share could take the
ratio. The parts are replaced in this module's own launcher process (``python -m
bench.bounds serve PARTS ...`` runs ``bridge`` with them replaced), never in the bridge
itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.__main__ import (
    PY,
    SECRET,
    Run,
    free_port,
    loopback_sink,
    median_run,
    process,
    request_files,
)
from bench.breakdown import Silent

if TYPE_CHECKING:
    from bridge.model import ProviderEvent
    from bridge.pipeline import Plan

VARIANTS = {
    "verify-only app": None,
    "bridge": "",
    "bridge, worker stopped": "worker",
    "inbox at most: event row only, no routing, no log": "worker,deliveries,plan,log",
    "bridge, worker stopped, no SQL statements": "worker,sql",
}
COUNT = 60_000


def make_free(parts: set[str]) -> None:
    """The bridge in this process with ``parts`` made free (never the bridge itself)."""
    import bridge.app
    from bridge.store.sqlite import SQLiteStore
    from bridge.worker import Worker

    if "worker" in parts:

        async def idle(self: Worker) -> None:
            await asyncio.Event().wait()  # alive (readyz asks), never claiming

        Worker.run = idle  # type: ignore[method-assign]
    # the statements and the routing run in the store's writer process: the parts made free
    # there are made free by this module's writer launcher
    # (``python -m bench.bounds writer PARTS ...``)
    if parts & WRITER_PARTS:
        writer = ",".join(sorted(parts & WRITER_PARTS))
        SQLiteStore.writer = (sys.executable, "-m", "bench.bounds", "writer", writer)
    if "plan" in parts:  # on the event loop, for a webhook admitted there (PostgreSQL's way)
        plan_once()
    if "log" in parts:
        bridge.app.log = Silent()


WRITER_PARTS = {"sql", "deliveries", "plan"}


def plan_once() -> None:
    """Every event gets the first event's plan (all are alike here)."""
    from bridge.pipeline import Pipeline

    planned: dict[str, Plan] = {}
    plan = Pipeline.plan

    def first_plan(self: Pipeline, event: ProviderEvent) -> Plan:
        if "plan" not in planned:
            planned["plan"] = plan(self, event)
        return planned["plan"]

    Pipeline.plan = first_plan  # type: ignore[method-assign]


def writer(parts: set[str], argv: list[str]) -> None:
    """Run the store's writer process with ``parts`` made free."""
    from bridge.store import sqlite_ops, sqlite_writer

    if "sql" in parts:
        sqlite_ops.write_events = lambda conn, new: [True] * len(new)
    if "deliveries" in parts:  # the events are inserted; their deliveries and refs are not
        sqlite_ops._insert = lambda conn, name, rows: None
    if "plan" in parts:  # the writer process plans each webhook it admits
        plan_once()
    sys.argv = ["sqlite_writer", *argv]
    sqlite_writer.main()


def serve(parts: set[str], argv: list[str]) -> None:
    """Run the bridge's CLI with ``parts`` made free."""
    from bridge import cli

    make_free(parts)
    sys.argv = ["bridge", *argv]
    cli.main()


def measure(rounds: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    with (
        tempfile.TemporaryDirectory(prefix="bench-bounds-") as folder,
        request_files(folder) as scratch,
    ):
        run = Run(Path(folder), quick=False, scratch=Path(scratch))
        prepared = run.requests
        with prepared(COUNT) as requests:

            @contextmanager
            def reused(count: int) -> Iterator[Path]:
                """The measured runs' events, written once for every variant and round."""
                if count == COUNT:
                    yield requests
                else:
                    with prepared(count) as path:
                        yield path

            run.requests = reused  # type: ignore[method-assign]
            for _round in range(rounds):
                for name, parts in VARIANTS.items():
                    if parts is None:
                        port = free_port()
                        args = [PY, "-m", "bench.apps", "verify-only", str(port), SECRET]
                        with process(args, f"http://127.0.0.1:{port}/nope") as app:
                            url = f"http://127.0.0.1:{port}/webhooks/stripe"
                            figures = run.loaded(url, app.pid, COUNT)
                    else:
                        launcher = [PY, "-m", "bench.bounds", "serve", parts or "-"]
                        with (
                            loopback_sink() as sink,
                            run.bridge(sink, launcher=launcher) as (url, pid),
                        ):
                            figures = run.loaded(f"{url}/webhooks/stripe", pid, COUNT)
                    results[name].append(figures)
                    print(f"  {name:<52}{figures['rps']:8.0f} req/s", file=sys.stderr, flush=True)
    return results


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] in ("serve", "writer"):
        launch = serve if sys.argv[1] == "serve" else writer
        launch(set(sys.argv[2].split(",")) - {"-"}, sys.argv[3:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = measure(args.rounds)
    ceiling = median_run(results["verify-only app"])
    print(f"{f'medians of {args.rounds} rounds':<54}   req/s  ratio   p99 ms  CPU us/request")
    for name, runs in results.items():
        m = median_run(runs)
        print(
            f"  {name:<52}{m['rps']:8.0f} {m['rps'] / ceiling['rps']:6.2f} "
            f"{m['p99'] * 1000:8.1f} {m['cpu_us_per_request']:8.0f}"
        )


if __name__ == "__main__":
    main()
