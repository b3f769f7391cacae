"""Shopify webhooks.

Shopify signs the raw body with HMAC-SHA256 under the app's client secret (or,
for a webhook created in the store admin, the signing key shown there) and
sends the base64 digest in ``X-Shopify-Hmac-Sha256``. The signature carries no
timestamp. With it come ``X-Shopify-Topic`` (the event type, e.g.
``orders/paid``), ``X-Shopify-Event-Id`` (the event's: the bridge's dedupe key, as
Shopify's "Ignore duplicate webhooks" says; two subscriptions to a topic each deliver
the event), ``X-Shopify-Webhook-Id`` (the webhook's, the same on every retry: the
key when no event id comes), ``X-Shopify-Triggered-At``, ``X-Shopify-Shop-Domain``
and ``X-Shopify-API-Version``. The body is the REST resource itself, with no
envelope.

- ``orders/paid``: an order, ``total_price`` a decimal string in the shop's
  MAJOR units (``"199.00"``) with ``currency`` (the shop's; ``*_set`` hold shop
  and presentment money); converted to minor units exactly. The customer is
  ``customer.id``, or a note attribute ``dubCustomerExternalId`` when the
  storefront sets one.
- ``refunds/create``: a refund of ``order_id``; its money is the sum of its
  ``transactions[]`` whose ``kind`` is ``refund`` and ``status`` ``success``,
  each in its own ``currency``. A refund with none (a restock only) sends
  nothing.

A file has no headers: ``bridge explain`` and ``bridge replay`` read the topic
from the body's shape (a refund has ``order_id`` and ``refund_line_items`` or
``transactions``; an order has ``line_items``), and the webhook id from a
digest of the body. Dub is told ``paymentProcessor: shopify``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from bridge import mapping, money
from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
from bridge.sources.base import BadEvent, SignatureError

HMAC_HEADER = "x-shopify-hmac-sha256"
TOPIC_HEADER = "x-shopify-topic"
EVENT_ID_HEADER = "x-shopify-event-id"
WEBHOOK_ID_HEADER = "x-shopify-webhook-id"
TRIGGERED_AT_HEADER = "x-shopify-triggered-at"
API_VERSION = "2025-07"


class ShopifySource:
    kind: ClassVar[str] = "shopify"
    processor: ClassVar[str] = "shopify"
    convention: ClassVar[money.Convention] = "iso"

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self._keys = [s.get_secret_value().encode() for s in config.signing_secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = common.header(headers, HMAC_HEADER)
        if not value:
            raise SignatureError("missing X-Shopify-Hmac-Sha256 header")
        if len(value) > common.HEADER_LIMIT:
            raise SignatureError("X-Shopify-Hmac-Sha256 header too long")
        try:
            received = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("unparseable X-Shopify-Hmac-Sha256 header (not base64)") from None
        expected = (hmac.new(key, body, hashlib.sha256).digest() for key in self._keys)
        if not common.any_equal(expected, [received]):
            raise SignatureError("no signature matches a configured signing secret")

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        body = common.require_object(payload, "Shopify")
        topic = common.text_id(common.header(headers, TOPIC_HEADER)) or topic_of(body)
        if topic is None:
            raise BadEvent(
                "not a Shopify event: no X-Shopify-Topic header and not an order or refund"
            )
        event_id = common.text_id(common.header(headers, EVENT_ID_HEADER))
        if event_id is None:
            event_id = common.text_id(common.header(headers, WEBHOOK_ID_HEADER))
        if event_id is None:
            event_id = common.uuid_id(common.digest_of(body))
        created = mapping.unix_seconds(common.header(headers, TRIGGERED_AT_HEADER))
        if created is None:
            created = mapping.unix_seconds(body.get("processed_at") or body.get("created_at"))
        return ProviderEvent(self.name, event_id, topic, created, body)

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        digest = hmac.new(self._keys[0], body, hashlib.sha256).digest()
        headers = {
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Webhook-Id": common.uuid_id(common.body_digest(body)),
            "X-Shopify-Triggered-At": datetime.fromtimestamp(int(now), tz=UTC).isoformat(),
            "X-Shopify-API-Version": API_VERSION,
            "Content-Type": "application/json",
        }
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            payload = None
        topic = topic_of(payload) if isinstance(payload, dict) else None
        if topic is not None:
            headers["X-Shopify-Topic"] = topic
        return headers


def topic_of(body: Mapping[str, Any]) -> str | None:
    """The topic a header-less order or refund body was sent under (files have no headers)."""
    if "order_id" in body and ("refund_line_items" in body or "transactions" in body):
        return "refunds/create"
    if "line_items" in body and ("total_price" in body or "financial_status" in body):
        return "orders/paid"
    return None
