"""RevenueCat webhooks.

RevenueCat does not sign its webhooks: you choose an ``Authorization`` header
value in the dashboard and it is sent as is with every delivery. The bridge
compares the whole header value, in constant time, with each configured
``signing_secrets`` entry (several while it is changed). There is no timestamp.

The body is ``{"api_version": "1.0", "event": {...}}``; ``event.id`` is the
same on every retry (the dedupe key) and ``event.type`` the event type.

- ``INITIAL_PURCHASE``, ``RENEWAL``, ``NON_RENEWING_PURCHASE``: a sale of
  ``price_in_purchased_currency``, a float in MAJOR units of ``currency``
  (``price`` is the same in USD, and may carry more decimals than cents),
  converted exactly (through its decimal text, never float arithmetic). A free
  trial's price is 0: it sends nothing.
- ``CANCELLATION`` with ``cancel_reason`` ``CUSTOMER_SUPPORT``: a refund (the
  price is negative; its absolute value is sent). Other cancellations
  (``UNSUBSCRIBE``, ``BILLING_ERROR``, ...) move no money.

The customer is ``app_user_id`` (your own id once the SDK is configured with
it; anonymous ids start ``$RCAnonymousID:``). Sandbox purchases arrive with
``environment: SANDBOX``; a route's ``when`` can keep them out. Dub is told
``paymentProcessor: revenuecat``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bridge import money
from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
from bridge.sources.base import BadEvent, SignatureError

HEADER = "authorization"


class RevenueCatSource:
    kind: ClassVar[str] = "revenuecat"
    processor: ClassVar[str] = "revenuecat"
    convention: ClassVar[money.Convention] = "iso"

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self._values = [_bytes(s.get_secret_value()) for s in config.signing_secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = common.header(headers, HEADER)
        if not value:
            raise SignatureError("missing Authorization header")
        if len(value) > common.HEADER_LIMIT:
            raise SignatureError("Authorization header too long")
        if not common.any_equal(self._values, [_bytes(value)]):
            raise SignatureError("the Authorization header matches no configured value")

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        body = common.require_object(payload, "RevenueCat")
        event = body.get("event")
        if not isinstance(event, dict):
            raise BadEvent("not a RevenueCat event: no event object")
        event_id = common.text_id(event.get("id"))
        event_type = common.text_id(event.get("type"))
        if event_id is None:
            raise BadEvent("not a RevenueCat event: no event.id")
        if event_type is None:
            raise BadEvent("not a RevenueCat event: no event.type")
        millis = event.get("event_timestamp_ms")
        created = None
        if isinstance(millis, int) and not isinstance(millis, bool) and 0 < millis < 10**14:
            created = millis // 1000
        return ProviderEvent(self.name, event_id, event_type, created, body)

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        return {
            "Authorization": self._values[0].decode("utf-8", "surrogatepass"),
            "Content-Type": "application/json",
        }


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")
