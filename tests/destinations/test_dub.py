"""Dub's body against its OpenAPI document, for the customer fields it limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

from bridge import config
from bridge.pipeline import Pipeline
from tests.conftest import fixture, table_yaml
from tests.sinks import _openapi_request_schema

SALE = OAS30Validator(_openapi_request_schema("dub.openapi.json", "/track/sale"))


def pipeline_of(tmp_path: Path) -> Pipeline:
    path = tmp_path / "bridge.yaml"
    path.write_text(table_yaml("http://127.0.0.1:9", tmp_path / "bridge.db"))
    return Pipeline(config.load(path))


def body_of(pipeline: Pipeline, payload: dict[str, Any]) -> dict[str, Any]:
    """The body Dub would be sent for this Stripe event, through its first route."""
    event = pipeline.sources["stripe"].event(payload, {})
    txn = pipeline.transaction(pipeline.routes_for(event)[0], event)
    body: dict[str, Any] = json.loads(pipeline.destinations["dub"].request(txn, event).content)
    return body


def dub_body(tmp_path: Path, name: str | None, email: str | None) -> dict[str, Any]:
    payload = fixture("invoice.paid.json")
    payload["data"]["object"]["customer_name"] = name
    payload["data"]["object"]["customer_email"] = email
    return body_of(pipeline_of(tmp_path), payload)


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


@pytest.mark.parametrize(
    ("customer", "external_id"),
    [("cus_00000000000000", "cus_00000000000000"), (None, "example@example.com")],
    ids=["a Stripe customer", "a guest"],
)
def test_a_checkout_from_a_dub_link_sends_its_click_not_as_the_customer(
    tmp_path: Path, customer: str | None, external_id: str
) -> None:
    """Dub's checkout set-up puts dub_id_<click id> in client_reference_id: Dub takes the click
    as clickId; the customer is Stripe's, else the buyer's email."""
    pipeline = pipeline_of(tmp_path)
    payload = fixture("checkout.session.completed.payment_mode.json")
    payload["data"]["object"]["client_reference_id"] = "dub_id_Ab3xYz9QkLm"
    payload["data"]["object"]["customer"] = customer
    body = body_of(pipeline, payload)
    assert sorted(SALE.iter_errors(body), key=str) == []
    assert (body["clickId"], body["customerExternalId"]) == ("Ab3xYz9QkLm", external_id)
    # any other client_reference_id is the customer's own id, as before
    payload["data"]["object"]["client_reference_id"] = "user_42"
    body = body_of(pipeline, payload)
    assert body["customerExternalId"] == "user_42" and "clickId" not in body
