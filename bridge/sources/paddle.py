"""Paddle Billing webhooks (notifications).

Paddle signs ``{ts}:{raw body}`` (a colon) with HMAC-SHA256 under the
notification destination's secret key (``pdl_ntf_...``, used as is) and sends
``Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>]``: any ``h1`` may match
(several while a secret is rotated). Paddle's SDKs refuse a ``ts`` more than 5
seconds away, and so does the bridge by default (``tolerance``).

The body: ``{"event_id": "evt_...", "event_type": "transaction.completed",
"occurred_at": "<RFC 3339>", "notification_id": "ntf_...", "data": {...}}``.
``event_id`` is the dedupe key (one event may be notified several times).

- ``transaction.completed``: a paid, fully processed transaction (not
  ``transaction.paid``, which fires earlier for the same money). The amount is
  ``details.totals.grand_total`` (after discounts, tax and credits, before
  payments), a string in minor units, with ``currency_code``; ``custom_data``
  carries your own ids (``dubCustomerExternalId``).
- ``adjustment.created`` / ``adjustment.updated`` with ``action: refund`` and
  ``status: approved``: a refund of ``totals.total`` against ``transaction_id``.
  Most refunds are created ``pending_approval`` and approved later
  (``adjustment.updated``); one created already approved gets no update, and an
  approved one may still be updated. So an approved refund is keyed by the
  adjustment (``adjustment:<id>:approved``), not by ``event_id``: it counts once
  whichever of these events tell of it.

Dub is told ``paymentProcessor: paddle``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

from bridge import mapping, money
from bridge.config import SourceConfig
from bridge.model import ProviderEvent
from bridge.sources import common
from bridge.sources.base import BadEvent, SignatureError

HEADER = "paddle-signature"


REFUND_EVENTS = frozenset({"adjustment.created", "adjustment.updated"})


class PaddleSource:
    kind: ClassVar[str] = "paddle"
    processor: ClassVar[str] = "paddle"
    convention: ClassVar[money.Convention] = "iso"

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self.tolerance = float(config.tolerance)
        self._keys = [s.get_secret_value().encode() for s in config.signing_secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        value = common.header(headers, HEADER)
        if not value:
            raise SignatureError("missing Paddle-Signature header")
        if len(value) > common.HEADER_LIMIT:
            raise SignatureError("Paddle-Signature header too long")
        ts, received = _parse(value)
        if ts is None or not received:
            raise SignatureError("unparseable Paddle-Signature header")
        common.timestamp(ts, now, self.tolerance, "Paddle-Signature timestamp")
        signed = ts.encode() + b":" + body
        expected = (hmac.new(key, signed, hashlib.sha256).digest() for key in self._keys)
        if not common.any_equal(expected, received):
            raise SignatureError("no signature matches a configured signing secret")

    def event(self, payload: Any, headers: Mapping[str, str]) -> ProviderEvent:
        body = common.require_object(payload, "Paddle")
        event_id = common.text_id(body.get("event_id"))
        event_type = common.text_id(body.get("event_type"))
        if event_id is None:
            raise BadEvent("not a Paddle event: no event_id")
        if event_type is None:
            raise BadEvent("not a Paddle event: no event_type")
        if not isinstance(body.get("data"), dict):
            raise BadEvent("not a Paddle event: no data object")
        created = mapping.unix_seconds(body.get("occurred_at"))
        data = body["data"]
        if (
            event_type in REFUND_EVENTS
            and data.get("action") == "refund"
            and data.get("status") == "approved"
        ):
            event_id = common.once_key("adjustment", data.get("id"), "approved") or event_id
        return ProviderEvent(self.name, event_id, event_type, created, body)

    def sign(self, body: bytes, now: float) -> dict[str, str]:
        ts = str(int(now))
        digest = hmac.new(self._keys[0], ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        return {"Paddle-Signature": f"ts={ts};h1={digest}", "Content-Type": "application/json"}


def _parse(value: str) -> tuple[str | None, list[bytes]]:
    ts: str | None = None
    signatures: list[bytes] = []
    for part in value.split(";"):
        key, _, item = part.strip().partition("=")
        if key == "ts":
            ts = item
        elif key == "h1":
            try:
                signatures.append(bytes.fromhex(item))
            except ValueError:
                continue
    return ts, signatures
