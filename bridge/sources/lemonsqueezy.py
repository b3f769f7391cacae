"""Lemon Squeezy webhooks.

Lemon Squeezy signs the raw body with HMAC-SHA256 under the webhook's signing
secret (6 to 40 characters, chosen when the webhook is created) and sends the
hex digest in ``X-Signature``, with the event's name in ``X-Event-Name``. The
signature carries no timestamp, so there is no replay window.

The body is a JSON:API document: ``{"meta": {"event_name": "order_created",
"custom_data": {...}}, "data": {"type": "orders", "id": "1", "attributes":
{...}}}``. The event type is ``meta.event_name`` (the header is only a copy).
Deliveries carry no id of their own: the bridge derives one from the event name,
the object's type and id, and its ``updated_at``, so a redelivery (Lemon Squeezy
retries up to three times, and the dashboard can resend) is a duplicate while a
later change of the same object is a new event.

- ``order_created``: a paid order, ``total`` in cents with ``currency``.
- ``subscription_payment_success``: a subscription invoice; counted unless its
  ``billing_reason`` is ``initial`` (the first payment is also an order).
- ``order_refunded`` / ``subscription_payment_refunded``: carry the object's
  CUMULATIVE ``refunded_amount``. The bridge records each object's refunded total
  and sends the delta (a refund from before the bridge was set up counts in the
  first delta it sees; a total that did not grow sends nothing).

Custom checkout data arrives in ``meta.custom_data`` (``dubCustomerExternalId``
names the Dub customer). Lemon Squeezy is not one of Dub's processors: Dub is
told ``paymentProcessor: custom``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from bridge import mapping, money
from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
from bridge.sources.base import BadEvent, SignatureError

SIGNATURE_HEADER = "x-signature"


class LemonSqueezySource:
    kind: ClassVar[str] = "lemonsqueezy"
    processor: ClassVar[str] = "custom"
    convention: ClassVar[money.Convention] = "iso"

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self._keys = [s.get_secret_value().encode() for s in config.signing_secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = common.header(headers, SIGNATURE_HEADER)
        if not value:
            raise SignatureError("missing X-Signature header")
        if len(value) > common.HEADER_LIMIT:
            raise SignatureError("X-Signature header too long")
        try:
            received = bytes.fromhex(value.strip())
        except ValueError:
            raise SignatureError("unparseable X-Signature header (not hex)") from None
        expected = (hmac.new(key, body, hashlib.sha256).digest() for key in self._keys)
        if not common.any_equal(expected, [received]):
            raise SignatureError("no signature matches a configured signing secret")

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        body = common.require_object(payload, "Lemon Squeezy")
        meta, data = body.get("meta"), body.get("data")
        if not isinstance(meta, dict) or not isinstance(data, dict):
            raise BadEvent("not a Lemon Squeezy event: no meta and data objects")
        event_type = common.text_id(meta.get("event_name"))
        if event_type is None:
            raise BadEvent("not a Lemon Squeezy event: no meta.event_name")
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            attributes = {}
        changed = attributes.get("updated_at") or attributes.get("created_at")
        parts = [event_type, data.get("type"), data.get("id"), changed]
        event_id = ":".join("" if part is None else str(part) for part in parts)
        if len(event_id) > common.ID_LIMIT:
            event_id = common.digest_of(parts).hex()
        created = mapping.unix_seconds(changed)
        return ProviderEvent(self.name, event_id, event_type, created, body)

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        digest = hmac.new(self._keys[0], body, hashlib.sha256).hexdigest()
        headers = {"X-Signature": digest, "Content-Type": "application/json"}
        event_name = _event_name(body)
        if event_name is not None:
            headers["X-Event-Name"] = event_name
        return headers


def _event_name(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    meta = payload.get("meta") if isinstance(payload, dict) else None
    name = meta.get("event_name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not (name.isascii() and name.isprintable()):
        return None
    return name if 0 < len(name) < 200 else None
