"""RevenueCat: the Authorization header value; purchases, renewals and support refunds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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

PRIMARY, ROTATED = SECRETS["revenuecat"]
SOURCE = make("revenuecat")
NOW = 1_730_710_882.0
BODY = fixture_bytes("revenuecat", "INITIAL_PURCHASE.json")


# --- verify -----------------------------------------------------------------------------------


def test_the_configured_values_verify() -> None:
    SOURCE.verify(BODY, {"Authorization": PRIMARY}, NOW)
    SOURCE.verify(BODY, {"authorization": ROTATED}, NOW)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Authorization": "Bearer rc_guess"}, "matches no configured value"),
        ({"Authorization": PRIMARY + " "}, "matches no configured value"),
        ({"Authorization": PRIMARY.removeprefix("Bearer ")}, "matches no configured value"),
        ({}, "missing Authorization"),
        ({"Authorization": ""}, "missing Authorization"),
    ],
    ids=["wrong", "trailing-space", "without-scheme", "missing", "empty"],
)
def test_other_values_are_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        SOURCE.verify(BODY, headers, NOW)


def test_the_body_is_not_signed_any_body_passes_with_the_value() -> None:
    # RevenueCat's scheme authenticates the sender, not the bytes: documented, not a bug
    SOURCE.verify(b"anything", {"Authorization": PRIMARY}, NOW)


@given(body=st.binary(max_size=300), value=st.text(min_size=1, max_size=60))
def test_sign_sends_the_first_value_and_it_verifies(body: bytes, value: str) -> None:
    source = make("revenuecat", (value,))
    headers = source.sign(body, NOW)
    assert headers["Authorization"] == value
    source.verify(body, headers, NOW)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda p: p.pop("event"), "no event object"),
        (lambda p: p["event"].pop("id"), "no event.id"),
        (lambda p: p["event"].update(type=None), "no event.type"),
    ],
)
def test_bodies_that_are_not_revenuecat_events(edit: Any, reason: str) -> None:
    payload = fixture("revenuecat", "INITIAL_PURCHASE.json")
    edit(payload)
    with pytest.raises(BadEvent, match=reason):
        SOURCE.event(payload, {})


# --- events -> transactions -------------------------------------------------------------------


def test_initial_purchase_is_a_sale_of_the_price_in_minor_units() -> None:
    payload = fixture("revenuecat", "INITIAL_PURCHASE.json")
    assert SOURCE.event(payload, {}).created == 1730710882
    txn = transaction(SOURCE, payload)
    assert summary(txn) == {
        "kind": "sale",
        "processor": "revenuecat",
        "event_id": "3F7A2C1E-9B4D-4E6F-8A0C-1D2E3F4A5B6C",
        "id": "2000000734981123",
        "amount": 999,
        "currency": "USD",
        "occurred_at": 1730710879,
        "customer": ("user_rc_501", "user_rc_501", "maya@example.com", None),
        "refund_id": None,
        "refs": ["2000000734981123"],
    }
    assert txn.items == [Item("com.example.pro.monthly", "com.example.pro.monthly", 999, 1)]
    assert txn.subscription_id == "2000000734981123"


def test_a_renewal_uses_the_purchased_currency_not_the_usd_price() -> None:
    txn = transaction(SOURCE, fixture("revenuecat", "RENEWAL.json"))
    assert summary(txn) == {
        "kind": "sale",
        "processor": "revenuecat",
        "event_id": "8C2B1A0F-7E6D-4C5B-9A3F-2E1D0C9B8A7F",
        "id": "2000000771202846",
        "amount": 999,
        "currency": "EUR",
        "occurred_at": 1733302880,
        "customer": ("user_rc_512", "user_rc_512", "jonas@example.de", "Jonas Weber"),
        "refund_id": None,
        "refs": ["2000000771202846"],
    }
    assert (txn.event_name, txn.subscription_id) == ("Subscription renewal", "2000000734981180")


def test_a_zero_decimal_non_renewing_purchase() -> None:
    txn = transaction(SOURCE, fixture("revenuecat", "NON_RENEWING_PURCHASE.json"))
    assert summary(txn) == {
        "kind": "sale",
        "processor": "revenuecat",
        "event_id": "B1C2D3E4-F5A6-4B7C-8D9E-0F1A2B3C4D5E",
        "id": "GPA.3318-4409-2230-71555",
        "amount": 480,
        "currency": "JPY",
        "occurred_at": 1731062519,
        "customer": ("user_rc_733", "user_rc_733", None, None),
        "refund_id": None,
        "refs": ["GPA.3318-4409-2230-71555"],
    }


@pytest.mark.parametrize(
    ("price", "currency", "minor"),
    [
        (4.99, "USD", 499),
        (0.1, "USD", 10),
        (19.99, "EUR", 1999),
        (1.005, "KWD", 1005),
        (120, "JPY", 120),
    ],
)
def test_float_prices_convert_exactly(price: float, currency: str, minor: int) -> None:
    payload = fixture("revenuecat", "INITIAL_PURCHASE.json")
    payload["event"].update(price_in_purchased_currency=price, currency=currency)
    assert transaction(SOURCE, payload).amount == minor


def test_a_price_finer_than_the_currency_is_refused_not_rounded() -> None:
    payload = fixture("revenuecat", "INITIAL_PURCHASE.json")
    payload["event"].update(price_in_purchased_currency=25.487)
    with pytest.raises(ValueError, match="more decimals than USD allows"):
        transaction(SOURCE, payload)


def test_a_customer_support_cancellation_is_a_refund_of_the_price() -> None:
    txn = transaction(SOURCE, fixture("revenuecat", "CANCELLATION.customer_support.json"))
    assert summary(txn) == {
        "kind": "refund",
        "processor": "revenuecat",
        "event_id": "D4E5F6A7-B8C9-4D0E-9F1A-2B3C4D5E6F70",
        "id": None,
        "amount": 999,
        "currency": "USD",
        "occurred_at": 1731407615,
        "customer": ("user_rc_501", "user_rc_501", "maya@example.com", None),
        "refund_id": None,
        "refs": ["2000000734981123"],
    }


def test_other_cancellations_send_nothing() -> None:
    payload = fixture("revenuecat", "CANCELLATION.unsubscribe.json")
    assert skip_reason(SOURCE, payload) == (
        "cancellation without a refund (cancel_reason is not CUSTOMER_SUPPORT)"
    )


# --- what the destinations receive, through `bridge explain --json` ---------------------------


def test_explain_a_revenuecat_sale_exact_bodies(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "revenuecat", "INITIAL_PURCHASE.json")
    assert bodies["dub"] == {
        "customerExternalId": "user_rc_501",
        "amount": 999,
        "currency": "usd",
        "eventName": "Purchase",
        "paymentProcessor": "revenuecat",
        "invoiceId": "2000000734981123",
        "customerEmail": "maya@example.com",
    }
    assert bodies["shop"] == {
        "event_type": "purchase",
        "transaction_id": "2000000734981123",
        "revenue": 9.99,
        "currency": "USD",
        "user_id": "user_rc_501",
        "items": [
            {
                "item_id": "com.example.pro.monthly",
                "item_name": "com.example.pro.monthly",
                "price": 9.99,
                "quantity": 1,
            }
        ],
    }


# --- through the real app ---------------------------------------------------------------------


def test_end_to_end(tmp_path: Path) -> None:
    end_to_end(
        tmp_path,
        "revenuecat",
        "INITIAL_PURCHASE.json",
        "3F7A2C1E-9B4D-4E6F-8A0C-1D2E3F4A5B6C",
        "INITIAL_PURCHASE",
    )


def test_a_plain_cancellation_is_answered_skipped(tmp_path: Path) -> None:
    body = fixture_bytes("revenuecat", "CANCELLATION.unsubscribe.json")
    with running(tmp_path) as bridge:
        response = bridge.post("revenuecat", body, {"Authorization": PRIMARY})
        assert response.json()["status"] == "skipped"
