"""Stripe webhooks.

Stripe signs ``{t}.{raw body}`` with HMAC-SHA256 under the endpoint's whole
``whsec_...`` secret and sends ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``.
Any ``v1`` may match (several during secret rotation); ``v0`` is ignored.
The ``stripe`` package's ``WebhookSignature.verify_header`` checks the raw
body without building Stripe objects; the JSON is parsed once, by the app.

Events: ``invoice.paid``, ``checkout.session.completed``, ``refund.*`` and
``charge.refunded`` become transactions (see ``bridge/defaults/stripe.yaml``).
Amounts are integers in Stripe's minor units, with Stripe's exponents.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

import stripe

from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources.base import BadEvent, SignatureError

HEADER = "stripe-signature"
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "charge.refund.updated"})


class StripeSource:
    kind: ClassVar[str] = "stripe"
    processor: ClassVar[str] = "stripe"
    convention: ClassVar[Any] = "stripe"

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self.tolerance = int(config.tolerance)
        self._secrets = [secret.get_secret_value() for secret in config.signing_secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        header = headers.get(HEADER)
        if not header:
            raise SignatureError("missing Stripe-Signature header")
        if len(header) > 4096:
            raise SignatureError("Stripe-Signature header too long")
        timestamp = _timestamp(header)
        if timestamp is None:
            raise SignatureError("unparseable Stripe-Signature header")
        if timestamp > now + self.tolerance:
            raise SignatureError("timestamp is in the future, outside the tolerance")
        if timestamp < now - self.tolerance:
            raise SignatureError("timestamp outside the tolerance (too old)")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("body is not UTF-8") from None
        for secret in self._secrets:
            try:
                stripe.WebhookSignature.verify_header(payload, header, secret, self.tolerance)
            except stripe.SignatureVerificationError:
                continue
            return
        raise SignatureError("no signature matches a configured signing secret")

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        if not isinstance(payload, dict):
            raise BadEvent("not a Stripe event: the body is not a JSON object")
        event_id, event_type = payload.get("id"), payload.get("type")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
            raise BadEvent("not a Stripe event: no id")
        if not isinstance(event_type, str) or not event_type or len(event_type) > 255:
            raise BadEvent("not a Stripe event: no type")
        if not isinstance(payload.get("data"), dict):
            raise BadEvent("not a Stripe event: no data object")
        created = payload.get("created")
        if isinstance(created, bool) or not isinstance(created, int):
            created = None
        refund = payload["data"].get("object")
        if (
            event_type in REFUND_EVENTS
            and isinstance(refund, dict)
            and refund.get("status") == "succeeded"
            and isinstance(refund.get("id"), str)
            and 0 < len(refund["id"]) < 200
        ):
            # refund.created, refund.updated and charge.refund.updated all tell of the same
            # refund once it succeeded: one key for all of them, so that it counts once
            event_id = f"refund:{refund['id']}:succeeded"
        return ProviderEvent(self.name, event_id, event_type, created, payload)

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        timestamp = int(now)
        signed = f"{timestamp}.".encode() + body
        digest = hmac.new(self._secrets[0].encode(), signed, hashlib.sha256).hexdigest()
        return {
            "Stripe-Signature": f"t={timestamp},v1={digest}",
            "Content-Type": "application/json",
        }


def _timestamp(header: str) -> int | None:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            return int(value) if value.isascii() and value.isdigit() and len(value) < 12 else None
    return None
