"""Admitting a verified webhook: the same verdicts, and the same rows, whether SQLite's writer
process admits it (parsing and planning inside the transaction that stores it) or the event
loop does (``Inline``, PostgreSQL's way)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import config as config_module
from bridge import intake
from bridge.config import Config
from bridge.intake import Admits, Inline, Intake, Verdict, admit, loads, parse_json
from bridge.pipeline import Pipeline
from bridge.store import SQLiteStore
from tests.conftest import fixture, fixture_bytes, table_yaml

NOW = 1_800_000_000.0
ROUTES = """
  - from: stripe/invoice.payment_succeeded
    to: dub
    when: "data.object.amount_paid > `100000000`"
  - from: stripe/payment_intent.succeeded
    to: umami
    kind: sale
    fields:
      amount: event.data.object.amount_received
      currency: event.data.object.currency
      id: event.data.object.id
"""


def renamed(name: str, event_id: str) -> bytes:
    payload = fixture(name)
    payload["id"] = event_id
    return json.dumps(payload).encode()


def typed(event_type: str) -> bytes:
    payload = fixture("invoice.paid.json")
    payload["id"], payload["type"] = f"evt_{event_type}", event_type
    return json.dumps(payload).encode()


# (body, the verdict's outcome, its reason or event id): one of each verdict, a refund of a
# purchase stored before it, a route whose ``when`` holds nowhere and one with ``fields``
WEBHOOKS: list[tuple[bytes, str, str]] = [
    (fixture_bytes("invoice.paid.json"), "accepted", "evt_test_invoice_paid"),
    (fixture_bytes("invoice.paid.json"), "duplicate", "evt_test_invoice_paid"),
    (fixture_bytes("charge.refunded.json"), "accepted", "evt_test_charge_refunded"),
    (renamed("invoice.paid.jpy.json", "evt_jpy"), "accepted", "evt_jpy"),
    (fixture_bytes("checkout.session.completed.unpaid.json"), "skipped", ""),
    (typed("customer.created"), "ignored", "evt_customer.created"),
    (fixture_bytes("invoice.payment_succeeded.json"), "ignored", ""),
    (fixture_bytes("payment_intent.succeeded.json"), "accepted", ""),
    (b"\xff\xfe{}", "invalid", "body is not valid JSON"),
    (b'{"id": "evt_1", "type": ', "invalid", "body is not valid JSON"),
    (b'{"id": "evt_1", "type": "invoice.paid", "x": 1e999}', "invalid", "body is not valid JSON"),
    (b"[" * 70 + b"]" * 70, "invalid", "JSON nested deeper than 64 levels"),
    (
        json.dumps({"id": "evt_\x07", "type": "invoice.paid", "data": {"object": {}}}).encode(),
        "invalid",
        "event id must be printable text of 1 to 255 characters",
    ),
    (b'{"type": "invoice.paid"}', "invalid", ""),
]


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


def load(tmp_path: Path, name: str) -> Config:
    path = tmp_path / f"{name}.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / f"{name}.db", extra_routes=ROUTES))
    return config_module.load(path)


def through(
    runner: asyncio.Runner, store: SQLiteStore, intake: Intake, between: Callable[[], None]
) -> list[Verdict]:
    async def send() -> list[Verdict]:
        await store.open()
        try:
            verdicts = []
            for body, _outcome, _said in WEBHOOKS:
                verdicts.append(await intake("stripe", body, [], NOW))
                between()
            return verdicts
        finally:
            await store.close()

    return runner.run(send())


def stored(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        return {
            "events": conn.execute(
                "SELECT source, event_id, type, received_at, payload FROM events ORDER BY id"
            ).fetchall(),
            "deliveries": conn.execute(
                "SELECT e.event_id, route, destination, order_key, status, next_at"
                " FROM deliveries d JOIN events e ON e.id = d.event_pk ORDER BY d.id"
            ).fetchall(),
            "refs": conn.execute("SELECT * FROM payment_refs ORDER BY source, ref").fetchall(),
        }


def test_the_writer_and_the_event_loop_admit_alike(tmp_path: Path, runner: asyncio.Runner) -> None:
    inline_table, writer_table = load(tmp_path, "inline"), load(tmp_path, "writer")
    inline_store = SQLiteStore(inline_table.database_url)
    by_loop = through(
        runner, inline_store, Inline(Pipeline(inline_table), inline_store), lambda: None
    )
    writer_store = SQLiteStore(writer_table.database_url)
    assert isinstance(writer_store, Admits)
    by_writer = through(runner, writer_store, writer_store.intake(writer_table), lambda: None)

    assert by_writer == by_loop
    assert [v.outcome for v in by_writer] == [outcome for _b, outcome, _s in WEBHOOKS]
    for verdict, (_body, outcome, said) in zip(by_writer, WEBHOOKS, strict=True):
        if said and outcome == "invalid":
            assert verdict.reason == said
        elif said:
            assert verdict.event_id == said
    assert by_writer[0].deliveries == ("dub", "umami", "shop", "voucherify")
    assert by_writer[2].deliveries == ("shop", "voucherify")
    assert by_writer[7].deliveries == ("umami",)  # the route with fields and a kind
    assert by_writer[4].skipped and not by_writer[4].deliveries

    rows = stored(tmp_path / "writer.db")
    assert rows == stored(tmp_path / "inline.db")
    assert len(rows["events"]) == 4 and len(rows["deliveries"]) == 4 + 2 + 4 + 1
    # the refund queues behind its purchase: its order key is the stored invoice's
    invoice = fixture("invoice.paid.json")["data"]["object"]["id"]
    keys = {(event, name): key for event, _route, name, key, _s, _n in rows["deliveries"]}
    assert keys["evt_test_charge_refunded", "shop"] == invoice


def test_a_new_writer_is_told_the_table_before_its_first_webhook(
    tmp_path: Path, runner: asyncio.Runner
) -> None:
    table = load(tmp_path, "writer")
    store = SQLiteStore(table.database_url)
    writers: list[int] = []

    def kill_the_writer() -> None:
        assert store._writer is not None
        writers.append(store._writer.pid)
        os.kill(store._writer.pid, signal.SIGKILL)
        store._writer.wait()

    verdicts = through(runner, store, store.intake(table), kill_the_writer)
    # each webhook went to a writer of its own, each admitted it with the table
    assert len(set(writers)) == len(WEBHOOKS)
    assert [v.outcome for v in verdicts] == [outcome for _b, outcome, _s in WEBHOOKS]


def test_admit_reads_headers_the_source_takes_its_event_from(tmp_path: Path) -> None:
    pipe = Pipeline(config_module.load(_write(tmp_path, "sources:\n  shop:\n    kind: shopify\n")))
    body = json.dumps({"id": 1, "total_price": "12.50", "currency": "USD"}).encode()
    headers = {"x-shopify-topic": "orders/paid", "x-shopify-event-id": "ev-1"}
    verdict, item = admit(pipe, "shop", body, headers, 64)
    assert verdict == Verdict("accepted", "ev-1", "orders/paid", deliveries=("dub",))
    assert item is not None and item.event.id == "ev-1" and item.body == body.decode()
    # the same body under another topic: no route wants it
    verdict, item = admit(pipe, "shop", body, {**headers, "x-shopify-topic": "orders/create"}, 64)
    assert (verdict, item) == (Verdict("ignored", "ev-1", "orders/create"), None)


def _write(tmp_path: Path, sources: str) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(
        sources.replace("kind: shopify", "kind: shopify\n    signing_secrets: [s3cr3t-value]")
        + "destinations:\n  dub: {kind: dub, base_url: 'http://127.0.0.1:9', api_key: k}\n"
        + "routes:\n  - {from: shop/orders/paid, to: dub}\n"
        + f"storage:\n  url: sqlite:///{tmp_path}/shop.db\n"
    )
    return path


# --- reading the body ---------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)  # past 64 bits as well
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def typed_value(value: Any) -> Any:
    """``value`` with each number's type in it: 1, 1.0 and True are equal in Python, not here."""
    if isinstance(value, dict):
        return {key: typed_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed_value(item) for item in value]
    return (type(value).__name__, repr(value))


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_a_body_reads_as_the_standard_library_reads_it(
    value: Any, ascii_only: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert typed_value(parse_json(text, 10_000)) == typed_value(json.loads(text))
    assert typed_value(loads(text)) == typed_value(json.loads(text))
    assert typed_value(loads(text.encode())) == typed_value(json.loads(text))


REFUSED = [
    "[NaN]",
    '{"a": Infinity}',
    "-Infinity",
    "1e999",
    "[-1E400]",
    "\ufeff{}",
    '{"a": 1,}',
    "[1,]",
    "{'a': 1}",
    "01",
    '"a\tb"',
    '"\\x41"',
    "tru",
    '{"a": 1} x',
    "",
]


@pytest.mark.parametrize("text", REFUSED)
def test_what_the_standard_library_refuses_is_refused_with_its_reason(text: str) -> None:
    with pytest.raises(ValueError) as expected:
        intake._DECODER.decode(text)  # the standard library's reading, as before msgspec
    with pytest.raises(ValueError) as refused:
        parse_json(text, 64)
    assert str(refused.value) == str(expected.value)


def test_valid_bodies_are_read_without_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast reading is the one used (the standard library's only on a refusal): with the
    latter unavailable, a Stripe event still reads, to the same value."""
    body = fixture_bytes("invoice.paid.json").decode()
    expected = json.loads(body)

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the standard library's decoder was used")

    monkeypatch.setattr(intake._DECODER, "decode", unavailable)
    monkeypatch.setattr(json, "loads", unavailable)
    assert parse_json(body, 64) == expected
    assert loads(body) == expected
