"""The worker with a real SQLite store, an injected clock, and httpx.MockTransport destinations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog.testing
from prometheus_client import REGISTRY

from bridge import __version__ as version
from bridge import worker
from bridge.config import LEASE_MARGIN
from bridge.destinations.base import Outcome
from bridge.model import Status
from tests.conftest import table_yaml
from tests.harness import Harness, ok, run


def test_delivered_once_and_never_sent_again(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        assert await h.statuses() == {
            "dub": "delivered",
            "umami": "delivered",
            "shop": "delivered",
            "voucherify": "delivered",
        }
        assert len(h.sent) == 4
        h.clock.now += 7 * 86400
        await h.worker.drain()
        assert len(h.sent) == 4

    run(tmp_path, ok, scenario)


def test_requests_carry_auth_and_a_browser_user_agent(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        by_path = {r.url.path: r for r in h.sent}
        assert by_path["/dub/track/sale"].headers["authorization"] == "Bearer dub_test_key"
        assert (
            by_path["/shop/v1/api/analytics/ecommerce/track"].headers["x-api-key"]
            == "tolk_sec_test"
        )
        voucherify = by_path["/voucherify/v1/events"]
        assert (voucherify.headers["x-app-id"], voucherify.headers["x-app-token"]) == (
            "vf-app-id",
            "vf-app-token",
        )
        assert (
            by_path["/umami/api/send"].headers["user-agent"].startswith("Mozilla/5.0 (Windows NT")
        )
        assert all(
            r.method == "POST" and r.headers["content-type"] == "application/json" for r in h.sent
        )
        others = [r for r in h.sent if not r.url.path.endswith("/api/send")]
        assert {r.headers["user-agent"] for r in others} == {f"payment-webhook-bridge/{version}"}
        assert all("cookie" not in r.headers for r in h.sent)

    run(tmp_path, ok, scenario)


def test_a_redirect_is_not_followed_and_is_dead(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/track/sale"):
            return httpx.Response(
                301, headers={"Location": "http://127.0.0.1:9/elsewhere", "Set-Cookie": "a=b"}
            )
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        found = await h.delivery("dub")
        assert found.status is Status.DEAD and found.attempts == 1
        assert (found.last_error or "").startswith("HTTP 301")
        assert [r.url.path for r in h.sent].count("/dub/track/sale") == 1

    run(tmp_path, handler, scenario)


def test_dub_sale_null_is_not_recorded_not_delivered(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/track/sale"):
            return httpx.Response(
                200, json={"eventName": "Invoice paid", "customer": None, "sale": None}
            )
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        dub = await h.delivery("dub")
        assert dub.status is Status.NOT_RECORDED
        assert dub.last_error is not None and "not recorded by Dub" in dub.last_error
        # a user can redrive it once the lead exists
        assert await h.store.redrive([dub.id], h.clock()) == [dub.id]
        assert (await h.statuses())["dub"] == "pending"

    run(tmp_path, handler, scenario)


def test_umami_beep_is_a_failure(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/send"):
            return httpx.Response(200, json={"beep": "boop"})
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        assert (await h.statuses())["umami"] == "dead"

    run(tmp_path, handler, scenario)


def test_4xx_is_dead_at_once_with_the_destination_error_text(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/v1/events"):
            return httpx.Response(
                400, json={"code": 400, "key": "invalid_event", "message": "Event not in schema"}
            )
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        found = await h.delivery("voucherify")
        assert found.status is Status.DEAD
        assert found.attempts == 1
        assert found.last_error == "HTTP 400: Event not in schema"
        got = await h.store.get(found.id)
        assert got is not None
        assert got[1][0].status_code == 400 and "invalid_event" in (
            got[1][0].response_excerpt or ""
        )

    run(tmp_path, handler, scenario)


def test_an_api_key_the_answer_quotes_where_its_excerpt_is_cut_is_masked_whole(
    tmp_path: Path,
) -> None:
    """The destination's words are cut to a length (500 characters) before they are masked:
    an API key quoted across the cut was left as its first characters, which no mask of the
    whole key finds, in the log line, the stored error and the attempt's excerpt."""
    key = "tolk_sec_test"  # the shop's API key in the test table

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ecommerce/track"):
            return httpx.Response(401, text="x" * 490 + f"{key} is not a valid key")
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        with structlog.testing.capture_logs() as logs:
            await h.worker.drain()
        shop = await h.delivery("shop")
        assert shop.status is Status.DEAD
        got = await h.store.get(shop.id)
        assert got is not None
        [tried] = got[1]
        logged = [line["error"] for line in logs if line.get("destination") == "shop"]
        for text in [shop.last_error, tried.error, tried.response_excerpt, *logged]:
            assert text is not None and text.endswith("x***"), text
            assert key[:6] not in text

    run(tmp_path, handler, scenario)


def test_5xx_is_retried_then_delivered_once(tmp_path: Path) -> None:
    answers = [503, 502, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ecommerce/track"):
            return httpx.Response(answers.pop(0), json={"ok": True})
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.rounds(10, 1)  # retry: initial 0.05, max 0.2 in the test table
        shop = await h.delivery("shop")
        assert shop.status is Status.DELIVERED
        assert len(h.to("/ecommerce/track")) == 3
        got = await h.store.get(shop.id)
        assert got is not None
        assert [a.status_code for a in got[1]] == [503, 502, 200]

    run(tmp_path, handler, scenario)


def test_a_mapping_error_is_dead_naming_route_field_and_expression(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json", lambda e: e["data"]["object"].pop("currency"))
        await h.worker.drain()
        assert h.sent == []
        for delivery in await h.store.deliveries():
            assert delivery.status is Status.DEAD
            assert delivery.last_error == (
                "routes[0] stripe/invoice.paid: field currency (event.data.object.currency): "
                "missing from the event"
            )

    run(tmp_path, ok, scenario)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("currency", "xyz", "unknown currency"), ("amount_paid", "12.5", "not a whole number")],
)
def test_an_invalid_transaction_is_dead_and_nothing_is_sent(
    tmp_path: Path, field: str, value: str, problem: str
) -> None:
    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json", lambda e: e["data"]["object"].__setitem__(field, value))
        await h.worker.drain()
        assert h.sent == []
        errors = {d.last_error for d in await h.store.deliveries()}
        assert len(errors) == 1 and problem in str(errors.pop())

    run(tmp_path, ok, scenario)


def test_dry_run_renders_records_and_sends_nothing(tmp_path: Path) -> None:
    table = table_yaml("http://sinks.test", tmp_path / "bridge.db", dry_run=True)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        assert h.sent == []
        assert set((await h.statuses()).values()) == {"dry_run"}

    run(tmp_path, ok, scenario, table=table)


def test_a_refund_of_an_unseen_customer_is_skipped_for_voucherify(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await h.ingest("refund.created.json")
        await h.worker.drain()
        statuses = await h.statuses()
        assert statuses == {"shop": "delivered", "voucherify": "skipped"}
        voucherify = await h.delivery("voucherify")
        assert "customer.source_id" in (voucherify.last_error or "")

    run(tmp_path, ok, scenario)


def test_a_refund_is_linked_to_its_purchase_and_sent_after_it(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.2025.json")
        await h.ingest("refund.created.json")
        await h.worker.drain()
        bodies = h.to("/ecommerce/track")
        assert [b["event_type"] for b in bodies] == ["purchase", "refund"]
        assert bodies[1]["transaction_id"] == "in_test_basil001"
        assert bodies[1]["user_id"] == "cus_test_eu"
        refund = next(b for b in h.to("/v1/events") if b["event"] == "payment_refunded")
        assert refund["customer"] == {
            "source_id": "user_eu_7",
            "email": "lea@example.de",
            "name": "Lea Braun",
        }

    run(tmp_path, ok, scenario)


def test_a_refund_waits_while_its_purchase_is_retrying(tmp_path: Path) -> None:
    failing = {"on": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ecommerce/track") and failing["on"]:
            return httpx.Response(503, json={"error": "down"})
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.2025.json")
        await h.ingest("refund.created.json")
        await h.worker.drain()
        shop = [
            json.loads(r.content)["event_type"]
            for r in h.sent
            if r.url.path.endswith("/ecommerce/track")
        ]
        assert shop == ["purchase"]  # the refund was not sent while its purchase is pending
        failing["on"] = False
        h.clock.now += 5
        await h.worker.drain()
        shop = [
            json.loads(r.content)["event_type"]
            for r in h.sent
            if r.url.path.endswith("/ecommerce/track")
        ]
        assert shop == ["purchase", "purchase", "refund"]

    run(tmp_path, handler, scenario)


def test_the_worker_paces_its_rounds_while_busy_then_delivers(tmp_path: Path) -> None:
    """While webhooks pour in, a round comes only every BUSY_ROUND and starts a share of each
    destination's slots (one of the table's 8: 8 // BUSY_SHARES), not a round's worth of sends
    at once; rounds keep coming however long it lasts; once the pressure is off, what is left
    goes out in one round."""
    sends: list[tuple[float, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sends.append((time.monotonic(), request.url.path))
        return ok(request)

    def invoice(n: int) -> Callable[[dict[str, Any]], None]:
        def mutate(payload: dict[str, Any]) -> None:
            payload["id"] = f"evt_{n}"
            payload["data"]["object"]["id"] = f"in_{n}"  # an order of its own

        return mutate

    async def scenario(h: Harness) -> None:
        for n in range(3):  # three deliveries for each destination, none behind another
            await h.ingest("invoice.paid.json", invoice(n))
        busy = True
        h.worker._busy = lambda: busy
        started = time.monotonic()
        task = asyncio.create_task(h.worker.run())

        async def sent(count: int) -> None:
            while len(sends) < count and time.monotonic() - started < 10:
                await asyncio.sleep(0.005)

        try:
            await asyncio.sleep(worker.BUSY_ROUND / 2)
            assert sends == []  # yielding
            await sent(8)
            busy = False
            await h.ingest("invoice.paid.json", invoice(3))
            h.worker.wake.set()
            await sent(16)
        finally:
            await h.worker.stop(grace=1)
            await task
        assert len(sends) == 16
        first, second, calm = sends[:4], sends[4:8], sends[8:]
        assert first[0][0] - started >= worker.BUSY_ROUND * 0.9
        # one for each destination a round, though each has 8 slots free and 3 deliveries due
        assert len({path for _t, path in first}) == len({path for _t, path in second}) == 4
        assert second[0][0] - first[-1][0] >= worker.BUSY_ROUND * 0.5
        # the rest at once: the third of each, and the new event's four
        assert calm[-1][0] - calm[0][0] < worker.BUSY_ROUND * 0.5

    run(tmp_path, handler, scenario)


def test_attempt_latency_is_the_exchange_with_timeouts_and_connection_errors(
    tmp_path: Path,
) -> None:
    """``bridge_attempt_latency_seconds`` and an attempt's ``latency_ms`` time the exchange
    with the destination: an attempt that timed out or could not connect counts too (a
    destination that hangs is what the histogram is for); a slow answer is timed as slow."""

    async def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/track/sale"):
            raise httpx.ReadTimeout("no answer", request=request)
        if path.endswith("/api/send"):
            raise httpx.ConnectError("refused", request=request)
        if path.endswith("/ecommerce/track"):
            await asyncio.sleep(0.2)
        return ok(request)

    def observed(destination: str) -> tuple[float, float]:
        labels = {"destination": destination}
        count = REGISTRY.get_sample_value("bridge_attempt_latency_seconds_count", labels)
        total = REGISTRY.get_sample_value("bridge_attempt_latency_seconds_sum", labels)
        return count or 0.0, total or 0.0

    names = ("dub", "umami", "shop", "voucherify")

    async def scenario(h: Harness) -> None:
        before = {name: observed(name) for name in names}
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        assert await h.statuses() == {
            "dub": "pending",
            "umami": "pending",
            "shop": "delivered",
            "voucherify": "delivered",
        }
        counted = {name: observed(name)[0] - before[name][0] for name in names}
        assert counted == {name: 1 for name in names}
        assert observed("shop")[1] - before["shop"][1] >= 0.2
        shop = await h.delivery("shop")
        found = await h.store.get(shop.id)
        assert found is not None
        [tried] = found[1]
        assert tried.latency_ms >= 200  # the clock of this test stands still: this is the exchange

    run(tmp_path, handler, scenario)


def test_a_delivery_that_runs_out_of_retries_is_counted_dead(tmp_path: Path) -> None:
    """Its last attempt's outcome, and ``bridge_deliveries_total``'s label, is ``dead``: an
    alert on dead deliveries sees the ones that gave up, not only the ones refused."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ecommerce/track"):
            return httpx.Response(503, json={"error": "down"})
        return ok(request)

    def dead(destination: str) -> float:
        labels = {"destination": destination, "outcome": "dead"}
        return REGISTRY.get_sample_value("bridge_deliveries_total", labels) or 0.0

    async def scenario(h: Harness) -> None:
        before = dead("shop")
        await h.ingest("invoice.paid.json")
        for _ in range(10):  # the test table gives up after 5 attempts
            await h.worker.drain()
            h.clock.now += 1
        shop = await h.delivery("shop")
        assert shop.status is Status.DEAD and shop.attempts == 5
        got = await h.store.get(shop.id)
        assert got is not None
        assert [a.outcome for a in got[1]] == ["retry"] * 4 + ["dead"]
        assert dead("shop") - before == 1

    run(tmp_path, handler, scenario)


def test_the_line_about_a_refund_of_an_unseen_purchase_names_its_delivery(
    tmp_path: Path,
) -> None:
    """Written once for each destination, it carries the delivery's ids like every other line
    about a delivery (before, only the event's: four identical lines)."""

    async def scenario(h: Harness) -> None:
        await h.ingest("charge.refunded.json")
        with structlog.testing.capture_logs() as logs:
            await h.worker.drain()
        lines = [line for line in logs if line["event"].startswith("refund of an unseen purchase")]
        assert lines
        named = {line["destination"] for line in lines}
        assert len(named) == len(lines)  # one a destination, each saying which
        for line in lines:
            assert line["source"] == "stripe" and line["event_id"]
            assert isinstance(line["delivery_id"], int) and line["attempt"] == 1

    run(tmp_path, ok, scenario)


def test_an_unexpected_error_after_the_send_is_retried_by_the_policy_then_dead(
    tmp_path: Path,
) -> None:
    """Whatever fails after a request was sent, the delivery is not sent again and again for
    ever: the destination's policy (5 attempts in the test table) gives up on it."""

    async def scenario(h: Harness) -> None:
        def broken(response: httpx.Response, now: float) -> Outcome:
            raise RuntimeError("a bug reading the answer")

        h.pipeline.destinations["shop"].classify = broken  # type: ignore[method-assign]
        await h.ingest("invoice.paid.json")
        await h.rounds(20, 60)
        assert len(h.to("/ecommerce/track")) == 5
        shop = await h.delivery("shop")
        assert shop.status is Status.DEAD
        assert shop.last_error == "gave up after 5 attempts: internal error (see the bridge's log)"

    run(tmp_path, ok, scenario)


def test_an_answer_nested_too_deep_to_parse_is_not_sent_again(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/send"):
            return httpx.Response(200, content=b"[" * 70_000)
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.rounds(10, 60)
        assert len(h.to("/api/send")) == 1
        umami = await h.delivery("umami")
        assert umami.status.terminal, umami

    run(tmp_path, handler, scenario)


def test_a_payload_value_no_store_can_hold_makes_a_dead_delivery_saying_why(
    tmp_path: Path,
) -> None:
    """A lone surrogate in the payload reaches the mapping error's text: recorded with U+FFFD,
    the deliveries dead at once (not retried as an internal error)."""

    def mutate(event: dict[str, Any]) -> None:
        event["data"]["object"]["total_discount_amounts"] = [{"amount": "\ud800"}]

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json", mutate)
        await h.worker.drain()
        assert h.sent == []
        for delivery in await h.store.deliveries():
            assert delivery.status is Status.DEAD, delivery
            assert delivery.attempts == 1
            assert "discount" in (delivery.last_error or "")

    run(tmp_path, ok, scenario)


def test_a_delivery_taken_back_by_its_own_claim_as_it_finishes_is_not_sent_again(
    tmp_path: Path,
) -> None:
    """The send outlives its lease; the worker's next claim takes the delivery back just before
    the send's finish is written (one SQLite commit holds both, the claim first)."""
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ecommerce/track"):
            await gate.wait()
        return ok(request)

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.tick()  # the shop's send waits at the gate
        while len(h.to("/ecommerce/track")) < 1:
            await asyncio.sleep(0.01)
        h.clock.now += h.worker.settings.lease + 1
        other = sqlite3.connect(h.store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock a moment
        try:
            ping = asyncio.create_task(h.store.ping())  # a batch waits for the lock
            await asyncio.sleep(0.05)
            claim = asyncio.create_task(h.worker.tick())  # its claim queues behind
            await asyncio.sleep(0.05)
            gate.set()  # the send ends: its finish queues after the claim
            await asyncio.sleep(0.05)
        finally:
            other.execute("COMMIT")
            other.close()
        await ping
        await claim
        await h.worker.drain()
        assert len(h.to("/ecommerce/track")) == 1
        shop = await h.delivery("shop")
        assert (shop.status, shop.attempts) == (Status.DELIVERED, 1)

    run(tmp_path, handler, scenario)


def test_an_events_time_at_delivery_is_the_one_its_source_read_at_ingest(
    tmp_path: Path,
) -> None:
    """A route of the user's own with no occurred_at takes the event's time as the source read
    it: a Stripe "created" that is not unix seconds is none at delivery too, as at ingest (the
    raw value made the delivery dead, "expected unix seconds")."""
    extra = (
        "  - from: stripe/payment_intent.succeeded\n"
        "    to: [shop]\n"
        "    kind: sale\n"
        "    fields:\n"
        "      id: event.data.object.id\n"
        "      amount: event.data.object.amount_received\n"
        "      currency: event.data.object.currency\n"
    )
    table = table_yaml("http://sinks.test", tmp_path / "bridge.db", extra_routes=extra)

    async def scenario(h: Harness) -> None:
        await h.ingest("payment_intent.succeeded.json", lambda e: e.update(created="1700000000"))
        await h.worker.drain()
        assert await h.statuses() == {"shop": "delivered"}
        assert len(h.to("/ecommerce/track")) == 1

    run(tmp_path, ok, scenario, table=table)


def test_the_default_worker_name_is_the_host_and_port_unless_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two bridges on one host listen on two ports: neither takes back the other's claims
    monkeypatch.delenv("BRIDGE_WORKER_ID", raising=False)
    assert worker.default_worker_id(8000) != worker.default_worker_id(8001)
    assert worker.default_worker_id(8000).endswith(":8000")
    monkeypatch.setenv("BRIDGE_WORKER_ID", "replica-a")
    assert worker.default_worker_id(8000) == "replica-a"


def test_the_worker_outlives_an_unexpected_error_in_pruning_or_in_asking_what_is_due(
    tmp_path: Path,
) -> None:
    """A store error other than "unavailable" while pruning or while asking when the next
    delivery is due is logged and tried again; it never ends the worker, which /readyz would
    then report as not running until a restart, with nothing delivered meanwhile."""

    async def scenario(h: Harness) -> None:
        failures = {"prune": 1, "next_due": 1}

        def failing(name: str) -> Any:
            real = getattr(h.store, name)

            async def call(*args: Any) -> Any:
                if failures[name]:
                    failures[name] -= 1
                    raise sqlite3.DatabaseError(f"{name}: database disk image is malformed")
                return await real(*args)

            return call

        h.store.prune = failing("prune")  # type: ignore[method-assign]
        h.store.next_due = failing("next_due")  # type: ignore[method-assign]
        h.worker.settings = h.worker.settings.model_copy(update={"poll_interval": 0.01})
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(h.worker.run())
            try:
                await h.ingest("invoice.paid.json")
                h.worker.wake.set()
                started = time.monotonic()
                while (
                    (len(h.sent) < 4 or any(failures.values()))
                    and time.monotonic() - started < 5
                    and not task.done()
                ):
                    await asyncio.sleep(0.01)
                assert not task.done(), task.exception()
                assert len(h.sent) == 4
            finally:
                await h.worker.stop(grace=1)
                await task
        assert failures == {"prune": 0, "next_due": 0}
        failed = [line["event"] for line in logs if line["log_level"] == "error"]
        assert failed == [
            "pruning failed; will try again",
            "could not ask when the next delivery is due; will poll",
        ]

    run(tmp_path, ok, scenario)


@pytest.mark.parametrize("held_by", ["rate_limit", "order"])
def test_deliveries_due_but_held_back_make_the_worker_poll_not_spin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_by: str
) -> None:
    table = table_yaml("http://sinks.test", tmp_path / "bridge.db").replace(
        "    api_key: dub_test_key\n", "    api_key: dub_test_key\n    rate_limit: 1\n"
    )
    waits: list[float] = []
    wait_for = asyncio.wait_for

    async def recorded(awaitable: Any, timeout: float | None) -> Any:
        waits.append(timeout or 0.0)
        return await wait_for(awaitable, timeout)

    async def scenario(h: Harness) -> None:
        for n in range(3):

            def rename(event: dict[str, Any], n: int = n) -> None:
                event["id"] = f"evt_held_{n}"
                if held_by == "rate_limit":  # else one invoice: each waits for the one before
                    event["data"]["object"]["id"] = f"in_held_{n}"

            await h.ingest("invoice.paid.json", rename)
        monkeypatch.setattr(asyncio, "wait_for", recorded)
        task = asyncio.create_task(h.worker.run())
        for _ in range(1000):
            if len(waits) >= 10:
                break
            await asyncio.sleep(0.01)
        await h.worker.stop(grace=1)
        await task
        statuses = [str(d.status) for d in await h.store.deliveries() if d.destination == "dub"]
        assert statuses.count("pending") == (2 if held_by == "rate_limit" else 3)
        # the clock stands still: nothing becomes due, the worker waits a poll each time
        assert min(waits) == h.config.delivery.poll_interval, waits

    def handler(request: httpx.Request) -> httpx.Response:
        if "/dub/" in request.url.path and held_by == "order":
            return httpx.Response(503, headers={"Retry-After": "30"}, json={"error": "busy"})
        return ok(request)

    run(tmp_path, handler, scenario, table=table)


def test_a_when_that_fails_on_an_event_makes_a_dead_delivery_saying_why(tmp_path: Path) -> None:
    """A route's condition that cannot be evaluated on an event (a function given the wrong
    type) is the table's error, like a field's: the event is stored and its delivery dies
    naming the route and its when, to be redriven once the table is fixed. It was taken as
    false: the webhook was answered "ignored" and the event lost without a word."""
    table = table_yaml("http://sinks.test", tmp_path / "bridge.db").replace(
        "  - from: stripe/invoice.paid\n    to: [dub, umami, shop, voucherify]\n",
        "  - from: stripe/invoice.paid\n    to: [dub]\n"
        "    when: \"contains(data.object.no_such_field, 'x')\"\n",
    )

    async def scenario(h: Harness) -> None:
        await h.ingest("invoice.paid.json")
        await h.worker.drain()
        dub = await h.delivery("dub")
        assert dub.status is Status.DEAD
        assert h.sent == []
        assert dub.last_error is not None
        assert dub.last_error.startswith("routes[0] stripe/invoice.paid: when: ")

    run(tmp_path, ok, scenario, table=table)


def _one_slot_for_dub(tmp_path: Path) -> str:
    return table_yaml("http://sinks.test", tmp_path / "bridge.db").replace(
        "    api_key: dub_test_key\n", "    api_key: dub_test_key\n    concurrency: 1\n"
    )


async def _invoices(h: Harness, count: int) -> None:
    for n in range(count):

        def rename(event: dict[str, Any], n: int = n) -> None:
            event["id"] = f"evt_ahead_{n}"
            event["data"]["object"]["id"] = f"in_ahead_{n}"

        await h.ingest("invoice.paid.json", rename)


async def _dub_statuses(h: Harness) -> list[str]:
    return sorted(str(d.status) for d in await h.store.deliveries() if d.destination == "dub")


def _gated_dub(gates: list[asyncio.Event]) -> Any:
    """Dub's stand-in holds each request until its gate opens (one gate per request, in turn)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/track/sale"):
            gate = asyncio.Event()
            gates.append(gate)
            await gate.wait()
        return ok(request)

    return handler


async def _one_sent_one_waiting(h: Harness, gates: list[asyncio.Event]) -> None:
    """Two invoices for Dub's one slot: a round sends one (held at its gate), claims the other."""
    await _invoices(h, 2)
    await h.worker.tick()
    await _until(lambda: len(gates) == 1)
    assert await _dub_statuses(h) == ["in_flight", "in_flight"]


async def _until(check: Any) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in time")


def test_a_freed_slot_starts_the_next_claimed_delivery_without_a_claim_between(
    tmp_path: Path,
) -> None:
    """With one slot, a round claims the delivery it sends and one more to wait; when the first
    is answered, the second goes at once, before any other claim."""
    gates: list[asyncio.Event] = []

    async def scenario(h: Harness) -> None:
        await _invoices(h, 3)
        claims: list[str] = []
        claim = h.store.claim

        async def counted(destination: str, *args: Any) -> Any:
            claims.append(destination)
            return await claim(destination, *args)

        h.store.claim = counted  # type: ignore[method-assign,assignment]
        await h.worker.tick()
        await _until(lambda: len(gates) == 1)
        # one sent, one claimed ahead, one left for later: at most concurrency ahead
        assert await _dub_statuses(h) == ["in_flight", "in_flight", "pending"]
        assert claims.count("dub") == 1
        gates[0].set()
        await _until(lambda: len(gates) == 2)  # no tick: the freed slot started it
        assert claims.count("dub") == 1
        assert len(h.to("/track/sale")) == 2  # never two at once: the second after the first
        gates[1].set()
        await _until(lambda: len(h.worker._tasks) == 0)
        assert (await _dub_statuses(h)).count("delivered") == 2

    run(tmp_path, _gated_dub(gates), scenario, table=_one_slot_for_dub(tmp_path))


def test_a_claimed_delivery_that_waited_too_long_for_a_slot_is_let_go_not_sent_late(
    tmp_path: Path,
) -> None:
    """A delivery waiting for a slot whose send could now outlast its lease is never sent on
    that claim: its lease runs out and it is claimed and sent anew, once."""
    gates: list[asyncio.Event] = []

    async def scenario(h: Harness) -> None:
        await _one_sent_one_waiting(h, gates)
        settings, dub = h.worker.settings, h.config.destinations["dub"]
        # the waiting one's send, if it started now, could end after its lease
        h.clock.now += settings.lease - dub.timeout - LEASE_MARGIN + 1
        gates[0].set()
        await _until(lambda: (len(h.worker._tasks), h.worker._inflight["dub"]) == (0, 0))
        await asyncio.sleep(0.05)
        assert len(gates) == 1, "sent on a claim whose lease could run out during the send"
        assert sorted(await _dub_statuses(h)) == ["delivered", "in_flight"]
        h.clock.now += settings.lease  # its lease ran out: claimed anew and sent
        drained = asyncio.create_task(h.worker.drain())
        await _until(lambda: len(gates) == 2)
        gates[1].set()
        await drained
        assert await _dub_statuses(h) == ["delivered", "delivered"]
        assert len(h.to("/track/sale")) == 2

    run(tmp_path, _gated_dub(gates), scenario, table=_one_slot_for_dub(tmp_path))


def test_stopping_releases_the_deliveries_claimed_ahead(tmp_path: Path) -> None:
    gates: list[asyncio.Event] = []

    async def scenario(h: Harness) -> None:
        await _one_sent_one_waiting(h, gates)
        await h.worker.stop(grace=0.05)  # the one at the gate is cut short, the other waits
        assert await _dub_statuses(h) == ["pending", "pending"]
        assert len(gates) == 1

    run(tmp_path, _gated_dub(gates), scenario, table=_one_slot_for_dub(tmp_path))


def _sent(tmp_path: Path, told: bool) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """What a sale and its refund send, and which of their requests the worker built, with the
    SQLite writer told the table (it builds a sale's bodies as it claims them) or not."""
    sent: list[tuple[str, str, bytes]] = []
    built: list[str] = []
    tmp_path.mkdir()

    async def scenario(h: Harness) -> None:
        if told:
            h.store.intake(h.config)
        request = h.pipeline.request

        def building(txn: Any, event: Any, destination: str, *rest: Any) -> Any:
            built.append(f"{event.id} {destination}")
            return request(txn, event, destination, *rest)

        h.pipeline.request = building  # type: ignore[method-assign, assignment]
        await h.ingest("invoice.paid.json")
        await h.ingest("charge.refunded.json")
        await h.worker.drain()
        assert set((await h.statuses()).values()) == {"delivered"}
        sent.extend(sorted((r.url.path, str(sorted(r.headers.items())), r.content) for r in h.sent))

    run(tmp_path, ok, scenario)
    return sent, built


def test_a_sale_sends_the_same_requests_whether_the_writer_or_the_worker_built_them(
    tmp_path: Path,
) -> None:
    by_writer, built_by_worker_too = _sent(tmp_path / "writer", told=True)
    by_worker, built_by_worker = _sent(tmp_path / "worker", told=False)
    assert by_writer == by_worker
    assert len(by_writer) == 6  # the sale to all four, its refund to two
    # the sale's bodies came built with their claims: the worker built only the refund's
    assert sorted(built_by_worker_too) == [
        "evt_test_charge_refunded shop",
        "evt_test_charge_refunded voucherify",
    ]
    assert len(built_by_worker) == 6
