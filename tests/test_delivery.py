"""Delivery you can trust: schedules, Retry-After, rate limits, timeouts, redrive after a fix."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.model import Status
from tests.conftest import table_yaml
from tests.harness import Harness, ok, run
from tests.sinks import Answer, Sinks


def only(h: Harness, destination: str) -> str:
    return f"/{destination}/"


async def delivery_of(h: Harness, destination: str) -> Any:
    return next(d for d in await h.store.deliveries() if d.destination == destination)


def test_503_for_a_while_then_200_follows_the_schedule(tmp_path: Path) -> None:
    answers = [503, 503, 503, 200]
    shop_sent_at: list[float] = []

    async def scenario(h: Harness) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if "/shop/" in request.url.path:
                shop_sent_at.append(h.clock())
                return httpx.Response(answers.pop(0), json={"ok": True})
            return ok(request)

        h.worker = type(h.worker)(
            h.pipeline, h.store, clock=h.clock, transport=httpx.MockTransport(handler)
        )
        await h.ingest("invoice.paid.json")
        start = h.clock()
        await h.worker.drain()
        policy = h.config.destinations["shop"].retry  # initial 0.05, max_interval 0.2
        for attempt in (1, 2, 3):
            pending = await delivery_of(h, "shop")
            assert pending.status is Status.PENDING
            base = min(policy.max_interval, policy.initial * 2 ** (attempt - 1))
            wait = pending.next_at - h.clock()
            assert base / 2 - 1e-9 <= wait <= base + 1e-9, (attempt, wait)
            # not a moment before it is due
            h.clock.now = pending.next_at - 0.001
            await h.worker.drain()
            assert len(shop_sent_at) == attempt
            h.clock.now = pending.next_at
            await h.worker.drain()
            assert len(shop_sent_at) == attempt + 1
        delivered = await delivery_of(h, "shop")
        assert delivered.status is Status.DELIVERED
        assert delivered.attempts == 4
        found = await h.store.get(delivered.id)
        assert found is not None
        assert [a.status_code for a in found[1]] == [503, 503, 503, 200]
        assert shop_sent_at[0] == start
        # delivered once: the other destinations were sent exactly once
        await h.worker.drain()
        assert len(shop_sent_at) == 4

    run(tmp_path, None, scenario)


NOW = 1_800_000_000.0


def dub_answers_429_first(h: Harness, sent: list[float], headers: dict[str, str]) -> None:
    """The harness's worker, its transport answering Dub's first request 429 with ``headers``
    (every Dub request's time goes in ``sent``) and everything else as a destination would."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "/dub/" in request.url.path:
            sent.append(h.clock())
            if len(sent) == 1:
                return httpx.Response(429, headers=headers, json={"error": {"message": "slow"}})
        return ok(request)

    h.worker = type(h.worker)(
        h.pipeline, h.store, clock=h.clock, transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("header", "value", "wait"),
    [
        ("Retry-After", "40", 40.0),
        ("Retry-After", email.utils.formatdate(NOW + 75, usegmt=True), 75.0),
        ("Retry-After", str(int(NOW) + 50), 50.0),
        ("Retry-After", str(int(NOW * 1000) + 30_000), 30.0),
        ("X-Rate-Limit-Retry", str(int(NOW) + 65), 65.0),
        ("RateLimit-Reset", "45", 45.0),
    ],
    ids=["seconds", "http-date", "epoch-s", "epoch-ms", "voucherify", "ecommerce"],
)
def test_429_nothing_is_sent_before_the_time_it_names(
    tmp_path: Path, header: str, value: str, wait: float
) -> None:
    sent: list[float] = []

    async def scenario(h: Harness) -> None:
        dub_answers_429_first(h, sent, {header: value})
        h.clock.now = NOW
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        assert sent == [NOW]
        dub = await delivery_of(h, "dub")
        assert dub.status is Status.PENDING
        assert dub.next_at >= NOW + wait - 0.01
        for step in (wait * 0.5, wait - 0.5):
            h.clock.now = NOW + step
            await h.worker.drain()
            assert len(sent) == 1, f"sent again after {step}s; the server asked for {wait}s"
        h.clock.now = dub.next_at
        await h.worker.drain()
        assert len(sent) == 2
        assert (await delivery_of(h, "dub")).status is Status.DELIVERED

    run(tmp_path, None, scenario)


def test_after_a_429_nothing_more_is_sent_to_that_destination_before_the_time_it_names(
    tmp_path: Path,
) -> None:
    table = table_yaml(
        "http://sinks.test",
        tmp_path / "bridge.db",
        retry="{initial: 0.05, max_interval: 3600, max_attempts: 5}",
    )
    sent: list[float] = []

    def invoice(n: int) -> Any:
        def rename(event: dict[str, Any]) -> None:
            event["id"] = f"evt_429_{n}"
            event["data"]["object"]["id"] = f"in_429_{n}"

        return rename

    async def scenario(h: Harness) -> None:
        dub_answers_429_first(h, sent, {"Retry-After": "30"})
        h.clock.now = NOW
        await h.ingest("invoice.paid.json", invoice(0))
        await h.worker.drain()
        assert sent == [NOW]
        for n in range(1, 6):  # other sales for dub, due at once
            await h.ingest("invoice.paid.json", invoice(n))
        for step in (1.0, 29.5):
            h.clock.now = NOW + step
            await h.worker.drain()
            assert sent == [NOW], f"{len(sent) - 1} sent {step}s after a 429 asking for 30s"
        # the other destinations were not held back
        others = [d for d in await h.store.deliveries() if d.destination != "dub"]
        assert {str(d.status) for d in others} == {"delivered"}
        h.clock.now = NOW + 30
        await h.worker.drain()
        assert len(sent) == 7
        assert {str(d.status) for d in await h.store.deliveries()} == {"delivered"}

    run(tmp_path, None, scenario, table=table)


def test_rate_limit_never_exceeded_in_any_minute(tmp_path: Path) -> None:
    table = table_yaml("http://sinks.test", tmp_path / "bridge.db").replace(
        "    api_key: dub_test_key\n", "    api_key: dub_test_key\n    rate_limit: 5\n"
    )
    sent: list[float] = []

    async def scenario(h: Harness) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if "/dub/" in request.url.path:
                sent.append(h.clock())
            return ok(request)

        h.worker = type(h.worker)(
            h.pipeline, h.store, clock=h.clock, transport=httpx.MockTransport(handler)
        )
        for n in range(17):

            def rename(event: dict[str, Any], n: int = n) -> None:
                event["id"] = f"evt_rate_{n}"

            await h.ingest("invoice.paid.json", rename)
        for _ in range(60):
            await h.worker.drain()
            h.clock.now += 7
        assert len(sent) == 17
        for start in sent:
            in_window = [t for t in sent if start <= t < start + 60]
            assert len(in_window) <= 5, (start, in_window)
        # the other destinations were not held back by dub's limit
        others = [d for d in await h.store.deliveries() if d.destination != "dub"]
        assert {d.updated_at for d in others} == {1_800_000_000.0}

    run(tmp_path, None, scenario, table=table)


@pytest.mark.slow
def test_a_hanging_destination_times_out_and_delays_no_other(tmp_path: Path) -> None:
    with Sinks() as sinks:
        sinks.queue("shop", Answer(200, {"ok": True}, delay=3.0))
        table = table_yaml(sinks.url, tmp_path / "bridge.db").replace(
            "    api_key: tolk_sec_test\n", "    api_key: tolk_sec_test\n    timeout: 0.5\n"
        )

        async def scenario(h: Harness) -> None:
            h.clock = time.time  # type: ignore[assignment]
            h.worker = type(h.worker)(h.pipeline, h.store)
            task = asyncio.create_task(h.worker.run())
            started = time.monotonic()
            await h.ingest("invoice.paid.json")
            h.worker.wake.set()
            deadline = started + 5
            while time.monotonic() < deadline:
                statuses = await h.statuses()
                if statuses.get("shop") == "pending" and all(
                    statuses[d] == "delivered" for d in ("dub", "umami", "voucherify")
                ):
                    break
                await asyncio.sleep(0.02)
            others_done = time.monotonic() - started
            shop = await delivery_of(h, "shop")
            await h.worker.stop(grace=1)
            await task
            assert others_done < 1.5
            assert shop.status is Status.PENDING
            assert shop.last_error is not None and shop.last_error.startswith("timeout")
            delivered = {r.destination for r in sinks.received}
            assert {"dub", "umami", "voucherify"} <= delivered

        run(tmp_path, None, scenario, table=table)


def test_redrive_after_fixing_the_table(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"
    broken = table_yaml("http://sinks.test", db).replace(
        "  - from: stripe/invoice.paid\n    to: [dub, umami, shop, voucherify]\n",
        "  - from: stripe/invoice.paid\n    to: [dub, umami, shop, voucherify]\n"
        "    fields:\n      customer_external_id: event.data.object.metadata.user_id\n"
        "      amount: event.data.object.amount_total\n",
    )

    async def first(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        dead = await h.store.deliveries(status="dead")
        assert len(dead) == 4
        assert dead[0].last_error == (
            "routes[0] stripe/invoice.paid: field amount (event.data.object.amount_total): "
            "missing from the event"
        )
        assert h.sent == []

    run(tmp_path, ok, first, table=broken)

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(table_yaml("http://sinks.test", db))
    result = CliRunner().invoke(app, ["redrive", "--dead", "--config", str(fixed)])
    assert result.exit_code == 0, result.output
    assert "redriven: 4" in result.stdout

    async def second(h: Harness) -> None:
        await h.worker.drain()
        assert set((await h.statuses()).values()) == {"delivered"}
        assert (
            json.loads(next(r.content for r in h.sent if "/dub/" in r.url.path))["amount"] == 2000
        )

    (tmp_path / "second").mkdir()
    run(tmp_path / "second", ok, second, table=fixed.read_text())


def test_redrive_dead_filters_by_destination_and_since(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "nope"})

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        assert len(await h.store.deliveries(status="dead")) == 4

    run(tmp_path, handler, scenario)
    config = str(tmp_path / "bridge.yaml")
    runner = CliRunner()
    future = runner.invoke(app, ["redrive", "--dead", "--since", "2999-01-01", "--config", config])
    assert "redriven: 0" in future.stdout
    one = runner.invoke(app, ["redrive", "--dead", "--destination", "umami", "--config", config])
    assert "redriven: 1" in one.stdout
    listed = runner.invoke(
        app, ["deliveries", "list", "--status", "dead", "--json", "--config", config]
    )
    assert sorted(d["destination"] for d in json.loads(listed.stdout)) == [
        "dub",
        "shop",
        "voucherify",
    ]
