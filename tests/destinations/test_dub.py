"""Dub's body against its OpenAPI document, for the customer fields it limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_schema_validator import OAS30Validator

from bridge import config
from bridge.pipeline import Pipeline
from tests.conftest import fixture, table_yaml
from tests.sinks import _openapi_request_schema

SALE = OAS30Validator(_openapi_request_schema("dub.openapi.json", "/track/sale"))


def dub_body(tmp_path: Path, name: str | None, email: str | None) -> dict[str, object]:
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db"))
    pipeline = Pipeline(config.load(path))
    payload = fixture("invoice.paid.json")
    payload["data"]["object"]["customer_name"] = name
    payload["data"]["object"]["customer_email"] = email
    event = pipeline.sources["stripe"].event(payload, {})
    txn = pipeline.transaction(pipeline.routes_for(event)[0], event)
    body: dict[str, object] = json.loads(pipeline.destinations["dub"].request(txn, event).content)
    return body


@pytest.mark.parametrize(
    ("name", "email", "sent_name", "sent_email"),
    [
        ("Ann Lee", "ann@example.com", "Ann Lee", "ann@example.com"),
        ("N" * 256, "ann@example.com", "N" * 100, "ann@example.com"),  # Stripe allows 256
        ("Ann Lee", "a" * 95 + "@example.com", "Ann Lee", None),  # over 100
        ("Ann Lee", "ann..lee@example.com", "Ann Lee", None),  # not Dub's pattern
        ("Ann Lee", "ann@localhost", "Ann Lee", None),
    ],
    ids=["as they are", "long name cut", "long email left out", "two dots", "no TLD"],
)
def test_the_customer_fields_never_cost_the_sale(
    tmp_path: Path, name: str, email: str, sent_name: str, sent_email: str | None
) -> None:
    body = dub_body(tmp_path, name, email)
    assert sorted(SALE.iter_errors(body), key=str) == []
    assert body.get("customerName") == sent_name
    assert body.get("customerEmail") == sent_email
    assert body["amount"] == 2000  # the sale itself goes out
