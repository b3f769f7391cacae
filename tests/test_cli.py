"""The bridge command: check, explain, replay, deliveries, redrive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.model import NewDelivery, ProviderEvent
from bridge.store import connect
from bridge.store.base import Ingest
from tests.conftest import FIXTURES, ROOT, SECRET, BridgeProcess, table_yaml
from tests.sinks import Sinks

runner = CliRunner()
EXAMPLE = str(ROOT / "examples" / "bridge.yaml")
EXAMPLE_ENV = (
    "STRIPE_WEBHOOK_SECRET",
    "DUB_API_KEY",
    "SHOP_API_KEY",
    "VOUCHERIFY_APP_ID",
    "VOUCHERIFY_APP_TOKEN",
    "UMAMI_URL",
    "UMAMI_WEBSITE_ID",
    "UMAMI_HOSTNAME",
    "BRIDGE_DATABASE_URL",
)


@pytest.fixture(autouse=True)
def empty_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*EXAMPLE_ENV, "BRIDGE_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def explain_json(name: str, config: str = EXAMPLE) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["explain", str(FIXTURES / name), "--config", config, "--json"])
    assert result.exit_code == 0, result.output
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


# a table's beginning: one source, one destination, then its routes
MINIMAL = (
    "sources:\n"
    "  stripe: {kind: stripe, signing_secrets: [whsec_x]}\n"
    "destinations:\n"
    "  dub: {kind: dub, api_key: k}\n"
    "routes:\n"
)


def test_check_the_example_with_nothing_in_the_environment() -> None:
    result = runner.invoke(app, ["check", "--config", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert (
        "routes[0] stripe/invoice.paid -> dub (dub, dry-run), umami (umami, dry-run)"
        in result.stdout
    )


def test_check_reads_bridge_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_CONFIG", EXAMPLE)
    assert runner.invoke(app, ["check"]).exit_code == 0


def test_a_log_format_there_is_none_of_is_a_usage_error() -> None:
    # "JSON" or "jsno" gave console lines, in a container too, where JSON was asked for
    result = runner.invoke(app, ["--log-format", "JSON", "check", "--config", EXAMPLE])
    assert result.exit_code == 2
    assert "Invalid value for '--log-format'" in result.output


def test_check_prints_each_problem_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        MINIMAL + "  - from: stripe/invoice.paid\n"
        "    to: [dub, nowhere]\n"
        "  - from: stripe/invoice.paid\n"
        "    to: dub\n"
        "    when: 'data.object.[['\n"
    )
    result = runner.invoke(app, ["check", "--config", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{path}:7: routes[0].to[1]: no destination named 'nowhere'"
    assert lines[1].startswith(f"{path}:10: routes[1].when: invalid JMESPath")
    assert len(lines) == 2


def test_explain_invoice_paid_exact_requests() -> None:
    requests = explain_json("invoice.paid.json")
    assert [r["destination"] for r in requests] == ["dub", "umami", "shop", "voucherify"]
    assert set(requests[0]) == {"route", "destination", "method", "url", "headers", "json"}
    dub, umami, shop, voucherify = requests
    assert dub["route"] == "routes[0] stripe/invoice.paid"
    assert (dub["method"], dub["url"]) == ("POST", "https://api.dub.co/track/sale")
    assert dub["json"] == {
        "customerExternalId": "cus_00000000000000",
        "amount": 2000,
        "currency": "usd",
        "eventName": "Invoice paid",
        "paymentProcessor": "stripe",
        "invoiceId": "in_000000000000000000000000",
    }
    assert umami["url"] == "https://cloud.umami.is/api/send"
    assert umami["json"] == {
        "type": "event",
        "payload": {
            "website": "00000000-0000-4000-8000-000000000000",
            "hostname": "example.com",
            "url": "/",
            "name": "revenue",
            "data": {"revenue": 20.0, "currency": "USD"},
            "id": "cus_00000000000000",
            "timestamp": 1648320013,
        },
    }
    assert shop["url"] == "https://api.tolinku.com/v1/api/analytics/ecommerce/track"
    assert shop["json"] == {
        "event_type": "purchase",
        "transaction_id": "in_000000000000000000000000",
        "revenue": 20.0,
        "currency": "USD",
        "user_id": "cus_00000000000000",
        "discount": 0.0,
        "tax": 0.0,
        "items": [
            {
                "item_id": "price_000000000000000000000000",
                "item_name": "(created by Stripe CLI)",
                "price": 20.0,
                "quantity": 1,
            }
        ],
    }
    assert voucherify["url"] == "https://api.voucherify.io/v1/events"
    assert voucherify["json"] == {
        "event": "payment_succeeded",
        "customer": {"source_id": "cus_00000000000000"},
        "metadata": {
            "amount": 20.0,
            "currency": "USD",
            "transaction_id": "in_000000000000000000000000",
            "processor": "stripe",
        },
    }


def test_explain_2025_layout_zero_and_three_decimal_currencies() -> None:
    basil = {r["destination"]: r["json"] for r in explain_json("invoice.paid.2025.json")}
    assert basil["dub"] == {
        "customerExternalId": "user_eu_7",
        "amount": 10890,
        "currency": "eur",
        "eventName": "Invoice paid",
        "paymentProcessor": "stripe",
        "invoiceId": "in_test_basil001",
        "customerEmail": "lea@example.de",
        "customerName": "Lea Braun",
    }
    assert (basil["shop"]["tax"], basil["shop"]["discount"], basil["shop"]["revenue"]) == (
        19.8,
        9.9,
        108.9,
    )
    assert basil["shop"]["items"] == [
        {
            "item_id": "price_team_eur",
            "item_name": "1 \u00d7 Team plan (at \u20ac99.00 / month)",
            "price": 99.0,
            "quantity": 1,
        }
    ]
    assert basil["voucherify"]["referral"] == {"code": "FRIEND-7"}
    jpy = {r["destination"]: r["json"] for r in explain_json("invoice.paid.jpy.json")}
    assert (jpy["dub"]["amount"], jpy["dub"]["currency"]) == (1580, "jpy")
    assert jpy["umami"]["payload"]["data"] == {"revenue": 1580, "currency": "JPY"}
    assert jpy["shop"]["revenue"] == 1580
    kwd = {r["destination"]: r["json"] for r in explain_json("invoice.paid.kwd.json")}
    assert (kwd["dub"]["amount"], kwd["dub"]["currency"]) == (12340, "kwd")
    assert kwd["umami"]["payload"]["data"] == {"revenue": 12.34, "currency": "KWD"}
    assert kwd["voucherify"]["metadata"]["amount"] == 12.34


def test_explain_checkout_purchase() -> None:
    dub = explain_json("checkout.session.completed.json")[0]
    assert dub["json"] == {
        "customerExternalId": "cus_00000000000000",
        "amount": 3000,
        "currency": "usd",
        "eventName": "Purchase",
        "paymentProcessor": "stripe",
        "invoiceId": "cs_test_0000000000000000000000000000000000000000000000000000000000",
        "customerEmail": "stripe@example.com",
    }


def test_explain_refunds_without_the_purchase_use_the_charge(tmp_path: Path) -> None:
    # the example routes refund.* only (never both kinds of refund event); this table both
    path = tmp_path / "t.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "b.db"))
    [shop] = [
        r for r in explain_json("charge.refunded.json", str(path)) if r["destination"] == "shop"
    ]
    assert shop["json"] == {
        "event_type": "refund",
        "transaction_id": "ch_000000000000000000000000",
        "revenue": 1.0,
        "currency": "USD",
    }
    [shop] = explain_json("refund.created.json")
    assert shop["json"] == {
        "event_type": "refund",
        "transaction_id": "ch_test_basil001",
        "revenue": 50.0,
        "currency": "EUR",
    }


@pytest.mark.parametrize(
    "name",
    [
        "checkout.session.completed.setup_mode.json",
        "checkout.session.completed.unpaid.json",
        "customer.subscription.created.json",
        "invoice.payment_failed.json",
        "payment_intent.succeeded.json",
    ],
)
def test_explain_prints_an_empty_array_when_nothing_would_be_sent(name: str) -> None:
    assert explain_json(name) == []


def test_explain_points_at_its_notes_when_every_delivery_would_be_dead(tmp_path: Path) -> None:
    # it said "no route wants this event, or it carries no money" under notes saying otherwise
    event = json.loads((FIXTURES / "invoice.paid.json").read_text())
    event["data"]["object"]["amount_paid"] = "lots"
    fixture = tmp_path / "bad-amount.json"
    fixture.write_text(json.dumps(event))
    result = runner.invoke(app, ["explain", str(fixture), "--config", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert "dead:" in result.stderr
    assert result.stdout.strip() == "[] (no request: see the notes above)"


def test_explain_says_a_when_that_fails_on_the_event_makes_a_dead_delivery(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        MINIMAL
        + "  - from: stripe/invoice.paid\n    to: dub\n"
        + "    when: \"contains(data.object.no_such_field, 'x')\"\n"
    )
    result = runner.invoke(app, ["explain", str(FIXTURES / "invoice.paid.json"), "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "note: dub: dead: routes[0] stripe/invoice.paid: when: " in result.stderr
    assert result.stdout.strip() == "[] (no request: see the notes above)"


def test_explain_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "b.db"))
    text = json.dumps(explain_json("invoice.paid.json", str(path)))
    for secret in ("dub_test_key", "tolk_sec_test", "vf-app-id", "vf-app-token", SECRET):
        assert secret not in text
    headers = {r["destination"]: r["headers"] for r in explain_json("invoice.paid.json", str(path))}
    assert headers["dub"]["authorization"] == "Bearer ***"
    assert headers["shop"]["x-api-key"] == "***"
    assert headers["voucherify"]["x-app-token"] == "***"


def test_explain_a_file_that_is_not_an_event(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = runner.invoke(app, ["explain", str(bad), "--config", EXAMPLE])
    assert result.exit_code == 2
    assert "not a Stripe event" in result.stderr


def test_explain_reads_a_fixture_as_the_webhook_route_reads_a_body(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # a RecursionError traceback before
    result = runner.invoke(app, ["explain", str(deep), "--config", EXAMPLE])
    assert result.exit_code == 2, result.exception
    assert result.stderr == f"cannot read {deep}: JSON nested deeper than 64 levels\n"


def test_replay_to_a_url_that_is_not_one_is_a_usage_error() -> None:
    fixture = str(FIXTURES / "invoice.paid.json")
    args = ["replay", fixture, "--config", EXAMPLE, "--url", "http://[::1/webhooks/stripe"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.exception
    assert result.stderr.startswith("--url: ")


@pytest.mark.slow
def test_replay_signs_and_posts_every_file_then_deliveries_and_redrive(tmp_path: Path) -> None:
    with Sinks() as sinks:
        path = tmp_path / "bridge.yaml"
        path.write_text(table_yaml(sinks.url, tmp_path / "bridge.db"))
        sinks.dub_unknown_customers.add("cus_00000000000000")
        bridge = BridgeProcess(path).start()
        try:
            # where it listens, in its first lines (uvicorn's own say nothing at this level)
            assert f'"url": "{bridge.url}", "event": "listening"' in bridge.log.read_text()
            files = [
                str(FIXTURES / n)
                for n in (
                    "invoice.paid.json",
                    "invoice.paid.jpy.json",
                    "customer.subscription.created.json",
                )
            ]
            env = {k: v for k, v in os.environ.items() if k not in EXAMPLE_ENV}
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bridge.cli",
                    "replay",
                    *files,
                    "--config",
                    str(path),
                    "--source",
                    "stripe",
                    "--url",
                    f"{bridge.url}/webhooks/stripe",
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            assert f"replayed 3 file(s) to {bridge.url}/webhooks/stripe: 200: 3" in result.stdout
            sinks.wait_for(8)
            # the unknown Dub customer is not_recorded; it shows in the list and can be redriven
            listed = runner.invoke(
                app,
                ["deliveries", "list", "--config", str(path), "--status", "not_recorded", "--json"],
            )
            assert listed.exit_code == 0, listed.output
            rows = json.loads(listed.stdout)
            assert [(r["destination"], r["event_id"]) for r in rows] == [
                ("dub", "evt_test_invoice_paid")
            ]
            shown = runner.invoke(
                app, ["deliveries", "show", str(rows[0]["id"]), "--config", str(path)]
            )
            detail = json.loads(shown.stdout)
            assert detail["attempts_log"][0]["status_code"] == 200
            assert "dub_test_key" not in shown.stdout
            sinks.dub_unknown_customers.clear()
            redriven = runner.invoke(app, ["redrive", str(rows[0]["id"]), "--config", str(path)])
            assert "redriven: 1" in redriven.stdout
            sinks.wait_for(9)
            assert [b["customerExternalId"] for b in sinks.bodies("dub")].count(
                "cus_00000000000000"
            ) == 2
        finally:
            assert bridge.stop() == 0


def test_check_masks_the_database_password_wherever_the_url_holds_it(tmp_path: Path) -> None:
    # libpq takes the password in the authority and as a parameter (?password=...)
    path = tmp_path / "bridge.yaml"
    path.write_text(
        MINIMAL + "  - {from: stripe/invoice.paid, to: dub}\n"
        "storage:\n"
        "  url: postgresql://bridge:pw_in_authority@db.internal/bridge"
        "?password=pw%2Fin%2Fquery&sslmode=require\n"
    )
    result = runner.invoke(app, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "storage: postgresql://bridge:***@db.internal/bridge?password=***&sslmode" in (
        result.stdout
    )
    for secret in ("pw_in_authority", "pw%2Fin%2Fquery", "pw/in/query"):
        assert secret not in result.output


def test_a_second_bridge_on_a_port_in_use_stops_before_taking_back_any_claim(
    tmp_path: Path,
) -> None:
    """Same host, same port: the same worker name. A second `bridge serve` started there must
    fail on the port before its start-up takes back the first one's claims (which it would
    then send again)."""
    import asyncio
    import socket

    from bridge.model import Status
    from bridge.store import SQLiteStore
    from bridge.worker import default_worker_id
    from tests.harness import Harness

    table = tmp_path / "bridge.yaml"
    table.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db"))
    with socket.socket() as first:  # the first bridge, listening
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]

        async def claimed_by_the_first() -> int:
            h = Harness(tmp_path, None)
            await h.store.open()
            try:
                await h.ingest("invoice.paid.json")
                name = f"{default_worker_id(port)}/first"
                (claimed,) = await h.store.claim("dub", 1, h.clock(), 300, name)
                return claimed.id
            finally:
                await h.store.close()

        delivery = asyncio.run(claimed_by_the_first())
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge.cli",
                "serve",
                "--config",
                str(table),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode != 0
    assert "address already in use" in second.stderr.lower()

    async def status() -> Status:
        store = SQLiteStore(f"sqlite:///{tmp_path / 'bridge.db'}")
        await store.open()
        try:
            found = await store.get(delivery)
            assert found is not None
            return found[0].status
        finally:
            await store.close()

    assert asyncio.run(status()) is Status.IN_FLIGHT


def test_check_refuses_a_storage_url_serve_could_not_open(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        MINIMAL + "  - {from: stripe/invoice.paid, to: dub}\nstorage:\n  url: mysql://x/bridge\n"
    )
    for command in (["check"], ["serve"]):
        result = runner.invoke(app, [*command, "--config", str(path)])
        assert result.exit_code == 1, result.output
        assert f"{path}:8: storage.url: unsupported scheme 'mysql'" in result.stderr
        assert "Traceback" not in result.output


def test_deliveries_list_refuses_a_state_there_is_none_of() -> None:
    result = runner.invoke(app, ["deliveries", "list", "--config", EXAMPLE, "--status", "bogus"])
    assert result.exit_code == 2
    assert "'bogus' is not one of" in result.output


def one_pending(tmp_path: Path, event_id: str) -> tuple[Path, int]:
    """A minimal table beside a store holding one event with one pending delivery: the table's
    path and the delivery's id."""
    path = tmp_path / "bridge.yaml"
    path.write_text(MINIMAL + "  - {from: stripe/invoice.paid, to: dub}\n")

    async def store_one() -> int:
        store = connect(f"sqlite:///{tmp_path / 'bridge.db'}")
        await store.open()
        event = ProviderEvent("stripe", event_id, "invoice.paid", None, {})
        await store.ingest(Ingest(event, "{}", [NewDelivery(0, "dub", "in_1")]), 1e9)
        [row] = await store.deliveries()
        await store.close()
        return row.id

    return path, asyncio.run(store_one())


def test_deliveries_list_prints_ids_and_errors_as_they_are_not_as_markup(tmp_path: Path) -> None:
    # an event id is the processor's text; rich read "[/x]" as a closing tag and crashed
    path, _id = one_pending(tmp_path, "[/x]")
    result = runner.invoke(app, ["deliveries", "list", "--config", str(path)])
    assert result.exit_code == 0, result.exception
    assert "[/x]" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["deliveries", "show", "99999999999999999999"],
        ["deliveries", "show", "0"],
        ["redrive", "1", "99999999999999999999"],
        ["deliveries", "list", "--limit", "99999999999999999999"],
        ["deliveries", "list", "--limit", "-1"],  # SQLite read it as no limit at all
    ],
)
def test_ids_and_limits_no_store_holds_are_refused_as_usage(
    tmp_path: Path, args: list[str]
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(MINIMAL + "  - {from: stripe/invoice.paid, to: dub}\n")
    result = runner.invoke(app, [*args, "--config", str(path)])
    assert result.exit_code == 2, result.exception
    assert "Invalid value" in result.output


def test_redrive_names_the_ids_it_did_not_redrive_and_fails(tmp_path: Path) -> None:
    # a mistyped id, or a delivery still pending, printed "redriven: 0" and exited 0
    path, pending = one_pending(tmp_path, "evt_1")
    result = runner.invoke(app, ["redrive", str(pending), "999", "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stdout.strip() == "redriven: 0"
    assert result.stderr.strip() == (
        f"not redriven: {pending}, 999 (no such delivery, or one not yet finished)"
    )


@pytest.mark.parametrize("port", ["65536", "-1"])
def test_serve_on_a_port_there_is_none_of_is_a_usage_error(tmp_path: Path, port: str) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(MINIMAL + "  - {from: stripe/invoice.paid, to: dub}\n")
    result = runner.invoke(app, ["serve", "--config", str(path), "--port", port])
    assert result.exit_code == 2, result.exception
    assert "Invalid value for '--port'" in result.output


def test_serve_says_in_one_line_why_its_store_cannot_be_opened(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the database's folder should be")
    table = tmp_path / "bridge.yaml"
    table.write_text(table_yaml("http://127.0.0.1:9", blocked / "bridge.db"))
    port = str(BridgeProcess(table).port)
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "serve", "--config", str(table), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("storage unavailable: cannot open"), result.stderr
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """``bridge serve`` with the uvicorn settings it chooses, in a thread of this process (so that
    its limits can be made small); its port."""
    import gc
    import signal

    import uvicorn

    from bridge import cli

    table = tmp_path / "bridge.yaml"
    table.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db"))
    for name in ("freeze", "set_threshold"):  # the process-wide settings serve makes
        monkeypatch.setattr(gc, name, lambda *args: None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    made: list[tuple[uvicorn.Config, list[socket.socket]]] = []

    class Recorder:
        def __init__(self, config: uvicorn.Config, state: dict[str, Any]) -> None:
            self.config = config

        def run(self, sockets: list[socket.socket]) -> None:
            made.append((self.config, sockets))

    monkeypatch.setattr(cli, "_Server", Recorder)
    cli.serve(config=str(table), host="127.0.0.1", port=0)
    config, sockets = made[0]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets})
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
            assert thread.is_alive()
        yield sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join()
        sockets[0].close()


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (a 15 s wait at most)."""
    sock.settimeout(15)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _response(sock: socket.socket) -> bytes:
    """One whole answer on a connection kept open: its head and as much body as its
    content-length says, however the reads cut them (uvicorn writes a head and a body apart)."""
    sock.settimeout(15)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, end, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)\r?$", head)
        if end and len(body) >= (int(length.group(1)) if length else 0):
            break
    return data


def _headers_without_end(sock: socket.socket) -> None:
    """Header lines of 16 KiB each until the server closes the connection (4 MiB at most)."""
    with contextlib.suppress(OSError):  # the server closes once it has answered
        for _ in range(256):
            sock.sendall(b"X-A: " + b"a" * 16384 + b"\r\n")


@pytest.mark.parametrize(
    "start",
    [
        # headers sent without end, before any signature can be checked: uvicorn's httptools
        # protocol kept them all (160 MB of headers held 160 MB of memory)
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n",
        # a chunked body's trailer fields come after the body, each kept in the request's
        # headers (93 MB of trailer held 93 MB of memory, a head's bound or not)
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n",
    ],
    ids=["head", "trailer"],
)
def test_serve_refuses_a_head_or_trailer_without_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: bytes
) -> None:
    with served(tmp_path, monkeypatch) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(start)
        _headers_without_end(s)
        assert _answer(s).startswith(b"HTTP/1.1 431 ")


def test_serve_keeps_a_connection_that_sends_many_requests_and_bodies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what bounds a head is not the sum of a connection's requests, nor of a body's chunks
    with served(tmp_path, monkeypatch) as port, socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(3):
            body = b"x" * 300_000  # read to its end: no signature, 400
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (1000, body[i : i + 1000]) for i in range(0, 300_000, 1000)
            )
            s.sendall(
                b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunks
                + b"0\r\n\r\n"
            )
            assert _response(s).startswith(b"HTTP/1.1 400 ")
        for _ in range(1000):
            s.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 100 + b"\r\n\r\n"
            )
            assert _response(s).startswith(b"HTTP/1.1 200 ")


def test_serve_answers_an_upgrade_request_as_plain_http_without_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # any caller's "Upgrade: websocket" made two warnings (advising to install a WebSocket
    # library) beside the request's own line
    with served(tmp_path, monkeypatch) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert _answer(s).startswith(b"HTTP/1.1 200 ")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n",
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
    ],
    ids=["nothing", "part-of-the-head", "part-of-the-body"],
)
def test_serve_closes_a_request_that_does_not_arrive_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    # a connection that sends nothing, or a request's head or body trickled or never finished,
    # held its connection (and what it had sent) for as long as the caller liked
    from bridge import cli

    monkeypatch.setattr(cli, "REQUEST_WITHIN", 0.5)
    with served(tmp_path, monkeypatch) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(sent)
        assert b" 200 " not in _answer(s)  # closed, not waiting for the rest
