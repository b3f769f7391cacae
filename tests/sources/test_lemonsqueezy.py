"""Lemon Squeezy: X-Signature hex of the body; orders, renewals, refunds; derived event ids."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from bridge import sources
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

PRIMARY, ROTATED = SECRETS["lemonsqueezy"]
SOURCE = make("lemonsqueezy")
NOW = 1_726_481_566.0
BODY = fixture_bytes("lemonsqueezy", "order_created.json")


def signature(body: bytes, secret: str = PRIMARY) -> dict[str, str]:
    return {"X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


# --- verify -----------------------------------------------------------------------------------


def test_a_valid_signature_and_a_rotated_secret_verify() -> None:
    SOURCE.verify(BODY, signature(BODY), NOW)
    SOURCE.verify(BODY, signature(BODY, ROTATED), NOW)
    SOURCE.verify(BODY, {"x-signature": signature(BODY)["X-Signature"].upper()}, NOW)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signature(BODY, "not-our-secret"), BODY, "no signature matches"),
        ({}, BODY, "missing X-Signature"),
        (signature(BODY), BODY.replace(b"5292", b"5293"), "no signature matches"),
        ({"X-Signature": "not hex"}, BODY, "not hex"),
        ({"X-Signature": ""}, BODY, "missing X-Signature"),
    ],
    ids=["wrong-secret", "missing", "tampered", "garbage", "empty"],
)
def test_bad_signatures_are_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        SOURCE.verify(body, headers, NOW)


def test_there_is_no_timestamp_so_tolerance_is_refused_in_the_table() -> None:
    with pytest.raises(ValueError, match="carry no timestamp"):
        make("lemonsqueezy", tolerance="60")


def test_sign_copies_the_event_name_header_as_lemon_squeezy_sends_it() -> None:
    headers = SOURCE.sign(BODY, NOW)
    assert headers["X-Event-Name"] == "order_created"
    assert headers == {
        **signature(BODY),
        "X-Event-Name": "order_created",
        "Content-Type": "application/json",
    }
    assert "X-Event-Name" not in SOURCE.sign(b"not json", NOW)


# --- the derived event id ---------------------------------------------------------------------


def test_the_event_id_is_derived_from_name_object_and_updated_at() -> None:
    payload = fixture("lemonsqueezy", "order_created.json")
    event = SOURCE.event(payload, {})
    assert event.id == "order_created:orders:4821007:2024-09-16T10:12:46.000000Z"
    assert event.type == "order_created"
    assert event.created == 1726481566
    # a redelivery is the same event, however the JSON is spaced
    assert SOURCE.event(json.loads(json.dumps(payload, indent=1)), {}).id == event.id
    # a later change of the same order is another event
    payload["data"]["attributes"]["updated_at"] = "2024-09-17T08:00:00.000000Z"
    assert SOURCE.event(payload, {}).id != event.id
    refunded = SOURCE.event(fixture("lemonsqueezy", "order_refunded.json"), {})
    assert refunded.id == "order_refunded:orders:4821007:2024-09-20T15:31:02.000000Z"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda p: p.pop("meta"), "no meta and data"),
        (lambda p: p.update(data="x"), "no meta and data"),
        (lambda p: p["meta"].pop("event_name"), "no meta.event_name"),
    ],
)
def test_bodies_that_are_not_lemon_squeezy_events(edit: Any, reason: str) -> None:
    payload = fixture("lemonsqueezy", "order_created.json")
    edit(payload)
    with pytest.raises(BadEvent, match=reason):
        SOURCE.event(payload, {})


# --- events -> transactions -------------------------------------------------------------------


def test_order_created_is_a_sale_with_custom_data_as_the_external_id() -> None:
    txn = transaction(SOURCE, fixture("lemonsqueezy", "order_created.json"))
    assert summary(txn) == {
        "kind": "sale",
        "processor": "custom",
        "event_id": "order_created:orders:4821007:2024-09-16T10:12:46.000000Z",
        "id": "orders:4821007",
        "amount": 5292,
        "currency": "USD",
        "occurred_at": 1726481564,
        "customer": ("3310982", "user_1001", "priya@example.com", "Priya Shah"),
        "refund_id": None,
        "refs": ["orders:4821007"],
    }
    assert (txn.discount, txn.tax) == (490, 882)
    assert txn.items == [Item("401872", "Icon Set - Team licence", 4900, 1)]
    assert txn.metadata == {"dubCustomerExternalId": "user_1001"}


def test_a_renewal_invoice_is_a_sale_and_the_initial_one_is_skipped() -> None:
    txn = transaction(SOURCE, fixture("lemonsqueezy", "subscription_payment_success.json"))
    assert summary(txn) == {
        "kind": "sale",
        "processor": "custom",
        "event_id": (
            "subscription_payment_success:subscription-invoices:1930554:2024-10-02T06:00:35.000000Z"
        ),
        "id": "subscription-invoices:1930554",
        "amount": 1440,
        "currency": "GBP",
        "occurred_at": 1727848831,
        "customer": ("3290441", "user_uk_77", "oliver@example.co.uk", "Oliver Grant"),
        "refund_id": None,
        "refs": ["subscription-invoices:1930554"],
    }
    assert txn.subscription_id == "772310"
    initial = fixture("lemonsqueezy", "subscription_payment_success.initial.json")
    assert skip_reason(SOURCE, initial) == (
        "the subscription's first payment is counted through its order_created"
    )


def test_order_refunded_is_cumulative_the_bridge_sends_deltas() -> None:
    txn = transaction(SOURCE, fixture("lemonsqueezy", "order_refunded.json"))
    assert summary(txn) == {
        "kind": "refund",
        "processor": "custom",
        "event_id": "order_refunded:orders:4821007:2024-09-20T15:31:02.000000Z",
        "id": None,
        "amount": 5292,
        "currency": "USD",
        "occurred_at": 1726846262,
        "customer": ("3310982", "user_1001", "priya@example.com", "Priya Shah"),
        "refund_id": None,
        "refs": ["orders:4821007"],
    }
    # the rule says the amount is a running total: the worker subtracts what was sent before
    # (tests/test_cumulative_refunds.py)
    assert sources.rules("lemonsqueezy")["order_refunded"].cumulative


# --- what the destinations receive, through `bridge explain --json` ---------------------------


def test_explain_a_lemon_squeezy_sale_exact_bodies(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "lemonsqueezy", "order_created.json")
    assert bodies["dub"] == {
        "customerExternalId": "user_1001",
        "amount": 5292,
        "currency": "usd",
        "eventName": "Purchase",
        "paymentProcessor": "custom",
        "invoiceId": "orders:4821007",
        "customerEmail": "priya@example.com",
        "customerName": "Priya Shah",
    }
    assert bodies["shop"] == {
        "event_type": "purchase",
        "transaction_id": "orders:4821007",
        "revenue": 52.92,
        "currency": "USD",
        "user_id": "3310982",
        "discount": 4.9,
        "tax": 8.82,
        "items": [
            {
                "item_id": "401872",
                "item_name": "Icon Set - Team licence",
                "price": 49.0,
                "quantity": 1,
            }
        ],
    }


# --- through the real app ---------------------------------------------------------------------


def test_end_to_end(tmp_path: Path) -> None:
    end_to_end(
        tmp_path,
        "lemonsqueezy",
        "order_created.json",
        "order_created:orders:4821007:2024-09-16T10:12:46.000000Z",
        "order_created",
    )


def test_the_initial_invoice_is_answered_skipped(tmp_path: Path) -> None:
    body = fixture_bytes("lemonsqueezy", "subscription_payment_success.initial.json")
    with running(tmp_path) as bridge:
        response = bridge.post("lemonsqueezy", body, bridge.signed("lemonsqueezy", body))
        assert response.status_code == 200
        assert response.json()["status"] == "skipped"
        assert bridge.rows("SELECT COUNT(*) FROM events") == [(0,)]
