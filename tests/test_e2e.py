"""End to end: the real bridge process, signed Stripe fixtures in, contract-checked sinks out."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from tests.conftest import FIXTURES, BridgeProcess, fixture_bytes
from tests.sinks import Sinks

pytestmark = pytest.mark.slow

# The order matters: a sale is seen before the refund that names it.
ORDER = [
    "invoice.paid.json",
    "invoice.payment_succeeded.json",
    "invoice.payment_failed.json",
    "invoice.paid.jpy.json",
    "invoice.paid.kwd.json",
    "invoice.paid.2025.json",
    "refund.created.json",
    "checkout.session.completed.json",
    "checkout.session.completed.payment_mode.json",
    "checkout.session.completed.setup_mode.json",
    "checkout.session.completed.unpaid.json",
    "charge.succeeded.json",
    "charge.refunded.json",
    "charge.refund.updated.json",
    "charge.dispute.created.json",
    "customer.subscription.created.json",
    "payment_intent.succeeded.json",
]


def explain(table: Path, name: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        app, ["explain", str(FIXTURES / name), "--config", str(table), "--json"]
    )
    assert result.exit_code == 0, result.output
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def test_every_fixture_is_covered() -> None:
    assert sorted(ORDER) == sorted(p.name for p in FIXTURES.glob("*.json"))


def test_every_fixture_end_to_end(bridge_process: BridgeProcess, sinks: Sinks, table: Path) -> None:
    expected: dict[str, list[Any]] = {"dub": [], "umami": [], "shop": [], "voucherify": []}
    for name in ORDER:
        response = bridge_process.post(fixture_bytes(name))
        assert response.status_code == 200, (name, response.text)
        for request in explain(table, name):
            expected[request["destination"]].append(request["json"])
    # the refund of the 2025 invoice is linked to it by the running bridge (explain can't know):
    # its transaction id is the invoice, its customer the invoice's.
    refund = {
        "event_type": "refund",
        "transaction_id": "in_test_basil001",
        "revenue": 50.0,
        "currency": "EUR",
        "user_id": "cus_test_eu",
    }
    expected["shop"] = [
        refund if b.get("transaction_id") == "ch_test_basil001" else b for b in expected["shop"]
    ]
    expected["voucherify"].append(
        {
            "event": "payment_refunded",
            "customer": {"source_id": "user_eu_7", "email": "lea@example.de", "name": "Lea Braun"},
            "metadata": {
                "amount": 50.0,
                "currency": "EUR",
                "transaction_id": "in_test_basil001",
                "processor": "stripe",
            },
        }
    )
    # charge.refunded names ch_000..., the charge invoice.paid was paid with: linked to in_000...
    charge_refund = {
        "event_type": "refund",
        "transaction_id": "in_000000000000000000000000",
        "revenue": 1.0,
        "currency": "USD",
        "user_id": "cus_00000000000000",
    }
    expected["shop"] = [
        charge_refund if b.get("transaction_id") == "ch_000000000000000000000000" else b
        for b in expected["shop"]
    ]
    expected["voucherify"].append(
        {
            "event": "payment_refunded",
            "customer": {"source_id": "cus_00000000000000"},
            "metadata": {
                "amount": 1.0,
                "currency": "USD",
                "transaction_id": "in_000000000000000000000000",
                "processor": "stripe",
            },
        }
    )
    total = sum(len(v) for v in expected.values())
    sinks.wait_for(total, timeout=20)
    time.sleep(0.3)  # nothing more may arrive
    assert len(sinks.received) == total
    assert all(r.valid for r in sinks.received), [r.problem for r in sinks.received if not r.valid]
    for destination, bodies in expected.items():
        got = sinks.bodies(destination)
        assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, bodies)), destination
