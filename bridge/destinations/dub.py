"""Dub: ``POST /track/sale``.

Auth ``Authorization: Bearer dub_...``. Body (camelCase): ``customerExternalId``
(required, 1-100), ``amount`` (required, integer MINOR units, as the processor
counts them), ``currency`` (lower case), ``eventName``, ``paymentProcessor``,
``invoiceId`` (Dub's idempotency key), ``customerEmail``, ``customerName`` (each at most
100 characters, the email matching Dub's pattern: a longer name is cut, an email Dub would refuse
left out, so that an optional field never costs the sale).

A 200 is not always a sale: for an unknown customer (no lead, no click id) or
amount 0 Dub answers ``{"customer": null, "sale": null}`` and records nothing.
That is its own outcome, ``not_recorded``, which a user can redrive once the
lead exists. Refunds are not sent to Dub.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from bridge.config import DubDestination
from bridge.destinations.base import Outcome
from bridge.destinations.common import TemplateDestination, classify_status, json_body
from bridge.model import ProviderEvent, Transaction

# Dub's limits on the optional customer fields (its OpenAPI document): past them Dub refuses the
# whole sale with a 422, so a longer name is cut and an email Dub would refuse is left out
CUSTOMER_LIMIT = 100
EMAIL = re.compile(
    r"(?!\.)(?!.*\.\.)([A-Za-z0-9_'+\-\.]*)[A-Za-z0-9_+-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}"
)


class Dub(TemplateDestination):
    kind = "dub"
    path = "/track/sale"
    required = ("customerExternalId", "amount")
    no_refunds = "Dub records sales only; refunds are not sent to Dub"

    config: DubDestination

    def body(self, txn: Transaction, event: ProviderEvent) -> dict[str, Any]:
        body = super().body(txn, event)
        name = body.get("customerName")
        if isinstance(name, str) and len(name) > CUSTOMER_LIMIT:
            body["customerName"] = name[:CUSTOMER_LIMIT]
        email = body.get("customerEmail")
        if isinstance(email, str) and (len(email) > CUSTOMER_LIMIT or not EMAIL.fullmatch(email)):
            del body["customerEmail"]
        return body

    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def classify(self, response: httpx.Response, now: float) -> Outcome:
        outcome = classify_status(response, now)
        if outcome.verdict != "delivered":
            return outcome
        data = json_body(response)
        if not isinstance(data, dict) or "sale" not in data:
            return Outcome(
                "retry", f"HTTP {response.status_code} without a sale object in the body"
            )
        if data["sale"] is None:
            return Outcome(
                "not_recorded", "not recorded by Dub: unknown customer or zero amount (sale: null)"
            )
        return outcome
