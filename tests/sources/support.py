"""Shared by the processor tests: secrets, a table with every source, explain, the real app."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient
from typer.testing import CliRunner

from bridge import config as config_module
from bridge import mapping, sources
from bridge.app import create_app
from bridge.cli import app as cli_app
from bridge.config import SOURCE_MODELS
from bridge.model import Transaction
from bridge.sources.base import Source

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "fixtures"

# (primary, rotated) per kind; the table's source is named after its kind
SECRETS: dict[str, tuple[str, str]] = {
    "paddle": (
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TestPrimarySecret0123",
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TestRotatedSecret9876",
    ),
    "polar": ("polar_whs_test_primary_0123456789abcdef", "polar_whs_test_rotated_fedcba9876543210"),
    "lemonsqueezy": ("ls_primary_secret_42", "ls_rotated_secret_17"),
    "shopify": ("shpss_test_primary_0123456789abcdef", "shpss_test_rotated_fedcba9876543210"),
    "revenuecat": ("Bearer rc_test_primary_token", "Bearer rc_test_rotated_token"),
    "standard_webhooks": (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_cm90YXRlZC1zdGFuZGFyZC13ZWJob29rcy1rZXk=",
    ),
    "hmac": ("hmac_test_primary_secret", "hmac_test_rotated_secret"),
}
HMAC_SETTINGS: dict[str, str] = {
    "header": "X-Shop-Signature",
    "algorithm": "sha512",
    "encoding": "base64",
    "prefix": "v1=",
    "timestamp_header": "X-Shop-Timestamp",
}

WRONG_SECRETS = {"standard_webhooks": "whsec_d3Jvbmcta2V5LWZvci10aGUtdGVzdHM="}


def make(kind: str, secrets: tuple[str, ...] | None = None, /, **settings: Any) -> Source:
    """A source of ``kind`` named after it, with the test secrets unless given others."""
    raw = {"kind": kind, "signing_secrets": list(secrets or SECRETS[kind]), **settings}
    return sources.create(kind, SOURCE_MODELS[kind].model_validate(raw))


def fixture_bytes(kind: str, name: str) -> bytes:
    return (FIXTURES / kind / name).read_bytes()


def fixture(kind: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_bytes(kind, name))
    return data


def transaction(
    source: Source,
    payload: dict[str, Any],
    headers: Mapping[str, str] | None = None,
    *,
    fields: Mapping[str, str] | None = None,
) -> Transaction:
    """The transaction the source's built-in rule makes of ``payload``, with a route's own
    ``fields`` (JMESPath on ``{event, txn}``) if given."""
    event = source.event(payload, headers or {})
    rule = sources.rules(source.kind)[event.type]
    overrides = {name: mapping.compile_expression(text) for name, text in (fields or {}).items()}
    return mapping.build_transaction(rule, event, source.processor, source.convention, overrides)


def skip_reason(source: Source, payload: dict[str, Any]) -> str | None:
    event = source.event(payload, {})
    return mapping.skip_reason(sources.rules(source.kind)[event.type], event)


# --- hypothesis -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)


def header_maps(*names: str) -> st.SearchStrategy[dict[str, str]]:
    """Random headers, often under the names the verifier reads."""
    keys = st.sampled_from(names) | st.text(max_size=20) if names else st.text(max_size=20)
    return st.dictionaries(keys, st.text(max_size=120), max_size=5)


# --- the whole table ------------------------------------------------------------------------


def _secrets(kind: str) -> str:
    return ", ".join(json.dumps(s) for s in SECRETS[kind])


def table_yaml(database: Path, sinks_url: str = "http://127.0.0.1:9") -> str:
    hmac = "\n".join(f"    {key}: {json.dumps(value)}" for key, value in HMAC_SETTINGS.items())
    return f"""
sources:
  paddle:
    kind: paddle
    signing_secrets: [{_secrets("paddle")}]
  polar:
    kind: polar
    signing_secrets: [{_secrets("polar")}]
  lemonsqueezy:
    kind: lemonsqueezy
    signing_secrets: [{_secrets("lemonsqueezy")}]
  shopify:
    kind: shopify
    signing_secrets: [{_secrets("shopify")}]
  revenuecat:
    kind: revenuecat
    signing_secrets: [{_secrets("revenuecat")}]
  standard_webhooks:
    kind: standard_webhooks
    signing_secrets: [{_secrets("standard_webhooks")}]
  hmac:
    kind: hmac
    signing_secrets: [{_secrets("hmac")}]
{hmac}
destinations:
  dub:
    kind: dub
    base_url: {sinks_url}/dub
    api_key: dub_test_key
  umami:
    kind: umami
    base_url: {sinks_url}/umami
    website_id: 5c0bd4d5-9d31-4c62-8d52-6f3c6b1a0a11
    hostname: shop.example.com
  shop:
    kind: ecommerce
    base_url: {sinks_url}/shop
    api_key: tolk_sec_test
  voucherify:
    kind: voucherify
    base_url: {sinks_url}/voucherify
    app_id: vf-app-id
    app_token: vf-app-token
routes:
  - from: paddle/transaction.completed
    to: [dub, umami, shop, voucherify]
  - from: paddle/adjustment.*
    to: [shop, voucherify]
  - from: polar/order.paid
    to: [dub, umami, shop, voucherify]
  - from: polar/refund.*
    to: [shop, voucherify]
  - from: lemonsqueezy/order_created
    to: [dub, umami, shop, voucherify]
  - from: lemonsqueezy/subscription_payment_success
    to: [dub, umami, shop, voucherify]
  - from: lemonsqueezy/order_refunded
    to: [shop, voucherify]
  - from: shopify/orders/paid
    to: [dub, umami, shop, voucherify]
  - from: shopify/refunds/create
    to: [shop, voucherify]
  - from: revenuecat/INITIAL_PURCHASE
    to: [dub, umami, shop, voucherify]
  - from: revenuecat/RENEWAL
    to: [dub, umami, shop, voucherify]
  - from: revenuecat/NON_RENEWING_PURCHASE
    to: [dub, umami, shop, voucherify]
  - from: revenuecat/CANCELLATION
    to: [shop, voucherify]
  - from: standard_webhooks/invoice.paid
    to: [dub, shop]
    kind: sale
    fields:
      id: event.data.id
      amount: event.data.amount
      currency: event.data.currency
      occurred_at: unix(event.timestamp)
      customer_id: event.data.customer.id
      customer_external_id: event.data.customer.external_id
      customer_email: event.data.customer.email
  - from: standard_webhooks/invoice.refunded
    to: [shop]
    kind: refund
    fields:
      id: event.data.id
      amount: event.data.refund.amount
      currency: event.data.currency
      refund_id: event.data.refund.id
  - from: hmac/payment.succeeded
    to: [dub, shop]
    kind: sale
    fields:
      id: event.payment.order
      amount: minor(event.payment.total, event.payment.currency)
      currency: event.payment.currency
      occurred_at: event.created
      customer_external_id: event.payment.customer
      customer_email: event.payment.email
  - from: hmac/payment.refunded
    to: [shop]
    kind: refund
    fields:
      id: event.payment.order
      amount: minor(event.payment.refunded, event.payment.currency)
      currency: event.payment.currency
storage:
  url: sqlite:///{database}
"""


def write_table(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml(tmp_path / "bridge.db"))
    return path


def explain(tmp_path: Path, source: str, name: str) -> dict[str, dict[str, Any]]:
    """``bridge explain FIXTURE --json``: each destination's request body, by destination."""
    path = write_table(tmp_path)
    file = FIXTURES / source / name
    result = CliRunner().invoke(
        cli_app, ["explain", str(file), "--config", str(path), "--source", source, "--json"]
    )
    assert result.exit_code == 0, result.output
    requests: list[dict[str, Any]] = json.loads(result.stdout)
    return {request["destination"]: request["json"] for request in requests}


# --- the real app ---------------------------------------------------------------------------


@dataclass
class Bridge:
    app: Starlette
    client: TestClient
    database: Path

    def source(self, name: str) -> Source:
        found: Source = self.app.state.pipeline.sources[name]
        return found

    def post(self, source: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        response: httpx.Response = self.client.post(
            f"/webhooks/{source}", content=body, headers=dict(headers)
        )
        return response

    def signed(self, source: str, body: bytes) -> dict[str, str]:
        return self.source(source).sign(body, time.time())

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.database) as conn:
            return conn.execute(sql).fetchall()


@contextmanager
def running(tmp_path: Path) -> Iterator[Bridge]:
    path = write_table(tmp_path)
    application = create_app(config_module.load(path), run_worker=False)
    with TestClient(application) as client:
        yield Bridge(application, client, tmp_path / "bridge.db")


def end_to_end(tmp_path: Path, kind: str, name: str, event_id: str, event_type: str) -> None:
    """A signed sale is stored (200), its redelivery is a duplicate, a bad signature is 400."""
    body = fixture_bytes(kind, name)
    with running(tmp_path) as bridge:
        headers = bridge.signed(kind, body)
        first = bridge.post(kind, body, headers)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "accepted"
        assert bridge.rows("SELECT source, event_id, type FROM events") == [
            (kind, event_id, event_type)
        ]
        deliveries = bridge.rows("SELECT COUNT(*) FROM deliveries")[0][0]
        assert deliveries == first.json()["deliveries"] > 0

        again = bridge.post(kind, body, headers)
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})

        wrong_secret = WRONG_SECRETS.get(kind, "not-the-configured-secret")
        wrong = make(kind, (wrong_secret,), **_settings(kind))
        bad = bridge.post(kind, body, wrong.sign(body, time.time()))
        assert bad.status_code == 400
        assert "signature" in bad.json()["error"]
        assert bridge.rows("SELECT COUNT(*) FROM events") == [(1,)]
        assert bridge.rows("SELECT COUNT(*) FROM deliveries") == [(deliveries,)]


def _settings(kind: str) -> dict[str, str]:
    return dict(HMAC_SETTINGS) if kind == "hmac" else {}


def summary(txn: Transaction) -> dict[str, Any]:
    """The fields every processor test pins, in one comparable dict."""
    return {
        "kind": txn.kind,
        "processor": txn.processor,
        "event_id": txn.event_id,
        "id": txn.id,
        "amount": txn.amount,
        "currency": txn.currency,
        "occurred_at": txn.occurred_at,
        "customer": (
            txn.customer.id,
            txn.customer.external_id,
            txn.customer.email,
            txn.customer.name,
        ),
        "refund_id": txn.refund_id,
        "refs": txn.refs,
    }
