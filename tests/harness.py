"""An in-process worker over a real SQLite store, with an injected clock and a mock transport."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bridge import config as config_module
from bridge.model import Delivery
from bridge.pipeline import Pipeline
from bridge.store import Ingest, SQLiteStore
from bridge.worker import Worker
from tests.conftest import fixture_bytes, table_yaml

# a destination's stand-in: its answer, at once or awaited (an async handler can take its time)
Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ok(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.endswith("/track/sale"):
        body = json.loads(request.content)
        return httpx.Response(
            200,
            json={"eventName": "x", "customer": {"id": "c"}, "sale": {"amount": body["amount"]}},
        )
    if path.endswith("/api/send"):
        return httpx.Response(200, json={"cache": "c", "sessionId": "s", "visitId": "v"})
    return httpx.Response(200, json={"ok": True})


class Harness:
    def __init__(
        self, tmp_path: Path, handler: Handler | None, *, table: str | None = None
    ) -> None:
        path = tmp_path / "bridge.yaml"
        path.write_text(table or table_yaml("http://sinks.test", tmp_path / "bridge.db"))
        self.config = config_module.load(path)
        self.pipeline = Pipeline(self.config)
        self.store = SQLiteStore(self.config.database_url)
        self.clock = Clock()
        self.sent: list[httpx.Request] = []

        async def record(request: httpx.Request) -> httpx.Response:
            self.sent.append(request)
            assert handler is not None
            answer = handler(request)
            return await answer if inspect.isawaitable(answer) else answer

        self.worker = Worker(
            self.pipeline, self.store, clock=self.clock, transport=httpx.MockTransport(record)
        )

    async def ingest(
        self, name: str, mutate: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        payload = json.loads(fixture_bytes(name))
        if mutate:
            mutate(payload)
        body = json.dumps(payload)
        source = self.pipeline.sources["stripe"]
        event = source.event(payload, {})
        plan = self.pipeline.plan(event)
        item = Ingest(
            event,
            body,
            plan.deliveries,
            plan.remember,
            plan.purchase,
            plan.link_refs,
            plan.cumulative,
        )
        assert await self.store.ingest(item, self.clock())

    async def statuses(self) -> dict[str, str]:
        return {d.destination: str(d.status) for d in await self.store.deliveries()}

    async def delivery(self, destination: str) -> Delivery:
        """The one delivery to ``destination``."""
        (found,) = [d for d in await self.store.deliveries() if d.destination == destination]
        return found

    async def rounds(self, count: int, step: float) -> None:
        """``count`` times: deliver what is due, then move the clock ``step`` seconds on."""
        for _ in range(count):
            await self.worker.drain()
            self.clock.now += step

    def to(self, suffix: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.sent if r.url.path.endswith(suffix)]


def run(
    tmp_path: Path,
    handler: Handler | None,
    scenario: Callable[[Harness], Any],
    table: str | None = None,
) -> None:
    async def main() -> None:
        harness = Harness(tmp_path, handler, table=table)
        await harness.store.open()
        try:
            await scenario(harness)
        finally:
            await harness.worker.stop(grace=1)
            await harness.store.close()

    asyncio.run(main())
