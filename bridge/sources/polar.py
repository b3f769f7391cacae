"""Polar webhooks.

Polar follows Standard Webhooks: ``webhook-id`` (the same on every retry: the
bridge's dedupe key), ``webhook-timestamp`` (unix seconds; refused outside
``tolerance``, 300 s by default) and ``webhook-signature: v1,<base64> ...``, an
HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{raw body}``.

The key: Polar's own SDKs use the UTF-8 bytes of the whole secret as you copy it
from the dashboard (``polar_whs_...``, or an older plain string); a ``whsec_``
secret may also be the Standard Webhooks form, base64 after the prefix. Both
derivations are tried for every configured secret. ``sign`` (replay) uses the
base64 form for a ``whsec_`` secret whose rest is base64, the raw bytes otherwise.

The body is ``{"type": "order.paid", "timestamp": "...", "data": {...}}``:

- ``order.paid``: a paid order (one-off purchase, subscription start or renewal):
  ``total_amount`` in cents (``net_amount`` plus ``tax_amount``; older payloads
  have ``amount``), ``currency`` lower case, ``customer.external_id`` and
  ``metadata``.
- ``refund.created`` / ``refund.updated`` with ``status`` ``succeeded``: one
  refund, its own ``amount`` plus ``tax_amount``. Polar may send both for the
  same refund (``refund.updated`` follows any change), so the bridge keys these
  events by the refund (``refund:<id>:succeeded``), not by ``webhook-id``: the
  second one is a duplicate.
- ``order.refunded``: sent once per refund, but carries only the order's
  CUMULATIVE ``refunded_amount`` (plus ``refunded_tax_amount``). The bridge records
  each order's refunded total and sends the delta. Route ``refund.*`` OR
  ``order.refunded``, never both.

Amounts are integers in minor units (ISO exponents). Dub is told
``paymentProcessor: polar``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, ClassVar

from standardwebhooks import Webhook

from bridge import money
from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
from bridge.sources.standard_webhooks import read_event, signed_headers, verify_signed

REFUND_EVENTS = ("refund.created", "refund.updated")


class PolarSource:
    kind: ClassVar[str] = "polar"
    processor: ClassVar[str] = "polar"
    convention: ClassVar[money.Convention] = "iso"

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self.tolerance = float(config.tolerance)
        secrets = [s.get_secret_value() for s in config.signing_secrets]
        self._keys = [key for secret in secrets for key in _keys(secret)]
        self._signer = _keys(secrets[0])[-1]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        verify_signed(body, headers, now, self.tolerance, self._keys)

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        event = read_event(self.name, payload, headers, "Polar")
        data = event.payload.get("data")
        if not isinstance(data, dict):
            return event
        if event.type in REFUND_EVENTS and data.get("status") == "succeeded":
            key = common.once_key("refund", data.get("id"), "succeeded")
            if key is not None:
                return ProviderEvent(event.source, key, event.type, event.created, event.payload)
        return event

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        return signed_headers(self._signer, body, now)


def _keys(secret: str) -> list[Webhook]:
    """The raw UTF-8 key always; then the ``whsec_`` base64 one when the secret has that form."""
    keys = [Webhook(secret.encode())]
    if secret.startswith("whsec_"):
        text = secret.removeprefix("whsec_").rstrip("=")
        try:
            decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded:
            keys.append(Webhook(decoded))
    return keys
