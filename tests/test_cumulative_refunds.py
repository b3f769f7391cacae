"""Cumulative refund totals (Lemon Squeezy, Polar order.refunded) go out as deltas, both stores.

Through the real app (signed webhooks in) and the worker (a mock transport out): refunds of
10.00 then 25.00 in total send 10.00 then 15.00; a redelivery is a duplicate; a late event
whose total did not grow sends nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from bridge import config as config_module
from bridge.app import create_app
from tests.conftest import ROOT

SECRET = "lsq_signing_secret_for_tests"


def table(url: str) -> str:
    return f"""
sources:
  lemon: {{kind: lemonsqueezy, signing_secrets: ["{SECRET}"]}}
destinations:
  shop: {{kind: ecommerce, base_url: "http://shop.test", api_key: tolk_sec_test}}
routes:
  - {{from: lemon/order_created, to: shop}}
  - {{from: lemon/order_refunded, to: shop}}
storage: {{url: "{url}"}}
"""


def refund(total: int, updated_at: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        (ROOT / "fixtures/lemonsqueezy/order_refunded.json").read_text()
    )
    payload["data"]["attributes"]["refunded_amount"] = total
    payload["data"]["attributes"]["updated_at"] = updated_at
    return payload


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        pg: str = request.getfixturevalue("pg_url")
        return pg
    return f"sqlite:///{tmp_path}/bridge.db"


def test_cumulative_refunds_become_deltas(tmp_path: Path, url: str) -> None:
    sent: list[dict[str, Any]] = []

    def shop(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True})

    path = tmp_path / "bridge.yaml"
    path.write_text(table(url))
    config = config_module.load(path)
    app = create_app(config, transport=httpx.MockTransport(shop), run_worker=False)
    with TestClient(app) as client:
        signer = app.state.pipeline.sources["lemon"]
        portal = client.portal
        assert portal is not None
        worker = app.state.worker

        def post(payload: dict[str, Any]) -> str:
            body = json.dumps(payload).encode()
            response = client.post("/webhooks/lemon", content=body, headers=signer.sign(body, 0))
            assert response.status_code == 200, response.text
            status: str = response.json()["status"]
            return status

        order = json.loads((ROOT / "fixtures/lemonsqueezy/order_created.json").read_text())
        assert post(order) == "accepted"
        assert post(refund(1000, "2024-09-20T15:00:00.000000Z")) == "accepted"
        assert post(refund(2500, "2024-09-21T15:00:00.000000Z")) == "accepted"
        assert post(refund(2500, "2024-09-21T15:00:00.000000Z")) == "duplicate"
        # the first total again, arriving late under another event id: nothing new was refunded
        assert post(refund(1000, "2024-09-22T15:00:00.000000Z")) == "accepted"
        portal.call(worker.drain)

        refunds = [b for b in sent if b["event_type"] == "refund"]
        assert [(b["transaction_id"], b["revenue"]) for b in refunds] == [
            ("orders:4821007", 10.0),
            ("orders:4821007", 15.0),
        ]
        statuses = sorted(str(d.status) for d in portal.call(app.state.store.deliveries))
        assert statuses == ["delivered", "delivered", "delivered", "skipped"]


def test_a_later_partial_refund_leaves_out_the_cumulative_tax(tmp_path: Path) -> None:
    """Polar's refunded_tax_amount is the order's total so far: the first refund's tax is its
    own, a later one's is not known and is left out (the total would overstate it)."""
    secret = "polar_whs_test_secret"
    path = tmp_path / "bridge.yaml"
    path.write_text(
        f"""
sources:
  polar: {{kind: polar, signing_secrets: ["{secret}"]}}
destinations:
  shop: {{kind: ecommerce, base_url: "http://shop.test", api_key: tolk_sec_test}}
routes:
  - {{from: polar/order.paid, to: shop}}
  - {{from: polar/order.refunded, to: shop}}
storage: {{url: "sqlite:///{tmp_path}/bridge.db"}}
"""
    )
    sent: list[dict[str, Any]] = []

    def shop(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True})

    app = create_app(
        config_module.load(path), transport=httpx.MockTransport(shop), run_worker=False
    )
    with TestClient(app) as client:
        signer = app.state.pipeline.sources["polar"]

        def post(payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            headers = signer.sign(body, time.time())
            response = client.post("/webhooks/polar", content=body, headers=headers)
            assert response.json()["status"] == "accepted", response.text

        post(json.loads((ROOT / "fixtures/polar/order.paid.json").read_text()))
        refunded = json.loads((ROOT / "fixtures/polar/order.refunded.json").read_text())
        for amount, tax, when in ((500, 100, "2025-06-04"), (2000, 400, "2025-06-05")):
            refunded["data"].update(
                refunded_amount=amount, refunded_tax_amount=tax, modified_at=f"{when}T10:00:00Z"
            )
            post(refunded)
        assert client.portal is not None
        client.portal.call(app.state.worker.drain)
    refunds = [(b["revenue"], b.get("tax")) for b in sent if b["event_type"] == "refund"]
    assert refunds == [(6.0, 1.0), (18.0, None)]
