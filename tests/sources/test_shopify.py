"""Shopify: X-Shopify-Hmac-Sha256 base64 of the body; orders/paid and refunds/create."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from bridge.model import Item
from bridge.sources.base import BadEvent, SignatureError
from tests.sources.support import (
    SECRETS,
    end_to_end,
    explain,
    fixture,
    fixture_bytes,
    make,
    running,
    skip_reason,
    summary,
    transaction,
)

PRIMARY, ROTATED = SECRETS["shopify"]
SOURCE = make("shopify")
NOW = 1_730_733_304.0
BODY = fixture_bytes("shopify", "orders_paid.json")
WEBHOOK = {
    "X-Shopify-Topic": "orders/paid",
    "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    "X-Shopify-Triggered-At": "2024-11-04T15:15:05.123456Z",
}


def signature(body: bytes, secret: str = PRIMARY) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode()}


# --- verify -----------------------------------------------------------------------------------


def test_a_valid_signature_and_a_rotated_secret_verify() -> None:
    SOURCE.verify(BODY, signature(BODY), NOW)
    SOURCE.verify(BODY, signature(BODY, ROTATED), NOW)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signature(BODY, "shpss_not_ours"), BODY, "no signature matches"),
        ({}, BODY, "missing X-Shopify-Hmac-Sha256"),
        (signature(BODY), BODY.replace(b"263.20", b"263.21"), "no signature matches"),
        ({"X-Shopify-Hmac-Sha256": "%%%"}, BODY, "not base64"),
        (
            {"X-Shopify-Hmac-Sha256": hmac.new(PRIMARY.encode(), BODY, "sha256").hexdigest()},
            BODY,
            "no signature matches",
        ),
    ],
    ids=["wrong-secret", "missing", "tampered", "garbage", "hex-instead-of-base64"],
)
def test_bad_signatures_are_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        SOURCE.verify(body, headers, NOW)


# --- topic and webhook id: headers, or (for files) the body -----------------------------------


def test_the_topic_and_id_come_from_the_headers() -> None:
    event = SOURCE.event(fixture("shopify", "orders_paid.json"), WEBHOOK)
    assert (event.type, event.id) == ("orders/paid", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    assert event.created == 1730733305


def test_a_file_without_headers_gets_its_topic_from_its_shape_and_a_derived_id() -> None:
    order = SOURCE.event(fixture("shopify", "orders_paid.json"), {})
    refund = SOURCE.event(fixture("shopify", "refunds_create.json"), {})
    assert (order.type, refund.type) == ("orders/paid", "refunds/create")
    assert order.id != refund.id
    spaced = json.loads(json.dumps(fixture("shopify", "orders_paid.json"), indent=3))
    assert SOURCE.event(spaced, {}).id == order.id
    with pytest.raises(BadEvent, match="no X-Shopify-Topic"):
        SOURCE.event({"id": 1, "title": "a product"}, {})


def test_sign_adds_the_headers_shopify_sends() -> None:
    headers = SOURCE.sign(BODY, NOW)
    assert headers["X-Shopify-Hmac-Sha256"] == signature(BODY)["X-Shopify-Hmac-Sha256"]
    assert headers["X-Shopify-Topic"] == "orders/paid"
    assert (
        headers["X-Shopify-Webhook-Id"]
        == SOURCE.event(fixture("shopify", "orders_paid.json"), {}).id
    )
    assert headers["X-Shopify-Triggered-At"] == "2024-11-04T15:15:04+00:00"
    refund = fixture_bytes("shopify", "refunds_create.json")
    assert SOURCE.sign(refund, NOW)["X-Shopify-Topic"] == "refunds/create"


# --- events -> transactions -------------------------------------------------------------------


def test_orders_paid_is_a_sale_in_minor_units_of_the_decimal_total() -> None:
    txn = transaction(SOURCE, fixture("shopify", "orders_paid.json"), WEBHOOK)
    assert summary(txn) == {
        "kind": "sale",
        "processor": "shopify",
        "event_id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "id": "5902837461021",
        "amount": 26320,
        "currency": "USD",
        "occurred_at": 1730733301,
        "customer": ("7301928475610", "7301928475610", "alex@example.com", "Alex Morgan"),
        "refund_id": None,
        "refs": ["5902837461021"],
    }
    assert (txn.discount, txn.tax, txn.shipping, txn.coupon_code) == (1000, 1920, 500, "WELCOME10")
    assert txn.items == [
        Item("44839210571805", "IPod Nano - 8GB", 19900, 1),
        Item("44839210604573", "Classic Tee", 2500, 2),
    ]


def test_a_jpy_order_with_a_note_attribute_external_id() -> None:
    txn = transaction(
        SOURCE, fixture("shopify", "orders_paid.jpy.json"), {"X-Shopify-Webhook-Id": "w-3"}
    )
    assert summary(txn) == {
        "kind": "sale",
        "processor": "shopify",
        "event_id": "w-3",
        "id": "5902840017437",
        "amount": 1580,
        "currency": "JPY",
        "occurred_at": 1730810417,
        "customer": ("7301930278941", "user_jp_3", "haruto@example.jp", "Haruto Sato"),
        "refund_id": None,
        "refs": ["5902840017437"],
    }
    assert (txn.tax, txn.shipping, txn.discount) == (144, 0, 0)


def test_a_three_decimal_currency_is_exact() -> None:
    payload = fixture("shopify", "orders_paid.json")
    payload.update(currency="KWD", total_price="12.345")
    assert transaction(SOURCE, payload).amount == 12345
    payload.update(total_price="12.3456")
    with pytest.raises(ValueError, match="more decimals than KWD allows"):
        transaction(SOURCE, payload)


def test_refunds_create_sums_the_successful_refund_transactions() -> None:
    txn = transaction(
        SOURCE, fixture("shopify", "refunds_create.json"), {"X-Shopify-Webhook-Id": "w-2"}
    )
    assert summary(txn) == {
        "kind": "refund",
        "processor": "shopify",
        "event_id": "w-2",
        "id": None,
        "amount": 2700,
        "currency": "USD",
        "occurred_at": 1731178957,
        "customer": (None, None, None, None),
        "refund_id": "1039384871965",
        "refs": ["5902837461021"],
    }


def test_a_refund_without_money_sends_nothing() -> None:
    payload = fixture("shopify", "refunds_create.json")
    payload["transactions"] = [t for t in payload["transactions"] if t["status"] != "success"]
    assert skip_reason(SOURCE, payload) == (
        "no successful refund transaction (nothing was paid back)"
    )
    assert skip_reason(SOURCE, fixture("shopify", "refunds_create.json")) is None


# --- what the destinations receive, through `bridge explain --json` ---------------------------


def test_explain_a_shopify_sale_exact_bodies(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "shopify", "orders_paid.json")
    assert bodies["dub"] == {
        "customerExternalId": "7301928475610",
        "amount": 26320,
        "currency": "usd",
        "eventName": "Purchase",
        "paymentProcessor": "shopify",
        "invoiceId": "5902837461021",
        "customerEmail": "alex@example.com",
        "customerName": "Alex Morgan",
    }
    assert bodies["shop"] == {
        "event_type": "purchase",
        "transaction_id": "5902837461021",
        "revenue": 263.2,
        "currency": "USD",
        "user_id": "7301928475610",
        "coupon_code": "WELCOME10",
        "discount": 10.0,
        "tax": 19.2,
        "shipping": 5.0,
        "items": [
            {
                "item_id": "44839210571805",
                "item_name": "IPod Nano - 8GB",
                "price": 199.0,
                "quantity": 1,
            },
            {"item_id": "44839210604573", "item_name": "Classic Tee", "price": 25.0, "quantity": 2},
        ],
    }


def test_explain_a_refund(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "shopify", "refunds_create.json")
    assert bodies["shop"] == {
        "event_type": "refund",
        "transaction_id": "5902837461021",
        "revenue": 27.0,
        "currency": "USD",
    }


# --- through the real app ---------------------------------------------------------------------


def test_end_to_end(tmp_path: Path) -> None:
    event_id = SOURCE.sign(BODY, NOW)["X-Shopify-Webhook-Id"]
    end_to_end(tmp_path, "shopify", "orders_paid.json", event_id, "orders/paid")


def test_the_webhook_id_header_is_the_dedupe_key(tmp_path: Path) -> None:
    with running(tmp_path) as bridge:
        signed = {**signature(BODY), **WEBHOOK}
        assert bridge.post("shopify", BODY, signed).json()["status"] == "accepted"
        assert bridge.post("shopify", BODY, signed).json() == {"status": "duplicate"}
        other = {**signed, "X-Shopify-Webhook-Id": "c0ffee00-0000-4000-8000-000000000001"}
        assert bridge.post("shopify", BODY, other).json()["status"] == "accepted"
        assert bridge.rows("SELECT event_id FROM events ORDER BY event_id") == [
            ("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",),
            ("c0ffee00-0000-4000-8000-000000000001",),
        ]


def test_the_event_id_header_is_the_dedupe_key_when_shopify_sends_one(tmp_path: Path) -> None:
    """Shopify's "Ignore duplicate webhooks": the same X-Shopify-Event-Id on several webhooks is
    one event (two subscriptions to a topic each deliver it, with webhook ids of their own)."""
    with running(tmp_path) as bridge:
        event = {**signature(BODY), **WEBHOOK, "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd"}
        assert bridge.post("shopify", BODY, event).json()["status"] == "accepted"
        other = {**event, "X-Shopify-Webhook-Id": "c0ffee00-0000-4000-8000-000000000001"}
        assert bridge.post("shopify", BODY, other).json() == {"status": "duplicate"}
        assert bridge.rows("SELECT event_id FROM events") == [("98880550-7158-44d4-b7cd",)]


def test_a_refund_in_two_currencies_is_a_mapping_error_not_a_sum() -> None:
    from bridge import mapping

    payload = fixture("shopify", "refunds_create.json")
    paid_back = [t for t in payload["transactions"] if t["status"] == "success"]
    paid_back.append({**paid_back[0], "id": 99, "amount": "5.00", "currency": "EUR"})
    payload["transactions"] = paid_back
    with pytest.raises(
        mapping.MappingError, match=r"field currency: expression .*same\(\): the values differ"
    ):
        transaction(SOURCE, payload, {"X-Shopify-Webhook-Id": "w-9"})
