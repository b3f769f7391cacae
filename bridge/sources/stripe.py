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

from stripe import SignatureVerificationError, WebhookSignature

from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
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
        header = common.header(headers, HEADER)
        if not header:
            raise SignatureError("missing Stripe-Signature header")
        if len(header) > 4096:
            raise SignatureError("Stripe-Signature header too long")
        parsed = _parse(header)
        if parsed is None:
            raise SignatureError("unparseable Stripe-Signature header")
        timestamp, signatures = parsed
        if timestamp > now + self.tolerance:
            raise SignatureError("timestamp is in the future, outside the tolerance")
        if timestamp < now - self.tolerance:
            raise SignatureError("timestamp outside the tolerance (too old)")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("body is not UTF-8") from None
        # the stripe package verifies a header rebuilt from the one strict parse; no tolerance:
        # it was checked above against `now`, and the package would check it again against
        # its own clock (a stale timestamp refused as a signature that matches no secret)
        normalized = ",".join([f"t={timestamp}", *(f"v1={s}" for s in signatures)])
        for secret in self._secrets:
            try:
                WebhookSignature.verify_header(payload, normalized, secret)
            except SignatureVerificationError:
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
        ):
            # refund.created, refund.updated and charge.refund.updated all tell of the same
            # refund once it succeeded: one key for all of them, so that it counts once
            event_id = common.once_key("refund", refund.get("id"), "succeeded") or event_id
        return ProviderEvent(self.name, event_id, event_type, created, payload)

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        timestamp = int(now)
        signed = f"{timestamp}.".encode() + body
        digest = hmac.new(self._secrets[0].encode(), signed, hashlib.sha256).hexdigest()
        return {
            "Stripe-Signature": f"t={timestamp},v1={digest}",
            "Content-Type": "application/json",
        }


def _parse(header: str) -> tuple[int, list[str]] | None:
    """``t=<unix>,v1=<hex>[,v1=<hex>][,v0=...]``: exactly one timestamp, v1 signatures in hex."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if timestamp is not None or not (
                value.isascii() and value.isdigit() and len(value) < 12
            ):
                return None
            timestamp = int(value)
        elif key == "v1":
            if not (value.isascii() and len(value) <= 128 and _HEX.issuperset(value)):
                return None
            signatures.append(value)
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


_HEX = frozenset("0123456789abcdefABCDEF")
