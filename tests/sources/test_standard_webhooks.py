"""Standard Webhooks: the spec's headers and test vector; routes name each event's transaction."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from bridge import config as config_module
from bridge.pipeline import Pipeline
from bridge.sources.base import BadEvent, SignatureError
from tests.sources.support import (
    SECRETS,
    end_to_end,
    explain,
    fixture,
    fixture_bytes,
    make,
    summary,
    write_table,
)

PRIMARY, ROTATED = SECRETS["standard_webhooks"]
SOURCE = make("standard_webhooks")
NOW = 1_739_536_205.0
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
BODY = fixture_bytes("standard_webhooks", "invoice.paid.json")


def key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def signature(body: bytes, secret: str = PRIMARY, ts: int = int(NOW)) -> dict[str, str]:
    digest = hmac.new(key(secret), f"msg_9.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": "msg_9",
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def test_the_specifications_test_vector() -> None:
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    SOURCE.verify(b'{"test": 2432232314}', headers, 1614265330)
    SOURCE.verify(b'{"test": 2432232314}', headers, 1614265330 + 300)
    with pytest.raises(SignatureError, match="too old"):
        SOURCE.verify(b'{"test": 2432232314}', headers, 1614265330 + 301)
    with pytest.raises(SignatureError, match="no signature matches"):
        SOURCE.verify(b'{"test": 2432232315}', headers, 1614265330)


def test_a_valid_signature_and_a_rotated_secret_verify() -> None:
    SOURCE.verify(BODY, signature(BODY), NOW)
    SOURCE.verify(BODY, signature(BODY, ROTATED), NOW)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signature(BODY, "whsec_bm90LW91cnMtYXQtYWxs"), BODY, "no signature matches"),
        (signature(BODY, ts=int(NOW) - 301), BODY, "too old"),
        (signature(BODY, ts=int(NOW) + 301), BODY, "future"),
        ({}, BODY, "missing webhook-id"),
        (signature(BODY), BODY.replace(b"12900", b"12901"), "no signature matches"),
        ({**signature(BODY), "webhook-timestamp": "soon"}, BODY, "unparseable"),
        (signature(BODY), b"\xff" + BODY, "not UTF-8"),
    ],
    ids=["wrong-secret", "stale", "future", "missing", "tampered", "bad-timestamp", "not-utf8"],
)
def test_bad_signatures_are_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        SOURCE.verify(body, headers, NOW)


def test_a_secret_that_is_not_whsec_base64_is_refused_in_the_table() -> None:
    with pytest.raises(ValueError, match="whsec_ followed by base64"):
        make("standard_webhooks", ("whsec_not*base64",))


def test_the_event() -> None:
    event = SOURCE.event(fixture("standard_webhooks", "invoice.paid.json"), {"webhook-id": "msg_9"})
    assert (event.id, event.type, event.created) == ("msg_9", "invoice.paid", 1739536205)
    with pytest.raises(BadEvent, match="no type"):
        SOURCE.event({"data": {}}, {"webhook-id": "msg_9"})
    assert SOURCE.processor == "custom"


def test_no_event_type_has_a_built_in_transaction() -> None:
    from bridge import sources

    assert sources.rules("standard_webhooks") == {}


def test_the_table_accepts_routes_that_name_kind_and_fields(tmp_path: Path) -> None:
    loaded = config_module.load(write_table(tmp_path))
    [sale] = [r for r in loaded.routes if r.source == "standard_webhooks" and r.kind == "sale"]
    assert sale.event == "invoice.paid"
    assert set(sale.fields) >= {"id", "amount", "currency", "customer_external_id"}


def test_a_routes_kind_and_fields_make_the_transaction(tmp_path: Path) -> None:
    pipeline = Pipeline(config_module.load(write_table(tmp_path)))
    source = pipeline.sources["standard_webhooks"]
    event = source.event(fixture("standard_webhooks", "invoice.paid.json"), {"webhook-id": "msg_9"})
    [route] = pipeline.routes_for(event)
    txn = pipeline.transaction(route, event)
    assert summary(txn) == {
        "kind": "sale",
        "processor": "custom",
        "event_id": "msg_9",
        "id": "inv_7Kq2Zr9mXw",
        "amount": 12900,
        "currency": "CHF",
        "occurred_at": 1739536205,
        "customer": ("cust_4Lp8Nd", "user_sw_12", "noor@example.com", None),
        "refund_id": None,
        "refs": [],
    }


def test_explain_a_standard_webhooks_sale_exact_bodies(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "standard_webhooks", "invoice.paid.json")
    assert bodies["dub"] == {
        "customerExternalId": "user_sw_12",
        "amount": 12900,
        "currency": "chf",
        "paymentProcessor": "custom",
        "invoiceId": "inv_7Kq2Zr9mXw",
        "customerEmail": "noor@example.com",
    }


def test_end_to_end(tmp_path: Path) -> None:
    msg_id = SOURCE.sign(BODY, NOW)["webhook-id"]
    end_to_end(tmp_path, "standard_webhooks", "invoice.paid.json", msg_id, "invoice.paid")
