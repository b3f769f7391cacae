"""Where a webhook's CPU goes, behind the ingest figure.

    python -m bench.breakdown [--requests N]

The bridge's ASGI app is driven in-process (no sockets, no uvicorn: the server stack both
sides of the ingest ratio share is left out), 64 requests at a time, its worker not started
(under a burst it yields anyway); the figure is the event loop thread's CPU per request.
Slices of the requests go through in turn, in ONE process so that the machine's mood falls
on all alike: the verify-only app; the bridge; the bridge with one part made free:

    log     the log line of an accepted webhook
    store   what admitting and storing costs the event loop (the parse, the routing and the
            statements run in the store's writer process, on the other core): each webhook's
            verdict ("accepted") answered at once instead

A part's cost is the difference. Each figure is the least over its slices (noise only adds).
Parts are replaced in this process only, never in the bridge itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

from bench.__main__ import SECRET, table
from bench.apps import verify_only
from bench.load import signed

if TYPE_CHECKING:
    from starlette.applications import Starlette

VARIANTS = ("verify-only", "bridge", "no-log", "no-store")
CONNECTIONS = 64
ROUNDS = 8

App = Callable[..., Any]


def scope_of(signature: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/stripe",
        "raw_path": b"/webhooks/stripe",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"stripe-signature", signature.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }


async def call(app: App, signature: str, body: bytes) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the answer is pending
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_of(signature, body), receive, send)
    return status


async def drive(app: App, requests: list[tuple[str, bytes]]) -> float:
    """Main-thread CPU per request (us), 64 in flight at a time; every answer must be 200."""
    gate = asyncio.Semaphore(CONNECTIONS)

    async def one(signature: str, body: bytes) -> int:
        async with gate:
            return await call(app, signature, body)

    start = time.thread_time()
    statuses = await asyncio.gather(*(one(s, b) for s, b in requests))
    spent = time.thread_time() - start
    if set(statuses) != {200}:
        raise RuntimeError(f"answers other than 200: {sorted(set(statuses))}")
    return spent / len(requests) * 1e6


async def measure(count: int, work: Path) -> dict[str, float]:
    import bridge.app

    requests = [signed(SECRET, "bd", n) for n in range(count)]
    warm, rest = requests[:2000], requests[2000:]
    rounds = len(VARIANTS) * ROUNDS
    slices = [rest[k::rounds] for k in range(rounds)]

    application = bridge_app(work)
    store = application.state.store
    ceiling = verify_only(SECRET)
    logger = bridge.app.log
    settle_gc()
    figures: dict[str, float] = {}
    async with application.router.lifespan_context(application):
        await drive(application, warm)
        await drive(ceiling, warm)
        for index, part in enumerate(slices):
            variant = VARIANTS[index % len(VARIANTS)]
            if variant == "no-log":
                bridge.app.log = Silent()
            if variant == "no-store":
                store._call = admitted
            try:
                spent = await drive(ceiling if variant == "verify-only" else application, part)
            finally:
                bridge.app.log = logger
                vars(store).pop("_call", None)
            figures[variant] = min(spent, figures.get(variant, spent))
    return figures


async def admitted(*op: Any) -> Any:
    """A webhook admitted and stored at no cost (a part made free)."""
    from bridge.intake import Verdict

    return Verdict("accepted", "evt", "invoice.paid", deliveries=DESTINATIONS)


DESTINATIONS = ("dub", "umami", "shop", "voucherify")


def bridge_app(work: Path, sink: str = "http://127.0.0.1:9") -> Starlette:
    """The bridge's app on the bench's table (a database in ``work``, destinations at
    ``sink``), worker off, logging JSON lines with its secrets masked."""
    import bridge.app
    from bridge import config, logging

    path = work / "bridge.yaml"
    path.write_text(table(sink, f"sqlite:///{work}/bridge.db"))
    loaded = config.load(path)
    logging.configure("json")
    logging.set_secrets(loaded.secrets())
    return bridge.app.create_app(loaded, run_worker=False)


def settle_gc() -> None:
    """Keep the collector off everything loaded so far, as `bridge serve` does."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


class Silent:
    """A logger that writes nothing (a part made free)."""

    def bind(self, **values: Any) -> Silent:
        return self

    def info(self, *args: Any, **values: Any) -> None:
        pass

    warning = error = info


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60_000)
    args = parser.parse_args()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the log lines go nowhere
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as folder:
        figures = uvloop.run(measure(args.requests, Path(folder)))
    whole = figures["bridge"]
    parts = {
        "admitting and storing (the event loop's part)": whole - figures["no-store"],
        "log line": whole - figures["no-log"],
    }
    print("in-process, event loop CPU per request (us), worker off")
    print(f"  {'verify-only app':<40}{figures['verify-only']:7.1f}")
    print(f"  {'bridge':<40}{whole:7.1f}")
    for what, cost in parts.items():
        print(f"    {what:<38}{cost:7.1f}")
    print(json.dumps({"figures": figures, "parts": parts}))


if __name__ == "__main__":
    main()
