"""Paddle: Paddle-Signature ts/h1 over ``{ts}:{body}``; transactions and refund adjustments."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from bridge.model import Item
from bridge.sources.base import BadEvent, SignatureError
from tests.sources.support import (
    SECRETS,
    end_to_end,
    explain,
    fixture,
    header_maps,
    make,
    skip_reason,
    summary,
    transaction,
)

PRIMARY, ROTATED = SECRETS["paddle"]
SOURCE = make("paddle")
NOW = 1_730_108_467.0


def signature(body: bytes, secret: str = PRIMARY, ts: int = int(NOW)) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"Paddle-Signature": f"ts={ts};h1={digest}"}


# --- the official test vectors ---------------------------------------------------------------


def test_the_python_sdk_vector() -> None:
    source = make(
        "paddle", ("pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh",)
    )
    header = "ts=1696195954;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02"
    source.verify(b"hello-world", {"Paddle-Signature": header}, 1696195954)
    assert source.sign(b"hello-world", 1696195954)["Paddle-Signature"] == header
    with pytest.raises(SignatureError):
        source.verify(b"hello-world!", {"Paddle-Signature": header}, 1696195954)


def test_the_node_sdk_vector() -> None:
    source = make("paddle", ("VALID_SECRET",))
    body = b'{"data": ["1", "2"]}'
    header = "ts=1698796800;h1=a300428748dce5c70e4da19bffd60769591ea969c99dea3105d0ec9612cf43f9"
    source.verify(body, {"Paddle-Signature": header}, 1698796800)
    assert source.sign(body, 1698796800)["Paddle-Signature"] == header
    # the same JSON without its spaces is other bytes: the signature is over the raw body
    with pytest.raises(SignatureError, match="no signature matches"):
        source.verify(b'{"data":["1","2"]}', {"Paddle-Signature": header}, 1698796800)


# --- verify -----------------------------------------------------------------------------------


BODY = b'{"event_id": "evt_1", "event_type": "transaction.completed", "data": {}}'


def test_a_valid_signature_and_a_rotated_secret_verify() -> None:
    SOURCE.verify(BODY, signature(BODY), NOW)
    SOURCE.verify(BODY, signature(BODY, ROTATED), NOW)


def test_any_h1_may_match() -> None:
    good = signature(BODY)["Paddle-Signature"].split(";")[1]
    header = f"ts={int(NOW)};h1={'0' * 64};{good}"
    SOURCE.verify(BODY, {"paddle-signature": header}, NOW)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signature(BODY, "pdl_ntf_not_ours"), BODY, "no signature matches"),
        (signature(BODY, ts=int(NOW) - 6), BODY, "too old"),
        (signature(BODY, ts=int(NOW) + 6), BODY, "future"),
        ({}, BODY, "missing Paddle-Signature"),
        (signature(BODY), BODY.replace(b"evt_1", b"evt_2"), "no signature matches"),
        ({"Paddle-Signature": "h1=abc"}, BODY, "unparseable"),
        ({"Paddle-Signature": f"ts={int(NOW)};h1=zz"}, BODY, "unparseable"),
        ({"Paddle-Signature": f"ts=1e9;h1={'0' * 64}"}, BODY, "unparseable"),
    ],
    ids=["wrong-secret", "stale", "future", "missing", "tampered", "no-ts", "not-hex", "bad-ts"],
)
def test_bad_signatures_are_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        SOURCE.verify(body, headers, NOW)


def test_the_default_tolerance_is_paddles_five_seconds_and_is_configurable() -> None:
    SOURCE.verify(BODY, signature(BODY, ts=int(NOW) - 5), NOW)
    with pytest.raises(SignatureError):
        SOURCE.verify(BODY, signature(BODY, ts=int(NOW) - 6), NOW)
    lenient = make("paddle", tolerance="5m")
    lenient.verify(BODY, signature(BODY, ts=int(NOW) - 299), NOW)


@given(headers=header_maps("Paddle-Signature"))
def test_random_signature_headers_near_a_real_one_raise_only_signature_errors(
    headers: dict[str, str],
) -> None:
    value = headers.get("Paddle-Signature", "")
    with contextlib.suppress(SignatureError):
        SOURCE.verify(BODY, {"Paddle-Signature": f"ts={int(NOW)};{value}"}, NOW)


# --- events -> transactions -------------------------------------------------------------------


def test_transaction_completed_is_a_sale_of_the_grand_total() -> None:
    txn = transaction(SOURCE, fixture("paddle", "transaction.completed.json"))
    assert summary(txn) == {
        "kind": "sale",
        "processor": "paddle",
        "event_id": "evt_01jb3mtk9rq2v6x8y4z0a1b2c3",
        "id": "txn_01jb3mq2x4c6v8b0n2m4k6j8h0",
        "amount": 27500,
        "currency": "USD",
        "occurred_at": 1730108451,
        "customer": ("ctm_01jb3kz9p8o7i6u5y4t3r2e1w0", "user_8765", None, None),
        "refund_id": None,
        "refs": ["txn_01jb3mq2x4c6v8b0n2m4k6j8h0", "inv_01jb3mtj4z5x6c7v8b9n0m1q2w"],
    }
    assert (txn.tax, txn.discount, txn.subscription_id) == (
        2500,
        0,
        "sub_01jb3mtg5a6s7d8f9g0h1j2k3l",
    )
    assert txn.items == [
        Item("pri_01gsz8x8sawmvhz1pv30nge1ke", "AeroEdit Pro", 3000, 5),
        Item("pri_01h1vjfevh5etwq3rb416a23h2", "Analytics addon", 10000, 1),
    ]
    assert txn.referral_code == "FRIEND-5"
    assert txn.convention == "iso"


def test_a_zero_decimal_currency_without_custom_data() -> None:
    txn = transaction(SOURCE, fixture("paddle", "transaction.completed.jpy.json"))
    assert summary(txn) == {
        "kind": "sale",
        "processor": "paddle",
        "event_id": "evt_01jc7ph4a2s3d4f5g6h7j8k9l0",
        "id": "txn_01jc7pfx7q8w9e0r1t2y3u4i5o",
        "amount": 1580,
        "currency": "JPY",
        "occurred_at": 1731381332,
        "customer": (
            "ctm_01jc7pdz1a2s3d4f5g6h7j8k9l",
            "ctm_01jc7pdz1a2s3d4f5g6h7j8k9l",
            None,
            None,
        ),
        "refund_id": None,
        "refs": ["txn_01jc7pfx7q8w9e0r1t2y3u4i5o", "inv_01jc7ph3m4n5b6v7c8x9z0a1s2"],
    }
    assert txn.major(txn.amount) == 1580


def test_an_approved_refund_adjustment_names_the_transaction_it_refunds() -> None:
    txn = transaction(SOURCE, fixture("paddle", "adjustment.updated.json"))
    assert summary(txn) == {
        "kind": "refund",
        "processor": "paddle",
        "event_id": "adjustment:adj_01jbb0w8f2g3h4j5k6l7z8x9c0:approved",
        "id": None,
        "amount": 3300,
        "currency": "USD",
        "occurred_at": 1730365331,
        "customer": (
            "ctm_01jb3kz9p8o7i6u5y4t3r2e1w0",
            "ctm_01jb3kz9p8o7i6u5y4t3r2e1w0",
            None,
            None,
        ),
        "refund_id": "adj_01jbb0w8f2g3h4j5k6l7z8x9c0",
        "refs": ["txn_01jb3mq2x4c6v8b0n2m4k6j8h0"],
    }
    assert txn.tax == 300


def test_pending_and_non_refund_adjustments_send_nothing() -> None:
    pending = fixture("paddle", "adjustment.created.json")
    assert skip_reason(SOURCE, pending) == "refund not approved yet (status is not 'approved')"
    credit = fixture("paddle", "adjustment.updated.json")
    credit["data"]["action"] = "credit"
    assert skip_reason(SOURCE, credit) == "adjustment is not a refund (action is not 'refund')"
    approved = fixture("paddle", "adjustment.updated.json")
    assert skip_reason(SOURCE, approved) is None


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda p: p.pop("event_id"), "no event_id"),
        (lambda p: p.update(event_type=7), "no event_type"),
        (lambda p: p.update(data=[]), "no data object"),
    ],
)
def test_bodies_that_are_not_paddle_events(edit: Any, reason: str) -> None:
    payload = fixture("paddle", "transaction.completed.json")
    edit(payload)
    with pytest.raises(BadEvent, match=reason):
        SOURCE.event(payload, {})


# --- what the destinations receive, through `bridge explain --json` ---------------------------


def test_explain_a_paddle_sale_exact_bodies(tmp_path: Path) -> None:
    bodies = explain(tmp_path, "paddle", "transaction.completed.json")
    assert list(bodies) == ["dub", "umami", "shop", "voucherify"]
    assert bodies["dub"] == {
        "customerExternalId": "user_8765",
        "amount": 27500,
        "currency": "usd",
        "eventName": "Purchase",
        "paymentProcessor": "paddle",
        "invoiceId": "txn_01jb3mq2x4c6v8b0n2m4k6j8h0",
    }
    assert bodies["shop"] == {
        "event_type": "purchase",
        "transaction_id": "txn_01jb3mq2x4c6v8b0n2m4k6j8h0",
        "revenue": 275.0,
        "currency": "USD",
        "user_id": "ctm_01jb3kz9p8o7i6u5y4t3r2e1w0",
        "discount": 0.0,
        "tax": 25.0,
        "items": [
            {
                "item_id": "pri_01gsz8x8sawmvhz1pv30nge1ke",
                "item_name": "AeroEdit Pro",
                "price": 30.0,
                "quantity": 5,
            },
            {
                "item_id": "pri_01h1vjfevh5etwq3rb416a23h2",
                "item_name": "Analytics addon",
                "price": 100.0,
                "quantity": 1,
            },
        ],
    }
    assert bodies["voucherify"]["referral"] == {"code": "FRIEND-5"}
    assert bodies["umami"]["payload"]["data"] == {"revenue": 275.0, "currency": "USD"}


def test_explain_a_jpy_sale_and_a_refund(tmp_path: Path) -> None:
    jpy = explain(tmp_path, "paddle", "transaction.completed.jpy.json")
    assert (jpy["dub"]["amount"], jpy["dub"]["currency"]) == (1580, "jpy")
    assert jpy["shop"]["revenue"] == 1580
    refund = explain(tmp_path, "paddle", "adjustment.updated.json")
    assert refund["shop"] == {
        "event_type": "refund",
        "transaction_id": "txn_01jb3mq2x4c6v8b0n2m4k6j8h0",
        "revenue": 33.0,
        "currency": "USD",
        "user_id": "ctm_01jb3kz9p8o7i6u5y4t3r2e1w0",
        "tax": 3.0,
    }


# --- through the real app ---------------------------------------------------------------------


def test_end_to_end(tmp_path: Path) -> None:
    end_to_end(
        tmp_path,
        "paddle",
        "transaction.completed.json",
        "evt_01jb3mtk9rq2v6x8y4z0a1b2c3",
        "transaction.completed",
    )


def test_an_approved_refund_told_by_two_events_counts_once(tmp_path: Path) -> None:
    """Created already approved, then updated (still approved): one refund, not two. The
    README has users route both adjustment events."""
    from tests.sources.support import running

    updated = fixture("paddle", "adjustment.updated.json")
    created = json.loads(json.dumps(updated))
    created["event_id"] = "evt_01jbb2created0000000000000"
    created["event_type"] = "adjustment.created"
    with running(tmp_path) as bridge:
        answers = []
        for payload in (created, updated):
            body = json.dumps(payload).encode()
            answers.append(bridge.post("paddle", body, bridge.signed("paddle", body)).json())
        assert [a["status"] for a in answers] == ["accepted", "duplicate"]
        assert bridge.rows("SELECT event_id FROM events") == [
            ("adjustment:adj_01jbb0w8f2g3h4j5k6l7z8x9c0:approved",)
        ]
    # a pending one is keyed by its event: its approval, later, is a new event
    pending = json.loads(json.dumps(updated))
    pending["data"]["status"] = "pending_approval"
    assert SOURCE.event(pending, {}).id == updated["event_id"]
