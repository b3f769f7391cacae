"""The webhook endpoint: verify, store before the 200, dedupe, refuse bad input, store nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

import bridge.app
from bridge import config as config_module
from bridge.app import create_app
from tests.conftest import (
    OLD_SECRET,
    SECRET,
    fixture_bytes,
    hung_up,
    stripe_headers,
    table_yaml,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "bridge.db"


@pytest.fixture
def client(tmp_path: Path, db: Path) -> Iterator[TestClient]:
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", db))
    app = create_app(config_module.load(path), run_worker=False)
    with TestClient(app) as test_client:
        yield test_client


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def post(
    client: TestClient, body: bytes, headers: dict[str, str] | None = None, source: str = "stripe"
) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/webhooks/{source}",
        content=body,
        headers=headers if headers is not None else stripe_headers(body),
    )
    return response


def while_locked(db: Path, call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    """``call``'s answer, and how long it took, while another process holds the write lock (as
    `sqlite3 bridge.db` or a second bridge could)."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        response = call()
        return response, time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_stored_with_one_delivery_per_destination_before_the_200(
    client: TestClient, db: Path
) -> None:
    response = post(client, fixture_bytes("invoice.paid.json"))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "deliveries": 4}
    # the response is back: the event and its deliveries must be committed already
    assert rows(db, "SELECT source, event_id, type FROM events") == [
        ("stripe", "evt_test_invoice_paid", "invoice.paid")
    ]
    assert sorted(rows(db, "SELECT destination, status FROM deliveries")) == [
        ("dub", "pending"),
        ("shop", "pending"),
        ("umami", "pending"),
        ("voucherify", "pending"),
    ]


def test_the_stored_body_is_the_raw_body(client: TestClient, db: Path) -> None:
    body = fixture_bytes("invoice.paid.json")
    post(client, body)
    assert rows(db, "SELECT payload FROM events") == [(body.decode(),)]


def test_a_duplicate_answers_200_and_creates_nothing(client: TestClient, db: Path) -> None:
    body = fixture_bytes("invoice.paid.json")
    assert post(client, body).json()["status"] == "accepted"
    second = post(client, body)
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate"}
    assert rows(db, "SELECT COUNT(*) FROM events") == [(1,)]
    assert rows(db, "SELECT COUNT(*) FROM deliveries") == [(4,)]


def test_a_rotated_secret_is_accepted(client: TestClient, db: Path) -> None:
    body = fixture_bytes("invoice.paid.json")
    assert post(client, body, stripe_headers(body, OLD_SECRET)).status_code == 200
    assert rows(db, "SELECT COUNT(*) FROM events") == [(1,)]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong secret", "no signature matches"),
        ("stale timestamp", "too old"),
        ("future timestamp", "future"),
        ("missing header", "missing Stripe-Signature"),
        ("tampered body", "no signature matches"),
        ("garbage header", "unparseable"),
    ],
)
def test_bad_signatures_are_400_and_store_nothing(
    client: TestClient, db: Path, case: str, reason: str
) -> None:
    body = fixture_bytes("invoice.paid.json")
    # 30 s past the 300 s tolerance: int() drops up to a second, and a slow machine may take
    # more before the bridge reads its clock (at +301 the check could pass, by then, in time)
    headers = {
        "wrong secret": stripe_headers(body, "whsec_not_ours"),
        "stale timestamp": stripe_headers(body, SECRET, int(time.time()) - 301),
        "future timestamp": stripe_headers(body, SECRET, int(time.time()) + 330),
        "missing header": {"Content-Type": "application/json"},
        "tampered body": stripe_headers(body),
        "garbage header": {"Stripe-Signature": "v1=abc,t=notanumber"},
    }[case]
    sent = body.replace(b"2000", b"2001") if case == "tampered body" else body
    response = post(client, sent, headers)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert rows(db, "SELECT COUNT(*) FROM events") == [(0,)]


def test_tolerance_is_configurable(tmp_path: Path, db: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(
        table_yaml("http://127.0.0.1:9", db).replace(
            "kind: stripe\n", "kind: stripe\n    tolerance: 5\n", 1
        )
    )
    body = fixture_bytes("invoice.paid.json")
    with TestClient(create_app(config_module.load(path), run_worker=False)) as client:
        assert (
            post(client, body, stripe_headers(body, SECRET, int(time.time()) - 10)).status_code
            == 400
        )
        assert (
            post(client, body, stripe_headers(body, SECRET, int(time.time()) - 2)).status_code
            == 200
        )


def test_unknown_source_is_404(client: TestClient) -> None:
    body = fixture_bytes("invoice.paid.json")
    response = post(client, body, source="paypal")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown source"}


def test_methods_other_than_post_are_405(client: TestClient) -> None:
    assert client.get("/webhooks/stripe").status_code == 405


def test_a_path_that_only_starts_like_a_webhook_is_no_webhook(client: TestClient) -> None:
    # a webhook is served before Starlette's router: what the router would not match as
    # /webhooks/{source} must not be taken for one either
    body = fixture_bytes("invoice.paid.json")
    for path in ("/webhooks/", "/webhooks/stripe/x", "/webhooksx/stripe"):
        response = client.post(path, content=body, headers=stripe_headers(body))
        assert response.status_code in (404, 405), (path, response.status_code)
        assert "accepted" not in response.text


def test_a_webhook_to_an_app_under_a_root_path_is_stored(tmp_path: Path, db: Path) -> None:
    # the fast path leaves an app mounted under a root path to Starlette's router, whose route
    # leads to the same handler (without it, such a webhook was a 405)
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", db))
    app = create_app(config_module.load(path), run_worker=False)
    with TestClient(app, root_path="/bridge") as client:
        body = fixture_bytes("invoice.paid.json")
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"
    assert rows(db, "SELECT count(*) FROM events") == [(1,)]


def test_a_bug_on_the_webhook_path_is_a_500_and_a_logged_traceback_not_a_dropped_connection(
    client: TestClient, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a webhook is served before Starlette's middleware: what its error middleware did for an
    # exception no input should cause, the webhook path does itself
    from bridge.logging import configure

    configure("json")
    source = client.app.state.pipeline.sources["stripe"]  # type: ignore[attr-defined]

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    source.verify = broken
    response = post(client, fixture_bytes("invoice.paid.json"))
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    err = capsys.readouterr().err
    assert "webhook failed" in err and "RuntimeError: a bug" in err
    assert rows(db, "SELECT count(*) FROM events") == [(0,)]


def test_sqlite_s_writer_process_parses_and_plans_webhooks_not_the_event_loop(
    client: TestClient, db: Path
) -> None:
    pipeline = client.app.state.pipeline  # type: ignore[attr-defined]

    def not_here(event: object) -> object:
        raise AssertionError("planned on the event loop")

    pipeline.plan = not_here
    response = post(client, fixture_bytes("invoice.paid.json"))
    assert response.json() == {"status": "accepted", "deliveries": 4}
    assert rows(db, "SELECT count(*) FROM deliveries") == [(4,)]


def test_with_the_store_down_only_what_needs_storing_is_a_503(
    client: TestClient, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.logging import configure
    from bridge.store import StoreUnavailable

    configure("json")

    async def down(*args: object) -> None:
        raise StoreUnavailable("disk I/O error")

    client.app.state.store._call = down  # type: ignore[attr-defined]
    assert post(client, b'{"id": "evt_1", "type": ').json() == {"error": "body is not valid JSON"}
    ignored = json.loads(fixture_bytes("invoice.paid.json"))
    ignored["type"] = "customer.created"
    assert post(client, json.dumps(ignored).encode()).json() == {"status": "ignored"}
    response = post(client, fixture_bytes("invoice.paid.json"))
    assert response.status_code == 503
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [failed] = [line for line in lines if line["event"].startswith("webhook not stored")]
    assert failed["event_id"] == "evt_test_invoice_paid" and failed["error"] == "disk I/O error"
    assert rows(db, "SELECT count(*) FROM events") == [(0,)]


def test_a_body_over_the_limit_is_413_and_stores_nothing(client: TestClient, db: Path) -> None:
    body = (
        b'{"id": "evt_big", "type": "invoice.paid", "data": {"object": {}}, "pad": "'
        + b"x" * (1024 * 1024)
        + b'"}'
    )
    response = post(client, body)
    assert response.status_code == 413
    assert rows(db, "SELECT COUNT(*) FROM events") == [(0,)]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": {"amount_paid": NaN}}}',
        b'{"type": "invoice.paid", "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "invoice.paid", "data": '
        + b'{"a": ' * 100
        + b"1"
        + b"}" * 100
        + b"}",
        b'{"id": "evt_1", "type": "invoice.paid", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=["empty", "not-json", "not-utf8", "array", "nan", "no-id", "deep", "very-deep"],
)
def test_bodies_that_are_not_events_are_400_and_store_nothing(
    client: TestClient, db: Path, body: bytes
) -> None:
    response = post(client, body)
    assert response.status_code == 400
    assert "error" in response.json()
    assert rows(db, "SELECT COUNT(*) FROM events") == [(0,)]


def test_an_event_no_route_wants_is_ignored(client: TestClient, db: Path) -> None:
    response = post(client, fixture_bytes("customer.subscription.created.json"))
    assert response.json() == {"status": "ignored"}
    assert rows(db, "SELECT COUNT(*) FROM events") == [(0,)]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("checkout.session.completed.setup_mode.json", "setup-mode"),
        ("checkout.session.completed.unpaid.json", "not paid"),
        ("charge.refund.updated.json", None),
    ],
)
def test_events_with_no_money_are_skipped_with_the_reason(
    client: TestClient, db: Path, name: str, reason: str | None
) -> None:
    response = post(client, fixture_bytes(name))
    assert response.status_code == 200
    if reason is None:  # charge.refund.updated is not routed in this table
        assert response.json() == {"status": "ignored"}
    else:
        assert response.json()["status"] == "skipped"
        assert reason in json.dumps(response.json()["reasons"])
    assert rows(db, "SELECT COUNT(*) FROM deliveries") == [(0,)]


def test_zero_amount_invoice_is_skipped(client: TestClient, db: Path) -> None:
    event = json.loads(fixture_bytes("invoice.paid.json"))
    event["id"] = "evt_zero"
    event["data"]["object"]["amount_paid"] = 0
    response = post(client, json.dumps(event).encode())
    assert response.json()["status"] == "skipped"
    assert "amount is 0" in response.json()["reasons"][0]
    assert rows(db, "SELECT COUNT(*) FROM events") == [(0,)]


def test_a_mapping_error_is_acknowledged_and_stored(client: TestClient, db: Path) -> None:
    event = json.loads(fixture_bytes("invoice.paid.json"))
    event["id"] = "evt_no_currency"
    del event["data"]["object"]["currency"]
    response = post(client, json.dumps(event).encode())
    assert response.status_code == 200
    assert rows(db, "SELECT COUNT(*) FROM deliveries") == [(4,)]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readiness_answers_in_time_while_another_process_holds_the_write_lock(
    client: TestClient, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge.app, "READY_WITHIN", 0.3)
    response, waited = while_locked(db, lambda: client.get("/readyz"))
    assert response.status_code == 503
    assert response.json() == {"status": "storage did not answer within 0.3 s"}
    assert waited < 3  # the store's busy_timeout (5 s) would have held it longer
    assert client.get("/readyz").json() == {"status": "ready"}  # once the lock is gone


def test_a_content_length_of_non_ascii_digits_is_read_as_undeclared() -> None:
    # headers are latin-1: the byte B2 is "²", whose isdigit() is true and int() raises; such
    # a length is not a declared one, and the body is read and measured instead
    from starlette.datastructures import Headers

    from bridge.app import BodyTooLarge, read_body

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    def length(value: bytes) -> Headers:
        return Headers(raw=[(b"content-length", value)])

    async def main() -> None:
        assert await read_body(length(b"\xb2"), receive, 10) == b"{}"
        assert await read_body(length(b"\xb9\xb2"), receive, 10) == b"{}"  # "¹²"
        with pytest.raises(BodyTooLarge):
            await read_body(length(b"11"), receive, 10)

    asyncio.run(main())


def test_a_checkout_paid_later_by_a_delayed_method_is_a_sale(tmp_path: Path) -> None:
    """SEPA debit, bank transfer: checkout.session.completed comes unpaid (skipped), then
    checkout.session.async_payment_succeeded with the session paid."""
    extra = "  - from: stripe/checkout.session.async_payment_succeeded\n    to: [dub, shop]\n"
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db", extra_routes=extra))
    event = json.loads(fixture_bytes("checkout.session.completed.unpaid.json"))
    with TestClient(create_app(config_module.load(path), run_worker=False)) as client:
        assert post(client, json.dumps(event).encode()).json()["status"] == "skipped"
        event["id"] = "evt_async_paid"
        event["type"] = "checkout.session.async_payment_succeeded"
        event["data"]["object"]["payment_status"] = "paid"
        response = post(client, json.dumps(event).encode())
    assert response.json() == {"status": "accepted", "deliveries": 2}
    assert rows(tmp_path / "bridge.db", "SELECT destination FROM deliveries ORDER BY 1") == [
        ("dub",),
        ("shop",),
    ]


def test_once_stopping_the_worker_starts_no_new_delivery(tmp_path: Path) -> None:
    """From the first SIGTERM (state "stopping") to the lifespan's end, uvicorn may take up to
    shutdown_grace + 5 s to close its connections: the worker must not claim and send more
    meanwhile (a due retry, another replica's event), only finish what it has in flight."""
    from bridge.store.base import Ingest
    from tests.harness import ok

    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://sinks.test", tmp_path / "bridge.db"))
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return ok(request)

    app = create_app(config_module.load(path), transport=httpx.MockTransport(record))
    with TestClient(app) as client:
        body = fixture_bytes("invoice.paid.json")
        assert (
            client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).json()[
                "status"
            ]
            == "accepted"
        )
        started = time.monotonic()
        while len(sent) < 4 and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert len(sent) == 4
        app.state.bridge["stopping"] = True  # what the server's first SIGTERM does
        payload = json.loads(fixture_bytes("invoice.paid.2025.json"))
        event = app.state.pipeline.sources["stripe"].event(payload, {})
        plan = app.state.pipeline.plan(event)
        item = Ingest(event, json.dumps(payload), plan.deliveries, plan.remember, plan.purchase)
        assert client.portal is not None
        assert client.portal.call(app.state.store.ingest, item, time.time())
        app.state.worker.wake.set()
        # once stopping is asked the run loop ends (claiming nothing more); on the old code it
        # went on, sending the new event's deliveries
        task = app.state.bridge["worker_task"]
        started = time.monotonic()
        while not task.done() and len(sent) == 4 and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert task.done()
        assert len(sent) == 4


def test_a_client_gone_before_the_body_ends_is_one_line_not_a_traceback(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a caller that declares a body, sends part of it and hangs up: the ASGI server says
    # http.disconnect, and no one is left to answer (unhandled, it was an "Exception in ASGI
    # application" traceback logged at error for each such request, from anyone)
    from bridge.logging import configure

    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", db))
    app = create_app(config_module.load(path), run_worker=False)
    configure("json")
    hung_up(app, "/webhooks/stripe", b'{"id": "evt_', [(b"content-length", b"1000")])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "disconnected" in lines[0] and "Traceback" not in lines[0]
    assert not db.exists() or rows(db, "SELECT count(*) FROM events") == [(0,)]


def test_a_webhook_the_store_cannot_take_in_time_is_a_503_and_its_retry_lands(
    client: TestClient, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds SQLite's write lock: the webhook is answered 503 within
    STORE_WITHIN, not after the batches queued ahead of it have each waited out the
    busy_timeout; the processor's retry is stored once the lock is gone."""
    monkeypatch.setattr(bridge.app, "STORE_WITHIN", 0.3)
    body = fixture_bytes("invoice.paid.json")
    response, waited = while_locked(db, lambda: post(client, body))
    assert response.status_code == 503
    assert response.json() == {"error": "storage unavailable; retry later"}
    assert waited < 3  # the store's busy_timeout (5 s) would have held it longer
    # the first write may still commit once the lock is gone: the retry is then a duplicate
    retry = post(client, body)
    assert retry.status_code == 200
    assert retry.json()["status"] in ("accepted", "duplicate")
    assert rows(db, "SELECT count(*) FROM events") == [(1,)]
    assert rows(db, "SELECT count(*) FROM deliveries") == [(4,)]
