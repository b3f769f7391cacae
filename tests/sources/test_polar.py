"""Polar: Standard Webhooks headers under both key derivations; orders and refunds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from bridge import sources
from bridge.model import Item
from bridge.sources.base import SignatureError
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

PRIMARY, ROTATED = SECRETS["polar"]
SOURCE = make("polar")
NOW = 1_749_564_333.0
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def signature(body: bytes, key: bytes, msg_id: str = "msg_1", ts: int = int(NOW)) -> dict[str, str]:
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


BODY = b'{"type": "order.paid", "timestamp": "2025-06-10T11:05:33Z", "data": {"id": "o1"}}'


# --- verify: both derivations, the Standard Webhooks vector -----------------------------------


def test_the_raw_utf8_secret_is_a_key_as_polars_sdk_uses_it() -> None:
    SOURCE.verify(BODY, signature(BODY, PRIMARY.encode()), NOW)
    SOURCE.verify(BODY, signature(BODY, ROTATED.encode()), NOW)


def test_a_whsec_secret_also_works_as_base64_after_the_prefix() -> None:
    # the Standard Webhooks specification's own test vector
    source = make("polar", ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",))
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    source.verify(b'{"test": 2432232314}', headers, 1614265330)
    # ... and the same secret's raw bytes too
    raw = signature(BODY, b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    source.verify(BODY, raw, NOW)
    with pytest.raises(SignatureError):
        source.verify(b'{"test": 2432232315}', headers, 1614265330)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signature(BODY, b"polar_whs_not_ours"), BODY, "no signature matches"),
        (signature(BODY, PRIMARY.encode(), ts=int(NOW) - 301), BODY, "too old"),
        (signature(BODY, PRIMARY.encode(), ts=int(NOW) + 301), BODY, "future"),
        ({}, BODY, "missing webhook-id"),
        (
            {
                k: v
                for k, v in signature(BODY, PRIMARY.encode()).items()
                if k != "webhook-signature"
            },
            BODY,
            "missing webhook-signature",
        ),
        (
            {
                k: v
                for k, v in signature(BODY, PRIMARY.encode()).items()
                if k != "webhook-timestamp"
            },
            BODY,
            "missing webhook-timestamp",
        ),
        (signature(BODY, PRIMARY.encode()), BODY.replace(b"o1", b"o2"), "no signature matches"),
        (
            {**signature(BODY, PRIMARY.encode()), "webhook-signature": "v2,abc v1,!!!"},
            BODY,
            "no v1 signature",
        ),
        ({**signature(BODY, PRIMARY.encode()), "webhook-id": "msg_2"}, BODY, "no signature"),
    ],
    ids=[
        "wrong-secret",
        "stale",
        "future",
        "missing",
        "no-signature",
        "no-timestamp",
        "tampered",
        "garbage-signature",
        "other-id",
    ],
)
def test_bad_signatures_are_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        SOURCE.verify(body, headers, NOW)


def test_any_of_several_signatures_may_match() -> None:
    good = signature(BODY, PRIMARY.encode())
    good["webhook-signature"] = "v1a,c2lnbmVk v1,AAAA " + good["webhook-signature"]
    SOURCE.verify(BODY, good, NOW)


def test_the_event_id_is_the_webhook_id_else_derived_from_the_body() -> None:
    payload = fixture("polar", "order.paid.json")
    assert SOURCE.event(payload, {"webhook-id": "msg_2xyz"}).id == "msg_2xyz"
    derived = SOURCE.event(payload, {}).id
    assert derived.startswith("msg_")
    assert SOURCE.event(json.loads(json.dumps(payload, indent=4)), {}).id == derived
    signed = SOURCE.sign(fixture_bytes("polar", "order.paid.json"), NOW)
    assert signed["webhook-id"] == derived


# --- events -> transactions -------------------------------------------------------------------


def test_order_paid_is_a_sale_of_the_total_with_the_customers_external_id() -> None:
    txn = transaction(SOURCE, fixture("polar", "order.paid.json"), {"webhook-id": "msg_a"})
    assert summary(txn) == {
        "kind": "sale",
        "processor": "polar",
        "event_id": "msg_a",
        "id": "5f4a3c1e-8b2d-4e6f-9a7c-1d0e2f3a4b5c",
        "amount": 2400,
        "currency": "USD",
        "occurred_at": 1748960525,
        "customer": (
            "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "usr_polar_42",
            "jordan@example.com",
            "Jordan Lee",
        ),
        "refund_id": None,
        "refs": ["5f4a3c1e-8b2d-4e6f-9a7c-1d0e2f3a4b5c", "3d4e5f6a-7b8c-4d9e-8f0a-2b3c4d5e6f7a"],
    }
    assert (txn.tax, txn.discount, txn.subscription_id) == (
        400,
        0,
        "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
    )
    assert txn.items == [Item("1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e", "Pro", 2000, 1)]


def test_a_eur_order_with_a_discount_and_metadata_external_id() -> None:
    txn = transaction(SOURCE, fixture("polar", "order.paid.eur.json"), {"webhook-id": "msg_b"})
    assert summary(txn) == {
        "kind": "sale",
        "processor": "polar",
        "event_id": "msg_b",
        "id": "7b6a5c4d-3e2f-4a1b-9c0d-8e7f6a5b4c3d",
        "amount": 4665,
        "currency": "EUR",
        "occurred_at": 1749110627,
        "customer": (
            "8d7c6b5a-4f3e-4d2c-9b1a-0f9e8d7c6b5a",
            "user_eu_19",
            "lena@example.de",
            "Lena Vogel",
        ),
        "refund_id": None,
        "refs": ["7b6a5c4d-3e2f-4a1b-9c0d-8e7f6a5b4c3d", "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e"],
    }
    assert (txn.discount, txn.tax, txn.coupon_code) == (980, 745, "LAUNCH20")
    assert txn.metadata == {"dubCustomerExternalId": "user_eu_19"}


def test_an_older_order_without_total_amount_adds_its_tax() -> None:
    payload = fixture("polar", "order.paid.json")
    for key in ("total_amount", "net_amount", "subtotal_amount", "discount_amount"):
        del payload["data"][key]
    assert transaction(SOURCE, payload).amount == 2400


def test_a_succeeded_refund_is_its_own_amount_plus_tax() -> None:
    headers = {"webhook-id": "msg_c"}
    txn = transaction(SOURCE, fixture("polar", "refund.created.json"), headers)
    assert summary(txn) == {
        "kind": "refund",
        "processor": "polar",
        "event_id": "refund:a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d:succeeded",
        "id": None,
        "amount": 1200,
        "currency": "USD",
        "occurred_at": 1749553533,
        "customer": (
            "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            None,
            None,
        ),
        "refund_id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        "refs": ["5f4a3c1e-8b2d-4e6f-9a7c-1d0e2f3a4b5c"],
    }
    assert txn.tax == 200
    # refund.updated for the same refund: the same transaction, under the same event id
    later = transaction(SOURCE, fixture("polar", "refund.updated.json"), {"webhook-id": "msg_f"})
    assert summary(later) == {**summary(txn), "occurred_at": 1749553622}


def test_a_pending_refund_sends_nothing_and_keeps_its_webhook_id() -> None:
    payload = fixture("polar", "refund.created.json")
    payload["data"]["status"] = "pending"
    assert skip_reason(SOURCE, payload) == "refund not succeeded (status is not 'succeeded')"
    assert SOURCE.event(payload, {"webhook-id": "msg_d"}).id == "msg_d"


def test_order_refunded_is_cumulative_the_bridge_sends_deltas() -> None:
    txn = transaction(SOURCE, fixture("polar", "order.refunded.json"), {"webhook-id": "msg_e"})
    assert summary(txn) == {
        "kind": "refund",
        "processor": "polar",
        "event_id": "msg_e",
        "id": None,
        "amount": 1200,
        "currency": "USD",
        "occurred_at": 1749553533,
        "customer": (
            "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "usr_polar_42",
            "jordan@example.com",
            None,
        ),
        "refund_id": None,
        "refs": ["5f4a3c1e-8b2d-4e6f-9a7c-1d0e2f3a4b5c"],
    }
    assert txn.tax == 200
    # the rule says the amount is a running total: the worker subtracts what was sent before
    # (tests/test_cumulative_refunds.py)
    assert sources.rules("polar")["order.refunded"].cumulative


# --- what the destinations receive, through `bridge explain --json` ---------------------------


def test_explain_a_polar_sale_exact_bodies(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "polar", "order.paid.eur.json")
    assert bodies["dub"] == {
        "customerExternalId": "user_eu_19",
        "amount": 4665,
        "currency": "eur",
        "eventName": "Purchase",
        "paymentProcessor": "polar",
        "invoiceId": "7b6a5c4d-3e2f-4a1b-9c0d-8e7f6a5b4c3d",
        "customerEmail": "lena@example.de",
        "customerName": "Lena Vogel",
    }
    assert bodies["shop"] == {
        "event_type": "purchase",
        "transaction_id": "7b6a5c4d-3e2f-4a1b-9c0d-8e7f6a5b4c3d",
        "revenue": 46.65,
        "currency": "EUR",
        "user_id": "8d7c6b5a-4f3e-4d2c-9b1a-0f9e8d7c6b5a",
        "coupon_code": "LAUNCH20",
        "discount": 9.8,
        "tax": 7.45,
        "items": [
            {
                "item_id": "6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c",
                "item_name": "Template pack",
                "price": 49.0,
                "quantity": 1,
            }
        ],
    }
    assert bodies["voucherify"]["metadata"] == {
        "amount": 46.65,
        "currency": "EUR",
        "transaction_id": "7b6a5c4d-3e2f-4a1b-9c0d-8e7f6a5b4c3d",
        "processor": "polar",
    }


# --- through the real app ---------------------------------------------------------------------


def test_end_to_end(tmp_path: Path) -> None:
    body = fixture_bytes("polar", "order.paid.json")
    msg_id = SOURCE.sign(body, NOW)["webhook-id"]
    end_to_end(tmp_path, "polar", "order.paid.json", msg_id, "order.paid")


def test_refund_created_then_updated_for_one_refund_counts_once(tmp_path: Path) -> None:
    with running(tmp_path) as bridge:
        created = fixture_bytes("polar", "refund.created.json")
        updated = fixture_bytes("polar", "refund.updated.json")
        first = bridge.post("polar", created, bridge.signed("polar", created))
        assert first.json() == {"status": "accepted", "deliveries": 2}
        second = bridge.post("polar", updated, bridge.signed("polar", updated))
        assert second.json() == {"status": "duplicate"}
        assert bridge.rows("SELECT event_id, type FROM events") == [
            ("refund:a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d:succeeded", "refund.created")
        ]
